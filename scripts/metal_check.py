"""Does metal read as a fracture? (issue 14's shortcut hunt: "a model that finds metal, not fractures")

89 of FracAtlas's 91 films with plates or screws are fractured, and the validation split holds only 5 of them, so
"AUC with and without hardware" cannot tell whether a model learned metal. This asks the model directly. For each
model folder given, the not-fractured films of its own validation split are scored as scanned and with an implant
drawn on them: a plate with screws across it, white (the brightest grey, as metal is on a radiograph), 35% of the
film's long side, laid along the limb's long axis over its brightest region (the bone) (the plate of
:func:`core.perturb.implant_opacity`, which ``train`` can draw on training films at random places and sizes). Two controls tell what the
model reacts to: the same plate at the limb's own median grey (its shape without metal's brightness), and the white
plate on the open field beside the limb (metal that is not on a bone). Each change is made to the grey film before
the model's own pipeline, as ``python -m core evaluate --perturbations`` does.

Prints, per version, the share called fractured at the model's threshold, the median calibrated P(fractured), the
mean change in P against the film as scanned with its bootstrap interval, and the AUC of the validation fractures as
scanned against the intact films so changed (a model that reads metal ranks plated intact films among the
fractures). Then the validation split's real films with metal, with each model's P(fractured).

    python scripts/metal_check.py assets/models/fracture [MORE_MODEL_FOLDERS] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scipy import ndimage as ndi  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from core.data import read_index, validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.localisation import paired_bootstrap  # noqa: E402
from core.model import load_model  # noqa: E402
from core.perturb import SCREW_LENGTH, implant_opacity, limb_axis  # noqa: E402
from core.preprocess import body_region  # noqa: E402
from core.robustness import display_grey, tensor_of_grey  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")
#: The plate of the check: its length as a fraction of the film's long side (width and screws: core.perturb's).
PLATE_LENGTH, SCREWS = 0.35, 6
VERSIONS = ("as scanned", "plate on the limb", "plate's shape at the limb's grey", "plate on the open field")


def _inside(shape: tuple[int, int], angle: float) -> np.ndarray:
    """Where a plate's centre can go with the whole plate and its screws on the film."""
    side = float(max(shape))
    half_rows = 0.5 * PLATE_LENGTH * side * abs(np.cos(angle)) + 0.5 * SCREW_LENGTH * side
    half_columns = 0.5 * PLATE_LENGTH * side * abs(np.sin(angle)) + 0.5 * SCREW_LENGTH * side
    inside = np.zeros(shape, bool)
    r0, r1 = int(np.ceil(half_rows)), int(shape[0] - np.ceil(half_rows))
    c0, c1 = int(np.ceil(half_columns)), int(shape[1] - np.ceil(half_columns))
    inside[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] = True
    return inside


def placement(grey: np.ndarray) -> tuple[np.ndarray, tuple[float, float], float, tuple[float, float] | None]:
    """The limb (:func:`core.preprocess.body_region`), its long axis (radians from the row axis), the bone's centre
    (the brightest smoothed point of the limb where the whole plate fits on the film) and the point of the open
    field farthest from both the limb and the film's edges (None when the limb nearly fills the film)."""
    limb = body_region(grey, margin=0.0)
    angle = limb_axis(limb)
    core_of_limb = ndi.binary_erosion(limb, iterations=3) if limb.sum() > 100 else limb
    candidates = core_of_limb & _inside(grey.shape, angle)
    if not candidates.any():
        candidates = core_of_limb
    smooth = np.where(candidates, ndi.gaussian_filter(grey, 0.02 * float(np.hypot(*grey.shape))), -np.inf)
    bone = np.unravel_index(int(np.argmax(smooth)), grey.shape)
    field = None
    if (~limb).any() and limb.mean() < 0.9:
        open_field = ~limb
        open_field[[0, -1], :] = open_field[:, [0, -1]] = False  # the film's edge counts as a wall
        distance = ndi.distance_transform_edt(open_field)
        field = tuple(float(v) for v in np.unravel_index(int(np.argmax(distance)), grey.shape))
    return limb, (float(bone[0]), float(bone[1])), angle, field


def versions(grey: np.ndarray) -> dict[str, np.ndarray | None]:
    """The film as scanned and the three changed films of :data:`VERSIONS` (None where one cannot be made)."""
    limb, bone, angle, field = placement(grey)
    on_bone = implant_opacity(grey.shape, bone, angle, length=PLATE_LENGTH, screws=SCREWS)
    level = float(np.median(grey[limb]))
    out = {"as scanned": grey,
           "plate on the limb": grey * (1 - on_bone) + on_bone,
           "plate's shape at the limb's grey": grey * (1 - on_bone) + level * on_bone,
           "plate on the open field": None}
    if field is not None:
        off = implant_opacity(grey.shape, field, angle, length=PLATE_LENGTH, screws=SCREWS) * ~limb
        out["plate on the open field"] = grey * (1 - off) + off
    return {name: None if image is None else image.astype(np.float32) for name, image in out.items()}


def metal_check(folder: str, images: Path = IMAGES, limit: int | None = None, seed: int = 0) -> dict:
    loaded = load_model(folder)
    fractured_index = loaded.class_names.index("fractured")
    validation = validation_keys(folder)
    index = read_index(images.parent / "index.csv", ("hardware",))
    intact = [k for k in validation if k.startswith("not_fractured/") and index[k]["hardware"] != "1"][:limit]
    fractures = [k for k in validation if k.startswith("fractured/")]

    def p_of(tensors):
        return loaded.predict(np.stack(tensors))[:, fractured_index]

    def grey_of(key):
        return display_grey(load_scan((images / key).read_bytes(), Path(key).name))

    def tensor(grey):  # kept at the model's input size, not the film's, while every film's versions are made
        return tensor_of_grey(loaded.pipeline, grey)

    p_fractures = p_of([tensor(grey_of(k)) for k in fractures])
    changed = {name: [] for name in VERSIONS}
    for key in intact:
        for name, image in versions(grey_of(key)).items():
            changed[name].append(None if image is None else tensor(image))
    scanned = p_of(changed["as scanned"])
    rows = {}
    for name in VERSIONS:
        kept = [i for i, image in enumerate(changed[name]) if image is not None]
        p = scanned if name == "as scanned" else p_of([changed[name][i] for i in kept])
        difference, low, high = paired_bootstrap(p, scanned[kept], seed=seed)
        labels = np.r_[np.ones(len(p_fractures)), np.zeros(len(p))]
        rows[name] = {"n": len(kept), "called_fractured": float(np.mean(p >= loaded.threshold)),
                      "median_p": float(np.median(p)), "mean_change": [float(difference), float(low), float(high)],
                      "auc_against_fractures": float(roc_auc_score(labels, np.r_[p_fractures, p]))}
    real = [k for k in validation if index[k]["hardware"] == "1"]
    real_p = p_of([tensor(grey_of(k)) for k in real]) if real else []
    return {"model": folder, "threshold": loaded.threshold, "fractures": len(fractures), "rows": rows,
            "real_metal": [{"film": k, "label": k.split("/")[0], "p": round(float(p), 3),
                            "called_fractured": bool(p >= loaded.threshold)} for k, p in zip(real, real_p)]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(IMAGES))
    parser.add_argument("--limit", type=int, default=None, help="the first N intact validation films (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = [metal_check(folder, Path(args.data), args.limit) for folder in args.models]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| model | version | intact films | called fractured | median P | change in P [95% CI] | AUC, fractures against these |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        for name, v in r["rows"].items():
            d, lo, hi = v["mean_change"]
            change = "" if name == "as scanned" else f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]"
            print(f"| `{r['model']}` | {name} | {v['n']} | {v['called_fractured']:.0%} | {v['median_p']:.2f} | {change} | "
                  f"{v['auc_against_fractures']:.3f} |")
    print(f"\nCalled fractured: at each model's saved threshold; AUC: the {results[0]['fractures']} validation fractures "
          "as scanned against the intact films in that version.")
    for r in results:
        films = ", ".join(f"{m['film']} ({m['label']}) P {m['p']:.2f}" for m in r["real_metal"]) or "none"
        print(f"Real metal in `{r['model']}`'s validation split: {films}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
