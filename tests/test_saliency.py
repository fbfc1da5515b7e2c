"""core.saliency: the compiled maps equal tf-keras-vis's own, the shared model is left alone,
and maps go back to the scan's geometry exactly as skimage would resize them."""

from __future__ import annotations

import numpy as np
import pytest

from core import saliency as sal
from core.io import load_scan
from core.model import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run[0])


@pytest.fixture(scope="module")
def loaded64(loaded):
    """The same network computing in float64 (its weights cast up): SmoothGrad's comparisons run on it.

    SmoothGrad sums 20 input gradients through ReLUs. The compiled path takes the noisy copies in one batch,
    tf-keras-vis one at a time, eagerly; in float32, oneDNN may order a sum differently for the two, and where a
    pre-activation sits within a last bit of zero the ReLU passes the gradient on one path and not the other.
    On most models the maps come out bit for bit equal; a clean-clone run once met a freshly trained tiny model
    where 12% of the cells differed by up to 0.008. In float64 (plain Eigen kernels, no oneDNN) a pre-activation
    would have to sit within 1e-16 of zero for that: on six freshly trained tiny models the two paths agreed exactly.
    """
    import keras

    model = loaded.model

    def in_float64(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float64"})

    source = model.inputs[0]
    twin = keras.models.clone_model(model, clone_function=in_float64,
                                    input_tensors=keras.Input(source.shape[1:], dtype="float64", name=source.name))
    twin.set_weights([w.astype(np.float64) for w in model.get_weights()])
    return twin


def _compared(loaded, loaded64, method):
    """The model a comparison with tf-keras-vis runs on, and its tolerance on the [0, 1] map."""
    if method == "smoothgrad":
        return loaded64, 1e-5
    # Grad-CAM++ weighs by the gradient's second and third powers, which lifts last-bit differences between the
    # eager and the compiled float32 passes to about 1e-5 on its [0, 1] map (a clean-clone run once saw 1.1e-5 on
    # one cell of 64): 1e-4 there, still 40 times finer than one display level (1/255).
    return loaded.model, {"gradcam++": 1e-4}.get(method, 1e-5)


@pytest.fixture(scope="module")
def radiograph(fullres_dir):
    path = sorted((fullres_dir / "PNEUMONIA").glob("*.jpeg"))[0]
    return load_scan(path.read_bytes(), path.name)


@pytest.mark.parametrize("method,layer", [(m, "last_conv") for m in sal.METHODS]
                         + [(m, "conv2b") for m in sal.CAM_METHODS])
def test_compiled_map_equals_tf_keras_vis(loaded, loaded64, radiograph, method, layer):
    x = loaded.pipeline.scan_tensor(radiograph)
    layer = layer if method in sal.CAM_METHODS else None
    model, tolerance = _compared(loaded, loaded64, method)
    explainer = loaded.explainer if model is loaded.model else sal.Explainer(model)
    non_zero = 0
    for class_index in range(len(loaded.class_names)):
        # SmoothGrad: the same noise (both draw it from NumPy's global generator).
        np.random.seed(7)
        reference = sal.reference_map(model, x, method, class_index, layer)
        np.random.seed(7)
        fast = explainer.saliency(x, method, class_index, layer)
        assert fast.shape == reference.shape
        np.testing.assert_allclose(fast, reference, atol=tolerance)
        non_zero += float(reference.max()) > 0.5
    assert non_zero, "every map was empty: the comparison proved nothing"


def test_shared_model_keeps_its_softmax(loaded, radiograph):
    x = loaded.pipeline.scan_tensor(radiograph)
    before = loaded.predict(x)
    for method in sal.METHODS:
        loaded.explainer.saliency(x, method, 0, loaded.last_conv)
        sal.reference_map(loaded.model, x, method, 0, loaded.last_conv)
    np.testing.assert_allclose(loaded.predict(x), before, rtol=0, atol=0)
    assert loaded.model.layers[-1].activation.__name__ == "softmax"
    assert before.sum() == pytest.approx(1.0, abs=1e-5)


def test_explain_maps_the_tensor_the_model_received_to_the_scan(loaded, radiograph):
    x = loaded.pipeline.scan_tensor(radiograph)
    result = sal.explain(loaded, x, radiograph.shape, method="gradcam", class_index=1)
    assert result.layer == loaded.last_conv and result.raw.shape == (4, 4)  # 32 px input / 8
    np.testing.assert_array_equal(result.on_scan, sal.to_geometry(result.raw, radiograph.shape))
    assert result.on_scan.shape == radiograph.shape
    smooth = sal.explain(loaded, x, radiograph.shape, method="smoothgrad", class_index=1, layer="conv2b")
    assert smooth.layer is None and smooth.raw.shape == x.shape[1:3]


def test_unknown_method_is_refused(loaded, radiograph):
    with pytest.raises(ValueError, match="unknown method"):
        loaded.explainer.saliency(loaded.pipeline.scan_tensor(radiograph), "occlusion", 0)


@pytest.mark.parametrize("grid,shape", [((16, 16), (1955, 1841)), ((4, 4), (32, 32)), ((13, 7), (100, 301)),
                                         ((1, 5), (3, 9)), ((16, 16), (16, 40)), ((128, 128), (64, 64))])
def test_to_geometry_equals_skimage_resize(grid, shape):
    from skimage.transform import resize

    saliency = np.random.default_rng(0).random(grid).astype(np.float32)
    shrinking = grid[0] > shape[0] or grid[1] > shape[1]
    expected = np.clip(resize(saliency, shape, order=1, anti_aliasing=shrinking, preserve_range=True), 0, 1)
    np.testing.assert_allclose(sal.to_geometry(saliency, shape), expected, atol=1e-5)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "smoothgrad", "scorecam"])
def test_log_odds_maps_equal_tf_keras_vis_with_the_same_score(loaded, loaded64, radiograph, method):
    """``score="log-odds"``: the compiled map equals tf-keras-vis's own, given the same score function."""
    x = loaded.pipeline.scan_tensor(radiograph)
    model, tolerance = _compared(loaded, loaded64, method)
    explainer = sal.Explainer(model, score="log-odds")
    layer = "last_conv" if method in sal.CAM_METHODS else None
    for class_index in range(len(loaded.class_names)):
        np.random.seed(7)
        reference = sal.reference_map(model, x, method, class_index, layer, score_kind="log-odds")
        np.random.seed(7)
        fast = explainer.saliency(x, method, class_index, layer)
        np.testing.assert_allclose(fast, reference, atol=tolerance)


def test_log_odds_map_of_a_two_class_softmax_is_the_map_of_its_sigmoid_twin(loaded, radiograph):
    """With two classes the log-odds is ``z1 - z0``: the same network with one sigmoid output whose weights are
    the difference of the two softmax columns gives its class-1 probability exactly, and its Grad-CAM (a sigmoid's
    logit is already the log-odds) is the softmax model's log-odds Grad-CAM, for both classes; the logit map of
    class 1 is not (it also counts evidence that raises both logits). Score-CAM gives one map for either score."""
    import keras

    model = loaded.model
    dense = model.get_layer("predictions")
    w, b = dense.get_weights()
    twin_out = keras.layers.Dense(1, activation="sigmoid", name="twin")(dense.input)
    twin = keras.Model(model.input, twin_out)
    twin.get_layer("twin").set_weights([w[:, 1:] - w[:, :1], b[1:] - b[:1]])
    x = loaded.pipeline.scan_tensor(radiograph)
    p = model.predict(x, verbose=0)[0, 1]
    assert twin.predict(x, verbose=0)[0, 0] == pytest.approx(p, abs=1e-5)
    odds = sal.Explainer(model, score="log-odds")
    for class_index in (0, 1):
        np.testing.assert_allclose(odds.saliency(x, "gradcam", class_index),
                                   sal.Explainer(twin).saliency(x, "gradcam", class_index), atol=1e-5)
    logit = sal.Explainer(model).saliency(x, "gradcam", 1)
    assert np.abs(logit - odds.saliency(x, "gradcam", 1)).max() > 1e-3
    np.testing.assert_allclose(odds.saliency(x, "scorecam", 1), sal.Explainer(model).saliency(x, "scorecam", 1),
                               atol=1e-6)


def test_a_model_folder_can_say_what_its_maps_explain(loaded, radiograph):
    x = loaded.pipeline.scan_tensor(radiograph)
    assert loaded.map_score == "logit" and loaded.explainer.score == "logit"
    odds = loaded.with_map_score("log-odds")
    assert odds.model is loaded.model and odds.explainer.score == "log-odds" and loaded.map_score == "logit"
    np.testing.assert_allclose(odds.explainer.saliency(x, "gradcam", 1),
                               sal.Explainer(loaded.model, score="log-odds").saliency(x, "gradcam", 1), atol=1e-6)
    with pytest.raises(ValueError, match="unknown map score"):
        loaded.with_map_score("probability")


def test_reports_and_dicom_results_say_when_a_map_explains_the_log_odds(loaded, radiograph):
    """What a map explains travels with it: the report's method line and the DICOM results' method name."""
    from core.dicom_export import facts_for
    from core.report_content import content_for

    odds = loaded.with_map_score("log-odds")
    content = content_for(odds, radiograph, method="gradcam", methods=("gradcam", "scorecam"))
    assert content.method == "Grad-CAM (log-odds)"
    assert [name for name, *_ in content.methods] == ["Grad-CAM (log-odds)", "Faster Score-CAM"]
    x = loaded.pipeline.scan_tensor(radiograph)
    explanation = sal.explain(odds, x, radiograph.shape, method="gradcam", class_index=1)
    assert facts_for(odds, loaded.predict(x)[0], explanation).method_name == "Grad-CAM (log-odds)"
    assert facts_for(loaded, loaded.predict(x)[0], explanation).method_name == "Grad-CAM"
