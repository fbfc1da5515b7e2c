"""Limits and checks shared by the image and DICOM readers."""

from __future__ import annotations

import re

import numpy as np

from core.io.scan import ScanError

#: Largest image accepted, in pixels per frame: admits radiographs of about 6,000 x 6,000
#: (real ones are about 4,000 x 5,000) and refuses decompression bombs before decoding.
MAX_PIXELS_PER_FRAME = 36_000_000
#: Largest total number of pixels over all frames (about 1 GB of float32).
MAX_TOTAL_PIXELS = 256_000_000
#: Smallest side accepted, in pixels. The smallest real scans are nuclear-medicine and small MR
#: matrices of 64 x 64; below 32 px nothing anatomical is left to see, and the models (128 px input
#: and more) would only see interpolated blur, yet still answer with confidence (a 1 x 1 PNG was
#: called "PNEUMONIA, 1.0"), so such a file is refused rather than predicted.
MIN_SIDE = 32


def check_size(rows: int, cols: int, n_frames: int = 1) -> None:
    """Refuse, with one sentence, an image too large to load or too small to be a scan."""
    if rows * cols > MAX_PIXELS_PER_FRAME:
        raise ScanError(too_large_message(cols, rows))
    if rows * cols * n_frames > MAX_TOTAL_PIXELS:
        raise ScanError(too_large_message(cols, rows, n_frames))
    if min(rows, cols) < MIN_SIDE:
        raise ScanError(f"The image is only {cols} x {rows} pixels, too small to be a scan (at least "
                        f"{MIN_SIDE} pixels on each side are needed); upload the original image.")


def too_large_message(width: int | None = None, height: int | None = None, n: int = 1, *,
                      declared: int | None = None) -> str:
    if width:
        size = f" ({width} x {height}{f' x {n} frames' if n > 1 else ''} pixels)"
    elif declared:
        size = f" (its header declares {declared / 1_000_000:,.0f} million pixels)"
    else:
        size = ""
    return (f"The image is too large to load{size}; the limit is {MAX_PIXELS_PER_FRAME // 1_000_000} "
            "million pixels per frame, so export it at a lower resolution.")


def declared_pixels(exc: Exception) -> int | None:
    """The pixel count in Pillow's decompression-bomb message, e.g. "Image size (10000000000 pixels)"."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return int(found.group(1)) if found else None


def finite(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    """Pixels with NaN and infinities replaced by the minimum (with a note); refuses all-NaN images."""
    ok = np.isfinite(pixels)
    if ok.all():
        return pixels
    if not ok.any():
        raise ScanError("Every pixel of this image is NaN or infinite, so there is nothing to show; "
                        "export it again with finite values.")
    fill = float(pixels[ok].min())
    notes.append(f"{int((~ok).sum())} NaN or infinite pixel(s) were set to the image minimum.")
    return np.where(ok, pixels, fill).astype(np.float32)


def range_window(pixels: np.ndarray) -> tuple[float, float]:
    """A window spanning the pixels' whole range."""
    lo, hi = float(pixels.min()), float(pixels.max())
    return (lo + hi) / 2.0, max(hi - lo, 1.0)


def decoder_failure(exc: BaseException) -> bool:
    """An exception a decoder raised on bad data, not an interrupt or exit.

    Decoders written in Rust (pylibjpeg-rle) panic on some damaged streams, and pyo3 turns
    a panic into ``PanicException``, which derives from ``BaseException``, not ``Exception``.
    """
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"
