"""Teaching: the curated lesson and quiz case lists, a film blurred for the shortcut lesson, clicks.

The case lists are JSON files in ``assets/teaching/`` (``lesson.json``, ``quiz.json``). They name
curated samples by their path under ``assets/`` (``samples/brain_mri/glioma_2334.jpg``); each
sample's truth, outline and pixel spacing come from its set's ``samples.json``. Which case the
model gets wrong is never written down: the page predicts every candidate with the model in use
and passes the answers in (:class:`ModelAnswer`), and the lists only say which candidates to prefer.

- :func:`read_lesson` / :func:`read_quiz` read and check a case list (one sentence when unusable);
- :func:`lesson_cases` picks each lesson slot's case from its candidates by the model's answers;
- :func:`quiz_pool` turns the quiz list into :class:`core.quiz.Case` records for
  :func:`core.quiz.choose_cases`;
- :func:`blurred_scan` blurs a scan as a soft film would be (sigma in pixels of a 224 px side);
- :func:`displayed_to_pixel` turns a click on a displayed picture into the scan's (row, col);
- :func:`click_heatmap` spreads a class's clicks into a heat map; :func:`draw_marker` marks a point.

Example
-------
>>> answers = {"a.jpg": ModelAnswer("NORMAL", {"NORMAL": 0.9, "PNEUMONIA": 0.1}),
...            "b.jpg": ModelAnswer("NORMAL", {"NORMAL": 0.7, "PNEUMONIA": 0.3})}
>>> truths = {"a.jpg": "NORMAL", "b.jpg": "PNEUMONIA"}
>>> slot = {"id": "wrong", "title": "A model error", "prefer": "wrong", "choose_from": ["a.jpg", "b.jpg"]}
>>> lesson_cases({"cases": [slot]}, truths, answers)[0].sample
'b.jpg'
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.quiz import CASE_ID_PATTERN, Case

ROOT = Path(__file__).resolve().parent.parent
ASSETS = ROOT / "assets"
TEACHING_DIR = ASSETS / "teaching"
LESSON_FILE = TEACHING_DIR / "lesson.json"
QUIZ_FILE = TEACHING_DIR / "quiz.json"
#: Blur sizes are pixels of a 224 px image side (the training images' side) and scale with the scan.
REFERENCE_SIDE = 224
SHORTCUT_SIGMA = 4.0
PREFERENCES = ("right", "wrong")


class TeachingError(ValueError):
    """A case list or a click that cannot be used; ``str(err)`` is one sentence for the user."""


@dataclass(frozen=True)
class ModelAnswer:
    """What a model said about one case: its predicted class and every class's probability."""

    predicted: str
    probabilities: Mapping[str, float]

    @property
    def probability(self) -> float:
        """The probability of the predicted class."""
        return float(self.probabilities[self.predicted])

    def correct(self, truth: str) -> bool:
        return self.predicted == truth


@dataclass(frozen=True)
class LessonCase:
    """One lesson slot with the case chosen for it.

    ``note`` is one sentence when no candidate matched the slot's preference (e.g. the model gets
    every candidate right, so the "model error" slot shows the case it is least sure of).
    """

    slot: str
    title: str
    intro: str
    sample: str
    model_correct: bool
    note: str | None = None


# --------------------------------------------------------------------------------- case lists

def spoken_label(label: str) -> str:
    """A class name as a reader says it.

    >>> [spoken_label(label) for label in ("NORMAL", "notumor", "not_fractured", "glioma")]
    ['Normal', 'No tumour', 'Not fractured', 'Glioma']
    """
    return {"notumor": "no tumour"}.get(label, label.replace("_", " ")).capitalize()


def _read_json(path: Path, what: str) -> dict:
    try:
        spec = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise TeachingError(f"The {what} {path} is missing; reinstall assets/teaching.") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TeachingError(f"The {what} {path} is not valid JSON.") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("cases"), list) or not spec["cases"]:
        raise TeachingError(f"The {what} {path} must be a JSON object with a non-empty 'cases' list.")
    return spec


def _case_id(value, path) -> str:
    if not isinstance(value, str) or not CASE_ID_PATTERN.fullmatch(value):
        raise TeachingError(f"The case id {str(value)[:40]!r} in {path} is not usable; use letters, digits, "
                            "'.', '_' or '-' (like 'brain-07').")
    return value


def read_lesson(path: str | Path = LESSON_FILE) -> dict:
    """The lesson's case list: ``{"title", "cases": [{"id", "title", "intro", "prefer", "choose_from"}],
    "shortcut": {"title", "sigma_224", "choose_from"}}``, checked.

    >>> [slot["id"] for slot in read_lesson()["cases"]][:2]
    ['chest-normal', 'chest-pneumonia']
    """
    spec = _read_json(path, "lesson case list")
    seen = set()
    for slot in spec["cases"]:
        if not isinstance(slot, dict):
            raise TeachingError(f"Every lesson case in {path} must be a JSON object.")
        slot_id = _case_id(slot.get("id"), path)
        if slot_id in seen:
            raise TeachingError(f"The lesson case {slot_id} appears twice in {path}.")
        seen.add(slot_id)
        if slot.get("prefer", "right") not in PREFERENCES:
            raise TeachingError(f"The lesson case {slot_id} in {path} prefers {slot.get('prefer')!r}; use 'right' or 'wrong'.")
        if not isinstance(slot.get("choose_from"), list) or not slot["choose_from"]:
            raise TeachingError(f"The lesson case {slot_id} in {path} needs a non-empty 'choose_from' list of samples.")
    shortcut = spec.get("shortcut")
    if shortcut is not None and (not isinstance(shortcut, dict) or not shortcut.get("choose_from")):
        raise TeachingError(f"The shortcut lesson in {path} needs a 'choose_from' list of normal films.")
    return spec


def read_quiz(path: str | Path = QUIZ_FILE) -> dict:
    """The quiz's case pool: ``{"title", "method", "tolerance_mm", "defaults": {"cases", "seed"},
    "cases": [{"id", "sample", "difficulty"}]}``, checked.

    >>> read_quiz()["cases"][0]["id"]
    'chest-01'
    """
    spec = _read_json(path, "quiz case list")
    ids = []
    for case in spec["cases"]:
        if not isinstance(case, dict) or not isinstance(case.get("sample"), str):
            raise TeachingError(f"Every quiz case in {path} must be a JSON object with a 'sample' path.")
        ids.append(_case_id(case.get("id"), path))
        if not str(case.get("difficulty", "medium")).strip():
            raise TeachingError(f"The quiz case {ids[-1]} in {path} has an empty difficulty tag.")
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate:
        raise TeachingError(f"The quiz case {duplicate} appears twice in {path}; give every case its own id.")
    return spec


# --------------------------------------------------------------------------------- choosing by the model

def lesson_cases(spec: Mapping, truths: Mapping[str, str], answers: Mapping[str, ModelAnswer]) -> list[LessonCase]:
    """Each lesson slot's case: the first candidate the model gets right (or wrong, as the slot
    prefers) that no earlier slot uses, judged by the model's actual answers.

    Parameters
    ----------
    spec : the lesson list (:func:`read_lesson`).
    truths : sample -> true label.
    answers : sample -> :class:`ModelAnswer` of the model in use; a candidate without an answer
        (no model for its task, or a file that could not be read) is skipped.

    Returns
    -------
    list of LessonCase, in the list's order; a slot with no usable candidate is left out.
    When no candidate matches the preference, a slot wanting a model error shows the candidate
    with the lowest probability for its truth, and a slot wanting a success the first candidate,
    each with a one-sentence ``note``.
    """
    chosen: list[LessonCase] = []
    used: set[str] = set()
    for slot in spec["cases"]:
        candidates = [s for s in slot["choose_from"] if s in answers and s in truths]
        if not candidates:
            continue
        wants_right = slot.get("prefer", "right") == "right"
        matching = [s for s in candidates if answers[s].correct(truths[s]) == wants_right]
        fresh = [s for s in matching if s not in used] or matching
        note = None
        if fresh:
            sample = fresh[0]
        elif wants_right:
            sample = candidates[0]
            note = "The model in use gets every candidate of this case wrong, so it shows the first one."
        else:
            sample = min(candidates, key=lambda s: (answers[s].probabilities.get(truths[s], 0.0), s in used))
            note = ("The model in use gets every candidate of this case right, so it shows the one it is least "
                    f"sure of ({answers[sample].probabilities.get(truths[sample], 0.0):.0%} for the true class).")
        used.add(sample)
        chosen.append(LessonCase(slot=slot["id"], title=str(slot.get("title") or slot["id"]),
                                 intro=str(slot.get("intro") or ""), sample=sample,
                                 model_correct=answers[sample].correct(truths[sample]), note=note))
    return chosen


def quiz_pool(spec: Mapping, truths: Mapping[str, str], answers: Mapping[str, ModelAnswer],
              outlined: Iterable[str] = ()) -> list[Case]:
    """The quiz list as :class:`core.quiz.Case` records with the model's actual answers.

    A case whose sample has no answer (no model for its task, or an unreadable file) is left out.
    ``image_ref`` is the sample path under ``assets/`` (never stored in a class or a CSV).

    >>> answers = {"x.jpg": ModelAnswer("meningioma", {"glioma": 0.2, "meningioma": 0.8})}
    >>> pool = quiz_pool({"cases": [{"id": "b1", "sample": "x.jpg", "difficulty": "hard"}]},
    ...                  {"x.jpg": "glioma"}, answers, outlined={"x.jpg"})
    >>> pool[0].model_correct, pool[0].has_outline
    (False, True)
    """
    outlined = set(outlined)
    pool = []
    for case in spec["cases"]:
        sample = case["sample"]
        if sample not in answers or sample not in truths:
            continue
        answer = answers[sample]
        pool.append(Case(case["id"], sample, truths[sample], answer.predicted, answer.probability,
                         difficulty=str(case.get("difficulty", "medium")), has_outline=sample in outlined))
    return pool


def shortcut_film(candidates: Sequence[str], flips: Mapping[str, bool]) -> str | None:
    """The first candidate film whose blurring flips the teaching model's answer, else the first one
    with a known answer (None when there is none)."""
    known = [c for c in candidates if c in flips]
    return next((c for c in known if flips[c]), known[0] if known else None)


# --------------------------------------------------------------------------------- pictures and clicks

def blur_sigma(shape: tuple[int, ...], sigma_224: float = SHORTCUT_SIGMA) -> float:
    """Gaussian sigma in the scan's pixels for ``sigma_224`` pixels of a 224 px side (shorter side).

    >>> blur_sigma((448, 600))
    8.0
    """
    return float(sigma_224) * min(shape[:2]) / REFERENCE_SIDE


def blurred_scan(scan, sigma_224: float = SHORTCUT_SIGMA):
    """A copy of a :class:`core.io.Scan` with every frame blurred (Gaussian, ``sigma_224`` pixels of a
    224 px side): the soft film of the shortcut lesson. Blurring the native values commutes with the
    linear display window, so the model's pipeline and the display treat it as any other scan.

    >>> from core.io import Scan
    >>> film = Scan(frames=np.zeros((1, 224, 224), np.float32), window=(0.5, 1.0))
    >>> film.frames[0, 112, 112] = 1.0
    >>> round(float(blurred_scan(film, 1.0).frames[0, 112, 112]), 3)  # 1 / (2 pi sigma^2)
    0.159
    """
    from scipy.ndimage import gaussian_filter

    sigma = blur_sigma(scan.shape, sigma_224)
    frames = np.asarray(scan.frames, np.float32)
    axes_sigma = (0, sigma, sigma) + ((0,) if frames.ndim == 4 else ())
    blurred = gaussian_filter(frames, axes_sigma, mode="nearest").astype(np.float32)
    return dataclasses.replace(scan, frames=blurred)


#: What the metal lesson draws on an intact limb film: the function of :mod:`core.perturb` and its length (a fraction
#: of the film's long side), the same as ``scripts/metal_check.py``'s plate and ``scripts/cast_check.py``'s cast.
DRESSINGS = {"plate": ("implant", 0.35), "cast": ("cast", 0.45)}


def dressed_scan(scan, kind: str, seed: int = 0):
    """A copy of a :class:`core.io.Scan` with a metal plate (``kind="plate"``) or a plaster cast (``"cast"``) drawn
    on the limb (:func:`core.perturb.implant`, :func:`core.perturb.cast`, placed from ``seed``): the metal lesson's
    films. The drawing is made on the film as the pipeline sees it after its window (grey, [0, 1]), so the copy's
    window is the identity on [0, 1] and the model's pipeline and the display treat it as any other scan.

    >>> from core.io import Scan
    >>> film = Scan(frames=np.zeros((1, 80, 60), np.float32), window=(0.5, 1.0))
    >>> film.frames[0, :, 20:40] = 0.5
    >>> plated = dressed_scan(film, "plate", seed=1)
    >>> plated.frames.shape, float(plated.frames.max()) > 0.8, plated.window
    ((1, 80, 60), True, (0.5, 1.0))
    >>> dressed_scan(film, "crown")
    Traceback (most recent call last):
    ...
    ValueError: Nothing called 'crown' can be drawn on a film: plate or cast.
    """
    from core import perturb
    from core.robustness import display_grey

    if kind not in DRESSINGS:
        raise ValueError(f"Nothing called {kind!r} can be drawn on a film: {' or '.join(DRESSINGS)}.")
    name, length = DRESSINGS[kind]
    drawn = getattr(perturb, name)(display_grey(scan), length=length, seed=int(seed))
    return dataclasses.replace(scan, frames=drawn[None].astype(np.float32), window=(0.5, 1.0), invert=False,
                               voi=None, units="")


def peak_on_drawing(plain: np.ndarray, dressed: np.ndarray, peak: tuple[int, int], *, margin: float = 0.02) -> bool:
    """Whether a map's hottest pixel ``peak`` (row, col) lies on what :func:`dressed_scan` drew: the pixels where the
    dressed film differs from the plain one (both grey, [0, 1]), grown by ``margin`` of the film's long side.

    >>> plain = np.zeros((100, 80), np.float32); dressed = plain.copy(); dressed[40:60, 30:34] = 0.9
    >>> [peak_on_drawing(plain, dressed, peak) for peak in ((50, 32), (50, 35), (5, 5))]
    [True, True, False]
    """
    from scipy.ndimage import binary_dilation

    drawn = np.abs(np.asarray(dressed, np.float32) - np.asarray(plain, np.float32)) > 0.02
    grow = max(1, round(margin * max(drawn.shape)))
    return bool(binary_dilation(drawn, iterations=grow)[int(peak[0]), int(peak[1])])


def displayed_to_pixel(click: Mapping, shape: tuple[int, int]) -> tuple[int, int]:
    """The scan's (row, col) under a click on a displayed picture of it.

    ``click`` is what ``streamlit_image_coordinates`` returns: ``x`` and ``y`` from the top-left
    corner of the picture as shown, and the shown ``width`` and ``height`` (the picture may be
    drawn smaller or larger than the scan). Pixel centres are honoured: the click's position is
    scaled to the scan and floored, then kept inside it.

    >>> displayed_to_pixel({"x": 279, "y": 10, "width": 280, "height": 200}, (400, 560))
    (20, 558)
    """
    try:
        x, y = float(click["x"]), float(click["y"])
        width, height = float(click["width"]), float(click["height"])
    except (KeyError, TypeError, ValueError):
        raise TeachingError("The click could not be read; click once more on the image.") from None
    if not (width > 0 and height > 0 and np.isfinite([x, y]).all()):
        raise TeachingError("The click could not be read; click once more on the image.")
    rows, cols = shape
    row = int(np.clip(np.floor(y * rows / height), 0, rows - 1))
    col = int(np.clip(np.floor(x * cols / width), 0, cols - 1))
    return row, col


def map_peak(on_scan: np.ndarray) -> tuple[int, int]:
    """(row, col) of a map's hottest pixel (the first one in raster order on a tie).

    >>> map_peak(np.array([[0.0, 0.2], [0.9, 0.1]]))
    (1, 0)
    """
    row, col = np.unravel_index(int(np.argmax(on_scan)), on_scan.shape)
    return int(row), int(col)


def click_heatmap(clicks: Sequence[tuple[int, int]], shape: tuple[int, int], *, sigma_fraction: float = 0.03,
                  scale: float = 1.0) -> np.ndarray:
    """A heat map of clicks, in [0, 1]: a Gaussian of ``sigma_fraction`` of the longer side per click.

    ``clicks`` are (row, col) on a scan ``scale`` times larger than ``shape`` (pass the scan's
    clicks with ``scale = scan side / shape side`` to draw on a downsampled picture).

    >>> heat = click_heatmap([(10, 10), (10, 10), (40, 40)], (50, 50))
    >>> float(heat.max()), map_peak(heat)
    (1.0, (10, 10))
    """
    from scipy.ndimage import gaussian_filter

    counts = np.zeros(shape, np.float32)
    for row, col in clicks:
        r, c = int(row / scale), int(col / scale)
        if 0 <= r < shape[0] and 0 <= c < shape[1]:
            counts[r, c] += 1.0
    if not counts.any():
        return counts
    heat = gaussian_filter(counts, sigma_fraction * max(shape), mode="constant")
    return (heat / heat.max()).astype(np.float32)


def draw_marker(rgb: np.ndarray, point: tuple[int, int], *, colour=(255, 255, 255), radius: int = 10,
                thickness: int = 2) -> np.ndarray:
    """A copy of an RGB uint8 picture with a ring and a centre dot at ``point`` (row, col).

    >>> picture = draw_marker(np.zeros((40, 40, 3), np.uint8), (20, 20), radius=6)
    >>> picture[20, 20].tolist(), picture[20, 26].tolist(), picture[20, 23].tolist()
    ([255, 255, 255], [255, 255, 255], [0, 0, 0])
    """
    out = np.array(rgb, np.uint8, copy=True)
    rows, cols = out.shape[:2]
    yy, xx = np.ogrid[:rows, :cols]
    distance = np.sqrt((yy - point[0]) ** 2 + (xx - point[1]) ** 2)
    ring = np.abs(distance - radius) <= thickness / 2
    dot = distance <= max(1, thickness)
    out[ring | dot] = colour
    return out
