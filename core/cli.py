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
    t.add_argument("--recalibrate-bn", type=int, default=1024, metavar="N",
                   help="recompute batch-norm statistics from N clean training images before each validation "
                        "and from all of them at the end (0: off)")

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
    x.add_argument("--markdown", action="store_true", help="print a Markdown table")

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
                         limit_per_class=args.limit_per_class, recalibrate_bn=args.recalibrate_bn)
    try:
        train(config, log=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError) as err:  # a dataset folder of the wrong shape
        raise UsageError(str(err)) from None
    return 0


#: Inputs decoded ahead and sent through the model together by ``python -m core predict``.
PREDICT_BATCH = 64


def predict_file(path: str, loaded, frame: int | None = None, explain: str | None = None,
                 out: Path | None = None) -> dict:
    """One input's result record: ``ok`` with probabilities, or ``error`` with one sentence."""
    return next(predict_files([path], loaded, frame, explain, out))


def predict_files(paths, loaded, frame: int | None = None, explain: str | None = None,
                  out: Path | None = None, *, batch_size: int = PREDICT_BATCH, workers: int = 2):
    """:func:`predict_file` for many inputs, yielded in the order given.

    Files are read and prepared in a thread pool, one batch ahead, and the model sees each
    batch in one call: per-image calls would spend most of their time in Keras's per-call
    overhead (BENCHMARKS.md). Scans are kept only until their batch is done, and only when
    ``explain`` needs them.
    """
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    paths = list(paths)
    size = max(1, min(batch_size, 8 if explain else batch_size))  # an explained batch holds its scans
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def submit(chunk):
            return [pool.submit(_prepare, path, loaded, frame, bool(explain)) for path in chunk]

        pending = submit(chunks[0]) if chunks else []
        for i in range(len(chunks)):
            prepared = [future.result() for future in pending]
            pending = submit(chunks[i + 1]) if i + 1 < len(chunks) else []  # decoded while this batch runs
            good = [p for p in prepared if "tensor" in p]
            if good:
                batch = np.concatenate([p["tensor"] for p in good])
                for p, probs, outside in zip(good, *loaded.predict_and_check(batch)):
                    p["probs"], p["outside"] = probs, outside
            for p in prepared:
                yield _record(p, loaded, frame, explain, out)


def _prepare(path: str, loaded, frame, keep_scan: bool) -> dict:
    """Read and preprocess one input: its tensor and warnings, or its one-sentence error."""
    from core.io import ScanError, load_scan

    item = {"file": path}
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return item | {"error": "The file does not exist."}
    except IsADirectoryError:
        return item | {"error": "This is a folder, not a file."}
    except OSError as err:
        return item | {"error": f"The file cannot be read ({err.strerror})."}
    try:
        scan = load_scan(data, Path(path).name)
        tensor = loaded.pipeline.scan_tensor(scan, frame)
    except ScanError as err:
        return item | {"error": str(err)}
    return item | {"tensor": tensor, "warnings": list(scan.warnings), "scan": scan if keep_scan else None}


def _record(item: dict, loaded, frame, explain, out) -> dict:
    record = {"file": item["file"]}
    if "error" in item:
        return record | {"ok": False, "error": item["error"]}
    probs = item["probs"]
    names = loaded.class_names
    notes = item["warnings"] + ([item["outside"]] if item["outside"] else [])
    record |= {"ok": True, "probabilities": {n: round(float(p), 6) for n, p in zip(names, probs)},
               "predicted": names[loaded.decide(probs)]}
    if notes:
        record["warnings"] = notes
    if explain:
        record |= _write_explanation(loaded, item["scan"], frame, explain, loaded.decide(probs),
                                     Path(item["file"]), out)
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
    for record in predict_files(args.paths, loaded, args.frame, args.explain, Path(args.out) if args.out else None):
        path = record["file"]
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
    from core.evaluation import evaluate_explanations, format_markdown, format_table

    loaded = _load(args.model)
    if not Path(args.data).is_dir():
        raise UsageError(f"dataset folder {args.data} does not exist")
    report = evaluate_explanations(loaded, args.data, limit=args.limit, sanity_limit=args.sanity_limit,
                                   log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report) if args.json else format_markdown(report) if args.markdown else format_table(report))
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
