"""The Lesson page, driven headlessly with AppTest on the real default models and the curated cases:
forward and back through every step of one case, the model-error case chosen by the model's actual
answers, the handout PDF, and the shortcut lesson (missing teaching model: one sentence; with a
stand-in copy of the chest model: every step, numbers recomputed with core)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.localisation import localisation_scores
from core.saliency import explain
from core.teaching import blurred_scan, lesson_cases, read_lesson
from page_support import is_one_sentence
from teaching_support import (
    button,
    case_mask,
    case_scan,
    check_clean,
    loaded_for,
    model_answers,
    samples,
    texts,
)
from ui.state import Keys

pytestmark = pytest.mark.slow

STEPS = ["The scan", "What the model receives", "The prediction", "Where the model looked",
         "How far to trust the map", "What to take away"]


def step_title(at) -> str:
    return at.subheader[0].value


def test_forward_and_back_through_every_step_of_an_outlined_case(teaching_env, models_root):
    at = teaching_env("lesson")
    check_clean(at)
    assert at.title[0].value == "Lesson" and "Not a diagnostic device" in at.caption[0].value
    at.selectbox(key=Keys.LESSON_CASE).set_value("brain-glioma").run()
    check_clean(at)
    key = next(c.sample for c in lesson_cases(read_lesson(), {k: v[1] for k, v in samples().items()},
                                              model_answers(models_root)) if c.slot == "brain-glioma")
    scan = case_scan(key)
    loaded = loaded_for(models_root, "brain_mri")
    predicted = loaded.decide(loaded.predict(loaded.pipeline.scan_tensor(scan))[0])
    for number, title in enumerate(STEPS):
        check_clean(at)
        assert step_title(at) == title
        assert f"Step {number + 1} of 6: {title}" in [p.proto.text for p in at.get("progress")][0]
        page = texts(at)
        if number == 0:
            assert "radiologists' outline" in at.toggle[0].label and "Label from the dataset: **glioma**" in page
            assert [c.proto.id.endswith("-lesson_scan") for c in at.get("plotly_chart")] == [True]
        elif number == 1:
            assert len(at.get("image")) >= 6 and "**(1, 128, 128, 1)**" in page
        elif number == 2:
            assert f"The model says **{loaded.class_names[predicted]}**" in page
        elif number == 3:
            assert "All maps ready." in [p.proto.text for p in at.get("progress")]
            assert {m.value for m in at.markdown} >= {"**Grad-CAM**", "**SmoothGrad**", "**Faster Score-CAM**"}
        elif number == 4:
            assert {"Faithfulness", "Uncertainty", "Sanity check"} <= {m.value.split("**")[1] for m in at.markdown
                                                                       if m.value.startswith("**")}
            table = at.dataframe[0].value
            assert list(table["Score"]) == ["Pointing game", "Energy inside the outline", "Rank accuracy", "Pixel AUROC"]
            # the page's pointing game is the project's, on the same map
            on_scan = explain(loaded, loaded.pipeline.scan_tensor(scan), scan.shape, method="gradcam",
                              class_index=predicted).on_scan
            expected = localisation_scores(on_scan, case_mask(key, scan.shape), spacing=scan.spacing)
            assert table["Grad-CAM"][0].startswith("hit" if expected["pointing_game"] == 1 else "miss")
            assert table["Grad-CAM"][1].startswith(f"{expected['energy']:.2f}")
        else:
            assert "Prepare this case as a PDF handout" in [b.label for b in at.button]
            assert "radiologists' outline" in page
        next_button = [b for b in at.button if b.label == "Next ▶"][0]
        assert next_button.disabled == (number == len(STEPS) - 1)
        if number < len(STEPS) - 1:
            next_button.click().run()
    for title in reversed(STEPS[:-1]):
        [b for b in at.button if b.label == "◀ Back"][-1].click().run()  # the bar under the step
        check_clean(at)
        assert step_title(at) == title
    assert [b for b in at.button if b.label == "◀ Back"][0].disabled


def test_the_model_error_case_is_one_the_model_really_gets_wrong(teaching_env, models_root):
    at = teaching_env("lesson")
    at.selectbox(key=Keys.LESSON_CASE).set_value("model-wrong").run()
    check_clean(at)
    answers = model_answers(models_root)
    truths = {k: v[1] for k, v in samples().items()}
    chosen = next(c for c in lesson_cases(read_lesson(), truths, answers) if c.slot == "model-wrong")
    candidates = next(slot["choose_from"] for slot in read_lesson()["cases"] if slot["id"] == "model-wrong")
    wrong_exists = any(not answers[k].correct(truths[k]) for k in candidates)
    if wrong_exists:
        assert not answers[chosen.sample].correct(truths[chosen.sample])
        assert not at.info  # no "every candidate is right" note
    else:
        assert is_one_sentence(at.info[0].value)
    [b for b in at.button if b.label == "Next ▶"][0].click().run()
    [b for b in at.button if b.label == "Next ▶"][0].click().run()
    verdict = "**wrong**" if wrong_exists else "**right**"
    assert f"the model is {verdict} on this case" in texts(at)


def test_the_fracture_case_walks_a_non_square_radiograph_with_its_outline_in_pixels(teaching_env, models_root):
    """The third use case in the lesson: an outlined fracture the fracture model gets right, shown at its own aspect
    ratio with no scale bar (a plain JPEG states no spacing), the threshold's rule on the prediction, and the outline
    scores of the Grad-CAM map in pixels, the project's own pointing game; the slot for a fracture error really
    holds one the model gets wrong."""
    answers = model_answers(models_root)
    truths = {k: v[1] for k, v in samples().items()}
    cases = {c.slot: c for c in lesson_cases(read_lesson(), truths, answers)}
    key = cases["fracture"].sample
    assert truths[key] == "fractured" and answers[key].correct("fractured")
    assert samples()[key][2] == "fracture" and samples()[key][3] is not None
    if "fracture-wrong" in cases:
        wrong = cases["fracture-wrong"].sample
        assert samples()[wrong][2] == "fracture" and not answers[wrong].correct(truths[wrong])
    scan = case_scan(key)
    assert scan.spacing is None and scan.shape[0] != scan.shape[1]
    loaded = loaded_for(models_root, "fracture")

    at = teaching_env("lesson")
    at.selectbox(key=Keys.LESSON_CASE).set_value("fracture").run()
    check_clean(at)
    page = texts(at)
    assert "Label from the dataset: **fractured**" in page and "so there is no scale bar" in page
    assert f"{scan.shape[1]} x {scan.shape[0]} pixels." in page
    for _ in range(2):
        button(at, "Next ▶").click().run()
    check_clean(at)
    assert "The model says **fractured**" in texts(at) and "the model is **right** on this case" in texts(at)
    for _ in range(2):
        button(at, "Next ▶").click().run()
    check_clean(at)
    assert step_title(at) == "How far to trust the map"
    table = at.dataframe[0].value
    on_scan = explain(loaded, loaded.pipeline.scan_tensor(scan), scan.shape, method="gradcam",
                      class_index=loaded.class_names.index("fractured")).on_scan
    expected = localisation_scores(on_scan, case_mask(key, scan.shape), spacing=None)
    assert table["Grad-CAM"][0].startswith("hit" if expected["pointing_game"] == 1 else "miss")
    assert table["Grad-CAM"][1].startswith(f"{expected['energy']:.2f}")


def test_the_cast_case_shows_a_fracture_through_plaster_and_says_why_it_is_there(teaching_env, models_root):
    """The cast lesson: the fracture seen through a forearm cast, the intro naming the shortcut with the figures of
    scripts/cast_check.py, and the case walked like any other to its map and the outline's scores."""
    answers = model_answers(models_root)
    truths = {k: v[1] for k, v in samples().items()}
    cases = {c.slot: c for c in lesson_cases(read_lesson(), truths, answers)}
    assert cases["fracture-cast"].sample == "samples/fracture/fractured_IMG0003785.jpg"
    at = teaching_env("lesson")
    at.selectbox(key=Keys.LESSON_CASE).set_value("fracture-cast").run()
    check_clean(at)
    page = texts(at)
    assert "forearm plaster cast" in page and "Label from the dataset: **fractured**" in page
    for _ in range(4):
        button(at, "Next ▶").click().run()
    check_clean(at)
    assert step_title(at) == "How far to trust the map"
    assert list(at.dataframe[0].value["Grad-CAM"])


def test_the_handout_is_a_pdf_of_the_case(teaching_env, media):
    at = teaching_env("lesson")
    at.session_state[Keys.LESSON_STEP] = {"chest-normal": 5}
    at.run()
    button(at, "Prepare this case as a PDF handout").click().run()
    check_clean(at)
    download = at.get("download_button")[0]
    assert download.proto.label == "Download the handout (PDF)"
    pdfs = [data for data in media().values() if data[:5] == b"%PDF-"]
    assert len(pdfs) == 1 and b"/Count 2" in pdfs[0]  # two A4 pages


@pytest.mark.parametrize(("variable", "lesson", "sentence"), [
    ("MEDXAI_SHORTCUT_MODEL", "The shortcut lesson", "not installed yet"),
    ("MEDXAI_RIM_MODEL", "The skull lesson", "not installed"),
])
def test_a_lesson_says_in_one_sentence_when_its_model_is_missing(teaching_env, tmp_path, monkeypatch, variable,
                                                                  lesson, sentence):
    monkeypatch.setenv(variable, str(tmp_path / "not-installed"))
    at = teaching_env("lesson")
    at.segmented_control(key=Keys.LESSON_KIND).set_value(lesson).run()
    check_clean(at)
    assert len(at.info) == 1 and is_one_sentence(at.info[0].value) and sentence in at.info[0].value
    assert not at.button or all(b.label not in ("Next ▶",) for b in at.button)


def test_the_shortcut_lesson_with_a_stand_in_teaching_model(teaching_env, stand_in_shortcut, models_root):
    at = teaching_env("lesson")
    at.segmented_control(key=Keys.LESSON_KIND).set_value("The shortcut lesson").run()
    check_clean(at)
    titles = ["Two chest models", "The same film, blurred", "What their maps show", "The deletion test",
              "What to take away"]
    teaching = loaded_for(stand_in_shortcut.parent, stand_in_shortcut.name)
    film = case_scan(read_lesson()["shortcut"]["choose_from"][0])
    for number, title in enumerate(titles):
        check_clean(at)
        assert step_title(at) == title
        if number == 1:
            blurred = blurred_scan(film, 4.0)
            p_blurred = teaching.predict(teaching.pipeline.scan_tensor(blurred))[0][1]
            table = at.dataframe[0].value
            assert list(table["Model"]) == ["Teaching model (old)", "Current default model"]
            assert table["P(PNEUMONIA), blurred"][0] == f"{p_blurred:.1%}"
            assert "sigma 4 pixels on a 224-pixel side" in texts(at)
        if number == 2:
            assert len(at.get("image")) >= 4
        if number == 3:
            charts = [c for c in at.get("plotly_chart") if "shortcut_curves" in c.proto.id]
            assert len(charts) == 2
            assert "deletion" in texts(at)
        if number < len(titles) - 1:
            [b for b in at.button if b.label == "Next ▶"][0].click().run()
    assert np.isfinite(p_blurred)


def test_the_skull_lesson_with_the_committed_rim_only_model(teaching_env, models_root):
    """The rim-only brain model (``assets/teaching/brain_mri_rim``, trained with ``train --rim-only 0.12``):
    what it receives has no brain in it, and its answers on the curated slices are the model's own."""
    from ui.teaching import rim_model_dir

    at = teaching_env("lesson")
    at.segmented_control(key=Keys.LESSON_KIND).set_value("The skull lesson").run()
    titles = ["A brain model that never sees the brain", "Its answers", "Where the default model looks",
              "The tumour filled in", "Every brain model we trained", "What to take away"]
    rim = loaded_for(rim_model_dir().parent, rim_model_dir().name)
    assert rim.pipeline.rim == 0.12 and rim.pipeline.head == 0.0
    brain = {k: v for k, v in samples().items() if v[1] in rim.class_names and k.startswith("samples/brain_mri/")}
    assert len(brain) >= 8
    for number, title in enumerate(titles):
        check_clean(at)
        assert step_title(at) == title
        page = texts(at)
        if number == 0:
            assert "never the brain" in page and "82.5%" in page
            pituitary = case_scan(next(k for k, v in brain.items() if v[1] == "pituitary"))
            seen = rim.pipeline.scan_trace(pituitary).model_image
            centre = seen[48:80, 48:80]  # the middle of the head, the sella's neighbourhood
            assert np.all(centre == centre.min())  # blacked out
        if number == 1:
            table = at.dataframe[0].value
            assert list(table.columns) == ["Slice", "True class", "Default brain model (whole slice)",
                                           "Rim-only model (no brain)"]
            for key, (_, truth, *_) in brain.items():
                scan = case_scan(key)
                predicted = rim.class_names[rim.decide(rim.predict(rim.pipeline.scan_tensor(scan))[0])]
                row = table[table["Slice"] == samples()[key][0].name].iloc[0]
                assert row["True class"] == truth
                assert row["Rim-only model (no brain)"].startswith("right" if predicted == truth else f"wrong, {predicted}")
        if number == 2:
            assert "Peak on the tumour (within 7 mm)" in [m.label for m in at.metric]
            (distance,) = [m.value for m in at.metric if m.label == "Peak to the outline"]
            on = [m.value for m in at.metric if m.label == "Peak on the tumour (within 7 mm)"][0] == "yes"
            assert distance.endswith(" mm")  # shown to the mm: a hit is at most 7, a miss at least 7 once rounded
            assert float(distance[:-3]) <= 7 if on else float(distance[:-3]) >= 7
        if number == 3:  # each outlined slice read as scanned, with its tumour filled in, and with a control
            from core.evaluation import outline_ablation
            from core.masks import load_mask

            default = loaded_for(models_root, "brain_mri")
            table = at.dataframe[0].value
            assert list(table.columns) == ["Slice", "True class", "As scanned", "Tumour filled in",
                                           "Same shape filled elsewhere"]
            outlined = {k: v for k, v in samples().items()
                        if v[2] == "brain_mri" and v[3] and v[1] in rim.class_names}
            assert len(table) == len(outlined) >= 3
            kept, right = 0, 0
            for key, (path, truth, _, mask_path, *_) in outlined.items():
                scan = case_scan(key)
                expected = outline_ablation(default, scan, load_mask(mask_path.read_bytes(), scan.shape),
                                            default.class_names.index(truth))
                row = table[table["Slice"] == path.name].iloc[0]
                assert row["Tumour filled in"] == (f"{'right' if expected['right_outline'] else 'wrong'} "
                                                   f"({expected['p_outline']:.0%})")
                right += expected["right_intact"]
                kept += expected["right_intact"] and expected["right_outline"]
            assert f"Of the {right} outlined slices" in page and f"on **{kept} of {right}** with the tumour gone" in page
        if number == 4:  # the project's brain runs measured against outlines, one dot each, the default a star
            from core.runs import list_runs

            runs = [r for r in list_runs(task="brain_mri") if r.localisation and r.finished]
            (chart,) = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if "skull_runs" in c.proto.id]
            assert sum(len(trace["x"]) for trace in chart["data"]) == len(runs) >= 10
            assert [t["customdata"][0][0] for t in chart["data"] if t["marker"]["symbol"] == "star"] == [
                "models/brain_mri"]
            lowest = min(r.localisation["pointing"] for r in runs)
            assert f"one of **{len(runs)}** brain models" in page and f"on {lowest:.0%} to" in page
            accurate = [r.localisation["pointing"] for r in runs if r.metrics["accuracy"] >= 0.95]
            assert f"Among the {len(accurate)} models right on at least 95%" in page
            assert f"tumour on {min(accurate):.0%} to {max(accurate):.0%}" in page
        if number < len(titles) - 1:
            [b for b in at.button if b.label == "Next ▶"][0].click().run()
    assert "The cure is data" in texts(at)


def test_the_metal_lesson_draws_a_plate_and_a_cast_and_counts_the_validation_films(teaching_env, models_root):
    """The fracture model reads an intact film, then the same film with a plate and with a cast drawn on it
    (``core.teaching.dressed_scan``): the probabilities shown are the model's own; the validation table is the
    model folder's metal and cast checks; the map's record closes the count."""
    from core.runs import read_localisation, record_sentence
    from core.teaching import dressed_scan

    at = teaching_env("lesson")
    at.segmented_control(key=Keys.LESSON_KIND).set_value("The metal lesson").run()
    titles = ["An intact limb film", "A plate and a cast drawn on it", "Where the maps point",
              "Over the validation films", "What to take away"]
    spec = read_lesson()["metal"]
    fracture = loaded_for(models_root, "fracture")
    positive = fracture.class_names.index("fractured")
    film = next(k for k in spec["choose_from"]
                if fracture.decide(fracture.predict(fracture.pipeline.scan_tensor(case_scan(k)))[0]) != positive)
    scan = case_scan(film)
    p = {label: float(fracture.predict(fracture.pipeline.scan_tensor(s))[0][positive])
         for label, s in (("as scanned", scan), ("with a plate drawn", dressed_scan(scan, "plate", spec["plate_seed"])),
                          ("with a cast drawn", dressed_scan(scan, "cast", spec["cast_seed"])))}
    for number, title in enumerate(titles):
        check_clean(at)
        assert step_title(at) == title
        page = texts(at)
        if number == 0:
            (shown,) = [m.value for m in at.metric if m.label == "P(fractured), as scanned"]
            assert shown == f"{p['as scanned']:.1%}" and "89 of the 91 films" in page
        if number in (1, 2):  # the three pictures' captions
            captions = " ".join(img.caption for element in at.get("image") for img in element.proto.imgs)
            for label, value in p.items():
                assert f"{label}: P(fractured) {value:.0%}" in captions, (label, captions)
        if number == 1:
            assert f"from {p['as scanned']:.0%} to {p['with a plate drawn']:.0%}" in page
        if number == 3:
            metal = json.loads((models_root / "fracture" / "metal_valid.json").read_text())["rows"]
            cast = json.loads((models_root / "fracture" / "cast_valid.json").read_text())["rows"]
            table = at.dataframe[0].value
            row = dict(zip(table["Films"], table["Called fractured"]))
            plate = metal["plate on the limb"]
            assert row["The same with a plate drawn on the limb"] == f"{plate['called_fractured']:.0%} of {plate['n']}"
            drawn = cast["intact films with a cast drawn"]
            assert row["Intact films with a cast drawn"] == f"{drawn['called_fractured']:.0%} of {drawn['n']}"
            # the reading under the table follows the rows: the shipped default reads drawn metal, the control not
            base, control = metal["as scanned"]["called_fractured"], metal["plate's shape at the limb's grey"]["called_fractured"]
            if plate["called_fractured"] - base >= 0.1 and control - base < (plate["called_fractured"] - base) / 2:
                assert (f"from {base:.0%} to {control:.0%}; the brightness of metal moves it to "
                        f"{plate['called_fractured']:.0%}") in page
            assert f"A drawn cast takes it to {drawn['called_fractured']:.0%}" in page
            said = record_sentence(read_localisation(models_root / "fracture"))
            assert said is None or said[1] in page
        if number < len(titles) - 1:
            [b for b in at.button if b.label == "Next ▶"][0].click().run()
    assert "Test for it on purpose" in texts(at)


def test_the_metal_lesson_without_the_models_checks_says_so_in_one_sentence(teaching_env, models_root, tmp_path,
                                                                            monkeypatch):
    """A fracture model folder without its metal and cast checks: step 4 is one sentence, the rest runs."""
    import shutil

    copy = tmp_path / "models"
    for task in ("chest_xray", "brain_mri", "fracture"):
        shutil.copytree(models_root / task, copy / task,
                        ignore=shutil.ignore_patterns("metal_valid.json", "cast_valid.json"))
    monkeypatch.setenv("MEDXAI_MODELS", str(copy))
    at = teaching_env("lesson")
    at.segmented_control(key=Keys.LESSON_KIND).set_value("The metal lesson").run()
    for _ in range(3):
        [b for b in at.button if b.label == "Next ▶"][0].click().run()
    check_clean(at)
    assert step_title(at) == "Over the validation films"
    assert len(at.info) == 1 and is_one_sentence(at.info[0].value) and "metal_valid.json" in at.info[0].value
