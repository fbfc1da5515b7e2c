"""Command line: ``python -m core {train,predict,evaluate} ...``.

Exit codes: 0 every input was used, 1 some input could not be, 2 bad usage (including an
unusable model folder). A bad input gives one sentence, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write a run folder")
    t.add_argument("--task", required=True, help="chest_xray, brain_mri, or any name for a class-folder dataset")
    t.add_argument("--data", required=True, help="class-folder dataset, e.g. ../shared/data/chest_xray/train")
    t.add_argument("--out", required=True, help="run folder to write")
    t.add_argument("--epochs", type=int, default=20)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--input-size", type=int, default=128)
    t.add_argument("--width", type=int, default=32, help="filters of the first stage")
    t.add_argument("--learning-rate", type=float, default=1e-3)
    t.add_argument("--patience", type=int, default=6)
    t.add_argument("--limit-per-class", type=int, default=None, help="use only the first N files per class")

    p = sub.add_parser("predict", help="classify images or DICOM files")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", required=True, help="model folder, e.g. assets/models/chest_xray")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument("--frame", type=int, default=None, help="frame of a multi-frame file (default: middle)")
    p.add_argument("--explain", choices=["gradcam", "gradcam++", "scorecam", "layercam", "smoothgrad"],
                   help="also write a saliency overlay (PNG, the scan's own geometry) and the raw map (.npy)")
    p.add_argument("--out", help="folder for --explain outputs")

    e = sub.add_parser("evaluate", help="metrics of a model on a class-folder dataset")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--json", action="store_true")
    e.add_argument("--limit-per-class", type=int, default=None)
    x = sub.add_parser("explain-eval", help="faithfulness and sanity-check scores of every saliency method")
    x.add_argument("--model", required=True)
    x.add_argument("--data", required=True, help="class-folder dataset; the model's validation split is used when known")
    x.add_argument("--limit", type=int, default=20, help="number of images (spread over the classes)")
    x.add_argument("--sanity-limit", type=int, default=3, help="images for the (slower) randomisation check")
    x.add_argument("--json", action="store_true")

    c = sub.add_parser("calibrate", help="fit temperature scaling and the outlier check on the run's own split")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True, help="the dataset the model was trained on")
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.io import ScanError

    args = _parser().parse_args(argv)
    try:
        return {"train": _train, "predict": _predict, "evaluate": _evaluate, "calibrate": _calibrate,
                "explain-eval": _explain_eval}[args.command](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ScanError as err:  # a dataset image that train or evaluate cannot use
        print(f"error: {err}", file=sys.stderr)
        return 1


class UsageError(Exception):
    pass


def _load(model_dir: str):
    from core.model import ModelError, load_model

    try:
        return load_model(model_dir)
    except ModelError as err:
        raise UsageError(str(err)) from None


def _train(args) -> int:
    from core.train import TrainConfig, train

    if not Path(args.data).is_dir():
        raise UsageError(f"dataset folder {args.data} does not exist")
    config = TrainConfig(task=args.task, data=args.data, out=args.out, epochs=args.epochs, seed=args.seed,
                         batch_size=args.batch_size, input_size=args.input_size, width=args.width,
                         learning_rate=args.learning_rate, patience=args.patience,
                         limit_per_class=args.limit_per_class)
    try:
        train(config, log=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError) as err:  # a dataset folder of the wrong shape
        raise UsageError(str(err)) from None
    return 0


def predict_file(path: str, loaded, frame: int | None = None, explain: str | None = None,
                 out: Path | None = None) -> dict:
    """One input's result record: ``ok`` with probabilities, or ``error`` with one sentence."""
    from core.io import ScanError, load_scan

    record = {"file": path}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return record | {"ok": False, "error": "The file does not exist."}
    except IsADirectoryError:
        return record | {"ok": False, "error": "This is a folder, not a file."}
    except OSError as err:
        return record | {"ok": False, "error": f"The file cannot be read ({err.strerror})."}
    try:
        scan = load_scan(data, Path(path).name)
        tensor = loaded.pipeline.scan_tensor(scan, frame)
    except ScanError as err:
        return record | {"ok": False, "error": str(err)}
    probs = loaded.predict(tensor)[0]
    names = loaded.class_names
    notes = list(scan.warnings)
    outside = loaded.outside_message(tensor)
    if outside:
        notes.append(outside)
    record |= {"ok": True, "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
               "predicted": names[loaded.decide(probs)]}
    if notes:
        record["warnings"] = notes
    if explain:
        record |= _write_explanation(loaded, scan, frame, explain, loaded.decide(probs), Path(path), out)
    return record


def _write_explanation(loaded, scan, frame, method: str, target: int, path: Path, out: Path) -> dict:
    """Overlay PNG at the scan's rows x cols, and the map on the explained layer's grid as .npy."""
    import numpy as np

    from core.explain import display_image, explain, overlay, png_bytes

    result = explain(loaded, scan, method=method, class_index=target, frame=frame)
    picture = overlay(display_image(scan.frame(frame), scan.window, scan.invert), result.on_scan)
    stem = f"{path.stem}_{method.replace('+', 'p')}"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.png").write_bytes(png_bytes(picture))
    np.save(out / f"{stem}.npy", result.raw)
    return {"explained": loaded.class_names[target], "method": method, "layer": result.layer,
            "overlay": str(out / f"{stem}.png"), "map": str(out / f"{stem}.npy")}


def _predict(args) -> int:
    if args.explain and not args.out:
        raise UsageError("--explain needs --out, the folder for the overlays and maps")
    loaded = _load(args.model)
    failures = 0
    for path in args.paths:
        record = predict_file(path, loaded, args.frame, args.explain, Path(args.out) if args.out else None)
        failures += not record["ok"]
        if args.json:
            print(json.dumps(record), flush=True)
        elif record["ok"]:
            probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
            print(f"{path}: {record['predicted']} ({probs})", flush=True)
            for note in record.get("warnings", []):
                print(f"  warning: {note}", flush=True)
        else:
            print(f"{path}: {record['error']}", flush=True)
    return 1 if failures else 0


def _explain_eval(args) -> int:
    from core.evaluation import evaluate_explanations, format_table

    loaded = _load(args.model)
    if not Path(args.data).is_dir():
        raise UsageError(f"dataset folder {args.data} does not exist")
    report = evaluate_explanations(loaded, args.data, limit=args.limit, sanity_limit=args.sanity_limit,
                                   log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report) if args.json else format_table(report))
    return 0


def _calibrate(args) -> int:
    from core.calibration import calibrate

    _load(args.model)  # refuses a damaged folder with one sentence
    if not Path(args.data).is_dir():
        raise UsageError(f"dataset folder {args.data} does not exist")
    calibrate(args.model, args.data, log=lambda line: print(line, flush=True))
    return 0


def _evaluate(args) -> int:
    from core import data as data_mod
    from core.metrics import classification_metrics

    loaded = _load(args.model)
    if not Path(args.data).is_dir():
        raise UsageError(f"dataset folder {args.data} does not exist")
    try:
        dataset = data_mod.list_dataset(args.data, class_names=loaded.class_names,
                                        limit_per_class=args.limit_per_class)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    x, y = data_mod.prepare_arrays(list(dataset.items), loaded.pipeline)
    probs = loaded.predict(x)
    metrics = classification_metrics(y, probs, loaded.class_names, threshold=loaded.threshold)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{metrics['n']} images: accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']}")
        for name, recall in metrics["per_class_recall"].items():
            print(f"  recall {name}: {recall}")
        print(f"  ECE {metrics['calibration']['ece']:.4f}")
    return 0
