"""Does a saliency map point at the lesion? Scores against an expert outline, baselines, statistics.

Every function works on the scan's own geometry: ``saliency`` is a float map of shape
``(rows, cols)`` (already mapped back onto the scan) and ``mask`` a boolean outline of the same
shape (``True`` = lesion). Reading mask files lives in :mod:`core.masks`.

The module reads top to bottom:

1. four metrics, each ``f(saliency, mask, ...) -> float`` in [0, 1], higher = closer to the outline,
   and :func:`localisation_scores` giving all four;
2. three baselines scored the same way on the same images (a centred blob, the image's own
   brightness, smooth noise): a map is only interesting where it beats them;
3. a paired bootstrap: a method "beats" a baseline only when the 95% interval of the per-image
   difference excludes zero;
4. :func:`summarise` turns per-image rows into a JSON-able report; :func:`format_table` and
   :func:`format_markdown` print it.

Conventions shared by the metrics (the Quantus conventions, Hedström et al., JMLR 24(34), 2023):
an empty mask gives ``nan`` (nothing to point at); maps are used as given (no normalisation: none
of the four scores changes when a map is multiplied by a positive number). Ties in the map never
depend on pixel order: a score is its expected value over a random order of the tied pixels.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage, stats

#: The metric keys of :func:`localisation_scores` and of a per-image row, with one sentence each
#: on how to read them (for a page's help text or a report's footnote).
METRICS = {
    "pointing_game": "Pointing game: 1 when the map's hottest point lies on the outline or within "
                     "the tolerance of it, else 0.",
    "energy": "Energy: share of the map's positive weight that falls inside the outline "
              "(a flat map scores the outline's share of the image).",
    "rank_accuracy": "Rank accuracy: of the map's k hottest pixels, k being the outline's size, the "
                     "share inside the outline (a flat map scores the outline's share of the image).",
    "auroc": "Pixel AUROC: the chance that a pixel inside the outline is hotter on the map than "
             "one outside (0.5 = no better than chance).",
}
LABELS = {"pointing_game": "pointing game", "energy": "energy",
          "rank_accuracy": "rank accuracy", "auroc": "pixel AUROC"}

#: Tolerance of the pointing game when the pixel spacing is unknown, as a fraction of the image
#: diagonal. 2% reproduces the 7 mm default on the figshare brain slices (512 x 512 at 0.49 mm:
#: 14.5 px against 14.3 px), the one data set here where both are known. FracAtlas radiographs
#: carry no spacing; on their 896 x 717 images the fallback is 23 px.
FALLBACK_FRACTION = 0.02

BASELINE_PREFIX = "baseline:"


def _checked(saliency: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    saliency = np.asarray(saliency, dtype=float)
    mask = np.asarray(mask, dtype=bool)
    if saliency.ndim != 2 or saliency.shape != mask.shape:
        raise ValueError(f"The map {saliency.shape} and the mask {mask.shape} must be 2-D arrays of "
                         "the same shape (rows, cols).")
    if not np.isfinite(saliency).all():
        raise ValueError("The map has non-finite values (NaN or infinity); it cannot be scored.")
    return saliency, mask


# --------------------------------------------------------------------------------------------
# 1. Metrics
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tolerance:
    """How far from the outline the pointing game still counts a hit.

    ``radius`` is in ``unit`` ("mm" or "pixels"); ``sampling`` is the size of one pixel
    (row, col) in that unit, so ``radius / sampling`` is the radius in pixels along each axis.
    """

    radius: float
    unit: str
    sampling: tuple[float, float]

    @property
    def pixels(self) -> tuple[float, float]:
        """The radius in pixels along rows and along columns (they differ for non-square pixels)."""
        return self.radius / self.sampling[0], self.radius / self.sampling[1]

    def describe(self) -> str:
        """One sentence for a report or a page, e.g. under the pointing-game score."""
        rows_px, cols_px = self.pixels
        if self.unit == "mm":
            return (f"A hit is the map's peak on the outline or within {self.radius:g} mm of it "
                    f"({rows_px:.1f} x {cols_px:.1f} pixels at "
                    f"{self.sampling[0]:g} x {self.sampling[1]:g} mm per pixel).")
        return (f"A hit is the map's peak on the outline or within {self.radius:.1f} pixels of it "
                f"({FALLBACK_FRACTION:.0%} of the image diagonal, because the pixel spacing is unknown).")


def pointing_tolerance(shape: tuple[int, int], *, spacing: tuple[float, float] | None = None,
                       tolerance_mm: float = 7.0,
                       fallback_fraction: float = FALLBACK_FRACTION) -> Tolerance:
    """The pointing game's tolerance for an image: ``tolerance_mm`` when the spacing is known,
    else ``fallback_fraction`` of the image diagonal in pixels (square pixels assumed).

    Parameters
    ----------
    shape : (rows, cols) of the image.
    spacing : (row_mm, col_mm), the scan's pixel spacing, or None when unknown (JPEG, PNG).
    tolerance_mm : radius in millimetres, used when ``spacing`` is given.
    fallback_fraction : radius as a fraction of the diagonal, used when ``spacing`` is None.

    Returns
    -------
    Tolerance

    >>> pointing_tolerance((512, 512), spacing=(0.49, 0.49)).describe()
    "A hit is the map's peak on the outline or within 7 mm of it (14.3 x 14.3 pixels at 0.49 x 0.49 mm per pixel)."
    >>> round(pointing_tolerance((512, 512)).radius, 1)
    14.5
    """
    if spacing is None:
        return Tolerance(fallback_fraction * float(np.hypot(*shape)), "pixels", (1.0, 1.0))
    row_mm, col_mm = (float(s) for s in spacing)
    if not (row_mm > 0 and col_mm > 0 and np.isfinite(row_mm) and np.isfinite(col_mm)):
        raise ValueError(f"The pixel spacing {spacing} must be two positive sizes in mm.")
    return Tolerance(float(tolerance_mm), "mm", (row_mm, col_mm))


def pointing_game(saliency: np.ndarray, mask: np.ndarray, *,
                  spacing: tuple[float, float] | None = None, tolerance_mm: float = 7.0,
                  fallback_fraction: float = FALLBACK_FRACTION) -> float:
    """1.0 when the map's maximum lies inside the mask grown by a tolerance, else 0.0.

    Zhang J. et al., "Top-Down Neural Attention by Excitation Backprop", IJCV 126:1084-1102
    (2018), who count a hit within 15 pixels of the object; Quantus's ``PointingGame`` is the same
    test with no tolerance. Here the tolerance is a distance on the patient: the mask is grown by
    a disc of ``tolerance_mm`` measured with the pixel spacing (an ellipse in pixels when the
    pixels are not square), see :func:`pointing_tolerance` for the fallback without spacing.
    Growing by a disc is computed exactly as "the Euclidean distance from the peak to the
    nearest mask pixel, in mm, is at most the tolerance".

    Ties: when several pixels share the maximum, the score is the share of them that hit (the
    expected score of picking one at random; Quantus counts a hit if any of them hits, which
    would reward a map for being flat on a large plateau). A flat map (every pixel equal,
    all-zero included) has no peak and counts as a miss.

    Parameters
    ----------
    saliency : (rows, cols) float map.
    mask : (rows, cols) bool outline.
    spacing, tolerance_mm, fallback_fraction : see :func:`pointing_tolerance`.

    Returns
    -------
    float in [0, 1] (0 or 1 unless the maximum is tied); nan for an empty mask.

    >>> mask = np.zeros((64, 64), bool); mask[10:20, 10:20] = True
    >>> saliency = np.zeros((64, 64)); saliency[15, 25] = 1.0      # 6 pixels right of the mask
    >>> pointing_game(saliency, mask, spacing=(1.0, 1.0))          # 6 mm: within 7 mm
    1.0
    >>> pointing_game(saliency, mask, spacing=(2.0, 2.0))          # 12 mm: too far
    0.0
    """
    saliency, mask = _checked(saliency, mask)
    if not mask.any():
        return float("nan")
    top = saliency.max()
    if top == saliency.min():
        return 0.0
    tolerance = pointing_tolerance(mask.shape, spacing=spacing, tolerance_mm=tolerance_mm,
                                   fallback_fraction=fallback_fraction)
    distance = ndimage.distance_transform_edt(~mask, sampling=tolerance.sampling)
    # a hair of slack so a peak exactly at the tolerance is not lost to rounding
    hits = distance[saliency == top] <= tolerance.radius * (1 + 1e-9)
    return float(hits.mean())


def peak_distance(saliency: np.ndarray, mask: np.ndarray, *, spacing: tuple[float, float] | None = None) -> float:
    """How far the map's peak lies from the outline: the Euclidean distance from the hottest pixel to the nearest
    mask pixel, in mm when ``spacing`` (row, col mm per pixel) is known, else in pixels; 0 on the outline. The
    pointing game says hit or miss; this says by how much (a near miss at 10 mm and a peak on the other side of
    the head both score 0 there). Ties: the mean over the pixels sharing the maximum. nan for an empty mask or a
    flat map (no peak).

    >>> mask = np.zeros((20, 20), bool); mask[5:8, 5:8] = True
    >>> saliency = np.zeros((20, 20)); saliency[7, 13] = 1.0      # 6 pixels right of the outline
    >>> peak_distance(saliency, mask), peak_distance(saliency, mask, spacing=(0.5, 0.5))
    (6.0, 3.0)
    """
    saliency, mask = _checked(saliency, mask)
    top = saliency.max()
    if not mask.any() or top == saliency.min():
        return float("nan")
    sampling = tuple(float(v) for v in spacing) if spacing is not None else (1.0, 1.0)
    distance = ndimage.distance_transform_edt(~mask, sampling=sampling)
    return float(distance[saliency == top].mean())


def peak_distance_unit(spacing: tuple[float, float] | None) -> str:
    """The unit :func:`peak_distance` measures in for this pixel spacing: "mm", or "pixels" where it is unknown."""
    return "mm" if spacing is not None else "pixels"


def energy_pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive saliency that falls inside the mask.

    Wang H. et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR Workshops 2020 (energy-based pointing game). For a map that is never
    negative (the Grad-CAM family, the baselines) this is Quantus's ``AttributionLocalisation``
    (Kohlbrenner M. et al., arXiv:1910.09840, 2020); for a signed map only the positive part
    (evidence for the class) counts, where Quantus would add absolute values. A map with no
    positive value scores 0 (nothing of it is inside).

    Returns
    -------
    float in [0, 1]; nan for an empty mask.

    >>> mask = np.zeros((4, 4), bool); mask[:2] = True
    >>> energy_pointing_game(np.where(mask, 3.0, 1.0), mask)      # 3*8 of 3*8 + 1*8
    0.75
    """
    saliency, mask = _checked(saliency, mask)
    if not mask.any():
        return float("nan")
    positive = np.clip(saliency, 0.0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else 0.0


def relevance_rank_accuracy(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Of the k highest-ranked pixels of the map, k = the mask's size, the share inside the mask.

    Arras L., Osman A., Samek W., "CLEVR-XAI: A benchmark dataset for the ground truth evaluation
    of neural network explanations", Information Fusion 81:14-40 (2022); Quantus's
    ``RelevanceRankAccuracy``. With k equal to the mask's size this is also the top-k precision
    and recall.

    Ties at the k-th value are shared out, not cut by pixel order: the tied pixels that enter the
    top k count with the share of the tied pixels inside the mask (the expected score over a
    random order of the ties). A flat map therefore scores the mask's share of the image.

    Returns
    -------
    float in [0, 1]; nan for an empty mask.

    >>> relevance_rank_accuracy(np.array([[3.0, 1, 1, 1]]), np.array([[True, True, False, False]]))
    0.6666666666666666
    """
    saliency, mask = _checked(saliency, mask)
    values, inside = saliency.ravel(), mask.ravel()
    k = int(inside.sum())
    if k == 0:
        return float("nan")
    kth_value = np.partition(values, values.size - k)[values.size - k]
    above, tied = values > kth_value, values == kth_value
    places_for_ties = k - int(above.sum())
    hits = (above & inside).sum() + places_for_ties * (tied & inside).sum() / tied.sum()
    return float(hits / k)


def pixel_auroc(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Area under the ROC curve of the map's values as a score for "this pixel is in the mask".

    Fawcett T., "An introduction to ROC analysis", Pattern Recognition Letters 27(8), 2006;
    Quantus's ``AUC``. Computed with the rank (Mann-Whitney) formula, ties counting one half,
    which equals ``sklearn.metrics.roc_auc_score``.

    Most of an image can be background (air around a head), so any map that is higher on the
    patient than off it scores well: the centre prior reaches about 0.9 on the brain slices.
    Read it against the baselines.

    Returns
    -------
    float in [0, 1], 0.5 = chance; nan when the mask covers nothing or everything (no pixels of
    one kind to compare with the other).

    >>> mask = np.array([[True, False, False]])
    >>> pixel_auroc(np.array([[2.0, 1.0, 2.0]]), mask)       # beats one outside pixel, ties one
    0.75
    """
    saliency, mask = _checked(saliency, mask)
    inside = mask.ravel()
    n_in, n_out = int(inside.sum()), int((~inside).sum())
    if n_in == 0 or n_out == 0:
        return float("nan")
    ranks = stats.rankdata(saliency.ravel())
    return float((ranks[inside].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))


def localisation_scores(saliency: np.ndarray, mask: np.ndarray, *,
                        spacing: tuple[float, float] | None = None,
                        tolerance_mm: float = 7.0) -> dict[str, float]:
    """All four metrics of one map against one mask, keyed as :data:`METRICS`.

    >>> mask = np.zeros((32, 32), bool); mask[8:16, 8:16] = True
    >>> localisation_scores(mask.astype(float), mask)
    {'pointing_game': 1.0, 'energy': 1.0, 'rank_accuracy': 1.0, 'auroc': 1.0}
    """
    return {
        "pointing_game": pointing_game(saliency, mask, spacing=spacing, tolerance_mm=tolerance_mm),
        "energy": energy_pointing_game(saliency, mask),
        "rank_accuracy": relevance_rank_accuracy(saliency, mask),
        "auroc": pixel_auroc(saliency, mask),
    }


def outline_scores(saliency: np.ndarray, mask: np.ndarray, *, spacing: tuple[float, float] | None = None,
                   tolerance_mm: float = 7.0) -> dict[str, float]:
    """:func:`localisation_scores` and, as ``peak_distance``, :func:`peak_distance`: everything one map gets
    against one outline, on a page or in ``explain-eval``."""
    return {**localisation_scores(saliency, mask, spacing=spacing, tolerance_mm=tolerance_mm),
            "peak_distance": peak_distance(saliency, mask, spacing=spacing)}


# --------------------------------------------------------------------------------------------
# 2. Baselines: maps that know nothing of the model, scored exactly like a method's map
# --------------------------------------------------------------------------------------------

def _unit_range(values: np.ndarray) -> np.ndarray:
    low, high = values.min(), values.max()
    return (values - low) / (high - low) if high > low else np.zeros_like(values)


def centre_prior(shape: tuple[int, int], *, spacing: tuple[float, float] | None = None,
                 sigma_fraction: float = 0.25) -> np.ndarray:
    """A Gaussian centred on the image, 1 at its peak: "the lesion is somewhere in the middle".

    The centre-bias baseline of saliency benchmarks (Judd T. et al., "Learning to predict where
    humans look", ICCV 2009). Round on the patient: distances are in mm when ``spacing`` is
    known (square pixels assumed otherwise); sigma is ``sigma_fraction`` of the shorter side of
    the field of view, so the map still has 14% of its peak at the middle of the nearest border.
    The width only changes the energy score: the pointing game, rank accuracy and AUROC depend
    on the order of the values, which is the distance from the centre for any width. On an
    image with an even side the peak is shared by the two (or four) central pixels.

    Returns
    -------
    (rows, cols) float map in [0, 1].

    >>> prior = centre_prior((5, 7))
    >>> prior[2, 3], prior.argmax() == 2 * 7 + 3
    (np.float64(1.0), np.True_)
    """
    row_mm, col_mm = (1.0, 1.0) if spacing is None else (float(s) for s in spacing)
    rows, cols = shape
    dr = (np.arange(rows) - (rows - 1) / 2) * row_mm
    dc = (np.arange(cols) - (cols - 1) / 2) * col_mm
    sigma = sigma_fraction * min(rows * row_mm, cols * col_mm)
    prior = np.exp(-(dr[:, None] ** 2 + dc[None, :] ** 2) / (2 * sigma ** 2))
    return prior / prior.max()  # 1 at the peak even when the centre falls between pixels


def intensity_prior(image: np.ndarray, *, sigma: float | None = None) -> np.ndarray:
    """The image's own brightness, smoothed: on a radiograph "the bone itself", on contrast MRI
    the enhancing tissue. A map that only follows brightness scores like this baseline.

    Pass the image as displayed (MONOCHROME1 already inverted). Colour images are averaged
    over their channels. ``sigma`` (pixels) defaults to 1% of the image diagonal (7 px, 3.5 mm
    on a 512 x 512 brain slice): enough to remove noise and JPEG blocks so that the peak is a
    bright region rather than one bright pixel.

    Returns
    -------
    (rows, cols) float map in [0, 1] (zeros for a uniform image).

    >>> image = np.zeros((32, 32)); image[20:24, 5:9] = 100.0
    >>> np.unravel_index(intensity_prior(image).argmax(), image.shape)
    (np.int64(21), np.int64(6))
    """
    image = np.asarray(image, dtype=float)
    if image.ndim == 3:
        image = image.mean(axis=2)
    if image.ndim != 2 or not np.isfinite(image).all():
        raise ValueError("The image must be a finite 2-D array (rows, cols) or (rows, cols, channels).")
    sigma = 0.01 * float(np.hypot(*image.shape)) if sigma is None else sigma
    return _unit_range(ndimage.gaussian_filter(image, sigma, mode="nearest"))


def random_smooth_map(shape: tuple[int, int], *, seed: int, sigma: float | None = None) -> np.ndarray:
    """Smoothed white noise: a map with the blobs of a real one and no knowledge of anything.

    ``sigma`` (pixels) defaults to 5% of the image diagonal: on a 512 x 512 slice 36 px, blobs
    about 85 px wide at half height, two to three cells of the brain model's 16 x 16 last
    convolution drawn over the image, the scale of a Grad-CAM's blobs. The noise wraps around
    the borders before smoothing so that the peak is equally likely anywhere (mirrored borders
    would pull it to the edges). Give each image its own fixed seed, e.g.
    ``zlib.crc32(image_name.encode())``, so a run is reproducible in any order.

    Returns
    -------
    (rows, cols) float map in [0, 1].

    >>> bool((random_smooth_map((16, 16), seed=1) == random_smooth_map((16, 16), seed=1)).all())
    True
    """
    sigma = 0.05 * float(np.hypot(*shape)) if sigma is None else sigma
    noise = np.random.default_rng(seed).standard_normal(shape)
    return _unit_range(ndimage.gaussian_filter(noise, sigma, mode="wrap"))


# --------------------------------------------------------------------------------------------
# 3. Statistics: a mean with its interval, and a paired difference
# --------------------------------------------------------------------------------------------

def bootstrap_median(values, *, n_resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """:func:`bootstrap_mean` for the median: (median, low, high) of the finite values, for a skewed measure such
    as the peak's distance from the outline (a few maps on the far side of the head would drag a mean).

    >>> bootstrap_median([1.0, 2.0, 100.0])[0]
    2.0
    """
    return _bootstrap(values, np.median, n_resamples=n_resamples, seed=seed, confidence=confidence)


def bootstrap_mean(values, *, n_resamples: int = 2000, seed: int = 0,
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of the finite values with a percentile bootstrap interval: (mean, low, high).

    Efron B., Tibshirani R., "An Introduction to the Bootstrap", 1993; computed by
    ``scipy.stats.bootstrap``. Percentile rather than BCa because BCa is undefined when every
    resample has the same mean, which 0/1 pointing-game scores on a few images produce.
    Non-finite values (a metric undefined on an image) are left out; with fewer than two
    values the interval is (nan, nan).

    >>> bootstrap_mean([1.0, 1.0, 1.0])
    (1.0, 1.0, 1.0)
    """
    return _bootstrap(values, np.mean, n_resamples=n_resamples, seed=seed, confidence=confidence)


def _bootstrap(values, statistic, *, n_resamples: int, seed: int, confidence: float) -> tuple[float, float, float]:
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(statistic(values))
    if values.size < 2:
        return estimate, float("nan"), float("nan")
    result = stats.bootstrap((values,), statistic, n_resamples=n_resamples, confidence_level=confidence,
                             method="percentile", rng=np.random.default_rng(seed))
    return estimate, float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_bootstrap(a, b, *, n_resamples: int = 2000, seed: int = 0,
                     confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same images with its bootstrap interval: (difference, low, high).

    ``a`` and ``b`` are per-image scores of a method and a baseline, in the same image order;
    resampling images (not scores) keeps each image's pair together. A method beats the
    baseline only when ``low > 0``; images where either score is nan are left out.

    >>> difference, low, high = paired_bootstrap([0.9, 0.8, 0.7, 0.9], [0.1, 0.2, 0.1, 0.3])
    >>> round(difference, 2), low > 0
    (0.65, True)
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"Paired scores need the same images: {a.size} against {b.size} scores.")
    return bootstrap_mean(a - b, n_resamples=n_resamples, seed=seed, confidence=confidence)


# --------------------------------------------------------------------------------------------
# 3b. Does the prediction need the outlined region? Fill it in, and a region of the same shape elsewhere
# --------------------------------------------------------------------------------------------

def fill_region(image: np.ndarray, region: np.ndarray, *, grow: float = 0.01) -> np.ndarray:
    """``image`` with ``region`` (grown by ``grow`` of the image's side, so its rim goes too) replaced by a
    smooth fill from the pixels around it: normalised convolution (Knutsson & Westin, CVPR 1993), a Gaussian
    average of the outside pixels only, its width half the region's equivalent radius. The lesion's
    brightness, edge and texture go; the tissue's level around it stays. A 2-D grey or 3-D colour image.

    >>> image = np.full((40, 40), 10.0); image[15:25, 15:25] = 200.0
    >>> region = np.zeros((40, 40), bool); region[15:25, 15:25] = True
    >>> float(np.abs(fill_region(image, region) - 10.0).max()) < 1e-6
    True
    """
    region = np.asarray(region, dtype=bool)
    if region.shape != image.shape[:2]:
        raise ValueError(f"The region is {region.shape} and the image {image.shape[:2]}.")
    if not region.any():
        return image.copy()
    pixels = max(1, int(round(grow * max(region.shape))))
    region = ndimage.binary_dilation(region, iterations=pixels)
    outside = (~region).astype(float)
    sigma = max(2.0, 0.5 * np.sqrt(region.sum() / np.pi))
    weight = ndimage.gaussian_filter(outside, sigma)
    out = np.array(image, dtype=np.float32, copy=True)
    channels = [out] if out.ndim == 2 else [out[..., c] for c in range(out.shape[-1])]
    for channel in channels:
        filled = ndimage.gaussian_filter(channel * outside, sigma) / np.maximum(weight, 1e-6)
        level = float(channel[~region].mean()) if (~region).any() else float(channel.mean())
        channel[region] = np.where(weight[region] > 1e-3, filled[region], level)
    return out


INTERIOR_ERODE = 0.12  # the rim kept when an interior is filled: scalp and skull (core.preprocess.head_region)


def fill_interior(image: np.ndarray, *, grey: np.ndarray | None = None, erode: float = INTERIOR_ERODE) -> np.ndarray:
    """``image`` with the inside of the head or body part filled in from its rim (:func:`fill_region` over
    :func:`core.preprocess.head_region` of ``grey``, the image itself unless given, all but an outer ``erode`` of
    its radius): the outline, scalp, skull and background stay, the anatomy and any lesion go. No outline is read."""
    from core.preprocess import head_region

    return fill_region(image, head_region(image if grey is None else grey, erode=erode))


def foreground(image: np.ndarray) -> np.ndarray:
    """The body part or head: the smoothed image above its Otsu threshold, holes filled (a grey or colour image)."""
    from skimage.filters import threshold_otsu

    grey = image if image.ndim == 2 else image.mean(axis=-1)
    smooth = ndimage.gaussian_filter(grey.astype(float), max(1.0, max(grey.shape) / 200))
    if float(smooth.max()) == float(smooth.min()):
        return np.ones(grey.shape, dtype=bool)
    return ndimage.binary_fill_holes(smooth > threshold_otsu(smooth))


def control_region(region: np.ndarray, body: np.ndarray, *, inside: float = 0.9) -> np.ndarray | None:
    """A region of the same shape and size as ``region``, elsewhere on the body: its mirror image across the
    vertical midline (the other hemisphere, the other side of a bone) when that clears the region, else the
    nearest shift by whole region widths that does; at least ``inside`` of it on ``body``, no pixel on or
    next to the region. None when no placement fits.

    >>> body = np.ones((30, 30), bool); region = np.zeros((30, 30), bool); region[5:10, 3:8] = True
    >>> np.argwhere(control_region(region, body)).min(axis=0).tolist()
    [5, 22]
    """
    region = np.asarray(region, dtype=bool)
    if not region.any():
        return None
    rows, cols = np.nonzero(region)
    height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
    keep_clear = ndimage.binary_dilation(region, iterations=max(1, int(0.01 * max(region.shape))))
    shape = region.shape

    def fits(candidate: np.ndarray) -> bool:
        area = candidate.sum()
        return bool(area == region.sum() and not (candidate & keep_clear).any()
                    and (candidate & body).sum() >= inside * area)

    mirrored = region[:, ::-1]
    if fits(mirrored):
        return mirrored
    shifts = sorted(((dr * height, dc * width) for dr in range(-4, 5) for dc in range(-4, 5) if dr or dc),
                    key=lambda d: (d[0] ** 2 + d[1] ** 2, d))
    for dr, dc in shifts:
        if not (0 <= rows.min() + dr and rows.max() + dr < shape[0] and 0 <= cols.min() + dc
                and cols.max() + dc < shape[1]):
            continue
        candidate = np.zeros_like(region)
        candidate[rows + dr, cols + dc] = True
        if fits(candidate):
            return candidate
    return None


def log_odds(p: float) -> float:
    """log(p / (1 - p)), ``p`` clipped to [1e-7, 1 - 1e-7]: the evidence for a class against all the others.

    A probability near 1 hides a fall in evidence (0.999 to 0.99 is a drop of 0.009 in P but 2.3 in log-odds).

    >>> round(log_odds(0.5), 6), round(log_odds(0.999) - log_odds(0.99), 2)
    (0.0, 2.31)
    """
    p = min(max(float(p), 1e-7), 1 - 1e-7)
    return float(np.log(p) - np.log1p(-p))


def summarise_ablation(rows: list[dict], *, n_resamples: int = 2000, seed: int = 0,
                       confidence: float = 0.95) -> dict:
    """What filling in the outline does to the prediction, against filling a region of the same shape elsewhere.

    ``rows``: one per image, ``{"image", "class", "p_intact", "p_outline", "p_control", "right_intact",
    "right_outline", "right_control"}`` (P(true class) and whether the decision was right; the control's
    entries None when no control region fitted). Per class and over all: the accuracy and mean P(true class)
    of each version, and the paired difference between the drop in P(true class) when the outline is filled and
    when the control region is: above zero (its interval excluding zero) means the model needed the outlined
    region more than a region of the same size elsewhere. ``needs_outline_log_odds`` is the same difference in
    log-odds of the true class (:func:`log_odds`), which a probability near 1 cannot flatten.

    >>> rows = [{"image": str(i), "class": "a", "p_intact": 0.9, "p_outline": 0.2, "p_control": 0.85,
    ...          "right_intact": True, "right_outline": False, "right_control": True} for i in range(5)]
    >>> group = summarise_ablation(rows)["groups"][0]
    >>> group["accuracy"]["outline"], round(group["needs_outline"]["difference"], 2), group["needs_outline"]["beats"]
    (0.0, 0.65, True)
    """
    classes = ["all"] + sorted({row["class"] for row in rows})
    groups = []
    for cls in classes:
        chosen = [row for row in rows if cls == "all" or row["class"] == cls]
        group = {"class": cls, "n": len(chosen), "accuracy": {}, "probability": {}}
        for version in ("intact", "outline", "control"):
            right = [row[f"right_{version}"] for row in chosen if row[f"right_{version}"] is not None]
            group["accuracy"][version] = _number(float(np.mean(right))) if right else None
            values = np.array([np.nan if row[f"p_{version}"] is None else row[f"p_{version}"] for row in chosen],
                              dtype=float)
            mean, low, high = bootstrap_mean(values, n_resamples=n_resamples, seed=seed, confidence=confidence)
            group["probability"][version] = {"mean": _number(mean), "low": _number(low), "high": _number(high)}
        paired = [row for row in chosen if row["p_control"] is not None]
        group["n_control"] = len(paired)
        drop_outline = np.array([row["p_intact"] - row["p_outline"] for row in paired], dtype=float)
        drop_control = np.array([row["p_intact"] - row["p_control"] for row in paired], dtype=float)
        difference, low, high = paired_bootstrap(drop_outline, drop_control, n_resamples=n_resamples, seed=seed,
                                                 confidence=confidence)
        group["needs_outline"] = {"difference": _number(difference), "low": _number(low), "high": _number(high),
                                  "beats": bool(low > 0), "worse": bool(high < 0)}
        evidence = {v: np.array([log_odds(row["p_intact"]) - log_odds(row[f"p_{v}"]) for row in paired], dtype=float)
                    for v in ("outline", "control")}
        difference, low, high = paired_bootstrap(evidence["outline"], evidence["control"], n_resamples=n_resamples,
                                                 seed=seed, confidence=confidence)
        group["needs_outline_log_odds"] = {"difference": _number(difference), "low": _number(low),
                                           "high": _number(high), "beats": bool(low > 0), "worse": bool(high < 0)}
        groups.append(group)
    return {"groups": groups}


# --------------------------------------------------------------------------------------------
# 4. Report: per method, per layer, per class, against every baseline
# --------------------------------------------------------------------------------------------

def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def summarise(rows: list[dict], *, n_resamples: int = 2000, seed: int = 0,
              confidence: float = 0.95) -> dict:
    """A JSON-able report from per-image rows.

    Parameters
    ----------
    rows : one dict per image and map, ``{"image": str, "class": str, "method": str,
        "layer": str | None, "pointing_game": float, "energy": float, "rank_accuracy": float,
        "auroc": float}`` (the metrics as :func:`localisation_scores` gives them). Baselines are
        rows whose method starts with ``"baseline:"`` (``"baseline:centre"``,
        ``"baseline:intensity"``, ``"baseline:random"``); their layer is ignored.

    Returns
    -------
    dict::

        {"metrics": ["pointing_game", "energy", "rank_accuracy", "auroc"],
         "confidence": 0.95, "n_resamples": 2000, "seed": 0,
         "n_images": 40,                      # distinct images among the rows
         "groups": [                          # methods (in order of appearance), then baselines
           {"method": "gradcam", "layer": "last_conv", "class": "all",   # "all", then each class
            "baseline": False, "n": 40,
            "metrics": {"pointing_game": {"mean": 0.2, "low": 0.1, "high": 0.33, "n": 40}, ...},
            "versus": {"baseline:centre": {"pointing_game": {"difference": -0.3, "low": -0.5,
                       "high": -0.1, "n": 40, "beats": False, "worse": True}, ...}, ...}},
           ...]}

    ``n`` counts images with a finite score (AUROC is undefined for a mask covering the whole
    image); undefined numbers are None. Rows that also carry ``peak_distance`` (and its
    ``peak_distance_unit``, "mm" or "pixels"; :func:`peak_distance`) give each group a
    ``"peak_distance": {"median", "low", "high", "n", "unit"}``: a median, as a few maps far
    from the outline would drag a mean, with no comparison to the baselines. A method's
    "versus" pairs it with each baseline on the images both were scored on; ``beats`` means
    the interval lies above zero, ``worse`` below.
    A baseline group has an empty "versus". Add ``report["notes"]`` (a list of sentences: images
    skipped and why, the tolerance) and the renderers print them first.

    >>> rows = [{"image": f"{i}.jpg", "class": "glioma", "method": m, "layer": None,
    ...          "pointing_game": float(m == "gradcam"), "energy": 0.5, "rank_accuracy": 0.5,
    ...          "auroc": 0.5} for i in range(10) for m in ("gradcam", "baseline:centre")]
    >>> report = summarise(rows)
    >>> report["groups"][0]["versus"]["baseline:centre"]["pointing_game"]["beats"]
    True
    """
    metrics = list(METRICS)
    # (is a baseline, method, layer, class) -> {image: row}
    by_group: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for row in rows:
        is_baseline = row["method"].startswith(BASELINE_PREFIX)
        layer = None if is_baseline else row.get("layer")
        for cls in ("all", row["class"]):
            images = by_group[(is_baseline, row["method"], layer, cls)]
            if row["image"] in images:
                raise ValueError(f"{row['image']} is scored twice for {row['method']} at layer {layer}.")
            images[row["image"]] = row
    # the report follows the run: methods and layers in order of appearance, baselines last
    methods = list(dict.fromkeys(row["method"] for row in rows))
    layers = list(dict.fromkeys(row.get("layer") for row in rows))
    baselines = [m for m in methods if m.startswith(BASELINE_PREFIX)]
    keys = sorted(by_group, key=lambda k: (k[0], methods.index(k[1]),
                                           layers.index(k[2]) if k[2] in layers else -1,
                                           k[3] != "all", k[3]))

    def scores(images: dict[str, dict], names: list[str], metric: str) -> np.ndarray:
        return np.array([float(images[name][metric]) for name in names])

    def interval(mean: float, low: float, high: float) -> dict:
        return {"mean": _number(mean), "low": _number(low), "high": _number(high)}

    groups = []
    for is_baseline, method, layer, cls in keys:
        images = by_group[(is_baseline, method, layer, cls)]
        names = sorted(images)
        group = {"method": method, "layer": layer, "class": cls, "baseline": is_baseline,
                 "n": len(names), "metrics": {}, "versus": {}}
        for metric in metrics:
            values = scores(images, names, metric)
            group["metrics"][metric] = {
                **interval(*bootstrap_mean(values, n_resamples=n_resamples, seed=seed, confidence=confidence)),
                "n": int(np.isfinite(values).sum())}
        if all("peak_distance" in images[name] for name in names):
            values = scores(images, names, "peak_distance")
            units = sorted({images[name].get("peak_distance_unit", "pixels") for name in names})
            group["peak_distance"] = {
                **{("median" if k == "mean" else k): v for k, v in interval(
                    *bootstrap_median(values, n_resamples=n_resamples, seed=seed, confidence=confidence)).items()},
                "n": int(np.isfinite(values).sum()), "unit": " or ".join(units)}
        for name in ([] if is_baseline else baselines):
            baseline = by_group.get((True, name, None, cls), {})
            shared = [image for image in names if image in baseline]
            versus = group["versus"][name] = {}
            for metric in metrics:
                a, b = scores(images, shared, metric), scores(baseline, shared, metric)
                difference, low, high = paired_bootstrap(a, b, n_resamples=n_resamples, seed=seed,
                                                         confidence=confidence)
                versus[metric] = {"difference": _number(difference), "low": _number(low),
                                  "high": _number(high), "n": int((np.isfinite(a) & np.isfinite(b)).sum()),
                                  "beats": bool(low > 0), "worse": bool(high < 0)}
        groups.append(group)

    n_images = len({row["image"] for row in rows})
    return {"metrics": metrics, "confidence": confidence, "n_resamples": n_resamples, "seed": seed,
            "n_images": n_images, "groups": groups}


def _interval(mean, low, high, *, signed: bool = False) -> str:
    if mean is None:
        return "-"
    sign = "+" if signed else ""
    if low is None:
        return f"{mean:{sign}.2f}"
    return f"{mean:{sign}.2f} [{low:{sign}.2f}, {high:{sign}.2f}]"


def _distance(d: dict | None) -> str:
    if not d or d["median"] is None:
        return "-"
    return f"{d['median']:.1f}" if d["low"] is None else f"{d['median']:.1f} [{d['low']:.1f}, {d['high']:.1f}]"


def _tables(report: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of the two tables both renderers print."""
    level = f"{report['confidence']:.0%}"
    labels = [LABELS[m] for m in report["metrics"]]
    distances = [g["peak_distance"] for g in report["groups"] if "peak_distance" in g]
    if distances:
        labels = labels + [f"peak to outline, median ({' or '.join(sorted({d['unit'] for d in distances}))})"]
    means, differences = [], []
    for g in report["groups"]:
        where = [g["method"], g["layer"] or "-", g["class"]]
        means.append(where + [str(g["n"])] + [
            _interval(s["mean"], s["low"], s["high"]) for s in (g["metrics"][m] for m in report["metrics"])]
            + ([_distance(g.get("peak_distance"))] if distances else []))
        for baseline, versus in g["versus"].items():
            cells = []
            for metric in report["metrics"]:
                d = versus[metric]
                verdict = " beats" if d["beats"] else " worse" if d["worse"] else ""
                cells.append(_interval(d["difference"], d["low"], d["high"], signed=True) + verdict)
            n = max(versus[m]["n"] for m in report["metrics"])
            differences.append(where + [baseline, str(n)] + cells)
    tables = [
        (f"Localisation against the outlines: mean [{level} interval] over n images",
         ["method", "layer", "class", "n"] + labels, means),
        (f"Method minus baseline on the same images [{level} paired bootstrap interval]; "
         "'beats' or 'worse' only when the interval excludes zero",
         ["method", "layer", "class", "baseline", "n"] + [LABELS[m] for m in report["metrics"]], differences),
    ]
    ablation = []
    for g in (report.get("ablation") or {}).get("groups", []):
        p, a, d = g["probability"], g["accuracy"], g["needs_outline"]
        verdict = " needs it" if d["beats"] else " needs it less" if d["worse"] else ""
        e = g.get("needs_outline_log_odds")
        evidence = "-" if e is None else (_interval(e["difference"], e["low"], e["high"], signed=True)
                                          + (" needs it" if e["beats"] else " needs it less" if e["worse"] else ""))
        ablation.append([g["class"], str(g["n"])]
                        + ["-" if a[v] is None else f"{a[v]:.2f}" for v in ("intact", "outline", "control")]
                        + [_interval(p[v]["mean"], p[v]["low"], p[v]["high"]) for v in ("intact", "outline", "control")]
                        + [str(g["n_control"]), _interval(d["difference"], d["low"], d["high"], signed=True) + verdict,
                           evidence])
    if ablation:
        tables.append((f"Does the prediction need the outlined region? The outline filled in from its surroundings, "
                       f"against a region of the same shape filled elsewhere on the body [{level} interval]",
                       ["class", "n", "accuracy intact", "accuracy outline filled", "accuracy control filled",
                        "P(true) intact", "P(true) outline filled", "P(true) control filled", "n with control",
                        "extra drop, outline minus control", "the same in log-odds of the true class"], ablation))
    return tables


def format_table(report: dict) -> str:
    """The report of :func:`summarise` as aligned plain text, for a terminal."""
    lines = list(report.get("notes", []))
    for title, header, rows in _tables(report):
        if not rows:
            continue
        widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
        lines += ["", title] if lines else [title]
        for r in [header] + rows:
            lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return "\n".join(lines) + "\n"


def format_markdown(report: dict) -> str:
    """The report of :func:`summarise` as Markdown tables, for docs and the page."""
    lines = [f"{note}  " for note in report.get("notes", [])]
    for title, header, rows in _tables(report):
        if not rows:
            continue
        lines += ["", f"**{title}**", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines).lstrip("\n") + "\n"
