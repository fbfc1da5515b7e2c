"""core.train: one epoch of a tiny model on 20 real chest images per class writes a complete run folder."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from conftest import TINY
from core.data import list_dataset
from core.model import MODEL_FILE, sha256_file

pytestmark = pytest.mark.slow


def read_json(path):
    return json.loads(path.read_text())


def test_run_folder_holds_every_file(tiny_run):
    folder, _, _ = tiny_run
    names = {p.name for p in folder.iterdir()}
    assert {"history.csv", "params.json", "metrics.json", "model.keras", "model.json", "split.json"} <= names
    assert "best.weights.h5" not in names  # the checkpoint is folded into model.keras


def test_history_has_one_row_per_epoch(tiny_run):
    folder, _, _ = tiny_run
    with open(folder / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == TINY["epochs"]
    assert {"epoch", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(rows[0])
    assert all(float(rows[0][k]) >= 0 for k in ("loss", "val_loss"))


def test_params_record_the_run(tiny_run, chest_dir):
    folder, _, _ = tiny_run
    params = read_json(folder / "params.json")
    for key, value in TINY.items():
        assert params[key] == value
    assert params["task"] == "chest_xray" and params["monitor"] == "val_auc"
    assert params["counts"] == {"NORMAL": 20, "PNEUMONIA": 20}
    assert params["n_train"] + params["n_validation"] == 40 - params["removed_duplicates"]
    assert params["pipeline"] == {"input_size": 32, "contrast": None, "mean": 0.5, "std": 0.25, "channels": 1}
    assert set(params["class_weights"]) == {"0", "1"} and params["model_parameters"] > 0


def test_metrics_are_returned_and_written(tiny_run):
    folder, metrics, log = tiny_run
    assert read_json(folder / "metrics.json") == json.loads(json.dumps(metrics))
    assert metrics["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert metrics["n"] == read_json(folder / "params.json")["n_validation"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert any(line.startswith("epoch 1/1") for line in log) and log[-1].startswith("done in")


def test_model_card_describes_model_and_data(tiny_run, chest_dir):
    folder, metrics, _ = tiny_run
    info = read_json(folder / "model.json")
    assert info["class_names"] == ["NORMAL", "PNEUMONIA"] and info["input_size"] == 32
    assert info["preprocessing"] == read_json(folder / "params.json")["pipeline"]
    assert info["sha256"] == sha256_file(folder / MODEL_FILE)
    dataset = list_dataset(chest_dir, class_names=["NORMAL", "PNEUMONIA"], limit_per_class=20)
    assert info["dataset"]["fingerprint"] == dataset.fingerprint()
    assert info["validation"]["n"] == metrics["n"] and info["validation"]["auc"] == metrics["auc"]
    assert info["validation"]["ece"] == metrics["calibration"]["ece"]


def test_validation_patients_never_trained_on(tiny_run, chest_dir):
    folder, _, _ = tiny_run
    validation = set(read_json(folder / "split.json")["validation"])
    dataset = list_dataset(chest_dir, class_names=["NORMAL", "PNEUMONIA"], limit_per_class=20)
    names = dataset.class_names
    val_items = [i for i in dataset.items if f"{names[i.label]}/{i.path.name}" in validation]
    train_items = [i for i in dataset.items if f"{names[i.label]}/{i.path.name}" not in validation]
    assert len(val_items) == len(validation) > 0
    assert {i.label for i in val_items} == {0, 1}
    assert {i.group for i in val_items}.isdisjoint({i.group for i in train_items})


def test_batch_norm_recalibration_matches_the_statistics_of_the_images(chest_dir):
    """After recalibration, the first batch norm's moving mean and variance are those of its input
    over the given clean images (exactly: it has no batch norm before it), later layers' are
    finite, the momentum is put back, and the predictions change from the stale statistics'."""
    import keras
    import numpy as np

    from core.data import prepare_arrays
    from core.model import build_model
    from core.preprocess import Pipeline
    from core.train import recalibrate_batch_norm

    dataset = list_dataset(chest_dir, limit_per_class=16)
    x, _ = prepare_arrays(dataset.items, Pipeline(input_size=32))
    model = build_model(32, 2, width=8)
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in bns:  # stale statistics, far from the data
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 3.0, "float32"))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 9.0, "float32"))
    before = model.predict(x, verbose=0)

    assert recalibrate_batch_norm(model, x, batch_size=8) == len(bns)  # 4 equal batches

    stem = keras.Model(model.inputs, bns[0].input)(x).numpy().reshape(-1, bns[0].input.shape[-1])
    np.testing.assert_allclose(bns[0].moving_mean.numpy(), stem.mean(0), rtol=1e-4, atol=1e-6)
    order = np.random.default_rng(0).permutation(len(x))  # the batches are drawn in a seeded random order
    images = stem.reshape(len(x), -1, stem.shape[-1])
    per_batch_var = np.mean([images[np.sort(order[8 * k:8 * (k + 1)])].reshape(-1, stem.shape[-1]).var(0)
                             for k in range(4)], axis=0)
    np.testing.assert_allclose(bns[0].moving_variance.numpy(), per_batch_var, rtol=1e-3, atol=1e-6)
    assert all(np.isfinite(layer.moving_variance.numpy()).all() for layer in bns)
    assert all(not np.allclose(layer.moving_mean.numpy(), 3.0) for layer in bns)
    assert {layer.momentum for layer in bns} == {0.99}
    assert not np.allclose(model.predict(x, verbose=0), before)


def test_batch_norm_recalibration_keeps_the_spread_between_classes_stored_one_after_the_other():
    """Training arrays come class by class. Batches taken in that order would each hold one class, and the average
    of their variances would leave out the spread between the classes (a brain run lost 5 points of validation
    accuracy to it); the recalibration draws its batches in a random order, so the moving variance is near the
    variance over all the images."""
    import keras
    import numpy as np

    from core.train import recalibrate_batch_norm

    inputs = keras.Input((4, 4, 1))
    model = keras.Model(inputs, keras.layers.BatchNormalization()(inputs))
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(-1, 0.1, (64, 4, 4, 1)), rng.normal(1, 0.1, (64, 4, 4, 1))]).astype("float32")
    recalibrate_batch_norm(model, x, batch_size=64)  # stored order: two batches, one class each
    in_order = np.mean([x[:64].var(), x[64:].var()])
    assert in_order < 0.05 and float(model.layers[-1].moving_variance.numpy()[0]) == pytest.approx(x.var(), rel=0.1)


def test_batch_norm_recalibration_batches_shrink_with_the_input_side():
    """A 320 px backbone run was killed for memory at its first validation: 128-image recalibration batches
    of 320 x 320 took 17 GB more than training. Batches now hold at most 128 x 224 x 224 pixels."""
    import numpy as np

    from core.train import RECALIBRATION_PIXELS, recalibration_batch

    assert recalibration_batch(np.zeros((2, 128, 128, 1))) == 128  # the small defaults: as before
    assert recalibration_batch(np.zeros((2, 224, 224, 3))) == 128
    for side in (288, 320, 384, 448):
        batch = recalibration_batch(np.zeros((1, side, side, 1)))
        assert batch * side * side <= RECALIBRATION_PIXELS and batch >= 16
    assert recalibration_batch(np.zeros((1, 2048, 2048, 1))) == 16  # a floor: batch statistics stay stable


def test_batch_norm_recalibration_batches_shrink_with_the_models_layer_outputs():
    """An EfficientNet-Lite2 run was killed for memory at its first validation, at 224 px: the eager forward pass
    keeps every layer's output, 135 MB an image, so 128 images took past 24 GB. Given the model, a batch now holds
    at most RECALIBRATION_BYTES of layer outputs; the small CNN at 224 px keeps its 128."""
    import numpy as np

    from core.backbone import efficientnet_lite
    from core.model import build_model
    from core.train import RECALIBRATION_BYTES, activation_bytes, recalibration_batch

    images = np.zeros((1, 224, 224, 1))
    assert recalibration_batch(images, build_model(224, 2, pooling="avg+max")) == 128
    wide = efficientnet_lite(224, 2, variant="efficientnet-lite2", body_gate=True)
    batch = recalibration_batch(images, wide)
    assert 16 <= batch < 32 and batch * activation_bytes(wide) <= RECALIBRATION_BYTES


def test_recalibration_sample_size_is_recorded_in_params(tiny_run):
    folder, _, _ = tiny_run
    assert read_json(folder / "params.json")["recalibrate_bn"] == 1024


def test_binary_auc_in_the_history_is_the_auc_of_the_positive_class():
    """The checkpoint picks epochs by ``val_auc``: for two classes it must be the AUC of
    P(positive), the figure metrics.json reports, not Keras's AUC pooled over both columns."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from core.train import _auc_metric

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    p = np.clip(0.5 + 0.35 * (labels - 0.5) + rng.normal(0, 0.25, 200), 0.01, 0.99)
    probabilities = np.stack([1 - p, p], axis=1).astype("float32")
    one_hot = np.eye(2, dtype="float32")[labels]
    metric = _auc_metric(2)
    metric.update_state(one_hot, probabilities)
    assert float(metric.result()) == pytest.approx(roc_auc_score(labels, p), abs=2e-3)


def test_init_from_copies_the_convolutions_of_a_trained_model_and_leaves_a_different_head(tiny_run, tmp_path):
    """Transfer learning (``train --init-from``): every layer of the same name and shape starts from the trained
    model's weights; a head for three classes, not two, is left as built."""
    import keras

    from core.model import build_model
    from core.train import initialise_from

    folder, _, _ = tiny_run
    source = keras.models.load_model(folder / MODEL_FILE, compile=False)
    params = read_json(folder / "params.json")
    model = build_model(64, 3, width=params["width"], pooling="avg")  # another input size: convolutions still fit
    copied = initialise_from(model, folder)
    assert {"stem", "conv1a", "conv3b", "last_conv"} <= set(copied["layers"]) and "predictions" not in copied["layers"]
    assert copied["sha256"] == sha256_file(folder / MODEL_FILE)
    for name in copied["layers"]:
        for mine, theirs in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            assert np.array_equal(mine, theirs)
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        initialise_from(model, tmp_path)


def test_a_head_masked_brain_model_records_and_reloads_its_mask(head_masked_models):
    """``train --head-mask``: the pipeline that trained the model, head mask included, is the one that serves it."""
    from core.model import load_model

    folder = head_masked_models / "brain_mri"
    assert read_json(folder / "params.json")["pipeline"]["head"] == 0.12
    loaded = load_model(folder)
    assert loaded.pipeline.head == 0.12
    assert "head" in [name for name, _, _ in loaded.pipeline.steps(window=(0.5, 1.0), invert_image=False)]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "blacked out" in card and "--head-mask 0.12" in card


def test_head_mask_and_rim_only_are_refused_together(data_dir, tmp_path):
    from core.train import TrainConfig, train

    config = TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(tmp_path),
                         head_mask=0.12, rim_only=0.12, **TINY)
    with pytest.raises(ValueError, match="opposites"):
        train(config, log=lambda line: None)


@pytest.mark.parametrize("shape, message", [
    ({"local": True, "backbone": "efficientnet-lite0"}, "--local and --fine-grid shape the small CNN"),
    ({"fine": True, "backbone": "efficientnet-lite0"}, "--local and --fine-grid shape the small CNN"),
    ({"local": True, "fine": True}, "give one of them"),
])
def test_local_evidence_and_the_fine_grid_are_refused_on_a_pretrained_backbone_and_together(data_dir, tmp_path,
                                                                                            shape, message):
    """``--local`` and ``--fine-grid`` shape the small CNN's last convolutions; a backbone keeps its own, and the
    two give a cell different squares (33 and 53 px, which the card states), so either pair is refused before
    anything is read or written."""
    from core.train import TrainConfig, train

    config = TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(tmp_path / "run"),
                         **shape, **TINY)
    with pytest.raises(ValueError, match=message):
        train(config, log=lambda line: None)
    assert not (tmp_path / "run").exists()

@pytest.mark.parametrize("options, message", [
    ({"no_finding": "notumor", "pooling": "classmap"}, "--no-finding builds the small CNN's evidence head"),
    ({"no_finding": "healthy"}, "--no-finding must name one of the classes"),
    ({"filled_interiors": "healthy"}, "--filled-interiors must name one of the classes"),
    ({"filled_interiors": "notumor", "filled_share": 0.0}, "--filled-share must be above 0"),
])
def test_the_evidence_head_and_filled_interiors_are_refused_where_they_cannot_apply(data_dir, tmp_path, options, message):
    """``--no-finding`` needs the small CNN with average (and maximum) pooling and one of the dataset's classes,
    ``--filled-interiors`` one of the classes and a share in (0, 1];
    anything else is one sentence, before a model is built or the run folder written."""
    from core.train import TrainConfig, train

    config = TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(tmp_path / "run"),
                         **{**TINY, **options})
    with pytest.raises(ValueError, match=message):
        train(config, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def test_filled_interiors_keep_the_rim_and_empty_the_inside_of_real_brain_slices(data_dir):
    """``--filled-interiors``: the copies keep the outline, scalp and skull and lose what lies inside the head."""
    from core.data import prepare_arrays
    from core.preprocess import Pipeline, head_region
    from core.localisation import INTERIOR_ERODE
    from core.train import filled_interiors

    dataset = list_dataset(data_dir / "brain_mri" / "Training", limit_per_class=2)
    pipeline = Pipeline(input_size=128)
    x, _ = prepare_arrays(dataset.items, pipeline)
    filled = filled_interiors(x, mean=pipeline.mean, std=pipeline.std)
    assert filled.shape == x.shape and filled.dtype == x.dtype
    for image, copy in zip(x[..., 0], filled[..., 0]):
        inside = head_region(image * pipeline.std + pipeline.mean, erode=INTERIOR_ERODE)
        assert 0.1 < inside.mean() < 0.9  # a head was found
        rim = ~ndimage.binary_dilation(inside, iterations=3)  # fill_region grows the region by 1% of the side
        assert np.array_equal(copy[rim], image[rim])
        assert copy[inside].std() < 0.5 * image[inside].std()  # the anatomy inside is gone, smoothed over


def test_a_run_with_filled_interiors_records_them(data_dir, tmp_path):
    from core.train import TrainConfig, train

    folder = tmp_path / "run"
    lines = []
    train(TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(folder),
                      filled_interiors="notumor", filled_share=0.5, **TINY), log=lines.append)
    params = read_json(folder / "params.json")
    assert params["filled"]["class"] == "notumor" and params["filled"]["n"] == round(0.5 * params["n_train"])
    assert sum(params["filled"]["per_class"].values()) == params["filled"]["n"]
    assert any("with the inside of the head or body part filled in, labelled notumor" in line for line in lines)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--filled-interiors notumor --filled-share 0.5" in card and "Filled interiors" in card


@pytest.mark.parametrize("task, options, message", [
    ("chest_xray", {"equivariance": 1.0}, "--equivariance mirrors images left to right, which chest_xray does not"),
    ("brain_mri", {"equivariance": -1.0}, "--equivariance is a weight"),
    ("brain_mri", {"equivariance_shift": 2}, "give --equivariance W too"),
    ("brain_mri", {"equivariance": 1.0, "equivariance_shift": -1}, "--equivariance-shift is a number of cells"),
    ("brain_mri", {"equivariance": 1.0, "backbone": "efficientnet-lite0", "freeze_backbone": True},
     "--equivariance trains the whole network"),
    ("chest_xray", {"half_mirrors": "PNEUMONIA", "healthy": "NORMAL"},
     "--half-mirrors mirrors half of each image onto the other, which chest_xray does not"),
    ("brain_mri", {"half_mirrors": "glioma"}, "--half-mirrors needs the class without a lesion"),
    ("brain_mri", {"half_mirrors": "glioma", "healthy": "notumor", "equivariance": 1.0}, "leave out"),
    ("brain_mri", {"half_mirrors": "astrocytoma", "healthy": "notumor"}, "--half-mirrors must name one of the classes"),
    ("brain_mri", {"half_mirrors": "glioma", "healthy": "notumor", "half_mirror_weight": 0.0}, "above 0"),
])
def test_mirroring_options_are_refused_where_a_mirror_image_is_not_the_same_anatomy(data_dir, chest_dir, tmp_path,
                                                                                   task, options, message):
    """A chest film mirrored has its heart on the wrong side (the task forbids flips), so ``--equivariance`` and
    ``--half-mirrors`` are refused there, as are a negative or zero weight, a frozen backbone, the two together,
    a class the data lacks and half mirrors without a healthy class: one sentence, nothing written."""
    from core.train import TrainConfig, train

    source = chest_dir if task == "chest_xray" else data_dir / "brain_mri" / "Training"
    config = TrainConfig(task=task, data=str(source), out=str(tmp_path / "run"), **{**TINY, **options})
    with pytest.raises(ValueError, match=message):
        train(config, log=lambda line: None)
    assert not (tmp_path / "run").exists()


def _equivariance_run(data_dir, folder, **options):
    """A tiny brain model trained with ``options`` into ``folder``: its last convolution as a model of its own,
    five prepared training slices per class to probe it with, the run's log lines and the kept model."""
    import keras

    from core.data import prepare_arrays
    from core.model import LAST_CONV, load_model
    from core.train import TrainConfig, train

    lines = []
    train(TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(folder), **options),
          log=lines.append)
    loaded = load_model(folder)
    probe = list_dataset(data_dir / "brain_mri" / "Training", limit_per_class=5)
    x, _ = prepare_arrays(probe.items, loaded.pipeline)
    return keras.Model(loaded.model.input, loaded.model.get_layer(LAST_CONV).output), x, lines, loaded.model


def test_flip_equivariance_makes_the_maps_move_with_the_image(data_dir, tmp_path):
    """``--equivariance``: the last convolution's maps of a mirrored slice come closer to the mirror image of the
    slice's own maps than without it (the same seed, data and epochs), the kept model is the plain Functional
    network, and the run records the weight."""
    from core.train import flip_equivariance_loss

    distance = {}
    for weight in (0.0, 5.0):
        maps, x, lines, model = _equivariance_run(data_dir, tmp_path / f"w{weight:g}", equivariance=weight,
                                                  **{**TINY, "epochs": 3})
        assert model.output.shape[-1] == 4 and model.__class__.__name__ == "Functional"
        distance[weight] = float(flip_equivariance_loss(maps(x).numpy(), maps(x[:, :, ::-1]).numpy()))
        assert any(line.startswith("flip equivariance") for line in lines) == bool(weight)
    assert distance[5.0] < 0.75 * distance[0.0], distance
    assert read_json(tmp_path / "w5" / "params.json")["equivariance"] == 5.0
    card = (tmp_path / "w5" / "MODEL_CARD.md").read_text()
    assert "--equivariance 5" in card and "Flip equivariance" in card


def test_the_flip_equivariance_loss_is_zero_for_maps_that_mirror_and_scale_free():
    from core.train import flip_equivariance_loss

    a = np.random.default_rng(0).random((2, 6, 6, 3)).astype("float32")
    assert float(flip_equivariance_loss(a, a[:, :, ::-1])) == pytest.approx(0.0, abs=1e-6)
    unequal = float(flip_equivariance_loss(a, a))
    assert 0 < unequal <= 2
    assert float(flip_equivariance_loss(10 * a, 10 * a)) == pytest.approx(unequal, rel=1e-4)


def test_shifted_maps_moved_back_match_on_the_cells_both_views_saw():
    """A shift, not a roll: what leaves the frame is gone and the band uncovered is the fill; maps that move with the
    image score 0 on the cells both views saw, whatever the band holds, and a map that stays put does not."""
    from core.train import masked_equivariance_loss, shifted

    a = np.random.default_rng(1).random((2, 8, 8, 3)).astype("float32")
    moved = shifted(a, 2, -1, fill=5.0).numpy()
    assert np.array_equal(moved[:, 2:, :7], a[:, :6, 1:])
    assert np.all(moved[:, :2] == 5.0) and np.all(moved[:, :, 7] == 5.0)
    back, seen = shifted(moved, -2, 1).numpy(), shifted(np.ones_like(a[..., :1]), -2, 1).numpy()
    assert seen.sum() == 2 * 6 * 7
    assert float(masked_equivariance_loss(a, back, seen)) == pytest.approx(0.0, abs=1e-6)
    assert float(masked_equivariance_loss(a, shifted(a, -2, 1).numpy(), seen)) > 0.1


def test_shift_equivariance_makes_the_maps_move_with_a_shifted_slice(data_dir, chest_dir, tmp_path):
    """``--equivariance --equivariance-shift``: the last convolution's maps of a mirrored and shifted slice, moved
    back, come closer to the slice's own maps than without it; on a task that forbids flips the shift runs alone."""
    from core.train import TrainConfig, masked_equivariance_loss, shifted, train

    distance = {}
    for weight in (0.0, 5.0):
        maps, x, lines, _ = _equivariance_run(data_dir, tmp_path / f"w{weight:g}", equivariance=weight,
                                              equivariance_shift=2 if weight else 0,
                                              # 6 epochs: at 3 the ratio ranged 0.49-0.77 over four runs (the
                                              # control's distance 0.63-0.95), at 6 it was 0.25-0.29 over three
                                              **{**TINY, "epochs": 6, "input_size": 64})
        stride = x.shape[1] // maps.output.shape[1]
        view = shifted(x[:, :, ::-1], stride, -2 * stride, fill=x.min()).numpy()
        back = shifted(maps(view).numpy(), -1, 2).numpy()[:, :, ::-1]
        seen = shifted(np.ones_like(back[..., :1]), -1, 2).numpy()[:, :, ::-1]
        distance[weight] = float(masked_equivariance_loss(maps(x).numpy(), back, seen))
        assert any("mirrored and shifted by up to 2 cells" in line for line in lines) == bool(weight)
    assert distance[5.0] < 0.75 * distance[0.0], distance
    assert read_json(tmp_path / "w5" / "params.json")["equivariance_shift"] == 2
    card = (tmp_path / "w5" / "MODEL_CARD.md").read_text()
    assert "--equivariance 5 --equivariance-shift 2" in card and "shifted by up to 2 cells" in card
    lines = []
    train(TrainConfig(task="chest_xray", data=str(chest_dir), out=str(tmp_path / "chest"), equivariance=1.0,
                      equivariance_shift=1, **{**TINY, "epochs": 1}), log=lines.append)
    assert any(line.startswith("shift equivariance 1: a quarter of each batch also seen shifted by up to 1 cells")
               for line in lines)


def test_half_mirrors_put_a_one_sided_lesion_in_one_composite_and_keep_the_rest():
    """A head off the image centre with a bright spot on its right: the composites mirror about the head's own
    midline, so one holds the spot twice and the other none, and both keep the head's outline in place."""
    from core.train import half_mirrors, midlines

    yy, xx = np.mgrid[:32, :40]
    head = ((yy - 16) ** 2 + (xx - 22) ** 2 < 12 ** 2).astype(np.float32)
    image = head.copy()
    image[14:18, 27:30] = 3.0  # right of the midline (column 22)
    x = image[None, ..., None]
    assert float(midlines(x, 0.5).numpy()[0]) == pytest.approx(22, abs=0.5)
    left, right = (c.numpy()[0, ..., 0] for c in half_mirrors(x, 0.5))
    assert (left == 3).sum() == 0 and (right == 3).sum() == 2 * (image == 3).sum()
    assert np.array_equal(left > 0, head > 0) and np.array_equal(right > 0, head > 0)
    blank = np.zeros((1, 8, 9, 1), np.float32)  # nothing above the threshold: the image centre
    assert float(midlines(blank, 0.5).numpy()[0]) == pytest.approx(4.0)


def test_the_half_mirror_loss_rewards_one_composite_with_the_lesion_and_a_decision():
    """Low when one composite shows the class and the other the healthy class, whichever way round; high when
    both or neither do, and when the network stays undecided between the two classes on both."""
    from core.train import half_mirror_loss

    lesion, healthy, undecided = [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.45, 0.1, 0.45]  # healthy: index 2

    def loss(a, b):
        return float(half_mirror_loss(np.array([a]), np.array([b]), np.array([0]), 2)[0])

    right = loss(lesion, healthy)
    assert right == pytest.approx(loss(healthy, lesion)) and right < 0.5
    assert min(loss(lesion, lesion), loss(healthy, healthy), loss(undecided, undecided)) > 1.5


def test_a_half_mirror_run_logs_its_pair_loss_and_keeps_the_plain_network(data_dir, tmp_path):
    """``--half-mirrors glioma --healthy notumor`` on a tiny real subset: the pair loss is logged each epoch in
    ``history.csv`` (finite, and 0 in validation, where only the network runs), the kept model is the plain
    Functional network, and the run's params and card record the option."""
    from core.model import load_model
    from core.train import TrainConfig, train

    folder, lines = tmp_path / "half", []
    train(TrainConfig(task="brain_mri", data=str(data_dir / "brain_mri" / "Training"), out=str(folder),
                      half_mirrors="glioma", healthy="notumor", half_mirror_weight=2.0, **{**TINY, "epochs": 2}),
          log=lines.append)
    with open(folder / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert len(history) == 2 and all(np.isfinite(float(r["half_mirror_loss"])) and float(r["half_mirror_loss"]) > 0
                                     for r in history)
    assert any(line.startswith("half mirrors 2") for line in lines)
    loaded = load_model(folder)
    assert loaded.model.__class__.__name__ == "Functional" and loaded.model.output.shape[-1] == 4
    params = read_json(folder / "params.json")
    assert (params["half_mirrors"], params["healthy"], params["half_mirror_weight"]) == ("glioma", "notumor", 2.0)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--half-mirrors glioma --half-mirror-weight 2 --healthy notumor" in card and "Half mirrors" in card


def test_a_clahe_model_records_and_reloads_its_contrast_step(data_dir, tmp_path):
    """``train --contrast clahe``: CLAHE joins the pipeline that trains the model and the one that serves it."""
    from core.model import load_model
    from core.train import TrainConfig, train

    folder = tmp_path / "fracture"
    train(TrainConfig(task="fracture", data=str(data_dir / "fracatlas" / "images"), out=str(folder),
                      contrast="clahe", **TINY), log=lambda line: None)
    assert read_json(folder / "params.json")["pipeline"]["contrast"] == "clahe"
    loaded = load_model(folder)
    assert loaded.pipeline.contrast == "clahe"
    assert "contrast" in [name for name, _, _ in loaded.pipeline.steps(window=(0.5, 1.0), invert_image=False)]
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--contrast clahe" in card and "(CLAHE) evens out local contrast" in card


def test_implant_patchwork_and_cast_draw_on_a_share_of_the_training_films_and_the_run_says_so(data_dir, tmp_path):
    """``train --implant 0.3 --patchwork 0.2 --cast 0.25`` on real FracAtlas films: the plate, the patchwork and the
    cast join the run's training degradations at those probabilities, so its model.json, params and card record
    them; a share outside [0, 1] or with ``--no-degrade`` is one sentence before anything is read or written."""
    from core.train import CAST_LENGTHS, IMPLANT_LENGTHS, PATCHWORK_SHARES, TrainConfig, train

    folder = tmp_path / "fracture"
    images = str(data_dir / "fracatlas" / "images")
    train(TrainConfig(task="fracture", data=images, out=str(folder), implant=0.3, patchwork=0.2, cast=0.25, **TINY),
          log=lambda line: None)
    degradations = read_json(folder / "model.json")["augment"]["degradations"]
    assert degradations["implant"] == [0.3, *IMPLANT_LENGTHS]
    assert degradations["patchwork"] == [0.2, *PATCHWORK_SHARES]
    assert degradations["cast"] == [0.25, *CAST_LENGTHS]
    params = read_json(folder / "params.json")
    assert params["implant"] == 0.3 and params["patchwork"] == 0.2 and params["cast"] == 0.25
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--implant 0.3 --patchwork 0.2 --cast 0.25" in card
    assert "a metal plate drawn on the limb, length 0.15-0.45 of the long side, p 0.3" in card
    assert "a patchwork of blurred or sharpened cells, share 0.1-0.5 of the grid, p 0.2" in card
    assert "a cast or splint drawn round the limb, length 0.25-0.7 of the long side, p 0.25" in card
    for options, message in (({"implant": 1.5}, "--implant is a share"), ({"implant": 0.2, "degrade": False},
                                                                          "leave out --no-degrade"),
                             ({"patchwork": -0.1}, "--patchwork is a share"),
                             ({"cast": 0.2, "degrade": False}, "--cast is one of the degradations")):
        with pytest.raises(ValueError, match=message):
            train(TrainConfig(task="fracture", data=images, out=str(tmp_path / "x"), **{**TINY, **options}),
                  log=lambda line: None)
        assert not (tmp_path / "x").exists()



def test_synthetic_fractures_are_recorded_and_refused_where_they_cannot_apply(data_dir, chest_dir, tmp_path):
    """``train --synthetic-fractures 0.5`` on real FracAtlas films says what it draws, and its params and card record
    it; a share outside [0, 1], a frozen backbone's cached features, or a task whose spec names no class for a drawn
    fracture line (the chest films) is one sentence before anything is written."""
    from core.train import TrainConfig, train

    folder, lines = tmp_path / "fracture", []
    images = str(data_dir / "fracatlas" / "images")
    train(TrainConfig(task="fracture", data=images, out=str(folder), synthetic_fractures=0.5, **TINY), log=lines.append)
    assert any("a fracture line drawn on 50% of the training images of other classes" in line for line in lines)
    assert read_json(folder / "params.json")["synthetic_fractures"] == 0.5
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--synthetic-fractures 0.5" in card and "a fracture line drawn across a bone on 50%" in card
    for task, data, options, message in (
            ("fracture", images, {"synthetic_fractures": 1.5}, "--synthetic-fractures is a share"),
            ("fracture", images, {"synthetic_fractures": 0.2, "freeze_backbone": True,
                                  "backbone": "efficientnet-lite0"}, "leave out --freeze-backbone"),
            ("chest_xray", str(chest_dir), {"synthetic_fractures": 0.2}, "names none")):
        with pytest.raises(ValueError, match=message):
            train(TrainConfig(task=task, data=data, out=str(tmp_path / "x"), **{**TINY, **options}),
                  log=lambda line: None)
        assert not (tmp_path / "x").exists()

def test_balance_by_weighs_the_classes_equally_within_each_body_part(data_dir, tmp_path):
    """``train --balance-by hand,leg,hip,shoulder`` on real FracAtlas films: the loss weights come from the index's
    body-part columns, each class weighing the same within each body part, in place of class weights; the run's
    params and its card record it; other columns and combinations are refused."""
    from core import data as data_mod
    from core.tasks import load_spec
    from core.train import TrainConfig, train

    folder, lines = tmp_path / "fracture", []
    images = str(data_dir / "fracatlas" / "images")
    train(TrainConfig(task="fracture", data=images, out=str(folder), balance_by="hand,leg,hip,shoulder", **TINY),
          log=lines.append)
    params = read_json(folder / "params.json")
    assert params["class_weights"] is None and params["balanced"]["by"] == ["hand", "leg", "hip", "shoulder"]
    # The groups' counts are the training films' own, read from the index
    spec = load_spec("fracture")
    dataset = data_mod.list_for_spec(images, spec, limit_per_class=TINY["limit_per_class"])
    items, _ = data_mod.split_dataset(dataset, spec["split"], validation_fraction=0.15, seed=0)
    groups = params["balanced"]["groups"]
    assert sum(sum(g["n"]) for g in groups.values()) == len(items)
    for entry in groups.values():  # each class's images weigh the same in total within the group
        assert entry["n"][0] * entry["weight"][0] == pytest.approx(entry["n"][1] * entry["weight"][1], rel=0.01)
    assert any(line.startswith("classes balanced within each group of hand, leg, hip, shoulder") for line in lines)
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--balance-by hand,leg,hip,shoulder" in card and "Balanced within groups" in card
    assert "classes balanced within groups (above)" in card and "class weights for imbalance" not in card
    with pytest.raises(ValueError, match="names columns of the task's subgroups"):
        train(TrainConfig(task="fracture", data=images, out=str(tmp_path / "x"), balance_by="frontal", **TINY),
              log=lambda line: None)
    assert not (tmp_path / "x").exists()  # refused before any image is read or the output folder made
    with pytest.raises(ValueError, match="--balance-by weighs each training image once"):
        train(TrainConfig(task="fracture", data=images, out=str(tmp_path / "y"), balance_by="hand", cutmix=0.5,
                          **TINY), log=lambda line: None)


def test_upweight_errors_repeats_the_training_images_another_model_gets_wrong(tiny_run, chest_dir, tmp_path):
    """``train --upweight-errors-of FOLDER --upweight K`` (Just Train Twice): the training images that folder's
    model gets wrong, through its own pipeline, are seen K times per epoch; the run, its card and a refusal of a
    model for other classes say so."""
    from core import data as data_mod
    from core.model import load_model
    from core.tasks import load_spec
    from core.train import TrainConfig, train, upweight_errors

    folder, _, _ = tiny_run
    lines: list[str] = []
    out = tmp_path / "jtt"
    train(TrainConfig(task="chest_xray", data=str(chest_dir), out=str(out), upweight_errors_of=str(folder), upweight=3,
                      **TINY), log=lines.append)
    upweighted = read_json(out / "params.json")["upweighted"]
    assert upweighted["times"] == 3 and upweighted["sha256"] == sha256_file(folder / MODEL_FILE)
    assert upweighted["n"] == sum(upweighted["per_class"].values()) and set(upweighted["per_class"]) == {"NORMAL",
                                                                                                       "PNEUMONIA"}
    assert any(f"{upweighted['n']} training images that {folder} gets wrong" in line and "seen 3 times" in line
               for line in lines)
    card = (out / "MODEL_CARD.md").read_text()
    assert f"--upweight-errors-of {folder} --upweight 3" in card and "Just Train Twice" in card

    # The same training images, one by one through the other model: exactly the ones it gets wrong.
    spec = load_spec("chest_xray")
    dataset = data_mod.list_for_spec(str(chest_dir), spec, limit_per_class=TINY["limit_per_class"])
    items, _ = data_mod.split_dataset(dataset, spec.get("split"), validation_fraction=0.15, seed=0)
    loaded = load_model(folder)
    x, y = data_mod.prepare_arrays(items, loaded.pipeline)
    wrong = {i for i in range(len(items)) if loaded.decide(loaded.predict(x[i:i + 1])[0]) != y[i]}
    assert upweighted["n"] == len(wrong)
    again = upweight_errors(folder, items, y, list(dataset.class_names), "chest_xray", 3)
    assert set(again["index"].tolist()) == wrong
    with pytest.raises(ValueError, match="chest_xray model of NORMAL, PNEUMONIA; this training is brain_mri"):
        upweight_errors(folder, items, y, ["glioma", "meningioma", "notumor", "pituitary"], "brain_mri", 3)

    # Two shortcut models, separated by a comma: an image either gets wrong is repeated, each folder's own count kept.
    second = load_model(out)
    x2, _ = data_mod.prepare_arrays(items, second.pipeline)
    wrong2 = {i for i, row in enumerate(second.predict(x2)) if second.decide(row) != y[i]}
    both = upweight_errors(f"{folder},{out}", items, y, list(dataset.class_names), "chest_xray", 3)
    assert set(both["index"].tolist()) == wrong | wrong2 and both["n"] == len(wrong | wrong2)
    assert [s["n"] for s in both["sources"]] == [len(wrong), len(wrong2)]
    assert both["sha256"] == [sha256_file(folder / MODEL_FILE), sha256_file(out / MODEL_FILE)]
    from core.card import _upweighted_line
    line = _upweighted_line({k: v for k, v in both.items() if k != "index"})
    assert f"the {both['n']} training images that any of 2 models gets wrong" in line and str(out) in line
    with pytest.raises(ValueError, match="at least 2"):
        upweight_errors(folder, items, y, list(dataset.class_names), "chest_xray", 1)


def test_leave_out_keeps_the_listed_films_out_of_training_and_calibration_and_the_run_says_so(data_dir, tmp_path):
    """``train --leave-out assets/labels/fracatlas_training_casts.csv`` on real FracAtlas films: the fractured
    training films that wear a cast (flagged 1 in the file) are not trained on, split.json lists them so that
    ``calibrate`` rebuilds the same training split, and the card's command carries the flag; a file that cannot be
    read is one sentence before anything is written."""
    from core.data import read_leave_out
    from core.train import TrainConfig, calibrate_run, train

    root = Path(__file__).resolve().parents[1]
    labels = root / "assets" / "labels" / "fracatlas_training_casts.csv"
    casts = set(read_leave_out(labels))
    folder = tmp_path / "fracture"
    images = str(data_dir / "fracatlas" / "images")
    lines = []
    train(TrainConfig(task="fracture", data=images, out=str(folder), leave_out=str(labels),
                      **{**TINY, "limit_per_class": 60}), log=lines.append)
    split = read_json(folder / "split.json")
    left = split["left_out"]
    assert left and set(left) <= casts and not set(left) & set(split["validation"])
    params = read_json(folder / "params.json")
    assert any(line.startswith(f"--leave-out: {len(left)} training images left out") for line in lines)
    assert params["n_train"] + params["n_validation"] + len(left) == 120
    said = []
    calibrate_run(folder, images, log=said.append)
    assert f"{params['n_train']} training and {params['n_validation']} validation images from the run's split" in said
    assert f"--leave-out {labels}" in (folder / "MODEL_CARD.md").read_text()
    with pytest.raises(ValueError, match="--leave-out cannot be read"):
        train(TrainConfig(task="fracture", data=images, out=str(tmp_path / "x"), leave_out=str(tmp_path / "none.csv"),
                          **TINY), log=lambda line: None)
    assert not (tmp_path / "x").exists()


def test_the_training_cast_labels_cover_every_fractured_training_film():
    """assets/labels/fracatlas_training_casts.csv: the 567 fractured films the default trains on, each looked at, 103
    in a cast or splint (assets/labels/README.md); none of them validates."""
    import csv
    import json

    root = Path(__file__).resolve().parents[1]
    with open(root / "assets" / "labels" / "fracatlas_training_casts.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    validation = set(json.loads((root / "assets" / "models" / "fracture" / "split.json").read_text())["validation"])
    assert len(rows) == 567 and all(r["image"].startswith("fractured/") for r in rows)
    assert not {r["image"] for r in rows} & validation
    assert sum(r["cast_or_splint"] == "1" for r in rows) == 103
    assert "(1 on 103 of them, 18%" in (root / "assets" / "labels" / "README.md").read_text()
