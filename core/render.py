"""Pictures for people: a frame windowed for display, colour maps, overlays, a colour bar, PNG bytes."""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np

from core.preprocess import grayscale, invert, resize_to, window_level

#: Colour maps offered for saliency overlays (plotly colour scales).
COLORMAPS = ("Turbo", "Jet", "Inferno", "Viridis", "Hot")


def display_image(frame: np.ndarray, window: tuple[float, float], invert_image: bool, *, voi=None) -> np.ndarray:
    """A frame as a reader sees it, in [0, 1]: windowed (or the header's VOI transform), inverted
    for MONOCHROME1, grey."""
    return invert(window_level(grayscale(frame), centre=window[0], width=window[1], voi=voi), enabled=invert_image)


def display_rgb(frame: np.ndarray, window: tuple[float, float], invert_image: bool, *, voi=None) -> np.ndarray:
    """:func:`display_image` as RGB uint8; a colour frame keeps its colours, each channel windowed."""
    if frame.ndim == 3:
        rgb = np.stack([window_level(frame[..., c], centre=window[0], width=window[1]) for c in range(3)], axis=-1)
        return ((1 - rgb if invert_image else rgb) * 255).astype(np.uint8)
    grey = (display_image(frame, window, invert_image, voi=voi) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def display_step(shape: tuple[int, int], max_side: int) -> int:
    """The whole number of scan pixels per displayed pixel that fits ``shape`` within ``max_side``."""
    return max(1, -(-max(int(shape[0]), int(shape[1])) // int(max_side)))


def downsample(image: np.ndarray, max_side: int) -> np.ndarray:
    """An image (grey or RGB) shrunk by a whole factor to at most ``max_side`` on its longer side,
    each displayed pixel the mean of the ``step x step`` block it covers (the last blocks padded by
    repeating the edge): anti-aliased, and each displayed pixel lies exactly over its own block.
    """
    step = display_step(image.shape[:2], max_side)
    if step == 1:
        return image
    rows, cols = image.shape[:2]
    pad = ((0, -rows % step), (0, -cols % step)) + ((0, 0),) * (image.ndim - 2)
    padded = np.pad(np.asarray(image, np.float32), pad, mode="edge")
    blocks = padded.reshape(padded.shape[0] // step, step, padded.shape[1] // step, step, *image.shape[2:])
    out = blocks.mean(axis=(1, 3))
    return out.round().clip(0, 255).astype(np.uint8) if image.dtype == np.uint8 else out.astype(np.float32)


@lru_cache(maxsize=16)
def colormap_lut(name: str = "Turbo") -> np.ndarray:
    """A (256, 3) uint8 lookup table from a plotly colour scale."""
    from plotly.colors import get_colorscale, sample_colorscale

    samples = sample_colorscale(get_colorscale(name), list(np.linspace(0, 1, 256)))
    lut = np.array([_parse_rgb(s) for s in samples], np.uint8)
    lut.setflags(write=False)
    return lut


def _parse_rgb(text: str) -> tuple[int, int, int]:
    if text.startswith("#"):
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))
    values = text[text.index("(") + 1:text.index(")")].split(",")
    return tuple(int(round(float(v))) for v in values[:3])


def overlay(image: np.ndarray, saliency: np.ndarray, *, opacity: float = 0.5, colormap: str = "Turbo",
            threshold: float = 0.0) -> np.ndarray:
    """Blend a [0, 1] saliency map (same shape) over a [0, 1] grey image; RGB uint8.

    Each pixel's colour weight is ``opacity * saliency``, so cold regions keep the anatomy
    visible; values below ``threshold`` are not coloured at all.

    >>> overlay(np.zeros((2, 2)), np.ones((2, 2)), opacity=1.0).shape
    (2, 2, 3)
    """
    if image.shape[:2] != saliency.shape:
        raise ValueError(f"image {image.shape} and map {saliency.shape} differ in shape")
    if image.ndim == 3:  # an RGB uint8 display image
        grey = image.astype(np.float32)
    else:
        grey = np.clip(image, 0, 1)[..., None] * 255.0  # broadcast over the three channels, not copied
    colour = colormap_lut(colormap)[np.clip((saliency * 255).astype(np.int32), 0, 255)].astype(np.float32)
    weight = opacity * np.where(saliency >= threshold, saliency, 0.0)[..., None]
    colour *= weight
    blend = colour.astype(np.result_type(grey, weight), copy=False)
    blend += grey * (1 - weight)
    return np.clip(blend, 0, 255, out=blend).astype(np.uint8)


def heat_rgba(saliency: np.ndarray, *, colormap: str = "Turbo", threshold: float = 0.0) -> np.ndarray:
    """A [0, 1] saliency map as an RGBA uint8 layer: the colour of :func:`overlay`, alpha the saliency.

    Drawn over the grey image with a layer opacity ``o`` (as a browser composites an image with an
    alpha channel and an opacity), each pixel gets ``o * saliency`` of the colour: :func:`overlay`'s
    blend, to within one grey level (alpha has 256 steps). A change of opacity then needs no new
    picture, only a new number.

    >>> heat_rgba(np.array([[0.0, 1.0]]))[..., 3].tolist()
    [[0, 255]]
    """
    index = np.clip((saliency * 255).astype(np.int32), 0, 255)
    alpha = np.where(saliency >= threshold, np.clip(saliency, 0, 1), 0.0) * 255
    return np.concatenate([colormap_lut(colormap)[index], np.round(alpha).astype(np.uint8)[..., None]], axis=-1)


def outline_rgba(mask: np.ndarray, *, colour=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """The mask's outline as an RGBA uint8 layer: ``colour`` on the border pixels, transparent elsewhere
    (:func:`draw_outline` as a layer of its own)."""
    border = outline(mask, thickness=thickness)
    layer = np.zeros(border.shape + (4,), np.uint8)
    layer[border] = (*colour, 255)
    return layer


def composite(base: np.ndarray, layers) -> np.ndarray:
    """RGB uint8: ``(rgba, opacity)`` layers drawn in turn over a grey [0, 1] or RGB uint8 base, as a
    browser draws images with an alpha channel and an opacity (for tests and reports of the figures)."""
    out = as_rgb(base).astype(np.float32)
    for rgba, opacity in layers:
        weight = (rgba[..., 3:4].astype(np.float32) / 255.0) * float(opacity)
        out = rgba[..., :3].astype(np.float32) * weight + out * (1 - weight)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def colour_bar(colormap: str = "Turbo", *, height: int = 256, width: int = 16) -> np.ndarray:
    """A vertical colour bar, high saliency at the top: RGB uint8 (height, width, 3)."""
    lut = colormap_lut(colormap)
    index = np.linspace(255, 0, int(height)).round().astype(int)
    return np.repeat(lut[index][:, None, :], int(width), axis=1)


def outline(mask: np.ndarray, *, thickness: int = 2) -> np.ndarray:
    """The border pixels of a boolean mask (inner border, ``thickness`` pixels wide)."""
    from scipy.ndimage import binary_erosion

    mask = np.asarray(mask, bool)
    return mask & ~binary_erosion(mask, iterations=max(1, int(thickness)), border_value=0)


def draw_outline(rgb: np.ndarray, mask: np.ndarray, *, colour=(0, 255, 0), thickness: int = 2) -> np.ndarray:
    """A copy of an RGB image with the mask's outline drawn on it, pixel for pixel."""
    out = np.array(rgb, np.uint8, copy=True)
    out[outline(mask, thickness=thickness)] = colour
    return out


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a grey, RGB or RGBA uint8 array as PNG, in memory, with no metadata (Pillow, zlib level 1).

    Level 1: a full-size radiograph overlay in about 0.2 s instead of 1.3 s at Pillow's default,
    for a file about a fifth larger (BENCHMARKS.md); it is encoded only when a download is asked for.
    """
    from PIL import Image

    if image.dtype != np.uint8 and image.ndim == 2:  # a grey [0, 1] display image
        image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    pixels = np.ascontiguousarray(np.asarray(image, np.uint8))
    if pixels.ndim not in (2, 3) or (pixels.ndim == 3 and pixels.shape[2] not in (3, 4)):
        raise ValueError(f"expected a grey (rows, cols), RGB or RGBA (rows, cols, 3 or 4) array, got shape "
                         f"{pixels.shape}")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def display_pixels(frame: np.ndarray, window: tuple[float, float], invert_image: bool, *, voi=None,
                   max_side: int | None = None) -> np.ndarray:
    """A frame as a reader sees it, shrunk first to at most ``max_side`` pixels on its longer side.

    Grey frames come back as float [0, 1], colour frames as RGB uint8. Shrinking the native values
    before windowing is what a reading station does for a screen smaller than the image: the window
    is then applied to a million pixels, not four, so a change of window costs a few milliseconds.
    """
    if max_side is not None:
        if frame.ndim == 3:
            return downsample(display_rgb(frame, window, invert_image), max_side)
        frame = downsample(np.asarray(frame, np.float32), max_side)
    if frame.ndim == 3:
        return display_rgb(frame, window, invert_image)
    return display_image(frame, window, invert_image, voi=voi)


def shrink_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized to ``shape``: a display pixel is inside when most of what it covers is."""
    if mask.shape == tuple(shape):
        return np.asarray(mask, bool)
    return resize_to(np.asarray(mask, np.float32), shape) >= 0.5


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A grey [0, 1] image as RGB uint8 (an RGB uint8 image passes unchanged)."""
    if image.ndim == 3:
        return np.asarray(image, np.uint8)
    grey = (np.clip(image, 0, 1) * 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)
