"""Scores of every saliency method over a set of images: ``python -m core explain-eval``.

Without masks: faithfulness (deletion/insertion, average drop) and the randomisation sanity check
(:func:`evaluate_explanations`). With expert outlines: localisation against them, with baselines and
bootstrap intervals (:func:`evaluate_localisation`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core import data as data_mod
from core.saliency import CAM_METHODS, METHODS, to_geometry
from core.trust import faithfulness, sanity_check


class EvaluationError(Exception):
    """Nothing could be scored; ``str(err)`` is one sentence."""


#: Share of a model's validation files a folder must hold to count as the model's own training data.
OWN_DATA_SHARE = 0.9


def evaluation_items(loaded, data_dir: str | Path, limit: int) -> tuple[list, str]:
    """Up to ``limit`` images of ``data_dir`` spread over the classes, and a sentence saying which.

    The folder given is evaluated. Only when it is the model's own training data (it holds at least
    90% of the files the model's ``split.json`` lists as validation) are the images restricted to
    that validation split, so that no image the model trained on is scored.
    """
    names = loaded.class_names
    try:
        dataset = data_mod.list_for_spec(data_dir, loaded.info, class_names=names)
    except ValueError:  # class folders without a single image
        raise EvaluationError(f"No image in {data_dir} could be scored: it holds none in the model's classes "
                              f"({', '.join(names)}).") from None
    items = list(dataset.items)
    subset = f"all {len(items)} images of {data_dir}"
    split_file = loaded.path / "split.json"
    if split_file.exists():
        validation = set(json.loads(split_file.read_text())["validation"])
        held_out = [i for i in items if data_mod.item_key(i, names) in validation]
        if validation and len(held_out) >= OWN_DATA_SHARE * len(validation):
            items = held_out
            subset = (f"the model's own validation split ({len(items)} of the {len(dataset.items)} images of "
                      f"{data_dir}, which is its training data)")
    rng = np.random.default_rng(0)
    per_class = [[i for i in items if i.label == c] for c in range(len(names))]
    chosen = []
    for members in per_class:
        take = min(len(members), int(np.ceil(limit / len(names))))
        chosen += [members[j] for j in sorted(rng.choice(len(members), take, replace=False))] if take else []
    return chosen[:limit], subset


def evaluate_explanations(loaded, data_dir, *, limit: int = 20, sanity_limit: int = 3, log=print) -> dict:
    """Faithfulness (deletion/insertion, average drop) and the randomisation check of every method.

    Raises :class:`EvaluationError` when the folder holds no image that can be scored.
    """
    items, subset = evaluation_items(loaded, data_dir, limit)
    if not items:
        raise EvaluationError(f"No image in {data_dir} could be scored: it holds none in the model's classes "
                              f"({', '.join(loaded.class_names)}).")
    log(f"scoring {len(items)} images from {subset}")
    layer = loaded.last_conv
    methods = [m for m in METHODS if layer or m not in CAM_METHODS]
    rows = {m: {"deletion_auc": [], "insertion_auc": [], "deletion_ratio": [], "insertion_ratio": [],
                "average_drop": [], "sanity_spearman": [], "sanity_pass": []} for m in methods}
    skipped = {m: 0 for m in methods}
    for n, item in enumerate(items, start=1):
        tensor = data_mod.prepare_image(item.path, loaded.pipeline)[None]
        target = int(np.argmax(loaded.uncalibrated(tensor)[0]))
        for method in methods:
            use_layer = layer if method in CAM_METHODS else None
            raw = loaded.explainer.saliency(tensor, method, target, use_layer)
            scores = faithfulness(loaded, tensor, raw, target).summary()
            # Only images where blurring everything lowers the class probability can score a map.
            if scores.pop("informative"):
                for key, value in scores.items():
                    rows[method][key].append(value)
            else:
                skipped[method] += 1
            if n <= sanity_limit:
                check = sanity_check(loaded, tensor, method, target, use_layer, original=raw)
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
    return {"model": str(loaded.path), "task": loaded.task, "images": len(items), "subset": subset,
            "map_score": loaded.map_score, "sanity_images": min(sanity_limit, len(items)), "methods": summary}


def format_table(report: dict) -> str:
    head = (f"{report['task']}: {report['images']} images from {report['subset']} "
            f"(sanity check on {report['sanity_images']})\n"
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

    lines = [f"{report['images']} images from {report['subset']}.", "",
             "| method | deletion AUC (lower better) | insertion AUC (higher better) | deletion vs random | "
             "insertion vs random | average drop % | randomisation: Spearman ρ | sanity check passed | images scored |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for method, e in report["methods"].items():
        lines.append(f"| {METHODS[method]} | {cell(e, 'deletion_auc')} | {cell(e, 'insertion_auc')} | "
                     f"{cell(e, 'deletion_ratio', 2)}x | {cell(e, 'insertion_ratio', 2)}x | {cell(e, 'average_drop', 1)} | "
                     f"{cell(e, 'sanity_spearman', 2)} | {e.get('sanity_passed', 'n/a')} | "
                     f"{e['faithfulness_images']} of {e['faithfulness_images'] + e['uninformative_images']} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- localisation (expert outlines)

def localisation_layers(loaded, requested: list[str] | None = None) -> list[str]:
    """The layers to score: those requested, else the last convolution and the last one on a finer grid.

    The second is the last convolution before the final downsampling: a map one octave finer, to show
    whether an earlier layer localises better than the class-specific last one.
    """
    layers = loaded.explainable_layers
    if requested:
        unknown = [name for name in requested if name not in layers]
        if unknown:
            raise EvaluationError(f"The model has no convolution named {', '.join(unknown)}; its convolutions are "
                                  f"{', '.join(layers)}.")
        return list(requested)
    if not loaded.last_conv:
        return []
    grid = loaded.model.get_layer(loaded.last_conv).output.shape[1:3]
    finer = [name for name in layers if loaded.model.get_layer(name).output.shape[1:3] != grid
             and loaded.model.get_layer(name).output.shape[1] > grid[0]]
    return [loaded.last_conv] + finer[-1:]


def read_index(path: Path) -> list[dict]:
    import csv

    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def tolerance_note(tolerances) -> str:
    """One sentence on the pointing game's tolerance over a run: the tolerance itself when every image
    had the same, else each one with how many images it applied to (spacings and sizes may differ).

    ``tolerances`` counts :class:`core.localisation.Tolerance` objects, one per image scored.
    """
    if len(tolerances) == 1:
        return next(iter(tolerances)).describe()
    parts = []
    for tolerance, count in sorted(tolerances.items(), key=lambda item: -item[1]):
        text = tolerance.describe().rstrip(".")
        parts.append(f"{count} image{'s' if count != 1 else ''}: {text[0].lower()}{text[1:]}")
    return "The tolerance differs between the images (their pixel spacings or sizes differ): " + "; ".join(parts) + "."


def outline_ablation(loaded, scan, mask, target: int, *, frame: int | None = None, body=None,
                     probabilities=None) -> dict:
    """Does the prediction need the outlined finding? P(``target``) and whether the decision is right for one
    frame of the scan as it is, with the outline filled in from its surroundings, and with a region of the same
    shape filled elsewhere on the body, the control (:func:`core.localisation.fill_region`,
    :func:`~core.localisation.control_region`; ``body`` defaults to :func:`~core.localisation.foreground` of the
    frame as displayed). Returns ``{"p_intact", "right_intact", "p_outline", "right_outline", "p_control",
    "right_control", "control", "filled"}``: the control's entries None when no region fits, ``control`` its mask,
    ``filled`` the frame's pixels with each region filled (``{"outline": ..., "control": ... or None}``), for showing."""
    import dataclasses

    from core import localisation as loc
    from core.render import display_image

    pixels = scan.frame(frame)
    if body is None:
        body = loc.foreground(display_image(pixels, scan.window, scan.invert, voi=scan.voi))
    if probabilities is None:
        probabilities = loaded.predict(loaded.pipeline.scan_tensor(scan, frame))[0]
    row = {"p_intact": float(probabilities[target]), "right_intact": bool(loaded.decide(probabilities) == target)}
    control = loc.control_region(mask, body)
    filled = {"outline": None, "control": None}
    for version, region in (("outline", mask), ("control", control)):
        if region is None:
            row |= {f"p_{version}": None, f"right_{version}": None}
            continue
        filled[version] = loc.fill_region(pixels, region)
        p = loaded.predict(loaded.pipeline.scan_tensor(dataclasses.replace(scan, frames=filled[version][None])))[0]
        row |= {f"p_{version}": float(p[target]), f"right_{version}": bool(loaded.decide(p) == target)}
    return row | {"control": control, "filled": filled}


def outlined_images(names: list[str], images_dir: Path, masks_dir: Path, *, where: tuple[str, str] | None = None,
                    index: Path | None = None) -> tuple[list, list, str]:
    """The outlined images of ``images_dir`` in the order they are scored: ``(candidates, skipped, subset)``.

    ``candidates`` are ``(class, image, mask)`` for the classes among ``names``, a seeded order per class, the
    classes taken in turn (so the first N spread over the classes and are the same N on every run); ``skipped``
    ``(path, reason)`` for files that cannot be paired or whose class the model lacks; ``subset`` describes the
    selection. ``where`` and ``index`` as in :func:`evaluate_localisation`. Raises :class:`EvaluationError`."""
    from core.masks import MaskError, pair_masks

    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    try:
        pairs, skipped = pair_masks(images_dir, masks_dir)
    except MaskError as err:
        raise EvaluationError(str(err)) from None
    skipped = [(path, reason) for path, reason in skipped]
    usable = []
    for cls, image, mask in pairs:
        if cls in names:
            usable.append((cls, image, mask))
        else:
            skipped.append((image, f"The class {cls} is not one of the model's classes ({', '.join(names)})."))
    subset = f"{images_dir}"
    if where is not None:
        column, value = where
        index = Path(index) if index else images_dir.parent / "index.csv"
        if not index.is_file():
            raise EvaluationError(f"--where needs an index CSV and {index} does not exist.")
        rows = read_index(index)
        if not rows or column not in rows[0] or "image" not in rows[0]:
            raise EvaluationError(f"The index {index} has no 'image' and '{column}' columns.")
        keep = {(index.parent / row["image"]).resolve() for row in rows if row[column] == value}
        usable = [pair for pair in usable if pair[1].resolve() in keep]
        subset = f"{images_dir}, {column} = {value}"
    # A seeded order per class, taken in turn: up to ``limit`` usable images spread over the classes (a file
    # that cannot be used is skipped, with its reason, and the next one taken).
    rng = np.random.default_rng(0)
    classes = sorted({cls for cls, _, _ in usable}, key=names.index)
    queues = [[pair for pair in usable if pair[0] == cls] for cls in classes]
    queues = [[queue[j] for j in rng.permutation(len(queue))] for queue in queues]
    candidates = [queue[i] for i in range(max(map(len, queues), default=0)) for queue in queues if i < len(queue)]
    return candidates, skipped, subset


def outlined_check(description: str, check, *, extra_arguments=None, refuse=None, argv=None):
    """The command line of a per-image check on outlined images (``scripts/margin_check.py``,
    ``scripts/mirror_check.py``): ``--model``, ``--data``, ``--masks``, ``--where``, ``--limit`` (default 150) and
    ``--json``, plus what ``extra_arguments(parser)`` adds. Images are taken as :func:`outlined_images` takes them
    (the first N are the N ``explain-eval`` scores). ``check(loaded, scan, mask, class_name, args)`` returns one
    image's row; ``refuse(loaded)``, a sentence when the model cannot be checked at all (printed, no image read).
    Returns ``(loaded, rows, args)``, or ``None`` after a refusal."""
    import argparse
    import sys

    from core.io import load_scan
    from core.masks import load_mask
    from core.model import load_model

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--masks", required=True, type=Path)
    parser.add_argument("--where", help="COLUMN=VALUE of the index CSV beside the images folder")
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--json", type=Path, help="also write the per-image rows and the summary here")
    if extra_arguments:
        extra_arguments(parser)
    args = parser.parse_args(argv)
    where = tuple(args.where.split("=", 1)) if args.where else None
    loaded = load_model(args.model)
    refusal = refuse(loaded) if refuse else None
    if refusal:
        print(refusal, file=sys.stderr)
        return None
    rows = []
    candidates, _, _ = outlined_images(loaded.class_names, args.data, args.masks, where=where)
    for cls, image, mask_path in candidates[:args.limit]:
        scan = load_scan(image.read_bytes(), image.name)
        mask = load_mask(mask_path.read_bytes(), scan.shape)
        rows.append({"image": f"{cls}/{image.name}", "class": cls} | check(loaded, scan, mask, cls, args))
        print(f"{len(rows)}/{args.limit} {cls}/{image.name}", file=sys.stderr, flush=True)
    return loaded, rows, args


def evaluate_localisation(loaded, images_dir, masks_dir, *, limit: int = 50, layers: list[str] | None = None,
                          spacing: tuple[float, float] | None = None, tolerance_mm: float = 7.0,
                          where: tuple[str, str] | None = None, index: Path | None = None,
                          methods: list[str] | None = None, n_resamples: int = 2000, log=print) -> dict:
    """Scores of every method's map against expert outlines, with baselines and bootstrap intervals.

    ``images_dir/{class}/N.jpg`` pairs with ``masks_dir/{class}/N.png`` (:func:`core.masks.pair_masks`).
    Each map explains the image's true class (its folder), on the scan's own geometry; the centre,
    intensity and random baselines are scored the same way on the same images (:mod:`core.localisation`).
    ``where=(column, value)`` keeps the images whose row of the index CSV (``index``, by default
    ``index.csv`` beside ``images_dir``; its ``image`` column is relative to that folder's parent)
    has that value, e.g. ``("subset", "unseen")``. ``spacing`` (mm per pixel) is used for files that
    do not state one; without either the tolerance is a fraction of the image size, and the report
    says which. ``methods`` keeps only those saliency methods (default: every CAM method on each layer and
    SmoothGrad); the baselines are always scored. Files that cannot be used are skipped with a sentence each and
    counted.

    Raises :class:`EvaluationError` when nothing could be scored.
    """
    import zlib
    from collections import Counter

    from core import localisation as loc
    from core.io import ScanError, load_scan
    from core.masks import MaskError, load_mask
    from core.render import display_image

    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    names = loaded.class_names
    unknown = [m for m in methods or () if m not in METHODS]
    if unknown or methods == []:
        raise EvaluationError(f"--methods takes methods among {', '.join(METHODS)}"
                              + (f", not {', '.join(unknown)}." if unknown else "."))
    candidates, skipped, subset = outlined_images(names, images_dir, masks_dir, where=where, index=index)
    score_layers = localisation_layers(loaded, layers)
    chosen = methods or list(METHODS)
    methods = [(m, layer) for m in METHODS if m in CAM_METHODS and m in chosen for layer in score_layers] + (
        [("smoothgrad", None)] if "smoothgrad" in chosen else [])
    rows, correct, tolerances, ablations = [], [], Counter(), []
    log(f"scoring up to {limit} of {len(candidates)} outlined images from {subset}: {len(methods)} maps and "
        "3 baselines each")
    for cls, image_path, mask_path in candidates:
        if len(correct) >= limit:
            break
        try:
            scan = load_scan(image_path.read_bytes(), image_path.name)
            mask = load_mask(mask_path.read_bytes(), scan.shape)
        except (ScanError, MaskError) as err:
            skipped.append((image_path, str(err)))
            continue
        pixel_spacing = scan.spacing or spacing
        tolerances[loc.pointing_tolerance(scan.shape, spacing=pixel_spacing, tolerance_mm=tolerance_mm)] += 1
        tensor = loaded.pipeline.scan_tensor(scan)
        target = names.index(cls)
        probabilities = loaded.predict(tensor)[0]
        correct.append(loaded.decide(probabilities) == target)
        key = f"{cls}/{image_path.name}"
        base = {"image": key, "class": cls}
        shown = display_image(scan.frame(), scan.window, scan.invert, voi=scan.voi)
        ablated = outline_ablation(loaded, scan, mask, target, body=loc.foreground(shown), probabilities=probabilities)
        ablations.append(base | {k: v for k, v in ablated.items() if k not in ("control", "filled")})
        unit = loc.peak_distance_unit(pixel_spacing)

        def scored(saliency):
            return {**loc.outline_scores(saliency, mask, spacing=pixel_spacing, tolerance_mm=tolerance_mm),
                    "peak_distance_unit": unit}

        for method, layer in methods:
            raw = loaded.explainer.saliency(tensor, method, target, layer)
            rows.append(base | {"method": method, "layer": layer, **scored(to_geometry(raw, scan.shape))})
        for name, prior in (("centre", loc.centre_prior(scan.shape, spacing=pixel_spacing)),
                            ("intensity", loc.intensity_prior(shown)),
                            ("random", loc.random_smooth_map(scan.shape, seed=zlib.crc32(key.encode())))):
            rows.append(base | {"method": f"{loc.BASELINE_PREFIX}{name}", "layer": None, **scored(prior)})
        log(f"{len(correct)}/{limit} {key}")
    if not rows:
        raise EvaluationError(f"No outlined image in {images_dir} could be scored"
                              + (f": {skipped[0][1]}" if skipped else "."))
    report = loc.summarise(rows, n_resamples=n_resamples)
    reasons = Counter(reason for _, reason in skipped)
    report["notes"] = [f"{report['n_images']} outlined images from {subset}; each map explains the image's true "
                       f"class, and the model's prediction was right on {sum(correct)} of them "
                       f"({100 * np.mean(correct):.0f}%).", tolerance_note(tolerances)]
    if skipped:
        report["notes"].append(f"{len(skipped)} files were skipped: "
                               + "; ".join(f"{count} x {reason.rstrip('.')}" for reason, count in reasons.most_common(5))
                               + ".")
    if loaded.map_score != "logit":
        report["notes"].append(f"The gradient maps explain each class's {loaded.map_score} "
                               "(core.saliency.SCORES), not its logit.")
    report["ablation"] = loc.summarise_ablation(ablations, n_resamples=n_resamples)
    controls = sum(row["p_control"] is not None for row in ablations)
    report["notes"].append(f"Ablation: each outline, grown by 1% of the image's side, filled in from its surroundings "
                           "(a smooth Gaussian fill, no lesion left), and, as the control, a region of the same shape "
                           f"filled elsewhere on the body (its mirror image when that clears the outline; found on "
                           f"{controls} of {len(ablations)} images).")
    report |= {"model": str(loaded.path), "task": loaded.task, "subset": subset, "layers": score_layers,
               "map_score": loaded.map_score,
               "accuracy": float(np.mean(correct)), "skipped": len(skipped),
               "skipped_reasons": dict(reasons.most_common())}
    return report
