"""Predictions for files: read, prepare, classify in batches, check the outlier distance.

:func:`predict_files` is what ``python -m core predict`` prints and what a batch job streams: one
record per input, in the order given, ``ok`` with probabilities or ``error`` with one sentence.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.io import ScanError, load_scan

#: Inputs decoded ahead and sent through the model together.
BATCH = 64


@dataclass(frozen=True)
class Prediction:
    """A model's answer for one input, with how far the input lies from its training images."""

    probabilities: np.ndarray
    predicted: int
    distance: float | None = None  # outlier distance in feature space (None: no check fitted)
    limit: float | None = None  # ... and the distance 99% of validation images stay below

    @property
    def in_range(self) -> bool:
        """Whether the input looks like the model's training images (True when no check is fitted)."""
        return self.distance is None or self.limit is None or self.distance <= self.limit


def predict_tensors(loaded, tensors: np.ndarray) -> list[Prediction]:
    """Predictions for a batch of model input tensors, from one forward pass."""
    probabilities, distances = loaded.predict_with_distance(tensors)
    limit = loaded.outlier_threshold
    return [Prediction(p, loaded.decide(p), None if distances is None else float(d), limit)
            for p, d in zip(probabilities, distances if distances is not None else [None] * len(probabilities))]


def out_of_range_sentence(prediction: Prediction, title: str) -> str | None:
    """One sentence when the input is unlike the model's training images, else None."""
    if prediction.in_range:
        return None
    return (f"This image looks unlike the images the {title} model was trained on (feature distance "
            f"{prediction.distance:.1f}; 99% of validation images are below {prediction.limit:.1f}), so its "
            "prediction is unreliable.")


def read_input(path: str | Path) -> bytes:
    """The bytes of one input file; :class:`ScanError` with one sentence when it cannot be read."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ScanError("The file does not exist.") from None
    except IsADirectoryError:
        raise ScanError("This is a folder, not a file.") from None
    except OSError as err:
        raise ScanError(f"The file cannot be read ({err.strerror}).") from None


def predict_files(paths, loaded, frame: int | None = None, *, batch_size: int = BATCH, workers: int = 2,
                  keep_scans: bool = False, read=read_input):
    """One record per input, yielded in the order given.

    Files are read and prepared in a thread pool, one batch ahead, and the model sees each batch in
    one call: per-image calls would spend most of their time in Keras's per-call overhead
    (BENCHMARKS.md). A record is ``{"file", "ok": True, "probabilities", "predicted", "out_of_range",
    ["warnings"]}`` or ``{"file", "ok": False, "error"}``; ``out_of_range`` is true when the input looks
    unlike the model's training images (its sentence is among the warnings), so the prediction should not be
    trusted. With ``keep_scans`` the record also holds
    the ``scan`` and its ``tensor`` (for explaining it), until the caller drops them. ``read`` turns
    an input into bytes (a path by default; a DICOMweb source, for instance, passes its own).
    """
    paths = list(paths)
    size = max(1, min(batch_size, 8 if keep_scans else batch_size))  # a kept batch holds its scans
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(chunk):
            return [pool.submit(_prepare, path, loaded, frame, read) for path in chunk]

        pending = submit(chunks[0]) if chunks else []
        for i in range(len(chunks)):
            prepared = [future.result() for future in pending]
            pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else []  # decoded while this batch runs
            good = [p for p in prepared if "tensor" in p]
            if good:
                for p, prediction in zip(good, predict_tensors(loaded, np.concatenate([p["tensor"] for p in good]))):
                    p["prediction"] = prediction
            for p in prepared:
                yield _record(p, loaded, keep_scans)


def _prepare(path, loaded, frame, read) -> dict:
    item = {"file": str(path)}
    try:
        scan = load_scan(read(path), Path(str(path)).name)
        tensor = loaded.pipeline.scan_tensor(scan, frame)
    except ScanError as err:
        return item | {"error": str(err)}
    return item | {"tensor": tensor, "scan": scan}


def _record(item: dict, loaded, keep_scan: bool) -> dict:
    record = {"file": item["file"]}
    if "error" in item:
        return record | {"ok": False, "error": item["error"]}
    prediction = item["prediction"]
    names = loaded.class_names
    outside = out_of_range_sentence(prediction, loaded.title)
    notes = list(item["scan"].warnings) + ([outside] if outside else [])
    record |= {"ok": True, "probabilities": {n: round(float(p), 6) for n, p in zip(names, prediction.probabilities)},
               "predicted": names[prediction.predicted], "out_of_range": not prediction.in_range}
    if notes:
        record["warnings"] = notes
    if keep_scan:
        record |= {"scan": item["scan"], "tensor": item["tensor"], "prediction": prediction}
    return record


def write_explanation(loaded, scan, tensor, method: str, target: int, frame: int | None, stem: str,
                      out: Path) -> dict:
    """The overlay PNG at the scan's rows x cols, and the map on the explained layer's grid as .npy."""
    from core.render import display_image, overlay, png_bytes
    from core.saliency import explain

    result = explain(loaded, tensor, scan.shape, method=method, class_index=target)
    picture = overlay(display_image(scan.frame(frame), scan.window, scan.invert, voi=scan.voi), result.on_scan)
    name = f"{stem}_{method.replace('+', 'p')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.png").write_bytes(png_bytes(picture))
    np.save(out / f"{name}.npy", result.raw)
    return {"explained": loaded.class_names[target], "method": method, "layer": result.layer,
            "overlay": str(out / f"{name}.png"), "map": str(out / f"{name}.npy")}
