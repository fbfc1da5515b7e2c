"""The Quiz page on its own, driven with AppTest on the real default models and curated cases: the
teacher's seed gives the set core.quiz chooses, a click set through the image component's session
value is scored on the scan's own pixels, the reveal, the running score, and the CSV download, which
holds the answers and nothing that names an image, a file or a person; nothing is written to disk."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from scipy import ndimage

from core.quiz import CSV_COLUMNS, answers_csv, choose_cases, score_answer
from core.saliency import explain
from core.teaching import map_peak, quiz_pool, read_quiz
from teaching_support import (
    button,
    case_mask,
    case_scan,
    check_clean,
    displayed_click,
    loaded_for,
    metrics,
    model_answers,
    samples,
    texts,
)
from ui.state import Keys

pytestmark = pytest.mark.slow


def pool(models_root):
    known = samples()
    return quiz_pool(read_quiz(), {k: v[1] for k, v in known.items()}, model_answers(models_root),
                     outlined={k for k, v in known.items() if v[3]})


def answer_case(at, case_id: str, diagnosis: str, click: dict | None):
    """Click (through the component's session value), pick a diagnosis, submit."""
    context = at.session_state[Keys.QUIZ_SET]["context"]
    if click is not None:
        at.session_state[f"{Keys.QUIZ_CLICK}_{context}_{case_id}"] = click
        at.run()
    at.radio(key=f"{Keys.QUIZ_DIAGNOSIS}_{context}_{case_id}").set_value(diagnosis).run()
    button(at, "Submit my read").click().run()
    check_clean(at)


def test_the_seed_gives_the_set_core_quiz_chooses(teaching_env, models_root):
    at = teaching_env("quiz")
    check_clean(at)
    assert at.title[0].value == "Quiz: reader versus model" and "Not a diagnostic device" in at.caption[0].value
    at.slider(key=Keys.QUIZ_COUNT).set_value(6)
    at.number_input(key=Keys.QUIZ_SEED).set_value(41)
    button(at, "Start the quiz").click().run()
    check_clean(at)
    expected = [c.case_id for c in choose_cases(pool(models_root), n=6, seed=41)]
    assert at.session_state[Keys.QUIZ_SET]["ids"] == expected
    assert "**Case 1 of 6**" in texts(at)
    assert metrics(at)["Cases answered"] == "0 of 6"


def test_a_click_is_scored_on_the_scans_pixels_then_revealed_and_exported(teaching_env, models_root, media, capfd):
    at = teaching_env("quiz")
    ids = ["brain-01", "chest-03"]  # an outlined slice, then a film without outline
    at.session_state[Keys.QUIZ_SET] = {"context": "alone-test", "ids": ids, "seed": 0}
    at.run()
    check_clean(at)
    brain_key = "samples/brain_mri/glioma_2334.jpg"
    scan = case_scan(brain_key)
    mask = case_mask(brain_key, scan.shape)
    row, col = (int(round(v)) for v in ndimage.center_of_mass(mask))
    assert mask[row, col]
    answer_case(at, "brain-01", "glioma", displayed_click(row, col, scan.shape))
    # the reveal: scored exactly as core.quiz scores it, on the scan's own (row, col)
    loaded = loaded_for(models_root, "brain_mri")
    case = next(c for c in pool(models_root) if c.case_id == "brain-01")
    on_scan = explain(loaded, loaded.pipeline.scan_tensor(scan), scan.shape, method="gradcam",
                      class_index=loaded.class_names.index(case.model_label)).on_scan
    expected = score_answer(case, "glioma", (row, col), mask, spacing=scan.spacing, map_peak=map_peak(on_scan))
    stored = dict(at.session_state[Keys.QUIZ_ANSWERS]["alone-test"]["brain-01"])
    # (the page predicts the curated cases in one batch: the same probability to rounding)
    assert stored.pop("model_probability") == pytest.approx(expected.pop("model_probability"), abs=1e-6)
    assert stored == expected and stored["click"] == (row, col) and stored["click_hit"] is True
    page = texts(at)
    assert "the reveal** · the truth is **Glioma**" in page
    assert ":green[:material/check_circle: on it]" in page  # the click on the outline
    assert "within 7 mm" in page
    assert metrics(at)["Your clicks on the outline"] == "1 of 1"
    assert metrics(at)["Your diagnoses right"] == "1 of 1"

    button(at, "Next case ▶").click().run()
    assert "**Case 2 of 2**" in texts(at)
    answer_case(at, "chest-03", "NORMAL", None)  # the truth is PNEUMONIA
    assert "only the diagnosis is scored" in texts(at)
    button(at, "See my results ▶").click().run()
    check_clean(at)
    assert at.subheader[0].value == "Your results"
    assert metrics(at)["Your diagnoses right"] == "1 of 2"
    download = at.get("download_button")[0]
    assert download.proto.label == "Download my results (CSV)"
    answers = at.session_state[Keys.QUIZ_ANSWERS]["alone-test"]
    expected_csv = answers_csv([answers[i] for i in ids])
    csvs = [data for data in media().values() if data.startswith(",".join(CSV_COLUMNS).encode())]
    assert csvs == [expected_csv]
    rows = list(csv.DictReader(io.StringIO(expected_csv.decode())))
    assert [(r["case_id"], r["diagnosis"], r["click_row"], r["click_hit"]) for r in rows] == [
        ("brain-01", "glioma", str(row), "yes"), ("chest-03", "NORMAL", "", "")]
    # privacy: the CSV names no image, file, folder or person
    for key, (path, *_rest) in samples().items():
        for text in (key, path.name, path.stem, str(path.parent)):
            assert text.encode() not in expected_csv, text
    assert b".jp" not in expected_csv and b"samples" not in expected_csv
    out, err = capfd.readouterr()
    assert "glioma" not in out + err  # the answers are not logged either


def test_answers_alone_are_never_written_to_disk(teaching_env, tmp_path, monkeypatch):
    """The privacy test's audit hook records every file opened for writing while a student answers."""
    import test_privacy

    at = teaching_env("quiz")
    at.session_state[Keys.QUIZ_SET] = {"context": "alone-disk", "ids": ["brain-03"], "seed": 0}
    at.run()
    scan = case_scan("samples/brain_mri/meningioma_564.jpg")
    writes: list[str] = []
    monkeypatch.setattr(test_privacy, "_WRITES", writes)
    answer_case(at, "brain-03", "meningioma", displayed_click(200, 220, scan.shape))
    button(at, "See my results ▶").click().run()
    monkeypatch.setattr(test_privacy, "_WRITES", None)
    written = [p for p in test_privacy.written_files(writes) if not test_privacy.generated_code(p)]
    assert written == []
    assert at.session_state[Keys.QUIZ_ANSWERS]["alone-disk"]["brain-03"]["click"] == (200, 220)
    assert np.isfinite(at.session_state[Keys.QUIZ_ANSWERS]["alone-disk"]["brain-03"]["model_probability"])
