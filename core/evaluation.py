"""Scores of every saliency method over a set of images: ``python -m core explain-eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core import data as data_mod
from core.explain import CAM_METHODS, METHODS, saliency_map
from core.trust import faithfulness, sanity_check


def evaluation_items(loaded, data_dir: str | Path, limit: int) -> list:
    """Up to ``limit`` images spread over the classes, from the model's validation split when known."""
    names = loaded.class_names
    dataset = data_mod.list_dataset(data_dir, class_names=names)
    split_file = loaded.path / "split.json"
    items = list(dataset.items)
    if split_file.exists():
        validation = set(json.loads(split_file.read_text())["validation"])
        items = [i for i in items if f"{names[i.label]}/{i.path.name}" in validation]
    rng = np.random.default_rng(0)
    per_class = [[i for i in items if i.label == c] for c in range(len(names))]
    chosen = []
    for members in per_class:
        take = min(len(members), int(np.ceil(limit / len(names))))
        chosen += [members[j] for j in sorted(rng.choice(len(members), take, replace=False))] if take else []
    return chosen[:limit]


def evaluate_explanations(loaded, data_dir, *, limit: int = 20, sanity_limit: int = 3, log=print) -> dict:
    items = evaluation_items(loaded, data_dir, limit)
    layer = loaded.info.get("last_conv")
    rows = {m: {"deletion_auc": [], "insertion_auc": [], "deletion_ratio": [], "insertion_ratio": [],
                "average_drop": [], "sanity_spearman": [], "sanity_pass": []} for m in METHODS}
    skipped = {m: 0 for m in METHODS}
    for n, item in enumerate(items, start=1):
        tensor = data_mod.prepare_image(item.path, loaded.pipeline)[None, ..., None]
        target = int(np.argmax(np.asarray(loaded.model(tensor, training=False))[0]))
        for method in METHODS:
            use_layer = layer if method in CAM_METHODS else None
            raw = saliency_map(loaded.model, tensor, method, target, use_layer)
            scores = faithfulness(loaded.model, tensor, raw, target).summary()
            # Only images where blurring everything lowers the class probability can score a map.
            if scores.pop("informative"):
                for key, value in scores.items():
                    rows[method][key].append(value)
            else:
                skipped[method] += 1
            if n <= sanity_limit:
                check = sanity_check(loaded.model, tensor, method, target, use_layer, original=raw)
                rows[method]["sanity_spearman"].append(check.spearman[-1])
                rows[method]["sanity_pass"].append(check.passes)
        log(f"{n}/{len(items)} {item.path.name}")
    summary = {}
    for method, values in rows.items():
        entry = {}
        for key, series in values.items():
            if key == "sanity_pass":
                entry["sanity_passed"] = f"{sum(series)}/{len(series)}"
            elif series:
                entry[key] = {"mean": float(np.mean(series)), "std": float(np.std(series))}
        entry["faithfulness_images"] = len(values["deletion_auc"])
        entry["uninformative_images"] = skipped[method]
        summary[method] = entry
    return {"model": str(loaded.path), "task": loaded.task, "images": len(items), "sanity_images": min(sanity_limit, len(items)),
            "methods": summary}


def format_table(report: dict) -> str:
    head = (f"{report['task']}: {report['images']} images (sanity check on {report['sanity_images']})\n"
            f"{'method':<18}{'deletion AUC':>16}{'insertion AUC':>16}{'del. ratio':>13}{'ins. ratio':>13}"
            f"{'avg drop %':>14}{'sanity rho':>13}{'passed':>8}{'scored':>8}")
    lines = [head]
    for method, e in report["methods"].items():
        def cell(key, width):
            v = e.get(key)
            return f"{v['mean']:.3f}±{v['std']:.3f}".rjust(width) if v else "n/a".rjust(width)
        lines.append(f"{METHODS[method]:<18}{cell('deletion_auc', 16)}{cell('insertion_auc', 16)}"
                     f"{cell('deletion_ratio', 13)}{cell('insertion_ratio', 13)}{cell('average_drop', 14)}"
                     f"{cell('sanity_spearman', 13)}{e.get('sanity_passed', 'n/a'):>8}"
                     f"{e['faithfulness_images']:>8}")
    lines.append("scored: images whose class probability falls by >= 0.2 when the whole image is blurred; "
                 "on the others deletion/insertion cannot judge any map.")
    return "\n".join(lines)


def format_markdown(report: dict) -> str:
    """The report as a Markdown table (mean ± standard deviation over the scored images)."""
    def cell(entry, key, digits=3):
        v = entry.get(key)
        return f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}" if v else "n/a"

    lines = ["| method | deletion AUC (lower better) | insertion AUC (higher better) | deletion vs random | "
             "insertion vs random | average drop % | randomisation: Spearman ρ | sanity check passed | images scored |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, e in report["methods"].items():
        lines.append(f"| {METHODS[method]} | {cell(e, 'deletion_auc')} | {cell(e, 'insertion_auc')} | "
                     f"{cell(e, 'deletion_ratio', 2)}x | {cell(e, 'insertion_ratio', 2)}x | {cell(e, 'average_drop', 1)} | "
                     f"{cell(e, 'sanity_spearman', 2)} | {e.get('sanity_passed', 'n/a')} | "
                     f"{e['faithfulness_images']} of {e['faithfulness_images'] + e['uninformative_images']} |")
    return "\n".join(lines)
