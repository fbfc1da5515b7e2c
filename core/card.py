"""Model cards: ``MODEL_CARD.md`` written from a run folder's own files, so its figures are measured ones."""

from __future__ import annotations

import json
from pathlib import Path

SOURCES = {
    "chest_xray": (
        "Kermany D., Zhang K., Goldbaum M. (2018), *Labeled Optical Coherence Tomography (OCT) and Chest "
        "X-Ray Images for Classification*, Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, licence CC BY 4.0; "
        "paper: Kermany et al., *Identifying Medical Diagnoses and Treatable Diseases by Image-Based Deep "
        "Learning*, Cell 172(5), 2018. Training split only (paediatric patients, Guangzhou Women and "
        "Children's Medical Center), images squashed to 224 x 224."
    ),
    "brain_mri": (
        "*Brain Tumor MRI Dataset* (M. Nickparvar, 2021), licence CC0, combining the figshare set of "
        "Cheng et al. (2015/2017, CC BY 4.0), the SARTAJ set and Br35H. Training split only; 224 x 224 "
        "JPEG, mixed axial, coronal and sagittal slices and mixed MR sequences."
    ),
}

LIMITS = {
    "chest_xray": [
        "Paediatric patients (1-5 years) from one centre: adult radiographs, other hospitals and other "
        "devices are outside what it learned.",
        "The images were squashed to a square; every upload is squashed the same way before the model sees it.",
        "Pneumonia labels (bacterial and viral together) come from the dataset's graders; the model knows "
        "no other finding and says nothing about anything else in the image.",
    ],
    "brain_mri": [
        "The file names carry no patient key, so the validation split cannot be grouped by patient: "
        "neighbouring slices of one patient may sit on both sides and the validation score is optimistic. "
        "Near-identical images were removed before splitting to limit this.",
        "Mixed sequences and planes from several public sources; a scan from another scanner or protocol "
        "may look unlike anything it learned.",
        "It only ever answers one of four classes, even for an image that is not a brain MRI.",
    ],
}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * float(value):.1f}%"


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
        f"{info['input_size']} x {info['input_size']} x 1, softmax over {len(names)} classes: {', '.join(names)}.",
        f"- Last convolution `{info.get('last_conv', 'last_conv')}` (explained by the CAM methods).",
        f"- Preprocessing (saved in `model.json`, the same code for training and inference): "
        f"{json.dumps(info['preprocessing'])}.",
        f"- Decision: {'P(' + names[1] + ') >= ' + str(info.get('threshold', 0.5)) if len(names) == 2 else 'arg-max'}.",
        f"- File `model.keras`, SHA-256 `{info['sha256']}`; loaded with Keras `safe_mode` after the hash check.",
        "",
        "## Data",
        SOURCES.get(task, f"Class-folder dataset at `{info['dataset']['path']}`."),
        "",
        f"- Images used: {sum(info['dataset']['counts'].values())} "
        f"({', '.join(f'{k} {v}' for k, v in info['dataset']['counts'].items())}) after removing "
        f"{info['dataset']['removed_duplicates']} duplicates; dataset fingerprint `{info['dataset']['fingerprint'][:16]}…`.",
        f"- Split: {params.get('n_train')} training / {params.get('n_validation')} validation images, "
        f"{'grouped by patient (file names)' if task == 'chest_xray' else 'grouped by file (no patient key in the names)'}, seed {params.get('seed')}.",
        "",
        "## Training",
        f"- Command: `python -m core train --task {task} --data {info['dataset']['path']} --out {folder.as_posix()} "
        f"--epochs {params.get('epochs')} --patience {params.get('patience')} --seed {params.get('seed')} "
        f"--recalibrate-bn {params.get('recalibrate_bn', 0)}`",
        f"- {len(_history_rows(folder))} epochs run (early stopping on `{params.get('monitor')}`), "
        f"{float(params.get('train_seconds', 0)) / 60:.1f} minutes on a 2-core CPU, Adam with cosine decay, class "
        "weights for imbalance, augmentation: small shifts, rotations, zoom and contrast"
        f"{', horizontal flips' if task == 'brain_mri' else ''}.",
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
        "",
        "## Intended use",
        "Teaching and demonstrating explainable AI on medical images; exploring what a small CNN attends to. "
        "Not for diagnosis, triage or any clinical decision.",
        "",
        "## Limits",
        *[f"- {limit}" for limit in LIMITS.get(task, [])],
        "- Burned-in text (names, dates, markers) is common in radiographs; the model may use it and an "
        "image is never anonymous because its header was de-identified.",
        "- Saliency maps show what raised the class score in this model, not where disease is.",
        "",
    ]
    return "\n".join(lines)


def _recalibration_lines(params: dict) -> list[str]:
    n = params.get("recalibrate_bn", 0)
    if not n:
        return ["- Batch-norm statistics: Keras's moving averages from training (trained before "
                "`--recalibrate-bn` existed, or with it off)."]
    return [f"- Batch-norm statistics recomputed from {n} clean (not augmented) training images before each "
            "validation, and from all training images for the kept weights; validation images are never used."]


def _calibration_lines(info: dict, folder: Path) -> list[str]:
    cal, ood = info.get("calibration"), info.get("ood")
    if not cal:
        return []
    lines = [f"- Temperature scaling (`python -m core calibrate --model {folder.as_posix()} --data "
             f"{info['dataset']['path']}`): T = {info.get('temperature', 1.0):.3f}, ECE {cal['ece_before']:.4f} "
             f"before, {cal['ece_after']:.4f} after, on the {cal['n_validation']} validation images. The "
             "dashboard and `predict` show the calibrated probabilities."]
    if ood:
        lines.append(f"- Outlier check: an input whose pooled features lie farther from the training images than "
                     f"{ood['threshold']:.1f} (Mahalanobis distance; {100 * ood['quantile']:.0f}% of validation "
                     "images are closer) is flagged as unlike the training data.")
    return lines


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
