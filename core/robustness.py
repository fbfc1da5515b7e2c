"""A model's metrics on clean images and under each realistic degradation of :mod:`core.perturb`.

Each image is decoded once; the degradation is applied where a real one happens, to the grey image
as displayed (after the header's window and MONOCHROME1 inversion, before resizing), and the rest
of the model's own pipeline runs unchanged. Probabilities are the calibrated ones the model serves,
decided at its saved threshold. The table goes into ``robustness.json`` in the model folder, and
from there into the model card.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.perturb import EVALUATION, apply, label
from core.preprocess import grayscale, invert, window_level

ROBUSTNESS_FILE = "robustness.json"


def display_grey(scan, frame: int | None = None) -> np.ndarray:
    """One frame as the pipeline sees it after its window and invert steps: grey, in [0, 1]."""
    image = window_level(grayscale(scan.frame(frame)), centre=float(scan.window[0]), width=float(scan.window[1]),
                         voi=scan.voi)
    return invert(image, enabled=bool(scan.invert))


def tensor_of_grey(pipeline, grey: np.ndarray) -> np.ndarray:
    """The rest of ``pipeline`` on a grey [0, 1] image (its window is the identity on [0, 1])."""
    return pipeline(grey, window=(0.5, 1.0))[0]


def robustness_table(loaded, items, *, perturbations=EVALUATION, progress=None) -> dict:
    """Metrics of ``loaded`` on ``items`` (:class:`core.data.Item`), clean and under each perturbation.

    Returns ``{"rows": [{"perturbation", "name", "strength", "n", "accuracy", "auc", "sensitivity",
    "specificity", "positive_rate", "mean_positive"}...], "worst_auc": {...}, "threshold": t}``;
    the first row is the clean one. ``positive_rate`` is the share of images called the positive (last)
    class; ``mean_positive`` its mean probability, which shows a shortcut's drift when AUC hides it.
    """
    from core.io import load_scan
    from core.metrics import classification_metrics

    greys, labels = [], []
    for k, item in enumerate(items):
        greys.append(display_grey(load_scan(Path(item.path).read_bytes(), Path(item.path).name)))
        labels.append(item.label)
        if progress and k % 200 == 0:
            progress(f"read {k + 1}/{len(items)} images")
    y = np.asarray(labels, int)
    names = loaded.class_names
    rows = []
    for name, strength in ((None, None), *perturbations):
        x = np.stack([tensor_of_grey(loaded.pipeline, grey if name is None else apply(grey, name, strength))
                      for grey in greys])
        p = loaded.predict(x)
        metrics = classification_metrics(y, p, names, threshold=loaded.threshold)
        rows.append({"perturbation": "none" if name is None else label(name, strength), "name": name or "none",
                     "strength": strength, "n": metrics["n"], "accuracy": metrics["accuracy"], "auc": metrics["auc"],
                     "sensitivity": metrics.get("sensitivity"), "specificity": metrics.get("specificity"),
                     "positive_rate": float((p[:, -1] >= loaded.threshold).mean()) if len(names) == 2 else None,
                     "mean_positive": float(p[:, -1].mean()) if len(names) == 2 else None})
        if progress:
            progress(f"{rows[-1]['perturbation']}: accuracy {rows[-1]['accuracy']:.3f}, AUC {rows[-1]['auc']}")
    scored = [r for r in rows if r["auc"] is not None]
    worst = min(scored, key=lambda r: r["auc"]) if scored else None
    return {"rows": rows, "worst_auc": worst, "threshold": loaded.threshold, "classes": names}


def write_robustness(model_dir: str | Path, table: dict, *, command: str, subset: str) -> Path:
    """``robustness.json`` in the model folder, with the command and the images it was measured on."""
    path = Path(model_dir) / ROBUSTNESS_FILE
    path.write_text(json.dumps(table | {"command": command, "images": subset}, indent=2) + "\n")
    return path


def markdown(table: dict) -> str:
    """The table as Markdown rows, for the model card and the README."""
    lines = ["| perturbation | accuracy | AUC | sensitivity | specificity | called positive |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in table["rows"]:
        def pct(v):
            return "n/a" if v is None else f"{100 * v:.1f}%"

        lines.append(f"| {row['perturbation']} | {pct(row['accuracy'])} | "
                     f"{'n/a' if row['auc'] is None else format(row['auc'], '.3f')} | {pct(row['sensitivity'])} | "
                     f"{pct(row['specificity'])} | {pct(row['positive_rate'])} |")
    return "\n".join(lines)
