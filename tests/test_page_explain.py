"""The Explain page, driven headlessly with AppTest: prediction, saliency overlays in the scan's geometry."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import dicom_bytes
from core.render import display_image, display_pixels, downsample, overlay
from core.saliency import METHODS, explain, to_geometry
from ui.figures import DISPLAY_SIDE
from core.io import load_scan
from core.predict import predict_tensors
from page_support import (
    DEFAULT_MODELS,
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
    """What the page should draw, recomputed with core only: the frame shrunk for the screen, windowed, and
    the map of the tensor the model received blended over it at that size; also checks the map's geometry."""
    tensor = loaded.pipeline.scan_tensor(scan, frame)
    result = explain(loaded, tensor, scan.shape, method=method, class_index=class_index)
    assert result.on_scan.shape == scan.shape
    voi = scan.voi if window is None else None
    shown = downsample(scan.frame(frame), DISPLAY_SIDE)
    background = display_pixels(shown, window or scan.window, scan.invert if invert is None else invert, voi=voi)
    return overlay(background, to_geometry(result.raw, background.shape), opacity=opacity, colormap=colormap)


def assert_same_picture(shown: np.ndarray, expected: np.ndarray) -> None:
    """The figure's pixels match the picture computed with core alone."""
    assert shown.shape == expected.shape
    difference = np.abs(shown.astype(int) - expected.astype(int))
    # The page's model and this test's copy are separate loads of the same file, and the page sends the map as a
    # layer the browser blends (alpha in 256 steps, core.render.heat_rgba): within a grey level or two of overlay().
    assert difference.max() <= 3 and difference.mean() < 0.5, (difference.max(), difference.mean())


def show_anyway(at) -> bool:
    """Press "show anyway" when the page leads with the scan being outside the model's range."""
    buttons = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
    if buttons:
        buttons[0].click().run()
        assert_clean(at)
    return bool(buttons)


def test_prediction_and_gradcam_overlay_of_a_radiograph(app, models_root):
    data = dicom_bytes("RG1_UNCI.dcm")
    go(upload(app, "RG1_UNCI.dcm", data), "explain")
    loaded = loaded_model(models_root)
    scan = load_scan(data)
    out_of_range = not predict_tensors(loaded, loaded.pipeline.scan_tensor(scan))[0].in_range
    if out_of_range:  # an adult radiograph for a paediatric model: said first, nothing else drawn
        assert len(app.error) == 1 and "looks unlike the images" in app.error[0].value
        assert not app.get("plotly_chart") and not any("Predicted" in m.value for m in app.markdown)
        assert show_anyway(app)
        assert any("looks unlike the images" in w.value for w in app.warning)
    assert_clean(app)
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

    assert not app.image  # the side-by-side view is computed only when it is shown
    assert app.get("download_button")[0].proto.label == "Download overlay (PNG, scan resolution, with legend)"
    app.segmented_control[0].set_value("All methods side by side").run()
    assert_clean(app)
    captions = [image.captions for image in app.image]
    assert captions[:-1] == [[title] for title in METHODS.values()]
    assert captions[-1][0].startswith("Colour scale of every map above (Turbo)")  # one shared colour bar under the grid


def test_method_class_opacity_and_colours_can_be_changed(app, models_root):
    data = dicom_bytes("RG1_UNCI.dcm")
    go(upload(app, "RG1_UNCI.dcm", data), "explain")
    show_anyway(app)
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

    # The map explains the class's log-odds against the others when asked: titled so, and drawn as core draws it.
    widget(app.slider, "Opacity").set_value(0.6)
    assert widget(app.selectbox, "Map explains").value == "logit"
    widget(app.selectbox, "Map explains").set_value("log-odds")
    app.run()
    assert_clean(app)
    assert overlay_title(app).startswith(f"Grad-CAM (log-odds) for {names[other]}")
    odds = loaded.with_map_score("log-odds")
    assert_same_picture(image_trace(figure(app, "overlay"))[0],
                        expected_overlay(odds, scan, class_index=other, colormap="Hot"))
    assert not np.array_equal(expected_overlay(odds, scan, class_index=other, colormap="Hot"),
                              expected_overlay(loaded, scan, class_index=other, colormap="Hot"))


def test_the_window_chosen_on_the_scan_page_is_the_background(app, models_root):
    data = dicom_bytes("CT_small.dcm")
    at = upload(app, "CT_small.dcm", data)
    widget(at.selectbox, "Window preset").set_value("Lung")
    at.run()
    go(at, "explain")
    show_anyway(at)  # a CT slice: no model here was trained on CT
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
    show_anyway(app)
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
    show_anyway(at)
    assert_clean(at)
    assert widget(at.slider, "Frame").value == 3  # the frame chosen on the Scan page, and a slider here too
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


def test_trust_scores_are_computed_when_asked_and_once_per_map(app, models_root, monkeypatch):
    """Faithfulness and uncertainty (about 400 forward passes) run when the person asks, once per map: moving
    the opacity slider reruns the view, the map is unchanged, and nothing is recomputed. A new class is a new
    map, scored when asked again. The real functions run; the wrappers only count the calls."""
    import ui.trust_panel as panel

    calls = {"faithfulness": 0, "uncertainty": 0}
    real_faithfulness, real_tta = panel.scored_faithfulness, panel.test_time_augmentation

    def counted_faithfulness(*args, **kwargs):
        calls["faithfulness"] += 1
        return real_faithfulness(*args, **kwargs)

    def counted_tta(*args, **kwargs):
        calls["uncertainty"] += 1
        return real_tta(*args, **kwargs)

    monkeypatch.setattr(panel, "scored_faithfulness", counted_faithfulness)
    monkeypatch.setattr(panel, "test_time_augmentation", counted_tta)
    go(upload(app, "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm")), "explain")
    show_anyway(app)
    assert calls == {"faithfulness": 0, "uncertainty": 0}  # nothing slow before it is asked for

    def score() -> None:
        (button,) = [b for b in app.button if b.label.startswith("Score this map")]
        button.click().run()
        assert_clean(app)

    score()
    assert calls == {"faithfulness": 1, "uncertainty": 1}
    shown = markdown_text(app)
    assert "Deletion" in shown or any("Deletion cannot judge" in i.value for i in app.info)
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
    assert calls["faithfulness"] == 1
    score()
    assert calls["faithfulness"] == 2


def pick_sample(at, text: str):
    options = widget(at.selectbox, "Pick a sample…").options
    (label,) = [o for o in options if text in o]
    widget(at.selectbox, "Pick a sample…").set_value(label)
    return at.run()


def green_pixels(picture: np.ndarray) -> np.ndarray:
    return (picture[..., 0] == 0) & (picture[..., 1] == 255) & (picture[..., 2] == 0)


def test_an_outlined_sample_shows_its_outline_and_localisation_scores(app, models_root):
    at = go(pick_sample(app, "figshare 2334"), "explain")
    show_anyway(at)
    assert_clean(at)
    outline_toggle = [t for t in at.toggle if t.label == "Expert outline"]
    assert outline_toggle and outline_toggle[0].value is True
    shown, _ = image_trace(figure(at, "overlay"))
    assert green_pixels(shown).sum() > 20  # the outline, drawn over the map
    table = at.dataframe[0].value
    assert list(table.iloc[:, 0]) == ["this map", "centre prior", "image intensity", "random smooth map"]
    assert "within 7 mm" in caption_text(at) and "0.49 x 0.49 mm" in caption_text(at)
    # this one slice's hit or miss beside the model's rate over the outlined slices it never saw (its folder's
    # explain-eval JSON), for the method, layer and score shown; absent where the model was never measured
    from core.runs import read_localisation

    measured = read_localisation(Path(models_root) / "brain_mri")
    rate = "its Grad-CAM peak lands on the outline on"
    if measured:
        assert (f"Over {measured['n']} outlined images this model never trained on, {rate} "
                f"**{measured['pointing']:.0%}**") in caption_text(at)
        assert f"a fixed blob in the image centre on {measured['centre']:.0%}" in caption_text(at)
    else:
        assert rate not in caption_text(at)
    # the ablation below it: the slice without its tumour, and a control region, with P(glioma) for each
    from core.evaluation import outline_ablation
    from core.masks import load_mask

    brain = loaded_model(models_root, "brain_mri")
    folder = Path("assets/samples/brain_mri")
    scan = load_scan((folder / "glioma_2334.jpg").read_bytes(), "glioma_2334.jpg")
    mask = load_mask((folder / "glioma_2334_outline.png").read_bytes(), scan.shape)
    expected = outline_ablation(brain, scan, mask, brain.class_names.index("glioma"))
    assert expected["p_control"] is not None
    assert any(m.value.startswith("**Does the prediction need the finding?**") for m in at.markdown)
    drop = expected["p_intact"] - expected["p_outline"]
    assert "Without the finding, P(glioma) " in caption_text(at)
    assert (f"falls by {drop:.2f}" in caption_text(at)) or (f"moves by {-drop:+.2f}" in caption_text(at)) or (
        round(abs(drop), 2) == 0 and "does not move (to two decimals)" in caption_text(at))
    assert "-0.00" not in caption_text(at)
    # with an outline, this slice's own scores stand in for the model's record (no separate note)
    assert not any(n.value.startswith("Where this model's maps point") for n in [*at.warning, *at.info])
    outline_toggle[0].set_value(False).run()
    assert not green_pixels(image_trace(figure(at, "overlay"))[0]).any()
    at.segmented_control[0].set_value("All methods side by side").run()
    assert_clean(at)
    methods_table = at.dataframe[0].value
    assert list(methods_table["method"])[:len(METHODS)] == list(METHODS.values())
    # the sample states its pixel size (0.49 mm), so each peak's distance from the outline is in mm
    assert all(float(d) >= 0 for d in methods_table["peak to outline (mm)"])


def test_a_scan_without_an_outline_carries_the_models_measured_map_record(app, models_root):
    """A film with no outline to check the map against: the page says how often this model's Grad-CAM landed on
    the experts' outlines where it was measured, as a warning when no more often than a centre blob (the shipped
    fracture default: 5 of 62 against the blob's 9); in the single view and side by side."""
    from core.runs import read_localisation, record_sentence

    said = record_sentence(read_localisation(Path(models_root) / "fracture"))
    at = go(pick_sample(app, "IMG0000013"), "explain")
    show_anyway(at)
    assert_clean(at)
    notes = [n.value for n in [*at.warning, *at.info] if n.value.startswith("Where this model's maps point")]
    if said is None:
        assert notes == []
        return
    below, text = said
    assert notes == [text]
    assert (text in [w.value for w in at.warning]) == below
    if Path(models_root) == DEFAULT_MODELS:  # the shipped default's record, as its card states it
        assert below and "No better than the blob" in text and "over 62 outlined images" in text
    at.segmented_control[0].set_value("All methods side by side").run()
    assert_clean(at)
    assert [n.value for n in [*at.warning, *at.info] if n.value.startswith("Where this model's maps point")] == [text]


@pytest.mark.parametrize("sample", ["IMG0003797", "IMG0003733", "IMG0004150", "IMG0003785"])
def test_an_outlined_sample_explains_the_outlined_class_whatever_the_model_predicts(app, models_root, sample):
    """With an expert outline the map to score against it is the outlined finding's class: "Explain class"
    starts on the sample's true label, and when the model predicts otherwise the page says which map it shows
    and how to see the predicted class's. (The shipped fracture model calls one of these two films not
    fractured and the other fractured, so both branches run.)"""
    from pathlib import Path

    at = go(pick_sample(app, sample), "explain")
    show_anyway(at)
    assert_clean(at)
    fracture = loaded_model(models_root, "fracture")
    names = fracture.class_names
    scan = load_scan((Path("assets/samples/fracture") / f"fractured_{sample}.jpg").read_bytes())
    predicted = fracture.decide(fracture.predict(fracture.pipeline.scan_tensor(scan))[0])
    assert widget(at.selectbox, "Explain class").value == names.index("fractured")
    assert overlay_title(at).startswith("Grad-CAM for fractured")
    said = "although the model predicts not_fractured" in caption_text(at)
    assert said == (predicted == 0)
    # the probabilities shown are the model's after undoing its class weights, and the caption says so
    assert "Probabilities put back on the training split's class shares" in caption_text(at)
    assert "-0.00" not in caption_text(at)  # the fill's effect, when it rounds to nothing, is said in words
    widget(at.selectbox, "Explain class").set_value(names.index("not_fractured")).run()
    assert_clean(at)
    assert overlay_title(at).startswith("Grad-CAM for not_fractured")
    assert "although the model predicts" not in caption_text(at)


def test_an_uploaded_outline_of_the_wrong_size_is_one_sentence(app):
    from PIL import Image
    import io

    at = go(upload(app, "CT_small.dcm", dicom_bytes("CT_small.dcm")), "explain")
    show_anyway(at)
    buffer = io.BytesIO()
    Image.new("L", (40, 30), 255).save(buffer, "PNG")
    at.file_uploader[0].set_value(("outline.png", buffer.getvalue(), "image/png")).run()
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("The outline cannot be used:") and "40 x 30" in errors[0]
    assert not at.exception


def test_an_uploaded_scan_with_its_uploaded_outline_gets_scores_and_baselines(app, data_dir):
    """A figshare slice and its radiologists' mask, both uploaded: the outline is drawn and scored."""
    source = data_dir / "brain_mri_masks"
    image, outline = source / "images" / "meningioma" / "9.jpg", source / "masks" / "meningioma" / "9.png"
    if not image.is_file():
        pytest.skip("the outlined brain slices are missing")
    at = go(upload(app, "9.jpg", image.read_bytes(), "image/jpeg"), "explain")
    show_anyway(at)
    assert_clean(at)
    assert not [t for t in at.toggle if t.label == "Expert outline"]  # nothing to draw before the mask
    (mask_uploader,) = [u for u in at.file_uploader if u.label.startswith("Outline of the finding")]
    mask_uploader.set_value(("9.png", outline.read_bytes(), "image/png")).run()
    assert_clean(at)
    assert not at.error
    assert [t.value for t in at.toggle if t.label == "Expert outline"] == [True]
    assert green_pixels(image_trace(figure(at, "overlay"))[0]).sum() > 20
    table = at.dataframe[0].value
    assert list(table.iloc[:, 0]) == ["this map", "centre prior", "image intensity", "random smooth map"]
    assert {"pointing game", "energy", "rank accuracy", "pixel AUROC"} <= set(table.columns)
    # how far each peak lies from the outline, in pixels for a JPEG (no pixel size); 0 exactly when the peak is on it
    # agreeing with the pointing game: a hit is a peak within the tolerance, 2% of the 512 x 512 slice's diagonal
    from PIL import Image

    tolerance = 0.02 * np.hypot(*Image.open(image).size)
    for distance, hit in zip(table["peak to outline (pixels)"], table["pointing game"]):
        if float(hit) in (0.0, 1.0):  # tied peaks score a share
            assert (float(distance) <= tolerance + 0.05) == (float(hit) == 1.0), (distance, hit, tolerance)
    # a JPEG states no pixel size: the tolerance falls back to a share of the image and says so
    assert "pixel spacing is unknown" in caption_text(at) and "baselines" in caption_text(at)


# ----------------------------------------------------------------------------- issue 13: the model follows the scan

def explain_page_prediction(at) -> str | None:
    """The class after "Predicted:", or None when the page shows no prediction."""
    import re

    found = [re.search(r"Predicted: \*\*(.+?)\*\*", m.value) for m in at.markdown]
    found = [m.group(1) for m in found if m]
    assert len(found) <= 1
    return found[0] if found else None


def routed_models(models_root):
    """The real default models with their outlier checks, or a skip (tiny models cannot route by fit)."""
    from core.model import load_model

    models = {task: load_model(models_root / task) for task in ("chest_xray", "brain_mri")}
    if any(loaded.outlier_threshold is None for loaded in models.values()):
        pytest.skip("the models in use have no outlier check (tiny models)")
    return models


def test_the_reason_for_the_model_says_whether_a_sample_is_one_of_its_cases(app):
    """The first sample, pydicom-data's adult chest radiograph, only shows the kind of scan the chest model reads
    (the outlier check may then find it unlike the children's films the model learned from); a curated chest film
    comes from the model's own dataset. The reason under the model picker says which, never both."""
    def reason(at):
        (why,) = [c for c in caption_text(at).splitlines() if c.startswith("Chosen for this scan:")]
        return why

    at = go(app, "explain")
    assert not at.exception
    assert "Chest X-ray" in reason(at) and reason(at).endswith("but is not from its dataset.")
    at = go(pick_sample(go(at, "scan"), "viral pneumonia"), "explain")
    assert_clean(at)
    assert "Chest X-ray" in reason(at) and reason(at).endswith("model's cases.")


def test_issue_13_sequence_chest_film_glioma_upload_then_chest_sample(app, models_root, data_dir):
    """As a new user did in issue 13: a chest film, then an uploaded glioma MRI (routed to the brain model, and
    the page says why), then the Chest X-ray sample again (back to the chest model, a chest class)."""
    models = routed_models(models_root)
    chest, brain = str(models_root / "chest_xray"), str(models_root / "brain_mri")
    chest_classes, brain_classes = set(models["chest_xray"].class_names), set(models["brain_mri"].class_names)

    at = go(pick_sample(app, "viral pneumonia"), "explain")
    assert_clean(at)
    assert widget(at.selectbox, "Model").value == chest
    assert "Chosen for this scan:" in caption_text(at)
    assert explain_page_prediction(at) in chest_classes

    glioma = sorted((data_dir / "brain_mri" / "Training" / "glioma").glob("*.jpg"))[0]
    at = go(upload(go(at, "scan"), glioma.name, glioma.read_bytes(), "image/jpeg"), "explain")
    assert not at.exception
    assert widget(at.selectbox, "Model").value == brain
    why = [c for c in caption_text(at).splitlines() if c.startswith("Chosen for this scan:")]
    assert why and "Brain MRI" in why[0] and "looks most like" in why[0]  # the page says why
    show_anyway(at)
    assert explain_page_prediction(at) in brain_classes

    at = go(pick_sample(go(at, "scan"), "viral pneumonia"), "explain")
    assert_clean(at)
    assert widget(at.selectbox, "Model").value == chest
    assert explain_page_prediction(at) in chest_classes  # never "notumor" for a chest film
    assert not brain_classes & set(shown_probabilities(at)[0])


def test_a_brain_slice_forced_on_the_chest_model_leads_with_one_sentence(app, models_root, data_dir):
    """Surely out of range: a glioma MRI with the chest model chosen by hand. The page leads with one sentence
    naming the model that fits; no prediction until "show anyway", then the prediction with the warning."""
    from page_support import is_one_sentence

    routed_models(models_root)
    chest = str(models_root / "chest_xray")
    glioma = sorted((data_dir / "brain_mri" / "Training" / "glioma").glob("*.jpg"))[0]
    at = go(upload(app, glioma.name, glioma.read_bytes(), "image/jpeg"), "explain")
    widget(at.selectbox, "Model").set_value(chest).run()
    assert not at.exception
    assert "Chosen by you." in caption_text(at)
    (error,) = at.error
    assert is_one_sentence(error.value) and "looks unlike the images the Chest X-ray" in error.value
    assert "Brain MRI" in caption_text(at)  # which model would fit
    assert explain_page_prediction(at) is None and not at.get("plotly_chart")
    assert not [s for s in at.selectbox if s.label == "Explain class"]

    assert show_anyway(at)
    assert widget(at.selectbox, "Model").value == chest
    assert explain_page_prediction(at) in set(loaded_model(models_root).class_names)
    assert any("looks unlike the images" in w.value for w in at.warning)
