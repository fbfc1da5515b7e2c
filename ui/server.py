"""The dashboard in a process of its own, as the README starts it: ``streamlit run app.py`` on a free
loopback port. The browser tests and the benchmarks drive it as a user's browser would."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from core.multiworker import free_port

REPO = Path(__file__).resolve().parents[1]


class DashboardDidNotStart(RuntimeError):
    """The server exited, or did not answer its health check in time; the message ends with its log."""


@contextmanager
def running_dashboard(env: dict, log: Path, *, stderr_log: Path | None = None,
                      timeout: float = 120.0) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``streamlit run app.py`` with ``env`` on a free loopback port, its output in ``log`` (stderr
    in ``stderr_log`` when given); yield ``(url, process)`` once ``/_stcore/health`` answers, and always
    stop it (terminate, then kill)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
               "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"]
    with open(log, "w") as out:
        err = open(stderr_log, "w") if stderr_log else None
        try:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err or subprocess.STDOUT)
        finally:
            if err:
                err.close()
    try:
        _wait_healthy(url, process, timeout, stderr_log or log)
        yield url, process
    finally:
        process.terminate()  # training processes it started die with it (PR_SET_PDEATHSIG)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DashboardDidNotStart(f"streamlit exited with code {process.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.05)  # the start-up benchmark times launches: poll finely
    raise DashboardDidNotStart(f"streamlit did not answer {url}/_stcore/health within {timeout:g} s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return ""
