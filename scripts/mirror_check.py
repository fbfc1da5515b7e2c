"""Does a model's map move with the anatomy when the image is mirrored (issue 12's right-of-midline finding)?

A model trained with left-right flips answers the same class for a slice and its mirror image, but nothing in
that makes its map follow the tumour to the other side: a network can keep a class's evidence on one side of
every image. For each outlined image (taken as ``explain-eval`` takes them, so the first N here are the N scored
there), Grad-CAM at the last convolution explaining the true class, the map the dashboard shows, is computed
for the image and for its mirror image, and the second is mirrored back. Reported per class and for all:

- the share of map peaks right of the image's centre against the share of outlines whose centre lies there
  (an unbiased map follows the lesions; the same share whatever the lesions' side is a positional habit);
- the share of peaks on the lesion's side of the image;
- the correlation of the map with the mirrored-back map of the mirror image (1: the map moves with the
  anatomy; near 0: it stays where it was), with a bootstrap interval;
- the same for a shift: the model input moved by two cells of the last convolution up, down, left and right (the
  band uncovered filled with the background, :func:`core.train.shifted`), each map moved back and correlated with
  the original on the cells both saw, on the map's own grid; the mean of the four. A convolutional network's map
  follows a shift unless it keeps a class at one place in the frame; one that follows a shift and not a mirror
  image keeps it at one place in the head;
- the share of peaks inside the outline (the strict pointing game, no tolerance) for the image and for its
  mirror image;
- the half-mirror test, on the images whose outline lies (at least 90% of it) on one side of the head's midline:
  each half of the model's input mirrored onto the other (:func:`core.train.half_mirrors`) gives one composite
  with the lesion twice and one without it, both with the slice's level, scanner, contrast and rim. P(true class)
  of each, and what the model answers for the composite without the lesion: a model that reads the lesion calls
  it the class without a lesion, one that reads the slice keeps the class.

    python scripts/mirror_check.py --model assets/models/brain_mri \\
        --data ../shared/data/brain_mri_masks/images --masks ../shared/data/brain_mri_masks/masks \\
        --where subset=unseen --limit 150 [--json OUT.json]

Refused for a task whose mirror image is not the same anatomy (its task file says no flips: a chest film).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import localisation as loc  # noqa: E402
from core.evaluation import outlined_check, to_geometry  # noqa: E402


def mirrored(scan):
    """The scan mirrored left to right (every frame; colour frames keep their channels)."""
    return dataclasses.replace(scan, frames=np.ascontiguousarray(scan.frames[:, :, ::-1]))


#: The share of an outline on one side of the midline for its image to enter the half-mirror test.
ONE_SIDED = 0.9


def half_mirror_test(loaded, tensor, mask, target: int) -> dict:
    """P(``target``) of the model input ``tensor`` (``(1, h, w, c)``) and of its two half-mirror composites, the
    lesion's side and the other, in one prediction, and the answer for the composite without the lesion;
    ``lesion_one_side``: the share of the outline (``mask``, the scan's geometry) on its side of the midline."""
    from core.preprocess import resize_to
    from core.train import HALF_MIRROR_FOREGROUND, half_mirrors, midlines

    tensor = np.asarray(tensor, np.float32)
    threshold = (HALF_MIRROR_FOREGROUND - loaded.pipeline.mean) / loaded.pipeline.std
    outline = resize_to(mask.astype(np.float32), tensor.shape[1:3]) > 0.5
    columns = np.nonzero(outline)[1]
    left = float(np.mean(columns < float(midlines(tensor, threshold).numpy()[0]))) if columns.size else 0.5
    composites = [c.numpy() for c in half_mirrors(tensor, threshold)]
    probabilities = loaded.predict(np.concatenate([tensor, *composites]))
    lesion, healthy = (probabilities[1], probabilities[2]) if left >= 0.5 else (probabilities[2], probabilities[1])
    return {"p": float(probabilities[0][target]), "lesion_one_side": max(left, 1 - left),
            "p_lesion_side": float(lesion[target]),
            "p_healthy_side": float(healthy[target]),
            "answer_healthy_side": loaded.class_names[int(np.argmax(healthy))]}


#: How far the shift check moves the model input, in cells of the last convolution (16 px of a 128 px input).
SHIFT_CELLS = 2


def shift_correlation(loaded, tensor, target: int) -> float:
    """The mean over four shifts (:data:`SHIFT_CELLS` up, down, left, right) of the correlation between the Grad-CAM
    of ``tensor`` and that of the shifted input moved back, on the map cells both saw; nan if no shift gives two
    maps that vary."""
    from core.train import shifted

    def raw(x):
        return np.asarray(loaded.explainer.saliency(x, "gradcam", target, "last_conv"), np.float64)

    tensor = np.asarray(tensor, np.float32)
    original = raw(tensor)
    stride = tensor.shape[1] // original.shape[0]
    found = []
    for dy, dx in ((SHIFT_CELLS, 0), (-SHIFT_CELLS, 0), (0, SHIFT_CELLS), (0, -SHIFT_CELLS)):
        moved = shifted(tensor, dy * stride, dx * stride, fill=float(tensor.min())).numpy()
        back = shifted(raw(moved)[None, ..., None], -dy, -dx).numpy()[0, ..., 0]
        seen = shifted(np.ones((1, *original.shape, 1), np.float32), -dy, -dx).numpy()[0, ..., 0] > 0
        a, b = original[seen], back[seen]
        if a.std() > 0 and b.std() > 0:
            found.append(float(np.corrcoef(a, b)[0, 1]))
    return float(np.mean(found)) if found else float("nan")


def check_one(loaded, scan, mask, target: int) -> dict:
    """Grad-CAM of ``target`` for ``scan`` and for its mirror image (mirrored back), compared; the same for shifts
    (:func:`shift_correlation`); then :func:`half_mirror_test`."""
    def gradcam(tensor):
        return to_geometry(loaded.explainer.saliency(tensor, "gradcam", target, "last_conv"), scan.shape)

    tensor = loaded.pipeline.scan_tensor(scan)
    heat = gradcam(tensor)
    back = gradcam(loaded.pipeline.scan_tensor(mirrored(scan)))[:, ::-1]
    width = heat.shape[1]
    centre = (width - 1) / 2
    peak = np.unravel_index(int(np.argmax(heat)), heat.shape)
    peak_back = np.unravel_index(int(np.argmax(back)), back.shape)
    lesion_column = float(np.argwhere(mask)[:, 1].mean())
    flat, flat_back = heat.ravel().astype(np.float64), back.ravel().astype(np.float64)
    spread = flat.std() * flat_back.std()
    return {
        "peak_right": bool(peak[1] > centre),
        "lesion_right": bool(lesion_column > centre),
        "same_side": bool((peak[1] > centre) == (lesion_column > centre)),
        "correlation": float(np.corrcoef(flat, flat_back)[0, 1]) if spread > 0 else float("nan"),
        "shift_correlation": shift_correlation(loaded, tensor, target),
        "hit": bool(mask[peak]),
        "hit_mirrored": bool(mask[peak_back]),
        **half_mirror_test(loaded, tensor, mask, target),
    }


def summarise(rows: list[dict], names: list[str]) -> list[dict]:
    """Per class and for all: the shares, the mean correlation with its bootstrap interval, the peaks inside."""
    out = []
    for cls in sorted({r["class"] for r in rows}, key=names.index) + ["all"]:
        group = [r for r in rows if cls == "all" or r["class"] == cls]
        correlations = [r["correlation"] for r in group]
        line = {"class": cls, "n": len(group)}
        for key in ("peak_right", "lesion_right", "same_side", "hit", "hit_mirrored"):
            line[key] = float(np.mean([r[key] for r in group]))
        line["correlation"] = [round(v, 3) for v in loc.bootstrap_mean(correlations)]
        line["shift_correlation"] = [round(v, 3) for v in loc.bootstrap_mean([r["shift_correlation"] for r in group])]
        one_sided = [r for r in group if r["lesion_one_side"] >= ONE_SIDED]
        line["one_sided"] = len(one_sided)
        for key in ("p", "p_lesion_side", "p_healthy_side"):
            line[f"one_sided_{key}"] = float(np.mean([r[key] for r in one_sided])) if one_sided else None
        line["healthy_side_answers"] = {n: sum(r["answer_healthy_side"] == n for r in one_sided) for n in names}
        line["healthy_side_kept"] = (float(np.mean([r["answer_healthy_side"] == r["class"] for r in one_sided]))
                                     if one_sided else None)
        out.append(line)
    return out


def markdown(summary: list[dict]) -> str:
    head = ["class", "n", "peaks right of centre", "outlines right of centre", "peak on the lesion's side",
            "map vs mirrored-back map: correlation", "map vs shifted-back map: correlation", "peak in the outline",
            "the same, mirrored image"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def interval(values) -> str:
        mean, low, high = values
        return f"{mean:.2f}" + ("" if np.isnan(low) else f" [{low:.2f}, {high:.2f}]")

    for s in summary:
        lines.append("| " + " | ".join([
            s["class"], str(s["n"]), f"{s['peak_right']:.2f}", f"{s['lesion_right']:.2f}", f"{s['same_side']:.2f}",
            interval(s["correlation"]), interval(s["shift_correlation"]), f"{s['hit']:.2f}",
            f"{s['hit_mirrored']:.2f}"]) + " |")
    head = ["class", f"outline {ONE_SIDED:.0%} on one side", "P(true class): slice", "composite with the lesion",
            "composite without it", "answers without the lesion", "true class kept without the lesion"]
    lines += ["", "Half-mirror test:", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        if not s["one_sided"]:
            lines.append(f"| {s['class']} | 0 |" + " |" * (len(head) - 2))
            continue
        answers = ", ".join(f"{k} {v}" for k, v in s["healthy_side_answers"].items() if v)
        lines.append("| " + " | ".join([
            s["class"], str(s["one_sided"]), f"{s['one_sided_p']:.2f}", f"{s['one_sided_p_lesion_side']:.2f}",
            f"{s['one_sided_p_healthy_side']:.2f}", answers, f"{s['healthy_side_kept']:.2f}"]) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    def refuse(loaded):
        if not loaded.info.get("flip"):
            return (f"The {loaded.info.get('task')} task says a mirror image is not the same anatomy, so a map need "
                    "not move with it: no mirror check.")
        return None

    done = outlined_check(__doc__.split("\n\n")[0],
                          lambda loaded, scan, mask, cls, args: check_one(loaded, scan, mask,
                                                                          loaded.class_names.index(cls)),
                          refuse=refuse, argv=argv)
    if done is None:
        return 2
    loaded, rows, args = done
    summary = summarise(rows, loaded.class_names)
    print(markdown(summary))
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
