"""How far from the outlined lesion does a model's evidence lie (issue 12's glioma question)?

`explain-eval --masks` fills each outline in and, as a control, a region of the same shape elsewhere on the body
(:func:`core.evaluation.outline_ablation`). Tissue next to a tumour changes too (oedema, mass effect), so a model
could rest on the tumour's surroundings and still shrug at the outline filled in. This check grows the outline
by each margin in millimetres (clipped to the body), fills that in and a control of the grown shape, and reports
the mean P(true class) for both with the paired bootstrap interval of the extra drop (at 0 mm also in log-odds of
the true class, which a P near 1 cannot hide). Then the whole inside of
the head or body part is filled (its outer 12% of radius kept, :func:`core.localisation.fill_interior`): what the
model answers when nothing inside is left to read. Last, the distance from the peak of the map the dashboard
shows (Grad-CAM at the last convolution, explaining the true class) to the outline, against the centre prior's
peak: the share within each distance.

Images are taken as ``explain-eval`` takes them (:func:`core.evaluation.outlined_images`), so the first N here
are the N slices scored there.

    python scripts/margin_check.py --model assets/models/brain_mri \\
        --data ../shared/data/brain_mri_masks/images --masks ../shared/data/brain_mri_masks/masks \\
        --spacing 0.49 --where subset=unseen --limit 150 [--margins 0,5,10,20] [--json OUT.json]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import localisation as loc  # noqa: E402
from core.evaluation import outline_ablation, outlined_check, to_geometry  # noqa: E402
from core.render import display_image  # noqa: E402

DISTANCES_MM = (7, 15, 25)


def check_one(loaded, scan, mask, target: int, spacing: float, margins) -> dict:
    """P(target) intact, for each margin with the grown outline and its control filled, with the inside filled."""
    pixels = scan.frame()
    shown = display_image(pixels, scan.window, scan.invert, voi=scan.voi)
    body = loc.foreground(shown)
    names = loaded.class_names

    def p_of(frame):
        probabilities = loaded.predict(loaded.pipeline.scan_tensor(dataclasses.replace(scan, frames=frame[None])))[0]
        return float(probabilities[target]), names[int(np.argmax(probabilities))]

    tensor = loaded.pipeline.scan_tensor(scan)
    probabilities = loaded.predict(tensor)[0]
    row = {"p": float(probabilities[target]), "right": bool(loaded.decide(probabilities) == target)}
    for margin in margins:
        grown = mask if margin == 0 else ndimage.binary_dilation(
            mask, iterations=max(1, int(round(margin / spacing)))) & (body | mask)
        ablated = outline_ablation(loaded, scan, grown, target, body=body, probabilities=probabilities)
        row[f"outline_{margin}"], row[f"control_{margin}"] = ablated["p_outline"], ablated["p_control"]
    grey = shown if shown.ndim == 2 else shown.mean(axis=-1)
    grey = (grey - grey.min()) / max(float(grey.max() - grey.min()), 1e-6)
    row["p_inside"], row["answer_inside"] = p_of(loc.fill_interior(pixels, grey=grey))
    distance = ndimage.distance_transform_edt(~mask) * spacing
    saliency = to_geometry(loaded.explainer.saliency(tensor, "gradcam", target, "last_conv"), scan.shape)
    centre = loc.centre_prior(scan.shape, spacing=(spacing, spacing))
    for name, heat in (("gradcam", saliency), ("centre", centre)):
        row[f"peak_mm_{name}"] = float(distance[np.unravel_index(int(np.argmax(heat)), heat.shape)])
    return row


def _paired_drops(rows: list[dict], margin: int) -> dict:
    """:func:`core.localisation.summarise_ablation` of one margin's fills, by class (``all`` included): the extra
    drop in P(true class) and in its log-odds, outline against control, over the images with a control."""
    table = [{"image": r["image"], "class": r["class"], "p_intact": r["p"], "p_outline": r[f"outline_{margin}"],
              "p_control": r[f"control_{margin}"], "right_intact": r["right"], "right_outline": None,
              "right_control": None} for r in rows]
    return {g["class"]: g for g in loc.summarise_ablation(table)["groups"]}


def _interval(drop: dict) -> list[float]:
    return [float("nan") if drop[k] is None else round(drop[k], 3) for k in ("difference", "low", "high")]


def summarise(rows: list[dict], margins, names: list[str]) -> list[dict]:
    """Per class and for all: means, the extra drop (outline minus control) with its paired interval."""
    out = []
    paired = {margin: _paired_drops(rows, margin) for margin in margins}
    for cls in sorted({r["class"] for r in rows}, key=names.index) + ["all"]:
        group = [r for r in rows if cls == "all" or r["class"] == cls]
        line = {"class": cls, "n": len(group), "accuracy": float(np.mean([r["right"] for r in group])),
                "p": float(np.mean([r["p"] for r in group]))}
        for margin in margins:
            both = [r for r in group if r[f"control_{margin}"] is not None]
            line[f"{margin} mm"] = {"n": len(both),
                                    "p_outline": float(np.mean([r[f"outline_{margin}"] for r in both])) if both else None,
                                    "p_control": float(np.mean([r[f"control_{margin}"] for r in both])) if both else None,
                                    "extra_drop": _interval(paired[margin][cls]["needs_outline"])}
        line["log_odds_extra_drop_0"] = (_interval(paired[0][cls]["needs_outline_log_odds"]) if 0 in paired
                                         else [float("nan")] * 3)
        line["p_inside"] = float(np.mean([r["p_inside"] for r in group]))
        line["answers_inside"] = {n: sum(r["answer_inside"] == n for r in group) for n in names}
        for name in ("gradcam", "centre"):
            line[f"peak_within_{name}"] = {f"{d} mm": float(np.mean([r[f"peak_mm_{name}"] <= d for r in group]))
                                           for d in DISTANCES_MM}
        out.append(line)
    return out


def markdown(summary: list[dict], margins) -> str:
    head = ["class", "n", "P(true) intact"] + [f"{m} mm: outline / control, extra drop" for m in margins] + [
        "0 mm: extra drop in log-odds",
        "inside filled: P(true), answers", "Grad-CAM peak within " + "/".join(map(str, DISTANCES_MM)) + " mm",
        "centre prior's peak"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["class"], str(s["n"]), f"{s['p']:.2f}"]
        for m in margins:
            c = s[f"{m} mm"]
            low, high = c["extra_drop"][1], c["extra_drop"][2]
            if c["p_outline"] is None:
                cells.append("n/a")
                continue
            interval = "" if np.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"
            cells.append(f"{c['p_outline']:.2f} / {c['p_control']:.2f}, {c['extra_drop'][0]:+.2f}{interval} (n {c['n']})")
        drop, low, high = s["log_odds_extra_drop_0"]
        cells.append("n/a" if np.isnan(drop) else f"{drop:+.2f}" + ("" if np.isnan(low) else f" [{low:+.2f}, {high:+.2f}]"))
        answers = ", ".join(f"{k} {v}" for k, v in s["answers_inside"].items() if v)
        cells.append(f"{s['p_inside']:.2f} ({answers})")
        for name in ("gradcam", "centre"):
            cells.append(" / ".join(f"{v:.2f}" for v in s[f"peak_within_{name}"].values()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    def extra(parser):
        parser.add_argument("--spacing", type=float, required=True, help="mm per pixel of the outlined images")
        parser.add_argument("--margins", default="0,5,10,20", type=lambda text: [int(m) for m in text.split(",")],
                            help="comma-separated margins in mm")

    def check(loaded, scan, mask, cls, args):
        return check_one(loaded, scan, mask, loaded.class_names.index(cls), args.spacing, args.margins)

    loaded, rows, args = outlined_check(__doc__.split("\n\n")[0], check, extra_arguments=extra, argv=argv)
    margins = args.margins
    summary = summarise(rows, margins, loaded.class_names)
    print(markdown(summary, margins))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "margins_mm": margins, "summary": summary,
                                         "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
