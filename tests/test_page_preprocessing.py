"""The Preprocessing page, driven headlessly with AppTest: every step, and the exact model input."""

from __future__ import annotations

import pytest

from conftest import dicom_bytes
from core.io import load_scan
from page_support import (
    assert_clean,
    first_image,
    go,
    loaded_model,
    markdown_text,
    png_bytes_of,
    upload,
    widget,
)
from ui.models import model_folders

pytestmark = pytest.mark.slow

STEPS = ["grayscale", "window", "invert", "resize", "contrast", "normalise"]


def tensor_summary(tensor) -> str:
    return f"range **{float(tensor.min()):.4f} to {float(tensor.max()):.4f}**, mean {float(tensor.mean()):.4f}"


def test_every_step_and_the_exact_tensor_are_shown(app, models_root):
    data = dicom_bytes("RG1_UNCI.dcm")
    go(upload(app, "RG1_UNCI.dcm", data), "preprocessing")
    assert_clean(app)
    text = markdown_text(app)
    headings = ["**0. Input**"] + [f"**{i}. {name}**" for i, name in enumerate(STEPS, start=1)]
    positions = [text.find(h) for h in headings]
    assert -1 not in positions and positions == sorted(positions), positions
    assert len(app.image) == len(STEPS) + 2  # input, every step, the model input
    charts = {c.proto.id.rsplit("-", 1)[-1] for c in app.get("plotly_chart")}
    assert charts == {"hist_input"} | {f"hist_{name}" for name in STEPS}

    # The parameters are the header window and MONOCHROME1 inversion of this file.
    code = [c.value for c in app.code]
    assert "centre=15000.0, width=30000.0, voi=header window 15000 / 30000 (LINEAR)" in code
    assert "enabled=True" in code
    assert "after the DICOM modality LUT" in text

    loaded = loaded_model(models_root)
    size = loaded.pipeline.input_size
    tensor = loaded.pipeline.scan_tensor(load_scan(data))
    assert f"shape **(1, {size}, {size}, 1)**" in text
    assert tensor_summary(tensor) in text
    assert f"squashed from 1841 x 1955 px to {size} x {size}" in text
    assert app.get("download_button")[0].proto.label == "Download the tensor (.npy)"


def test_display_window_does_not_change_the_model_input(app, models_root):
    data = dicom_bytes("CT_small.dcm")
    at = upload(app, "CT_small.dcm", data)
    widget(at.selectbox, "Window preset").set_value("Lung")
    at.run()
    go(at, "preprocessing")
    assert_clean(at)
    tensor = loaded_model(models_root).pipeline.scan_tensor(load_scan(data))
    assert tensor_summary(tensor) in markdown_text(at)


def test_the_chosen_frame_is_the_one_prepared(app, models_root):
    data = dicom_bytes("emri_small.dcm")
    at = upload(app, "emri_small.dcm", data)
    widget(at.slider, "Frame").set_value(3)  # the third frame, index 2
    at.run()
    go(at, "preprocessing")
    assert_clean(at)
    text = markdown_text(at)
    assert "(frame 3 of 10)" in text
    pipeline = loaded_model(models_root).pipeline
    scan = load_scan(data)
    assert tensor_summary(pipeline.scan_tensor(scan, 2)) in text
    assert tensor_summary(pipeline.scan_tensor(scan, 5)) not in text


def test_png_and_model_choice(app, models_root, fullres_dir):
    data = png_bytes_of(first_image(fullres_dir / "PNEUMONIA"))
    scan = load_scan(data, "xray.png")
    go(upload(app, "xray.png", data, "image/png"), "preprocessing")
    assert_clean(app)
    rows, cols = scan.shape
    assert f"squashed from {cols} x {rows} px" in markdown_text(app)
    # a PNG has no modality LUT, and the input step does not pretend it had one
    assert "plain grey levels" in markdown_text(app) and "modality LUT" not in markdown_text(app)

    model = widget(app.selectbox, "Model")
    model.set_value(str(models_root / "brain_mri"))
    app.run()
    assert_clean(app)
    brain = loaded_model(models_root, "brain_mri")
    text = markdown_text(app)
    assert f"The **{brain.info.get('title', brain.task)}** model prepares **xray.png**" in text
    assert tensor_summary(brain.pipeline.scan_tensor(scan)) in text
    assert set(widget(app.selectbox, "Model").options) == {entry.title for entry in model_folders()}


def test_a_head_masked_model_shows_its_head_step(data_dir, head_masked_models, monkeypatch):
    """A brain model trained with ``--head-mask``: the page lists the step, says why, and shows the exact tensor."""
    from streamlit.testing.v1 import AppTest

    from core.model import load_model
    from page_support import APP

    folder = head_masked_models / "brain_mri"
    monkeypatch.setenv("MEDXAI_MODELS", str(head_masked_models))
    path = first_image(data_dir / "brain_mri" / "Training" / "meningioma")
    at = AppTest.from_file(str(APP), default_timeout=180)
    at.run()
    go(upload(at, path.name, path.read_bytes()), "preprocessing")
    assert_clean(at)
    text = markdown_text(at)
    steps = ["grayscale", "window", "invert", "resize", "head", "contrast", "normalise"]
    positions = [text.find(f"**{i}. {name}**") for i, name in enumerate(steps, start=1)]
    assert -1 not in positions and positions == sorted(positions), positions
    assert "blacked out" in text and "erode=0.12" in [c.value for c in at.code]
    loaded = load_model(folder)
    tensor = loaded.pipeline.scan_tensor(load_scan(path.read_bytes(), path.name))
    assert tensor_summary(tensor) in text
