"""Benchmark 4: dashboard start-up to a page with the model ready, and memory per session.

- floor: ``python -c "import tensorflow, streamlit"`` in a new process, the least any
  Streamlit + TensorFlow app can take before it does anything.
- ours: from launching ``streamlit run app.py --server.headless true`` to the Explain page
  showing the model's answer in headless Chromium: server start, the page's imports, reading the
  first sample (RG1_UNCI.dcm), loading the model, the forward pass. RG1_UNCI.dcm is an adult film,
  outside the chest model's range, so since issue 13 that answer is the out-of-range sentence with
  its "show anyway" button (the same forward pass and outlier check as a prediction). Also timed:
  past that button, the same page with all five maps side by side drawn ("All maps ready.").
- first page, then Explain: what a user does. Launch, the Scan page drawn (the default sample),
  a 5 s look at it, then a click on Explain: the time from the click to the prediction, with the
  models' background warm-up (``app.py`` starts it after the first page) and without it
  (``MEDXAI_WARM_UP=0``), launches alternating.
- memory: resident set of the server process (psutil) with one session, then after
  ``sessions`` more browser sessions have each drawn the Explain page.

Launches alternate with the floor, so both see the same machine load.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from bench.common import Row, python_env
from ui.server import running_dashboard

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TIMEOUT_MS = 300_000


def browser_missing(log) -> str | None:
    """Why a browser benchmark cannot run here (said once in the log), or None when it can."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        reason = "playwright is not installed"
    else:
        reason = None if Path(CHROMIUM).exists() else f"no browser at {CHROMIUM}"
    if reason:
        log(f"  skipped: {reason}")
    return reason


def run(model_dir: str, *, launches: int, sessions: int, log=print) -> tuple[list[Row], dict]:
    missing = browser_missing(log)
    if missing:
        return [], {"skipped": missing}
    from playwright.sync_api import sync_playwright

    floors, ready, full, memory = [], [], [], {}
    flow = {"warm": [], "cold": []}  # (scan page shown, click on Explain to prediction) per launch
    with tempfile.TemporaryDirectory() as models, sync_playwright() as playwright:
        # The app reads models from MEDXAI_MODELS/<task>: point chest_xray at the benchmarked model.
        (Path(models) / "chest_xray").symlink_to(Path(model_dir).resolve())
        env = python_env() | {"MEDXAI_MODELS": models}
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            for i in range(launches):
                floors.append(_floor())
                measure_memory = i == launches - 1
                t_ready, t_full, mem = _launch(browser, env, sessions if measure_memory else 0)
                ready.append(t_ready)
                full.append(t_full)
                memory = mem or memory
                for mode in ("warm", "cold"):
                    flow[mode].append(_scan_then_explain(browser, env | {"MEDXAI_WARM_UP": "1" if mode == "warm" else "0"}))
                log(f"  launch {i + 1}: floor {floors[-1]:.1f} s, prediction shown {t_ready:.1f} s, "
                    f"all maps {t_full:.1f} s; Scan page first: shown {flow['warm'][-1][0]:.1f} s, then Explain "
                    f"{flow['warm'][-1][1]:.1f} s after the click with the warm-up, {flow['cold'][-1][1]:.1f} s without "
                    f"(Scan page shown {flow['cold'][-1][0]:.1f} s)")
        finally:
            browser.close()
    floor, t_ready, t_full = statistics.median(floors), statistics.median(ready), statistics.median(full)
    details = {"floor_seconds": floors, "ready_seconds": ready, "all_maps_seconds": full, "memory_mb": memory,
               "scan_then_explain_seconds": flow, "dwell_seconds": DWELL_SECONDS}
    median = {mode: [statistics.median(x[k] for x in flow[mode]) for k in (0, 1)] for mode in flow}
    rows = [
        Row("4 start-up", "launch to Explain page with its answer (model ready; RG1: the out-of-range sentence)", t_ready, "s", floor,
            "import tensorflow, streamlit", "<= 2", extra=details),
        Row("4 start-up", "launch to Explain page with all five maps", t_full, "s", floor,
            "import tensorflow, streamlit", ""),
        Row("4 start-up", "launch to the Scan page drawn (first page, default sample)", median["warm"][0], "s",
            floor, "import tensorflow, streamlit", ""),
        Row("4 start-up", f"Scan page, {DWELL_SECONDS:g} s look, click on Explain to its answer: with warm-up",
            median["warm"][1], "s", median["cold"][1], "without warm-up", "",
            note="the models load in the background while the user looks at the first page"),
    ]
    if memory:
        per = (memory["after"] - memory["one"]) / max(memory["extra_sessions"], 1)
        rows += [
            Row("4 start-up", "server resident memory, one session", memory["one"], "MB", None, "", ""),
            Row("4 start-up", f"memory per extra session ({memory['extra_sessions']} more)", per, "MB",
                memory["one"], "one-session RSS", "",
                note="the model, its clones and compiled maps are shared; a session holds its scan"),
        ]
    return rows, details


DWELL_SECONDS = 5.0


def _scan_then_explain(browser, env: dict) -> tuple[float, float]:
    """Launch, wait for the Scan page's scan, look for DWELL_SECONDS, click Explain: (shown, to prediction)."""
    start = time.perf_counter()
    with _server(env) as (url, _):
        page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
        page.goto(url)
        page.get_by_text("1841 x 1955 px").first.wait_for(timeout=TIMEOUT_MS)  # the scan's caption
        shown = time.perf_counter() - start
        page.wait_for_timeout(DWELL_SECONDS * 1000)
        clicked = time.perf_counter()
        page.get_by_role("link", name="Explain").first.click()
        _answer(page)
        to_prediction = time.perf_counter() - clicked
        page.context.close()
        return shown, to_prediction


@contextmanager
def _server(env: dict):
    """``streamlit run app.py`` on a free port, healthy: yields (url, process); always terminated."""
    with tempfile.TemporaryDirectory() as folder, running_dashboard(env, Path(folder) / "streamlit.log") as running:
        yield running


def _floor() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow, streamlit"], env=python_env(), check=True,
                   capture_output=True)
    return time.perf_counter() - start


SHOW_ANYWAY = "Show the prediction and maps anyway"


def _answer(page) -> None:
    """Wait for the Explain page's answer: the prediction, or the sentence that the scan is out of range."""
    page.get_by_text("Predicted:").first.or_(page.get_by_role("button", name=SHOW_ANYWAY)).first.wait_for(
        timeout=TIMEOUT_MS)


def _all_maps(page) -> None:
    """Past the out-of-range gate (when shown), every method side by side, until all five maps are drawn."""
    if page.get_by_role("button", name=SHOW_ANYWAY).count():
        page.get_by_role("button", name=SHOW_ANYWAY).first.click()
        page.get_by_text("Predicted:").first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_role("radio", name="All methods side by side").click()  # a segmented control's option
    page.get_by_text("All maps ready.").first.wait_for(state="attached", timeout=TIMEOUT_MS)


def _launch(browser, env: dict, extra_sessions: int) -> tuple[float, float, dict]:
    import psutil

    start = time.perf_counter()
    pages = []
    with _server(env) as (url, server):
        try:
            page = browser.new_context().new_page()
            pages.append(page)
            page.goto(f"{url}/explain")
            _answer(page)
            t_ready = time.perf_counter() - start
            _all_maps(page)
            t_full = time.perf_counter() - start
            memory = {}
            if extra_sessions:
                process = psutil.Process(server.pid)
                time.sleep(1.0)
                memory["one"] = _rss_mb(process)
                for _ in range(extra_sessions):
                    other = browser.new_context().new_page()
                    pages.append(other)
                    other.goto(f"{url}/explain")
                    _answer(other)
                    _all_maps(other)
                time.sleep(1.0)
                memory["after"] = _rss_mb(process)
                memory["extra_sessions"] = extra_sessions
            return t_ready, t_full, memory
        finally:
            for page in pages:
                page.context.close()


def _rss_mb(process) -> float:
    processes = [process] + process.children(recursive=True)
    return sum(p.memory_info().rss for p in processes) / 2**20
