"""Reader versus model: choose a teaching set of cases and score a student's read beside the model's.

A student sees a case, picks a diagnosis and clicks where they would look; then the model's answer,
its map and the expert outline are revealed. This module is the pure part of that: which cases a
teacher's seed picks, whether the diagnosis and the click were right, whether the model's answer
and its map's peak were, the running totals and the CSV a student can download. No database, no
images: a :class:`Case` only names its image, and an outline mask is passed in at scoring time.

Localisation is the project's pointing game (:func:`core.localisation.pointing_game`, which this
module calls): a click or a map peak is a hit when it lies on the expert outline grown by
``tolerance_mm`` (default 7 mm), measured with the pixel spacing when it is known; without a
spacing the tolerance is 2% of the image diagonal (14.5 pixels on a 512 x 512 slice).

Example
-------
>>> import numpy as np
>>> case = Case("brain-01", "brain_mri_masks/images/glioma/1.jpg", "glioma", "glioma", 0.91,
...             difficulty="easy", has_outline=True)
>>> mask = np.zeros((64, 64), bool); mask[20:30, 20:30] = True
>>> score = score_answer(case, "glioma", (25, 25), mask, spacing=(0.5, 0.5), map_peak=(60, 60))
>>> score["diagnosis_correct"], score["click_hit"], score["map_peak_hit"]
(True, True, False)
"""

from __future__ import annotations

import csv
import io
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.localisation import FALLBACK_FRACTION, Tolerance, pointing_game, pointing_tolerance

#: Case ids are short neutral labels chosen by whoever curates the set (``brain-07``), not file
#: paths: they are stored in class databases and written to CSV files.
CASE_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_TOLERANCE_MM = 7.0
#: The CSV columns, in order. Nothing here names an image, a file or a person.
CSV_COLUMNS = (
    "nickname", "case_id", "diagnosis", "true_label", "diagnosis_correct", "click_row", "click_col",
    "click_hit", "model_label", "model_probability", "model_correct", "map_peak_hit",
    "agrees_with_model",
)


class QuizError(ValueError):
    """A case set or an answer that cannot be scored; ``str(err)`` is one sentence for the user."""


@dataclass(frozen=True)
class Case:
    """One teaching case: what the image is, what the model said, and how hard it is.

    Attributes
    ----------
    case_id : str
        Short neutral label (letters, digits, ``.``, ``_``, ``-``; at most 64), e.g. ``"chest-03"``.
    image_ref : str
        Where the page finds the image (a sample id or a path on the server). Never scored,
        never stored in a class, never written to the CSV.
    true_label, model_label : str
        The truth and the model's predicted class name.
    model_probability : float
        The model's probability for ``model_label``, in [0, 1].
    difficulty : str
        A tag such as ``"easy"``, ``"medium"`` or ``"hard"``; :func:`choose_cases` mixes the tags.
    has_outline : bool
        Whether an expert outline exists (the mask itself is passed to :func:`score_answer`).

    Example
    -------
    >>> Case("chest-01", "chest_xray/train/NORMAL/IM-0115-0001.jpeg", "NORMAL", "PNEUMONIA", 0.8,
    ...      difficulty="hard").model_correct
    False
    """

    case_id: str
    image_ref: str
    true_label: str
    model_label: str
    model_probability: float
    difficulty: str = "medium"
    has_outline: bool = False

    def __post_init__(self):
        if not isinstance(self.case_id, str) or not CASE_ID_PATTERN.fullmatch(self.case_id):
            raise QuizError(f"The case id {self.case_id!r} is not usable; use up to 64 letters, digits, "
                            "'.', '_' or '-', starting with a letter or digit (like 'brain-07').")
        if not 0.0 <= float(self.model_probability) <= 1.0:
            raise QuizError(f"Case {self.case_id} has a model probability of {self.model_probability}; "
                            "it must lie between 0 and 1.")
        if not str(self.difficulty).strip():
            raise QuizError(f"Case {self.case_id} has no difficulty tag; give one such as 'easy' or 'hard'.")

    @property
    def model_correct(self) -> bool:
        """Whether the model's predicted label is the true label."""
        return self.model_label == self.true_label


# --------------------------------------------------------------------------------- case sets

def _shuffled(items: Sequence, rng: random.Random) -> list:
    """Fisher-Yates with ``rng.random()`` only: Python promises that stream stays the same for a
    given seed across versions (``random.shuffle``'s draws are not promised), so a teacher's seed
    gives the same cases next year."""
    items = list(items)
    for i in range(len(items) - 1, 0, -1):
        j = int(rng.random() * (i + 1))
        items[i], items[j] = items[j], items[i]
    return items


def _quotas(n: int, weights: Mapping[str, float], available: Mapping[str, int]) -> dict[str, int]:
    """Split ``n`` cases over difficulty tags in proportion to ``weights`` (Sainte-Laguë), never
    more than a tag has; tags are visited in sorted order so ties break the same way every time."""
    quotas = {tag: 0 for tag in weights}
    for _ in range(n):
        open_tags = [t for t in sorted(weights) if weights[t] > 0 and quotas[t] < available.get(t, 0)]
        best = max(open_tags, key=lambda t: weights[t] / (quotas[t] + 0.5))
        quotas[best] += 1
    return quotas


def choose_cases(pool: Sequence[Case], *, n: int, seed: int, include_model_errors: int | None = None,
                 mix: Mapping[str, float] | None = None) -> list[Case]:
    """A reproducible teaching set: mixed difficulty, always with cases the model gets wrong.

    The set depends only on the pool's cases (not their order), ``n``, ``seed`` and ``mix``: the
    same arguments give the same cases in the same order on any machine. The first case is one the
    model gets right when the set has one, so students have met a correct model before it fails
    them (automation bias is the lesson).

    Parameters
    ----------
    pool : sequence of Case
        Candidate cases; case ids must be unique.
    n : int
        How many cases, 1 to ``len(pool)`` (within the tags ``mix`` allows).
    seed : int
        The teacher's seed; show it on screen so the set can be given again.
    include_model_errors : int or None
        At least this many cases the model gets wrong, as far as the pool (within ``mix``) has
        them. None: about one in four of ``n``, at least one. 0 forces none (they may still occur).
    mix : mapping of difficulty tag to weight, or None
        Relative share of each tag, e.g. ``{"easy": 1, "medium": 2, "hard": 1}``; a tag with weight
        0 is left out. None: equal shares of every tag in the pool. A tag with too few cases gives
        its share to the others.

    Returns
    -------
    list of Case, length ``n``.

    Example
    -------
    >>> pool = [Case(f"c{i}", f"img{i}", "a", "a" if i % 3 else "b", 0.9, difficulty=d)
    ...         for i, d in enumerate(["easy", "hard"] * 6)]
    >>> chosen = choose_cases(pool, n=4, seed=7)
    >>> chosen == choose_cases(pool[::-1], n=4, seed=7), any(not c.model_correct for c in chosen)
    (True, True)
    """
    pool = sorted(pool, key=lambda case: case.case_id)
    ids = [case.case_id for case in pool]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise QuizError(f"The case id {duplicate} appears twice in the pool; give every case its own id.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise QuizError(f"The seed must be a whole number, not {seed!r}.")
    available = {}
    for case in pool:
        available[case.difficulty] = available.get(case.difficulty, 0) + 1
    weights = {tag: 1.0 for tag in available} if mix is None else {t: float(w) for t, w in mix.items()}
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise QuizError("The difficulty mix needs non-negative weights and at least one above zero, "
                        "like {'easy': 1, 'hard': 1}.")
    allowed = [case for case in pool if weights.get(case.difficulty, 0) > 0]
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(allowed):
        raise QuizError(f"Choose between 1 and {len(allowed)} cases for this pool and mix (asked for {n}).")

    rng = random.Random(seed)
    order = _shuffled(allowed, rng)
    quotas = _quotas(n, weights, available)
    wanted_errors = max(1, round(n / 4)) if include_model_errors is None else int(include_model_errors)
    errors = [case for case in order if not case.model_correct][:max(0, min(wanted_errors, n))]

    taken = {tag: 0 for tag in quotas}
    chosen: list[Case] = []
    for case in errors:  # model errors first, each counted against its tag's share
        if taken[case.difficulty] == quotas[case.difficulty]:
            # The tag is full: move one place from the tag with most places still free.
            donor = max(sorted(quotas), key=lambda t: quotas[t] - taken[t])
            quotas[donor] -= 1
            quotas[case.difficulty] += 1
        taken[case.difficulty] += 1
        chosen.append(case)
    for case in order:
        if case not in chosen and taken[case.difficulty] < quotas[case.difficulty]:
            taken[case.difficulty] += 1
            chosen.append(case)

    chosen = _shuffled(chosen, rng)
    first_right = next((i for i, case in enumerate(chosen) if case.model_correct), 0)
    chosen[0], chosen[first_right] = chosen[first_right], chosen[0]
    return chosen


# --------------------------------------------------------------------------------- scoring

def _tolerance(shape: tuple[int, int], spacing, tolerance_mm: float) -> Tolerance:
    try:
        return pointing_tolerance(shape, spacing=spacing, tolerance_mm=tolerance_mm)
    except (TypeError, ValueError):
        raise QuizError(f"The pixel spacing {spacing!r} is not usable; give (row_mm, col_mm) above zero, "
                        "or None.") from None


def tolerance_rule(shape: tuple[int, int], *, spacing=None, tolerance_mm: float = DEFAULT_TOLERANCE_MM) -> str:
    """One sentence saying how far from the outline a click or a map peak may land and still count.

    Example
    -------
    >>> tolerance_rule((512, 512), spacing=(0.49, 0.49))
    'A point counts when it lies on the outline or within 7 mm of it (14.3 x 14.3 pixels at 0.49 x 0.49 mm per pixel).'
    >>> tolerance_rule((512, 512))
    'A point counts when it lies on the outline or within 14.5 pixels of it (2% of the image diagonal, because the pixel spacing is unknown).'
    """
    tolerance = _tolerance(shape, spacing, tolerance_mm)
    rows_px, cols_px = tolerance.pixels
    if tolerance.unit == "mm":
        return (f"A point counts when it lies on the outline or within {tolerance.radius:g} mm of it "
                f"({rows_px:.1f} x {cols_px:.1f} pixels at {tolerance.sampling[0]:g} x "
                f"{tolerance.sampling[1]:g} mm per pixel).")
    return (f"A point counts when it lies on the outline or within {tolerance.radius:.1f} pixels of it "
            f"({FALLBACK_FRACTION:.0%} of the image diagonal, because the pixel spacing is unknown).")


def _near_outline(mask: np.ndarray, point: tuple[int, int], spacing, tolerance_mm: float) -> bool:
    """Whether ``point`` lies on ``mask`` grown by the tolerance: the pointing game itself, played
    with a map whose only hot pixel is the point, so a click and a map peak are judged by exactly
    the rule of :func:`core.localisation.pointing_game`."""
    single_peak = np.zeros(mask.shape, np.float32)
    single_peak[point] = 1.0
    return pointing_game(single_peak, mask, spacing=spacing, tolerance_mm=tolerance_mm) == 1.0


def _outline(mask, case_id: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise QuizError(f"The outline of case {case_id} has shape {mask.shape}; it must be one 2-D mask "
                        "on the image's own rows and columns.")
    if mask.dtype != bool:
        if not np.isin(mask, (0, 1)).all():
            raise QuizError(f"The outline of case {case_id} is not binary; pass a True/False (or 0/1) mask.")
        mask = mask.astype(bool)
    if not mask.any():
        raise QuizError(f"The outline of case {case_id} is empty; pass the expert mask or None for a case without one.")
    return mask


def _pixel(point, shape: tuple[int, int] | None, what: str) -> tuple[int, int] | None:
    """``point`` rounded to the nearest pixel, checked against ``shape`` when one is known."""
    if point is None:
        return None
    try:
        row, col = (int(round(float(v))) for v in point)
    except (TypeError, ValueError, OverflowError):
        raise QuizError(f"The {what} {point!r} is not a (row, column) pair of numbers.") from None
    if shape is not None and not (0 <= row < shape[0] and 0 <= col < shape[1]):
        raise QuizError(f"The {what} ({row}, {col}) lies outside the {shape[0]} x {shape[1]} image; "
                        "pass it in the image's own rows and columns.")
    return row, col


def score_answer(case: Case, diagnosis: str, click, mask, *, spacing=None,
                 tolerance_mm: float = DEFAULT_TOLERANCE_MM, map_peak=None) -> dict:
    """Score one read: the student's diagnosis and click, and the model's answer and map peak.

    Parameters
    ----------
    case : Case
    diagnosis : str
        The class name the student picked.
    click : (row, col) or None
        Where the student clicked, on the image's own geometry (the mask's rows and columns).
    mask : bool ndarray (rows, cols) or None
        The expert outline; None when the case has none (localisation is then not scored).
    spacing : (row_mm, col_mm) or None
        Pixel spacing; None uses the pixel fallback stated in the module docstring.
    tolerance_mm : float
        How far outside the outline a point may land and still count (default 7 mm).
    map_peak : (row, col) or None
        The hottest point of the model's map on the image's geometry.

    Returns
    -------
    dict with ``case_id``, ``diagnosis``, ``true_label``, ``model_label``, ``model_probability``,
    ``diagnosis_correct``, ``model_correct``, ``agrees_with_model`` (bools), ``click`` and
    ``map_peak`` (pixel pairs or None), ``click_hit`` (None without a mask; False when there is an
    outline but no click), ``map_peak_hit`` (None without a mask or a peak) and ``tolerance``
    (one sentence, None without a mask). Nothing names the image.

    Example
    -------
    >>> case = Case("chest-02", "x.jpeg", "PNEUMONIA", "PNEUMONIA", 0.97)
    >>> s = score_answer(case, "NORMAL", None, None)
    >>> s["diagnosis_correct"], s["model_correct"], s["click_hit"]
    (False, True, None)
    """
    if not isinstance(diagnosis, str) or not diagnosis:
        raise QuizError("Pick a diagnosis before submitting the answer.")
    if not (np.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise QuizError(f"The tolerance {tolerance_mm!r} mm is not usable; give a distance of 0 mm or more.")
    click_hit = map_peak_hit = tolerance = None
    if mask is None:
        click = _pixel(click, None, "click")
        map_peak = _pixel(map_peak, None, "map peak")
    else:
        mask = _outline(mask, case.case_id)
        tolerance = tolerance_rule(mask.shape, spacing=spacing, tolerance_mm=tolerance_mm)  # checks spacing
        click = _pixel(click, mask.shape, "click")
        map_peak = _pixel(map_peak, mask.shape, "map peak")
        click_hit = False if click is None else _near_outline(mask, click, spacing, tolerance_mm)
        map_peak_hit = None if map_peak is None else _near_outline(mask, map_peak, spacing, tolerance_mm)
    return {
        "case_id": case.case_id,
        "diagnosis": diagnosis,
        "true_label": case.true_label,
        "model_label": case.model_label,
        "model_probability": float(case.model_probability),
        "diagnosis_correct": diagnosis == case.true_label,
        "model_correct": case.model_correct,
        "agrees_with_model": diagnosis == case.model_label,
        "click": click,
        "click_hit": click_hit,
        "map_peak": map_peak,
        "map_peak_hit": map_peak_hit,
        "tolerance": tolerance,
    }


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def session_score(answers: Sequence[Mapping]) -> dict:
    """Running totals of a session, from :func:`score_answer` results (one per case).

    Returns
    -------
    dict: ``cases``; ``student_correct`` / ``student_accuracy`` and ``model_correct`` /
    ``model_accuracy`` on the same cases; ``outlined_cases``, ``click_hits`` / ``click_hit_rate``;
    ``map_peak_scored``, ``map_peak_hits`` / ``map_peak_hit_rate``; ``agreed_with_model`` /
    ``agreement``; ``both_wrong`` and ``both_wrong_cases`` (ids); ``followed_wrong_model`` (the
    student gave the model's wrong answer: automation bias). Shares are None when nothing counts.

    Example
    -------
    >>> a = score_answer(Case("c1", "x", "a", "b", 0.6), "b", None, None)
    >>> session_score([a])["both_wrong_cases"], session_score([a])["followed_wrong_model"]
    (['c1'], 1)
    """
    n = len(answers)
    student = sum(bool(a["diagnosis_correct"]) for a in answers)
    model = sum(bool(a["model_correct"]) for a in answers)
    outlined = [a for a in answers if a["click_hit"] is not None]
    peaks = [a for a in answers if a["map_peak_hit"] is not None]
    agreed = sum(bool(a["agrees_with_model"]) for a in answers)
    both_wrong = [a["case_id"] for a in answers if not a["diagnosis_correct"] and not a["model_correct"]]
    return {
        "cases": n,
        "student_correct": student, "student_accuracy": _share(student, n),
        "model_correct": model, "model_accuracy": _share(model, n),
        "outlined_cases": len(outlined),
        "click_hits": sum(a["click_hit"] for a in outlined),
        "click_hit_rate": _share(sum(a["click_hit"] for a in outlined), len(outlined)),
        "map_peak_scored": len(peaks),
        "map_peak_hits": sum(a["map_peak_hit"] for a in peaks),
        "map_peak_hit_rate": _share(sum(a["map_peak_hit"] for a in peaks), len(peaks)),
        "agreed_with_model": agreed, "agreement": _share(agreed, n),
        "both_wrong": len(both_wrong), "both_wrong_cases": both_wrong,
        "followed_wrong_model": sum(1 for a in answers if not a["model_correct"] and a["agrees_with_model"]),
    }


def _cell(value) -> str:
    """A CSV cell; text a spreadsheet would run as a formula gets a leading apostrophe (OWASP)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def answers_csv(answers: Sequence[Mapping], *, nickname: str | None = None) -> bytes:
    """The downloadable CSV of a session: one row per answer, columns :data:`CSV_COLUMNS`.

    Only the optional nickname, case ids, labels, the click and the scores: never an image, a file
    name or a patient identifier. UTF-8, booleans as ``yes``/``no``, empty cells for "not scored".

    Example
    -------
    >>> a = score_answer(Case("c1", "x", "a", "a", 0.75), "a", None, None)
    >>> answers_csv([a], nickname="Ada").decode().splitlines()[1]
    'Ada,c1,a,a,yes,,,,a,0.7500,yes,,yes'
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for a in answers:
        click = a["click"] or (None, None)
        writer.writerow([_cell(v) for v in (
            nickname, a["case_id"], a["diagnosis"], a["true_label"], a["diagnosis_correct"], click[0], click[1],
            a["click_hit"], a["model_label"], a["model_probability"], a["model_correct"], a["map_peak_hit"],
            a["agrees_with_model"],
        )])
    return out.getvalue().encode("utf-8")
