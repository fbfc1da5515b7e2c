"""A frozen ImageNet backbone read at a larger input, only a small head trained (issue 14's tiles lever).

A fracture line is a pixel or two wide at 224 px, and fine-tuning EfficientNet-Lite0 at 320 px or more costs
15 minutes an epoch on this 2-core machine. This measures the cheap form of the "larger input, local decision"
lever: EfficientNet-Lite0 with its ImageNet weights (``core.backbone``, output stride 16) is run once over every
FracAtlas film at ``--size`` px and its stage-7 features (``block15_project_bn``, 320 channels, 32 x 32 cells at
512 px) are cached, each training film also mirrored left to right (a second view); then only a head is trained
on the cache: a 1 x 1 convolution of 256 (ReLU), spatial dropout 0.3 and a 1 x 1 convolution to one score per
cell, pooled over the cells into the film's score by

- ``avg``: the mean cell (a class activation map, Zhou et al. 2016; Grad-CAM of this head is the cell map);
- ``max``: the highest cell, multiple-instance learning's "a film is fractured when one of its tiles is".

Each head is trained ``--epochs`` epochs (Adam 1e-3, batch 64, the classes weighted 1:4.7 as ``train`` does,
one of the two views drawn per film each epoch, cells mirrored top to bottom half the time), the epoch with
the best validation AUC kept, as ``train``'s checkpoint does. The split is the shipped fracture model's own
(``assets/models/fracture/split.json``). Printed per head: validation AUC, AUC without hardware, sensitivity
at the specificity of 0.85 the shipped model has at its threshold, and the pointing game of its cell map on the
62 outlined fractures of the authors' ``valid`` list (``core.localisation.pointing_game``, the same tolerance
as ``explain-eval``: 2% of the image's diagonal), beside the centre prior on the same films.

    python scripts/frozen_features.py --cache DIR [--size 512] [--epochs 15] [--poolings avg,max]
        [--montage OUT.jpg]

The cache takes about 4.4 GB at 512 px and 25 minutes to fill; each head then trains in about 13 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import data as data_mod  # noqa: E402
from core.localisation import centre_prior, pointing_game  # noqa: E402
from core.masks import load_mask  # noqa: E402
from core.preprocess import Pipeline  # noqa: E402

ROOT = Path("../shared/data/fracatlas")
CUT = "block15_project_bn"


def films(model_dir: Path):
    """The shipped model's split of the FracAtlas films: training items, validation items and their index rows."""
    spec = json.loads((model_dir / "model.json").read_text())
    dataset = data_mod.list_for_spec(ROOT / "images", spec)
    train, val = data_mod.split_from_record(dataset, data_mod.validation_keys(model_dir))
    return train, val, data_mod.index_rows(dataset, "../index.csv", val, ("hardware", "official_split", "mask"))


def extract(cache: Path, size: int, train, val) -> None:
    """Stage-7 features of every film (float16), training films also mirrored; skipped when already cached."""
    import keras

    from core.backbone import efficientnet_lite

    if (cache / f"train_{size}.npy").exists():
        return
    cache.mkdir(parents=True, exist_ok=True)
    model = efficientnet_lite(size, 2, output_stride=16)
    trunk = keras.Model(model.input, model.get_layer(CUT).output)
    pipeline = Pipeline(input_size=size)
    for name, items in (("val", val), ("train", train)):
        out, started = [], time.time()
        for start in range(0, len(items), 64):
            x, _ = data_mod.prepare_arrays(items[start:start + 64], pipeline)
            features = trunk.predict(x, batch_size=16, verbose=0).astype(np.float16)
            if name == "train":
                mirrored = trunk.predict(x[:, :, ::-1], batch_size=16, verbose=0).astype(np.float16)[:, :, ::-1]
                features = np.stack([features, mirrored], 1)
            out.append(features)
            print(f"{name}: {min(start + 64, len(items))}/{len(items)} films, {time.time() - started:.0f} s", flush=True)
        np.save(cache / f"{name}_{size}.npy", np.concatenate(out))


def head(shape, pooling: str):
    """The trained part: cell scores from the cached features, pooled into the film's probability."""
    import keras
    from keras import layers

    features = keras.Input(shape)
    x = layers.Conv2D(256, 1, activation="relu")(features)
    x = layers.SpatialDropout2D(0.3)(x)
    cells = layers.Conv2D(1, 1, name="cells")(x)
    pooled = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D}[pooling]()(cells)
    return keras.Model(features, layers.Activation("sigmoid")(pooled)), keras.Model(features, cells)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", required=True, type=Path, help="folder for the cached features (4.4 GB at 512)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--poolings", default="avg,max")
    parser.add_argument("--model", type=Path, default=Path("assets/models/fracture"), help="whose split to use")
    parser.add_argument("--montage", type=Path, help="save the first head's cell maps on 12 outlined films")
    args = parser.parse_args(argv)

    import keras
    from sklearn.metrics import roc_auc_score
    from skimage.transform import resize

    from core.io import load_scan

    train, val, rows = films(args.model)
    extract(args.cache, args.size, train, val)
    x_train = np.load(args.cache / f"train_{args.size}.npy")
    x_val = np.load(args.cache / f"val_{args.size}.npy")
    y_train = np.array([i.label for i in train])
    y_val = np.array([i.label for i in val])
    hardware = np.array([row["hardware"] == "1" for row in rows])
    outlined = [n for n, row in enumerate(rows) if row["official_split"] == "valid" and row["mask"]]
    scans = [load_scan(val[n].path.read_bytes(), val[n].path.name) for n in outlined]
    masks = [load_mask((ROOT / rows[n]["mask"]).read_bytes(), s.shape) for n, s in zip(outlined, scans)]
    centre = sum(pointing_game(centre_prior(m.shape), m) for m in masks)
    print(f"{len(train)} training films (x2 views), {len(val)} validation ({int(y_val.sum())} fractured, "
          f"{int(hardware.sum())} with hardware); {len(outlined)} outlined valid films, centre prior points at "
          f"{centre:.0f}", flush=True)
    weights = {c: len(y_train) / (2 * max(1, int((y_train == c).sum()))) for c in (0, 1)}
    rng = np.random.default_rng(0)
    for pooling in args.poolings.split(","):
        keras.utils.set_random_seed(0)
        model, cells = head(x_val.shape[1:], pooling)
        model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy")
        best, started = (-1.0, None, 0), time.time()
        for epoch in range(args.epochs):
            views = x_train[np.arange(len(y_train)), rng.integers(0, 2, len(y_train))]
            flip = rng.random(len(y_train)) < 0.5
            views = np.where(flip[:, None, None, None], views[:, ::-1], views)
            model.fit(views, y_train, batch_size=64, epochs=1, class_weight=weights, verbose=0)
            auc = roc_auc_score(y_val, model.predict(x_val, batch_size=64, verbose=0)[:, 0])
            if auc > best[0]:
                best = (auc, model.get_weights(), epoch + 1)
        model.set_weights(best[1])
        p = model.predict(x_val, batch_size=64, verbose=0)[:, 0]
        threshold = np.quantile(p[y_val == 0], 0.85)
        maps = cells.predict(x_val[outlined], verbose=0)[..., 0]
        hits = sum(pointing_game(resize(m, mask.shape, order=1), mask) for m, mask in zip(maps, masks))
        print(f"{pooling}: epoch {best[2]} of {args.epochs} kept ({(time.time() - started) / 60:.1f} min); validation "
              f"AUC {roc_auc_score(y_val, p):.3f}, without hardware {roc_auc_score(y_val[~hardware], p[~hardware]):.3f}; "
              f"sensitivity {np.mean(p[y_val == 1] > threshold):.2f} at specificity 0.85; cell map points at "
              f"{hits:.0f} of {len(masks)} outlined fractures", flush=True)
        if args.montage:
            from PIL import Image

            from core.render import display_image, draw_outline, overlay

            tiles = []
            for n in np.random.default_rng(0).choice(len(outlined), 12, replace=False):
                scan, mask = scans[n], masks[n]
                sal = resize(maps[n], mask.shape, order=1)
                sal = (sal - sal.min()) / (np.ptp(sal) + 1e-9)
                rgb = draw_outline(overlay(display_image(scan.frame(), scan.window, scan.invert, voi=scan.voi), sal,
                                           opacity=0.45), mask)
                y, x = np.unravel_index(np.argmax(sal), sal.shape)
                s = max(4, mask.shape[0] // 80)
                rgb[max(0, y - 3 * s):y + 3 * s, max(0, x - s // 2):x + s // 2 + 1] = (255, 0, 0)
                rgb[max(0, y - s // 2):y + s // 2 + 1, max(0, x - 3 * s):x + 3 * s] = (255, 0, 0)
                tiles.append(np.asarray(Image.fromarray(rgb).resize((220, 260))))
            grid = np.concatenate([np.concatenate(tiles[k:k + 6], 1) for k in (0, 6)], 0)
            Image.fromarray(grid).save(args.montage, quality=85)
            args.montage = None  # the first head's maps only
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
