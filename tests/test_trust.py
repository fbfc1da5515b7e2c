"""Faithfulness, sanity check and uncertainty on models whose right answer is known."""

import numpy as np
import pytest

from pathlib import Path

from core.model import LoadedModel, build_model
from core.preprocess import Pipeline
from core.trust import faithfulness, sanity_check, similarity
from core.trust import test_time_augmentation as augmented_predictions

SIDE = 64
PIXEL = (21, 43)


def as_loaded(model) -> LoadedModel:
    """A Keras model wrapped as the dashboard holds it (no folder on disk needed for these checks)."""
    return LoadedModel(model=model, info={"class_names": ["a", "b"], "preprocessing": Pipeline(SIDE).to_dict()},
                       path=Path("."))


@pytest.fixture(scope="module")
def one_pixel_model():
    """A Functional model whose class-0 score depends on a single input pixel only.

    Without evidence at that pixel the bias makes class 0 unlikely, so removing the pixel
    takes its probability from about 1 to about 0.
    """
    import keras

    inputs = keras.Input((SIDE, SIDE, 1), name="image")
    flat = keras.layers.Flatten(name="flat")(inputs)
    outputs = keras.layers.Dense(2, activation="softmax", name="predictions")(flat)
    model = keras.Model(inputs, outputs)
    kernel = np.zeros((SIDE * SIDE, 2), np.float32)
    index = PIXEL[0] * SIDE + PIXEL[1]
    kernel[index] = [8.0, -8.0]
    model.get_layer("predictions").set_weights([kernel, np.array([-3.0, 3.0], np.float32)])
    return as_loaded(model)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.2, 0.2, (SIDE, SIDE)).astype(np.float32)
    x[PIXEL] = 2.0  # the evidence: the blurred baseline is near 0 there
    return x[None, ..., None]


def test_map_on_the_one_pixel_beats_random_by_a_wide_margin(one_pixel_model, image):
    saliency = np.zeros((SIDE, SIDE), np.float32)
    saliency[PIXEL] = 1.0
    result = faithfulness(one_pixel_model, image, saliency, 0)
    assert result.informative
    assert result.deletion_auc < 0.1  # the probability falls at the first step
    assert result.deletion_ratio > 5
    assert result.insertion_ratio > 1.3
    assert result.average_drop < 1.0  # keeping the top 15% keeps the pixel


def test_constant_map_does_not_beat_random(one_pixel_model, image):
    # A constant map's order is its random tie-break: over several seeds it matches chance.
    runs = [faithfulness(one_pixel_model, image, np.ones((SIDE, SIDE), np.float32), 0, seed=s) for s in range(8)]
    deletion = np.mean([r.random_deletion_auc for r in runs]) / np.mean([r.deletion_auc for r in runs])
    insertion = np.mean([r.insertion_auc for r in runs]) / np.mean([r.random_insertion_auc for r in runs])
    assert 0.6 < deletion < 1.6
    assert 0.6 < insertion < 1.6


def test_a_map_pointing_elsewhere_is_worse_than_random(one_pixel_model, image):
    saliency = np.ones((SIDE, SIDE), np.float32)
    saliency[PIXEL] = 0.0  # the one pixel that matters comes last
    result = faithfulness(one_pixel_model, image, saliency, 0)
    assert result.deletion_ratio < 0.7


def test_uninformative_when_the_baseline_already_scores_the_class(one_pixel_model):
    flat = np.zeros((1, SIDE, SIDE, 1), np.float32)  # no evidence: both classes at 0.5
    result = faithfulness(one_pixel_model, flat, np.ones((SIDE, SIDE), np.float32), 0)
    assert not result.informative


def test_similarity_of_identical_and_unrelated_maps():
    rng = np.random.default_rng(1)
    a = rng.random((16, 16)).astype(np.float32)
    assert similarity(a, a)[0] == pytest.approx(1.0)
    assert abs(similarity(a, rng.random((16, 16)).astype(np.float32))[0]) < 0.3


def test_sanity_check_works_on_a_copy_and_leaves_the_model_alone(image):
    model = build_model(SIDE, 2, width=8)
    before = [w.copy() for w in model.get_weights()]
    check = sanity_check(as_loaded(model), image, "gradcam++", 0, "last_conv")
    weighted = [layer.name for layer in model.layers if type(layer).__name__ in ("Conv2D", "Dense")]
    assert check.layers == weighted[::-1]  # output side first, one more layer each step
    assert len(check.maps) == len(check.spearman) == len(check.ssim) == len(weighted)
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_test_time_augmentation_interval(image):
    model = build_model(SIDE, 2, width=8)  # Grad-CAM's hot spot needs a convolution
    result = augmented_predictions(as_loaded(model), image, 0, threshold=0.5, n=8, layer="last_conv")
    assert result.low <= result.mean <= result.high
    assert len(result.probabilities) == 8


def test_test_time_augmentation_reads_the_calibrated_probability_the_page_shows():
    """The fracture default's prior correction moves its probabilities far from the network's own (0.31 shown,
    0.69 before it, on this film): the interval must be on the scale of the probability shown and the threshold,
    its first copy (no shift, no contrast change) the image itself."""
    from core.io import load_scan
    from core.model import load_model

    assets = Path(__file__).resolve().parents[1] / "assets"
    loaded = load_model(assets / "models" / "fracture")
    film = assets / "samples" / "fracture" / "fractured_IMG0003733.jpg"
    tensor = loaded.pipeline.scan_tensor(load_scan(film.read_bytes(), film.name))
    fractured = loaded.class_names.index("fractured")
    shown = float(loaded.predict(tensor)[0, fractured])
    assert abs(shown - float(loaded.uncalibrated(tensor)[0, fractured])) > 0.1  # the correction matters here
    result = augmented_predictions(loaded, tensor, fractured, threshold=loaded.threshold, n=6, layer=None)
    assert result.probabilities[0] == pytest.approx(shown, abs=1e-5)


def test_calibrated_run_deletes_towards_its_mean_training_image_scored_near_the_prior(tiny_run, chest_dir, tmp_path):
    """``calibrate_run`` writes ``reference.npy``; the Explain page, the report and the SR then delete towards it
    (``core.trust.deletion_baseline``), and the model scores it near its prior: the class-balanced training
    (``class_weights``) makes that prior the weighted class frequencies."""
    import json
    import shutil

    from core.dicom_export import trust_scores
    from core.model import load_model
    from core.saliency import explain
    from core.train import REFERENCE_FILE, calibrate_run
    from core.trust import deletion_baseline, model_faithfulness, reference_baseline

    folder = tmp_path / "run"
    shutil.copytree(tiny_run[0], folder)  # the session's tiny run stays uncalibrated for the other tests
    before = load_model(folder)
    tensor = before.pipeline.scan_tensor(_chest_scan(chest_dir), None)
    assert reference_baseline(before) is None and deletion_baseline(before, tensor)[1] == "blurred"

    info = calibrate_run(folder, chest_dir, log=lambda _: None)
    assert (folder / REFERENCE_FILE).is_file() and info["reference"]["file"] == REFERENCE_FILE
    loaded = load_model(folder)
    reference, kind = deletion_baseline(loaded, tensor)
    assert kind == "reference" and reference.shape == tensor.shape[1:3]
    np.testing.assert_array_equal(reference, np.load(folder / REFERENCE_FILE))

    params = json.loads((folder / "params.json").read_text())
    names = loaded.class_names
    weighted = np.array([params["counts"][n] * params["class_weights"][str(i)] for i, n in enumerate(names)])
    prior = weighted / weighted.sum()
    recorded = np.array(info["reference"]["probabilities"])
    on_reference = loaded.uncalibrated(np.repeat(reference[None, ..., None], tensor.shape[-1], axis=-1))[0]
    np.testing.assert_allclose(on_reference, recorded, atol=1e-5)  # what calibrate_run recorded
    assert np.abs(on_reference - prior).max() < 0.25, (on_reference, prior)

    result = explain(loaded, tensor, tensor.shape[1:3], method="gradcam", class_index=0)
    faith = model_faithfulness(loaded, tensor, result.raw, 0)
    assert faith.baseline == "reference" and faith.baseline_probability == pytest.approx(on_reference[0], abs=1e-4)
    assert trust_scores(loaded, tensor, result, faithfulness_result=None, uncertainty=False)["deletion_auc"] == \
        pytest.approx(faith.deletion_auc)  # the SR scores with the same baseline


def _chest_scan(chest_dir):
    from core.io import load_scan

    path = sorted((chest_dir / "PNEUMONIA").iterdir())[0]
    return load_scan(path.read_bytes(), name=path.name)
