"""How fine must a map be to point at an outline? The best any map on an n x n grid can do (issues 12 and 14).

A class activation map (Grad-CAM, LayerCAM, ...) has one value per cell of a convolution's grid over the model's
square input, and ``explain-eval`` resizes it bilinearly onto the scan (``core.saliency.to_geometry``). Its peak then
lies where the cells' values and the bilinear blend put it, which on a coarse grid may be beside a small outline
however good the map. This script scores the best such map there is, the oracle: each cell holds the share of its
area that the radiologists' outline covers (the outline squashed onto the square input as the pipeline squashes the
scan), resized onto the scan in the same way. Its pointing game and energy inside the outline, at ``explain-eval``'s
tolerance, are the ceiling of any map on that grid: a target above the ceiling cannot be reached by a better model,
only by a finer grid.

    python scripts/grid_ceiling.py --data ../shared/data/fracatlas/images --masks ../shared/data/fracatlas/masks \\
        --where official_split=valid --grids 7,14,28
    python scripts/grid_ceiling.py --data ../shared/data/brain_mri_masks/images \\
        --masks ../shared/data/brain_mri_masks/masks --spacing 0.49 --where subset=unseen --grids 4,8,16,32

The images are taken in ``explain-eval``'s order (``core.evaluation.outlined_images``), all of them unless
``--limit`` says otherwise. No model is read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import localisation as loc  # noqa: E402
from core.preprocess import resize_to  # noqa: E402
from core.saliency import to_geometry  # noqa: E402

#: Sub-samples per cell side when the outline is averaged over a cell.
SUB = 8


def oracle_map(mask: np.ndarray, grid: int) -> np.ndarray:
    """The outline's share of each cell of a ``grid`` x ``grid`` map over the squashed square input, as a class
    activation map would hold it (before it is resized onto the scan).

    >>> mask = np.zeros((100, 200), bool); mask[:50, :100] = True
    >>> oracle_map(mask, 2).round(1).tolist()
    [[1.0, 0.0], [0.0, 0.0]]
    >>> float(oracle_map(mask, 4)[0, 0]), float(oracle_map(mask, 4)[3, 3])
    (1.0, 0.0)
    """
    fine = resize_to(np.asarray(mask, np.float32), (grid * SUB, grid * SUB))
    return fine.reshape(grid, SUB, grid, SUB).mean(axis=(1, 3))


def ceiling(mask: np.ndarray, grid: int, *, spacing=None, tolerance_mm: float = 7.0) -> dict[str, float]:
    """The oracle map's pointing game (1 or 0) and energy inside the outline on the scan.

    >>> mask = np.zeros((896, 640), bool); mask[400:404, 300:340] = True  # a thin fracture line
    >>> ceiling(mask, 28)["pointing_game"], ceiling(mask, 2)["pointing_game"]
    (1.0, 0.0)
    """
    mask = np.asarray(mask, bool)
    shown = to_geometry(oracle_map(mask, grid), mask.shape)
    return {"pointing_game": loc.pointing_game(shown, mask, spacing=spacing, tolerance_mm=tolerance_mm),
            "energy": loc.energy_pointing_game(shown, mask)}


def main(argv=None) -> int:
    from core.evaluation import EvaluationError, outlined_images
    from core.io import ScanError, load_scan
    from core.masks import MaskError, load_mask

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="class folders of images")
    parser.add_argument("--masks", required=True, type=Path, help="the mirrored folders of outline PNGs")
    parser.add_argument("--where", help="COLUMN=VALUE of the index CSV beside the images folder")
    parser.add_argument("--grids", default="7,14,28", help="comma-separated grid sides (default 7,14,28)")
    parser.add_argument("--spacing", type=float, help="pixel size in mm for files that state none")
    parser.add_argument("--tolerance-mm", type=float, default=7.0)
    parser.add_argument("--limit", type=int, help="only the first N outlined images")
    args = parser.parse_args(argv)
    try:
        grids = [int(g) for g in args.grids.split(",")]
    except ValueError:
        grids = []
    if not grids or min(grids) < 1:
        print("--grids takes positive whole numbers, e.g. 7,14,28", file=sys.stderr)
        return 2
    names = sorted(p.name for p in args.masks.iterdir() if p.is_dir()) if args.masks.is_dir() else []
    where = tuple(args.where.split("=", 1)) if args.where else None
    try:
        candidates, _, subset = outlined_images(names, args.data, args.masks, where=where)
    except EvaluationError as err:
        print(err, file=sys.stderr)
        return 2
    rows = []
    for cls, image, mask_path in candidates[:args.limit]:
        try:
            scan = load_scan(image.read_bytes(), image.name)
            mask = load_mask(mask_path.read_bytes(), scan.shape)
        except (ScanError, MaskError):
            continue
        spacing = scan.spacing or ((args.spacing, args.spacing) if args.spacing else None)
        for grid in grids:
            rows.append({"class": cls, "grid": grid,
                         **ceiling(mask, grid, spacing=spacing, tolerance_mm=args.tolerance_mm)})
    if not rows:
        print(f"No outlined image could be read from {subset}.", file=sys.stderr)
        return 2
    n = len(rows) // len(grids)
    classes = sorted({r["class"] for r in rows})
    print(f"{n} outlined images of {subset}; the best map on each grid (the outline's share of each cell):")
    print("| grid | pointing game, all | " + " | ".join(classes) + " | energy |")
    print("|---|---|" + "---|" * len(classes) + "---|")
    for grid in grids:
        mine = [r for r in rows if r["grid"] == grid]
        per_class = " | ".join(f"{np.mean([r['pointing_game'] for r in mine if r['class'] == c]):.2f}"
                               for c in classes)
        print(f"| {grid} x {grid} | {np.mean([r['pointing_game'] for r in mine]):.2f} "
              f"({int(sum(r['pointing_game'] for r in mine))} of {len(mine)}) | {per_class} | "
              f"{np.mean([r['energy'] for r in mine]):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
