"""core.importer: a user's Keras 3 classifier becomes a self-describing model folder like the defaults.

Small models are built here (a Sequential RGB softmax one, a nested Functional sigmoid one with
clashing layer names and a residual block, one without a convolution), saved as real ``.keras``
files and imported through the library and ``python -m core import-model``. Each is explained with
every method and scored by the trust checks; a disc-finding model trained here as a ``Sequential``
RGB sigmoid network still puts its hot spot on the disc after the import (the registration test of
``tests/test_registration.py``). Bad files are refused with one sentence each.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from core import saliency as sal
from core.cli import main as cli
from core.importer import CHECK_INPUTS, TOLERANCE, ModelImportError, import_model, parse_preprocess
from core.io import load_scan
from core.model import load_model
from page_support import is_one_sentence

pytestmark = pytest.mark.slow


# ----------------------------------------------------------------------------- models built here

def keras_bytes(model, tmp_path, name: str = "model.keras") -> bytes:
    path = tmp_path / name
    model.save(path)
    return path.read_bytes()


def sequential_rgb():
    """RGB input, softmax over three classes, ending in a separate Softmax layer."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        layers.BatchNormalization(name="bn1"),
        layers.MaxPooling2D(name="pool1"),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2"),
        layers.GlobalAveragePooling2D(name="gap"),
        layers.Dense(3, name="logits"),
        layers.Softmax(name="probabilities"),
    ], name="rgb_sequential")


def nested_sigmoid():
    """Any input size, grey; a Sequential backbone and a Functional residual block used as layers,
    an outer convolution with the backbone's layer name, and one sigmoid output."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(2)
    backbone = keras.Sequential([keras.Input((None, None, 1)), layers.Conv2D(6, 3, padding="same", name="conv"),
                                 layers.ReLU(name="relu")], name="backbone")
    block_in = keras.Input((None, None, 6))
    branch = layers.Conv2D(6, 3, padding="same", activation="relu", name="block_conv")(block_in)
    block = keras.Model(block_in, layers.Add(name="residual")([block_in, branch]), name="block")
    inputs = keras.Input((None, None, 1))
    x = block(backbone(inputs))
    x = layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(x)  # clashes with the backbone's
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, layers.Dense(1, activation="sigmoid", name="positive")(x), name="nested")


def dense_only():
    """No convolution: SmoothGrad is the only method that can explain it."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(3)
    return keras.Sequential([keras.Input((24, 24, 1)), layers.Flatten(), layers.Dense(8, activation="relu"),
                             layers.Dense(2, activation="softmax")], name="dense_only")


#: name -> (builder, import arguments)
GOOD = {
    "rgb_sequential": (sequential_rgb, dict(class_names="a,b,c", preprocess="byte")),
    "nested_sigmoid": (nested_sigmoid, dict(class_names="negative,positive", input_size=40, preprocess="signed")),
    "dense_only": (dense_only, dict(class_names="left,right", channels=1)),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The good models as .keras bytes, with the Keras models they were saved from."""
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    folder = tmp_path_factory.mktemp("keras_files")
    built = {}
    for name, (build, _) in GOOD.items():
        model = build()
        built[name] = (model, keras_bytes(model, folder, f"{name}.keras"))
    return built


@pytest.fixture(scope="module")
def imported(files, tmp_path_factory):
    root = tmp_path_factory.mktemp("imported")
    return {name: import_model(files[name][1], out=root / name, file_name=f"{name}.keras", **GOOD[name][1])
            for name in GOOD}


@pytest.fixture(scope="module")
def radiograph(fullres_dir):
    path = sorted((fullres_dir / "NORMAL").glob("*.jpeg"))[0]
    return load_scan(path.read_bytes(), path.name)


# ----------------------------------------------------------------------------- good models

@pytest.mark.parametrize("name", list(GOOD))
def test_the_folder_describes_the_model(imported, name):
    result = imported[name]
    info = json.loads((result.folder / "model.json").read_text())
    assert info["imported"] is True
    assert info["class_names"] == GOOD[name][1]["class_names"].split(",")
    side, channels = {"rgb_sequential": (32, 3), "nested_sigmoid": (40, 1), "dense_only": (24, 1)}[name]
    assert info["input_shape"] == [side, side, channels] and info["channels"] == channels
    assert info["preprocessing"]["input_size"] == side and info["preprocessing"]["channels"] == channels
    assert (info["preprocessing"]["mean"], info["preprocessing"]["std"]) == pytest.approx(
        parse_preprocess(GOOD[name][1].get("preprocess", "unit")))
    assert info["output"] == ("sigmoid" if name == "nested_sigmoid" else "softmax")
    assert len(info["sha256"]) == 64 and info["import"]["tolerance"] == TOLERANCE
    assert info["import"]["rebuilt_from"] == {"rgb_sequential": "Sequential", "nested_sigmoid": "nested Functional",
                                              "dense_only": "Sequential"}[name]
    expected_layers = {"rgb_sequential": ["conv1", "conv2"], "nested_sigmoid": ["conv", "block_conv", "conv_2"],
                       "dense_only": []}[name]
    assert info["explainable_layers"] == expected_layers
    assert info["last_conv"] == (expected_layers[-1] if expected_layers else None)
    card = (result.folder / "MODEL_CARD.md").read_text()
    assert "## What is known" in card and "## What is not known" in card and info["sha256"] in card
    assert ("repeated on the three channels" in card) == (channels == 3)
    assert ("only SmoothGrad" in card) == (not expected_layers)
    assert result.summary().startswith("Imported ") and "written to" in result.summary()


@pytest.mark.parametrize("name", list(GOOD))
def test_the_rebuilt_model_is_flat_and_gives_the_original_outputs(files, imported, name):
    import keras

    original = files[name][0]
    loaded = load_model(imported[name].folder)
    model = loaded.model
    assert type(model) is not keras.Sequential and not any(isinstance(layer, keras.Model) for layer in model.layers)
    assert len({layer.name for layer in model.layers}) == len(model.layers)
    assert model.layers[-1].output is model.output  # the layer tf-keras-vis makes linear is the output's
    assert imported[name].max_difference <= TOLERANCE
    side, channels = loaded.pipeline.input_size, loaded.pipeline.channels
    x = np.random.default_rng(5).uniform(*loaded.pipeline.value_range, (4, side, side, channels)).astype(np.float32)
    reference = np.asarray(original(x, training=False), np.float64)
    if reference.shape[1] == 1:
        reference = np.concatenate([1 - reference, reference], axis=1)
    np.testing.assert_allclose(loaded.predict(x), reference, atol=TOLERANCE)
    np.testing.assert_allclose(loaded.predict(x).sum(axis=1), 1.0, atol=1e-6)
    assert loaded.output == imported[name].info["output"] and loaded.imported


@pytest.mark.parametrize("name", list(GOOD))
def test_every_method_explains_a_real_radiograph(imported, radiograph, name):
    loaded = load_model(imported[name].folder)
    tensor = loaded.pipeline.scan_tensor(radiograph)
    assert tensor.shape == (1, loaded.pipeline.input_size, loaded.pipeline.input_size, loaded.pipeline.channels)
    methods = [m for m in sal.METHODS if loaded.explainable_layers or m not in sal.CAM_METHODS]
    assert methods == (["smoothgrad"] if name == "dense_only" else list(sal.METHODS))
    for method in methods:
        for class_index in range(len(loaded.class_names)):
            result = sal.explain(loaded, tensor, radiograph.shape, method=method, class_index=class_index)
            assert result.on_scan.shape == radiograph.shape
            assert np.isfinite(result.raw).all() and 0 <= result.raw.min() and result.raw.max() <= 1
    if not loaded.explainable_layers:
        with pytest.raises(ValueError, match="has none; use SmoothGrad"):
            sal.explain(loaded, tensor, radiograph.shape, method="gradcam", class_index=0)


@pytest.mark.parametrize("name", ["rgb_sequential", "nested_sigmoid"])
def test_compiled_maps_equal_tf_keras_vis_on_imported_models(imported, radiograph, name):
    loaded = load_model(imported[name].folder)
    x = loaded.pipeline.scan_tensor(radiograph)
    for method in ("gradcam", "gradcam++", "layercam", "smoothgrad"):
        for class_index in range(len(loaded.class_names)):
            np.random.seed(3)
            reference = sal.reference_map(loaded.model, x, method, class_index, loaded.last_conv)
            np.random.seed(3)
            fast = loaded.explainer.saliency(x, method, class_index, loaded.last_conv)
            if method == "gradcam++" and name == "rgb_sequential":
                continue  # its 0-255 inputs give scores whose exp() overflows in tf-keras-vis: next test
            np.testing.assert_allclose(fast, reference, atol=2e-3 if method == "smoothgrad" else 1e-5)


def test_gradcam_plus_plus_survives_the_large_scores_of_an_imported_model(imported, radiograph):
    """tf-keras-vis multiplies Grad-CAM++'s derivatives by exp(score). The factor scales the whole map, which the
    normalisation undoes, but in float32 it overflows above 88 (a NaN map, shown as zeros), and far below 0 it
    shrinks the map into the normaliser's epsilon. With 0-255 inputs this model's scores are that large: where
    tf-keras-vis's map is still sound ours is the same, elsewhere ours is the map and its is not."""
    loaded = load_model(imported["rgb_sequential"].folder)
    linear = sal._linear_clone(loaded.model)
    for gain in (1.0, 1.5, 2.0, 3.0, 4.0):  # the radiograph, brighter until a score passes 88
        x = loaded.pipeline.scan_tensor(radiograph) * np.float32(gain)
        scores = np.asarray(linear(x, training=False), np.float64)[0]
        if scores.max() > 88:
            break
    assert scores.max() > 88 and scores.min() < -10, scores  # what this test is about
    for class_index, score in enumerate(scores):
        fast = loaded.explainer.saliency(x, "gradcam++", class_index, loaded.last_conv)
        assert np.isfinite(fast).all() and fast.max() > 0.99
        reference = sal.reference_map(loaded.model, x, "gradcam++", class_index, loaded.last_conv)
        if 0 <= score <= 80:
            np.testing.assert_allclose(fast, reference, atol=1e-5)
        elif score > 88:
            assert reference.max() < 0.5, "tf-keras-vis's factor overflowed"
        elif reference.max() > 0:  # shrunk, not lost: the same map, scaled down
            assert np.corrcoef(fast.ravel(), reference.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("name", list(GOOD))
def test_trust_checks_work_on_imported_models(imported, radiograph, name):
    from core.trust import faithfulness, sanity_check, test_time_augmentation

    loaded = load_model(imported[name].folder)
    tensor = loaded.pipeline.scan_tensor(radiograph)
    method = "gradcam" if loaded.last_conv else "smoothgrad"
    raw = loaded.explainer.saliency(tensor, method, 1, loaded.last_conv)
    scores = faithfulness(loaded, tensor, raw, 1, steps=8, random_orders=2)
    assert 0 <= scores.deletion_auc <= 1 and 0 <= scores.insertion_auc <= 1
    check = sanity_check(loaded, tensor, method, 1, loaded.last_conv, original=raw)
    assert check.layers and len(check.spearman) == len(check.layers)
    spread = test_time_augmentation(loaded, tensor, 1, threshold=0.5, n=4, layer=loaded.last_conv)
    assert 0 <= spread.low <= spread.mean <= spread.high <= 1


@pytest.mark.parametrize("name", list(GOOD))
def test_a_report_of_a_scan_explained_by_an_imported_model(imported, radiograph, name):
    report_content = pytest.importorskip("core.report_content")  # the lead's report module (issue 15)
    from core.report import report_pdf

    loaded = load_model(imported[name].folder)
    content = report_content.content_for(loaded, radiograph, method="gradcam" if loaded.last_conv else "smoothgrad")
    pdf = report_pdf(content)
    assert pdf.startswith(b"%PDF") and len(pdf) > 10_000


def test_the_shared_model_keeps_its_sigmoid(imported, radiograph):
    loaded = load_model(imported["nested_sigmoid"].folder)
    x = loaded.pipeline.scan_tensor(radiograph)
    before = loaded.predict(x)
    for method in sal.METHODS:
        loaded.explainer.saliency(x, method, 1, loaded.last_conv)
    np.testing.assert_array_equal(loaded.predict(x), before)
    assert loaded.model.layers[-1].activation.__name__ == "sigmoid"


def test_a_folder_whose_preprocessing_disagrees_with_the_model_is_refused(imported, tmp_path):
    import shutil

    from core.model import ModelError

    folder = tmp_path / "edited"
    shutil.copytree(imported["rgb_sequential"].folder, folder)
    info = json.loads((folder / "model.json").read_text())
    info["preprocessing"]["channels"] = 1
    (folder / "model.json").write_text(json.dumps(info))
    with pytest.raises(ModelError, match="prepares"):
        load_model(folder)


# ----------------------------------------------------------------------------- the command line

def test_the_command_line_imports_a_model(files, tmp_path, capsys):
    source = tmp_path / "nested.keras"
    source.write_bytes(files["nested_sigmoid"][1])
    out = tmp_path / "cli_nested"
    code = cli(["import-model", str(source), "--classes", "no,yes", "--input-size", "48", "--channels", "1",
                "--preprocess", "mean=0.4,std=0.2", "--contrast", "clahe", "--title", "Nested test", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert captured.out.startswith("Imported Nested test: 2 classes (no, yes), input 48 x 48 x 1, sigmoid output")
    loaded = load_model(out)
    assert loaded.title == "Nested test" and loaded.pipeline.contrast == "clahe"
    assert (loaded.pipeline.mean, loaded.pipeline.std) == (0.4, 0.2)


def test_the_command_line_in_its_own_process(files, tmp_path):
    """``python -m core import-model`` as a user runs it: one line out, exit 0; a bad file: one sentence, exit 2."""
    source = tmp_path / "rgb.keras"
    source.write_bytes(files["rgb_sequential"][1])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    run = subprocess.run([sys.executable, "-m", "core", "import-model", str(source), "--classes", "a,b,c",
                          "--out", str(tmp_path / "out")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("\n") == 1 and "3 classes (a, b, c)" in run.stdout
    assert "Traceback" not in run.stderr
    (tmp_path / "bad.keras").write_bytes(os.urandom(4000))
    bad = subprocess.run([sys.executable, "-m", "core", "import-model", str(tmp_path / "bad.keras"), "--classes", "a,b",
                          "--out", str(tmp_path / "bad_out")], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 2 and bad.stdout == ""
    message = bad.stderr.strip().removeprefix("error: ")
    assert is_one_sentence(message) and "not a Keras 3 model" in message, bad.stderr
    assert not (tmp_path / "bad_out").exists()


# ----------------------------------------------------------------------------- bad files and choices

def legacy_h5(tmp_path) -> bytes:
    import warnings

    path = tmp_path / "legacy.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense_only().save(path)
    return path.read_bytes()


def lambda_model(tmp_path) -> bytes:
    import keras
    from keras import layers

    inputs = keras.Input((16, 16, 1))
    x = layers.Lambda(lambda t: t * 2.0, name="double")(inputs)
    x = layers.Conv2D(2, 3, name="conv")(x)
    return keras_bytes(keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(x))), tmp_path,
                       "lambda.keras")


def custom_layer_model(tmp_path) -> bytes:
    import keras
    from keras import layers

    @keras.saving.register_keras_serializable(package="user_package")
    class Twice(layers.Layer):
        def call(self, x):
            return x * 2.0

    inputs = keras.Input((16, 16, 1))
    x = layers.Flatten()(Twice(name="twice")(inputs))
    return keras_bytes(keras.Model(inputs, layers.Dense(2, activation="softmax")(x)), tmp_path, "custom.keras")


def two_inputs(tmp_path) -> bytes:
    import keras
    from keras import layers

    a, b = keras.Input((16, 16, 1)), keras.Input((16, 16, 1))
    x = layers.Flatten()(layers.Concatenate()([a, b]))
    return keras_bytes(keras.Model([a, b], layers.Dense(2, activation="softmax")(x)), tmp_path, "two.keras")


def head(tmp_path, units: int, activation: str | None, shape=(16, 16, 1), name="head.keras") -> bytes:
    import keras
    from keras import layers

    inputs = keras.Input(shape)
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(2, 3, name="conv")(inputs))
    return keras_bytes(keras.Model(inputs, layers.Dense(units, activation=activation)(x)), tmp_path, name)


BAD = {
    "random bytes named .keras": (lambda p: os.urandom(5000), "not a Keras 3 model"),
    "a zip that is no model": (lambda p: _zip_of({"readme.txt": b"hello"}), "holds no Keras model"),
    "a legacy .h5": (legacy_h5, "legacy HDF5"),
    "a Lambda layer": (lambda_model, "Lambda layer"),
    "a custom layer": (custom_layer_model, "custom objects (user_package>Twice)"),
    "two inputs": (two_inputs, "takes 2 inputs"),
    "a regression output": (lambda p: head(p, 1, None, name="regression.keras"), "not a probability"),
    "a multi-label output": (lambda p: head(p, 3, "sigmoid", name="multilabel.keras"), "multi-label"),
    "a non-square input": (lambda p: head(p, 2, "softmax", shape=(16, 24, 1), name="wide.keras"), "square"),
    "two channels": (lambda p: head(p, 2, "softmax", shape=(16, 16, 2), name="two_channels.keras"), "takes 2 channels"),
}


def _zip_of(members: dict) -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(BAD))
def test_a_bad_model_file_is_one_sentence(case, tmp_path):
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    make, expected = BAD[case]
    data = make(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(ModelImportError) as caught:
        import_model(data, class_names="a,b", out=out)
    message = str(caught.value)
    assert expected in message and is_one_sentence(message), message
    assert not out.exists(), "a refused model leaves no folder behind"


def test_a_bad_file_through_the_command_line_is_one_sentence(tmp_path, capsys):
    source = tmp_path / "legacy.h5"
    source.write_bytes(legacy_h5(tmp_path))
    assert cli(["import-model", str(source), "--classes", "a,b", "--out", str(tmp_path / "x")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and "Traceback" not in captured.err
    assert is_one_sentence(captured.err.strip().removeprefix("error: "))


@pytest.mark.parametrize("arguments, expected", [
    (dict(class_names="a"), "at least two class names"),
    (dict(class_names="a,a,b"), "must all be different"),
    (dict(class_names="a,b"), "softmax over 3 classes, but 2 class names"),
    (dict(class_names="a,b,c", input_size=64), "takes 32 x 32 images, not 64 x 64"),
    (dict(class_names="a,b,c", channels=1), "takes 3-channel images, not 1"),
    (dict(class_names="a,b,c", preprocess="imagenet"), "preprocessing 'imagenet' is not known"),
])
def test_wrong_choices_are_one_sentence(files, tmp_path, arguments, expected):
    with pytest.raises(ModelImportError) as caught:
        import_model(files["rgb_sequential"][1], out=tmp_path / "out", **arguments)
    assert expected in str(caught.value) and is_one_sentence(str(caught.value)), str(caught.value)


def test_a_model_of_any_size_needs_its_input_size(files, tmp_path):
    with pytest.raises(ModelImportError, match="accepts any image size"):
        import_model(files["nested_sigmoid"][1], class_names="a,b", out=tmp_path / "out")


def test_an_existing_folder_is_never_overwritten(files, imported):
    folder = imported["dense_only"].folder
    before = (folder / "model.json").read_bytes()
    with pytest.raises(ModelImportError, match="already exists and is not empty"):
        import_model(files["dense_only"][1], class_names="a,b", out=folder)
    assert (folder / "model.json").read_bytes() == before


# ----------------------------------------------------------------------------- registration

from test_registration import CAM, CELL, COLS, INPUT, RADIUS, ROWS, disc_image, peak, png, quadrant  # noqa: E402


@pytest.fixture(scope="module")
def imported_disc(tmp_path_factory):
    """A disc finder trained here as a Sequential RGB network with one sigmoid output, then imported."""
    import keras
    from keras import layers

    from core.preprocess import Pipeline

    pipeline = Pipeline(input_size=INPUT, channels=3)  # the project's standard range, grey repeated on RGB
    rng = np.random.default_rng(0)
    small, radius = (ROWS // 5, COLS // 5), RADIUS / 5
    x, y = [], []
    for i in range(400):
        centre = (rng.uniform(radius, small[0] - radius), rng.uniform(radius, small[1] - radius)) if i % 2 else None
        x.append(pipeline(disc_image(small, centre, radius, rng).astype(np.float32), window=(127.5, 255.0))[0])
        y.append(i % 2)
    keras.utils.set_random_seed(0)

    def conv(filters, stride=1, name=None):
        return [layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=name),
                layers.BatchNormalization(), layers.Activation("relu")]

    model = keras.Sequential([keras.Input((INPUT, INPUT, 3)), *conv(8, 2), *conv(8), layers.MaxPooling2D(),
                              *conv(16), layers.MaxPooling2D(), *conv(16),
                              layers.Conv2D(16, 3, padding="same", activation="relu", name="features"),
                              layers.GlobalAveragePooling2D(), layers.Dense(1, activation="sigmoid")], name="disc")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    model.fit(np.stack(x), np.array(y, np.float32), epochs=12, batch_size=16, verbose=0)
    folder = tmp_path_factory.mktemp("disc_files")
    result = import_model(keras_bytes(model, folder, "disc.keras"), class_names="empty,disc", preprocess="standard",
                          out=folder / "imported_disc")
    return load_model(result.folder)


def disc_scan(centre):
    return load_scan(png(disc_image((ROWS, COLS), centre, RADIUS, np.random.default_rng(1))), "disc.png")


def test_the_imported_model_responds_to_the_disc(imported_disc):
    loaded = imported_disc
    assert loaded.output == "sigmoid" and loaded.pipeline.channels == 3 and loaded.last_conv == "features"
    assert loaded.predict(loaded.pipeline.scan_tensor(disc_scan(None)))[0][1] < 0.5
    for centre in ((80, 140), (230, 390)):
        assert loaded.predict(loaded.pipeline.scan_tensor(disc_scan(centre)))[0][1] > 0.5


@pytest.mark.parametrize("centre", [(80, 140), (230, 390)], ids=["top-left", "bottom-right"])
@pytest.mark.parametrize("method", CAM + ("smoothgrad",))
def test_the_imported_models_hot_spot_lies_on_the_disc(imported_disc, centre, method):
    scan = disc_scan(centre)
    result = sal.explain(imported_disc, imported_disc.pipeline.scan_tensor(scan), scan.shape, method=method,
                         class_index=1)
    hot = peak(result.on_scan)
    assert quadrant(hot) == quadrant(centre), (hot, centre)
    assert np.hypot(*(hot - centre)) <= RADIUS + np.hypot(*CELL), (hot, centre)
