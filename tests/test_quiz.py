"""Reader versus model: reproducible case sets, scoring on known answers, totals and the CSV."""

from __future__ import annotations

import csv
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from core.localisation import FALLBACK_FRACTION, pointing_game
from core.quiz import (CSV_COLUMNS, Case, QuizError, answers_csv, choose_cases, score_answer, session_score,
                       tolerance_rule)
from conftest import DATA_DIR


def one_sentence(err: Exception) -> str:
    text = str(err)
    assert text and "\n" not in text and text.endswith(".") and len(text) < 220, text
    assert "Traceback" not in text
    return text


def pool_of(n_per_tag: int = 6, error_every: int = 4) -> list[Case]:
    """A pool with three difficulty tags; every ``error_every``-th case the model gets wrong."""
    pool = []
    for i in range(3 * n_per_tag):
        tag = ("easy", "medium", "hard")[i % 3]
        wrong = i % error_every == error_every - 1
        pool.append(Case(f"case-{i:02d}", f"/samples/img{i}.jpg", "glioma",
                         "meningioma" if wrong else "glioma", 0.8, difficulty=tag))
    return pool


# --------------------------------------------------------------------------------- Case

def test_case_rejects_a_path_as_id_and_a_probability_out_of_range():
    with pytest.raises(QuizError) as err:
        Case("chest/NORMAL/IM-0001.jpeg", "x", "NORMAL", "NORMAL", 0.9)
    assert "case id" in one_sentence(err.value)
    with pytest.raises(QuizError) as err:
        Case("c1", "x", "NORMAL", "NORMAL", 1.5)
    assert "between 0 and 1" in one_sentence(err.value)
    assert Case("c1", "x", "NORMAL", "PNEUMONIA", 0.6).model_correct is False


# --------------------------------------------------------------------------------- choose_cases

def test_same_seed_same_cases_in_the_same_order_whatever_the_pool_order():
    pool = pool_of()
    first = choose_cases(pool, n=8, seed=42)
    assert choose_cases(list(reversed(pool)), n=8, seed=42) == first
    assert choose_cases(pool, n=8, seed=42) == first
    assert len({c.case_id for c in first}) == 8
    others = {tuple(c.case_id for c in choose_cases(pool, n=8, seed=s)) for s in range(10)}
    assert len(others) > 5  # the seed matters


def test_a_seed_gives_the_set_it_gave_when_this_test_was_written():
    # Pinned: a teacher who noted seed 2024 gets these cases next year too (the draw uses only
    # random.Random.random(), whose stream Python keeps stable across versions).
    chosen = [c.case_id for c in choose_cases(pool_of(), n=6, seed=2024)]
    assert chosen == PINNED_2024


PINNED_2024 = ['case-00', 'case-07', 'case-06', 'case-16', 'case-11', 'case-14']


def test_model_errors_are_always_included_and_the_first_case_is_a_model_success():
    pool = pool_of(n_per_tag=10, error_every=10)  # 3 errors among 30
    for seed in range(30):
        chosen = choose_cases(pool, n=5, seed=seed)
        assert any(not c.model_correct for c in chosen), seed
        assert chosen[0].model_correct
    chosen = choose_cases(pool, n=8, seed=1, include_model_errors=3)
    assert sum(not c.model_correct for c in chosen) == 3
    # a pool without errors still gives a set
    right = [c for c in pool if c.model_correct]
    assert all(c.model_correct for c in choose_cases(right, n=5, seed=3))


def test_difficulty_mix_is_respected_and_defaults_to_equal_shares():
    pool = pool_of(n_per_tag=10)
    counts = Counter(c.difficulty for c in choose_cases(pool, n=9, seed=5))
    assert counts == {"easy": 3, "medium": 3, "hard": 3}
    counts = Counter(c.difficulty for c in choose_cases(pool, n=8, seed=5, mix={"easy": 1, "medium": 2, "hard": 1}))
    assert counts == {"easy": 2, "medium": 4, "hard": 2}
    counts = Counter(c.difficulty for c in choose_cases(pool, n=6, seed=5, mix={"easy": 1, "hard": 0}))
    assert counts == {"easy": 6}
    # a tag with too few cases gives its share to the others
    few_hard = [c for c in pool if c.difficulty != "hard"] + [c for c in pool if c.difficulty == "hard"][:1]
    counts = Counter(c.difficulty for c in choose_cases(few_hard, n=9, seed=5))
    assert counts["hard"] == 1 and sum(counts.values()) == 9


def test_bad_case_set_requests_give_one_sentence():
    pool = pool_of()
    for kwargs, words in [({"n": 0, "seed": 1}, "between 1 and"), ({"n": 99, "seed": 1}, "between 1 and"),
                          ({"n": 3, "seed": "x"}, "seed"), ({"n": 3, "seed": 1, "mix": {"easy": -1}}, "mix")]:
        with pytest.raises(QuizError) as err:
            choose_cases(pool, **kwargs)
        assert words in one_sentence(err.value)
    with pytest.raises(QuizError) as err:
        choose_cases(pool + pool[:1], n=3, seed=1)
    assert "twice" in one_sentence(err.value)


# --------------------------------------------------------------------------------- score_answer

OUTLINED = Case("brain-01", "/samples/brain.jpg", "glioma", "glioma", 0.9, difficulty="easy", has_outline=True)


def square_mask(shape=(512, 512), top=200, left=200, size=50) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top:top + size, left:left + size] = True
    return mask


def test_click_on_the_outline_just_outside_within_tolerance_and_far_outside_with_spacing():
    mask = square_mask()  # rows/cols 200..249
    spacing = (0.5, 0.5)  # 7 mm = 14 pixels
    on = score_answer(OUTLINED, "glioma", (225, 225), mask, spacing=spacing, map_peak=(210, 240))
    assert on["click_hit"] is True and on["map_peak_hit"] is True and on["diagnosis_correct"] is True
    assert score_answer(OUTLINED, "glioma", (249 + 14, 225), mask, spacing=spacing)["click_hit"] is True
    assert score_answer(OUTLINED, "glioma", (249 + 15, 225), mask, spacing=spacing)["click_hit"] is False
    # diagonal from the corner (249, 249): 10 px and 10 px = 14.1 px = 7.07 mm, just outside
    assert score_answer(OUTLINED, "glioma", (259, 259), mask, spacing=spacing)["click_hit"] is False
    assert score_answer(OUTLINED, "glioma", (258, 258), mask, spacing=spacing)["click_hit"] is True
    far = score_answer(OUTLINED, "meningioma", (20, 480), mask, spacing=spacing, map_peak=(500, 10))
    assert far["click_hit"] is False and far["map_peak_hit"] is False and far["diagnosis_correct"] is False
    assert "7 mm" in far["tolerance"] and "14.0 x 14.0 pixels" in far["tolerance"]


def test_the_tolerance_follows_anisotropic_spacing():
    mask = square_mask()
    spacing = (0.5, 2.0)  # 7 mm = 14 rows or 3.5 columns
    assert score_answer(OUTLINED, "glioma", (225, 249 + 3), mask, spacing=spacing)["click_hit"] is True
    assert score_answer(OUTLINED, "glioma", (225, 249 + 4), mask, spacing=spacing)["click_hit"] is False
    assert score_answer(OUTLINED, "glioma", (249 + 14, 225), mask, spacing=spacing)["click_hit"] is True


def test_without_spacing_the_pointing_games_pixel_fallback_is_used():
    mask = square_mask()
    tolerance_px = FALLBACK_FRACTION * np.hypot(512, 512)  # 14.5 pixels on a 512 x 512 image
    assert int(tolerance_px) == 14
    assert score_answer(OUTLINED, "glioma", (249 + 14, 225), mask)["click_hit"] is True
    assert score_answer(OUTLINED, "glioma", (249 + 15, 225), mask)["click_hit"] is False
    assert "14.5 pixels" in tolerance_rule(mask.shape) and "spacing is unknown" in tolerance_rule(mask.shape)
    # a smaller image: fewer pixels (2% of a 181-pixel diagonal = 3.6 pixels)
    small = square_mask((128, 128), 50, 50, 10)
    assert score_answer(OUTLINED, "glioma", (59 + 3, 55), small)["click_hit"] is True
    assert score_answer(OUTLINED, "glioma", (59 + 4, 55), small)["click_hit"] is False


def test_a_click_is_judged_exactly_like_the_pointing_game_judges_a_map_peak():
    mask = square_mask((96, 80), 30, 20, 12)
    for spacing in (None, (0.5, 0.5), (0.5, 1.5)):
        outcomes = set()
        for point in [(0, 0), (41, 31), (47, 31), (49, 36), (36, 45), (50, 50), (95, 79)]:
            peak = np.zeros(mask.shape)
            peak[point] = 1.0
            expected = pointing_game(peak, mask, spacing=spacing) == 1.0
            assert score_answer(OUTLINED, "glioma", point, mask, spacing=spacing)["click_hit"] is expected
            outcomes.add(expected)
        assert outcomes == {True, False}, spacing


def test_scoring_on_a_real_expert_outline():
    index = DATA_DIR / "brain_mri_masks" / "index.csv"
    if not index.is_file():
        pytest.skip(f"outlined brain slices not found under {DATA_DIR}")
    row = next(csv.DictReader(index.open()))
    mask = np.asarray(Image.open(index.parent / row["mask"]).convert("L")) > 127
    case = Case("brain-real", row["image"], row["label"], row["label"], 0.7, has_outline=True)
    rows, cols = np.nonzero(mask)
    centre = (int(np.median(rows)), int(np.median(cols)))
    assert mask[centre]
    below = (rows.max() + 10, cols[rows == rows.max()][0])  # 10 px = 4.9 mm below the lowest outline pixel
    hit = score_answer(case, row["label"], below, mask, spacing=(0.49, 0.49), map_peak=centre)
    assert hit["click_hit"] is True and hit["map_peak_hit"] is True
    corner = (0, 0) if not mask[:40, :40].any() else (511, 511)
    assert score_answer(case, row["label"], corner, mask, spacing=(0.49, 0.49))["click_hit"] is False


def test_no_outline_means_localisation_is_not_scored_and_no_click_on_an_outline_is_a_miss():
    chest = Case("chest-01", "/samples/chest.jpeg", "NORMAL", "PNEUMONIA", 0.7)
    score = score_answer(chest, "NORMAL", (10, 10), None, map_peak=(5, 5))
    assert score["click_hit"] is None and score["map_peak_hit"] is None and score["tolerance"] is None
    assert score["diagnosis_correct"] and not score["model_correct"] and not score["agrees_with_model"]
    assert "image_ref" not in score and "/samples/" not in repr(score)
    missed = score_answer(OUTLINED, "glioma", None, square_mask())
    assert missed["click_hit"] is False and missed["map_peak_hit"] is None


def test_bad_masks_and_clicks_give_one_sentence():
    cases = [
        (dict(click=(1, 1), mask=np.zeros((8, 8, 3), bool)), "2-D"),
        (dict(click=(1, 1), mask=np.full((8, 8), 7, np.uint8)), "binary"),
        (dict(click=(1, 1), mask=np.zeros((8, 8), bool)), "empty"),
        (dict(click=(8, 1), mask=square_mask((8, 8), 2, 2, 2)), "outside"),
        (dict(click=("a", 1), mask=None), "pair"),
    ]
    for kwargs, words in cases:
        with pytest.raises(QuizError) as err:
            score_answer(OUTLINED, "glioma", kwargs["click"], kwargs["mask"])
        assert words in one_sentence(err.value)
    with pytest.raises(QuizError) as err:
        score_answer(OUTLINED, "glioma", (1, 1), square_mask(), spacing=(0, 1))
    assert "spacing" in one_sentence(err.value)
    with pytest.raises(QuizError) as err:
        score_answer(OUTLINED, "", (1, 1), None)
    assert "diagnosis" in one_sentence(err.value)
    # a 0/1 integer mask is accepted like a boolean one
    assert score_answer(OUTLINED, "glioma", (3, 3), square_mask((8, 8), 2, 2, 2).astype(np.uint8))["click_hit"]


# --------------------------------------------------------------------------------- totals and CSV

def known_session() -> list[dict]:
    mask = square_mask()
    right = Case("c-right", "/p/1.jpg", "glioma", "glioma", 0.9, has_outline=True)
    model_wrong = Case("c-model-wrong", "/p/2.jpg", "glioma", "pituitary", 0.6, has_outline=True)
    both_wrong = Case("c-both-wrong", "/p/3.jpg", "NORMAL", "PNEUMONIA", 0.55)
    return [
        score_answer(right, "glioma", (225, 225), mask, spacing=(0.5, 0.5), map_peak=(226, 226)),
        score_answer(model_wrong, "glioma", (10, 10), mask, spacing=(0.5, 0.5), map_peak=(400, 400)),
        score_answer(both_wrong, "PNEUMONIA", (30, 40), None),
    ]


def test_session_score_on_known_answers():
    total = session_score(known_session())
    assert total["cases"] == 3
    assert (total["student_correct"], total["model_correct"]) == (2, 1)
    assert total["student_accuracy"] == pytest.approx(2 / 3) and total["model_accuracy"] == pytest.approx(1 / 3)
    assert (total["outlined_cases"], total["click_hits"], total["click_hit_rate"]) == (2, 1, 0.5)
    assert (total["map_peak_scored"], total["map_peak_hits"]) == (2, 1)
    assert total["agreed_with_model"] == 2 and total["agreement"] == pytest.approx(2 / 3)
    assert total["both_wrong_cases"] == ["c-both-wrong"] and total["followed_wrong_model"] == 1
    empty = session_score([])
    assert empty["cases"] == 0 and empty["student_accuracy"] is None and empty["click_hit_rate"] is None


def test_csv_export_content_and_nothing_that_names_an_image():
    data = answers_csv(known_session(), nickname="Ada")
    text = data.decode("utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 3
    assert rows[0] == {"nickname": "Ada", "case_id": "c-right", "diagnosis": "glioma", "true_label": "glioma",
                       "diagnosis_correct": "yes", "click_row": "225", "click_col": "225", "click_hit": "yes",
                       "model_label": "glioma", "model_probability": "0.9000", "model_correct": "yes",
                       "map_peak_hit": "yes", "agrees_with_model": "yes"}
    assert rows[1]["click_hit"] == "no" and rows[1]["model_correct"] == "no" and rows[1]["map_peak_hit"] == "no"
    assert rows[2]["click_hit"] == "" and rows[2]["map_peak_hit"] == "" and rows[2]["click_row"] == "30"
    assert "/p/" not in text and ".jpg" not in text
    anonymous = list(csv.DictReader(io.StringIO(answers_csv(known_session()).decode())))
    assert {r["nickname"] for r in anonymous} == {""}
    # a spreadsheet must not run a nickname as a formula
    risky = list(csv.DictReader(io.StringIO(answers_csv(known_session()[:1], nickname="=HYPERLINK(1)").decode())))
    assert risky[0]["nickname"] == "'=HYPERLINK(1)"
