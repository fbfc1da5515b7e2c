"""core.model: the Functional CNN, self-describing model folders, and the SHA-256 check."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.data import list_dataset, prepare_arrays
from core.model import (
    CLASS_MAPS, INFO_FILE, LAST_CONV, LOCAL_FIELD, MODEL_FILE, LoadedModel, ModelError, build_model, feature_layer, load_model,
    outlier_layers, save_model, sha256_file,
)
from core.saliency import conv_layer_names
from core.preprocess import Pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_batch(chest_dir):
    """Six real chest images prepared for a 32-pixel model."""
    x, _ = prepare_arrays(list(list_dataset(chest_dir, limit_per_class=3).items), Pipeline(input_size=32))
    return x


def minimal_info(size: int = 32) -> dict:
    return {"class_names": ["NORMAL", "PNEUMONIA"], "input_size": size,
            "preprocessing": Pipeline(input_size=size).to_dict()}


def test_build_model_is_a_flat_functional_cnn():
    import keras

    model = build_model(64, 4, width=8)
    assert model.output_shape == (None, 4)
    assert isinstance(model, keras.Model) and not isinstance(model, keras.Sequential)
    assert type(model).__name__ == "Functional"
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # not nested
    names = conv_layer_names(model)
    assert names[0] == "stem" and names[-1] == LAST_CONV
    assert model.get_layer(LAST_CONV).output.shape[1:3] == (8, 8)  # 1/8 of the input


@pytest.mark.parametrize("kind", ["local", "usual", "fine"])
def test_a_last_convolution_cell_sees_its_stated_square(real_batch, kind):
    """``--local``: a bright dot in one corner of a real film changes only the last-convolution cells whose
    33 px square holds it, so a map cell's evidence lies in its own patch; the usual model's cells see
    81 px and the dot reaches cells four cells away. ``--fine-grid``: without the second pooling the last
    convolution has twice the cells a side (16 for a 64 px input), each seeing 53 px, so the dot at pixels
    0-1 reaches cells 0 to 6 (cell i of stride 4 starts at 4 i + 1.5 - 53 / 2). The names the page and the
    outlier check read stay."""
    import keras

    from core.model import FINE_FIELD

    keras.utils.set_random_seed(5)
    model = build_model(64, 2, width=8, pooling="avg+max", local=kind == "local", fine=kind == "fine")
    assert type(model).__name__ == "Functional" and conv_layer_names(model)[-1] == LAST_CONV
    assert outlier_layers(model) == ["pooled", "conv2b_relu"]
    assert model.get_layer(LAST_CONV).output.shape[1:3] == ((16, 16) if kind == "fine" else (8, 8))
    features = keras.Model(model.input, model.get_layer(LAST_CONV).output)
    image = np.asarray(keras.ops.image.resize(real_batch[:1], (64, 64)))
    dotted = image.copy()
    dotted[0, :2, :2, 0] += 4.0
    changed = np.argwhere(np.abs(features(dotted).numpy() - features(image).numpy())[0].max(axis=-1) > 1e-6)
    assert len(changed) and changed.min(axis=0).tolist() == [0, 0]
    reach = changed.max(axis=0)  # cell i of stride 8 starts seeing pixels at 8 i + 3.5 - LOCAL_FIELD / 2
    if kind == "local":
        assert reach.tolist() == [1, 1] and LOCAL_FIELD == 33
    elif kind == "fine":
        assert reach.tolist() == [6, 6] and FINE_FIELD == 53
    else:
        assert reach.min() >= 4


def test_the_evidence_head_reads_no_finding_when_nothing_fires_and_keeps_its_weights_non_negative(tmp_path, real_batch):
    """``--no-finding``: each other class's score is a sum of non-negative evidence with no bias and the no-finding
    class's a learned constant, so pooled features of zero (nothing fires) give the no-finding class as soon as
    its constant is above zero, and no training step can make a class's weight negative or give the constant a
    weight. The model saves, reloads and explains like the others."""
    import keras

    from core.model import pooled_head
    from core.saliency import Explainer

    keras.utils.set_random_seed(4)
    model = build_model(32, 3, width=8, pooling="avg+max", no_finding=1)
    assert type(model).__name__ == "Functional" and conv_layer_names(model)[-1] == LAST_CONV
    assert outlier_layers(model) == ["pooled", "conv2b_relu"]
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    labels = np.eye(3, dtype=np.float32)[[0, 2, 0, 2, 0, 2]]  # the no-finding class never the answer: pushes hard
    model.fit(real_batch, labels, epochs=3, verbose=0)
    for index in (0, 2):
        assert model.get_layer(f"evidence_{index}").get_weights()[0].min() >= 0
        assert len(model.get_layer(f"evidence_{index}").get_weights()) == 1  # no bias
    kernel, bias = model.get_layer("no_finding").get_weights()
    assert np.abs(kernel).max() < 1e-6
    features = keras.Input((6,))
    head = keras.Model(features, pooled_head(keras.layers.Reshape((1, 1, 6))(features), 3, pooling="avg",
                                              dropout=0.0, no_finding=1))
    head.get_layer("no_finding").set_weights([np.zeros((6, 1)), np.array([0.5])])
    assert int(np.argmax(head.predict(np.zeros((1, 6), np.float32), verbose=0))) == 1
    save_model(model, tmp_path, {**minimal_info(), "class_names": ["a", "none", "b"]})
    loaded = load_model(tmp_path)
    assert np.allclose(loaded.predict(real_batch[:2]), model.predict(real_batch[:2], verbose=0), atol=1e-5)
    assert np.isfinite(Explainer(loaded.model).saliency(real_batch[:1], "gradcam", 0, LAST_CONV)).all()
    with pytest.raises(ValueError, match="evidence head"):
        build_model(32, 3, width=8, pooling="classmap", no_finding=1)


@pytest.mark.parametrize("pooling", ["classmap", "classmap-max"])
def test_classmap_model_scores_places_and_its_gradcam_is_its_class_map(tmp_path, real_batch, pooling):
    """``--pooling classmap``: each class's score is the mean of the maximum and the average of its own
    map (``classmap-max``: its maximum alone), so Grad-CAM on the last convolution is that map (less its
    bias), the place the score came from; the outlier check reads the last convolution, averaged over
    space, since the head reads no features."""
    import keras

    keras.utils.set_random_seed(3)
    model = build_model(32, 2, width=8, pooling=pooling)
    assert type(model).__name__ == "Functional" and conv_layer_names(model)[-2:] == [LAST_CONV, CLASS_MAPS]
    maps = keras.Model(model.input, model.get_layer(CLASS_MAPS).output)(real_batch).numpy()
    logits = maps.max(axis=(1, 2))
    if pooling == "classmap":
        logits = 0.5 * (logits + maps.mean(axis=(1, 2)))
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(real_batch)), expected, rtol=1e-4, atol=1e-6)
    assert feature_layer(model) == LAST_CONV and outlier_layers(model) == [LAST_CONV, "conv2b_relu"]

    loaded = load_model(save_model(model, tmp_path / "m", minimal_info()))
    bias = model.get_layer(CLASS_MAPS).get_weights()[1]
    for index in range(3):
        for class_index in (0, 1):
            cam = loaded.explainer.saliency(real_batch[index:index + 1], "gradcam", class_index, LAST_CONV)
            own = np.maximum(maps[index, ..., class_index] - bias[class_index], 0.0)
            own = (own - own.min()) / (own.max() - own.min() + 1e-7)
            np.testing.assert_allclose(cam, own, atol=1e-3)


def test_save_and_load_round_trip_gives_identical_predictions(tmp_path, real_batch):
    model = build_model(32, 2, width=8)
    expected = np.asarray(model(real_batch, training=False))
    folder = save_model(model, tmp_path / "m", minimal_info())
    info = json.loads((folder / INFO_FILE).read_text())
    assert info["sha256"] == sha256_file(folder / MODEL_FILE)
    assert info["last_conv"] == LAST_CONV and {"tensorflow", "keras"} <= set(info["versions"])
    loaded = load_model(folder)
    assert loaded.class_names == ["NORMAL", "PNEUMONIA"] and loaded.pipeline == Pipeline(input_size=32)
    np.testing.assert_array_equal(loaded.predict(real_batch), expected.astype(np.float64))


def test_trained_model_folder_loads_and_predicts(tiny_run, real_batch):
    folder, _, _ = tiny_run
    loaded = load_model(folder)
    assert loaded.task == "chest_xray" and loaded.class_names == ["NORMAL", "PNEUMONIA"]
    assert loaded.pipeline == Pipeline(input_size=32) and loaded.threshold == 0.5
    probs = loaded.predict(real_batch)
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1.0)
    np.testing.assert_array_equal(load_model(folder).predict(real_batch), probs)


def test_tampered_model_file_is_refused(tiny_run, tmp_path):
    folder = shutil.copytree(tiny_run[0], tmp_path / "tampered")
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the SHA-256"):
        load_model(folder)


def test_swapped_model_file_is_refused(tiny_run, tmp_path):
    folder = shutil.copytree(tiny_run[0], tmp_path / "swapped")
    other = save_model(build_model(32, 2, width=8), tmp_path / "other", minimal_info())
    shutil.copy(other / MODEL_FILE, folder / MODEL_FILE)  # a valid model, but not the described one
    with pytest.raises(ModelError, match="SHA-256"):
        load_model(folder)


def test_unusable_model_folders_raise_model_error(tiny_run, tmp_path):
    with pytest.raises(ModelError, match="not a model folder"):
        load_model(tmp_path / "nowhere")
    bad_json = shutil.copytree(tiny_run[0], tmp_path / "bad_json")
    (bad_json / INFO_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(bad_json)
    no_classes = shutil.copytree(tiny_run[0], tmp_path / "no_classes")
    info = json.loads((no_classes / INFO_FILE).read_text())
    del info["class_names"]
    (no_classes / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(ModelError, match="lacks 'class_names'"):
        load_model(no_classes)
    no_file = shutil.copytree(tiny_run[0], tmp_path / "no_file")
    (no_file / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match=f"has no {MODEL_FILE}"):
        load_model(no_file)


def test_threshold_and_temperature(tiny_run, real_batch):
    base = load_model(tiny_run[0])
    info = dict(base.info, threshold=0.3, temperature=2.0)
    tuned = LoadedModel(model=base.model, info=info, path=base.path)
    assert tuned.decide(np.array([0.69, 0.31])) == 1 and base.decide(np.array([0.69, 0.31])) == 0
    assert tuned.decide(np.array([0.2, 0.3, 0.5])) == 2  # arg-max beyond two classes
    raw, softened = base.predict(real_batch), tuned.predict(real_batch)
    assert np.allclose(softened.sum(axis=1), 1.0)
    assert np.array_equal(raw.argmax(axis=1), softened.argmax(axis=1))  # temperature keeps the ranking
    assert np.all(np.abs(softened - 0.5) <= np.abs(raw - 0.5) + 1e-12)  # and only softens


def test_trained_model_folder_describes_its_task(tiny_run):
    """The task spec's facts travel with the model folder: pages never need the task's name."""
    info = load_model(tiny_run[0]).info
    assert info["title"].startswith("Chest X-ray") and "Kermany" in info["source"]["citation"]
    assert info["split"]["policy"] == "group" and info["routing"]["modalities"] == ["CR", "DX"]
    assert info["limits"] and info["intended_use"]


def test_uncalibrated_and_calibrated_probabilities(tiny_run, real_batch):
    base = load_model(tiny_run[0])
    tuned = LoadedModel(model=base.model, info=dict(base.info, temperature=3.0), path=base.path)
    np.testing.assert_array_equal(tuned.uncalibrated(real_batch), base.predict(real_batch))
    probabilities, distances = tuned.predict_with_distance(real_batch)
    np.testing.assert_array_equal(probabilities, tuned.predict(real_batch))
    assert distances is None and tuned.outlier_threshold is None  # the tiny run has no outlier check


def test_a_sigmoid_model_gives_two_columns(tmp_path, real_batch):
    import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    loaded = load_model(save_model(model, tmp_path / "sigmoid", minimal_info()))
    probabilities = loaded.predict(real_batch)
    positive = np.asarray(model(real_batch, training=False), np.float64)[:, 0]
    np.testing.assert_allclose(probabilities[:, 1], positive, rtol=1e-6)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert loaded.explainable_layers == ["conv"] and loaded.last_conv == "conv"
    assert feature_layer(loaded.model) == "pool"
