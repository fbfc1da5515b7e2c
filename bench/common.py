"""What every benchmark shares: warm, interleaved, repeated timing; result rows; the machine.

Every figure the benchmarks report is a ratio of two things measured side by side in the
same process and the same minutes, so a busy machine slows both sides alike. Timings are
medians over ``repeats`` runs taken after ``warmup`` untimed runs; two functions compared
with each other are run alternately (A B A B ...), never one block after the other.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_time(fn, *, repeats: int = 7, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` in seconds, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def side_by_side(fns: dict, *, repeats: int = 7, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each function, measured in turn within every repetition."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def first_call(fn) -> float:
    """Seconds of one call: for one-off costs such as building and tracing."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@dataclass
class Row:
    """One line of the table: ``value / baseline = ratio`` against ``target``."""

    bench: str
    name: str
    value: float  # the measured quantity (seconds, images/s, MB, ...)
    unit: str
    baseline: float | None = None  # what the value is divided by
    baseline_name: str = ""
    target: str = ""  # e.g. "<= 1.5" or ">= 3"; empty for context rows
    note: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline

    @property
    def met(self) -> bool | None:
        if not self.target or self.ratio is None:
            return None
        op, bound = self.target.split()
        return self.ratio <= float(bound) if op == "<=" else self.ratio >= float(bound)

    def to_dict(self) -> dict:
        return asdict(self) | {"ratio": self.ratio, "met": self.met}


def format_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1000:.1f} ms" if value < 1 else f"{value:.2f} s"
    if unit == "MB":
        return f"{value:.0f} MB"
    return f"{value:.1f} {unit}"


def table(rows: list[Row]) -> str:
    """A Markdown table of the rows, as BENCHMARKS.md shows it."""
    lines = ["| benchmark | measured | against | ratio | target | |", "|---|---|---|---|---|---|"]
    for row in rows:
        against = f"{row.baseline_name} {format_value(row.baseline, row.unit)}" if row.baseline is not None else ""
        ratio = f"{row.ratio:.2f}" if row.ratio is not None else ""
        status = {True: "met", False: "NOT met", None: ""}[row.met]
        lines.append(f"| {row.bench}: {row.name} | {format_value(row.value, row.unit)} | {against} | {ratio} "
                     f"| {row.target} | {status} |")
    return "\n".join(lines)


def machine() -> dict:
    """The machine and what else was running on it while the benchmarks ran."""
    import psutil

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    training = subprocess.run(["pgrep", "-f", "core train"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "gpu": "none",
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "training_processes": len(training),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def versions() -> dict:
    from core.model import library_versions

    found = library_versions()
    for name in ("streamlit", "PIL", "scipy"):
        try:
            found[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001
            pass
    return found


def python_env() -> dict:
    """Environment for child processes: quiet TensorFlow, the repository importable."""
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
