"""serve.py: the README's launcher loads the models while the server starts, and shares them.

The launch itself, in a real browser, is covered by ``tests/test_browser.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from page_support import DEFAULT_MODELS, real_models_present

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_streamlit_runs_serve_py_as_an_app_with_its_warm_up():
    from streamlit.web.server.app_discovery import discover_asgi_app

    found = discover_asgi_app(REPO / "serve.py")
    assert found.is_asgi_app and found.import_string.endswith(":app")
    assert not discover_asgi_app(REPO / "app.py").is_asgi_app  # app.py stays the plain dashboard script


def test_concurrent_requests_load_a_model_once_and_share_it(monkeypatch):
    """The warm-up thread and a page asking at the same moment get one object, loaded once."""
    if not real_models_present():
        pytest.skip(f"the default models are missing from {DEFAULT_MODELS}")
    from pages import common

    folder = str(DEFAULT_MODELS / "chest_xray")
    common._SHARED.pop(folder, None)
    loads = []
    real_load = common.load_model

    def counted(path):
        loads.append(path)
        return real_load(path)

    monkeypatch.setattr(common, "load_model", counted)
    results = [None] * 4
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, common.shared_model(folder)))
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
    from core import explain
    from pages import common

    assert common.warm_models() == ["chest_xray", "brain_mri"]
    for task in ("chest_xray", "brain_mri"):
        loaded = common._SHARED[str(DEFAULT_MODELS / task)]
        assert common.shared_model(str(DEFAULT_MODELS / task)) is loaded
        assert "_forward" in vars(loaded)  # the compiled forward pass was built (cached_property)
        key = (id(loaded.model), loaded.info.get("last_conv"))
        assert explain._COMPILED._items[key][1] is loaded.model  # and the compiled Grad-CAM path


def test_a_missing_model_is_skipped_by_the_warm_up(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDXAI_MODELS", str(tmp_path))  # no model folders at all
    from pages import common

    assert common.warm_models() == []
