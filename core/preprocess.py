"""One preprocessing pipeline of small named steps, shared by training and inference.

Each step is a pure function of an array and explicit keyword parameters. Running the
pipeline records every step (name, parameters, one sentence on why, output) so the
dashboard can show them and the exact tensor the model received.

>>> import numpy as np
>>> pipeline = Pipeline(input_size=64)
>>> trace = pipeline.trace(np.zeros((100, 80), np.float32), window=(0.5, 1.0))
>>> [s.name for s in trace.steps]
['grayscale', 'window', 'invert', 'resize', 'contrast', 'normalise']
>>> trace.tensor.shape
(1, 64, 64, 1)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import lru_cache

import numpy as np


# ----------------------------------------------------------------------------- steps

def grayscale(image: np.ndarray) -> np.ndarray:
    """Luminance of an RGB image (ITU-R BT.601 weights); a grey image passes unchanged."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3:
        return (image[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)).astype(np.float32)
    return image


def window_level(image: np.ndarray, *, centre: float, width: float, voi=None) -> np.ndarray:
    """Map the window ``[centre - width/2, centre + width/2]`` linearly onto [0, 1], clipping.

    With ``voi`` (a DICOM header's own VOI transform, :class:`core.io.dicom.VOI`) that transform is
    applied instead, by pydicom: it honours the VOI LUT Function (LINEAR, LINEAR_EXACT, SIGMOID)
    and a VOI LUT Sequence; ``centre`` and ``width`` are then only what the display sliders show.

    >>> window_level(np.array([0., 50., 100.]), centre=50, width=100).tolist()
    [0.0, 0.5, 1.0]
    """
    if voi is not None:
        return voi.apply(image)
    width = max(float(width), 1e-6)
    low = float(centre) - width / 2.0
    return np.clip((np.asarray(image, np.float32) - low) / width, 0.0, 1.0).astype(np.float32)


def invert(image: np.ndarray, *, enabled: bool) -> np.ndarray:
    """``1 - x`` on a [0, 1] image when enabled (MONOCHROME1: low values are white)."""
    return (1.0 - image).astype(np.float32) if enabled else image


def resize(image: np.ndarray, *, size: int) -> np.ndarray:
    """Resize the whole image to ``size x size`` without keeping the aspect ratio.

    The training images were squashed this way, so every upload is prepared the same way.
    Shrinking is anti-aliased (area-like); mapping a saliency map back is the same resize
    to the scan's own (rows, cols), :func:`resize_to`.
    """
    return resize_to(image, (size, size))


def resize_to(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """skimage's ``resize(image, shape, order=1, anti_aliasing=<shrinking>, preserve_range=True)``, fast.

    skimage's resize (Gaussian anti-aliasing when shrinking, then bilinear at pixel centres,
    mirrored at the border) is linear and separable: the same result, to float precision, is two
    matrix products, each matrix being skimage's resize of one axis. A 2,000 x 2,000 radiograph
    takes milliseconds instead of a quarter of a second, once its size has been seen
    (BENCHMARKS.md; ``tests/test_preprocess.py`` checks the equality).

    >>> resize_to(np.ones((4, 6), np.float32), (2, 3)).shape
    (2, 3)
    """
    shape = (int(shape[0]), int(shape[1]))
    if image.shape[:2] == shape:
        return np.asarray(image, np.float32)
    shrinking = image.shape[0] > shape[0] or image.shape[1] > shape[1]
    if image.ndim != 2:
        from skimage.transform import resize as sk_resize

        return sk_resize(image, shape + image.shape[2:], order=1, anti_aliasing=shrinking,
                         preserve_range=True).astype(np.float32)
    rows = _axis_resize(image.shape[0], shape[0], shrinking)
    cols = _axis_resize(image.shape[1], shape[1], shrinking)
    image = np.asarray(image, np.float32)
    with serial_blas():
        out = (rows @ image) @ cols.T
    return np.clip(out, image.min(), image.max()).astype(np.float32)  # skimage clips to the input range


def serial_blas():
    """Context in which NumPy's BLAS uses one thread.

    These products are small; a multi-threaded BLAS on two cores that TensorFlow or a second
    preparing thread also uses waits for descheduled threads, and a 0.3 ms product can then
    take 50 ms or more (measured while a training ran, BENCHMARKS.md).
    """
    from threadpoolctl import ThreadpoolController

    global _BLAS
    if _BLAS is None:
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


_BLAS = None


@lru_cache(maxsize=32)
def _axis_resize(n_in: int, n_out: int, anti_aliasing: bool) -> np.ndarray:
    """(n_out, n_in) matrix of skimage's resize along one axis: skimage applied to the identity.

    Columns are done in blocks, so building it never holds more than a few MB at a time.
    """
    from skimage.transform import resize as sk_resize

    matrix = np.empty((n_out, n_in), np.float32)
    for start in range(0, n_in, 256):
        stop = min(start + 256, n_in)
        impulses = np.zeros((n_in, stop - start), np.float32)
        impulses[np.arange(start, stop), np.arange(stop - start)] = 1.0
        # Along axis 1 the size is kept, so skimage neither blurs nor moves anything there.
        matrix[:, start:stop] = sk_resize(impulses, (n_out, stop - start), order=1, anti_aliasing=anti_aliasing,
                                          preserve_range=True, clip=False)
    matrix.setflags(write=False)
    return matrix


def head_region(image: np.ndarray, *, erode: float) -> np.ndarray:
    """Boolean mask of the head with its outer rim (scalp and skull) eroded away.

    The head is the largest bright region (smoothed image above half its Otsu threshold), holes
    filled; then every pixel closer to its edge than ``erode`` times the head's radius (the radius of
    a disc of the same area) is dropped. Where no head is found (a blank image, or a region under 5%
    of the image) the whole image is kept.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    image = np.asarray(image, np.float32)
    everything = np.ones(image.shape, bool)
    smooth = ndi.gaussian_filter(image, 1.0)
    if float(smooth.max()) <= float(smooth.min()):
        return everything
    foreground = smooth > max(0.5 * float(threshold_otsu(smooth)), float(smooth.min()) + 0.02)
    labels, n = ndi.label(foreground)
    if n == 0:
        return everything
    sizes = ndi.sum(foreground, labels, range(1, n + 1))
    head = ndi.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    if head.mean() < 0.05:
        return everything
    radius = np.sqrt(head.sum() / np.pi)
    return ndi.distance_transform_edt(head) > float(erode) * radius


def head_mask(image: np.ndarray, *, erode: float) -> np.ndarray:
    """Black out everything outside the head's inner region (:func:`head_region`) of a [0, 1] image.

    With ``erode`` 0 the image passes unchanged.

    >>> image = np.zeros((64, 64), np.float32); image[8:56, 8:56] = 1.0
    >>> out = head_mask(image, erode=0.2)
    >>> bool(out[32, 32] == 1.0), bool(out[10, 32] == 0.0), bool(out[0, 0] == 0.0)
    (True, True, True)
    """
    if not erode:
        return image
    return np.where(head_region(image, erode=erode), image, 0.0).astype(np.float32)


def rim_only(image: np.ndarray, *, erode: float) -> np.ndarray:
    """The opposite of :func:`head_mask`: black out the head's inner region, keep its rim and the background.

    A diagnostic, not a model to use: a model trained on these images can only read the scalp, the skull
    and the head's outline, so its accuracy measures how much of the class they alone give away.

    >>> image = np.zeros((64, 64), np.float32); image[8:56, 8:56] = 1.0
    >>> out = rim_only(image, erode=0.2)
    >>> bool(out[32, 32] == 0.0), bool(out[10, 32] == 1.0)
    (True, True)
    """
    if not erode:
        return image
    return np.where(head_region(image, erode=erode), 0.0, image).astype(np.float32)


def body_region(image: np.ndarray, *, margin: float) -> np.ndarray:
    """Boolean mask of the body part on a radiograph: what lies above a level halfway between the open
    field's (the smoothed film's 5th percentile) and the film's Otsu threshold, so soft tissue counts
    with bone; pieces under 0.5% of the image dropped (small side markers, text), holes filled, then
    grown by ``margin`` times the image's side so the skin line stays inside. Where nothing, or nearly
    everything, is found, the whole image is kept.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    image = np.asarray(image, np.float32)
    everything = np.ones(image.shape, bool)
    smooth = ndi.gaussian_filter(image, 1.0)
    if float(smooth.max()) <= float(smooth.min()):
        return everything
    background = float(np.percentile(smooth, 5))
    labels, n = ndi.label(smooth > background + 0.5 * (float(threshold_otsu(smooth)) - background))
    if n == 0:
        return everything
    sizes = ndi.sum(labels > 0, labels, range(1, n + 1))
    keep = np.isin(labels, 1 + np.flatnonzero(sizes >= 0.005 * image.size))
    body = ndi.binary_fill_holes(keep)
    if not 0.02 <= body.mean() <= 0.95:
        return everything
    grow = int(round(float(margin) * max(image.shape)))
    return ndi.binary_dilation(body, iterations=grow) if grow > 0 else body


def body_mask(image: np.ndarray, *, margin: float) -> np.ndarray:
    """Black out the open field around the body part (:func:`body_region`) of a [0, 1] radiograph.

    With ``margin`` 0 the image passes unchanged.

    >>> image = np.full((64, 64), 0.1, np.float32); image[16:48, 24:40] = 0.8; image[2:4, 2:4] = 1.0
    >>> out = body_mask(image, margin=0.05)
    >>> bool(out[32, 32] == 0.8), bool(out[32, 22] == 0.1), bool(out[32, 8] == 0.0), bool(out[3, 3] == 0.0)
    (True, True, True, True)
    """
    if not margin:
        return image
    return np.where(body_region(image, margin=margin), image, 0.0).astype(np.float32)


def contrast(image: np.ndarray, *, method: str | None, clip_limit: float = 0.01) -> np.ndarray:
    """Optional contrast enhancement: ``"clahe"`` (adaptive histogram equalisation) or none."""
    if not method:
        return image
    if method != "clahe":
        raise ValueError(f"unknown contrast method {method!r}")
    from skimage.exposure import equalize_adapthist

    return equalize_adapthist(np.clip(image, 0, 1), clip_limit=clip_limit).astype(np.float32)


def normalise(image: np.ndarray, *, mean: float, std: float) -> np.ndarray:
    """Standardise intensities: ``(x - mean) / std``, the range the model was trained on."""
    return ((image - np.float32(mean)) / np.float32(std)).astype(np.float32)


def channels(image: np.ndarray, *, n: int) -> np.ndarray:
    """The grey image repeated on ``n`` channels, for a model that takes RGB input.

    >>> channels(np.zeros((2, 2), np.float32), n=3).shape
    (2, 2, 3)
    """
    return np.repeat(np.asarray(image, np.float32)[..., np.newaxis], int(n), axis=-1)


# ----------------------------------------------------------------------------- pipeline

@dataclass(frozen=True)
class StepRecord:
    """What one step did: its name, parameters, a sentence on why, and its output."""

    name: str
    params: dict
    why: str
    output: np.ndarray


@dataclass(frozen=True)
class Trace:
    """Every step of one run and the tensor the model receives, shape (1, size, size, channels)."""

    steps: tuple[StepRecord, ...]
    tensor: np.ndarray

    @property
    def model_image(self) -> np.ndarray:
        """The tensor as a 2-D image, before the batch and channel axes were added."""
        return self.tensor[0, ..., 0]


_WHY = {
    "grayscale": "The model reads one intensity channel; colour images are reduced to luminance.",
    "window": "Native values (Hounsfield units, detector counts, 8-bit grey) are mapped to 0-1 "
              "through the display window, so the model sees the contrast a reader would.",
    "invert": "MONOCHROME1 files store bone as dark; inverting makes bone bright as in the training images.",
    "resize": "The whole image is resized to the model's square input without keeping the aspect "
              "ratio, exactly as the training images were.",
    "head": "Everything outside the head's inner region is blacked out (scalp, skull and background, with any "
            "burned-in text), so the model can only weigh what lies inside the skull.",
    "rim": "A diagnostic model: the inside of the head is blacked out and only the scalp, the skull, the head's "
           "outline and the background are kept, to measure how much of the class they alone give away.",
    "body": "The open field around the body part is blacked out (the detector's background, collimation edges, "
            "side markers and text), so the model can only weigh the limb itself.",
    "contrast": "Optional adaptive histogram equalisation (CLAHE) evens out local contrast.",
    "normalise": "Intensities are shifted and scaled by fixed constants (saved with the model) to the "
                 "range the network was trained on.",
    "channels": "This model takes colour (RGB) input: the grey image is repeated on its three channels.",
}


@dataclass(frozen=True)
class Pipeline:
    """The model's preprocessing; its parameters are saved beside the model.

    Parameters
    ----------
    input_size : int
        Side of the square model input, in pixels.
    channels : int
        Channels of the model input: 1, or 3 for a model that takes RGB (the grey image repeated).
    contrast : str or None
        ``"clahe"`` or ``None``.
    mean, std : float
        Normalisation applied last, on the [0, 1] image.
    head : float
        0 (off), or the share of the head's radius eroded from its edge before everything outside
        is blacked out (:func:`head_mask`, after the resize), as in a brain model trained on the
        inside of the skull only.
    rim : float
        0 (off), or the same erosion for the opposite step (:func:`rim_only`): a diagnostic model that
        sees only what :func:`head_mask` removes.
    body : float
        0 (off), or the margin, as a share of the image's side, grown around the body part before the open
        field around it is blacked out (:func:`body_mask`, after the resize), as in a fracture model trained
        on the limb only.
    """

    input_size: int = 224
    contrast: str | None = None
    mean: float = 0.5
    std: float = 0.25
    channels: int = 1
    head: float = 0.0
    rim: float = 0.0
    body: float = 0.0

    @property
    def value_range(self) -> tuple[float, float]:
        """The range of the model input: the [0, 1] image after normalisation."""
        return (0.0 - self.mean) / self.std, (1.0 - self.mean) / self.std

    def to_dict(self) -> dict:
        """The parameters saved beside a model; ``head``, ``rim`` and ``body`` only when on, so older models' records stay
        as they were."""
        params = asdict(self)
        for optional in ("head", "rim", "body"):
            if not params[optional]:
                params.pop(optional)
        return params

    @classmethod
    def from_dict(cls, params: dict) -> "Pipeline":
        return cls(**{f.name: params[f.name] for f in fields(cls) if f.name in params})

    def steps(self, *, window: tuple[float, float], invert_image: bool, voi=None) -> list[tuple[str, callable, dict]]:
        """The ordered steps with the parameters they will get for one image."""
        window_params = {"centre": float(window[0]), "width": float(window[1])}
        if voi is not None:
            window_params["voi"] = voi
        steps = [
            ("grayscale", grayscale, {}),
            ("window", window_level, window_params),
            ("invert", invert, {"enabled": bool(invert_image)}),
            ("resize", resize, {"size": int(self.input_size)}),
            *([("head", head_mask, {"erode": float(self.head)})] if self.head else []),
            *([("rim", rim_only, {"erode": float(self.rim)})] if self.rim else []),
            *([("body", body_mask, {"margin": float(self.body)})] if self.body else []),
            ("contrast", contrast, {"method": self.contrast}),
            ("normalise", normalise, {"mean": float(self.mean), "std": float(self.std)}),
        ]
        if self.channels > 1:
            steps.append(("channels", channels, {"n": int(self.channels)}))
        return steps

    def trace(self, image: np.ndarray, *, window: tuple[float, float], invert_image: bool = False,
              voi=None) -> Trace:
        """Run every step on one frame and record each output."""
        x = np.asarray(image, np.float32)
        records = []
        for name, fn, params in self.steps(window=window, invert_image=invert_image, voi=voi):
            x = fn(x, **params)
            records.append(StepRecord(name, params, _WHY[name], x))
        tensor = x[np.newaxis, ..., np.newaxis] if x.ndim == 2 else x[np.newaxis]
        return Trace(tuple(records), tensor.astype(np.float32))

    def __call__(self, image: np.ndarray, *, window: tuple[float, float], invert_image: bool = False,
                 voi=None) -> np.ndarray:
        """The model input tensor, shape (1, size, size, channels), for one frame."""
        return self.trace(image, window=window, invert_image=invert_image, voi=voi).tensor

    def scan_tensor(self, scan, frame: int | None = None) -> np.ndarray:
        """The model input for one frame of a :class:`core.io.Scan`, with its header's display transform."""
        return self.scan_trace(scan, frame).tensor

    def scan_trace(self, scan, frame: int | None = None) -> Trace:
        """:meth:`trace` of one frame of a scan, with the header's own window (never a display choice)."""
        return self.trace(scan.frame(frame), window=scan.window, invert_image=scan.invert, voi=scan.voi)
