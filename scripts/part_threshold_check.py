"""Would a threshold per body part find more fractures than one threshold for every film? (issue 14's operating point)

A fracture model saves one threshold. FracAtlas films show a hand, a leg, a hip or a shoulder, and a model may rank
fractures of one part higher than another's, so a threshold per part could catch more fractures at the same false
alarms. A DICOM film states its body part; a PNG does not, so such a rule needs a fallback too. This measures
whether it would earn its keep. For a model folder: P(fractured) of each of its validation films, and the film's
body part from the dataset's index (``mixed`` for a film of several parts or none). At the specificity S the saved
threshold gives on those films, the sensitivity of

- one threshold for every film, set to give specificity S;
- a threshold per body part, each set to give specificity S on that part's intact films (the one threshold for a
  part with fewer than :data:`MIN_INTACT` intact films);

each in-sample (the thresholds chosen on the films they score: optimistic) and cross-validated (``--folds`` folds of
the validation films, stratified by class and part: each fold scored with thresholds chosen on the others). Printed:
the four rows, the cross-validated change in sensitivity with its paired bootstrap interval, and films per part.

    python scripts/part_threshold_check.py assets/models/fracture [--folds 5] [--json]
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

IMAGES = Path("../shared/data/fracatlas/images")
PARTS = ("hand", "leg", "hip", "shoulder")
#: Fewer intact films of a part than this in the films a threshold is chosen on: that part keeps the one threshold.
MIN_INTACT = 5


def threshold_for(negatives, specificity: float) -> float:
    """The lowest threshold (a film is positive from it up) that calls at least ``specificity`` of ``negatives``
    negative.

    >>> threshold_for([0.1, 0.2, 0.3, 0.4], 0.75) > 0.3, threshold_for([0.1, 0.2, 0.3, 0.4], 0.75) <= 0.4
    (True, True)
    """
    values = np.sort(np.asarray(negatives, float))
    k = min(len(values), int(np.ceil(specificity * len(values) - 1e-9)))
    return float(np.nextafter(values[k - 1], np.inf)) if k else float(values[0])


def body_part(row: dict) -> str:
    """The one body part an index row marks, or ``mixed``.

    >>> body_part({"hand": "1", "leg": "0", "hip": "0", "shoulder": "0"}), body_part({"hand": "1", "leg": "1"})
    ('hand', 'mixed')
    """
    marked = [part for part in PARTS if row.get(part) == "1"]
    return marked[0] if len(marked) == 1 else "mixed"


def thresholds(p: np.ndarray, fractured: np.ndarray, parts: np.ndarray, specificity: float) -> tuple[float, dict]:
    """The one threshold and the threshold per part, chosen on these films."""
    overall = threshold_for(p[~fractured], specificity)
    per_part = {}
    for part in np.unique(parts):
        intact = p[(parts == part) & ~fractured]
        per_part[str(part)] = threshold_for(intact, specificity) if len(intact) >= MIN_INTACT else overall
    return overall, per_part


def best_allocation(p: np.ndarray, fractured: np.ndarray, parts: np.ndarray, false_alarms: int) -> float:
    """The most fractures thresholds per part can find with at most ``false_alarms`` intact films called fractured
    in all, chosen on the films they score (an in-sample upper bound on any per-part rule): for each part and
    each number f of its intact films allowed over the threshold, the fractures above its (f+1)-th highest intact
    film; then the best split of ``false_alarms`` among the parts. Returns the sensitivity.

    >>> p = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1]); f = np.array([True, True, True, False, False, False])
    >>> best_allocation(p, f, np.array(["a", "a", "b", "a", "b", "b"]), 0)  # part b: 0.3 above its intact 0.2, 0.1
    1.0
    """
    best = np.zeros(false_alarms + 1)  # best[f]: fractures found with f false alarms over the parts so far
    for part in np.unique(parts):
        positives = np.sort(p[(parts == part) & fractured])[::-1]
        negatives = np.sort(p[(parts == part) & ~fractured])[::-1]
        found = [int((positives > (negatives[f] if f < len(negatives) else -np.inf)).sum())
                 for f in range(min(false_alarms, len(negatives)) + 1)]
        best = np.array([max(best[total - f] + found[f] for f in range(min(total, len(found) - 1) + 1))
                         for total in range(false_alarms + 1)])
    return float(best[-1] / max(int(fractured.sum()), 1))


def folds_of(fractured: np.ndarray, parts: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Each film's fold (0..k-1), stratified by class and part: films of each (class, part) dealt in turn.

    >>> fold = folds_of(np.array([True, True, False, False]), np.array(["hand"] * 4), 2)
    >>> sorted(fold[:2].tolist()), sorted(fold[2:].tolist())  # each fold one fractured film and one intact
    ([0, 1], [0, 1])
    """
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(parts), int)
    for group in sorted({(bool(f), str(q)) for f, q in zip(fractured, parts)}):
        members = np.flatnonzero((fractured == group[0]) & (parts == group[1]))
        fold[rng.permutation(members)] = np.arange(len(members)) % k
    return fold


def _rates(called: np.ndarray, fractured: np.ndarray) -> dict:
    return {"sensitivity": float(called[fractured].mean()), "specificity": float((~called[~fractured]).mean())}


def part_threshold_check(p, fractured, parts, saved: float, *, folds: int = 5, seed: int = 0) -> dict:
    """The comparison for films with P(fractured) ``p``, their truth and body parts, at the saved threshold's
    specificity."""
    p, fractured, parts = np.asarray(p, float), np.asarray(fractured, bool), np.asarray(parts, str)
    specificity = float((p[~fractured] < saved).mean())
    overall, per_part = thresholds(p, fractured, parts, specificity)
    in_sample = {"one threshold": _rates(p >= overall, fractured),
                 "per body part": _rates(p >= np.array([per_part[q] for q in parts]), fractured)}
    in_sample["per body part, best split of the false alarms (upper bound)"] = {
        "sensitivity": best_allocation(p, fractured, parts, int((p[~fractured] >= overall).sum())),
        "specificity": in_sample["one threshold"]["specificity"]}
    fold = folds_of(fractured, parts, folds, seed)
    one, each = np.zeros(len(p), bool), np.zeros(len(p), bool)
    for f in range(folds):
        held, chosen = fold == f, fold != f
        o, pp = thresholds(p[chosen], fractured[chosen], parts[chosen], specificity)
        one[held] = p[held] >= o
        each[held] = p[held] >= np.array([pp.get(q, o) for q in parts[held]])
    crossed = {"one threshold": _rates(one, fractured), "per body part": _rates(each, fractured)}
    change = paired_bootstrap(each[fractured].astype(float), one[fractured].astype(float), seed=seed)
    films = {str(q): {"fractured": int((fractured & (parts == q)).sum()),
                      "intact": int((~fractured & (parts == q)).sum())} for q in np.unique(parts)}
    return {"saved_threshold": saved, "specificity": specificity, "thresholds": {"one": overall, **per_part},
            "in_sample": in_sample, "cross_validated": crossed, "folds": folds,
            "sensitivity_change_cross_validated": [float(v) for v in change], "films": films}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", default=str(IMAGES))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if args.folds < 2:
        print("--folds needs at least 2 folds.", file=sys.stderr)
        return 2
    images = Path(args.data)
    loaded = load_model(args.model)
    if "fractured" not in loaded.class_names:
        print(f"{args.model} has no 'fractured' class: this check is for a fracture model.", file=sys.stderr)
        return 2
    keys = validation_keys(args.model)
    index = read_index(images.parent / "index.csv", PARTS)
    tensors = np.concatenate([loaded.pipeline.scan_tensor(load_scan((images / k).read_bytes(), k)) for k in keys])
    p = loaded.predict(tensors)[:, loaded.class_names.index("fractured")]
    result = {"model": args.model, **part_threshold_check(p, [k.startswith("fractured/") for k in keys],
                                                          [body_part(index[k]) for k in keys], loaded.threshold,
                                                          folds=args.folds)}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"At specificity {result['specificity']:.3f} (the saved threshold {loaded.threshold:.3f} on "
          f"{len(keys)} validation films):\n")
    print("| rule | in-sample sensitivity / specificity | cross-validated sensitivity / specificity |")
    print("|---|---|---|")
    for rule, a in result["in_sample"].items():
        b = result["cross_validated"].get(rule)
        print(f"| {rule} | {a['sensitivity']:.3f} / {a['specificity']:.3f} | "
              + (f"{b['sensitivity']:.3f} / {b['specificity']:.3f} |" if b
                 else "not a rule: chosen on the films it scores |"))
    change, low, high = result["sensitivity_change_cross_validated"]
    print(f"\nSensitivity, per body part minus one threshold, cross-validated ({args.folds} folds): "
          f"{change:+.3f} [{low:+.3f}, {high:+.3f}].")
    print("Films: " + ", ".join(f"{q} {v['fractured']} fractured / {v['intact']} intact"
                                for q, v in result["films"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
