"""Task specs: what a model is for, written once and carried in every model folder it trains.

A task spec is a small JSON file (``assets/tasks/<name>.json`` for the default tasks, or any file
given to ``python -m core train --task-spec``). Training copies it into the model folder's
``model.json``; from then on pages, commands and the model card read the facts from the model
folder alone, so a user's imported model or a fourth task needs no code that names a task.

Keys (all but ``name`` optional):

- ``title`` / ``short_title``: how pages name the model;
- ``class_names``: class order of the softmax (default: the dataset's sub-folders, sorted);
- ``flip``: whether left-right flips are anatomy-preserving, for augmentation;
- ``augment``: ``{"degradations": {name: [probability, low, high] or null}}``, overrides of the training
  degradations (:func:`core.perturb.training_recipe`), e.g. milder blur where the finding is a thin line;
- ``near_duplicates``: remove near-identical images (difference hash) before splitting;
- ``split``: how the validation split is grouped — ``{"policy": "group", "patterns": [regex, ...]}``
  (the first capture group of the first matching pattern names the patient or study),
  ``{"policy": "file"}``, or ``{"policy": "listed", ...}`` (see :mod:`core.data`); ``"description"``
  says it in words for the model card;
- ``source``: ``{"citation", "licence", "description"}`` of the training data;
- ``routing``: ``{"modalities": [...], "body_parts": [...]}``: DICOM scans this model is meant for;
- ``intended_use`` and ``limits``: the model card's words;
- ``subgroups``: ``{"index": "../index.csv", "columns": ["hardware", ...]}``: columns of an index CSV
  (relative to the dataset folder) by whose values training reports validation metrics separately
  (``metrics.json``'s ``subgroups``, :func:`core.metrics.subgroup_metrics`);
- ``boxes``: ``{"index": "../index.csv", "column": ..., "size": [width column, height column], "class": ...,
  "skip": [index columns], "description": ...}``: experts' boxes around the finding in images of ``class``,
  ``[[x, y, width, height], ...]`` against the stored image size (none for a row flagged 1 in a ``skip``
  column), which ``train --box-loss`` teaches a class-map head where to look from (the training split's rows
  only, :func:`core.data.box_cells`).
"""

from __future__ import annotations

import json
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent.parent / "assets" / "tasks"

#: Facts a task spec may carry into model.json.
SPEC_KEYS = ("title", "short_title", "class_names", "flip", "near_duplicates", "split", "source", "routing",
             "intended_use", "limits", "augment", "subgroups", "boxes", "synthetic")


class TaskError(ValueError):
    """A task spec that cannot be used; ``str(err)`` is one sentence."""


def load_spec(name_or_path: str) -> dict:
    """A task spec by name (``assets/tasks/<name>.json``) or path; a bare unknown name gets a plain spec.

    >>> load_spec("chest_xray")["class_names"]
    ['NORMAL', 'PNEUMONIA']
    >>> load_spec("my_dataset")["split"]["policy"]
    'file'
    """
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = TASKS_DIR / f"{name_or_path}.json"
        if not path.is_file():
            return {"name": str(name_or_path), "title": str(name_or_path), "split": {"policy": "file"}}
    try:
        spec = json.loads(path.read_text())
    except FileNotFoundError:
        raise TaskError(f"The task spec {path} does not exist.") from None
    except json.JSONDecodeError:
        raise TaskError(f"The task spec {path} is not valid JSON.") from None
    if not isinstance(spec, dict) or not spec.get("name"):
        raise TaskError(f"The task spec {path} must be a JSON object with a 'name'.")
    unknown = set(spec) - set(SPEC_KEYS) - {"name"}
    if unknown:
        raise TaskError(f"The task spec {path} has unknown keys: {', '.join(sorted(unknown))}.")
    spec.setdefault("title", spec["name"])
    spec.setdefault("split", {"policy": "file"})
    return spec


def spec_facts(spec: dict) -> dict:
    """The part of a spec written into ``model.json`` (everything but its class order, which the
    model folder records on its own)."""
    return {key: spec[key] for key in SPEC_KEYS if key in spec and key != "class_names"}


def current_subgroups(info: dict) -> dict | None:
    """The subgroup columns a model folder's metrics should report: those recorded at training, followed by
    any its default task's spec (``assets/tasks/<task>.json``) has gained since on the same index, so that
    ``calibrate`` can re-score an older model by subgroups added later (e.g. body part) without retraining.

    >>> current_subgroups({"task": "fracture", "subgroups": {"index": "../index.csv", "columns": ["hardware"]}})["columns"]
    ['hardware', 'multiscan', 'hand', 'leg', 'hip', 'shoulder']
    >>> current_subgroups({"task": "someone_elses", "subgroups": None}) is None
    True
    """
    recorded = info.get("subgroups") or None
    path = TASKS_DIR / f"{info.get('task')}.json"
    spec = load_spec(str(path)).get("subgroups") if path.is_file() else None
    if not spec or (recorded and recorded.get("index") != spec.get("index")):
        return recorded
    if not recorded:
        return dict(spec)
    columns = list(recorded["columns"]) + [c for c in spec["columns"] if c not in recorded["columns"]]
    return {**recorded, "columns": columns}


def display_title(info: dict) -> str:
    """A model's short name for pickers and headings, from its ``model.json``."""
    return str(info.get("short_title") or info.get("title") or info.get("task") or "model")
