"""core/teaching.py: the committed case lists, choosing cases by the model's answers, the blurred film,
clicks in displayed coordinates, click heat maps. Real sample files; answers are given as records."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.quiz import choose_cases
from core.teaching import (
    LessonCase,
    ModelAnswer,
    TeachingError,
    blur_sigma,
    blurred_scan,
    click_heatmap,
    displayed_to_pixel,
    draw_marker,
    lesson_cases,
    map_peak,
    quiz_pool,
    read_lesson,
    read_quiz,
    shortcut_film,
)
from page_support import is_one_sentence
from teaching_support import case_scan, samples


def answer(predicted: str, p: float, other: str) -> ModelAnswer:
    return ModelAnswer(predicted, {predicted: p, other: 1 - p})


def test_the_committed_lists_name_real_samples_of_every_kind():
    known = samples()
    lesson, quiz = read_lesson(), read_quiz()
    for slot in lesson["cases"]:
        assert all(key in known for key in slot["choose_from"]), slot["id"]
    assert all(key in known for key in lesson["shortcut"]["choose_from"])
    assert {known[k][1] for k in lesson["shortcut"]["choose_from"]} == {"NORMAL"}
    assert all(case["sample"] in known for case in quiz["cases"])
    # a chest film of each class, an outlined slice of each tumour type, an outlined fracture, a slot for a model error
    firsts = {known[slot["choose_from"][0]][1] for slot in lesson["cases"] if slot["prefer"] == "right"}
    assert firsts >= {"NORMAL", "PNEUMONIA", "glioma", "meningioma", "pituitary", "fractured"}
    wrong = [slot for slot in lesson["cases"] if slot["prefer"] == "wrong"]
    assert wrong and all(known[k][3] is not None for k in wrong[0]["choose_from"][:6])  # outlined first
    assert {c["difficulty"] for c in quiz["cases"]} == {"easy", "medium", "hard"}


def test_lesson_slots_follow_the_models_actual_answers():
    truths = {"a": "glioma", "b": "glioma", "c": "glioma"}
    spec = {"cases": [{"id": "right", "prefer": "right", "choose_from": ["a", "b"]},
                      {"id": "wrong", "prefer": "wrong", "choose_from": ["a", "b", "c"]}]}
    answers = {"a": answer("glioma", 0.9, "meningioma"), "b": answer("meningioma", 0.7, "glioma"),
               "c": answer("meningioma", 0.8, "glioma")}
    right, wrong = lesson_cases(spec, truths, answers)
    assert (right.sample, right.model_correct, right.note) == ("a", True, None)
    assert (wrong.sample, wrong.model_correct, wrong.note) == ("b", False, None)
    # the same list under a model that gets b right: the error slot moves to c, computed, not written
    answers["b"] = answer("glioma", 0.6, "meningioma")
    assert lesson_cases(spec, truths, answers)[1].sample == "c"


def test_with_no_model_error_the_slot_shows_the_least_sure_case_and_says_so():
    truths = {"a": "NORMAL", "b": "NORMAL"}
    spec = {"cases": [{"id": "wrong", "prefer": "wrong", "choose_from": ["a", "b"]}]}
    answers = {"a": answer("NORMAL", 0.99, "PNEUMONIA"), "b": answer("NORMAL", 0.61, "PNEUMONIA")}
    (case,) = lesson_cases(spec, truths, answers)
    assert isinstance(case, LessonCase) and case.sample == "b" and case.model_correct
    assert is_one_sentence(case.note) and "61%" in case.note
    # a candidate without an answer (no model for its task) is skipped; a slot with none is left out
    assert lesson_cases(spec, truths, {}) == []


def test_quiz_pool_carries_the_answers_and_a_seed_always_includes_model_errors():
    known = samples()
    spec = read_quiz()
    truths = {k: v[1] for k, v in known.items()}
    answers = {}
    for i, case in enumerate(spec["cases"]):  # every third case "wrong"
        truth = truths[case["sample"]]
        answers[case["sample"]] = answer(truth if i % 3 else "other", 0.8, truth if not i % 3 else "other")
    pool = quiz_pool(spec, truths, answers, outlined={k for k, v in known.items() if v[3]})
    assert [c.case_id for c in pool] == [c["id"] for c in spec["cases"]]
    assert all(c.image_ref == s["sample"] for c, s in zip(pool, spec["cases"]))
    assert {c.has_outline for c in pool} == {True, False}
    chosen = choose_cases(pool, n=8, seed=2026)
    assert chosen == choose_cases(pool, n=8, seed=2026) and any(not c.model_correct for c in chosen)
    assert chosen[0].model_correct


def test_bad_case_lists_give_one_sentence(tmp_path):
    cases = [
        ("missing.json", None, "missing"),
        ("broken.json", "{", "not valid JSON"),
        ("empty.json", json.dumps({"cases": []}), "non-empty 'cases'"),
        ("path-id.json", json.dumps({"cases": [{"id": "a/b.jpg", "sample": "x"}]}), "not usable"),
        ("twice.json", json.dumps({"cases": [{"id": "a", "sample": "x"}, {"id": "a", "sample": "y"}]}), "twice"),
    ]
    for name, text, words in cases:
        path = tmp_path / name
        if text is not None:
            path.write_text(text)
        with pytest.raises(TeachingError) as err:
            read_quiz(path)
        assert words in str(err.value) and is_one_sentence(str(err.value)), str(err.value)
    path = tmp_path / "prefer.json"
    path.write_text(json.dumps({"cases": [{"id": "a", "prefer": "maybe", "choose_from": ["x"]}]}))
    with pytest.raises(TeachingError) as err:
        read_lesson(path)
    assert "'right' or 'wrong'" in str(err.value)


def test_blur_is_sigma_4_on_a_224_side_whatever_the_film_size():
    film = case_scan("samples/chest_xray/IM-0206-0001.jpeg")  # 1040 x 747
    assert blur_sigma(film.shape) == pytest.approx(4 * 747 / 224)
    soft = blurred_scan(film)
    assert soft.frames.shape == film.frames.shape and soft.window == film.window
    gradient = lambda frames: float(np.abs(np.diff(frames[0], axis=1)).mean())  # noqa: E731
    assert gradient(soft.frames) < 0.3 * gradient(film.frames)  # the fine edges are gone
    assert abs(float(soft.frames.mean()) - float(film.frames.mean())) < 1.0  # the brightness is not


def test_shortcut_film_prefers_one_whose_blur_flips_the_answer():
    assert shortcut_film(["a", "b", "c"], {"a": False, "b": True, "c": True}) == "b"
    assert shortcut_film(["a", "b"], {"a": False, "b": False}) == "a"
    assert shortcut_film(["a"], {}) is None


def test_a_click_on_the_displayed_picture_lands_on_the_scans_pixel():
    shape = (512, 512)
    assert displayed_to_pixel({"x": 0, "y": 0, "width": 640, "height": 640}, shape) == (0, 0)
    assert displayed_to_pixel({"x": 639.9, "y": 639.9, "width": 640, "height": 640}, shape) == (511, 511)
    assert displayed_to_pixel({"x": 320, "y": 160, "width": 640, "height": 640}, shape) == (128, 256)
    # a landscape film shown 720 wide: rows and columns scale separately, clicks on the border stay inside
    assert displayed_to_pixel({"x": 720, "y": 517.2, "width": 720, "height": 517.2}, (747, 1040)) == (746, 1039)
    for bad in ({}, {"x": 1, "y": 1, "width": 0, "height": 5}, {"x": "a", "y": 1, "width": 5, "height": 5}):
        with pytest.raises(TeachingError) as err:
            displayed_to_pixel(bad, shape)
        assert is_one_sentence(str(err.value))


def test_click_heatmap_and_markers():
    heat = click_heatmap([(200, 100), (204, 96), (30, 400)], (256, 256), scale=2.0)
    assert heat.shape == (256, 256) and float(heat.max()) == 1.0
    assert abs(map_peak(heat)[0] - 101) <= 2 and abs(map_peak(heat)[1] - 49) <= 2  # the two close clicks
    assert not click_heatmap([], (8, 8)).any()
    marked = draw_marker(np.zeros((50, 50, 3), np.uint8), (25, 25), colour=(1, 2, 3), radius=8)
    assert marked[25, 25].tolist() == [1, 2, 3] and marked[25, 33].tolist() == [1, 2, 3]
    assert marked[0, 0].tolist() == [0, 0, 0]
