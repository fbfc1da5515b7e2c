"""core.explain's fast paths give what the slow ones gave.

The compiled maps equal tf-keras-vis's own (the reference) on a real radiograph and the
session's tiny model, and leave the shared model as it was; the map enlargement equals
skimage's resize; the PNG encoder is lossless; the tensor cache never mixes up two scans.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from core import explain as ex
from core.io import load_scan
from core.model import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run[0])


@pytest.fixture(scope="module")
def radiograph(fullres_dir):
    path = sorted((fullres_dir / "PNEUMONIA").glob("*.jpeg"))[0]
    return load_scan(path.read_bytes(), path.name)


@pytest.mark.parametrize("method,layer", [(m, "last_conv") for m in ex.METHODS]
                         + [(m, "conv2b") for m in ex.CAM_METHODS])
def test_compiled_map_equals_tf_keras_vis(loaded, radiograph, method, layer):
    x = loaded.pipeline.scan_tensor(radiograph)
    layer = layer if method in ex.CAM_METHODS else None
    # SmoothGrad: the same noise (both draw it from NumPy's global generator). The eager and the
    # compiled gradient differ in the last float bits, which ReLU gradients amplify a little.
    tolerance = 2e-3 if method == "smoothgrad" else 1e-5
    non_zero = 0
    for class_index in range(len(loaded.class_names)):
        np.random.seed(7)
        reference = ex.reference_map(loaded.model, x, method, class_index, layer)
        ex._CACHE.clear()
        np.random.seed(7)
        fast = ex.saliency_map(loaded.model, x, method, class_index, layer)
        assert fast.shape == reference.shape
        np.testing.assert_allclose(fast, reference, atol=tolerance)
        non_zero += float(reference.max()) > 0.5
    assert non_zero, "every map was empty: the comparison proved nothing"


def test_shared_model_keeps_its_softmax(loaded, radiograph):
    x = loaded.pipeline.scan_tensor(radiograph)
    before = loaded.predict(x)
    for method in ex.METHODS:
        ex._CACHE.clear()
        ex.saliency_map(loaded.model, x, method, 0, loaded.info["last_conv"])
    np.testing.assert_allclose(loaded.predict(x), before, rtol=0, atol=0)
    assert loaded.model.layers[-1].activation.__name__ == "softmax"
    assert before.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("grid,shape", [((16, 16), (1955, 1841)), ((4, 4), (32, 32)), ((13, 7), (100, 301)),
                                         ((1, 5), (3, 9)), ((16, 16), (16, 40))])
def test_to_geometry_equals_skimage_resize(grid, shape):
    from skimage.transform import resize

    saliency = np.random.default_rng(0).random(grid).astype(np.float32)
    expected = np.clip(resize(saliency, shape, order=1, anti_aliasing=False, preserve_range=True), 0, 1)
    np.testing.assert_allclose(ex.to_geometry(saliency, shape), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (64, 33, 3), (9, 4), (1, 12)])
def test_png_bytes_is_lossless(shape):
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = ex.png_bytes(pixels)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    with Image.open(io.BytesIO(data)) as image:
        assert image.info == {}  # no metadata
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_overlay_matches_its_formula():
    rng = np.random.default_rng(2)
    image, saliency = rng.random((40, 30), dtype=np.float32), rng.random((40, 30), dtype=np.float32)
    grey = np.repeat(image[..., None] * 255.0, 3, axis=-1)
    colour = ex.colormap_lut("Turbo")[(saliency * 255).astype(np.int32)].astype(np.float32)
    weight = 0.6 * np.where(saliency >= 0.3, saliency, 0.0)[..., None]
    expected = np.clip(grey * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(ex.overlay(image, saliency, opacity=0.6, threshold=0.3), expected)


def test_model_input_is_remembered_per_scan(loaded, radiograph):
    first = ex.model_input(loaded.pipeline, radiograph)
    assert ex.model_input(loaded.pipeline, radiograph) is first
    np.testing.assert_array_equal(first, loaded.pipeline.scan_tensor(radiograph))
    other = load_scan(ex.png_bytes((255 - radiograph.frames[0]).astype(np.uint8)), "other.png")
    assert not np.array_equal(ex.model_input(loaded.pipeline, other), first)
