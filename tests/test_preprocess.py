"""core.preprocess: named steps, exact windowing, the trace, and no train/serve skew."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import dicom_bytes, dicom_path
from core.data import prepare_image
from core.io import load_scan
from core.preprocess import Pipeline, contrast, grayscale, invert, normalise, resize, window_level

STEP_NAMES = ["grayscale", "window", "invert", "resize", "contrast", "normalise"]


def test_step_names_and_order():
    steps = Pipeline(input_size=64).steps(window=(40.0, 400.0), invert_image=True)
    assert [name for name, _, _ in steps] == STEP_NAMES
    params = {name: p for name, _, p in steps}
    assert params["window"] == {"centre": 40.0, "width": 400.0}
    assert params["invert"] == {"enabled": True}
    assert params["resize"] == {"size": 64}
    assert params["normalise"] == {"mean": 0.5, "std": 0.25}


def test_window_level_is_exact_and_clips():
    values = np.array([-1000.0, -160.0, 40.0, 240.0, 3000.0], np.float32)
    out = window_level(values, centre=40, width=400)  # a CT soft-tissue window
    assert out.dtype == np.float32
    assert out.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert window_level(np.array([0.0, 63.75, 127.5, 255.0]), centre=127.5, width=255).tolist() == [0.0, 0.25, 0.5, 1.0]


@settings(max_examples=50, deadline=None)
@given(st.floats(-5000, 5000), st.floats(0, 10000), st.lists(st.floats(-1e5, 1e5), min_size=1, max_size=20))
def test_window_level_output_stays_in_unit_range(centre, width, values):
    out = window_level(np.array(values, np.float32), centre=centre, width=width)
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_invert_and_normalise():
    x = np.array([0.0, 0.25, 1.0], np.float32)
    assert invert(x, enabled=True).tolist() == [1.0, 0.75, 0.0]
    assert invert(x, enabled=False) is x
    assert normalise(x, mean=0.5, std=0.25).tolist() == [-2.0, -1.0, 2.0]


def test_grayscale_uses_luminance_and_passes_grey_through():
    rgb = np.zeros((2, 2, 3), np.float32)
    rgb[..., 0] = 100
    assert np.allclose(grayscale(rgb), 29.9)
    grey = np.ones((3, 4), np.float32)
    assert grayscale(grey) is grey or np.array_equal(grayscale(grey), grey)


@pytest.mark.parametrize("shape", [(1955, 1841), (224, 224), (5, 300), (32, 32)])
def test_resize_to_square_without_keeping_aspect(shape):
    image = np.linspace(0, 1, shape[0] * shape[1], dtype=np.float32).reshape(shape)
    out = resize(image, size=32)
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0


@pytest.mark.parametrize("shape", [(1955, 1841), (224, 224), (100, 300), (500, 20), (64, 64), (3, 3)])
def test_resize_equals_skimage_resize(shape):
    # resize runs skimage's own resize as two matrix products: the same values, far faster.
    from skimage.transform import resize as sk_resize

    image = (np.random.default_rng(0).random(shape) * 4000).astype(np.float32)
    shrinking = shape[0] > 128 or shape[1] > 128
    expected = sk_resize(image, (128, 128), order=1, anti_aliasing=shrinking, preserve_range=True)
    np.testing.assert_allclose(resize(image, size=128), expected, rtol=0, atol=4000 * 1e-6)


def test_contrast_clahe_and_unknown_method():
    image = np.tile(np.linspace(0.4, 0.6, 64, dtype=np.float32), (64, 1))
    assert contrast(image, method=None) is image
    enhanced = contrast(image, method="clahe")
    assert enhanced.shape == image.shape and enhanced.std() > image.std()
    with pytest.raises(ValueError, match="unknown contrast method"):
        contrast(image, method="gamma")


def test_trace_records_every_step_and_the_tensor():
    scan = load_scan(dicom_bytes("RG1_UNCI.dcm"), "RG1_UNCI.dcm")
    pipeline = Pipeline(input_size=64, contrast="clahe")
    trace = pipeline.scan_trace(scan)
    assert [s.name for s in trace.steps] == STEP_NAMES
    assert all(s.why and s.why.endswith(".") for s in trace.steps)
    by_name = {s.name: s for s in trace.steps}
    assert by_name["window"].params == {"centre": 15000.0, "width": 30000.0}
    assert by_name["invert"].params == {"enabled": True}  # MONOCHROME1
    assert by_name["grayscale"].output.shape == scan.shape
    assert by_name["window"].output.min() >= 0 and by_name["window"].output.max() <= 1
    assert np.array_equal(by_name["invert"].output, 1.0 - by_name["window"].output)
    assert by_name["resize"].output.shape == (64, 64)
    assert trace.tensor.shape == (1, 64, 64, 1) and trace.tensor.dtype == np.float32
    assert np.array_equal(trace.model_image, trace.steps[-1].output)
    assert np.array_equal(pipeline.scan_tensor(scan), trace.tensor)


def test_scan_trace_accepts_a_window_override():
    scan = load_scan(dicom_bytes("CT_small.dcm"), "CT_small.dcm")
    trace = Pipeline(input_size=32).scan_trace(scan, window=(40.0, 400.0))
    assert trace.steps[1].params == {"centre": 40.0, "width": 400.0}
    assert not np.array_equal(trace.tensor, Pipeline(input_size=32).scan_tensor(scan))


def test_pipeline_parameters_round_trip():
    pipeline = Pipeline(input_size=96, contrast="clahe", mean=0.4, std=0.2)
    assert Pipeline.from_dict(pipeline.to_dict()) == pipeline
    assert Pipeline.from_dict({"input_size": 96, "unrelated": 1}) == Pipeline(input_size=96)


@pytest.mark.parametrize("relative", [
    "chest_xray/train/NORMAL/IM-0115-0001.jpeg",
    "chest_xray/train/PNEUMONIA/person1000_bacteria_2931.jpeg",
    "chest_xray_fullres/PNEUMONIA/person276_virus_569.jpeg",  # an RGB original
    "chest_xray_fullres/NORMAL/IM-0206-0001.jpeg",
])
def test_training_and_inference_paths_give_identical_tensors(data_dir, relative):
    path = data_dir / relative
    pipeline = Pipeline(input_size=64)
    trained_on = prepare_image(path, pipeline)  # what core.data feeds the model in training
    upload = load_scan(path.read_bytes(), "upload.jpeg")  # what the dashboard does with an upload
    served = pipeline.scan_tensor(upload)
    assert served.shape == (1, 64, 64, 1)
    assert np.array_equal(served[0, ..., 0], trained_on)


def test_training_and_inference_paths_agree_on_dicom():
    pipeline = Pipeline(input_size=32)
    path = dicom_path("emri_small.dcm")
    served = pipeline.scan_tensor(load_scan(path.read_bytes()))
    assert np.array_equal(served[0, ..., 0], prepare_image(path, pipeline))
