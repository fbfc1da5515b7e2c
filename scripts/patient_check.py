"""Do the brain model's answers and maps hold on patients it never saw, or does it know the patients?

`brain_mri/Training` has no patient key, so the default's validation split cannot be grouped by patient, and the
outlined `unseen` slices may have neighbouring slices of the same patient in training (the data README). The
figshare set stores a patient's slices under neighbouring numbers (its class labels run in 12 long blocks of
numbers, its unseen slices in runs), and `brain_mri_masks/index.csv` gives every outlined slice its
figshare number and whether the same slice is in `brain_mri/Training` (`seen_in_training`). An unseen slice whose
number lies next to a seen one very likely belongs to a patient the model trained on; one with no seen slice
within ``--far`` numbers (more than a patient's slices, 3,064 slices over 233 patients, 13 on average) very likely
belongs to a patient it never saw. A model that had learnt the patients (their head shape, the scanner's look)
would answer and point well on the near slices and worse on the far ones.

Per class and per group (near: the nearest seen slice at most ``--near`` numbers away; middle; far): accuracy and
mean P(true class) as scanned and with the outline filled in (:func:`core.evaluation.outline_ablation`), and the
pointing game of the dashboard's map (Grad-CAM, last convolution, true class) and of the centre prior, with 95%
bootstrap intervals. Images are taken as ``explain-eval`` takes them, so ``--limit 150`` are its 150 slices.

    python scripts/patient_check.py --model assets/models/brain_mri \\
        --data ../shared/data/brain_mri_masks/images --masks ../shared/data/brain_mri_masks/masks \\
        --spacing 0.49 --where subset=unseen --limit 612 [--near 2 --far 20] [--json OUT.json]
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import localisation as loc  # noqa: E402
from core.evaluation import outline_ablation, outlined_check, to_geometry  # noqa: E402
from core.render import display_image  # noqa: E402

GROUPS = ("near", "middle", "far")


def figshare_gaps(index: Path) -> dict[str, int]:
    """For each image of the index (``class/file``), its distance in figshare numbers to the nearest slice seen in
    training (1 for a neighbour, 0 for a seen slice itself)."""
    with open(index, newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen = np.array(sorted(int(r["figshare_index"]) for r in rows if r["subset"] == "seen_in_training"))
    if not len(seen):
        raise SystemExit(f"{index} lists no slice seen in training, so no gap can be measured.")
    return {str(Path(r["image"]).relative_to("images")): int(np.abs(seen - int(r["figshare_index"])).min())
            for r in rows}


def group_of(gap: int, near: int, far: int) -> str:
    """``near`` up to ``near`` numbers from a seen slice, ``far`` beyond ``far``, else ``middle``.

    >>> [group_of(g, 2, 20) for g in (1, 2, 3, 20, 21)]
    ['near', 'near', 'middle', 'middle', 'far']
    """
    return "near" if gap <= near else "far" if gap > far else "middle"


def check_one(loaded, scan, mask, target: int, spacing: float) -> dict:
    """P(target) and the decision as scanned and with the outline filled; pointing of Grad-CAM and the centre."""
    shown = display_image(scan.frame(), scan.window, scan.invert, voi=scan.voi)
    tensor = loaded.pipeline.scan_tensor(scan)
    probabilities = loaded.predict(tensor)[0]
    ablated = outline_ablation(loaded, scan, mask, target, body=loc.foreground(shown), probabilities=probabilities)
    saliency = to_geometry(loaded.explainer.saliency(tensor, "gradcam", target, "last_conv"), scan.shape)
    pixel = (spacing, spacing)
    return {"p": ablated["p_intact"], "right": ablated["right_intact"], "p_filled": ablated["p_outline"],
            "right_filled": ablated["right_outline"],
            "pointing_gradcam": loc.pointing_game(saliency, mask, spacing=pixel),
            "pointing_centre": loc.pointing_game(loc.centre_prior(scan.shape, spacing=pixel), mask, spacing=pixel)}


def _mean(values) -> list[float]:
    """[mean, low, high] with the 95% bootstrap interval; nan for no values."""
    mean, low, high = loc.bootstrap_mean([float(v) for v in values])
    return [round(mean, 3), round(low, 3), round(high, 3)]


def summarise(rows: list[dict], names: list[str]) -> list[dict]:
    """One line per class and group present (then each group over all classes)."""
    out = []
    classes = sorted({r["class"] for r in rows}, key=names.index) + ["all"]
    for cls in classes:
        for group in GROUPS:
            chosen = [r for r in rows if (cls == "all" or r["class"] == cls) and r["group"] == group]
            if not chosen:
                continue
            out.append({"class": cls, "group": group, "n": len(chosen),
                        "gaps": [min(r["gap"] for r in chosen), max(r["gap"] for r in chosen)],
                        "accuracy": _mean(r["right"] for r in chosen),
                        "p": _mean(r["p"] for r in chosen),
                        "accuracy_filled": _mean(r["right_filled"] for r in chosen),
                        "p_filled": _mean(r["p_filled"] for r in chosen),
                        "pointing_gradcam": _mean(r["pointing_gradcam"] for r in chosen),
                        "pointing_centre": _mean(r["pointing_centre"] for r in chosen)})
    return out


def markdown(summary: list[dict]) -> str:
    head = ["class", "slices", "gap to a seen slice", "accuracy", "P(true)", "outline filled: accuracy",
            "outline filled: P(true)", "Grad-CAM pointing [95% CI]", "centre prior's"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def cell(triple, interval=False):
        mean, low, high = triple
        return f"{mean:.2f}" + (f" [{low:.2f}, {high:.2f}]" if interval else "")

    for s in summary:
        low, high = s["gaps"]
        lines.append("| " + " | ".join([
            s["class"], f"{s['n']} {s['group']}", f"{low}-{high}", cell(s["accuracy"]), cell(s["p"]),
            cell(s["accuracy_filled"]), cell(s["p_filled"]), cell(s["pointing_gradcam"], True),
            cell(s["pointing_centre"])]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--spacing", type=float, required=True, help="mm per pixel of the outlined images")
        parser.add_argument("--near", type=int, default=2, help="largest gap counted as a neighbour of a seen slice")
        parser.add_argument("--far", type=int, default=20, help="gaps above this count as a patient never seen")

    gaps = {}

    def check(loaded, scan, mask, cls, args):
        if not gaps:
            gaps.update(figshare_gaps(args.data.parent / "index.csv"))
        return check_one(loaded, scan, mask, loaded.class_names.index(cls), args.spacing)

    loaded, rows, args = outlined_check(__doc__.split("\n\n")[0], check, extra_arguments=extra, argv=argv)
    for row in rows:
        row["gap"] = gaps[row["image"]]
        row["group"] = group_of(row["gap"], args.near, args.far)
    summary = summarise(rows, loaded.class_names)
    print(markdown(summary))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "near": args.near, "far": args.far,
                                         "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
