"""The models' warm-up: app.py loads both default models in a background thread once per
process, after the first page is drawn, and every page shares the one copy.

The warm-up inside a real server is exercised by ``tests/test_browser.py`` (timings: ``python -m bench``).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from page_support import DEFAULT_MODELS, real_models_present

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_warm_up_starts_once_per_process_and_can_be_turned_off(monkeypatch):
    from ui import models as common

    monkeypatch.setattr(common, "_WARM_UP_STARTED", threading.Event())
    monkeypatch.setattr(common, "warm_models", lambda: [])  # the thread's work is tested below
    monkeypatch.setenv("MEDXAI_WARM_UP", "0")
    assert common.start_warm_up() is False and not common._WARM_UP_STARTED.is_set()
    monkeypatch.setenv("MEDXAI_WARM_UP", "1")
    assert common.start_warm_up() is True
    assert common.start_warm_up() is False  # the second session of the process starts nothing


def test_concurrent_requests_load_a_model_once_and_share_it(monkeypatch):
    """The warm-up thread and a page asking at the same moment get one object, loaded once
    (``st.cache_resource`` computes a key once and makes concurrent callers wait)."""
    if not real_models_present():
        pytest.skip(f"the default models are missing from {DEFAULT_MODELS}")
    from ui import models as common

    folder = str(DEFAULT_MODELS / "chest_xray")
    common._shared.clear()
    loads = []
    real_load = common.load_model

    def counted(path):
        loads.append(path)
        return real_load(path)

    monkeypatch.setattr(common, "load_model", counted)
    results = [None] * 4

    def ask(i):
        results[i] = common.shared_model(folder)

    threads = [threading.Thread(target=ask, args=(i,), name="model-warm-up" if i == 0 else f"page-{i}")
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [folder]
    assert all(result is results[0] for result in results)


def test_warm_up_loads_every_default_model_and_its_compiled_paths(monkeypatch):
    if not real_models_present():
        pytest.skip(f"the default models are missing from {DEFAULT_MODELS}")
    monkeypatch.delenv("MEDXAI_MODELS", raising=False)
    from ui import models as common

    folders = [entry.folder for entry in common.model_folders()]
    assert common.warm_models() == folders and len(folders) >= 2
    for folder in folders:
        loaded = common.shared_model(folder)
        assert "_forward" in vars(loaded)  # the compiled forward pass was built (cached_property)
        assert loaded.last_conv in loaded.explainer._paths  # and the compiled Grad-CAM path


def test_a_missing_model_is_skipped_by_the_warm_up(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDXAI_MODELS", str(tmp_path))  # no model folders at all
    from ui import models as common

    assert common.warm_models() == []
