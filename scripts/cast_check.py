"""Casts, splints and worn metal, labelled by looking (issue 14's shortcut hunt: "casts and splints")

FracAtlas has no column for casts or splints, so the 460 films of the fracture default's validation split were looked
at one by one (``assets/labels/fracatlas_looked.csv``, how: ``assets/labels/README.md``). 13 of its 63 fractures wear
a cast, slab or splint and none of its 397 not-fractured films does: a model could call a cast fractured without
finding any fracture. Conversely 33 not-fractured films carry worn metal (bangles, anklets, charms, clasps) that is no
implant: a model that reads metal as fracture (``scripts/metal_check.py``) calls them fractured.

For each model folder given, its validation films that carry a label are scored with the model's own pipeline, and
each subgroup is reported: its films, the share called fractured at the model's threshold, the median calibrated
P(fractured), and the AUC against the other class (fractures of the subgroup against every labelled intact film;
every labelled fracture against the intact films of the subgroup), with a bootstrap interval; the worn-metal rows
again within the hand films (where most worn metal sits: the body part alone moves the share called fractured); and
the intact films from the part of the collection the validation fractures come from (image numbers 3500 and above,
where no training fracture is numbered). Then the question asked directly: every labelled intact film with a cast
drawn round its limb (``core.perturb.cast``, 45% of the long side, the same cast for every model), its mean change in
P against the film as scanned, and the AUC of the fractures without a cast against these. With several models that
share the first one's validation split, each later model's AUC for the fractures without a cast against every intact
film is compared with the first's on the same films (a paired bootstrap: fractures and intact films drawn together
for both models).

    python scripts/cast_check.py assets/models/fracture [MORE_MODEL_FOLDERS] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sklearn.metrics import roc_auc_score  # noqa: E402

from core.data import read_index, validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.localisation import paired_bootstrap  # noqa: E402
from core.model import load_model  # noqa: E402
from core.perturb import cast  # noqa: E402
from core.robustness import display_grey, tensor_of_grey  # noqa: E402

IMAGES = Path("../shared/data/fracatlas/images")
LABELS = ROOT / "assets" / "labels" / "fracatlas_looked.csv"
#: (name, class of its films, column, value, body part or None): the subgroups compared. Worn metal sits mostly on
#: the wrist (26 of the 33 intact films with it are hand films), and one threshold calls hand films fractured more
#: readily than leg films: the worn-metal rows are repeated within the hand films, read from the dataset's index
#: (its ``hand`` column), so that the body part cannot pass for the metal.
GROUPS = (("fractures in a cast or splint", "fractured", "cast_or_splint", "1", None),
          ("fractures without", "fractured", "cast_or_splint", "0", None),
          ("intact films with worn metal", "not_fractured", "worn_metal", "1", None),
          ("intact films without", "not_fractured", "worn_metal", "0", None),
          ("intact hand films with worn metal", "not_fractured", "worn_metal", "1", "hand"),
          ("intact hand films without", "not_fractured", "worn_metal", "0", "hand"))
#: The drawn cast's length, as a fraction of the film's long side (a forearm cast on most films).
CAST_LENGTH = 0.45
#: 62 of the 63 ``valid`` fractures have image numbers from here on, where no training fracture has; intact films
#: are drawn from every part of the collection.
LATE = 3500


def image_number(key: str) -> int:
    """``"fractured/IMG0003785.jpg"`` -> 3785.

    >>> image_number("not_fractured/IMG0000049.jpg")
    49
    """
    return int(Path(key).stem.removeprefix("IMG"))


def read_labels(path: Path = LABELS) -> dict[str, dict]:
    """``{"fractured/IMG0003785.jpg": {"image": ..., "cast_or_splint": "1", "worn_metal": "0", "note": ...}, ...}``"""
    return read_index(path, ("cast_or_splint", "worn_metal"))


def _auc(positive: np.ndarray, negative: np.ndarray) -> float:
    return float(roc_auc_score(np.r_[np.ones(len(positive)), np.zeros(len(negative))], np.r_[positive, negative]))


def _two_sample_bootstrap(positive: np.ndarray, negative: np.ndarray, statistic, *, n_resamples: int, seed: int,
                          confidence: float) -> list[float]:
    """[estimate, low, high] of ``statistic(positive, negative)``, each side resampled (rows) on its own."""
    rng = np.random.default_rng(seed)
    draws = [statistic(positive[rng.integers(len(positive), size=len(positive))],
                       negative[rng.integers(len(negative), size=len(negative))]) for _ in range(n_resamples)]
    tail = 100 * (1 - confidence) / 2
    return [statistic(positive, negative), float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))]


def auc_interval(positive, negative, *, n_resamples: int = 2000, seed: int = 0,
                 confidence: float = 0.95) -> tuple[float, float, float]:
    """The AUC of ``positive`` scores against ``negative`` ones, with a bootstrap interval (each side resampled).

    >>> auc_interval([0.9, 0.8, 0.7], [0.1, 0.2, 0.75])[0]
    0.888...
    """
    return tuple(_two_sample_bootstrap(np.asarray(positive, float), np.asarray(negative, float), _auc,
                                       n_resamples=n_resamples, seed=seed, confidence=confidence))


def _row(p: np.ndarray, threshold: float, auc_pair, seed: int) -> dict:
    """One subgroup's films ``p``: their count, share called fractured, median P and the AUC of ``auc_pair``."""
    return {"n": len(p), "called_fractured": float(np.mean(p >= threshold)), "median_p": float(np.median(p)),
            "auc": list(auc_interval(*auc_pair, seed=seed))}


def paired_auc_difference(first: dict, other: dict, positive: list[str], negative: list[str], *,
                          n_resamples: int = 2000, seed: int = 0, confidence: float = 0.95) -> list[float]:
    """``other``'s AUC minus ``first``'s on the same films ({key: P} each), with a bootstrap interval that draws the
    ``positive`` and ``negative`` films once per resample for both models.

    >>> first = {"a": 0.9, "b": 0.4, "c": 0.5, "d": 0.1}
    >>> other = {"a": 0.9, "b": 0.6, "c": 0.5, "d": 0.1}
    >>> paired_auc_difference(first, other, ["a", "b"], ["c", "d"])[0]
    0.25
    """
    pos, neg = (np.array([[first[k], other[k]] for k in keys], float) for keys in (positive, negative))
    return _two_sample_bootstrap(pos, neg, lambda a, b: _auc(a[:, 1], b[:, 1]) - _auc(a[:, 0], b[:, 0]),
                                 n_resamples=n_resamples, seed=seed, confidence=confidence)


def cast_check(folder: str, images: Path = IMAGES, labels: dict | None = None, seed: int = 0,
               scores: dict | None = None) -> dict:
    """Every subgroup's row for one model folder; ``scores``, when given, receives {film: P(fractured)}."""
    labels = read_labels() if labels is None else labels
    parts = sorted({part for *_, part in GROUPS if part})
    index = read_index(images.parent / "index.csv", parts)
    loaded = load_model(folder)
    fractured = loaded.class_names.index("fractured")
    validation = validation_keys(folder)
    keys = [k for k in validation if k in labels]
    greys = {k: display_grey(load_scan((images / k).read_bytes(), Path(k).name)) for k in keys}
    p = loaded.predict(np.stack([tensor_of_grey(loaded.pipeline, greys[k]) for k in keys]))[:, fractured]
    if scores is not None:
        scores.update(zip(keys, p.tolist()))
    of_class = {c: np.array([k.startswith(c + "/") for k in keys]) for c in ("fractured", "not_fractured")}
    rows = {}
    for name, label, column, value, part in GROUPS:
        inside = of_class[label] & np.array([labels[k][column] == value and (not part or index[k][part] == "1")
                                             for k in keys])
        other = of_class["not_fractured" if label == "fractured" else "fractured"]
        if not inside.any():
            rows[name] = {"n": 0}
            continue
        pair = (p[inside], p[other]) if label == "fractured" else (p[other], p[inside])
        rows[name] = _row(p[inside], loaded.threshold, pair, seed)
    late = of_class["not_fractured"] & np.array([image_number(k) >= LATE for k in keys])
    if late.any():
        rows[f"intact films numbered {LATE} and above"] = _row(p[late], loaded.threshold,
                                                               (p[of_class["fractured"]], p[late]), seed)
    intact = np.flatnonzero(of_class["not_fractured"])
    drawn = loaded.predict(np.stack([tensor_of_grey(loaded.pipeline, cast(greys[keys[i]], length=CAST_LENGTH, seed=i))
                                     for i in intact]))[:, fractured]
    plain = of_class["fractured"] & np.array([labels[k]["cast_or_splint"] == "0" for k in keys])
    difference, low, high = paired_bootstrap(drawn, p[intact], seed=seed)
    rows["intact films with a cast drawn"] = {**_row(drawn, loaded.threshold, (p[plain], drawn), seed),
                                              "mean_change": [float(difference), float(low), float(high)]}
    return {"model": folder, "threshold": loaded.threshold, "labelled": len(keys), "validation": len(validation),
            "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", default=str(IMAGES))
    parser.add_argument("--labels", default=str(LABELS))
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    labels = read_labels(Path(args.labels))
    scores = [{} for _ in args.models]
    results = [cast_check(folder, Path(args.data), labels, scores=kept) for folder, kept in zip(args.models, scores)]
    uncast = [k for k in scores[0] if k.startswith("fractured/") and labels[k]["cast_or_splint"] == "0"]
    intact = [k for k in scores[0] if k.startswith("not_fractured/")]
    for r, kept in zip(results[1:], scores[1:]):
        if set(kept) == set(scores[0]) and uncast and intact:
            r["paired_with_first"] = {"model": results[0]["model"], "subgroup": "fractures without",
                                      "auc_difference": paired_auc_difference(scores[0], kept, uncast, intact)}
    if args.json:
        print(json.dumps(results, indent=1))
        return 0
    print("| model | subgroup | films | called fractured | median P | AUC against the other class [95% CI] |")
    print("|---|---|---|---|---|---|")
    for r in results:
        for name, v in r["rows"].items():
            if not v["n"]:
                print(f"| `{r['model']}` | {name} | 0 | | | |")
                continue
            auc, low, high = v["auc"]
            change = " (change in P {:+.3f} [{:+.3f}, {:+.3f}])".format(*v["mean_change"]) if "mean_change" in v else ""
            print(f"| `{r['model']}` | {name} | {v['n']} | {v['called_fractured']:.0%} | {v['median_p']:.2f}{change} | "
                  f"{auc:.3f} [{low:.3f}, {high:.3f}] |")
    print("\nCalled fractured: at each model's saved threshold. AUC: fractures of the subgroup against every labelled "
          "intact film, or every labelled fracture against the intact films of the subgroup; for the drawn casts, "
          "the fractures without a cast against the intact films with one drawn.")
    for r in results:
        print(f"`{r['model']}`: {r['labelled']} of its {r['validation']} validation films carry a label.")
        if "paired_with_first" in r:
            difference, low, high = r["paired_with_first"]["auc_difference"]
            print(f"`{r['model']}` against `{r['paired_with_first']['model']}` on the same films: the fractures "
                  f"without a cast against every intact film, AUC difference {difference:+.3f} [{low:+.3f}, {high:+.3f}] "
                  "(paired bootstrap).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
