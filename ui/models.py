"""Models for the pages: which model folders exist, one shared copy of each, the model picker.

Every session shares one copy of each model folder (explanations work on clones, so nobody's
request changes the model another session uses). ``st.cache_resource`` holds it; its per-key lock
means a model is loaded once even when the warm-up thread and a page ask for it at the same moment.
The warm-up thread (:func:`start_warm_up`, started by ``app.py`` after the first page is drawn) is
kept because ``st.cache_resource`` alone loads a model only when a page first asks for it: with the
warm-up the Explain page's prediction shows about 0.5 s after the click instead of 4 s (BENCHMARKS.md).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import streamlit as st

from core.model import INFO_FILE, LoadedModel, ModelError, load_model
from core.registry import discover, extra_roots
from core.routing import Route, route
from ui.runtime import freeze_long_lived
from core.runtime import quiet_tensorflow
from core.settings import SettingsError
from ui.state import Keys

ROOT = Path(__file__).resolve().parent.parent


def models_dir() -> Path:
    """The folder holding one model folder per default model: ``MEDXAI_MODELS`` or ``assets/models``."""
    configured = os.environ.get("MEDXAI_MODELS")
    return Path(configured) if configured else ROOT / "assets" / "models"


@dataclass(frozen=True)
class ModelEntry:
    """A model folder the picker offers: its facts, or why it cannot be used."""

    folder: str
    title: str
    info: dict | None
    problem: str | None = None
    origin: str = "default"  # "default", "imported" or "trained" (core.registry.ModelFolder.origin)

    @property
    def task(self) -> str:
        return (self.info or {}).get("task") or Path(self.folder).name


def model_folders() -> list[ModelEntry]:
    """Every model folder: the defaults (:func:`models_dir`) first, then those of the ``extra_models`` folders
    (:mod:`core.registry`), each root by folder name; a folder that fails its checks says why."""
    roots, unreadable = [models_dir()], []
    try:
        roots += extra_roots()
    except SettingsError as err:
        unreadable = [ModelEntry("settings", "Extra models", None, f"The extra model folders cannot be read: {err}",
                                 "settings")]
    return [ModelEntry(str(m.folder), m.title, m.info, m.problem, m.origin) for m in discover(roots)] + unreadable


@st.cache_resource(show_spinner=False, max_entries=16)
def _shared(folder: str, stamp: float) -> LoadedModel:
    quiet_tensorflow()  # the first model imports TensorFlow: without its start-up lines in the server log
    return load_model(folder)


def shared_model(folder: str) -> LoadedModel:
    """The process's one copy of a model folder (reloaded when its ``model.json`` changes)."""
    stamp = (Path(folder) / INFO_FILE).stat().st_mtime if (Path(folder) / INFO_FILE).exists() else 0.0
    return _shared(str(folder), stamp)


def get_model(folder: str) -> LoadedModel:
    """:func:`shared_model` with a spinner while it loads."""
    with st.spinner("Loading the model…"):
        return shared_model(folder)


_WARM_UP_STARTED = threading.Event()
_WARM_UP_GUARD = threading.Lock()


def start_warm_up() -> bool:
    """Start :func:`warm_models` in a background thread, once per process; True if started now.

    ``MEDXAI_WARM_UP=0`` turns it off (the tests do, so that no thread loads models behind them).
    """
    if os.environ.get("MEDXAI_WARM_UP", "1") == "0":
        return False
    with _WARM_UP_GUARD:
        if _WARM_UP_STARTED.is_set():
            return False
        _WARM_UP_STARTED.set()
    threading.Thread(target=warm_models, name="model-warm-up", daemon=True).start()
    return True


def warm_models() -> list[str]:
    """Load every model folder and trace its compiled forward pass and Grad-CAM path on a blank
    input, so the first real request does not pay for it. Returns the folders warmed; a model that
    cannot be loaded is skipped here and reported by the page that needs it."""
    warmed = []
    for entry in model_folders():
        if entry.problem:
            continue
        try:
            loaded = shared_model(entry.folder)
        except ModelError:
            continue
        size, channels = int(loaded.pipeline.input_size), int(loaded.pipeline.channels)
        blank = np.zeros((1, size, size, channels), np.float32)
        loaded.predict_with_distance(blank)
        if loaded.last_conv:
            loaded.explainer.saliency(blank, "gradcam", 0, loaded.last_conv)
        warmed.append(entry.folder)
    freeze_long_lived()  # TensorFlow's and the models' objects: no longer walked by every post-run collection
    return warmed


def suggested_route(chosen, scan) -> Route | None:
    """Where this scan should go: the sample's own model, else :func:`core.routing.route` over every usable
    model folder (remembered per scan in the session). None when no model is usable."""
    entries = [e for e in model_folders() if e.problem is None]
    if not entries:
        return None
    if chosen.model:
        entry = next((e for e in entries if e.task == chosen.model), None)
        if entry is not None:
            # A curated case comes from the model's own dataset (its set names a source); a pydicom-data file
            # only shows the kind of scan the model reads, and may still fail its outlier check.
            return Route(entry.folder, f"this sample is one of the {entry.title} model's cases." if chosen.source else
                         f"this sample shows what the {entry.title} model reads, but is not from its dataset.")
    routes = st.session_state.setdefault(Keys.ROUTES, {})
    key = (chosen.digest, tuple(e.folder for e in entries))
    if key not in routes:
        models = []
        for entry in entries:
            try:
                models.append((entry.folder, get_model(entry.folder)))
            except ModelError:
                continue
        if not models:
            return None
        routes.clear()  # one scan at a time
        routes[key] = route(scan, models)
    return routes[key]


def models_that_fit(scan, *, exclude: str | None = None) -> list[str]:
    """Titles of the usable models (other than ``exclude``) whose outlier check finds the scan in range."""
    from core.predict import predict_tensors

    titles = []
    for entry in model_folders():
        if entry.problem or entry.folder == exclude:
            continue
        try:
            loaded = get_model(entry.folder)
        except ModelError:
            continue
        prediction = predict_tensors(loaded, loaded.pipeline.scan_tensor(scan))[0]
        if prediction.in_range and prediction.distance is not None:
            titles.append(loaded.title)
    return titles


def model_choice(chosen, scan) -> LoadedModel | None:
    """The model picker, set to the model the scan suggests and saying why; a choice the person makes
    holds for this scan until another scan is chosen."""
    found = model_folders()
    entries = [e for e in found if e.problem is None]
    if not entries:
        st.error(f"No model is available: {models_dir()} holds no usable model folder.")
        for entry in found:  # a folder that fails its checks says why
            st.caption(f"{Path(entry.folder).name}: {entry.problem}")
        return None
    folders = [e.folder for e in entries]
    titles = {e.folder: e.title for e in entries}
    suggestion = suggested_route(chosen, scan)
    suggested = suggestion.folder if suggestion and suggestion.folder in folders else folders[0]
    choices = st.session_state.setdefault(Keys.MODEL, {})
    current = choices.get(chosen.digest, suggested)
    if current not in folders:
        current = suggested
    folder = st.selectbox("Model", folders, format_func=titles.get, index=folders.index(current),
                          key=f"{Keys.MODEL_WIDGET}_{chosen.digest}")
    choices.clear()
    choices[chosen.digest] = folder
    if suggestion is not None:
        if folder == suggestion.folder:
            st.caption(f"Chosen for this scan: {suggestion.reason}")
        else:
            st.caption(f"Chosen by you. The scan suggests the {titles.get(suggestion.folder, 'other')} model: "
                       f"{suggestion.reason}")
    try:
        return get_model(folder)
    except ModelError as err:
        st.error(str(err))
        return None
