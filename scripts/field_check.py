"""How much of a fracture model's answer lies outside the limb (issue 14's shortcut hunt).

For each model folder given, its own validation films are scored three ways: whole; the limb only (the open
field around the body part, :func:`core.preprocess.body_region` with a 3% margin, set to the field's median
level); and the field only (the limb set to that level instead, so what is left is the detector's background,
the collimation, markers and the limb's silhouette). A model that reads the fracture should lose most of its
ranking on the field only. Prints validation AUC and the share called fractured at the model's threshold:

    python scripts/field_check.py assets/models/fracture [MORE_MODEL_FOLDERS]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import roc_auc_score  # noqa: E402

from core.io import load_scan  # noqa: E402
from core.model import load_model  # noqa: E402
from core.preprocess import body_region  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")


def field_check(folder: str) -> dict:
    loaded = load_model(folder)
    pipeline = loaded.pipeline
    keys = json.loads((Path(folder) / "split.json").read_text())["validation"]
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
    return result


if __name__ == "__main__":
    for folder in sys.argv[1:] or ["assets/models/fracture"]:
        print(folder, json.dumps(field_check(folder)), flush=True)
