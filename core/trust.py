"""How much to believe a saliency map: faithfulness, a sanity check, and prediction uncertainty.

- Deletion and insertion curves (Petsiuk et al., 2018, "RISE"): pixels are removed from (or
  revealed on) a baseline in order of saliency, and the model's probability for the explained
  class is tracked. The baseline is the model's mean training image when its folder has one,
  else a blurred copy of the image (:func:`deletion_baseline`). Each curve costs one batched forward pass. The same
  curves for random orders give the chance level; the ratios say how much better the map is.
- Average drop (Chattopadhay et al., 2018): the relative fall in confidence when only the
  most salient ``keep`` fraction of the image is kept.
- Cascading model-parameter randomisation (Adebayo et al., 2018): layers are re-initialised
  from the output down on a copy of the model and the map recomputed; a faithful method's
  map must change (low Spearman rank correlation and SSIM with the original).
- Test-time augmentation: small shifts and contrast changes within the training
  augmentation's range give a spread of the probability and of the Grad-CAM hot spot.

Everything works on the model input grid (S x S) and never modifies the shared model. ``loaded`` is a
:class:`core.model.LoadedModel`: curves read its uncalibrated probabilities through its compiled forward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from core.saliency import CAM_METHODS, reference_map, to_geometry

STEPS = 32
RANDOM_ORDERS = 5
KEEP_FRACTION = 0.15
#: A method passes the sanity check when its map, with every layer randomised, keeps a
#: Spearman rank correlation below this with the original map.
SANITY_LIMIT = 0.5
#: Faithfulness curves are only read when blurring the whole image lowers the class
#: probability by at least this much.
MIN_DYNAMIC_RANGE = 0.2


def _probabilities(loaded, batch: np.ndarray, class_index: int, batch_size: int = 64, *,
                   calibrated: bool = False) -> np.ndarray:
    """P(``class_index``) of each image: the model's own (what deletion curves follow), or, ``calibrated``, the
    probability the pages show and the decision threshold is set on (temperature and prior correction applied)."""
    forward = loaded.predict if calibrated else loaded.uncalibrated
    out = []
    for start in range(0, len(batch), batch_size):
        out.append(forward(batch[start:start + batch_size])[:, class_index])
    return np.concatenate(out)


def blurred_baseline(image: np.ndarray) -> np.ndarray:
    """The image blurred beyond recognition of detail (Gaussian, sigma = side / 16)."""
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(image, sigma=image.shape[0] / 16.0, mode="nearest").astype(np.float32)


def reference_baseline(loaded) -> np.ndarray | None:
    """The model's mean training image on its input grid (``reference.npy``, written by
    ``python -m core calibrate``), or None when the folder has none.

    A class-neutral "nothing in particular" for deletion: it holds no one patient's finding, and lies at
    the centre of what the model was trained on, so a model that has not learned a shortcut scores it near
    its prior. When the blurred baseline is uninformative (the model already calls a featureless film the
    explained class), deletion towards this mean may still be measurable.
    """
    reference = loaded.info.get("reference")
    path = loaded.path / reference["file"] if reference else None
    if path is None or not path.is_file():
        return None
    return np.load(path).astype(np.float32)


#: What removed pixels take in deletion and insertion, as the object of a sentence (``Faithfulness.baseline``).
BASELINES = {"reference": "the model's mean training image", "blurred": "a blurred copy of the scan",
             "given": "the baseline given"}


def deletion_baseline(loaded, tensor: np.ndarray) -> tuple[np.ndarray, str]:
    """The image removed pixels take in deletion and insertion, chosen from the model folder.

    Parameters
    ----------
    loaded : core.model.LoadedModel
    tensor : ndarray (1, S, S, C)
        The model input being explained.

    Returns
    -------
    (ndarray (S, S), str)
        The folder's mean training image (:func:`reference_baseline`) and ``"reference"`` when the model was
        calibrated with one, else the input blurred beyond recognition and ``"blurred"``. The Explain page, the
        report and the DICOM SR all score with this choice (:func:`model_faithfulness`).

    Examples
    --------
    >>> baseline, kind = deletion_baseline(loaded, tensor)  # doctest: +SKIP
    >>> kind                                                 # doctest: +SKIP
    'reference'
    """
    reference = reference_baseline(loaded)
    if reference is not None:
        return reference, "reference"
    return blurred_baseline(np.asarray(tensor, np.float32)[0, ..., 0]), "blurred"


def _curve_batches(image: np.ndarray, baseline: np.ndarray, order: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Deletion and insertion images for one pixel order: (steps + 1, S, S) each."""
    n = image.size
    counts = np.linspace(0, n, steps + 1).round().astype(int)
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    rank = rank.reshape(image.shape)
    removed = rank[None] < counts[:, None, None]  # (steps+1, S, S): the first k pixels of the order
    deletion = np.where(removed, baseline[None], image[None])
    insertion = np.where(removed, image[None], baseline[None])
    return deletion, insertion


def _auc(values: np.ndarray) -> float:
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


@dataclass(frozen=True)
class Faithfulness:
    deletion_auc: float  # lower is better
    insertion_auc: float  # higher is better
    random_deletion_auc: float
    random_insertion_auc: float
    average_drop: float  # percent; lower is better
    full_probability: float = 1.0  # the class probability on the intact image
    baseline_probability: float = 0.0  # ... and on the baseline alone
    baseline: str = "blurred"  # which baseline: a key of BASELINES
    fractions: list = field(repr=False, default_factory=list)
    deletion: list = field(repr=False, default_factory=list)
    insertion: list = field(repr=False, default_factory=list)
    random_deletion: list = field(repr=False, default_factory=list)
    random_insertion: list = field(repr=False, default_factory=list)

    @property
    def informative(self) -> bool:
        """Whether removing the image's information lowers the class probability at all.

        When the model already gives the blurred baseline the explained class (a chest model
        that calls any featureless film "pneumonia"), deletion cannot fall and insertion cannot
        rise, whatever the map: the curves say nothing about the map.
        """
        return self.full_probability - self.baseline_probability >= MIN_DYNAMIC_RANGE

    @property
    def deletion_ratio(self) -> float:
        """Random deletion AUC / map deletion AUC: above 1 means the map beats chance."""
        return self.random_deletion_auc / max(self.deletion_auc, 1e-6)

    @property
    def insertion_ratio(self) -> float:
        """Map insertion AUC / random insertion AUC: above 1 means the map beats chance."""
        return self.insertion_auc / max(self.random_insertion_auc, 1e-6)

    def summary(self) -> dict:
        return {"deletion_auc": self.deletion_auc, "insertion_auc": self.insertion_auc,
                "deletion_ratio": self.deletion_ratio, "insertion_ratio": self.insertion_ratio,
                "average_drop": self.average_drop, "informative": self.informative}


def faithfulness(loaded, tensor: np.ndarray, saliency: np.ndarray, class_index: int, *, steps: int = STEPS,
                 random_orders: int = RANDOM_ORDERS, keep: float = KEEP_FRACTION, seed: int = 0,
                 baseline: np.ndarray | None = None) -> Faithfulness:
    """Deletion/insertion AUCs of a map against random orders, and the average drop.

    ``saliency`` may be on any grid; it is resized to the input grid. Removed pixels take the values
    of ``baseline`` (the model-input grid, S x S): by default the image blurred beyond recognition;
    :func:`reference_baseline` gives the model's mean training image instead. Costs
    ``2 * (1 + random_orders)`` batches of ``steps + 1`` images plus one of two.
    """
    image = np.asarray(tensor, np.float32)[0, ..., 0]
    channels = tensor.shape[-1]
    saliency = to_geometry(np.asarray(saliency, np.float32), image.shape)
    given = baseline
    baseline = blurred_baseline(image) if baseline is None else np.asarray(baseline, np.float32).reshape(image.shape)
    rng = np.random.default_rng(seed)
    # Ties (flat regions of an upsampled CAM) are broken at random, not by raster order.
    order = np.lexsort((rng.random(image.size), -saliency.ravel()))
    deletion_imgs, insertion_imgs = _curve_batches(image, baseline, order, steps)
    batches = [deletion_imgs, insertion_imgs]
    for _ in range(random_orders):
        batches.extend(_curve_batches(image, baseline, rng.permutation(image.size), steps))
    kept = np.where(saliency >= np.quantile(saliency, 1 - keep), image, baseline)
    stacked = np.concatenate(batches + [image[None], kept[None]])[..., None]
    probs = _probabilities(loaded, np.repeat(stacked, channels, axis=-1) if channels > 1 else stacked, class_index)
    curves = probs[:-2].reshape(len(batches), steps + 1)
    full, only_kept = probs[-2], probs[-1]
    random_deletion = curves[2::2].mean(axis=0)
    random_insertion = curves[3::2].mean(axis=0)
    return Faithfulness(
        deletion_auc=_auc(curves[0]), insertion_auc=_auc(curves[1]),
        random_deletion_auc=_auc(random_deletion), random_insertion_auc=_auc(random_insertion),
        average_drop=float(100.0 * max(0.0, full - only_kept) / max(full, 1e-6)),
        full_probability=float(full), baseline_probability=float(curves[0][-1]),
        baseline="blurred" if given is None else "given",
        fractions=list(np.linspace(0, 1, steps + 1)), deletion=curves[0].tolist(), insertion=curves[1].tolist(),
        random_deletion=random_deletion.tolist(), random_insertion=random_insertion.tolist(),
    )


def model_faithfulness(loaded, tensor: np.ndarray, saliency: np.ndarray, class_index: int, **options) -> Faithfulness:
    """:func:`faithfulness` against the model folder's own baseline (:func:`deletion_baseline`); the result's
    ``baseline`` names it. ``options`` are those of :func:`faithfulness` but ``baseline``."""
    baseline, kind = deletion_baseline(loaded, tensor)
    return replace(faithfulness(loaded, tensor, saliency, class_index, baseline=baseline, **options), baseline=kind)


# ----------------------------------------------------------------------------- sanity check

def _weighted_layers(model) -> list:
    return [layer for layer in model.layers if layer.weights and type(layer).__name__ in ("Conv2D", "Dense")]


def randomised_copies(model, seed: int = 0):
    """Yield (layer name, copy) with the top 1, 2, ... weighted layers re-initialised.

    The copies share nothing with ``model``; batch-normalisation statistics are kept, as in
    Adebayo et al.'s cascading randomisation of the learned weights.
    """
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    rng = np.random.default_rng(seed)
    for layer in reversed(_weighted_layers(copy)):
        new = []
        for weight in layer.get_weights():
            std = float(weight.std()) or 0.05
            new.append(rng.normal(0.0, std, weight.shape).astype(weight.dtype))
        layer.set_weights(new)
        yield layer.name, copy


def similarity(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(Spearman rank correlation, SSIM) of two maps on the same grid."""
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        rho = 0.0
    else:
        rho = float(spearmanr(a.ravel(), b.ravel()).statistic)
    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    ssim = float(structural_similarity(a, b, data_range=1.0, win_size=max(win, 3))) if side >= 3 else 0.0
    return rho, ssim


@dataclass(frozen=True)
class SanityCheck:
    method: str
    layers: list  # names of the layers randomised, cumulatively, output side first
    maps: list  # the map after each step, input grid
    spearman: list
    ssim: list

    @property
    def passes(self) -> bool:
        """The map changes once the whole model is randomised."""
        return bool(self.spearman) and abs(self.spearman[-1]) < SANITY_LIMIT


def sanity_check(loaded, tensor: np.ndarray, method: str, class_index: int, layer: str | None = None,
                 *, original: np.ndarray | None = None, seed: int = 0) -> SanityCheck:
    """Cascading randomisation for one method; the shared model is never touched.

    The randomised copies are throw-away models, so their maps come from tf-keras-vis directly
    (:func:`core.saliency.reference_map`) rather than a compiled path built for each.
    """
    size = tensor.shape[1:3]
    layer = (layer or loaded.last_conv) if method in CAM_METHODS else None
    base = original if original is not None else loaded.explainer.saliency(tensor, method, class_index, layer)
    base = to_geometry(base, size)
    names, maps, rhos, ssims = [], [], [], []
    for name, copy in randomised_copies(loaded.model, seed=seed):
        new = to_geometry(reference_map(copy, tensor, method, class_index, layer), size)
        rho, ssim = similarity(base, new)
        names.append(name)
        maps.append(new)
        rhos.append(rho)
        ssims.append(ssim)
    return SanityCheck(method, names, maps, rhos, ssims)


# ----------------------------------------------------------------------------- uncertainty

@dataclass(frozen=True)
class Uncertainty:
    mean: float
    low: float  # 5th percentile
    high: float  # 95th percentile
    std: float
    crosses_threshold: bool
    hotspot_spread: float  # std of the Grad-CAM peak position, in fractions of the image side
    probabilities: list = field(repr=False, default_factory=list)


def _shift(image: np.ndarray, dy: float, dx: float) -> np.ndarray:
    from scipy.ndimage import shift

    return shift(image, (dy, dx), order=1, mode="nearest")


def test_time_augmentation(loaded, tensor: np.ndarray, class_index: int, *, threshold: float | None = None,
                           n: int = 16, seed: int = 0, max_shift: float = 0.06, max_contrast: float = 0.15,
                           layer: str | None = None) -> Uncertainty:
    """Probability spread over small shifts and contrast changes, and Grad-CAM hot-spot stability.

    The ranges match the training augmentation. Each variant's map is shifted back before its
    peak is located, so the spread measures the map, not the shift. The probabilities are the calibrated ones
    the pages show (the first copy is the image itself), so the interval reads against the saved threshold.
    """
    image = np.asarray(tensor, np.float32)[0, ..., 0]
    channels = tensor.shape[-1]
    side = image.shape[0]
    rng = np.random.default_rng(seed)
    shifts = rng.uniform(-max_shift, max_shift, (n, 2)) * side
    shifts[0] = 0.0
    factors = rng.uniform(1 - max_contrast, 1 + max_contrast, n)
    factors[0] = 1.0
    mean = image.mean()
    variants = np.stack([(_shift(image, dy, dx) - mean) * f + mean for (dy, dx), f in zip(shifts, factors)])
    variants = np.repeat(variants[..., None], channels, axis=-1)
    # the probability the page shows beside it, on the threshold's scale (a prior correction moves it far)
    probs = _probabilities(loaded, variants, class_index, calibrated=True)
    peaks = []
    layer = layer or loaded.last_conv
    for i in range(min(n, 8) if layer else 0):  # eight maps are enough to see whether the hot spot moves
        cam = to_geometry(loaded.explainer.saliency(variants[i][None], "gradcam", class_index, layer), (side, side))
        back = _shift(cam, -shifts[i][0], -shifts[i][1])
        peaks.append(np.unravel_index(np.argmax(back), back.shape))
    peaks = np.array(peaks, float).reshape(-1, 2) / side
    low, high = (float(v) for v in np.percentile(probs, [5, 95]))
    crosses = threshold is not None and low < threshold <= high
    return Uncertainty(mean=float(probs.mean()), low=low, high=high, std=float(probs.std()),
                       crosses_threshold=bool(crosses), hotspot_spread=float(np.sqrt(peaks.var(axis=0).sum())) if len(peaks) else 0.0,
                       probabilities=probs.tolist())
