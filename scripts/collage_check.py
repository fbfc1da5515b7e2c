"""What does a multi-view collage do to a fracture model's answer? (issue 14's shortcut hunt)

About one FracAtlas film in ten is a collage: two or three views of one limb side by side on one film, often with a
white seam between them. The split keeps every collage on the training side (the authors' `valid` list holds none),
so validation says nothing about them. This makes collages from a model's own validation films: of each film, the
half-width strip centred on its limb (as the views of a real collage are cut), set beside such a strip of another
film of the same body part, with and without a white seam 2% of the width between them. Pairs of two not-fractured films show whether the collage form
alone moves the answer (against the two films scored alone); a fractured film beside a not-fractured one shows
whether the fracture is still found (against the fractured film alone). Each collage goes through the model's own
pipeline as a film would.

    python scripts/collage_check.py assets/models/fracture [MORE_MODEL_FOLDERS] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import read_index, validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.localisation import paired_bootstrap  # noqa: E402
from core.model import load_model  # noqa: E402
from core.preprocess import resize_to  # noqa: E402
from core.robustness import display_grey, tensor_of_grey  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")
PARTS = ("hand", "leg", "hip", "shoulder")
SEAM = 0.02  # the white seam's width, a share of the collage's width


def _view(film: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """``film`` at ``rows`` high, then the ``columns`` wide strip of it centred on its limb, as a collage's view is cut."""
    from core.preprocess import body_region

    film = resize_to(np.asarray(film, np.float32), (rows, max(columns, round(film.shape[1] * rows / film.shape[0]))))
    limb = body_region(film, margin=0.0)
    centre = int(round(np.nonzero(limb.any(axis=0))[0].mean())) if limb.any() else film.shape[1] // 2
    start = int(np.clip(centre - columns // 2, 0, film.shape[1] - columns))
    return film[:, start:start + columns]


def collage(left: np.ndarray, right: np.ndarray, *, seam: bool) -> np.ndarray:
    """Two grey films side by side on one film of ``left``'s size, each the half-width strip of itself centred on
    its limb (its proportions kept); with ``seam``, a white strip :data:`SEAM` of the width wide between them.

    >>> a, b = np.zeros((40, 30), np.float32), np.ones((20, 20), np.float32) * 0.5
    >>> c = collage(a, b, seam=True)
    >>> c.shape, float(c[:, 0].max()), float(c[:, -1].min()), float(c.max())
    ((40, 30), 0.0, 0.5, 1.0)
    >>> float(collage(a, b, seam=False).max())
    0.5
    """
    rows, columns = left.shape
    gap = max(1, int(round(SEAM * columns))) if seam else 0
    half = (columns - gap) // 2
    out = np.ones((rows, columns), np.float32)
    out[:, :half] = _view(left, rows, half)
    out[:, columns - half:] = _view(right, rows, half)
    if not seam:
        out[:, half:columns - half] = out[:, half - 1:half]  # an odd column left over: the left view's edge again
    return np.clip(out, 0.0, 1.0)


def _part(row: dict) -> str:
    parts = [p for p in PARTS if row[p] == "1"]
    return parts[0] if len(parts) == 1 else "mixed"


def pairs(folder: str, images: Path = IMAGES) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(intact, intact) pairs: each not-fractured validation film with the next one of its body part; and
    (fractured, intact) pairs: each fractured validation film with a not-fractured one of its body part, in turn."""
    index = read_index(images.parent / "index.csv", ("hardware", *PARTS))
    validation = validation_keys(folder)
    intact = [k for k in validation if k.startswith("not_fractured/") and index[k]["hardware"] != "1"]
    by_part: dict[str, list[str]] = {}
    for key in intact:
        by_part.setdefault(_part(index[key]), []).append(key)
    both_intact = [(films[i], films[i + 1]) for films in by_part.values() for i in range(0, len(films) - 1, 2)]
    turn: dict[str, int] = {}
    with_fracture = []
    for key in (k for k in validation if k.startswith("fractured/")):
        films = by_part.get(_part(index[key])) or intact
        with_fracture.append((key, films[turn.get(_part(index[key]), 0) % len(films)]))
        turn[_part(index[key])] = turn.get(_part(index[key]), 0) + 1
    return both_intact, with_fracture


def collage_check(folder: str, images: Path = IMAGES, seed: int = 0, limit: int | None = None) -> dict:
    loaded = load_model(folder)
    fractured = loaded.class_names.index("fractured")
    both_intact, with_fracture = (p[:limit] for p in pairs(folder, images))
    greys: dict[str, np.ndarray] = {}

    def grey(key):
        if key not in greys:
            greys[key] = display_grey(load_scan((images / key).read_bytes(), Path(key).name))
        return greys[key]

    def p_of(films):
        return loaded.predict(np.stack([tensor_of_grey(loaded.pipeline, f) for f in films]))[:, fractured]

    def row(p, against, name_against):
        difference, low, high = paired_bootstrap(p, against, seed=seed)
        return {"n": len(p), "called_fractured": float(np.mean(p >= loaded.threshold)), "median_p": float(np.median(p)),
                "mean_change": [float(difference), float(low), float(high)], "against": name_against}

    rows = {}
    left, right = p_of([grey(a) for a, _ in both_intact]), p_of([grey(b) for _, b in both_intact])
    alone = (left + right) / 2
    rows["two not-fractured films, each alone (mean P)"] = row(alone, alone, "")
    for seam in (False, True):
        p = p_of([collage(grey(a), grey(b), seam=seam) for a, b in both_intact])
        rows[f"two not-fractured films side by side{', white seam' if seam else ''}"] = row(p, alone, "each alone")
    alone_f = p_of([grey(f) for f, _ in with_fracture])
    rows["a fractured film alone"] = row(alone_f, alone_f, "")
    for seam in (False, True):
        p = p_of([collage(grey(f), grey(n), seam=seam) for f, n in with_fracture])
        rows[f"a fractured film beside a not-fractured one{', white seam' if seam else ''}"] = row(p, alone_f, "alone")
    return {"model": folder, "threshold": loaded.threshold, "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(IMAGES))
    parser.add_argument("--limit", type=int, default=None, help="at most N pairs of each kind (default: all)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    results = [collage_check(folder, Path(args.data), limit=args.limit) for folder in args.models]
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| model | films | n | called fractured | median P | change in P [95% CI] |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for name, v in r["rows"].items():
            d, lo, hi = v["mean_change"]
            change = f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}] against {v['against']}" if v["against"] else ""
            print(f"| `{r['model']}` | {name} | {v['n']} | {v['called_fractured']:.0%} | {v['median_p']:.2f} | {change} |")
    print("\nCalled fractured: at each model's saved threshold. Collages are made of the model's own validation films.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
