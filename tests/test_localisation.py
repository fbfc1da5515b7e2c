"""Localisation metrics, baselines, bootstrap and report on known answers (core/localisation.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from core.localisation import (
    METRICS, bootstrap_mean, centre_prior, control_region, energy_pointing_game, fill_region, foreground,
    format_markdown, format_table, intensity_prior, localisation_scores, paired_bootstrap, pixel_auroc,
    pointing_game, pointing_tolerance, random_smooth_map, relevance_rank_accuracy, summarise, summarise_ablation,
)


def disc(shape, centre, radius):
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius ** 2


def point_map(shape, where):
    saliency = np.zeros(shape)
    saliency[where] = 1.0
    return saliency


# --- known answers ---------------------------------------------------------------------------

def test_a_map_equal_to_the_mask_scores_one_on_every_metric():
    mask = disc((96, 80), (40, 30), 12)
    assert localisation_scores(mask.astype(float), mask, spacing=(0.5, 0.5)) == {m: 1.0 for m in METRICS}


def test_a_map_pointing_away_from_the_mask_scores_zero_on_every_metric():
    mask = disc((96, 80), (30, 25), 8)
    away = ndimage.distance_transform_edt(~mask)  # hotter the farther from the lesion, 0 on it
    assert localisation_scores(away, mask, spacing=(0.5, 0.5)) == {m: 0.0 for m in METRICS}


def test_scores_do_not_change_when_the_map_is_scaled():
    rng = np.random.default_rng(0)
    saliency, mask = rng.random((40, 50)), disc((40, 50), (20, 20), 6)
    assert localisation_scores(saliency, mask) == localisation_scores(7.5 * saliency, mask)


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(1)
    saliency = np.round(rng.random((30, 30)), 1)  # 11 distinct values: many ties
    mask = disc((30, 30), (12, 14), 7) ^ (rng.random((30, 30)) < 0.1)
    assert pixel_auroc(saliency, mask) == pytest.approx(roc_auc_score(mask.ravel(), saliency.ravel()))


def test_energy_is_the_positive_share_inside():
    mask = np.zeros((2, 4), bool)
    mask[:, :2] = True
    saliency = np.array([[2.0, 1.0, 1.0, -5.0], [1.0, 0.0, 0.0, -5.0]])  # negatives do not count
    assert energy_pointing_game(saliency, mask) == pytest.approx(4 / 5)


# --- tolerance in millimetres ----------------------------------------------------------------

def test_the_same_pixel_offset_hits_at_a_fine_spacing_and_misses_at_a_coarse_one():
    mask = np.zeros((64, 64), bool)
    mask[20, 20] = True
    saliency = point_map((64, 64), (20, 30))  # 10 pixels to the right
    assert pointing_game(saliency, mask, spacing=(0.5, 0.5)) == 1.0   # 5 mm <= 7 mm
    assert pointing_game(saliency, mask, spacing=(1.0, 1.0)) == 0.0   # 10 mm > 7 mm
    assert pointing_game(saliency, mask, spacing=(1.0, 1.0), tolerance_mm=10.0) == 1.0  # at the edge


def test_anisotropic_pixels_grow_the_mask_by_a_disc_in_mm():
    mask = np.zeros((64, 64), bool)
    mask[30, 30] = True
    spacing = (0.5, 2.0)  # tall rows of 0.5 mm, wide columns of 2 mm
    assert pointing_game(point_map((64, 64), (40, 30)), mask, spacing=spacing) == 1.0  # 10 rows: 5 mm
    assert pointing_game(point_map((64, 64), (30, 34)), mask, spacing=spacing) == 0.0  # 4 cols: 8 mm
    assert pointing_game(point_map((64, 64), (38, 31)), mask, spacing=spacing) == 1.0  # hypot(4, 2) = 4.5 mm
    assert pointing_game(point_map((64, 64), (42, 32)), mask, spacing=spacing) == 0.0  # hypot(6, 4) = 7.2 mm
    assert pointing_tolerance((64, 64), spacing=spacing).pixels == (14.0, 3.5)


def test_without_spacing_the_tolerance_is_two_percent_of_the_diagonal():
    tolerance = pointing_tolerance((300, 400))  # diagonal 500 px
    assert (tolerance.radius, tolerance.unit) == (10.0, "pixels")
    assert "10.0 pixels" in tolerance.describe() and "spacing is unknown" in tolerance.describe()
    mask = np.zeros((300, 400), bool)
    mask[100, 100] = True
    assert pointing_game(point_map((300, 400), (110, 100)), mask) == 1.0
    assert pointing_game(point_map((300, 400), (111, 100)), mask) == 0.0
    assert "7 mm" in pointing_tolerance((300, 400), spacing=(0.49, 0.49)).describe()


# --- ties and flat maps -------------------------------------------------------------------------

def test_a_tied_maximum_counts_the_share_of_peaks_that_hit():
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    saliency = np.zeros((64, 64))
    saliency[15, 15] = saliency[50, 50] = 1.0  # one peak on the lesion, one far away
    assert pointing_game(saliency, mask, spacing=(1.0, 1.0)) == 0.5
    saliency[45, 45] = 1.0
    assert pointing_game(saliency, mask, spacing=(1.0, 1.0)) == pytest.approx(1 / 3)


def test_rank_accuracy_shares_out_ties_and_does_not_depend_on_pixel_order():
    saliency = np.array([[3.0, 1.0, 1.0, 1.0]])
    mask = np.array([[True, True, False, False]])
    # top 2: the 3 for sure, then one of three tied 1s, of which one is inside: 1 + 1/3 of 2
    assert relevance_rank_accuracy(saliency, mask) == pytest.approx(2 / 3)
    assert relevance_rank_accuracy(saliency[:, ::-1], mask[:, ::-1]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("value", [0.0, 0.3])
def test_a_flat_map_is_a_miss_and_scores_chance_elsewhere(value):
    mask = np.zeros((20, 20), bool)
    mask[:5] = True  # a quarter of the image
    flat = np.full((20, 20), value)
    scores = localisation_scores(flat, mask, spacing=(1.0, 1.0))
    assert scores["pointing_game"] == 0.0  # no peak
    assert scores["energy"] == (0.0 if value == 0 else pytest.approx(0.25))  # nothing positive: 0
    assert scores["rank_accuracy"] == pytest.approx(0.25)
    assert scores["auroc"] == 0.5


def test_empty_and_full_masks_and_bad_maps():
    saliency = np.random.default_rng(0).random((8, 8))
    assert all(np.isnan(v) for v in localisation_scores(saliency, np.zeros((8, 8), bool)).values())
    full = localisation_scores(saliency, np.ones((8, 8), bool))
    assert np.isnan(full["auroc"]) and full["pointing_game"] == full["energy"] == full["rank_accuracy"] == 1.0
    with pytest.raises(ValueError, match="same shape"):
        pointing_game(saliency, np.ones((8, 9), bool))
    with pytest.raises(ValueError, match="non-finite"):
        energy_pointing_game(np.full((8, 8), np.nan), np.ones((8, 8), bool))


# --- baselines ---------------------------------------------------------------------------------

def test_baselines_are_maps_in_the_unit_range():
    image = np.random.default_rng(0).random((40, 60)) * 1000
    for prior in (centre_prior((40, 60)), intensity_prior(image), random_smooth_map((40, 60), seed=3)):
        assert prior.shape == (40, 60) and prior.min() >= 0 and prior.max() == pytest.approx(1.0)


def test_centre_prior_is_round_in_mm_and_peaks_at_the_centre():
    prior = centre_prior((41, 21), spacing=(0.5, 1.0))
    assert np.unravel_index(prior.argmax(), prior.shape) == (20, 10)
    assert prior[20 + 8, 10] == pytest.approx(prior[20, 10 + 4])  # 4 mm down and 4 mm across
    mask = np.zeros((41, 21), bool)
    mask[18:23, 8:13] = True
    assert pointing_game(prior, mask, spacing=(0.5, 1.0)) == 1.0


def test_intensity_prior_follows_the_bright_region_and_averages_colour():
    image = np.zeros((50, 50, 3))
    image[30:40, 5:15] = 200.0
    prior = intensity_prior(image)
    mask = np.zeros((50, 50), bool)
    mask[30:40, 5:15] = True
    assert localisation_scores(prior, mask)["pointing_game"] == 1.0
    assert not intensity_prior(np.full((10, 10), 5.0)).any()  # a uniform image has no brighter part


def test_random_smooth_map_is_fixed_by_its_seed():
    one, again, other = (random_smooth_map((64, 64), seed=s) for s in (7, 7, 8))
    assert np.array_equal(one, again) and not np.array_equal(one, other)


# --- bootstrap ---------------------------------------------------------------------------------

def test_paired_bootstrap_covers_a_known_difference_and_excludes_zero():
    rng = np.random.default_rng(0)
    baseline = rng.random(60)
    method = baseline + 0.2 + rng.normal(0, 0.05, 60)
    difference, low, high = paired_bootstrap(method, baseline)
    assert low < 0.2 < high and low > 0
    assert difference == pytest.approx(np.mean(method - baseline))
    assert paired_bootstrap(method, baseline) == (difference, low, high)  # fixed seed


def test_paired_bootstrap_includes_zero_when_there_is_no_difference():
    rng = np.random.default_rng(1)
    baseline = rng.random(60)
    noise = rng.normal(0, 0.1, 30)
    method = baseline + np.concatenate([noise, -noise])  # differences with mean exactly 0
    difference, low, high = paired_bootstrap(method, baseline)
    assert difference == pytest.approx(0.0, abs=1e-12) and low < 0 < high


def test_bootstrap_leaves_out_undefined_scores_and_needs_two_values():
    assert bootstrap_mean([0.5, np.nan, 0.5]) == (0.5, 0.5, 0.5)
    mean, low, high = bootstrap_mean([0.7])
    assert mean == 0.7 and np.isnan(low) and np.isnan(high)
    with pytest.raises(ValueError, match="same images"):
        paired_bootstrap([1.0, 2.0], [1.0])


# --- report ------------------------------------------------------------------------------------

def synthetic_rows():
    """gradcam at two layers and a centre baseline on 12 images of two classes; only the
    last layer points at the lesion, and only in glioma."""
    rows = []
    for i in range(12):
        cls = "glioma" if i < 6 else "pituitary"
        for method, layer in (("gradcam", "last_conv"), ("gradcam", "block2"), ("baseline:centre", None)):
            hit = float(method == "gradcam" and layer == "last_conv" and cls == "glioma")
            rows.append({"image": f"{cls}/{i}.jpg", "class": cls, "method": method, "layer": layer,
                         "pointing_game": hit, "energy": 0.2 + 0.5 * hit + 0.01 * i,
                         "rank_accuracy": 0.3, "auroc": float("nan") if i == 0 else 0.5 + 0.4 * hit})
    return rows


def test_summarise_reports_per_method_layer_and_class_against_baselines():
    report = summarise(synthetic_rows(), n_resamples=500)
    json.dumps(report, allow_nan=False)  # JSON-able, no NaN
    keys = [(g["method"], g["layer"], g["class"]) for g in report["groups"]]
    assert keys == [("gradcam", "last_conv", "all"), ("gradcam", "last_conv", "glioma"),
                    ("gradcam", "last_conv", "pituitary"), ("gradcam", "block2", "all"),
                    ("gradcam", "block2", "glioma"), ("gradcam", "block2", "pituitary"),
                    ("baseline:centre", None, "all"), ("baseline:centre", None, "glioma"),
                    ("baseline:centre", None, "pituitary")]
    assert report["n_images"] == 12
    group = {k: g for k, g in zip(keys, report["groups"])}
    glioma = group[("gradcam", "last_conv", "glioma")]
    assert glioma["n"] == 6 and glioma["metrics"]["pointing_game"]["mean"] == 1.0
    assert glioma["metrics"]["auroc"]["n"] == 5  # image 0 has no AUROC
    versus = glioma["versus"]["baseline:centre"]
    assert versus["pointing_game"]["beats"] and versus["pointing_game"]["difference"] == 1.0
    assert not versus["rank_accuracy"]["beats"] and not versus["rank_accuracy"]["worse"]
    pituitary = group[("gradcam", "last_conv", "pituitary")]["versus"]["baseline:centre"]
    assert not pituitary["pointing_game"]["beats"]
    assert group[("baseline:centre", None, "all")]["versus"] == {}
    with pytest.raises(ValueError, match="scored twice"):
        summarise(synthetic_rows() + synthetic_rows()[:1])


def test_renderers_show_every_group_interval_and_verdict():
    report = summarise(synthetic_rows(), n_resamples=500)
    report["notes"] = ["Scored 12 images; 0 skipped."]
    table, markdown = format_table(report), format_markdown(report)
    for text in (table, markdown):
        assert text.startswith("Scored 12 images")
        assert "pixel AUROC" in text and "baseline:centre" in text and "beats" in text
        assert "+1.00 [+1.00, +1.00] beats" in text
    assert markdown.count("| gradcam | last_conv |") == 3 + 3  # three classes in each table
    lines = table.splitlines()
    assert sum(line.startswith("gradcam ") for line in lines) == 6 + 6  # means, then differences
    assert sum(line.startswith("baseline:centre ") for line in lines) == 3
    assert "peak to outline" not in table  # rows without a peak distance: no column


def test_the_peak_distance_is_a_median_column_of_the_means_table_only():
    """Rows carrying ``peak_distance`` give each group its median with an interval, printed as one more column of
    the means table in the rows' unit, and not compared with the baselines (a distance is not a higher-is-better
    score)."""
    rows = [row | {"peak_distance": float(10 * (i % 3)), "peak_distance_unit": "mm"}
            for i, row in enumerate(synthetic_rows())]
    report = summarise(rows, n_resamples=200)
    json.dumps(report, allow_nan=False)
    for group in report["groups"]:
        expected = np.median([r["peak_distance"] for r in rows if r["method"] == group["method"]
                              and (r.get("layer") == group["layer"] or group["baseline"])
                              and group["class"] in ("all", r["class"])])
        assert group["peak_distance"]["median"] == pytest.approx(expected) and group["peak_distance"]["unit"] == "mm"
        assert all("peak_distance" not in versus for versus in group["versus"].values())
    table = format_table(report)
    header = next(line for line in table.splitlines() if line.startswith("method"))
    assert header.rstrip().endswith("peak to outline, median (mm)")
    assert table.count("peak to outline") == 1  # the differences table has no such column


# --- real brain slices ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def brain_masks(data_dir) -> Path:
    folder = data_dir / "brain_mri_masks"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not available")
    return folder


def test_baselines_on_real_brain_slices_score_between_the_known_extremes(brain_masks):
    names = ["209", "718"]  # two glioma slices, index.csv subset "unseen"
    for name in names:
        image = np.asarray(Image.open(brain_masks / "images" / "glioma" / f"{name}.jpg"), float)
        mask = np.asarray(Image.open(brain_masks / "masks" / "glioma" / f"{name}.png"), bool)
        for prior in (centre_prior(image.shape, spacing=(0.49, 0.49)), intensity_prior(image),
                      random_smooth_map(image.shape, seed=int(name))):
            scores = localisation_scores(prior, mask, spacing=(0.49, 0.49))
            assert scores["pointing_game"] in (0.0, 1.0)
            assert 0.0 < scores["energy"] < 1.0 and 0.0 < scores["auroc"] < 1.0
        assert localisation_scores(mask.astype(float), mask, spacing=(0.49, 0.49)) == {m: 1.0 for m in METRICS}


# --- ablation: the outline filled in, a region of the same shape elsewhere as the control ------------------------

def test_filling_a_real_glioma_outline_removes_the_tumour_and_leaves_the_rest(brain_masks):
    """Slice 209 (unseen): the tumour's edges inside the outline go (the mean gradient there falls to a small
    fraction), the fill meets the tissue around it, and every pixel beyond the grown outline is the same."""
    image = np.asarray(Image.open(brain_masks / "images" / "glioma" / "209.jpg").convert("L"), float)
    mask = np.asarray(Image.open(brain_masks / "masks" / "glioma" / "209.png"), bool)
    filled = fill_region(image, mask)
    grown = ndimage.binary_dilation(mask, iterations=5)  # 1% of 512 px
    assert np.array_equal(filled[~grown], image[~grown].astype(np.float32))
    def edges(picture):
        return np.hypot(ndimage.sobel(picture, 0), ndimage.sobel(picture, 1))[mask].mean()

    assert edges(filled) < 0.2 * edges(image)
    ring = ndimage.binary_dilation(grown, iterations=6) & ~grown
    edge = ndimage.binary_dilation(grown, iterations=1) & ~ndimage.binary_erosion(grown, iterations=1)
    assert abs(filled[edge & grown].mean() - image[ring].mean()) < 0.25 * image[ring].std() + 5
    colour = fill_region(np.stack([image] * 3, axis=-1), mask)
    np.testing.assert_allclose(colour[..., 1], filled, atol=1e-3)
    with pytest.raises(ValueError, match="region"):
        fill_region(image, mask[:100])
    assert np.array_equal(fill_region(image, np.zeros_like(mask)), image)


def test_the_control_region_mirrors_a_lateral_tumour_and_moves_a_midline_one(brain_masks):
    """A glioma off the midline gets its mirror image in the other hemisphere; a glioma reaching across the midline
    and a pituitary tumour on it (their mirror images overlap them) get the nearest clear place of the same shape inside the head; an outline with no
    room beside it gets none."""
    for cls, name, mirrored in (("glioma", "2127", True), ("glioma", "209", False), ("pituitary", "1598", False)):
        image = np.asarray(Image.open(brain_masks / "images" / cls / f"{name}.jpg").convert("L"), float)
        mask = np.asarray(Image.open(brain_masks / "masks" / cls / f"{name}.png"), bool)
        body = foreground(image)
        assert 0.2 < body.mean() < 0.9 and body[mask].mean() > 0.9  # the head, with its tumour
        control = control_region(mask, body)
        assert control is not None and control.sum() == mask.sum()
        assert not (control & ndimage.binary_dilation(mask, iterations=5)).any()
        assert (control & body).sum() >= 0.9 * control.sum()
        assert np.array_equal(control, mask[:, ::-1]) is mirrored
    assert control_region(np.ones((20, 20), bool), np.ones((20, 20), bool)) is None
    assert control_region(np.zeros((20, 20), bool), np.ones((20, 20), bool)) is None


def test_summarise_ablation_compares_the_outline_with_the_control_per_class():
    rows = [{"image": f"{i}", "class": "glioma" if i < 6 else "pituitary", "p_intact": 0.9,
             "p_outline": (0.93 if i % 2 else 0.87) if i < 6 else 0.3, "p_control": 0.9 if i % 4 else None,
             "right_intact": True, "right_outline": i < 6, "right_control": True if i % 4 else None}
            for i in range(12)]
    groups = {g["class"]: g for g in summarise_ablation(rows, n_resamples=300)["groups"]}
    assert list(groups) == ["all", "glioma", "pituitary"] and groups["all"]["n"] == 12
    assert groups["pituitary"]["accuracy"] == {"intact": 1.0, "outline": 0.0, "control": 1.0}
    assert groups["pituitary"]["needs_outline"]["beats"] and groups["pituitary"]["n_control"] == 5
    assert not groups["glioma"]["needs_outline"]["beats"] and groups["glioma"]["n_control"] == 4
    assert groups["glioma"]["probability"]["outline"]["mean"] == pytest.approx(0.9)
    # In log-odds a fall from 0.9 to 0.3 is log(9) + log(7/3); the glioma rows' small rises and falls do not beat the control.
    assert groups["pituitary"]["needs_outline_log_odds"]["difference"] == pytest.approx(np.log(9) + np.log(7 / 3))
    assert groups["pituitary"]["needs_outline_log_odds"]["beats"]
    assert not groups["glioma"]["needs_outline_log_odds"]["beats"]
    report = summarise(synthetic_rows(), n_resamples=200) | {"ablation": summarise_ablation(rows, n_resamples=300)}
    markdown, table = format_markdown(report), format_table(report)
    assert "| pituitary | 6 | 1.00 | 0.00 | 1.00 |" in markdown and "needs it" in markdown
    assert "Does the prediction need the outlined region?" in table and "log-odds of the true class" in table
