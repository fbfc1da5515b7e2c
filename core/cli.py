"""Command line: ``python -m core {train,calibrate,predict,evaluate,explain-eval,report,import-model} ...``.

The commands only parse arguments and print; the work is done by the library modules.
Exit codes: 0 every input was used, 1 some input could not be (or nothing could be scored),
2 bad usage (including an unusable model folder). A bad input gives one sentence, never a traceback.
TensorFlow's start-up log lines are silenced unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from core.saliency import METHODS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description=__doc__.splitlines()[0])
    parser.add_argument("--verbose", action="store_true", help="show TensorFlow's own log lines")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model and write a run folder")
    t.add_argument("--task", required=True,
                   help="a task spec: a name from assets/tasks (chest_xray, brain_mri, ...) or a .json file; "
                        "any other name trains a plain class-folder task")
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
    t.add_argument("--strategy", choices=("mirrored", "multiworker"),
                   help="train with tf.distribute: mirrored = every local GPU; multiworker = one process per machine "
                        "as TF_CONFIG lists them (README, 'Scaling out'); --batch-size is then per replica")

    p = sub.add_parser("predict", help="classify images or DICOM files")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", required=True, help="model folder, e.g. assets/models/chest_xray")
    p.add_argument("--json", action="store_true", help="one JSON object per input")
    p.add_argument("--frame", type=int, default=None, help="frame of a multi-frame file (default: middle)")
    p.add_argument("--explain", choices=list(METHODS),
                   help="also write a saliency overlay (PNG, the scan's own geometry) and the raw map (.npy)")
    p.add_argument("--out", help="folder for --explain outputs; with --cluster, the JSON Lines file the records "
                                 "stream to (a later run resumes from it)")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="score on a Dask cluster: a scheduler's address (tcp://host:8786), or local[:N] for N worker "
                        "processes on this machine; a folder PATH stands for every file under it; needs --out "
                        "FILE.jsonl (README, 'Scaling out')")

    e = sub.add_parser("evaluate", help="metrics of a model on a class-folder dataset")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--json", action="store_true")
    e.add_argument("--limit-per-class", type=int, default=None)

    x = sub.add_parser("explain-eval", help="faithfulness and sanity-check scores of every saliency method")
    x.add_argument("--model", required=True)
    x.add_argument("--data", required=True,
                   help="class-folder dataset; when it is the model's own training data, only its validation split")
    x.add_argument("--limit", type=int, default=20, help="number of images (spread over the classes)")
    x.add_argument("--sanity-limit", type=int, default=3, help="images for the (slower) randomisation check")
    x.add_argument("--masks", help="expert outlines mirroring --data (MASKS/{class}/N.png): score localisation "
                                   "against them instead of faithfulness")
    x.add_argument("--layers", help="with --masks: comma-separated convolutions to explain "
                                    "(default: the last one and the last on a finer grid)")
    x.add_argument("--spacing", type=float, help="with --masks: pixel size in mm for files that do not state one")
    x.add_argument("--tolerance-mm", type=float, default=7.0, help="with --masks: pointing-game tolerance")
    x.add_argument("--where", metavar="COLUMN=VALUE",
                   help="with --masks: only images whose row of the index CSV has this value, e.g. subset=unseen")
    x.add_argument("--index", help="the index CSV for --where (default: index.csv beside --data)")
    x.add_argument("--json", action="store_true")
    x.add_argument("--markdown", action="store_true", help="print a Markdown table")
    x.add_argument("--cluster", metavar="ADDRESS",
                   help="score faithfulness on a Dask cluster (as for predict); needs --out FILE.jsonl")
    x.add_argument("--out", metavar="FILE.jsonl", help="with --cluster: one record per image, resumed by a later run")

    r = sub.add_parser("report", help="a PDF (and PNG) report of one scan: prediction, maps, trust scores, model card")
    r.add_argument("scan", metavar="SCAN", help="a DICOM, PNG or JPEG file")
    r.add_argument("--model", required=True, help="model folder, e.g. assets/models/chest_xray")
    r.add_argument("--out", required=True, help="the report to write: a .pdf file (or .png for the slide alone)")
    r.add_argument("--method", choices=list(METHODS), default="gradcam", help="the main saliency method")
    r.add_argument("--png", action="store_true", help="also write the 1920 x 1080 slide beside the PDF (.png)")
    r.add_argument("--sanity", action="store_true", help="also run the sanity check (model randomisation; slower)")
    r.add_argument("--frame", type=int, default=None, help="frame of a multi-frame file, from 0 (default: middle)")
    r.add_argument("--explain-class", metavar="CLASS", help="explain this class (default: the predicted one)")
    r.add_argument("--mask", help="an expert outline, a PNG of the scan's size: adds the outline scores")
    r.add_argument("--true-label", help="the known label of the scan, printed beside the prediction")
    r.add_argument("--identifiers", action="store_true",
                   help="print the DICOM header's patient identifiers in the report (never without this flag)")

    c = sub.add_parser("calibrate", help="fit temperature scaling and the outlier check on the run's own split")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True, help="the dataset the model was trained on")

    i = sub.add_parser("import-model", help="check a Keras 3 .keras classifier and write a model folder for it")
    i.add_argument("file", metavar="FILE.keras")
    i.add_argument("--classes", required=True, help="class names in the order of the model's outputs, e.g. a,b,c "
                                                    "(a single sigmoid output: negative,positive)")
    i.add_argument("--out", required=True, help="the model folder to write (new or empty)")
    i.add_argument("--input-size", type=int, help="side of the square input (needed only if the model takes any size)")
    i.add_argument("--channels", type=int, choices=(1, 3), help="input channels (default: what the model takes)")
    i.add_argument("--preprocess", default="unit",
                   help="input range the model was trained on: unit [0,1] (default), signed [-1,1], byte 0-255, "
                        "standard (this project's models), or mean=M,std=S applied to the [0,1] image")
    i.add_argument("--contrast", choices=("clahe",), help="add CLAHE to the pipeline")
    i.add_argument("--title", help="how the dashboard names the model (default: the file name)")
    return parser


class UsageError(Exception):
    pass


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.verbose:
        from core.runtime import quiet_tensorflow

        quiet_tensorflow()
    from core.evaluation import EvaluationError
    from core.io import ScanError

    try:
        return {"train": _train, "predict": _predict, "evaluate": _evaluate, "calibrate": _calibrate,
                "explain-eval": _explain_eval, "report": _report,
                "import-model": _import_model}[args.command](args)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (ScanError, EvaluationError) as err:  # a dataset image that cannot be used, or nothing to score
        print(f"error: {err}", file=sys.stderr)
        return 1


def _load(model_dir: str):
    from core.model import ModelError, load_model

    try:
        return load_model(model_dir)
    except ModelError as err:
        raise UsageError(str(err)) from None


def _folder(path: str) -> str:
    if not Path(path).is_dir():
        raise UsageError(f"The dataset folder {path} does not exist.")
    return path


def _train(args) -> int:
    from core.tasks import TaskError
    from core.train import TrainConfig, train

    config = TrainConfig(task=args.task, data=_folder(args.data), out=args.out, epochs=args.epochs, seed=args.seed,
                         batch_size=args.batch_size, input_size=args.input_size, width=args.width,
                         learning_rate=args.learning_rate, patience=args.patience,
                         limit_per_class=args.limit_per_class, recalibrate_bn=args.recalibrate_bn,
                         strategy=args.strategy)
    try:
        train(config, log=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError, TaskError) as err:  # a dataset folder of the wrong shape
        raise UsageError(str(err)) from None
    return 0


def _predict(args) -> int:
    from core.predict import predict_files, write_explanation

    if args.cluster:
        return _predict_on_cluster(args)
    if args.explain and not args.out:
        raise UsageError("--explain needs --out, the folder for the overlays and maps")
    loaded = _load(args.model)
    failures = 0
    for record in predict_files(args.paths, loaded, args.frame, keep_scans=bool(args.explain)):
        if args.explain and record["ok"]:
            scan, tensor, prediction = record.pop("scan"), record.pop("tensor"), record.pop("prediction")
            record |= write_explanation(loaded, scan, tensor, args.explain, prediction.predicted, args.frame,
                                        Path(record["file"]).stem, Path(args.out))
        failures += not record["ok"]
        _print_record(record, args.json)
    return 1 if failures else 0


def _print_record(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    elif record["ok"]:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
        print(f"{record['file']}: {record['predicted']} ({probs})", flush=True)
        for note in record.get("warnings", []):
            print(f"  warning: {note}", flush=True)
    else:
        print(f"{record['file']}: {record['error']}", flush=True)


def _explain_eval(args) -> int:
    from core.evaluation import evaluate_explanations, format_markdown, format_table

    loaded = _load(args.model)
    if args.cluster:
        return _explain_eval_on_cluster(args, loaded)
    if args.masks:
        return _localisation(args, loaded)
    try:
        report = evaluate_explanations(loaded, _folder(args.data), limit=args.limit, sanity_limit=args.sanity_limit,
                                       log=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as err:  # a dataset folder of the wrong shape
        raise UsageError(str(err)) from None
    print(json.dumps(report) if args.json else format_markdown(report) if args.markdown else format_table(report))
    return 0


def _localisation(args, loaded) -> int:
    from core import localisation as loc
    from core.evaluation import evaluate_localisation

    where = None
    if args.where:
        if "=" not in args.where:
            raise UsageError("--where takes COLUMN=VALUE, e.g. subset=unseen")
        where = tuple(part.strip() for part in args.where.split("=", 1))
    report = evaluate_localisation(
        loaded, _folder(args.data), args.masks, limit=args.limit,
        layers=[name.strip() for name in args.layers.split(",")] if args.layers else None,
        spacing=(args.spacing, args.spacing) if args.spacing else None, tolerance_mm=args.tolerance_mm,
        where=where, index=args.index, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report) if args.json else loc.format_markdown(report) if args.markdown
          else loc.format_table(report))
    return 0


def _predict_on_cluster(args) -> int:
    from core.distributed import DistributedError, archive_paths, cluster_client, predict_archive

    if args.explain:
        raise UsageError("--explain writes its overlays from this process; run it without --cluster")
    if not args.out:
        raise UsageError("--cluster needs --out FILE.jsonl, the file the records stream to (and a later run resumes from)")
    _load(args.model)  # refuses a damaged folder with one sentence before any worker loads it
    try:
        with cluster_client(args.cluster) as client:
            run = predict_archive(archive_paths(args.paths), args.model, args.out, client=client, frame=args.frame,
                                  on_record=lambda record: _print_record(record, args.json))
    except DistributedError as err:
        raise UsageError(str(err)) from None
    except KeyboardInterrupt:
        print(f"stopped: the records so far are in {args.out}, and the same command resumes from them",
              file=sys.stderr)
        return 130
    print(_archive_summary(run, "files"), file=sys.stderr, flush=True)
    return 1 if run.errors else 0


def _explain_eval_on_cluster(args, loaded) -> int:
    from core.distributed import DistributedError, cluster_client, explain_archive
    from core.evaluation import format_markdown, format_table

    if args.masks:
        raise UsageError("--cluster scores faithfulness; localisation against --masks runs in this process "
                         "(leave out --cluster)")
    if not args.out:
        raise UsageError("--cluster needs --out FILE.jsonl, the file the records stream to (and a later run resumes from)")
    data = _folder(args.data)

    def progress(record):
        print(f"{record['image']}" + ("" if record["ok"] else f": {record['error']}"), file=sys.stderr, flush=True)

    try:
        with cluster_client(args.cluster) as client:
            report, run = explain_archive(loaded, data, args.out, client=client, limit=args.limit,
                                          sanity_limit=args.sanity_limit, on_record=progress,
                                          log=lambda line: print(line, file=sys.stderr, flush=True))
    except DistributedError as err:
        raise UsageError(str(err)) from None
    except (FileNotFoundError, ValueError) as err:  # a dataset folder of the wrong shape
        raise UsageError(str(err)) from None
    print(json.dumps(report) if args.json else format_markdown(report) if args.markdown else format_table(report))
    print(_archive_summary(run, "images"), file=sys.stderr, flush=True)
    return 1 if run.errors else 0


def _archive_summary(run, what: str) -> str:
    return (f"{run.scored} {what} scored on the cluster and {run.already} found already in {run.out}; "
            f"{run.errors} of the {run.inputs} could not be used.")


def _report(args) -> int:
    from core.io import ScanError, load_scan
    from core.masks import MaskError, load_mask
    from core.predict import read_input
    from core.report import report_pdf, report_png
    from core.report_content import content_for

    out = Path(args.out)
    if out.suffix.lower() not in (".pdf", ".png"):
        raise UsageError(f"--out must name a .pdf or .png file, not {out.name}.")
    if not out.parent.is_dir():
        raise UsageError(f"The folder {out.parent} for the report does not exist.")
    loaded = _load(args.model)
    name = Path(args.scan).name
    try:
        scan = load_scan(read_input(args.scan), name, keep_identifiers=args.identifiers)
    except ScanError as err:
        raise ScanError(f"{name} cannot be used: {err}") from None
    if args.frame is not None and not 0 <= args.frame < scan.n_frames:
        raise UsageError(f"--frame must be between 0 and {scan.n_frames - 1} for {name}.")
    target = None
    if args.explain_class is not None:
        if args.explain_class not in loaded.class_names:
            raise UsageError(f"--explain-class must be one of {', '.join(loaded.class_names)}.")
        target = loaded.class_names.index(args.explain_class)
    mask = None
    if args.mask:
        try:
            mask = load_mask(read_input(args.mask), scan.shape)
        except (ScanError, MaskError) as err:
            print(f"error: the outline {Path(args.mask).name} cannot be used: {err}", file=sys.stderr)
            return 1
    content = content_for(loaded, scan, method=args.method, frame=args.frame, class_index=target,
                          sanity=args.sanity, true_label=args.true_label, mask=mask,
                          include_identifiers=args.identifiers,
                          progress=lambda _fraction, text: print(text, file=sys.stderr, flush=True))
    written = []
    if out.suffix.lower() == ".pdf":
        out.write_bytes(report_pdf(content))
        written.append(out)
    if out.suffix.lower() == ".png" or args.png:
        slide = out.with_suffix(".png")
        slide.write_bytes(report_png(content))
        written.append(slide)
    print("wrote " + " and ".join(str(path) for path in written))
    return 0


def _calibrate(args) -> int:
    from core.train import calibrate_run

    _load(args.model)  # refuses a damaged folder with one sentence
    calibrate_run(args.model, _folder(args.data), log=lambda line: print(line, flush=True))
    return 0


def _import_model(args) -> int:
    from core.importer import ModelImportError, import_model

    try:
        data = Path(args.file).read_bytes()
    except OSError:
        raise UsageError(f"The model file {args.file} cannot be read.") from None
    try:
        result = import_model(data, class_names=args.classes, out=args.out, input_size=args.input_size,
                              channels=args.channels, preprocess=args.preprocess, contrast=args.contrast,
                              title=args.title, file_name=Path(args.file).name)
    except ModelImportError as err:
        raise UsageError(str(err)) from None
    print(result.summary(), flush=True)
    return 0


def _evaluate(args) -> int:
    from core import data as data_mod
    from core.metrics import classification_metrics

    loaded = _load(args.model)
    try:
        dataset = data_mod.list_for_spec(_folder(args.data), loaded.info, class_names=loaded.class_names,
                                         limit_per_class=args.limit_per_class)
    except (FileNotFoundError, ValueError) as err:
        raise UsageError(str(err)) from None
    x, y = data_mod.prepare_arrays(list(dataset.items), loaded.pipeline)
    metrics = classification_metrics(y, loaded.predict(x), loaded.class_names, threshold=loaded.threshold)
    if args.json:
        print(json.dumps(metrics))
    else:
        print(f"{metrics['n']} images: accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']}")
        for name, recall in metrics["per_class_recall"].items():
            print(f"  recall {name}: {recall}")
        print(f"  ECE {metrics['calibration']['ece']:.4f}")
    return 0
