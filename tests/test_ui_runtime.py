"""ui.runtime: Streamlit's run loop without a Keras reset after every rerun, and long-lived objects frozen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui import runtime

ROOT = Path(__file__).resolve().parent.parent


def test_a_rerun_no_longer_resets_keras():
    """Streamlit 1.67 calls keras.backend.clear_session() after every script run (which also clears
    TensorFlow's kernel cache and runs a full collection); with keep_keras_state it does not."""
    import keras
    from streamlit.runtime.scriptrunner import script_runner

    runtime.keep_keras_state()
    assert script_runner._clean_problem_modules is runtime._clean_without_keras
    assert not runtime.keep_keras_state()  # once per process
    first = keras.layers.Dense(2)
    AppTest.from_string("import streamlit as st\nst.write('a page')").run()
    second = keras.layers.Dense(2)
    assert second.name != first.name  # Keras' name counter survived the run: no clear_session happened


def test_the_app_itself_keeps_keras_state(app):
    from streamlit.runtime.scriptrunner import script_runner

    app.run()
    assert script_runner._clean_problem_modules is runtime._clean_without_keras


def test_long_lived_objects_are_frozen_once_per_process():
    code = ("import gc\nfrom ui.runtime import freeze_long_lived\n"
            "assert gc.get_freeze_count() == 0\n"
            "assert freeze_long_lived() and gc.get_freeze_count() > 0\n"
            "assert not freeze_long_lived()\nprint('ok')")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
