"""PNG, JPEG, TIFF, BMP and GIF files through Pillow."""

from __future__ import annotations

import io
import warnings

import numpy as np

from core.io.common import check_size, declared_pixels, finite, range_window, too_large_message
from core.io.scan import Scan, ScanError

_ALPHA_NOTE = "The image's transparency (alpha) was dropped."


def load_image(data: bytes, name: str | None) -> Scan:
    """Decode an image file with Pillow: every frame, grey stored as RGB reduced to one channel."""
    from PIL import Image

    with warnings.catch_warnings():
        # Opening reads only the header. Pillow's own decompression-bomb check (a warning above
        # ~89 million pixels, an error above ~179 million) fires inside ``open``, before ours.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ScanError(too_large_message(declared=declared_pixels(exc))) from None
    width, height = image.size
    n = getattr(image, "n_frames", 1)
    check_size(height, width, n)

    notes: list[str] = []
    frames = []
    for i in range(n):
        image.seek(i)
        frames.append(_to_array(image, notes))
    if len({f.shape for f in frames}) != 1:
        frames = frames[:1]
        notes.append("The frames differ in size; only the first one is used.")
    pixels = finite(np.stack(frames).astype(np.float32, copy=False), notes)
    if pixels.ndim == 4 and np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
        pixels[..., 0], pixels[..., 2]
    ):
        pixels = np.ascontiguousarray(pixels[..., 0])  # grey stored as RGB, like the chest set
    depth = _bit_depth(image.mode)
    window = (127.5, 255.0) if depth == 8 else range_window(pixels)
    header = {
        "Format": image.format or "image",
        "Mode": image.mode,
        "Columns": int(pixels.shape[2]),
        "Rows": int(pixels.shape[1]),
        "Frames": int(pixels.shape[0]),
        "Bit depth": depth,
    }
    return Scan(frames=pixels, window=window, kind="image", name=name, header=header, warnings=tuple(notes))


def _bit_depth(mode: str) -> int:
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


def _to_array(image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA"):
        if _ALPHA_NOTE not in notes:
            notes.append(_ALPHA_NOTE)
        image = image.convert("RGB" if mode == "RGBA" else "L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    return np.asarray(image)
