"""How much of a fracture model's answer lies outside the limb (issue 14's shortcut hunt).

For each model folder given, its own validation films are scored three ways: whole; the limb only (the open
field around the body part, :func:`core.preprocess.body_region` with a 3% margin, set to the field's median
level); and the field only (the limb set to that level instead, so what is left is the detector's background,
the collimation, markers and the limb's silhouette). A model that reads the fracture should lose most of its
ranking on the field only. Prints validation AUC and the share called fractured at the model's threshold, and
beside them the AUC that the body part and view alone give (each validation film scored by the fractured share
of training films of its body part and view in the dataset's index, no pixels read): the part of a model's
ranking that knowing "this is a hand, oblique view" already earns.

    python scripts/field_check.py assets/models/fracture [MORE_MODEL_FOLDERS]
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import roc_auc_score  # noqa: E402

from core.data import read_index, validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.model import load_model  # noqa: E402
from core.preprocess import body_region  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")


#: The index columns that say which body part and which view a film shows.
PART_AND_VIEW = ("hand", "leg", "hip", "shoulder", "mixed", "frontal", "lateral", "oblique")


def part_and_view_auc(folder: str, smoothing: float = 5.0) -> float:
    """Validation AUC of the fractured share of training films with the same body part and view."""
    rows = read_index(IMAGES.parent / "index.csv", PART_AND_VIEW)
    validation = set(validation_keys(folder))
    training = [key for key in rows if key not in validation]
    kind = {key: tuple(rows[key][c] for c in PART_AND_VIEW) for key in rows}
    films, fractured = Counter(kind[k] for k in training), Counter(kind[k] for k in training if k.startswith("fractured/"))
    overall = sum(fractured.values()) / len(training)
    keys = sorted(validation)
    scores = [(fractured[kind[k]] + smoothing * overall) / (films[kind[k]] + smoothing) for k in keys]
    return round(float(roc_auc_score([k.startswith("fractured/") for k in keys], scores)), 3)


def field_check(folder: str) -> dict:
    loaded = load_model(folder)
    pipeline = loaded.pipeline
    keys = validation_keys(folder)
    inputs = {"whole": [], "limb only": [], "field only": []}
    labels = []
    for key in keys:
        tensor = pipeline.scan_tensor(load_scan((IMAGES / key).read_bytes(), key))
        image = tensor[0, ..., 0]
        limb = body_region(image * pipeline.std + pipeline.mean, margin=0.03)
        level = np.median(image[~limb]) if (~limb).any() else image.min()
        inputs["whole"].append(tensor)
        inputs["limb only"].append(np.where(limb, image, level)[None, ..., None])
        inputs["field only"].append(np.where(limb, level, image)[None, ..., None])
        labels.append(key.startswith("fractured/"))
    result = {}
    for name, tensors in inputs.items():
        fractured = loaded.predict(np.concatenate(tensors).astype(np.float32))[:, 1]
        result[name] = {"auc": round(float(roc_auc_score(labels, fractured)), 3),
                        "called_fractured": round(float(np.mean(fractured >= loaded.threshold)), 3)}
    result["body part and view alone"] = {"auc": part_and_view_auc(folder)}
    return result


if __name__ == "__main__":
    for folder in sys.argv[1:] or ["assets/models/fracture"]:
        print(folder, json.dumps(field_check(folder)), flush=True)
