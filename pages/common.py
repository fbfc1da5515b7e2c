"""What the pages share: session-state keys (all named here), the chosen scan, models, figures.

Nothing here writes an upload to disk: uploaded bytes live in ``st.session_state`` of the
session that uploaded them, and loaded scans in that session's own memory.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.io import Scan, ScanError, load_scan
from core.model import LoadedModel, ModelError, load_model

ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """The folder holding one model folder per task: ``MEDXAI_MODELS`` or ``assets/models``."""
    configured = os.environ.get("MEDXAI_MODELS")
    return Path(configured) if configured else ROOT / "assets" / "models"


MODELS = {task: models_dir() / task for task in ("chest_xray", "brain_mri")}
MODEL_LABELS = {"chest_xray": "Chest X-ray — pneumonia vs normal", "brain_mri": "Brain MRI — tumour type"}


class Keys:
    """Every ``st.session_state`` key the app uses."""

    SOURCE = "source"  # label of the chosen sample, or UPLOAD
    UPLOAD = "upload"  # dict(name=..., data=...) of the last upload, in memory only
    UPLOADER = "uploader_widget"
    MODEL = "model_task"
    FRAME = "frame"
    PRESET = "window_preset"
    WINDOW = "window"  # (centre, width) chosen for display
    INVERT = "invert_display"
    REVEAL = "reveal_identifiers"
    SCANS = "loaded_scans"  # digest -> Scan, this session only
    METHOD = "method"
    TARGET = "target_class"
    LAYER = "layer"
    OPACITY = "opacity"
    COLORMAP = "colormap"
    TRUST = "trust_scores"  # (what, inputs' digest) -> faithfulness / uncertainty result, this session only
    # Keys of widgets whose default value is read from the keys above. Without a fixed key a
    # widget's identity changes with its default, so every second change a user made was lost.
    # Scan-specific widgets append the scan's digest: a new scan starts from its own defaults.
    FRAME_WIDGET = "frame_widget"
    PRESET_WIDGET = "window_preset_widget"
    CENTRE_WIDGET = "window_centre_widget"
    WIDTH_WIDGET = "window_width_widget"
    INVERT_WIDGET = "invert_widget"
    METHOD_WIDGET = "method_widget"
    OPACITY_WIDGET = "opacity_widget"
    COLORMAP_WIDGET = "colormap_widget"


UPLOAD = "Your upload"


# ----------------------------------------------------------------------------- samples

@dataclass(frozen=True)
class Sample:
    label: str
    path: Path
    true_label: str | None = None
    model: str | None = None  # the model this sample suits


DICOM_SAMPLES = (
    ("Chest radiograph, CR, MONOCHROME1 (RG1_UNCI.dcm)", "RG1_UNCI.dcm", "chest_xray"),
    ("Same radiograph, JPEG 2000 lossless (RG1_J2KR.dcm)", "RG1_J2KR.dcm", "chest_xray"),
    ("CT slice in Hounsfield units (CT_small.dcm)", "CT_small.dcm", None),
    ("MR slice (MR_small.dcm)", "MR_small.dcm", "brain_mri"),
    ("Multi-frame MR, 10 frames (emri_small.dcm)", "emri_small.dcm", "brain_mri"),
    ("Enhanced CT, 2 frames, in Hounsfield units (eCT_Supplemental.dcm)", "eCT_Supplemental.dcm", None),
)


def data_dir() -> Path | None:
    """The dataset folder for samples: ``MEDXAI_DATA`` or ``../shared/data`` beside the project."""
    configured = os.environ.get("MEDXAI_DATA")
    folder = Path(configured) if configured else ROOT.parent / "shared" / "data"
    return folder if folder.is_dir() else None


@st.cache_data(show_spinner=False)
def samples() -> list[Sample]:
    from pydicom.data import get_testdata_file

    found = []
    for label, name, model in DICOM_SAMPLES:
        path = get_testdata_file(name)
        if path:
            found.append(Sample(label, Path(path), None, model))
    root = data_dir()
    if root is not None:
        for cls in ("NORMAL", "PNEUMONIA"):
            for path in sorted((root / "chest_xray_fullres" / cls).glob("*.jp*g"))[:3]:
                found.append(Sample(f"Chest X-ray, {cls.lower()} ({path.name})", path, cls, "chest_xray"))
        for cls in ("glioma", "meningioma", "notumor", "pituitary"):
            for path in sorted((root / "brain_mri" / "Training" / cls).glob("*.jpg"))[:2]:
                found.append(Sample(f"Brain MRI, {cls} ({path.name})", path, cls, "brain_mri"))
    return found


def sample_by_label(label: str) -> Sample | None:
    return next((s for s in samples() if s.label == label), None)


# ----------------------------------------------------------------------------- chosen scan

@dataclass(frozen=True)
class Chosen:
    name: str
    data: bytes
    true_label: str | None
    model: str | None


def chosen_input() -> Chosen | None:
    """The upload or sample picked on the Scan page (the first sample until then)."""
    source = st.session_state.get(Keys.SOURCE)
    if source == UPLOAD and st.session_state.get(Keys.UPLOAD):
        upload = st.session_state[Keys.UPLOAD]
        return Chosen(upload["name"], upload["data"], None, None)
    sample = sample_by_label(source) if source else None
    if sample is None and samples():
        sample = samples()[0]
    if sample is None:
        return None
    return Chosen(sample.path.name, _read_sample(str(sample.path)), sample.true_label, sample.model)


@st.cache_data(show_spinner=False, max_entries=32)
def _read_sample(path: str) -> bytes:
    return Path(path).read_bytes()


def current_scan() -> tuple[Chosen | None, Scan | None]:
    """Load the chosen input once per session; a bad file shows one sentence and returns no scan."""
    chosen = chosen_input()
    if chosen is None:
        st.info("Upload a scan on the **Scan** page to begin.")
        return None, None
    reveal = bool(st.session_state.get(Keys.REVEAL, False))
    digest = hashlib.sha256(chosen.data).hexdigest()
    cache = st.session_state.setdefault(Keys.SCANS, {})
    key = (digest, reveal)
    if key not in cache:
        try:
            with st.spinner("Reading the scan…"):
                cache.clear()  # one scan at a time per session keeps memory bounded
                cache[key] = load_scan(chosen.data, chosen.name, keep_identifiers=reveal)
        except ScanError as err:
            st.error(f"**{chosen.name}** cannot be used: {err}")
            return chosen, None
    return chosen, cache[key]


def page_with_scan(title: str) -> tuple[Chosen, Scan]:
    """Title, disclaimer and the chosen scan; stops the page (after one clear sentence) without one."""
    st.title(title)
    disclaimer()
    chosen, scan = current_scan()
    if scan is None:
        st.stop()
    return chosen, scan


def frame_index(scan: Scan) -> int:
    """The frame chosen for this scan (the middle one by default)."""
    index = st.session_state.get(Keys.FRAME)
    if index is None or not 0 <= index < scan.n_frames:
        return scan.default_frame
    return int(index)


# ----------------------------------------------------------------------------- models

def get_model(task: str) -> LoadedModel:
    """The model of one task, from the models folder as configured now."""
    folder = str(models_dir() / task)
    if folder in _SHARED:
        return _SHARED[folder]
    with st.spinner("Loading the model…"):
        return shared_model(folder)


_SHARED: dict[str, LoadedModel] = {}
_SHARED_LOCKS: dict[str, threading.Lock] = {}
_SHARED_GUARD = threading.Lock()


def shared_model(folder: str) -> LoadedModel:
    """The process's one copy of a model folder, shared by every session (explanations work on
    clones), loaded once even when the warm-up thread (:func:`start_warm_up`) and a page ask
    for it at the same time: the second caller waits. A folder that fails to load is not kept."""
    with _SHARED_GUARD:
        lock = _SHARED_LOCKS.setdefault(folder, threading.Lock())
    with lock:
        if folder not in _SHARED:
            _SHARED[folder] = load_model(folder)
        return _SHARED[folder]


_WARM_UP_STARTED = threading.Event()


def start_warm_up() -> bool:
    """Start :func:`warm_models` in a background thread, once per process; True if started now.

    ``MEDXAI_WARM_UP=0`` turns it off (the tests do, so that no thread loads models behind them).
    """
    if os.environ.get("MEDXAI_WARM_UP", "1") == "0":
        return False
    with _SHARED_GUARD:
        if _WARM_UP_STARTED.is_set():
            return False
        _WARM_UP_STARTED.set()
    threading.Thread(target=warm_models, name="model-warm-up", daemon=True).start()
    return True


def warm_models() -> list[str]:
    """Load every default model and trace its compiled forward pass and Grad-CAM path on a blank
    input, so the first real request does not pay for it. Returns the tasks warmed; a model that
    cannot be loaded is skipped here and reported by the page that needs it."""
    from core.explain import saliency_map

    warmed = []
    for task in MODELS:
        try:
            loaded = shared_model(str(models_dir() / task))
        except ModelError:
            continue
        size = int(loaded.pipeline.input_size)
        blank = np.zeros((1, size, size, 1), np.float32)
        loaded.predict_and_check(blank)
        saliency_map(loaded.model, blank, "gradcam", 0, loaded.info.get("last_conv"))
        warmed.append(task)
    return warmed


def model_choice(suggested: str | None = None) -> LoadedModel | None:
    """The model selector; the choice is remembered across pages."""
    if Keys.MODEL not in st.session_state:
        st.session_state[Keys.MODEL] = suggested or "chest_xray"
    task = st.selectbox("Model", list(MODELS), format_func=MODEL_LABELS.get,
                        index=list(MODELS).index(st.session_state[Keys.MODEL]), key="_model_widget")
    st.session_state[Keys.MODEL] = task
    try:
        return get_model(task)
    except ModelError as err:
        st.error(str(err))
        return None


# ----------------------------------------------------------------------------- figures

def image_figure(image: np.ndarray, *, spacing: tuple[float, float] | None = None, height: int = 560,
                 title: str | None = None, max_side: int = 1024) -> go.Figure:
    """A zoomable image in its own geometry (square pixels or the stated spacing), with a mm scale bar.

    ``image`` is grey [0, 1] or RGB uint8. Large images are sent to the browser downsampled,
    drawn over the original pixel coordinates so axes and the scale bar stay exact.
    """
    rows, cols = image.shape[:2]
    step = max(1, int(np.ceil(max(rows, cols) / max_side)))
    shown = image[::step, ::step]
    if shown.ndim == 2:
        shown = np.repeat((np.clip(shown, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    # Non-square pixels: stretch the y axis so the picture keeps its physical aspect ratio.
    aspect = (spacing[0] / spacing[1]) if spacing else 1.0
    fig = go.Figure(go.Image(z=shown, x0=0, y0=0, dx=step, dy=step, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[0, cols], constrain="domain")
    fig.update_yaxes(visible=False, range=[rows, 0], scaleanchor="x", scaleratio=aspect, constrain="domain")
    if spacing:
        _scale_bar(fig, rows, cols, spacing)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0), title=title,
                      dragmode="pan")
    return fig


def _scale_bar(fig: go.Figure, rows: int, cols: int, spacing: tuple[float, float]) -> None:
    width_mm = cols * spacing[1]
    nice = [1, 2, 5, 10, 20, 50, 100, 200, 500]
    length_mm = max([n for n in nice if n <= width_mm / 4] or [nice[0]])
    length_px = length_mm / spacing[1]
    x1, y = cols * 0.95, rows * 0.95
    fig.add_shape(type="line", x0=x1 - length_px, x1=x1, y0=y, y1=y, line=dict(color="yellow", width=4))
    fig.add_annotation(x=x1 - length_px / 2, y=y, text=f"{length_mm:g} mm", showarrow=False, yshift=14,
                       font=dict(color="yellow", size=13), bgcolor="rgba(0,0,0,0.6)")  # legible on bright tissue


def disclaimer() -> None:
    st.caption(":warning: Research and teaching tool. **Not a diagnostic device**: do not use it "
               "to make or change clinical decisions.")
