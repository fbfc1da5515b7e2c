"""Read training runs: every folder under ``assets/`` that holds a ``history.csv``.

The default models (``assets/models/<task>/``) are run folders themselves; further runs
live in ``assets/runs/<task>/<run>/``. A run still training has a growing ``history.csv``
but no ``params.json`` / ``metrics.json`` yet; it is listed all the same.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

ASSETS = Path(__file__).resolve().parent.parent / "assets"


def assets_root() -> Path:
    """Where runs are read from: ``MEDXAI_ASSETS`` if set (tests, other checkouts), else ``assets/``."""
    configured = os.environ.get("MEDXAI_ASSETS")
    return Path(configured) if configured else ASSETS


@dataclass(frozen=True)
class Run:
    """One training run: its per-epoch history, parameters and final validation metrics."""

    path: Path
    run_id: str
    task: str
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)  # column -> list of floats, one per epoch
    is_default: bool = False
    info: dict = field(default_factory=dict)  # the run's model.json, once written
    localisation: dict = field(default_factory=dict)  # read_localisation: where its maps point, once measured

    @property
    def title(self) -> str:
        """The model's short name, from its own ``model.json`` (the task's name until it is written)."""
        return str(self.info.get("short_title") or self.info.get("title") or self.task)

    @property
    def epochs(self) -> int:
        return len(self.history.get("epoch", []))

    @property
    def kept_epoch(self) -> int | None:
        """The epoch whose weights the run kept: the best of ``params["monitor"]`` (mode max, as the
        checkpoint in ``core.train``), 1-based; None until the run names its monitor or has a finite value."""
        values = self.history.get(str(self.params.get("monitor", "")), [])
        scored = [(value, epoch) for epoch, value in zip(self.history.get("epoch", []), values) if value == value]
        return max(scored, key=lambda pair: (pair[0], -pair[1]))[1] if scored else None

    @property
    def finished(self) -> bool:
        """Whether the run wrote its validation metrics (it has not, while it is still training)."""
        return bool(self.metrics)

    def history_csv(self) -> bytes:
        return (self.path / "history.csv").read_bytes()

    def summary(self) -> dict:
        """One row for a table of runs."""
        return {
            "run": self.run_id,
            "task": self.task,
            "default model": "yes" if self.is_default else "",
            "val accuracy": _round(self.metrics.get("accuracy")),
            "val AUC": _round(self.metrics.get("auc")),
            "Grad-CAM pointing": _round(self.localisation.get("pointing"), 3),
            "centre prior": _round(self.localisation.get("centre"), 3),
            "ECE": _round(self.metrics.get("calibration", {}).get("ece")),
            "status": "finished" if self.finished else "no metrics yet",
            "epochs": self.epochs,
            "kept epoch": self.kept_epoch,
            "seed": self.params.get("seed"),
            "input size": self.params.get("input_size"),
            "train / validation": f"{self.params.get('n_train', '?')} / {self.params.get('n_validation', '?')}",
            "minutes": _round(self.params["train_seconds"] / 60, 1) if self.params.get("train_seconds") else None,
        }


#: The files ``python -m core explain-eval ... --json`` wrote into a run's folder, one per set of outlined images.
LOCALISATION_FILES = "localisation_*.json"


def read_localisation(folder: Path) -> dict:
    """Where a run's Grad-CAM points on outlined images it never trained on, from the ``explain-eval --json``
    output saved in its folder (``localisation_unseen.json``, ``localisation_valid.json``): the pointing game over
    all images, its 95% interval, the share of the map's energy inside the outline and the same game for a fixed
    blob in the image centre (the baseline a map must beat). Files measured on images the model trained on
    (``subset = seen_in_training``) are passed over; {} when no file holds a Grad-CAM row."""
    for path in sorted(folder.glob(LOCALISATION_FILES)):
        try:
            report = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "seen_in_training" in str(report.get("subset", "")) or not isinstance(report.get("groups"), list):
            continue
        rows = {(g.get("method"), g.get("layer")): g for g in report["groups"] if g.get("class") == "all"}
        layers = [layer for method, layer in rows if method == "gradcam"]
        if not layers:
            continue
        layer = next((name for name in report.get("layers") or [] if name in layers), layers[0])
        found = rows[("gradcam", layer)]["metrics"]
        centre = (rows.get(("baseline:centre", None)) or {}).get("metrics", {}).get("pointing_game", {})
        return {"file": path.name, "subset": str(report.get("subset", "")), "layer": layer,
                "map_score": str(report.get("map_score") or "logit"),  # what the maps explained (before: the logit)
                "n": found["pointing_game"].get("n"), "pointing": found["pointing_game"]["mean"],
                "low": found["pointing_game"].get("low"), "high": found["pointing_game"].get("high"),
                "energy": (found.get("energy") or {}).get("mean"), "centre": centre.get("mean")}
    return {}


def record_sentence(record: dict) -> tuple[bool, str] | None:
    """How far to trust where a model's maps point, from its :func:`read_localisation` record, for a scan with no
    expert outline to check the map against: (whether the maps do no better than a fixed blob in the image centre,
    one paragraph for the page and the report). None when the model was never measured against outlines.

    >>> below, text = record_sentence({"n": 62, "pointing": 0.08, "low": 0.02, "high": 0.15, "centre": 0.15,
    ...                                "layer": "last_conv", "map_score": "logit", "file": "localisation_valid.json"})
    >>> below, text.split(": ")[1][:62]
    (True, 'over 62 outlined images it never trained on, its Grad-CAM peak')
    >>> record_sentence({}) is None
    True
    """
    if not record or record.get("pointing") is None or not record.get("n"):
        return None
    interval = (f" [{record['low']:.0%}, {record['high']:.0%}]" if record.get("low") is not None
                and record.get("high") is not None else "")
    score = " of the class's log-odds" if record.get("map_score") == "log-odds" else ""
    centre = record.get("centre")
    text = (f"Where this model's maps point, measured: over {record['n']} outlined images it never trained on, its "
            f"Grad-CAM peak{score} (layer {record.get('layer') or 'last'}) lands on the experts' outline on "
            f"{record['pointing']:.0%}{interval}" + (f", a fixed blob in the image centre on {centre:.0%}"
                                                     if centre is not None else "") + ". ")
    below = centre is not None and record["pointing"] <= centre
    if below:
        text += ("No better than the blob: read the map as what the model used, not as where the finding is "
                 "(`docs/EXPLANATIONS.md`).")
    elif centre is not None and record["pointing"] < 2 * centre:
        text += ("Better than the blob, but less than twice as often: one map's peak is not a location to rely on "
                 "(`docs/EXPLANATIONS.md`).")
    else:
        text += "One map's hit or miss says little on its own (`docs/EXPLANATIONS.md`)."
    return below, text


def centre_prior(runs: list[Run]) -> float | None:
    """The centre blob's pointing game shared by ``runs`` (the most common value: the same outlined images give
    every run the same blob), or None when none of them was measured."""
    centres = [run.localisation["centre"] for run in runs if run.localisation.get("centre") is not None]
    return max(set(centres), key=centres.count) if centres else None


def _round(value, digits: int = 4):
    return None if value is None else round(float(value), digits)


def read_history(path: Path) -> dict:
    """``history.csv`` as columns of floats (Keras CSVLogger format)."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            for key, value in row.items():
                if key is None:  # surplus fields of a line being written: ignore
                    continue
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    columns.setdefault(key, []).append(float("nan"))
    if "epoch" in columns:
        columns["epoch"] = [int(e) + 1 for e in columns["epoch"]]  # 1-based, as people count
    return columns


def load_run(path: str | Path, root: str | Path | None = None) -> Run:
    path = Path(path)
    root = Path(root) if root is not None else assets_root()
    params = _read_json(path / "params.json")
    metrics = _read_json(path / "metrics.json")
    info = _read_json(path / "model.json")
    try:
        run_id = str(path.resolve().relative_to(root.resolve()))
    except ValueError:
        run_id = path.name
    is_default = path.parent.name == "models"
    # models/<task>/ or runs/<task>/<run>/: the folder names the task until params.json exists.
    task = info.get("task") or params.get("task") or (path.name if is_default else path.parent.name)
    return Run(path=path, run_id=run_id, task=task, params=params, metrics=metrics,
               history=read_history(path / "history.csv"), is_default=is_default, info=info,
               localisation=read_localisation(path))


def list_runs(root: str | Path | None = None, task: str | None = None) -> list[Run]:
    """Every run under ``root`` (default :func:`assets_root`), default models first, then by run id."""
    root = Path(root) if root is not None else assets_root()
    folders = [p.parent for p in root.glob("models/*/history.csv")]
    folders += [p.parent for p in root.glob("runs/*/*/history.csv")]
    runs = [load_run(folder, root) for folder in folders]
    if task:
        runs = [r for r in runs if r.task == task]
    return sorted(runs, key=lambda r: (not r.is_default, r.task, r.run_id))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
