"""Training runs: fit a model on a class-folder dataset and write a self-describing run folder.

A run folder holds ``history.csv`` (one row per epoch), ``params.json``, ``metrics.json``
(validation metrics of the kept model), ``split.json`` (which files validated it) and the
model folder files ``model.keras`` + ``model.json``; ``model.json`` carries the task spec's facts
(title, data source, split policy, routing, limits: :mod:`core.tasks`). :func:`calibrate_run`
then fits temperature scaling and the outlier check on the run's own split.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from core import data as data_mod
from core.backbone import OUTPUT_STRIDE, architecture
from core.calibration import OOD_FILE, OOD_QUANTILE, OutlierCheck, fit_temperature, scale
from core.card import class_counts, write_card
from core.localisation import INTERIOR_ERODE
from core.metrics import (THRESHOLD_RULE, classification_metrics, expected_calibration_error, prevalence_threshold,
                          subgroup_metrics, youden_threshold)
from core.model import (INFO_FILE, LAST_CONV, build_model, json_default, load_model, outlier_layers, pooled_features,
                        save_model, sha256_file, write_info)
from core.preprocess import Pipeline
from core.tasks import current_subgroups, load_spec, spec_facts


@dataclass
class TrainConfig:
    task: str  # a task spec's name (assets/tasks/<name>.json) or path; any other name: a plain class-folder task
    data: str
    out: str
    epochs: int = 20
    seed: int = 0
    batch_size: int = 32
    input_size: int = 128
    width: int = 32
    learning_rate: float = 1e-3
    patience: int = 6
    validation_fraction: float = 0.15
    limit_per_class: int | None = None
    recalibrate_bn: int = 1024
    degrade: bool = True  # blur, sharpening, gamma, contrast, noise, JPEG on every class (core.perturb)
    pooling: str = "avg"  # core.model.POOLINGS
    local: bool = False  # the small CNN's last three convolutions 1 x 1: each map cell sees a 33 px patch (core.model.LOCAL_FIELD)
    fine: bool = False  # the small CNN without its second pooling: a last convolution at 1/4 scale (core.model.FINE_FIELD)
    no_finding: str | None = None  # a class that is the absence of any finding: the others scored by non-negative evidence (core.model.pooled_head)
    filled_interiors: str | None = None  # a class given extra training copies of images whose inside is filled in (filled_interiors)
    filled_share: float = 0.15  # with filled_interiors: how many copies, as a share of the training images
    equivariance: float = 0.0  # weight of the flip-equivariance loss on the last convolution's maps (flip_equivariance_loss)
    equivariance_shift: int = 0  # with equivariance: the second view also shifted by up to this many last-convolution cells each way (shifted)
    half_mirrors: str | None = None  # comma-separated classes whose lesion lies on one side: each image's two half-mirror composites, one taught as the class, one as ``healthy`` (half_mirror_loss)
    half_mirror_weight: float = 1.0  # weight of that loss
    healthy: str | None = None  # the class with no lesion, for --half-mirrors (default: --no-finding)
    cutmix: float = 0.0  # share of training images given a box of another image, labels mixed by area (data.cutmix_batch)
    implant: float = 0.0  # share of training images, every class alike, given a metal plate on the limb (core.perturb.implant)
    patchwork: float = 0.0  # share of training images, every class alike, given blurred or sharpened cells (core.perturb.patchwork)
    cast: float = 0.0  # share of training images, every class alike, given a cast or splint round the limb (core.perturb.cast)
    synthetic_fractures: float = 0.0  # share of training images without the finding given a drawn fracture line and relabelled (the task's "synthetic"; core.perturb.fracture_line)
    leave_out: str | None = None  # a CSV of images (its "image" column) kept out of training, e.g. films wearing a cast
    head_mask: float = 0.0  # Pipeline.head: black out all but the head's inner region (0: off)
    rim_only: float = 0.0  # Pipeline.rim: the opposite, a diagnostic model of the scalp, skull and outline (0: off)
    body_mask: float = 0.0  # Pipeline.body: black out the open field around a radiograph's body part (0: off)
    contrast: str | None = None  # Pipeline.contrast: "clahe" evens out local contrast after the resize (None: off)
    backbone: str | None = None  # core.backbone.BACKBONES: an ImageNet-pretrained network instead of the small CNN
    backbone_stages: int = 7  # cut the backbone after this many of its 7 stages, a fresh last convolution on top
    body_gate: bool = False  # with backbone and body_mask: the last convolution reads only cells over the body (core.backbone)
    freeze_backbone: bool = False  # keep the backbone's ImageNet weights; train only a fresh head on its cached features
    feature_views: int = 2  # with freeze_backbone: views cached per training image (the clean one, then augmented and degraded)
    view_kind: str = "augment"  # "augment": views 2.. through augmentation and degradations; "mirror": view 2 mirrored, 3.. degraded only
    degrade_recipe: str = "task"  # "task": the degradations with the task spec's overrides; "general": core.perturb.TRAINING as it stands
    tune_blocks: int = 0  # with freeze_backbone: also train the backbone's last N blocks (batch norm as it came) on features cached below them
    box_loss: float = 0.0  # with --freeze-backbone, class maps and mirror views: weight of the loss that teaches the boxed class's map where the training images' boxes are (the task's "boxes"; validation boxes are never read)
    init_from: str | None = None  # a model folder whose layers of the same name and shape start this training
    upweight_errors_of: str | None = None  # a model folder (e.g. a shortcut-only model): repeat the training images it gets wrong
    upweight: int = 5  # how many times each of those images is seen per epoch (Just Train Twice's upsampling)
    balance_by: str | None = None  # comma-separated subgroup columns (e.g. body parts): classes weighed equally within each group (data.group_balanced_weights)
    strategy: str | None = None  # "mirrored" | "multiworker" (core.multiworker); None: one process, no tf.distribute


#: The ranges the opt-in training changes draw from (core.perturb.OPT_IN): ``--implant``'s plate lengths, as
#: fractions of the film's long side (a screw pair to a long plate); the share of a ``--patchwork``'s cells; the
#: length of a ``--cast``, as a fraction of the long side (a wrist cast to a long-leg one).
IMPLANT_LENGTHS = (0.15, 0.45)
PATCHWORK_SHARES = (0.1, 0.5)
CAST_LENGTHS = (0.25, 0.7)


def with_opt_in(spec: dict, *, implant: float = 0.0, patchwork: float = 0.0, cast: float = 0.0) -> dict:
    """``spec`` with each opt-in training change asked for (a probability above 0) among its training degradations,
    so the run draws it and the model.json it writes says so; ``spec`` itself when none is.

    >>> with_opt_in({"augment": {"degradations": {"jpeg": None}}}, implant=0.2)["augment"]
    {'degradations': {'jpeg': None, 'implant': [0.2, 0.15, 0.45]}}
    >>> with_opt_in({"name": "x"}, patchwork=0.25, cast=0.1)["augment"]
    {'degradations': {'patchwork': [0.25, 0.1, 0.5], 'cast': [0.1, 0.25, 0.7]}}
    >>> with_opt_in({"name": "x"})
    {'name': 'x'}
    """
    added = {name: [float(p), *values] for name, p, values in
             (("implant", implant, IMPLANT_LENGTHS), ("patchwork", patchwork, PATCHWORK_SHARES),
              ("cast", cast, CAST_LENGTHS)) if p}
    if not added:
        return spec
    augment = dict(spec.get("augment") or {})
    augment["degradations"] = {**(augment.get("degradations") or {}), **added}
    return {**spec, "augment": augment}


def train(config: TrainConfig, log=print) -> dict:
    """Run one training; returns the validation metrics written to ``metrics.json``."""
    if config.head_mask and config.rim_only:
        raise ValueError("--head-mask and --rim-only are opposites; give one of them.")
    if config.strategy and config.upweight_errors_of:
        raise ValueError("--upweight-errors-of runs in one process; leave out --strategy.")
    if (config.local or config.fine) and config.backbone:
        raise ValueError("--local and --fine-grid shape the small CNN's last convolutions; a --backbone keeps its own.")
    if config.local and config.fine:
        raise ValueError("--local and --fine-grid give the last convolution's cells different squares; give one of them.")
    if config.no_finding and (config.backbone or config.pooling.startswith("classmap")):
        raise ValueError("--no-finding builds the small CNN's evidence head: give it --pooling avg or avg+max and no "
                         "--backbone.")
    if config.box_loss < 0:
        raise ValueError("--box-loss is a weight: 0 (off) or more.")
    if config.filled_interiors and not 0 < config.filled_share <= 1:
        raise ValueError("--filled-share must be above 0 and at most 1 (a share of the training images).")
    if config.filled_interiors and config.freeze_backbone:
        raise ValueError("--filled-interiors adds images to an epoch; a --freeze-backbone head trains on cached features.")
    if config.equivariance < 0:
        raise ValueError("--equivariance is a weight: 0 (off) or more.")
    for flag, share in (("--implant", config.implant), ("--patchwork", config.patchwork), ("--cast", config.cast)):
        if not 0 <= share <= 1:
            raise ValueError(f"{flag} is a share of the training images: 0 (off) to 1.")
        if share and not config.degrade:
            raise ValueError(f"{flag} is one of the degradations drawn in training; leave out --no-degrade.")
    if not 0 <= config.synthetic_fractures <= 1:
        raise ValueError("--synthetic-fractures is a share of the training images: 0 (off) to 1.")
    if config.synthetic_fractures and (config.freeze_backbone or config.strategy):
        raise ValueError("--synthetic-fractures draws on the training images as they are fed, in one process; leave "
                         "out --freeze-backbone and --strategy.")
    if config.synthetic_fractures and not (load_spec(config.task).get("synthetic") or {}).get("fracture_line"):
        raise ValueError(f"--synthetic-fractures needs the class a drawn fracture line stands for, and the task "
                         f"{config.task} names none (a \"synthetic\": {{\"fracture_line\": CLASS}} entry in its spec).")
    if config.equivariance_shift < 0:
        raise ValueError("--equivariance-shift is a number of cells: 0 (off) or more.")
    if config.equivariance_shift and not config.equivariance:
        raise ValueError("--equivariance-shift shifts the second view of --equivariance: give --equivariance W too.")
    if config.equivariance and config.freeze_backbone:
        raise ValueError("--equivariance trains the whole network; a --freeze-backbone head trains on cached features.")
    if config.box_loss and not config.freeze_backbone:
        raise ValueError("--box-loss trains a frozen backbone's class-map head: give it --freeze-backbone.")
    if config.half_mirrors:
        if config.half_mirror_weight <= 0:
            raise ValueError("--half-mirror-weight must be above 0.")
        if config.freeze_backbone or config.equivariance or config.strategy:
            raise ValueError("--half-mirrors trains the whole network in one process; leave out --freeze-backbone, "
                             "--equivariance and --strategy.")
        if not (config.healthy or config.no_finding):
            raise ValueError("--half-mirrors needs the class without a lesion: give --healthy CLASS (or --no-finding).")
    if config.balance_by and (config.freeze_backbone or config.upweight_errors_of or config.filled_interiors
                              or config.half_mirrors or config.equivariance or config.cutmix or config.strategy):
        raise ValueError("--balance-by weighs each training image once in one process; leave out --freeze-backbone, "
                         "--upweight-errors-of, --filled-interiors, --half-mirrors, --equivariance, --cutmix and "
                         "--strategy.")
    if config.body_gate and not (config.backbone and config.body_mask and not config.freeze_backbone):
        raise ValueError("--body-gate keeps a fine-tuned backbone's features over the body that --body-mask leaves: "
                         "give it --backbone and --body-mask, without --freeze-backbone.")
    if config.body_gate and config.input_size % OUTPUT_STRIDE:
        raise ValueError(f"--body-gate averages the input over the last convolution's {OUTPUT_STRIDE} px cells: give "
                         f"it an --input-size divisible by {OUTPUT_STRIDE} (e.g. 224).")
    if config.tune_blocks and not config.freeze_backbone:
        raise ValueError("--tune-blocks trains the last blocks above cached features: give it --freeze-backbone.")
    if config.freeze_backbone:
        if not config.backbone:
            raise ValueError("--freeze-backbone needs --backbone (the network whose weights are kept).")
        if config.strategy or config.cutmix or config.init_from:
            raise ValueError("--freeze-backbone trains a head on cached features in one process; leave out "
                             "--strategy, --cutmix and --init-from.")
        if config.feature_views < 1:
            raise ValueError("--feature-views must be at least 1 (the clean view of each training image).")
        blocks = sum(stage[4] for stage in architecture(config.backbone)[:config.backbone_stages])
        if not 0 <= config.tune_blocks < blocks:
            raise ValueError(f"--tune-blocks must be 0 to {blocks - 1} (the backbone has {blocks} blocks).")
        if config.view_kind not in VIEW_KINDS:
            raise ValueError(f"--view-kind must be one of {', '.join(VIEW_KINDS)}, not {config.view_kind!r}.")
        if config.box_loss and not (config.pooling.startswith("classmap") and config.view_kind == "mirror"):
            raise ValueError("--box-loss teaches a class map cell by cell: give it --pooling classmap and "
                             "--view-kind mirror (a shifted or rotated view would move the image off its boxes).")
        if config.box_loss and config.upweight_errors_of:
            raise ValueError("--box-loss and --upweight-errors-of cannot be combined; give one of them.")
        from dataclasses import replace

        config = replace(config, recalibrate_bn=0)  # the backbone keeps its ImageNet statistics
    if config.box_loss and not (task_spec := load_spec(config.task)).get("boxes"):
        raise ValueError(f"--box-loss needs boxes, and the task {task_spec['name']} lists none (a "
                         "\"boxes\" entry in its spec names the index column that holds them).")
    if config.strategy:
        return _train_replicated(config, log)
    import keras

    started = time.time()
    out = Path(config.out)
    keras.utils.set_random_seed(config.seed)
    spec = with_opt_in(load_spec(config.task), implant=config.implant, patchwork=config.patchwork,
                       cast=config.cast)
    balance_columns = [c.strip() for c in (config.balance_by or "").split(",") if c.strip()]
    if config.balance_by:  # before any image is read or the output folder made
        listed = list((spec.get("subgroups") or {}).get("columns", []))
        unknown = [c for c in balance_columns if c not in listed]
        if not balance_columns or unknown:
            raise ValueError(f"--balance-by names columns of the task's subgroups ({', '.join(listed) or 'none'}), "
                             f"not {', '.join(unknown) or 'nothing'}.")

    dataset = data_mod.list_for_spec(config.data, spec, limit_per_class=config.limit_per_class)
    names = list(dataset.class_names)
    for flag, value in (("--no-finding", config.no_finding), ("--filled-interiors", config.filled_interiors),
                        ("--healthy", config.healthy),
                        *(("--half-mirrors", c) for c in (config.half_mirrors or "").split(",") if c)):
        if value and value not in names:
            raise ValueError(f"{flag} must name one of the classes ({', '.join(names)}), not {value}.")
    if config.half_mirrors and not spec.get("flip", False):
        raise ValueError(f"--half-mirrors mirrors half of each image onto the other, which {spec['name']} does not "
                         "allow (its task says flips do not preserve the anatomy).")
    if config.equivariance and not config.equivariance_shift and not spec.get("flip", False):
        raise ValueError(f"--equivariance mirrors images left to right, which {spec['name']} does not allow "
                         "(its task says flips do not preserve the anatomy); --equivariance-shift alone shifts.")
    try:
        leave_out = set(data_mod.read_leave_out(config.leave_out)) if config.leave_out else set()
    except OSError as err:
        raise ValueError(f"--leave-out cannot be read: {err.strerror or err}.") from None
    out.mkdir(parents=True, exist_ok=True)
    train_items, val_items = data_mod.split_dataset(dataset, spec.get("split"),
                                                    validation_fraction=config.validation_fraction, seed=config.seed)
    log(f"{len(dataset.items)} images after removing {dataset.removed_duplicates} duplicates; "
        f"{len(train_items)} train / {len(val_items)} validation "
        f"({(spec.get('split') or {}).get('description') or 'split ' + spec['split']['policy'] + ' by file'})")
    left_out = []
    if leave_out:
        keyed = [(data_mod.item_key(i, names), i) for i in train_items]
        left_out = sorted(key for key, _ in keyed if key in leave_out)
        train_items = [item for key, item in keyed if key not in leave_out]
        log(f"--leave-out: {len(left_out)} training images left out "
            f"({', '.join(f'{n} {c}' for c, n in sorted(Counter(k.split('/')[0] for k in left_out).items()))}), "
            f"{len(train_items)} train")

    pipeline = Pipeline(input_size=config.input_size, head=config.head_mask, rim=config.rim_only,
                        body=config.body_mask, contrast=config.contrast)
    x_train, y_train = data_mod.prepare_arrays(train_items, pipeline)
    x_val, y_val = data_mod.prepare_arrays(val_items, pipeline)
    log(f"prepared {len(x_train) + len(x_val)} images with the model pipeline in {time.time() - started:.0f} s")
    x_seen, y_seen = x_train, y_train  # what an epoch shows; batch-norm recalibration reads each image once
    upweighted = None
    if config.upweight_errors_of:
        upweighted = upweight_errors(config.upweight_errors_of, train_items, y_train, names, spec["name"],
                                     config.upweight)
        wrong = upweighted.pop("index")
        index = np.concatenate([np.arange(len(x_train))] + [wrong] * (config.upweight - 1))
        x_seen, y_seen = x_train[index], y_train[index]
        log(f"{upweighted['n']} training images that {'any of ' if upweighted.get('sources') else ''}"
            f"{config.upweight_errors_of} gets wrong ({class_counts(upweighted['per_class'])}) seen "
            f"{config.upweight} times each"
            + "".join(f"; {s['folder']} alone {s['n']} ({class_counts(s['per_class'])})"
                      for s in upweighted.get("sources", [])))

    filled = None
    if config.filled_interiors:
        rng = np.random.default_rng(config.seed + 4)
        chosen = np.sort(rng.choice(len(x_train), size=max(1, int(round(config.filled_share * len(x_train)))),
                                    replace=False))
        x_filled = filled_interiors(x_train[chosen], mean=pipeline.mean, std=pipeline.std)
        x_seen = np.concatenate([x_seen, x_filled])
        y_seen = np.concatenate([y_seen, np.full(len(x_filled), names.index(config.filled_interiors), y_seen.dtype)])
        filled = {"class": config.filled_interiors, "n": len(x_filled), "erode": INTERIOR_ERODE,
                  "per_class": {n: int((y_train[chosen] == c).sum()) for c, n in enumerate(names)}}
        log(f"{len(x_filled)} training images copied with the inside of the head or body part filled in, labelled "
            f"{config.filled_interiors} ({class_counts(filled['per_class'])})")

    n_classes = len(names)
    augment = data_mod.augmentation(flip=spec.get("flip", False), value_range=pipeline.value_range)
    degrade = None
    if config.degrade:
        from core.perturb import degrade_batch, recipe_for

        rng = np.random.default_rng(config.seed + 1)
        recipe = recipe_for(spec, config.degrade_recipe)
        degrade = lambda batch: degrade_batch(batch, rng, mean=pipeline.mean, std=pipeline.std,  # noqa: E731
                                              recipe=recipe)
    relabel = None
    if config.synthetic_fractures:
        from core.perturb import fracture_line

        drawn_rng = np.random.default_rng(config.seed + 3)
        relabel = lambda a, b: data_mod.synthetic_positives(  # noqa: E731
            a, b, drawn_rng, config.synthetic_fractures, draw=fracture_line,
            positive=names.index(spec["synthetic"]["fracture_line"]), mean=pipeline.mean, std=pipeline.std)
        log(f"a fracture line drawn on {config.synthetic_fractures:.0%} of the training images of other classes as "
            f"they are fed, those labelled {spec['synthetic']['fracture_line']}")
    mix = None
    if config.cutmix:
        mix_rng = np.random.default_rng(config.seed + 2)
        mix = lambda a, b: data_mod.cutmix_batch(a, b, mix_rng, config.cutmix)  # noqa: E731

    if config.backbone:
        from core.backbone import efficientnet_lite

        model = efficientnet_lite(config.input_size, n_classes, variant=config.backbone, name=spec["name"],
                                  pooling=config.pooling, stages=config.backbone_stages,
                                  fresh_head=config.freeze_backbone, body_gate=config.body_gate)
        cut = "" if config.backbone_stages == 7 else f", cut after stage {config.backbone_stages} of 7"
        kept = ", frozen" if config.freeze_backbone else ", gated by the body" if config.body_gate else ""
        log(f"{config.backbone}{cut}: ImageNet weights in{kept}, a new {config.pooling} head; last convolution "
            f"{model.get_layer('last_conv').output.shape[1]} x {model.get_layer('last_conv').output.shape[2]}")
    else:
        model = build_model(config.input_size, n_classes, width=config.width, name=spec["name"],
                            pooling=config.pooling, local=config.local, fine=config.fine,
                            no_finding=names.index(config.no_finding) if config.no_finding else None)
    initialised = None
    if config.init_from:
        initialised = initialise_from(model, config.init_from)
        log(f"started from {config.init_from}: {len(initialised['layers'])} layers' weights copied "
            f"({', '.join(initialised['layers'])})")
    weights = data_mod.class_weights(y_train, n_classes)
    balanced = sample_weight = None
    if config.balance_by:
        rows = data_mod.index_rows(dataset, spec["subgroups"]["index"], train_items, balance_columns)
        groups = ["+".join(c for c in balance_columns if r[c] not in ("", "0")) or "none" for r in rows]
        sample_weight, summary = data_mod.group_balanced_weights(y_train, groups, n_classes)
        balanced = {"by": balance_columns, "groups": summary}
        weights = None  # the sample weights balance the classes too
        log(f"classes balanced within each group of {', '.join(balance_columns)}: "
            + "; ".join(f"{g} {class_counts(dict(zip(names, e['n'])))}, weights "
                        + " / ".join(f"{w:.2f}" for w in e["weight"]) for g, e in summary.items()))
    monitor = "val_auc" if n_classes == 2 else "val_accuracy"
    frozen = None
    if config.freeze_backbone:
        boxes = None
        if config.box_loss:  # the training images' boxes only: the validation split's are never read
            grid = int(model.get_layer("last_conv").output.shape[1])
            cells = data_mod.box_cells(dataset, spec["boxes"], train_items, grid)
            boxes = {"cells": cells, "positive": names.index(spec["boxes"]["class"]),
                     "boxed": int((cells.reshape(len(cells), -1).max(axis=1) > 0).sum())}
            log(f"box loss {config.box_loss:g}: {boxes['boxed']} of {len(train_items)} training images have boxes "
                f"({spec['boxes']['column']} of {spec['boxes']['index']}), on a {grid} x {grid} grid")
        frozen = _fit_frozen(model, config, x_seen, y_seen, x_val, y_val, n_classes=n_classes, weights=weights,
                             augment=augment, degrade=degrade, flip=spec.get("flip", False), out=out,
                             monitor=monitor, log=log, boxes=boxes)
    else:
        import tensorflow as tf

        endless = not tf.distribute.has_strategy()  # a strategy shards the input itself: one pass an epoch there
        train_ds = data_mod.make_tf_dataset(x_seen, y_seen, n_classes, batch_size=config.batch_size, training=True,
                                            augment=augment, degrade=degrade, mix=mix, seed=config.seed,
                                            repeat=endless, sample_weight=sample_weight, relabel=relabel)
        val_ds = data_mod.make_tf_dataset(x_val, y_val, n_classes, batch_size=64, training=False)
        train_ds, val_ds = _sharded(train_ds), _sharded(val_ds)  # for tf.distribute; unchanged in one process
        half = None
        if config.half_mirrors:
            half = {"classes": [names.index(c) for c in config.half_mirrors.split(",")],
                    "healthy": names.index(config.healthy or config.no_finding),
                    "threshold": (HALF_MIRROR_FOREGROUND - pipeline.mean) / pipeline.std}
        _fit_whole(model, config, train_ds, val_ds, x_seen, x_train, weights=weights, out=out, monitor=monitor,
                   log=log, half=half, endless=endless, flip=bool(spec.get("flip", False)))

    probabilities = model.predict(x_val, batch_size=64, verbose=0)
    metrics = classification_metrics(y_val, probabilities, names)
    if spec.get("subgroups"):  # e.g. with and without metal hardware: a shortcut shows as a gap between them
        columns = list(spec["subgroups"]["columns"])
        rows = data_mod.index_rows(dataset, spec["subgroups"]["index"], val_items, columns)
        metrics["subgroups"] = subgroup_metrics(y_val, probabilities, {c: [r[c] for r in rows] for c in columns},
                                                names, threshold=metrics.get("threshold", 0.5))
    seconds = time.time() - started
    params = {**asdict(config), "class_weights": weights, "monitor": monitor, "train_seconds": round(seconds, 1),
              "n_train": len(train_items), "n_validation": len(val_items),
              "removed_duplicates": dataset.removed_duplicates, "counts": dataset.counts(),
              "pipeline": pipeline.to_dict(), "model_parameters": int(model.count_params()),
              **({"initialised_from": initialised} if initialised else {}),
              **({"upweighted": upweighted} if upweighted else {}),
              **({"balanced": balanced} if balanced else {}),
              **({"filled": filled} if filled else {}),
              **({"frozen_backbone": frozen} if frozen else {})}
    info = {
        "task": spec["name"],
        **spec_facts(spec),
        "class_names": names,
        "input_size": config.input_size,
        "preprocessing": pipeline.to_dict(),
        "threshold": 0.5,
        "dataset": {"path": str(config.data), "fingerprint": dataset.fingerprint(), "counts": dataset.counts(),
                    "removed_duplicates": dataset.removed_duplicates},
        "validation": _validation_summary(metrics),
        "train_seconds": round(seconds, 1),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    save_model(model, out, info)
    _write_json(out / "params.json", params)
    _write_json(out / "metrics.json", metrics)
    _write_json(out / "split.json", {"validation": [data_mod.item_key(i, names) for i in val_items],
                                     **({"left_out": left_out} if left_out else {})})
    write_card(out)
    log(f"done in {seconds / 60:.1f} min: validation accuracy {metrics['accuracy']:.4f}, AUC {metrics['auc']}")
    return metrics


def _fit_whole(model, config: TrainConfig, train_ds, val_ds, x_seen, x_train, *, weights, out: Path, monitor: str,
               log, half: dict | None = None, endless: bool = False, flip: bool = False) -> None:
    """Train every layer of ``model``: the kept epoch is the best on ``monitor``, batch norm recalibrated.
    ``endless``: ``train_ds`` repeats, and an epoch is one pass over ``x_seen`` in batches. ``flip``: the task
    allows mirrored images (``--equivariance`` mirrors its second view)."""
    first = [_RecalibrateBN(x_train, config.recalibrate_bn, config.seed, model)] if config.recalibrate_bn else []
    # The recalibration first, so validation and the checkpoint see the recalibrated statistics.
    trained, n_classes = model, int(model.output.shape[-1])
    if config.equivariance:
        trained = _equivariant(model, config.equivariance, flip=flip, shift=config.equivariance_shift)
        view = " and ".join([*(["mirrored"] if flip else []),
                             *([f"shifted by up to {config.equivariance_shift} cells"] if config.equivariance_shift
                               else [])])
        log(f"{'flip' if flip else 'shift'} equivariance {config.equivariance:g}: a quarter of each batch also seen "
            f"{view}, its last convolution's maps pulled towards the same transform of the original's")
    if config.half_mirrors:
        trained = _half_mirrored(model, config.half_mirror_weight, **half)
        log(f"half mirrors {config.half_mirror_weight:g}: up to a quarter of each batch ({config.half_mirrors}) also "
            f"seen as its two half-mirror composites, one of them taught as its class and the other as "
            f"{config.healthy or config.no_finding}")
    steps = max(1, int(np.ceil(len(x_seen) / config.batch_size)))
    _fit_kept_best(trained, train_ds, val_ds, config, steps=steps, out=out, monitor=monitor, log=log,
                   first_callbacks=first, class_weight=weights, n_classes=n_classes,
                   **({"steps_per_epoch": steps} if endless else {}))
    if config.recalibrate_bn:
        recalibrate_batch_norm(model, x_train)


def _fit_kept_best(model, data, validation, config: TrainConfig, *, steps: int, out: Path, monitor: str, log,
                   first_callbacks=(), n_classes: int | None = None, **fit_args) -> None:
    """Compile ``model`` (Adam, cosine decay over ``steps`` per epoch, accuracy and AUC), fit it for
    ``config.epochs`` with the history logged to ``history.csv``, early stopping on ``monitor`` and the weights of
    its best epoch kept (loaded back at the end). ``n_classes`` names the output's width when ``model`` is a
    wrapper without a Functional output of its own (:func:`_box_trained`)."""
    import keras

    schedule = keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=steps * config.epochs,
                                                      alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="categorical_crossentropy",
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                           _auc_metric(n_classes or model.output.shape[-1])])
    best_path = out / "best.weights.h5"
    callbacks = [
        *first_callbacks,
        keras.callbacks.CSVLogger(str(out / "history.csv")),
        keras.callbacks.ModelCheckpoint(str(best_path), monitor=monitor, mode="max", save_best_only=True,
                                        save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=config.patience),
        _EpochLog(log, config.epochs, monitor),
    ]
    model.fit(data, validation_data=validation, epochs=config.epochs, callbacks=callbacks, verbose=0, **fit_args)
    if best_path.exists():
        model.load_weights(str(best_path))
        best_path.unlink()


VIEW_KINDS = ("augment", "mirror")


def _fit_frozen(model, config: TrainConfig, x_train, y_train, x_val, y_val, *, n_classes: int, weights: dict,
                augment, degrade, flip: bool, out: Path, monitor: str, log, boxes: dict | None = None) -> dict:
    """Train only the head of a backbone model, on features the frozen backbone computes once.

    Fine-tuning the whole of EfficientNet-Lite0 at 512 px costs most of an hour an epoch on two cores; a frozen
    backbone needs one forward pass per image. The network is cut where its fresh head starts (the input of
    :data:`core.model.LAST_CONV`): the part below, with its ImageNet weights and batch-norm statistics as they
    came, turns every training image into ``feature_views`` views of features and every validation image into
    one. The clean image is the first view; with ``view_kind`` "augment" the others are the image through the
    training augmentation (shifts, rotation, zoom, contrast, flips) and the degradations, one random draw each;
    with "mirror" the second is the image mirrored left to right (where the task allows flips) and the others
    the degradations alone, each mirrored half the time: no shift or zoom, whose "nearest" fill repeats the edge
    pixels into streaks the fresh head can learn from. The head above (the fresh 1 x 1 convolution, its pooling
    and classifier: layers shared with ``model``, so training it trains the model) is then trained on them: each
    epoch shows every training image once through one of its views drawn at random, its cell grid also mirrored
    top to bottom at random when the task allows flips; weighted classes, the epoch best on ``monitor`` kept.

    With ``boxes`` (``cells``: each training image's :func:`core.data.box_cells` on the grid of the last
    convolution, ``positive``: the boxed class's index, ``boxed``: how many images have a box) the head also learns where: each cell of the class maps
    is scored as a small classifier of its own (:func:`box_loss`), mirrored with its view, and that loss,
    times ``config.box_loss``, is added to the image's.

    With ``config.tune_blocks`` N the cut moves down to the input of the backbone's last N blocks, which are
    trained with the head (their batch-norm layers kept in inference mode, with ImageNet's statistics): the
    degraded views then change the features the head reads, not only the head. Returns the facts for
    ``params.json``.
    """
    import keras

    from core.model import LAST_CONV

    started = time.time()
    cut = model.get_layer(LAST_CONV).input
    if config.tune_blocks:  # the cut moves down to the input of the first block trained
        blocks = sum(1 for layer in model.layers  # the backbone blocks the model holds
                     if layer.name.startswith("block") and layer.name.endswith("_project"))
        first = blocks - config.tune_blocks
        cut = next(layer for layer in model.layers if layer.name.startswith(f"block{first}_")).input
    trunk, head = keras.Model(model.input, cut), keras.Model(cut, model.output)
    for layer in trunk.layers:
        layer.trainable = False
    for layer in head.layers:  # the tuned blocks keep their ImageNet batch-norm statistics (inference mode)
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
    rng = np.random.default_rng(config.seed + 3)
    views = config.feature_views
    features = None
    mirrored = np.zeros((len(x_train), views), bool)  # which views show the image mirrored left to right
    for start in range(0, len(x_train), 64):
        batch = x_train[start:start + 64]
        for view in range(views):
            shown, mirrored[start:start + len(batch), view] = feature_view(
                batch, view, config.view_kind, augment=augment, degrade=degrade, flip=flip, rng=rng,
                return_mirrored=True)
            f = trunk.predict(shown, batch_size=16, verbose=0).astype(np.float16)
            if features is None:
                features = np.empty((len(x_train), views) + f.shape[1:], np.float16)
            features[start:start + len(batch), view] = f
        if (start // 64) % 10 == 9 or start + 64 >= len(x_train):
            log(f"frozen backbone: features of {min(start + 64, len(x_train))}/{len(x_train)} training images "
                f"({views} views each), {time.time() - started:.0f} s")
    val_features = trunk.predict(x_val, batch_size=16, verbose=0).astype(np.float16)
    extract_seconds = time.time() - started
    log(f"frozen backbone: {features.shape[2]} x {features.shape[3]} x {features.shape[4]} features of every image "
        f"in {extract_seconds / 60:.1f} min ({features.nbytes / 2**30:.1f} GiB)")

    validation = (val_features.astype(np.float32), np.eye(n_classes)[y_val])
    targets = None
    if boxes is not None:
        from core.model import CLASS_MAPS

        targets = box_targets(boxes["cells"], y_train, boxes["positive"])
        maps = keras.Model(cut, model.get_layer(CLASS_MAPS).output)
        head = _box_trained(head, maps, config.box_loss, boxes["positive"])
        # Validation is scored on the images alone: its targets weigh nothing, so no validation box is read.
        validation = ((validation[0], np.zeros(validation[0].shape[:3] + (2,), np.float32)), validation[1])
    batches = _FeatureViews(features, y_train, n_classes, config.batch_size, weights, config.seed, flip,
                            mirrored=mirrored, targets=targets)
    _fit_kept_best(head, batches, validation, config, steps=len(batches), out=out, monitor=monitor, log=log,
                   n_classes=n_classes)
    below = next((layer.name for layer in trunk.layers if layer.output is cut), None)
    return {"cut_after": below, "views": views, "view_kind": config.view_kind,
            **({"tuned_blocks": config.tune_blocks} if config.tune_blocks else {}),
            **({"box_loss": config.box_loss, "boxed_images": boxes["boxed"], "box_outside_weight": BOX_OUTSIDE}
               if boxes is not None else {}),
            "feature_shape": list(features.shape[2:]), "extract_seconds": round(extract_seconds, 1),
            "trainable_parameters": int(sum(np.prod(w.shape) for w in head.trainable_weights)),
            "batch_norm": "the backbone's ImageNet statistics, as they came (not recalibrated)"}


def feature_view(batch: np.ndarray, view: int, kind: str, *, augment, degrade, flip: bool,
                 rng: np.random.Generator, return_mirrored: bool = False):
    """View number ``view`` of a batch of training images for :func:`_fit_frozen` (see there; 0 is the clean one);
    with ``return_mirrored`` also which of them it shows mirrored left to right (always none for ``augment``
    views, whose shifts and rotations no flag can describe).

    >>> x = np.arange(8, dtype=np.float32).reshape(1, 2, 4, 1)
    >>> feature_view(x, 1, "mirror", augment=None, degrade=None, flip=True, rng=None)[0, 0, :, 0]
    array([3., 2., 1., 0.], dtype=float32)
    """
    mirrored = np.zeros(len(batch), bool)
    if view == 0:
        shown = batch
    elif kind == "mirror" and view == 1 and flip:
        shown, mirrored = batch[:, :, ::-1], ~mirrored
    else:
        shown = degrade(batch) if degrade else batch
        if kind == "mirror":
            if flip:
                mirrored = rng.random(len(shown)) < 0.5
                shown = np.where(mirrored[:, None, None, None], shown[:, :, ::-1], shown)
        elif augment:
            import keras

            shown = keras.ops.convert_to_numpy(augment(shown, training=True))
    return (shown, mirrored) if return_mirrored else shown


#: With ``--box-loss``: how much the cells outside the boxes of an image of the boxed class weigh as "not this
#: class", against 1 for the cells of the other classes' images and for the cells inside the boxes (an image's
#: outline may miss a second, subtler fracture; an image of another class has none).
BOX_OUTSIDE = 0.3


def box_targets(cells: np.ndarray, labels: np.ndarray, positive: int) -> np.ndarray:
    """Per-cell targets and weights (``[..., 0]`` and ``[..., 1]``) for :func:`box_loss`, from
    :func:`core.data.box_cells`: an image of the boxed class is positive in its box cells (weight 1) and negative
    elsewhere (weight :data:`BOX_OUTSIDE`), or weighs nothing when it has no box; any other image is negative in
    every cell (weight 1).

    >>> t = box_targets(np.array([[[0, 1]], [[0, 0]], [[0, 0]]], np.float32), np.array([1, 0, 1]), 1)
    >>> t[0, 0, 1].tolist(), t[1, ..., 1].tolist(), t[2, ..., 1].tolist()
    ([1.0, 1.0], [[1.0, 1.0]], [[0.0, 0.0]])
    """
    boxed = labels == positive
    has_box = cells.reshape(len(cells), -1).max(axis=1) > 0
    weight = np.where(boxed[:, None, None], np.where(cells > 0, 1.0, BOX_OUTSIDE), 1.0)
    weight[boxed & ~has_box] = 0.0
    return np.stack([cells.astype(np.float32), weight.astype(np.float32)], axis=-1)


def box_loss(maps, targets, positive: int):
    """Mean over a batch of each image's cell loss: binary cross-entropy of every cell's log-odds for the boxed
    class (its map minus the log-sum-exp of the others', as :data:`core.saliency.SCORES` "log-odds") against
    :func:`box_targets`, the positive cells and the negative ones each averaged over their own weights, so a
    small box counts as much as a large one and an image's many empty cells do not drown it."""
    import keras
    from keras import ops

    n_classes = maps.shape[-1]
    others = [c for c in range(n_classes) if c != positive]
    rest = ops.take(maps, others, axis=-1)
    log_odds = maps[..., positive] - ops.logsumexp(rest, axis=-1)
    target, weight = targets[..., 0], targets[..., 1]
    cell = keras.losses.binary_crossentropy(target[..., None], log_odds[..., None], from_logits=True)
    inside, outside = weight * target, weight * (1 - target)

    def mean_over(w):
        return ops.sum(cell * w, axis=(1, 2)) / ops.maximum(ops.sum(w, axis=(1, 2)), 1e-6)

    return ops.mean(mean_over(inside) + mean_over(outside))


def _box_trained(head, maps, weight: float, positive: int):
    """``head`` (features to class probabilities) as a model trained on (features, box targets): its loss the
    compiled one plus ``weight`` times :func:`box_loss` of ``maps`` (the same layers' class maps)."""
    import keras

    class BoxTrained(keras.Model):
        def __init__(self):
            super().__init__()
            self.head, self.maps = head, maps

        def call(self, inputs, training=False):
            return self.head(inputs[0], training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            return loss + weight * box_loss(self.maps(x[0], training=training), x[1], positive)

    return BoxTrained()


def flip_equivariance_loss(maps, mirrored_maps):
    """How far a network's maps of mirrored images (``(n, h, w, c)``) are from the mirror image of its maps of the
    originals: the mean squared difference over the mean square of the two, 0 when they match (scale-free, so
    shrinking the maps cannot lower it; at most 2 for non-negative maps such as a ReLU's).

    >>> import numpy as np
    >>> a = np.random.default_rng(0).random((2, 4, 4, 3)).astype("float32")
    >>> float(flip_equivariance_loss(a, a[:, :, ::-1]))
    0.0
    >>> round(float(flip_equivariance_loss(a, a)), 2) > 0
    True
    """
    import tensorflow as tf

    back = tf.reverse(mirrored_maps, axis=[2])
    return tf.reduce_mean(tf.square(maps - back)) / (
        0.5 * tf.reduce_mean(tf.square(maps) + tf.square(back)) + 1e-6)


def shifted(images, dy, dx, fill=0.0):
    """``images`` (``(n, h, w, c)``) with their content moved ``dy`` rows down and ``dx`` columns right (negative:
    up, left), the band uncovered filled with ``fill`` (a scalar or one value per image, ``(n, 1, 1, 1)``) and what
    leaves the frame dropped: a shift, not a roll, so nothing wraps round to the other side.

    >>> import numpy as np
    >>> row = np.arange(1, 5, dtype="float32").reshape(1, 1, 4, 1)
    >>> shifted(row, 0, 1).numpy().ravel().tolist(), shifted(row, 0, -2, fill=9.0).numpy().ravel().tolist()
    ([0.0, 1.0, 2.0, 3.0], [3.0, 4.0, 9.0, 9.0])
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    h, w = tf.shape(images)[1], tf.shape(images)[2]
    p = tf.maximum(tf.abs(dy), tf.abs(dx))
    pads = [[0, 0], [p, p], [p, p], [0, 0]]
    band = 1 - tf.pad(tf.ones_like(images[..., :1]), pads)
    padded = tf.pad(images, pads) + tf.cast(fill, images.dtype) * band
    return padded[:, p - dy:p - dy + h, p - dx:p - dx + w, :]


def masked_equivariance_loss(maps, back, mask):
    """:func:`flip_equivariance_loss` over the cells where ``mask`` (``(n, h, w, 1)``) is 1: ``back`` is the second
    view's maps transformed back, and a shift leaves a band of cells that one of the two views never saw."""
    import tensorflow as tf

    mask = tf.broadcast_to(tf.cast(mask, maps.dtype), tf.shape(maps))
    return tf.reduce_sum(mask * tf.square(maps - back)) / (
        0.5 * tf.reduce_sum(mask * (tf.square(maps) + tf.square(back))) + 1e-6)


def midlines(images, threshold: float):
    """The column of each image's midline (``(n, h, w, 1)`` in, ``(n,)`` out): the mean column of its pixels above
    ``threshold``, or the image centre if there are none."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    width = tf.shape(images)[2]
    columns = tf.cast(tf.range(width), tf.float32)
    mass = tf.reduce_sum(tf.cast(images[..., 0] > threshold, tf.float32), axis=1)  # (n, w): foreground per column
    total = tf.reduce_sum(mass, axis=1)
    return tf.where(total > 0, tf.reduce_sum(mass * columns, axis=1) / tf.maximum(total, 1.0),
                    (tf.cast(width, tf.float32) - 1) / 2)


def half_mirrors(images, threshold: float):
    """The two mirror-symmetric composites of each image in ``images`` (``(n, h, w, 1)``, a tensor or array): its
    left half with that half's mirror image on the right, and its right half mirrored onto the left, about the
    column centre of its foreground (pixels above ``threshold``; the image centre if there are none). A tumour on
    one side of the midline is in one composite (twice) and absent from the other, while both keep the slice's
    level, scanner, contrast and rim: what separates the two is the lesion. The midline: :func:`midlines`.

    >>> import numpy as np
    >>> row = np.array([0, 1, 2, 3, 5, 0], "float32").reshape(1, 1, 6, 1)
    >>> [c.numpy().ravel().tolist() for c in half_mirrors(row, 0.5)]
    [[0.0, 1.0, 2.0, 2.0, 1.0, 0.0], [0.0, 5.0, 3.0, 3.0, 5.0, 0.0]]
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    width = tf.shape(images)[2]
    columns = tf.cast(tf.range(width), tf.float32)
    centre = midlines(images, threshold)[:, None]
    mirrored = 2 * centre - columns[None]

    def gathered(keep):
        index = tf.cast(tf.clip_by_value(tf.round(tf.where(keep, columns[None], mirrored)), 0.0,
                                         tf.cast(width - 1, tf.float32)), tf.int32)
        return tf.gather(images, index, axis=2, batch_dims=1)

    return gathered(columns[None] <= centre), gathered(columns[None] >= centre)


def _equivariant(model, weight: float, *, flip: bool = True, shift: int = 0, share: float = 0.25):
    """``model`` as a model trained with its compiled loss plus ``weight`` times the equivariance loss of its
    :data:`LAST_CONV` maps: the first ``share`` of each training batch goes through once more as a second view, in
    the same pass, mirrored left to right (``flip``) and, with ``shift``, moved by a random whole number of map cells,
    up to ``shift`` each way (one draw per batch; the band uncovered takes each image's darkest value, its
    background). The second view's maps, shifted back and mirrored back, are pulled towards the originals' on the
    cells both views saw (:func:`masked_equivariance_loss`; with no shift every cell, :func:`flip_equivariance_loss`).

    Flip augmentation alone teaches a class that does not change when the image is mirrored, not maps that move
    with the anatomy: a network can keep a class's evidence on one side of every image (issue 12: the brain
    evidence-head models' glioma peaks lay right of the image centre on 76 of 77 unseen outlined slices, wherever the
    tumour was; ``scripts/mirror_check.py``). Mirroring cannot catch a fixed place on the midline (the flip-equivariant
    run's glioma maps moved to the upper middle of the brain); a shift can. Measured since: the brain maps already
    moved with a 16 px shift (Grad-CAM correlation 0.96 with the shifted slice's, moved back;
    ``scripts/mirror_check.py``), the fixed place being
    one in the head, not in the frame, so on those models the shift added nothing the mirror did not
    (docs/EXPLANATIONS.md, "A seventeenth lever").
    Equivariance as a training signal for class maps follows SEAM (Wang et al., CVPR 2020).

    The wrapper's output is the class probabilities with the batch's equivariance loss as an extra last column,
    split off again for the loss and the metrics; in validation the column is 0. The weights are ``model``'s own.
    """
    import keras
    import tensorflow as tf

    both = keras.Model(model.input, [model.output, model.get_layer(LAST_CONV).output])
    n_classes = int(model.output.shape[-1])
    stride = int(model.input.shape[1]) // int(model.get_layer(LAST_CONV).output.shape[1])

    class Equivariant(keras.Model):
        def __init__(self):
            super().__init__()
            self.both = both

        def call(self, x, training=False):
            n = tf.shape(x)[0]
            if not training:
                return tf.concat([self.both(x, training=False)[0], tf.zeros((n, 1), x.dtype)], axis=-1)
            k = tf.maximum(1, tf.cast(tf.math.ceil(share * tf.cast(n, tf.float32)), tf.int32))
            view = tf.reverse(x[:k], axis=[2]) if flip else x[:k]
            if shift:
                dy, dx = (tf.random.uniform((), -shift, shift + 1, tf.int32) for _ in range(2))
                view = shifted(view, dy * stride, dx * stride, fill=tf.reduce_min(view, axis=[1, 2, 3], keepdims=True))
            probabilities, maps = self.both(tf.concat([x, view], axis=0), training=True)
            back, seen = maps[n:], tf.ones_like(maps[n:, ..., :1])
            if shift:  # shifted back first, then mirrored back: the view was mirrored first
                back, seen = shifted(back, -dy, -dx), shifted(seen, -dy, -dx)
            if flip:
                back, seen = tf.reverse(back, axis=[2]), tf.reverse(seen, axis=[2])
            loss = masked_equivariance_loss(maps[:k], back, seen)
            return tf.concat([probabilities[:n], tf.fill((n, 1), tf.cast(loss, probabilities.dtype))], axis=-1)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred[:, :n_classes], sample_weight=sample_weight,
                                        training=training)
            return loss + weight * tf.reduce_mean(y_pred[:, n_classes])

        def compute_metrics(self, x, y, y_pred, sample_weight=None):
            return super().compute_metrics(x, y, y_pred[:, :n_classes], sample_weight=sample_weight)

    return Equivariant()


#: With ``--half-mirrors``: the display value (0 to 1) above which a pixel is foreground, for the midline.
HALF_MIRROR_FOREGROUND = 0.1


def half_mirror_loss(p_a, p_b, target, healthy: int):
    """The negative log-likelihood of the likelier way to read two composites (their class probabilities ``p_a``,
    ``p_b``, ``(n, classes)``) as one of class ``target`` (``(n,)`` indices) and one of the ``healthy`` class: a
    lesion on one side of the midline is in one half-mirror composite of its image and in neither half of the
    other (:func:`half_mirrors`), and which one is not given; the network has to find out and commit. (The
    likelihood of either way, summed, was tried first: a brain run settled on half and half for every composite,
    where that sum is 0.5 whatever the lesion, and its glioma maps went to the scalp.)

    >>> import numpy as np
    >>> right = np.array([[0.9, 0.1]]), np.array([[0.1, 0.9]])
    >>> both = np.array([[0.9, 0.1]]), np.array([[0.9, 0.1]])
    >>> undecided = np.array([[0.5, 0.5]]), np.array([[0.5, 0.5]])
    >>> [round(float(half_mirror_loss(a, b, np.array([0]), 1)[0]), 2) for a, b in (right, both, undecided)]
    [0.21, 2.41, 1.39]
    """
    import tensorflow as tf

    p_a, p_b = tf.convert_to_tensor(p_a, tf.float32), tf.convert_to_tensor(p_b, tf.float32)
    target = tf.cast(target, tf.int32)
    a_target, b_target = (tf.gather(p, target[:, None], axis=1, batch_dims=1)[:, 0] for p in (p_a, p_b))
    return -tf.math.log(tf.maximum(a_target * p_b[:, healthy], p_a[:, healthy] * b_target) + 1e-7)


def _half_mirrored(model, weight: float, *, classes: list[int], healthy: int, threshold: float, share: float = 0.25):
    """``model`` as a model trained with its compiled loss plus ``weight`` times :func:`half_mirror_loss`: up to
    ``share`` of each training batch, images of ``classes`` (first in the batch's order), also go through as their
    two :func:`half_mirrors` composites (midline from the pixels above ``threshold``, in the model's input units).

    Issue 12: the brain default called the tumour-free composite of 46 of 49 unseen gliomas lying wholly on one side
    glioma (``scripts/mirror_check.py``): the slice's level, scanner and rim gave the class, not the tumour. The
    two composites share all of those; only the lesion tells them apart. Validation sees the network alone; the
    loss of the batch's pairs is logged as ``half_mirror_loss``.
    """
    import keras
    import tensorflow as tf

    chosen_classes = tf.constant(classes, tf.int32)

    class HalfMirrored(keras.Model):
        def __init__(self):
            super().__init__()
            self.net = model
            self.pair_loss = keras.metrics.Mean(name="half_mirror_loss")

        def call(self, x, training=False):
            return self.net(x, training=training)

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
            if not training:
                return loss
            cap = tf.maximum(1, tf.cast(share * tf.cast(tf.shape(x)[0], tf.float32), tf.int32))
            target = tf.argmax(y, axis=1, output_type=tf.int32)
            index = tf.where(tf.reduce_any(target[:, None] == chosen_classes[None], axis=1))[:cap, 0]
            n = tf.shape(index)[0]

            def pairs():  # not run on a batch without such images: batch norm of an empty batch is NaN
                left, right = half_mirrors(tf.gather(x, index), threshold)
                p = self.net(tf.concat([left, right], axis=0), training=True)
                return tf.reduce_mean(half_mirror_loss(p[:n], p[n:], tf.gather(target, index), healthy))

            pair_loss = tf.cond(n > 0, pairs, lambda: tf.constant(0.0))
            self.pair_loss.update_state(pair_loss)
            return loss + weight * pair_loss

    return HalfMirrored()


class _FeatureViews:
    """Batches of cached features for :func:`_fit_frozen` (a Keras ``PyDataset`` without importing Keras at module
    level): each epoch a new order, one view per image drawn at random, the cell grid mirrored top to bottom half
    the time when ``flip``; the class weights come as sample weights."""

    def __new__(cls, features, labels, n_classes, batch_size, class_weights, seed, flip, mirrored=None,
                targets=None):
        import keras

        class FeatureViews(keras.utils.PyDataset):
            def __init__(self):
                super().__init__()
                self.rng = np.random.default_rng(seed)
                self.sample_weights = np.array([class_weights[int(c)] for c in labels], np.float32)
                self.on_epoch_end()

            def __len__(self):
                return int(np.ceil(len(labels) / batch_size))

            def on_epoch_end(self):
                self.order = self.rng.permutation(len(labels))
                self.view = self.rng.integers(0, features.shape[1], len(labels))
                self.flip = (self.rng.random(len(labels)) < 0.5) & flip

            def __getitem__(self, index):
                chosen = np.sort(self.order[index * batch_size:(index + 1) * batch_size])
                x = features[chosen, self.view[chosen]].astype(np.float32)
                x[self.flip[chosen]] = x[self.flip[chosen], ::-1]
                y = np.eye(n_classes, dtype=np.float32)[labels[chosen]]
                if targets is None:
                    return x, y, self.sample_weights[chosen]
                t = targets[chosen].copy()  # the cells follow their view: mirrored left to right, then top to bottom
                t[mirrored[chosen, self.view[chosen]]] = t[mirrored[chosen, self.view[chosen]], :, ::-1]
                t[self.flip[chosen]] = t[self.flip[chosen], ::-1]
                return (x, t), y, self.sample_weights[chosen]

        return FeatureViews()


def filled_interiors(images: np.ndarray, *, mean: float, std: float) -> np.ndarray:
    """Copies of prepared images (``(n, h, w, 1)``, normalised with ``mean`` and ``std``) with the inside of the head
    or body part filled in from its rim (:func:`core.localisation.fill_interior`).

    Labelled as the no-finding class in training (``--filled-interiors``), they take away the answer a model gives
    when nothing inside is left to read: a brain model that calls such a slice glioma (the margin check's finding)
    learns that glioma needs something inside the head. No outline is read: the region comes from the image.
    """
    from core.localisation import fill_interior

    out = np.empty_like(images)
    for k, image in enumerate(images):
        grey = image[..., 0] * std + mean  # back to the display range for the head's threshold
        out[k, ..., 0] = (fill_interior(grey) - mean) / std
    return out


def upweight_errors(folder: str | Path, items, y_train: np.ndarray, names: list[str], task: str, times: int) -> dict:
    """The training images a model folder of the same task and classes gets wrong, to be repeated ``times`` times
    per epoch (Just Train Twice, Liu et al., ICML 2021): with a shortcut-only model, e.g. ``--rim-only``, these
    are the images on which the shortcut fails. Each image goes through that model's own pipeline and its own
    decision (a binary model's saved threshold on its calibrated probabilities, else the most probable class).
    ``folder`` may name several folders separated by commas (several shortcut models): an image any of them gets
    wrong is repeated ``times`` times per epoch however many get it wrong. Returns ``index`` (positions in the
    training arrays), ``n``, ``per_class``, the folder's ``sha256`` and, for several folders, ``sources`` (each
    folder's ``folder``, ``sha256``, ``n`` and ``per_class``)."""
    if times < 2:
        raise ValueError("--upweight must be at least 2 (each image the model gets wrong seen that many times).")
    folders = [f.strip() for f in str(folder).split(",") if f.strip()]
    if not folders:
        raise ValueError("--upweight-errors-of needs a model folder.")

    def per_class(index: np.ndarray) -> dict:
        return {names[c]: int((y_train[index] == c).sum()) for c in range(len(names))}

    sources = []
    for one in folders:
        loaded = load_model(one)
        if loaded.task != task or loaded.class_names != list(names):
            raise ValueError(f"{one} is a {loaded.task} model of {', '.join(loaded.class_names)}; "
                             f"this training is {task} with {', '.join(names)}.")
        x, _ = data_mod.prepare_arrays(items, loaded.pipeline)
        predicted = np.array([loaded.decide(row) for row in loaded.predict(x)], np.int64)
        wrong = np.flatnonzero(predicted != y_train)
        sources.append({"folder": one, "sha256": loaded.info.get("sha256"), "index": wrong,
                        "n": int(len(wrong)), "per_class": per_class(wrong)})
    wrong = np.unique(np.concatenate([s["index"] for s in sources]))
    result = {"folder": ",".join(folders), "sha256": sources[0]["sha256"] if len(sources) == 1
              else [s["sha256"] for s in sources], "times": times, "index": wrong,
              "n": int(len(wrong)), "per_class": per_class(wrong)}
    if len(sources) > 1:
        result["sources"] = [{k: v for k, v in s.items() if k != "index"} for s in sources]
    return result


def _youden_j(y: np.ndarray, p_positive: np.ndarray, threshold: float) -> float | None:
    """Sensitivity + specificity - 1 at ``threshold`` (None without both classes)."""
    y = np.asarray(y, int)
    if len(np.unique(y)) < 2:
        return None
    return round(float((p_positive[y == 1] >= threshold).mean() + (p_positive[y == 0] < threshold).mean() - 1), 4)


def _validation_summary(metrics: dict) -> dict:
    """The validation figures ``model.json`` repeats from ``metrics.json``."""
    keys = ("n", "accuracy", "auc", "per_class_recall", "sensitivity", "specificity", "threshold")
    return {k: metrics[k] for k in keys if k in metrics} | {"ece": metrics["calibration"]["ece"]}


def initialise_from(model, folder: str | Path) -> dict:
    """Copy into ``model`` the weights of every layer of the model in ``folder`` that has the same name and
    the same weight shapes (transfer learning: the convolutions of a model trained on another task; a head
    for other classes or another pooling is left as built). Returns what was copied, for ``params.json``.
    """
    import keras

    from core.model import MODEL_FILE, sha256_file

    source_path = Path(folder) / MODEL_FILE
    if not source_path.is_file():
        raise FileNotFoundError(f"--init-from: no {MODEL_FILE} in {folder}")
    source = keras.models.load_model(source_path, compile=False)
    theirs = {layer.name: layer for layer in source.layers}
    copied = []
    for layer in model.layers:
        other = theirs.get(layer.name)
        weights = other.get_weights() if other is not None else []
        if weights and [w.shape for w in weights] == [w.shape for w in layer.get_weights()]:
            layer.set_weights(weights)
            copied.append(layer.name)
    if not copied:
        raise ValueError(f"--init-from: no layer of {folder} matches this model's layers by name and shape")
    return {"folder": str(folder), "sha256": sha256_file(source_path), "layers": copied}


def _auc_metric(n_classes: int):
    """The ``auc`` of the history: for two classes, the AUC of P(positive class), as ``metrics.json``
    reports it (Keras's AUC on one-hot labels pools both columns); else Keras's pooled one-vs-rest AUC."""
    import keras

    if n_classes != 2:
        return keras.metrics.AUC(name="auc")

    class PositiveClassAUC(keras.metrics.AUC):
        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(y_true[:, 1], y_pred[:, 1], sample_weight=sample_weight)

    return PositiveClassAUC(name="auc")


#: Pixels per batch-norm recalibration batch: 128 images of 224 x 224. Larger inputs get smaller batches, so a
#: pretrained backbone at 320 px recalibrates in the memory it trains in (at 128 x 320 x 320 the eager forward
#: pass of EfficientNet-Lite0 took 17 GB more than its training and a 24 GB machine killed the run).
RECALIBRATION_PIXELS = 128 * 224 * 224
#: Bytes of layer outputs per recalibration batch. The eager forward pass keeps every layer's output until the
#: call ends, so a batch costs its images times :func:`activation_bytes`: the small CNN at 224 px keeps 20.5 MB an
#: image (128 images, 2.6 GB), EfficientNet-Lite0 100 MB and -Lite2 135 MB (at 128 images 14 GB more than
#: its training for Lite0 and past 24 GB for Lite2, which the machine killed at the first validation).
RECALIBRATION_BYTES = 3_000_000_000


def activation_bytes(model) -> int:
    """Bytes of all of ``model``'s layer outputs for one image (float32): what an eager forward pass holds (a
    dimension the model leaves open counts as 1)."""
    return 4 * sum(int(np.prod([side or 1 for side in layer.output.shape[1:]])) for layer in model.layers
                   if not isinstance(layer.output, (list, tuple)))


def recalibration_batch(images: np.ndarray, model=None) -> int:
    """The batch size :func:`recalibrate_batch_norm` uses for images of this shape: 128 at 224 px or less,
    fewer as the side grows, and, given the ``model``, no more than :data:`RECALIBRATION_BYTES` of its layer
    outputs (at least 16, enough images for a stable batch mean and variance).

    >>> recalibration_batch(np.zeros((1, 224, 224, 1))), recalibration_batch(np.zeros((1, 320, 320, 1)))
    (128, 62)
    """
    height, width = images.shape[1:3]
    batch = RECALIBRATION_PIXELS // (height * width)
    if model is not None:
        batch = min(batch, RECALIBRATION_BYTES // activation_bytes(model))
    return int(max(16, min(128, batch)))


def recalibrate_batch_norm(model, images: np.ndarray, batch_size: int | None = None) -> int:
    """Set every batch-norm layer's moving mean and variance to its average over ``images``.

    In training, batch norm normalises with the statistics of each augmented batch and keeps a
    lagging moving average for inference. On the brain MRI set that average drifts far enough from
    what clean images produce that validation accuracy jumps by up to 20 points between epochs.
    Recomputing it from clean training images with the weights as they are ("precise BN",
    Wu & Johnson 2021) removes the drift; it uses training images only, never validation ones.
    Each batch-norm layer averages its batch statistics with equal weight over the batches, which
    are drawn in a seeded random order: batches of one class each (training arrays are stored class
    by class) would leave the spread between classes out of every batch variance, and the averaged
    variance too small (a brain run measured 0.884 after recalibrating in stored order, 0.933 after
    shuffling). Batches hold :func:`recalibration_batch` images unless ``batch_size`` is given. Under a
    ``tf.distribute`` strategy every worker recalibrates on the same images and the statistics are then
    averaged over the workers (:func:`core.multiworker.average_across_replicas`), so that all of them
    keep the same model. Returns the number of layers recalibrated.
    """
    import keras

    from core.multiworker import average_across_replicas

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers or len(images) == 0:
        return 0
    batch_size = batch_size or recalibration_batch(images, model)
    order = np.random.default_rng(0).permutation(len(images))  # the same on every worker
    saved = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), batch_size)):
            for layer in layers:
                layer.momentum = k / (k + 1)  # moving = mean of the k + 1 batch statistics so far
            model(images[np.sort(order[start:start + batch_size])], training=True)
    finally:
        for layer, momentum in zip(layers, saved):
            layer.momentum = momentum
    average_across_replicas([v for layer in layers for v in (layer.moving_mean, layer.moving_variance)])
    return len(layers)


class _RecalibrateBN:
    """Recalibrates batch norm on a fixed sample of clean training images before each validation."""

    def __new__(cls, images, n, seed, model=None):
        import keras

        sample = images[np.random.default_rng(seed).permutation(len(images))[:n]]

        class RecalibrateBN(keras.callbacks.Callback):
            def on_test_begin(self, logs=None):  # ``model``: the network itself when fit trains a wrapper of it
                recalibrate_batch_norm(model if model is not None else self.model, sample)

        return RecalibrateBN()


def _train_replicated(config: TrainConfig, log) -> dict:
    """:func:`train` on every replica of a ``tf.distribute`` strategy (:mod:`core.multiworker`).

    The same steps as one process, run inside the strategy's scope (the model is built and compiled
    there), with the global batch (``batch_size`` per replica x replicas) and the learning rate scaled
    linearly with it; ``params.json`` states both. Every worker runs every step (the collectives need
    them all), but only the chief writes ``config.out``: the others write into a temporary folder that
    is removed at the end. Each worker logs the SHA-256 of its final weights, the same on all of them.
    """
    import shutil
    import tempfile
    from dataclasses import replace

    from core import multiworker

    strategy = multiworker.make_strategy(config.strategy)  # first: collectives are set up before other TF work
    role = multiworker.worker_role(multiworker.read_tf_config() if config.strategy == "multiworker" else None)
    replicas = multiworker.replica_count(strategy)
    batch = multiworker.global_batch_size(config.batch_size, replicas)
    rate = multiworker.scaled_learning_rate(config.learning_rate, replicas)
    say = log if role.chief else (lambda line: log(f"worker {role.index}: {line}"))
    say(f"{config.strategy} strategy: {replicas} replicas on {role.workers} worker(s); global batch {batch} "
        f"({config.batch_size} per replica), learning rate {rate:g} ({config.learning_rate:g} x {replicas}); "
        f"{'this worker writes ' + config.out if role.chief else 'the chief writes the run folder'}")
    out = Path(config.out) if role.chief else Path(tempfile.mkdtemp(prefix=f"medxai-worker{role.index}-"))
    try:
        with strategy.scope():
            metrics = train(replace(config, strategy=None, out=str(out), batch_size=batch, learning_rate=rate),
                            log=say)
        say(f"final weights SHA-256 {multiworker.weights_digest(load_model(out).model)}")
        if role.chief:
            params = json.loads((out / "params.json").read_text())
            params |= {"strategy": config.strategy, "batch_size": config.batch_size,
                       "learning_rate": config.learning_rate, "replicas": replicas, "workers": role.workers,
                       "global_batch_size": batch, "scaled_learning_rate": rate,
                       "learning_rate_scaling": "linear in the replicas (Goyal et al. 2017)",
                       "data_sharding": multiworker.SHARD_POLICY}
            _write_json(out / "params.json", params)
            write_card(out)
    finally:
        if not role.chief:
            shutil.rmtree(out, ignore_errors=True)
    return metrics


def _sharded(dataset):
    """``dataset`` with an explicit sharding policy when a ``tf.distribute`` strategy is in scope
    (:data:`core.multiworker.SHARD_POLICY`); the same object when none is (one process)."""
    import tensorflow as tf

    if not tf.distribute.has_strategy():
        return dataset
    from core.multiworker import shard_input

    return shard_input(dataset)


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2, default=json_default) + "\n")


REFERENCE_FILE = "reference.npy"


def calibrate_run(model_dir: str | Path, data_dir: str | Path, log=print) -> dict:
    """Fit temperature scaling and the outlier check for a trained run folder on its own split.

    Rebuilds the run's split from its ``split.json`` (the dataset listed with the policies recorded in
    its ``model.json``), then writes into the folder: ``temperature`` in ``model.json`` (1.0 when
    scaling would not lower the validation NLL) with the ECE before and after, and ``ood.npz``: mean
    and precision of the pooled features on the training images and the distance threshold (the
    99th percentile of the validation images' distances). Returns the updated ``model.json``.
    """
    model_dir = Path(model_dir)
    loaded = load_model(model_dir)
    split = json.loads((model_dir / "split.json").read_text())
    params = json.loads((model_dir / "params.json").read_text()) if (model_dir / "params.json").exists() else {}
    dataset = data_mod.list_for_spec(data_dir, loaded.info, class_names=loaded.class_names,
                                     limit_per_class=params.get("limit_per_class"))
    train_items, val_items = data_mod.split_from_record(dataset, split["validation"], split.get("left_out", ()))
    log(f"{len(train_items)} training and {len(val_items)} validation images from the run's split")
    x_train, _ = data_mod.prepare_arrays(train_items, loaded.pipeline)
    x_val, y_val = data_mod.prepare_arrays(val_items, loaded.pipeline)

    raw = loaded.uncalibrated(x_val)
    # Trained here with inverse-frequency class weights (or classes balanced within groups, --balance-by): its
    # probabilities assume equally common classes.
    y_train = np.array([item.label for item in train_items])
    prior = (np.bincount(y_train, minlength=len(loaded.class_names)) / max(len(y_train), 1)
             if (params.get("class_weights") or params.get("balanced")) and len(y_train) else None)
    temperature = fit_temperature(raw, y_val, prior)

    layers = outlier_layers(loaded.model)
    features = pooled_features(loaded.model, layers)
    check = OutlierCheck.fit(features.predict(x_train, batch_size=64, verbose=0),
                             features.predict(x_val, batch_size=64, verbose=0))
    check.save(model_dir / OOD_FILE)

    info = json.loads((model_dir / INFO_FILE).read_text())
    info["temperature"] = temperature
    if prior is not None:
        info["class_prior"] = [round(float(v), 6) for v in prior]
    else:
        info.pop("class_prior", None)
    calibrated = scale(raw, temperature, prior)
    if len(loaded.class_names) == 2:
        info["threshold"] = prevalence_threshold(y_train)
        info["threshold_rule"] = THRESHOLD_RULE
        # For the card: where the noisy empirical optimum lies, and what the saved rule gives up against it.
        empirical = youden_threshold(y_val, calibrated[:, 1])
        info["threshold_check"] = {"youden_on_validation": empirical,
                                   "j_at_youden": _youden_j(y_val, calibrated[:, 1], empirical),
                                   "j_at_threshold": _youden_j(y_val, calibrated[:, 1], info["threshold"])}
    if (model_dir / "metrics.json").exists():
        # The figures the model card and the history page show are those of the model as served:
        # calibrated probabilities at the saved threshold, subgroups included.
        metrics = json.loads((model_dir / "metrics.json").read_text())
        metrics |= classification_metrics(y_val, calibrated, loaded.class_names,
                                          threshold=float(info.get("threshold", 0.5)))
        metrics["calibrated"] = True
        subgroups = current_subgroups(loaded.info)
        if subgroups:
            columns = list(subgroups["columns"])
            rows = data_mod.index_rows(dataset, subgroups["index"], val_items, columns)
            metrics["subgroups"] = subgroup_metrics(y_val, calibrated, {c: [r[c] for r in rows] for c in columns},
                                                    loaded.class_names, threshold=float(info.get("threshold", 0.5)))
            info["subgroups"] = subgroups
        _write_json(model_dir / "metrics.json", metrics)
        info["validation"] = _validation_summary(metrics)
    info["calibration"] = {"ece_before": expected_calibration_error(raw, y_val),
                           "ece_after": expected_calibration_error(calibrated, y_val),
                           "n_validation": len(y_val),
                           "method": "temperature scaling on the validation split"
                                     + (", after restoring the training split's class shares (the model was trained "
                                        "with class weights)" if prior is not None else "")}
    info["ood"] = {"file": OOD_FILE, "sha256": sha256_file(model_dir / OOD_FILE), "threshold": check.threshold,
                   "quantile": OOD_QUANTILE, "features": layers if len(layers) > 1 else layers[0]}
    # The mean training image on the model's input grid: a class-neutral deletion baseline (core.trust).
    np.save(model_dir / REFERENCE_FILE, x_train.mean(axis=0)[..., 0].astype(np.float32))
    reference = loaded.uncalibrated(x_train.mean(axis=0, keepdims=True))[0]
    info["reference"] = {"file": REFERENCE_FILE, "sha256": sha256_file(model_dir / REFERENCE_FILE),
                         "probabilities": [float(p) for p in reference],
                         "what": "mean of the training images after preprocessing"}
    write_info(model_dir, info)
    if (model_dir / "metrics.json").exists():
        write_card(model_dir)
    log(f"temperature {temperature:.3f}: ECE {info['calibration']['ece_before']:.4f} -> "
        f"{info['calibration']['ece_after']:.4f}; outlier threshold {check.threshold:.2f}")
    return info


class _EpochLog:
    """Prints one line per epoch (a Keras callback without importing Keras at module level)."""

    def __new__(cls, log, epochs, monitor):
        import keras

        class EpochLog(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.time()

            def on_epoch_end(self, epoch, logs=None):
                logs = logs or {}
                shown = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if k != "learning_rate")
                log(f"epoch {epoch + 1}/{epochs} ({time.time() - self.t0:.0f} s): {shown}")

        return EpochLog()
