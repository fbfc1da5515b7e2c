"""The models' warm-up: app.py loads both default models in a background thread once per
process, after the first page is drawn, and every page shares the one copy.

The warm-up inside a real server is exercised by ``tests/test_browser.py`` (timings: ``python -m bench``);
here a real server's warm-up is checked to keep TensorFlow's start-up lines out of its stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from page_support import DEFAULT_MODELS, real_models_present
from ui.server import running_dashboard

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


# ----------------------------------------------------------------------------- a real server's stderr

#: TensorFlow's start-up lines: absl's preamble and absl-formatted records (oneDNN, CPU features, ...).
TF_START_UP = re.compile(r"oneDNN|absl|This TensorFlow binary is optimized|tensorflow/core|^[IWEF]\d{4} \d\d:", re.M)


def _open_first_page(port: int, seconds: float = 180) -> None:
    """Be a browser tab: open a session on Streamlit's websocket and run the app's first page to its end
    (what starts the warm-up; fetching ``/`` only serves the static index.html and runs no script)."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{port}/_stcore/stream", subprotocols=["streamlit"], max_size=None,
                 open_timeout=30) as ws:
        rerun = BackMsg()
        rerun.rerun_script.query_string = ""
        rerun.rerun_script.page_script_hash = ""
        ws.send(rerun.SerializeToString())
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            message = ForwardMsg()
            message.ParseFromString(ws.recv(timeout=max(1.0, deadline - time.monotonic())))
            if message.WhichOneof("type") == "script_finished":
                return
    pytest.fail(f"the first page did not finish within {seconds} s")


def _cpu_and_busy(pid: int) -> tuple[int, bool]:
    """The process's CPU ticks so far, and whether any of its threads is running or waiting to run (or on disk)."""
    ticks = sum(int(v) for v in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[11:13])
    states = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            states.append((task / "stat").read_text().rsplit(")", 1)[1].split()[0])
        except OSError:  # the thread ended meanwhile
            continue
    return ticks, any(state in "RD" for state in states)


def _wait_for_warm_up(process: subprocess.Popen, seconds: float = 300) -> None:
    """Until TensorFlow is loaded in the server and the server has then been idle for 4 s in a row: the
    warm-up thread has loaded every model and traced its compiled paths (it leaves no other trace)."""
    deadline = time.monotonic() + seconds
    loaded, idle, last = False, 0, None
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the server exited with code {process.returncode}"
        loaded = loaded or "tensorflow" in Path(f"/proc/{process.pid}/maps").read_text()
        ticks, busy = _cpu_and_busy(process.pid)
        idle = idle + 1 if loaded and not busy and last is not None and ticks - last <= 3 else 0
        if idle >= 4:
            return
        last = ticks
        time.sleep(1)
    pytest.fail(f"the warm-up did not {'finish' if loaded else 'import TensorFlow'} within {seconds} s")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the server's threads from /proc")
def test_the_dashboards_stderr_has_no_tensorflow_start_up_lines(models_root, tmp_path):
    """``streamlit run app.py`` as a user starts it (no TF_CPP_MIN_LOG_LEVEL), a first page, the models'
    warm-up: TensorFlow's oneDNN / absl / CPU-feature lines never reach the server's stderr."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "MEDXAI_VERBOSE", "MEDXAI_MODELS")}
    env["MEDXAI_WARM_UP"] = "1"
    if models_root != DEFAULT_MODELS:
        env["MEDXAI_MODELS"] = str(models_root)
    err_log, out_log = tmp_path / "stderr.txt", tmp_path / "stdout.txt"
    with running_dashboard(env, out_log, stderr_log=err_log) as (url, process):
        _open_first_page(int(url.rsplit(":", 1)[1]))
        _wait_for_warm_up(process)
    stderr = err_log.read_text()
    assert not TF_START_UP.search(stderr), stderr[-3000:]
