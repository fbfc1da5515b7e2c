"""What the teaching pages share: the curated cases with the models' answers, their pictures, the
click on an image, the class database, and the forward / back bar of a lesson.

Everything computed from the curated cases (the models' answers, the maps) is the same for every
session, so it is cached once per process (``st.cache_resource``): a class of thirty students asks
for each map once. What a student does (clicks, answers) lives in the student's own session state
and, in a class, in the class database only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from core.io import Scan, ScanError, load_scan
from core.model import ModelError
from core.render import display_image, downsample, draw_outline, overlay
from core.teaching import (
    ASSETS,
    TEACHING_DIR,
    ModelAnswer,
    TeachingError,
    displayed_to_pixel,
    draw_marker,
    read_lesson,
    read_quiz,
)
from ui.models import model_folders, shared_model
from ui.scans import SAMPLES_DIR, Sample, curated_samples

#: The old chest model kept for the shortcut lesson (never offered as a default model).
SHORTCUT_MODEL = TEACHING_DIR / "chest_xray_shortcut"
#: The brain model that sees only the scalp, skull and outline, for the skull lesson (``train --rim-only``).
RIM_MODEL = TEACHING_DIR / "brain_mri_rim"
#: Longer side of the pictures the teaching pages send to the browser.
PICTURE_SIDE = 640
OUTLINE_COLOUR = (64, 255, 96)
CLICK_COLOUR = (255, 255, 255)
PEAK_COLOUR = (255, 64, 200)


def shortcut_model_dir() -> Path:
    """Where the shortcut lesson's teaching model is: ``MEDXAI_SHORTCUT_MODEL`` or ``assets/teaching/chest_xray_shortcut``."""
    configured = os.environ.get("MEDXAI_SHORTCUT_MODEL")
    return Path(configured) if configured else SHORTCUT_MODEL


def rim_model_dir() -> Path:
    """Where the skull lesson's rim-only model is: ``MEDXAI_RIM_MODEL`` or ``assets/teaching/brain_mri_rim``."""
    configured = os.environ.get("MEDXAI_RIM_MODEL")
    return Path(configured) if configured else RIM_MODEL


# ----------------------------------------------------------------------------- curated cases

def sample_key(sample: Sample) -> str:
    """A sample's name in the case lists: its path under ``assets/``."""
    return sample.path.resolve().relative_to(ASSETS.resolve()).as_posix()


@st.cache_resource(show_spinner=False)
def teaching_samples() -> dict[str, Sample]:
    """Every curated sample (``assets/samples``) and teaching case (``assets/teaching``), by key."""
    found = curated_samples(SAMPLES_DIR) + curated_samples(TEACHING_DIR)
    return {sample_key(s): s for s in found}


def _usable_folders() -> dict[str, str]:
    """task -> folder of the default model for it."""
    return {entry.task: entry.folder for entry in model_folders() if entry.problem is None}


def model_for(sample: Sample) -> str | None:
    """The folder of the model a sample's task belongs to (None: no such model installed)."""
    return _usable_folders().get(sample.model)


def _stamp(folder: str) -> tuple[str, str]:
    """What names a model's answers in the caches: its folder and model file hash."""
    from core.model import read_info

    try:
        return folder, str(read_info(folder).get("sha256", ""))
    except ModelError:
        return folder, ""


@st.cache_resource(show_spinner=False, max_entries=64)
def _scan(path: str, spacing: tuple[float, float] | None) -> Scan:
    scan = load_scan(Path(path).read_bytes(), Path(path).name)
    if scan.spacing is None and spacing:
        import dataclasses

        scan = dataclasses.replace(scan, spacing=tuple(spacing))
    return scan


def case_scan(sample: Sample) -> Scan:
    """A curated sample loaded once per process, with its set's pixel spacing when the file states none."""
    return _scan(str(sample.path), sample.spacing)


@st.cache_resource(show_spinner=False, max_entries=64)
def _mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    from core.masks import load_mask

    return load_mask(Path(path).read_bytes(), shape)


def case_mask(sample: Sample, scan: Scan) -> np.ndarray | None:
    """The expert outline of a sample on its scan's geometry (None when it has none)."""
    return _mask(str(sample.mask), scan.shape) if sample.mask else None


def case_display(scan: Scan) -> np.ndarray:
    """The scan as a reading station shows it (the header's window), grey in [0, 1]."""
    return display_image(scan.frame(), scan.window, scan.invert, voi=scan.voi)


@st.cache_resource(show_spinner=False, max_entries=8)
def _answers(stamps: tuple[tuple[str, str, str], ...]) -> dict[str, ModelAnswer]:
    samples = teaching_samples()
    answers: dict[str, ModelAnswer] = {}
    for task, folder, _sha in stamps:
        keys = [k for k, s in samples.items() if s.model == task]
        try:
            loaded = shared_model(folder)
        except ModelError:
            continue
        tensors, good = [], []
        for key in keys:
            try:
                tensors.append(loaded.pipeline.scan_tensor(case_scan(samples[key])))
                good.append(key)
            except (ScanError, OSError):
                continue  # a missing or damaged file: the case is left out of the lists
        if not good:
            continue
        probabilities = loaded.predict(np.concatenate(tensors))
        names = loaded.class_names
        for key, p in zip(good, probabilities):
            answers[key] = ModelAnswer(names[loaded.decide(p)], {n: float(v) for n, v in zip(names, p)})
    return answers


def model_answers() -> dict[str, ModelAnswer]:
    """What the installed default models say about every curated case (computed once per process
    and model file), by sample key."""
    stamps = tuple(sorted((task, *_stamp(folder)) for task, folder in _usable_folders().items()))
    with st.spinner("Asking the models about every teaching case…"):
        return _answers(stamps)


def truths() -> dict[str, str]:
    return {k: s.true_label for k, s in teaching_samples().items() if s.true_label}


def outlined() -> set[str]:
    return {k for k, s in teaching_samples().items() if s.mask}


def lesson_spec() -> dict | None:
    """The lesson list, or None after one sentence on the page."""
    try:
        return read_lesson()
    except TeachingError as err:
        st.error(str(err))
        return None


def quiz_spec() -> dict | None:
    """The quiz list, or None after one sentence on the page."""
    try:
        return read_quiz()
    except TeachingError as err:
        st.error(str(err))
        return None


def quiz_pool_cases() -> list | None:
    """The quiz pool as :class:`core.quiz.Case` records with the models' actual answers (None: no list)."""
    from core.teaching import quiz_pool

    spec = quiz_spec()
    if spec is None:
        return None
    return quiz_pool(spec, truths(), model_answers(), outlined())


# ----------------------------------------------------------------------------- maps

@dataclass(frozen=True)
class CaseMap:
    """One method's map of a curated case, explaining one class."""

    on_scan: np.ndarray  # on the scan's rows x cols, [0, 1]
    raw: np.ndarray  # on the explained layer's grid
    layer: str | None


@st.cache_resource(show_spinner=False, max_entries=48)
def _case_map(folder: str, sha: str, path: str, spacing, method: str, class_index: int) -> CaseMap:
    from core.saliency import explain

    loaded = shared_model(folder)
    scan = _scan(path, spacing)
    result = explain(loaded, loaded.pipeline.scan_tensor(scan), scan.shape, method=method, class_index=class_index)
    return CaseMap(result.on_scan, result.raw, result.layer)


def case_map(folder: str, sample: Sample, method: str, class_index: int) -> CaseMap:
    """A method's map of a curated case, computed once per process for every session."""
    _, sha = _stamp(folder)
    return _case_map(folder, sha, str(sample.path), sample.spacing, method, int(class_index))


# ----------------------------------------------------------------------------- pictures

def small(image: np.ndarray, side: int = PICTURE_SIDE) -> np.ndarray:
    """A picture shrunk to at most ``side`` pixels on its longer side (what the browser needs)."""
    return downsample(image, side)


def to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(grey, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=-1)


def picture(display: np.ndarray, *, saliency: np.ndarray | None = None, mask: np.ndarray | None = None,
            points: tuple = (), opacity: float = 0.6, colormap: str = "Turbo",
            side: int = PICTURE_SIDE) -> np.ndarray:
    """The scan (optionally with a map over it, the expert outline and marked points), shrunk for
    the browser. ``points`` are ((row, col), colour) on the scan's own geometry."""
    rows = display.shape[0]
    shown = small(display, side)
    factor = shown.shape[0] / rows
    if saliency is not None:
        rgb = overlay(shown, small(saliency, side), opacity=opacity, colormap=colormap)
    else:
        rgb = to_rgb(shown)
    if mask is not None:
        rgb = draw_outline(rgb, small(mask.astype(np.float32), side) >= 0.5, colour=OUTLINE_COLOUR,
                           thickness=max(1, round(2 * min(1.0, max(shown.shape) / 400))))
    radius = max(6, round(max(shown.shape) / 40))
    for (row, col), colour in points:
        rgb = draw_marker(rgb, (int(row * factor), int(col * factor)), colour=colour, radius=radius)
    return rgb


def click_on(image_rgb: np.ndarray, shape: tuple[int, int], *, key: str) -> tuple[int, int] | None:
    """Show a picture of a scan that takes a click; returns the click on the scan's (row, col).

    The last click is marked on the picture. ``shape`` is the scan's (rows, cols); the picture may
    be any size with the same aspect ratio (clicks arrive in the picture's displayed pixels and are
    converted here, before anything scores or stores them).
    """
    from streamlit_image_coordinates import streamlit_image_coordinates

    previous = st.session_state.get(key)
    shown = image_rgb
    point = None
    if previous:
        try:
            point = displayed_to_pixel(previous, shape)
        except TeachingError:
            point = None
    if point is not None:
        factor = image_rgb.shape[0] / shape[0]
        radius = max(6, round(max(image_rgb.shape[:2]) / 40))
        shown = draw_marker(image_rgb, (int(point[0] * factor), int(point[1] * factor)), colour=CLICK_COLOUR,
                            radius=radius)
    value = streamlit_image_coordinates(shown, key=key, width="stretch", cursor="crosshair")
    if value and value != previous:
        try:
            point = displayed_to_pixel(value, shape)
        except TeachingError as err:
            st.warning(str(err))
            return None
    return point


# ----------------------------------------------------------------------------- the class database

@st.cache_resource(show_spinner=False, max_entries=4)
def _store(where: tuple):
    from core.classroom import ClassroomStore

    return ClassroomStore()


def class_store():
    """The class database this server uses (the ``class_db`` / ``class_dir`` settings), or None
    after one sentence on the page."""
    from core.classroom import ClassError
    from core.settings import SettingsError, setting

    try:
        where = (setting("class_db"), setting("class_dir"), os.environ.get("XDG_DATA_HOME"))
        return _store(where)
    except (ClassError, SettingsError) as err:
        st.error(str(err))
        return None


# ----------------------------------------------------------------------------- lesson navigation

def _move(state_key: str, lesson: str, step: int) -> None:
    st.session_state.setdefault(state_key, {})[lesson] = step


def step_bar(lesson: str, titles: list[str], *, where: str = "top") -> int:
    """Back and forward buttons with "Step k of n: title" and a progress bar; returns the step in view.

    The buttons change the step in their callback, so the page draws the new step in the same run.
    ``where="bottom"`` draws the buttons again under the step, with the next step's title.
    """
    from ui.state import Keys

    steps = st.session_state.setdefault(Keys.LESSON_STEP, {})
    step = int(np.clip(steps.get(lesson, 0), 0, len(titles) - 1))
    back, middle, forward = st.columns([1, 4, 1], vertical_alignment="center")
    back.button("◀ Back", key=f"{Keys.STEP_BACK}_{where}_{lesson}", disabled=step == 0, width="stretch",
                on_click=_move, args=(Keys.LESSON_STEP, lesson, step - 1))
    if where == "top":
        middle.progress((step + 1) / len(titles), text=f"Step {step + 1} of {len(titles)}: {titles[step]}")
    elif step + 1 < len(titles):
        middle.caption(f"Next: {titles[step + 1]}")
    else:
        middle.caption("This is the last step of the lesson.")
    forward.button("Next ▶", key=f"{Keys.STEP_NEXT}_{where}_{lesson}", disabled=step == len(titles) - 1,
                   width="stretch", type="primary", on_click=_move, args=(Keys.LESSON_STEP, lesson, step + 1))
    return step


# ----------------------------------------------------------------------------- lesson computations

@st.cache_resource(show_spinner=False, max_entries=32)
def _faithfulness(folder: str, sha: str, path: str, spacing, method: str, class_index: int):
    from core.trust import faithfulness

    loaded = shared_model(folder)
    tensor = loaded.pipeline.scan_tensor(_scan(path, spacing))
    return faithfulness(loaded, tensor, _case_map(folder, sha, path, spacing, method, class_index).raw, class_index)


def case_faithfulness(folder: str, sample: Sample, method: str, class_index: int):
    """The deletion / insertion test of a curated case's map (once per process)."""
    _, sha = _stamp(folder)
    return _faithfulness(folder, sha, str(sample.path), sample.spacing, method, int(class_index))


@st.cache_resource(show_spinner=False, max_entries=8)
def _blurred(path: str, spacing, sigma_224: float) -> Scan:
    from core.teaching import blurred_scan

    return blurred_scan(_scan(path, spacing), sigma_224)


def blurred_case(sample: Sample, sigma_224: float) -> Scan:
    """A curated film blurred as in the shortcut lesson (once per process)."""
    return _blurred(str(sample.path), sample.spacing, float(sigma_224))


@st.cache_resource(show_spinner=False, max_entries=8)
def _dressed(path: str, spacing, kind: str, seed: int) -> Scan:
    from core.teaching import dressed_scan

    return dressed_scan(_scan(path, spacing), kind, seed)


def dressed_case(sample: Sample, kind: str, seed: int) -> Scan:
    """A curated film with a plate or a cast drawn on its limb, as in the metal lesson (once per process)."""
    return _dressed(str(sample.path), sample.spacing, kind, int(seed))


@dataclass(frozen=True)
class FilmReading:
    """A model's reading of one film, sharp or blurred: P(class), its Grad-CAM map and deletion test."""

    probability: float
    decision: int
    on_scan: np.ndarray
    raw: np.ndarray


@st.cache_resource(show_spinner=False, max_entries=16)
def _film_reading(folder: str, sha: str, path: str, spacing, sigma_224: float | None, class_index: int,
                  dressing: tuple[str, int] | None = None) -> FilmReading:
    from core.saliency import explain

    loaded = shared_model(folder)
    scan = (_dressed(path, spacing, *dressing) if dressing else
            _scan(path, spacing) if sigma_224 is None else _blurred(path, spacing, sigma_224))
    tensor = loaded.pipeline.scan_tensor(scan)
    probabilities = loaded.predict(tensor)[0]
    result = explain(loaded, tensor, scan.shape, method="gradcam", class_index=class_index)
    return FilmReading(float(probabilities[class_index]), loaded.decide(probabilities), result.on_scan, result.raw)


def film_reading(folder: str, sample: Sample, class_index: int, sigma_224: float | None = None,
                 dressing: tuple[str, int] | None = None) -> FilmReading:
    """What a model (any folder, e.g. the teaching model) says about a curated film, sharp
    (``sigma_224=None``), blurred, or with a plate or cast drawn on it (``dressing``: kind and seed of
    :func:`core.teaching.dressed_scan`), once per process."""
    _, sha = _stamp(folder)
    return _film_reading(folder, sha, str(sample.path), sample.spacing,
                         None if sigma_224 is None else float(sigma_224), int(class_index),
                         None if dressing is None else (str(dressing[0]), int(dressing[1])))


@st.cache_resource(show_spinner=False, max_entries=32)
def _film_ablation(folder: str, sha: str, path: str, spacing, mask_path: str, class_index: int) -> dict:
    from core.evaluation import outline_ablation

    scan = _scan(path, spacing)
    return outline_ablation(shared_model(folder), scan, _mask(mask_path, scan.shape), class_index)


def film_ablation(folder: str, sample: Sample, class_index: int) -> dict:
    """What a model says about an outlined curated slice as scanned, with its outline filled in and with a
    same-shaped control region filled (:func:`core.evaluation.outline_ablation`; once per process)."""
    _, sha = _stamp(folder)
    return _film_ablation(folder, sha, str(sample.path), sample.spacing, str(sample.mask), int(class_index))


@st.cache_resource(show_spinner=False, max_entries=8)
def _film_faithfulness(folder: str, sha: str, path: str, spacing, sigma_224: float, class_index: int):
    from core.trust import faithfulness

    loaded = shared_model(folder)
    scan = _blurred(path, spacing, sigma_224)
    reading = _film_reading(folder, sha, path, spacing, sigma_224, class_index)
    return faithfulness(loaded, loaded.pipeline.scan_tensor(scan), reading.raw, class_index)


def film_faithfulness(folder: str, sample: Sample, class_index: int, sigma_224: float):
    """The deletion test of a model's Grad-CAM map on the blurred film (once per process)."""
    _, sha = _stamp(folder)
    return _film_faithfulness(folder, sha, str(sample.path), sample.spacing, float(sigma_224), int(class_index))


@st.cache_resource(show_spinner=False, max_entries=32)
def _uncertainty(folder: str, sha: str, path: str, spacing, class_index: int):
    from core.trust import test_time_augmentation

    loaded = shared_model(folder)
    threshold = loaded.threshold if len(loaded.class_names) == 2 else None
    return test_time_augmentation(loaded, loaded.pipeline.scan_tensor(_scan(path, spacing)), class_index,
                                  threshold=threshold, layer=loaded.last_conv)


def case_uncertainty(folder: str, sample: Sample, class_index: int):
    """Test-time augmentation of a curated case for one class (once per process)."""
    _, sha = _stamp(folder)
    return _uncertainty(folder, sha, str(sample.path), sample.spacing, int(class_index))


@st.cache_resource(show_spinner=False, max_entries=16)
def _sanity(folder: str, sha: str, path: str, spacing, method: str, class_index: int):
    from core.trust import sanity_check

    loaded = shared_model(folder)
    result = _case_map(folder, sha, path, spacing, method, class_index)
    return sanity_check(loaded, loaded.pipeline.scan_tensor(_scan(path, spacing)), method, class_index, result.layer,
                        original=result.raw)


def case_sanity(folder: str, sample: Sample, method: str, class_index: int):
    """The sanity check (model randomisation) of a curated case's map (once per process; several seconds)."""
    _, sha = _stamp(folder)
    return _sanity(folder, sha, str(sample.path), sample.spacing, method, int(class_index))
