"""The Explain page, driven headlessly with AppTest: prediction, saliency overlays in the scan's geometry."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import dicom_bytes
from core.render import display_image, overlay
from core.saliency import METHODS, explain
from core.io import load_scan
from page_support import (
    assert_clean,
    assert_image_geometry,
    caption_text,
    decode,
    figure,
    first_image,
    go,
    image_trace,
    loaded_model,
    markdown_text,
    png_bytes_of,
    upload,
    widget,
)
from ui.state import Keys

pytestmark = pytest.mark.slow


def shown_probabilities(at) -> tuple[list[str], np.ndarray]:
    bar = figure(at, "probabilities")["data"][0]
    return list(bar["y"]), decode(bar["x"]).astype(float)


def overlay_title(at) -> str:
    return figure(at, "overlay")["layout"]["title"]["text"]


def expected_overlay(loaded, scan, *, method="gradcam", class_index, frame=None, window=None, invert=None,
                     opacity=0.6, colormap="Turbo") -> np.ndarray:
    """What the page should draw, recomputed with core only; also checks the map's geometry."""
    tensor = loaded.pipeline.scan_tensor(scan, frame)
    result = explain(loaded, tensor, scan.shape, method=method, class_index=class_index)
    assert result.on_scan.shape == scan.shape
    voi = scan.voi if window is None else None
    background = display_image(scan.frame(frame), window or scan.window, scan.invert if invert is None else invert,
                               voi=voi)
    return overlay(background, result.on_scan, opacity=opacity, colormap=colormap)


def assert_same_picture(shown: np.ndarray, expected: np.ndarray) -> None:
    """The figure's (possibly downsampled) pixels match the full-resolution picture."""
    step = -(-expected.shape[0] // shown.shape[0])
    expected = expected[::step, ::step]
    assert shown.shape == expected.shape
    difference = np.abs(shown.astype(int) - expected.astype(int))
    # The page's model and this test's copy are separate loads of the same file: allow rounding.
    assert difference.max() <= 3 and difference.mean() < 0.05, (difference.max(), difference.mean())


def test_prediction_and_gradcam_overlay_of_a_radiograph(app, models_root):
    data = dicom_bytes("RG1_UNCI.dcm")
    go(upload(app, "RG1_UNCI.dcm", data), "explain")
    assert_clean(app)
    loaded = loaded_model(models_root)
    scan = load_scan(data)
    probabilities = loaded.predict(loaded.pipeline.scan_tensor(scan))[0]
    predicted = loaded.decide(probabilities)
    names = loaded.class_names

    shown_names, shown = shown_probabilities(app)
    assert shown_names == names
    np.testing.assert_allclose(shown, probabilities, atol=1e-5)
    assert f"Predicted: **{names[predicted]}**" in markdown_text(app)
    threshold = [s for s in figure(app, "probabilities")["layout"]["shapes"] if s["x0"] == s["x1"]]
    assert [s["x0"] for s in threshold] == [loaded.threshold]

    assert overlay_title(app) == f"Grad-CAM for {names[predicted]}, layer {loaded.info['last_conv']}"
    plain = assert_image_geometry(figure(app, "plain"), scan.shape)
    shown_overlay = assert_image_geometry(figure(app, "overlay"), scan.shape)
    assert plain.shape == shown_overlay.shape
    assert_same_picture(shown_overlay, expected_overlay(loaded, scan, class_index=predicted))
    assert "upsampled straight to the scan's 1841 x 1955 pixels" in caption_text(app)

    assert [image.captions for image in app.image] == [[title] for title in METHODS.values()]
    assert app.get("download_button")[0].proto.label == "Download overlay (PNG, scan resolution)"


def test_method_class_opacity_and_colours_can_be_changed(app, models_root):
    data = dicom_bytes("RG1_UNCI.dcm")
    go(upload(app, "RG1_UNCI.dcm", data), "explain")
    loaded = loaded_model(models_root)
    names = loaded.class_names
    predicted = widget(app.selectbox, "Explain class").value
    other = next(i for i in range(len(names)) if i != predicted)

    for method in ("layercam", "gradcam++", "smoothgrad"):  # every change counts
        app.radio[0].set_value(method)
        app.run()
        assert_clean(app)
        assert app.session_state[Keys.METHOD] == method
        assert overlay_title(app).startswith(f"{METHODS[method]} for {names[predicted]}")
    assert "layer" not in overlay_title(app)  # SmoothGrad is not tied to a layer

    app.radio[0].set_value("gradcam")
    widget(app.selectbox, "Explain class").set_value(other)
    widget(app.selectbox, "Colour map").set_value("Hot")
    app.run()
    assert_clean(app)
    assert overlay_title(app).startswith(f"Grad-CAM for {names[other]}")
    scan = load_scan(data)
    shown, _ = image_trace(figure(app, "overlay"))
    assert_same_picture(shown, expected_overlay(loaded, scan, class_index=other, colormap="Hot"))

    widget(app.slider, "Opacity").set_value(0.0)
    app.run()
    assert np.array_equal(image_trace(figure(app, "overlay"))[0], image_trace(figure(app, "plain"))[0])


def test_the_window_chosen_on_the_scan_page_is_the_background(app, models_root):
    data = dicom_bytes("CT_small.dcm")
    at = upload(app, "CT_small.dcm", data)
    widget(at.selectbox, "Window preset").set_value("Lung")
    at.run()
    go(at, "explain")
    assert_clean(at)
    scan = load_scan(data)
    plain = assert_image_geometry(figure(at, "plain"), scan.shape)
    assert np.array_equal(plain[..., 0], (display_image(scan.frame(0), (-600, 1500), False) * 255).astype(np.uint8))
    # The model still reads the header window: the display choice does not change the prediction.
    from core.model import load_model

    loaded = load_model(widget(at.selectbox, "Model").value)  # the model the page routed the scan to
    np.testing.assert_allclose(shown_probabilities(at)[1], loaded.predict(loaded.pipeline.scan_tensor(scan))[0],
                               atol=1e-5)


def test_png_overlay_keeps_the_scan_aspect_ratio(app, models_root, fullres_dir):
    data = png_bytes_of(first_image(fullres_dir / "NORMAL"))
    scan = load_scan(data, "xray.png")
    rows, cols = scan.shape
    assert abs(rows / cols - 1) > 0.1
    go(upload(app, "xray.png", data, "image/png"), "explain")
    assert_clean(app)
    shown = assert_image_geometry(figure(app, "overlay"), scan.shape)
    assert abs(shown.shape[1] / shown.shape[0] - cols / rows) < 0.01
    loaded = loaded_model(models_root)
    predicted = widget(app.selectbox, "Explain class").value
    assert_same_picture(shown, expected_overlay(loaded, scan, class_index=predicted))


def test_multiframe_scan_with_the_brain_model(app, models_root):
    data = dicom_bytes("emri_small.dcm")
    at = upload(app, "emri_small.dcm", data)
    widget(at.slider, "Frame").set_value(3)  # the third frame, index 2
    at.run()
    go(at, "explain")
    widget(at.selectbox, "Model").set_value(str(models_root / "brain_mri"))
    at.run()
    assert_clean(at)
    brain = loaded_model(models_root, "brain_mri")
    scan = load_scan(data)
    names, shown = shown_probabilities(at)
    assert names == brain.class_names and len(names) == 4
    np.testing.assert_allclose(shown, brain.predict(brain.pipeline.scan_tensor(scan, 2))[0], atol=1e-5)
    assert not [s for s in figure(at, "probabilities")["layout"].get("shapes", [])]  # no threshold: 4 classes
    predicted = widget(at.selectbox, "Explain class").value
    shown_overlay = assert_image_geometry(figure(at, "overlay"), scan.shape)
    assert_same_picture(shown_overlay, expected_overlay(brain, scan, class_index=predicted, frame=2))


def test_missing_model_folder_gives_one_clear_error(app, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDXAI_MODELS", str(tmp_path))
    go(app, "explain")
    assert not app.exception
    assert len(app.error) == 1
    assert app.error[0].value == f"No model is available: {tmp_path} holds no usable model folder."
    assert not app.get("plotly_chart")


def test_trust_scores_are_computed_once_per_map_not_on_every_rerun(app, models_root, monkeypatch):
    """Moving the opacity slider reruns the page; the map is unchanged, so its faithfulness
    curves (about 400 forward passes) and uncertainty must not be recomputed. A new class is a
    new map and is scored. The real functions run; the wrappers only count the calls."""
    import ui.trust_panel as panel

    calls = {"faithfulness": 0, "uncertainty": 0}
    real_faithfulness, real_tta = panel.faithfulness, panel.test_time_augmentation

    def counted_faithfulness(*args, **kwargs):
        calls["faithfulness"] += 1
        return real_faithfulness(*args, **kwargs)

    def counted_tta(*args, **kwargs):
        calls["uncertainty"] += 1
        return real_tta(*args, **kwargs)

    monkeypatch.setattr(panel, "faithfulness", counted_faithfulness)
    monkeypatch.setattr(panel, "test_time_augmentation", counted_tta)
    go(upload(app, "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm")), "explain")
    assert calls == {"faithfulness": 1, "uncertainty": 1}
    shown = markdown_text(app)
    for opacity in (0.3, 0.8):
        widget(app.slider, "Opacity").set_value(opacity)
        app.run()
        assert_clean(app)
    assert calls == {"faithfulness": 1, "uncertainty": 1}
    assert markdown_text(app) == shown  # the same scores, from memory

    names = loaded_model(models_root).class_names
    predicted = widget(app.selectbox, "Explain class").value
    widget(app.selectbox, "Explain class").set_value(next(i for i in range(len(names)) if i != predicted))
    app.run()
    assert_clean(app)
    assert calls["faithfulness"] == 2
