"""Which model a scan should go to, and why, in one sentence.

Three rules, in order, reading only what each model folder says about itself (``routing`` in its
``model.json``) and what the scan says about itself:

1. a DICOM header whose modality (and body part, when stated) a model is meant for;
2. otherwise the model whose outlier check finds the scan closest to its training images,
   relative to that check's threshold (a distance below 1 threshold means "looks like what it
   learned from");
3. otherwise (no model has an outlier check) the first model, said plainly.

A sample that names its own model never needs routing; the caller handles that.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Route:
    """The model chosen for a scan (its folder) and the sentence saying why."""

    folder: str
    reason: str
    fits: bool = True  # False: even the best model finds the scan outside what it learned from


def _title(info: dict) -> str:
    return str(info.get("short_title") or info.get("title") or info.get("task") or "chosen")


def route_by_header(scan, candidates: list[tuple[str, dict]]) -> Route | None:
    """The model a DICOM header points to: its modality is one the model is meant for, and its body part
    too when both state one. ``candidates`` are (folder, model.json) pairs. None when no header decides.

    >>> class Header:  # what a Scan of RG1_UNCI.dcm says about itself
    ...     kind, modality, body_part = "dicom", "CR", "CHEST"
    >>> chest = ("models/chest", {"title": "Chest X-ray", "routing": {"modalities": ["CR", "DX"],
    ...                                                              "body_parts": ["CHEST"]}})
    >>> route_by_header(Header(), [chest]).folder
    'models/chest'
    """
    modality = str(getattr(scan, "modality", "") or "").upper()
    if getattr(scan, "kind", "") != "dicom" or not modality:
        return None
    body = str(getattr(scan, "body_part", "") or "").upper()
    by_modality = [(folder, info) for folder, info in candidates
                   if modality in [m.upper() for m in (info.get("routing") or {}).get("modalities", [])]]
    if body:
        by_body = [(folder, info) for folder, info in by_modality
                   if body in [b.upper() for b in (info.get("routing") or {}).get("body_parts", [])]]
        if len(by_body) == 1:
            folder, info = by_body[0]
            return Route(folder, f"The DICOM header says {modality} of the {body.lower()}, which the "
                                 f"{_title(info)} model is meant for.")
        if by_modality and not by_body:
            return None  # the right kind of scan, but of a body part no model was trained on
    if len(by_modality) == 1:
        folder, info = by_modality[0]
        return Route(folder, f"The DICOM header says {modality}, the only modality of the {_title(info)} model.")
    return None


def route_by_fit(tensors_and_models: list[tuple[str, object, np.ndarray]]) -> Route | None:
    """The model whose outlier check finds the scan closest to its training images, relative to its
    threshold. ``tensors_and_models`` are (folder, LoadedModel, the scan's tensor for that model).
    None when no model has an outlier check."""
    scored = []
    for folder, loaded, tensor in tensors_and_models:
        _, distances = loaded.predict_with_distance(tensor)
        if distances is not None and loaded.outlier_threshold:
            scored.append((float(distances[0]) / loaded.outlier_threshold, folder, loaded))
    if not scored:
        return None
    ratio, folder, loaded = min(scored, key=lambda item: item[0])
    if ratio <= 1.0:
        return Route(folder, f"This image looks most like the images the {loaded.title} model was trained on "
                             f"(its outlier distance is {ratio:.2f} of the limit; below 1 is typical).")
    return Route(folder, f"This image looks unlike the training images of every model; the {loaded.title} model "
                         f"is the least far from it ({ratio:.1f} times its outlier limit).", fits=False)


def route(scan, models: list[tuple[str, object]]) -> Route:
    """The model for a scan among ``models`` ((folder, LoadedModel) pairs, at least one)."""
    header = route_by_header(scan, [(folder, loaded.info) for folder, loaded in models])
    if header is not None:
        return header
    fit = route_by_fit([(folder, loaded, loaded.pipeline.scan_tensor(scan)) for folder, loaded in models])
    if fit is not None:
        return fit
    folder, loaded = models[0]
    return Route(folder, f"No model could be matched to this scan (no header says what it shows and no model has an "
                         f"outlier check), so the {loaded.title} model is used.", fits=False)
