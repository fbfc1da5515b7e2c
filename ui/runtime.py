"""What the dashboard's server process changes in Streamlit's run loop, and why (issue 13: speed).

Profiled with py-spy on an idle 2-core machine, a click on the Scan page's Invert box spent about
0.2 s in the page's own code and about 0.9 s after it, in two steps Streamlit takes after every
script run (``streamlit/runtime/scriptrunner/script_runner.py``):

1. ``_clean_problem_modules()``: when Keras is imported it calls ``keras.backend.clear_session()``,
   which resets Keras' global state, clears TensorFlow's eager kernel cache (so the next prediction
   or map re-creates its kernels) and runs a full ``gc.collect()``: about 0.45 s per rerun here.
   The dashboard keeps its models for the life of the process (``ui.models``) and builds no model
   in a page (trainings run as processes of their own, ``core.jobs``), so there is nothing for that
   reset to free. :func:`keep_keras_state` replaces it.
2. ``gc.collect(2)`` after every run (``runner.postScriptGC``, kept on: it bounds a session's memory).
   A full collection walks every object TensorFlow and the models created, about 0.4 s per rerun.
   :func:`freeze_long_lived` moves the objects alive once the models are loaded into the
   collector's permanent generation (``gc.freeze``), so later collections walk only what pages
   create. Nothing frozen is freed by the collector again: only the import-time and model-loading
   objects of the process are frozen, and they live as long as the server anyway.

Both are measured in BENCHMARKS.md (section 7) and checked by ``tests/test_runtime_ui.py``.
"""

from __future__ import annotations

import gc
import threading

_PATCHED = threading.Event()
_FROZEN = threading.Event()


def _clean_without_keras() -> None:
    """Streamlit's post-run clean-up, minus the Keras reset. Its other step closes matplotlib figures; the
    dashboard does not install matplotlib (requirements.txt), so nothing is left to do."""


def keep_keras_state() -> bool:
    """Stop Streamlit from resetting Keras after every script run; True if this call changed it.

    Streamlit looks ``_clean_problem_modules`` up by name in its script-runner module at the end of
    each run, so replacing that name is enough. Streamlit is pinned (requirements.txt); when a new
    version no longer has the function, nothing is changed and the test says so.
    """
    from streamlit.runtime.scriptrunner import script_runner

    if _PATCHED.is_set() or not hasattr(script_runner, "_clean_problem_modules"):
        return False
    script_runner._clean_problem_modules = _clean_without_keras
    _PATCHED.set()
    return True


def freeze_long_lived() -> bool:
    """Move every object alive now into the collector's permanent generation, once per process;
    True if this call froze them. Called when the models are loaded (``ui.models.warm_models``)."""
    if _FROZEN.is_set():
        return False
    _FROZEN.set()
    gc.collect()
    gc.freeze()
    return True


def through_app() -> None:
    """Make sure this page runs inside ``app.py``, also when a server's first visitor opens it by its address.

    Streamlit (1.67) treats a ``pages/`` folder beside the main script as its first form of multipage app
    (``PagesManager.uses_pages_directory``) until some session runs ``st.navigation``, which switches that off
    for the whole process. Before then, a browser opening ``/history`` on a fresh server got
    ``pages/history.py`` run alone: the sidebar listed raw file names, and app.py's page configuration,
    sidebar note, Keras-state patch and model warm-up were skipped. (Streamlit's ``AppTest`` switches the old
    mode back on before every run, so tests met it on every page switch.) Each page calls this first; outside
    app.py it runs app.py here, in the same script run (so a button's click is not lost), whose
    ``st.navigation`` switches the old mode off and runs this same page inside app.py (the address and page hash
    are the same under both navigations); then this outer run of the page stops. Inside app.py it does nothing.
    """
    import runpy
    from pathlib import Path

    from streamlit.runtime.pages_manager import PagesManager

    if PagesManager.uses_pages_directory:
        import streamlit as st

        runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
        st.stop()
