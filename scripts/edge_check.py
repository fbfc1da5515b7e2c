"""Do artificial edges read as a fracture? (issue 14's shortcut hunt, 2026-12-07)

A fracture is a line where the bone's texture breaks. An image can be given such breaks that are no fracture: a
share of an 8 x 8 grid of cells replaced by a blurred copy of the film (what a deletion or insertion curve does to
score a map), or the 8 px blocks of a harsh JPEG. For each model folder given, the first ``--limit`` not-fractured
films of its own validation split are scored as they are, blurred whole (the same blur, so the blur alone is
accounted for), and with 25% and 50% of the cells blurred; each change is made to the grey film before the model's
own pipeline, as ``python -m core evaluate --perturbations`` does. Prints, per version, the share called fractured
at the model's threshold and the median calibrated P(fractured). A model that reads breaks in texture, not
fractures, calls the patchworks fractured far more often than the film whole or blurred whole.

    python scripts/edge_check.py assets/models/fracture [MORE_MODEL_FOLDERS] [--limit 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.model import load_model  # noqa: E402
from core.perturb import blur, cell_mix  # noqa: E402
from core.robustness import display_grey, tensor_of_grey  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")
#: The blur of the replaced cells, in pixels at 224 px (the deletion curve's blurred copy is of this order).
SIGMA = 9.0
GRID = 8
VERSIONS = (("as scanned", None), ("blurred whole", 1.0), ("25% of cells blurred", 0.25), ("50% of cells blurred", 0.5))


def patchwork(grey: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """``grey`` with ``share`` of a ``GRID`` x ``GRID`` grid of cells taken from its blurred copy (all of them at 1).

    >>> img = np.zeros((16, 16), np.float32); img[::2] = 1
    >>> bool((patchwork(img, 0.0, np.random.default_rng(0)) == img).all())
    True
    """
    if share >= 1.0:
        return blur(grey, sigma=SIGMA)
    return cell_mix(grey, blur(grey, sigma=SIGMA), rng.random((GRID, GRID)) < share)


def edge_check(folder: str, images: Path = IMAGES, limit: int = 60, seed: int = 0) -> dict:
    loaded = load_model(folder)
    if "fractured" not in loaded.class_names:
        raise ValueError(f"The model {folder} has no class 'fractured' ({', '.join(loaded.class_names)}).")
    keys = [k for k in validation_keys(folder) if k.startswith("not_fractured/")][:limit]
    greys = [display_grey(load_scan((images / key).read_bytes(), Path(key).name)) for key in keys]
    fractured = loaded.class_names.index("fractured")
    rows = {}
    for name, share in VERSIONS:
        rng = np.random.default_rng(seed)  # the same cells for every model
        x = np.stack([tensor_of_grey(loaded.pipeline, g if share is None else patchwork(g, share, rng)) for g in greys])
        p = loaded.predict(x)[:, fractured]
        rows[name] = {"called_fractured": float(np.mean(p >= loaded.threshold)), "median_p": float(np.median(p))}
    return {"model": folder, "films": len(keys), "threshold": loaded.threshold, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(IMAGES))
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args(argv)
    try:
        results = [edge_check(folder, Path(args.data), args.limit) for folder in args.models]
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print(f"| model | not-fractured validation films | {' | '.join(name for name, _ in VERSIONS)} |")
    print("|---|---|" + "---|" * len(VERSIONS))
    for r in results:
        cells = [f"{v['called_fractured']:.0%} (P {v['median_p']:.2f})" for v in r["rows"].values()]
        print(f"| `{r['model']}` | {r['films']} | {' | '.join(cells)} |")
    print("\nEach cell: the share called fractured at the model's threshold (median calibrated P(fractured)).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
