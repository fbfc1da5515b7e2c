"""Saliency maps with tf-keras-vis, mapped back to the scan's own geometry, and overlays.

CAM methods are computed on the explained convolution's own grid (``expand_cam=False``) and
upsampled once, straight to the scan's rows and columns, with pixel-centre alignment. The
preprocessing squashes the whole image to the model's square input, so a CAM cell covers
the same fraction of the scan as of the model input: the hot spot lands on the anatomy it
refers to. (tf-keras-vis's own expansion uses corner-aligned ``scipy.ndimage.zoom``, which
shifts maps by up to half a cell; we avoid it.)

Visualizers are built once per (model, method) with ``clone=True``, so the shared model is
never modified, and reused under a lock. Finished maps are kept in a small in-memory LRU
keyed by the input tensor's hash, the method, the class and the layer.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from core.preprocess import invert, window_level

METHODS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Faster Score-CAM",
    "layercam": "LayerCAM",
    "smoothgrad": "SmoothGrad",
}
CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")

#: One sentence per method, for the dashboard and teaching.
DESCRIPTIONS = {
    "gradcam": "Weights each feature map of the chosen convolution by the mean gradient of the class "
               "score, keeping positive evidence (Selvaraju et al., 2017).",
    "gradcam++": "Like Grad-CAM but weights positive gradients pixel by pixel, which handles several "
                 "instances of a finding better (Chattopadhay et al., 2018).",
    "scorecam": "Masks the image with each of the strongest feature maps and weights them by how much "
                "the class score rises: no gradients (Wang et al., 2020; fast variant with max_N maps).",
    "layercam": "Multiplies each activation by its own positive gradient, giving finer maps, "
                "also from earlier layers (Jiang et al., 2021).",
    "smoothgrad": "Averages the input gradient over noisy copies of the image: pixel-level, sharp, but "
                  "not tied to a layer (Smilkov et al., 2017).",
}

SMOOTH_SAMPLES = 20
SMOOTH_NOISE = 0.2
SCORECAM_MAX_N = 16


class _Visualizers:
    """tf-keras-vis objects per (model, method), each built once with ``clone=True``."""

    def __init__(self):
        self._items: dict = {}
        self._lock = threading.Lock()

    def get(self, model, method: str):
        key = (id(model), method)
        with self._lock:
            if key not in self._items:
                self._items[key] = (_build_visualizer(model, method), threading.Lock(), model)
            visualizer, lock, _ = self._items[key]
        return visualizer, lock


def _build_visualizer(model, method: str):
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam,
           "layercam": Layercam, "smoothgrad": Saliency}[method]
    # Score-CAM scores softmax outputs as they are; the gradient methods need linear scores.
    modifier = None if method == "scorecam" else ReplaceToLinear()
    # clone=True: ReplaceToLinear must not rewrite the softmax of the model other sessions use.
    return cls(model, model_modifier=modifier, clone=True)


_VISUALIZERS = _Visualizers()
_CACHE: OrderedDict = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 128


def saliency_map(model, tensor: np.ndarray, method: str, class_index: int, layer: str | None = None, *,
                 cache: bool = True) -> np.ndarray:
    """The raw map of one method for one input tensor (1, S, S, 1), normalised to [0, 1].

    CAM methods return the explained layer's own grid (e.g. 16 x 16); SmoothGrad returns
    the input grid (S x S). Use :func:`to_geometry` to map either onto an image.
    ``cache=False`` builds a throw-away visualizer and keeps nothing: for temporary models
    (the sanity check's randomised copies), whose ``id`` may be reused once they are freed.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    layer = layer if method in CAM_METHODS else None
    key = (hashlib.sha1(np.ascontiguousarray(tensor, np.float32).tobytes()).hexdigest(), tensor.shape,
           id(model), method, int(class_index), layer)
    with _CACHE_LOCK:
        if cache and key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    from tf_keras_vis.utils.scores import CategoricalScore

    if cache:
        visualizer, lock = _VISUALIZERS.get(model, method)
    else:
        visualizer, lock = _build_visualizer(model, method), threading.Lock()
    score = CategoricalScore([int(class_index)])
    x = np.asarray(tensor, np.float32)
    with lock, warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Score-CAM's batched predict prints a Keras progress bar: keep stdout clean for the CLI.
        warnings.simplefilter("ignore", UserWarning)
        if method == "smoothgrad":
            result = visualizer(score, x, smooth_samples=SMOOTH_SAMPLES, smooth_noise=SMOOTH_NOISE)
        elif method == "scorecam":
            result = visualizer(score, x, penultimate_layer=layer, max_N=SCORECAM_MAX_N, expand_cam=False)
        else:
            result = visualizer(score, x, penultimate_layer=layer, expand_cam=False)
    result = np.asarray(result[0] if isinstance(result, list) else result, np.float32)[0]
    result = np.nan_to_num(result, nan=0.0, posinf=0.0, neginf=0.0)
    result.setflags(write=False)
    if not cache:
        return result
    with _CACHE_LOCK:
        _CACHE[key] = result
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return result


def to_geometry(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Upsample a map to ``shape`` (rows, cols) with pixel-centre alignment (bilinear).

    Because the model input is the whole scan squashed to a square, this one resize puts
    each cell of the map back over the part of the scan it was computed from.
    """
    from skimage.transform import resize as sk_resize

    shape = (int(shape[0]), int(shape[1]))
    if saliency.shape == shape:
        return saliency.astype(np.float32)
    shrinking = saliency.shape[0] > shape[0] or saliency.shape[1] > shape[1]
    out = sk_resize(saliency.astype(np.float32), shape, order=1, anti_aliasing=shrinking, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def display_image(frame: np.ndarray, window: tuple[float, float], invert_image: bool) -> np.ndarray:
    """A frame as a reader sees it, in [0, 1]: windowed, inverted for MONOCHROME1, grey."""
    from core.preprocess import grayscale

    return invert(window_level(grayscale(frame), centre=window[0], width=window[1]), enabled=invert_image)


_COLORMAPS = ("Turbo", "Jet", "Inferno", "Viridis", "Hot")


def colormap_lut(name: str = "Turbo") -> np.ndarray:
    """A (256, 3) uint8 lookup table from a plotly colour scale."""
    return _lut(name)


def _lut(name: str) -> np.ndarray:
    cached = _LUTS.get(name)
    if cached is not None:
        return cached
    from plotly.colors import get_colorscale, sample_colorscale

    samples = sample_colorscale(get_colorscale(name), list(np.linspace(0, 1, 256)))
    lut = np.array([_parse_rgb(s) for s in samples], np.uint8)
    _LUTS[name] = lut
    return lut


_LUTS: dict = {}


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
    if image.shape != saliency.shape:
        raise ValueError(f"image {image.shape} and map {saliency.shape} differ in shape")
    grey = np.repeat(np.clip(image, 0, 1)[..., None] * 255.0, 3, axis=-1)
    colour = _lut(colormap)[np.clip((saliency * 255).astype(np.int32), 0, 255)].astype(np.float32)
    weight = opacity * np.where(saliency >= threshold, saliency, 0.0)[..., None]
    return np.clip(grey * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """Encode an RGB or grey uint8 array as PNG, in memory, with no metadata."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(rgb, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Explanation:
    method: str
    class_index: int
    layer: str | None
    raw: np.ndarray  # the map on the explained layer's grid (or the input grid)
    on_scan: np.ndarray  # the map at the scan's rows x cols


def explain(loaded, scan, *, method: str, class_index: int, layer: str | None = None,
            frame: int | None = None) -> Explanation:
    """Compute one method's map for one frame of a scan and map it to the scan's geometry."""
    tensor = loaded.pipeline.scan_tensor(scan, frame)
    layer = (layer or loaded.info.get("last_conv")) if method in CAM_METHODS else None
    raw = saliency_map(loaded.model, tensor, method, class_index, layer)
    return Explanation(method, int(class_index), layer, raw, to_geometry(raw, scan.shape))
