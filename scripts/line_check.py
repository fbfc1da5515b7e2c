"""Does a model read a drawn fracture line as a fracture, and does its map point at the line? (issue 14)

The outlines say where the radiologists saw each fracture, but not whether a model can see a fracture line at all.
This check draws one where the answer is known: on the first ``--limit`` not-fractured films of each model's own
validation split, a synthetic fracture across a bone (``core.perturb.fracture_line``, the same seed per film for
every model), drawn on the grey film before the model's own pipeline. It prints, per model, the share of the films
called fractured at the model's threshold as scanned and with the line, the median calibrated P(fractured) of each,
and where Grad-CAM (the model's last convolution, class fractured) puts its peak on the films with the line: on the
drawn line (the pointing game against the pixels it changed, with ``explain-eval``'s tolerance for films without a
pixel spacing), and the centre prior's score on the same films for comparison.

A model trained with ``train --synthetic-fractures`` has seen such lines labelled fractured, so for it this
measures what it learned from them, not what it finds on real films (``explain-eval --masks`` does that); for a
model that never saw one it asks whether a fracture line, as such, moves it.

    python scripts/line_check.py assets/models/fracture [MORE_MODEL_FOLDERS] [--limit 60]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import localisation as loc  # noqa: E402
from core.data import validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.model import load_model  # noqa: E402
from core.perturb import fracture_line  # noqa: E402
from core.robustness import display_grey, tensor_of_grey  # noqa: E402
from core.saliency import to_geometry  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")
#: A pixel the line darkened (or a displaced step moved) by more than this counts as the line.
CHANGED = 0.05


def drawn_films(folder: str, images: Path = IMAGES, limit: int = 60) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(key, film, film with a line)`` for the first ``limit`` intact validation films of a model folder's split
    on which a line could be drawn (film ``k`` of the split with seed ``k``, so every model gets the same lines)."""
    keys = [k for k in validation_keys(folder) if k.startswith("not_fractured/")][:limit]
    films = []
    for seed, key in enumerate(keys):
        grey = display_grey(load_scan((images / key).read_bytes(), Path(key).name))
        lined, drawn = fracture_line(grey, seed=seed)
        if drawn and (np.abs(lined - grey) > CHANGED).any():  # a line too faint to score is left out
            films.append((key, grey, lined))
    return films


def line_check(folder: str, images: Path = IMAGES, limit: int = 60) -> dict:
    loaded = load_model(folder)
    if "fractured" not in loaded.class_names:
        raise ValueError(f"The model {folder} has no class 'fractured' ({', '.join(loaded.class_names)}).")
    fractured = loaded.class_names.index("fractured")
    films = drawn_films(folder, images, limit)
    if not films:
        raise ValueError(f"No line could be drawn on the intact validation films of {folder}.")
    scanned = np.stack([tensor_of_grey(loaded.pipeline, grey) for _, grey, _ in films])
    lined = np.stack([tensor_of_grey(loaded.pipeline, film) for _, _, film in films])
    p_scanned, p_lined = loaded.predict(scanned)[:, fractured], loaded.predict(lined)[:, fractured]
    hits, centre = [], []
    for (_, grey, film), tensor in zip(films, lined):
        line = np.abs(film - grey) > CHANGED
        saliency = to_geometry(loaded.explainer.saliency(tensor[None], "gradcam", fractured, None), line.shape)
        hits.append(loc.pointing_game(saliency, line))
        centre.append(loc.pointing_game(loc.centre_prior(line.shape), line))
    return {"model": folder, "films": len(films), "threshold": loaded.threshold,
            "called": {"as scanned": float(np.mean(p_scanned >= loaded.threshold)),
                       "with the line": float(np.mean(p_lined >= loaded.threshold))},
            "median_p": {"as scanned": float(np.median(p_scanned)), "with the line": float(np.median(p_lined))},
            "mean_p_change": float(np.mean(p_lined - p_scanned)),
            "gradcam_on_line": int(sum(hits)), "centre_on_line": int(sum(centre))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(IMAGES))
    parser.add_argument("--limit", type=int, default=60)
    args = parser.parse_args(argv)
    try:
        results = [line_check(folder, Path(args.data), args.limit) for folder in args.models]
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    print("| model | intact validation films with a line | called fractured: as scanned / with the line | median P: "
          "as scanned / with the line | mean change in P | Grad-CAM peak on the line | centre prior on the line |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| `{r['model']}` | {r['films']} | {r['called']['as scanned']:.0%} / {r['called']['with the line']:.0%} "
              f"| {r['median_p']['as scanned']:.2f} / {r['median_p']['with the line']:.2f} | "
              f"{r['mean_p_change']:+.3f} | {r['gradcam_on_line']} of {r['films']} | "
              f"{r['centre_on_line']} of {r['films']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
