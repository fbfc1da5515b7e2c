"""Helpers for the teaching pages' tests (Lesson, Quiz, Classroom): clicks through the image component's
session value, and what the model says about a curated case, recomputed with ``core`` only. Their fixtures
(a fresh app per session of a student or a teacher, the class database in a temporary folder, the stand-in
shortcut model, the media the app stores) are in ``conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from conftest import REPO

ASSETS = REPO / "assets"


def check_clean(at) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def button(at, label: str):
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r} among {[b.label for b in at.button]}"
    return found[0]


def texts(at) -> str:
    """Every markdown, caption, info, warning, success and error text of the page, one per line."""
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "success", "error", "subheader"):
        parts += [e.value for e in getattr(at, kind)]
    return "\n".join(parts)


def metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


# ----------------------------------------------------------------------------- the curated cases, with core only

def samples() -> dict:
    """sample key -> (path, true label, task, mask path or None, spacing) of every curated case."""
    import json

    found = {}
    for listing in sorted(list((ASSETS / "samples").glob("*/samples.json")) + list((ASSETS / "teaching").glob("*/samples.json"))):
        spec = json.loads(listing.read_text())
        for item in spec["samples"]:
            path = listing.parent / item["file"]
            found[path.relative_to(ASSETS).as_posix()] = (
                path, item.get("true_label"), item.get("task"),
                listing.parent / item["mask"] if item.get("mask") else None,
                tuple(item["spacing"]) if item.get("spacing") else None)
    return found


_LOADED: dict = {}


def loaded_for(models_root: Path, task: str):
    from core.model import load_model

    key = (str(models_root), task)
    if key not in _LOADED:
        _LOADED[key] = load_model(models_root / task)
    return _LOADED[key]


def case_scan(key: str):
    import dataclasses

    from core.io import load_scan

    path, _, _, _, spacing = samples()[key]
    scan = load_scan(path.read_bytes(), path.name)
    return dataclasses.replace(scan, spacing=spacing) if scan.spacing is None and spacing else scan


def case_mask(key: str, shape) -> np.ndarray | None:
    from core.masks import load_mask

    mask = samples()[key][3]
    return None if mask is None else load_mask(mask.read_bytes(), shape)


def model_answers(models_root: Path) -> dict:
    """sample key -> core.teaching.ModelAnswer, computed with core alone (what the pages must agree with)."""
    from core.teaching import ModelAnswer

    answers = {}
    for key, (_, _, task, _, _) in samples().items():
        loaded = loaded_for(models_root, task)
        p = loaded.predict(loaded.pipeline.scan_tensor(case_scan(key)))[0]
        names = loaded.class_names
        answers[key] = ModelAnswer(names[loaded.decide(p)], {n: float(v) for n, v in zip(names, p)})
    return answers


def displayed_click(row: int, col: int, shape, width: int = 720) -> dict:
    """The component's value for a click at the scan's (row, col) on a picture shown ``width`` pixels wide."""
    rows, cols = shape
    height = width * rows / cols
    return {"x": (col + 0.5) * width / cols, "y": (row + 0.5) * height / rows, "width": width, "height": height,
            "unix_time": 1}
