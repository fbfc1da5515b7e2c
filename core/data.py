"""Class-folder datasets: list, de-duplicate, split by patient, preprocess, feed ``tf.data``.

Images are decoded with :func:`core.io.load_scan` and prepared with the model's own
:class:`core.preprocess.Pipeline`, the very code used at inference, once per image; the
prepared arrays are cached in memory and ``tf.data`` shuffles, augments and prefetches them.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from core.io import ScanError, load_scan
from core.preprocess import Pipeline

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm"}


@dataclass(frozen=True)
class Item:
    path: Path
    label: int
    group: str  # patient or study key: items sharing it never straddle the split
    digest: str  # SHA-256 of the file's bytes
    near: str = ""  # difference hash (:func:`_near_hash`) when the listing checked near-duplicates


@dataclass(frozen=True)
class Dataset:
    root: Path
    class_names: tuple[str, ...]
    items: tuple[Item, ...]
    removed_duplicates: int = 0

    @property
    def labels(self) -> np.ndarray:
        return np.array([item.label for item in self.items], np.int64)

    def fingerprint(self) -> str:
        """SHA-256 over every (class/file name, content hash): names the exact data used."""
        digest = hashlib.sha256()
        for item in sorted(self.items, key=lambda i: (i.label, i.path.name)):
            digest.update(f"{self.class_names[item.label]}/{item.path.name}:{item.digest}\n".encode())
        return digest.hexdigest()

    def counts(self) -> dict[str, int]:
        counter = Counter(item.label for item in self.items)
        return {name: counter.get(i, 0) for i, name in enumerate(self.class_names)}


def group_key(file_name: str, patterns: tuple[str, ...] = ()) -> str:
    r"""The patient or study a file belongs to: the first capture group of the first pattern that
    matches its name (a task spec's ``split.patterns``), else the file itself.

    >>> chest = (r"^(person\d+)_", r"^((?:NORMAL2-)?IM-\d+)-")
    >>> group_key("person1000_bacteria_2931.jpeg", chest), group_key("NORMAL2-IM-0485-0001-0002.jpeg", chest)
    ('person1000', 'NORMAL2-IM-0485')
    >>> group_key("Tr-gl_0001.jpg", chest)
    'Tr-gl_0001.jpg'
    """
    for pattern in patterns:
        match = re.match(pattern, file_name)
        if match:
            return match.group(1)
    return file_name


def item_key(item: Item, class_names) -> str:
    """How a run's ``split.json`` names a file: ``class/file name``."""
    return f"{class_names[item.label]}/{item.path.name}"


def list_dataset(root: str | Path, *, class_names: list[str] | None = None, limit_per_class: int | None = None,
                 near_duplicates: bool = False, group_patterns: tuple[str, ...] = ()) -> Dataset:
    """List a class-folder dataset (``root/CLASS/*.jpeg``) and drop duplicate images.

    Byte-identical files are always reduced to one. With ``near_duplicates`` images whose
    16 x 16 difference hash matches are reduced to one too (the brain MRI set holds
    re-encoded copies of the same slice). ``group_patterns`` name each file's patient or study
    (:func:`group_key`); files in one group never straddle the validation split.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"The dataset folder {root} does not exist.")
    names = class_names or sorted(p.name for p in root.iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"The dataset folder {root} has no class sub-folders (one folder of images per class).")
    items, seen, removed = [], set(), 0
    for label, name in enumerate(names):
        if not (root / name).is_dir():
            raise FileNotFoundError(f"The dataset folder {root} has no class folder {name}.")
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if limit_per_class:
            files = files[:limit_per_class]
        for path in files:
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            key = _near_hash(data) if near_duplicates else digest
            if key in seen or digest in seen:
                removed += 1
                continue
            seen.update((key, digest))
            items.append(Item(path, label, group_key(path.name, tuple(group_patterns)), digest,
                              key if near_duplicates else ""))
    if not items:
        raise ValueError(f"The dataset folder {root} holds no images in {', '.join(names)}.")
    return Dataset(root, tuple(names), tuple(items), removed)


def list_for_spec(root: str | Path, spec: dict, *, class_names: list[str] | None = None,
                  limit_per_class: int | None = None) -> Dataset:
    """:func:`list_dataset` with a task spec's (or a model folder's ``model.json``'s) own policies."""
    return list_dataset(root, class_names=class_names or spec.get("class_names"), limit_per_class=limit_per_class,
                        near_duplicates=bool(spec.get("near_duplicates")),
                        group_patterns=tuple((spec.get("split") or {}).get("patterns", ())))


def validation_keys(folder: str | Path) -> list[str]:
    """The files a run validated on, as its ``split.json`` names them (``class/file name``), in its order.

    >>> import json, tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "split.json").write_text(json.dumps({"validation": ["fractured/a.jpg", "not_fractured/b.jpg"]}))
    >>> validation_keys(folder)
    ['fractured/a.jpg', 'not_fractured/b.jpg']
    """
    return list(json.loads((Path(folder) / "split.json").read_text())["validation"])


def split_from_record(dataset: Dataset, validation_names, left_out=()) -> tuple[list[Item], list[Item]]:
    """A run's split rebuilt from the names its ``split.json`` lists as validation (and as left out of training)."""
    validation, left_out = set(validation_names), set(left_out)
    train = [i for i in dataset.items if item_key(i, dataset.class_names) not in validation | left_out]
    val = [i for i in dataset.items if item_key(i, dataset.class_names) in validation]
    return train, val


def read_leave_out(path: str | Path) -> list[str]:
    """The image names a ``--leave-out`` file lists: a CSV with an ``image`` column (``class/file``, as
    ``split.json`` names images), every row of it, or only the rows whose other columns say 1 when it has any
    (``assets/labels/fracatlas_training_casts.csv``: ``image,cast_or_splint`` keeps the films with a cast).

    >>> import tempfile, os
    >>> folder = tempfile.mkdtemp(); path = os.path.join(folder, "casts.csv")
    >>> _ = open(path, "w").write("image,cast_or_splint\\nfractured/a.jpg,1\\nfractured/b.jpg,0\\n")
    >>> read_leave_out(path)
    ['fractured/a.jpg']
    """
    import csv

    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "image" not in rows[0]:
        raise ValueError(f"{path} has no 'image' column: list the images to leave out as class/file, one per row.")
    flags = [c for c in rows[0] if c not in ("image", "note")]
    return [r["image"] for r in rows if not flags or any((r.get(c) or "").strip() == "1" for c in flags)]


def _near_hash(data: bytes) -> str:
    """Difference hash of a 17 x 16 grey thumbnail: equal for re-encoded or rescaled copies."""
    import io as _io

    from PIL import Image

    with Image.open(_io.BytesIO(data)) as image:
        thumb = np.asarray(image.convert("L").resize((17, 16), Image.BILINEAR), np.int16)
    bits = (thumb[:, 1:] > thumb[:, :-1]).flatten()
    return "near:" + np.packbits(bits).tobytes().hex()


def split_by_group(dataset: Dataset, *, validation_fraction: float = 0.15, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Split so that no patient (group) is in both parts, stratified by each group's class."""
    groups: dict[str, list[Item]] = defaultdict(list)
    for item in dataset.items:
        groups[item.group].append(item)
    by_class: dict[int, list[str]] = defaultdict(list)
    for key, members in groups.items():
        majority = Counter(m.label for m in members).most_common(1)[0][0]
        by_class[majority].append(key)
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in sorted(by_class):
        keys = sorted(by_class[label])
        rng.shuffle(keys)
        n_val = int(round(len(keys) * validation_fraction))
        for i, key in enumerate(keys):
            (val if i < n_val else train).extend(groups[key])
    return train, val


#: Difference hashes (256 bits) at most this many bits apart are near-duplicates that stay on one side of a
#: ``listed`` split. Identical hashes are removed by :func:`list_dataset` already. On FracAtlas the pairs
#: within 10 bits include films of one patient (consecutive numbers, the same marker); the largest group
#: holds 4 images, and pairs beyond it are mostly different people's knees in the same standard view.
NEAR_BITS = 10


def read_index(path: str | Path, columns=()) -> dict[str, dict[str, str]]:
    """The rows of a dataset's index CSV, keyed as ``split.json`` names items (:func:`item_key`): the last two
    parts (class folder, file name) of the path in its ``image`` column. Raises ``FileNotFoundError`` or
    ``ValueError`` with one sentence when the index or one of ``columns`` is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"The dataset index {path} does not exist.")
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("image", *columns) if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"The dataset index {path} has no column {', '.join(missing)}.")
        return {"/".join(PurePosixPath(row["image"].replace("\\", "/")).parts[-2:]): row for row in reader}


def index_rows(dataset: Dataset, index: str, items, columns=()) -> list[dict[str, str]]:
    """Each item's row of the dataset's index CSV (:func:`read_index`), in the order of ``items``.

    ``index`` is relative to the dataset folder (``"../index.csv"``). Raises ``FileNotFoundError`` or
    ``ValueError`` with one sentence when the index, one of ``columns`` or an item's row is missing.
    """
    path = dataset.root / index
    rows = read_index(path, columns)
    keys = [item_key(item, dataset.class_names) for item in items]
    absent = [key for key in keys if key not in rows]
    if absent:
        raise ValueError(f"The dataset index {path} has no row for {absent[0]}"
                         f"{f' (nor for {len(absent) - 1} other files)' if len(absent) > 1 else ''}.")
    return [rows[key] for key in keys]


#: A cell of the last convolution's grid counts as inside a box when the box covers at least this share of it.
BOX_COVER = 0.25


def box_cells(dataset: Dataset, boxes: dict, items, grid: int) -> np.ndarray:
    """Each item's boxes from the dataset's index as a ``grid x grid`` map of the model input: 1.0 in the cells
    a box covers by at least :data:`BOX_COVER` (and in the cell under each box's centre, so a box smaller
    than a cell still marks one), 0.0 elsewhere and for an item without boxes.

    ``boxes`` is a task spec's ``boxes`` entry: the index (relative to the dataset folder), the ``column`` of
    each row's list of ``[x, y, width, height]`` boxes and the ``size`` columns (width, height) they are
    measured against; its optional ``skip`` lists index columns whose value 1 leaves an item's map empty, as
    if it had no box (e.g. ``hardware``: where metal lies beside the fracture, a box would teach the metal as
    much as the break). The model input is the whole image resized without keeping its aspect ratio
    (:func:`core.preprocess.resize`), so a box's share of the image is its share of the grid.
    """
    import ast

    width_column, height_column = boxes["size"]
    skip = tuple(boxes.get("skip", ()))
    rows = index_rows(dataset, boxes["index"], items, (boxes["column"], width_column, height_column, *skip))
    fine = 8  # sub-cells per cell and side: coverage measured on a grid eight times finer
    cells = np.zeros((len(items), grid, grid), np.float32)
    for n, row in enumerate(rows):
        listed = ast.literal_eval(row[boxes["column"]] or "[]")
        if not listed or any(str(row[column]).strip() == "1" for column in skip):
            continue
        width, height = float(row[width_column]), float(row[height_column])
        covered = np.zeros((grid * fine, grid * fine), bool)
        for x, y, w, h in listed:
            x0, y0 = int(np.floor(x / width * grid * fine)), int(np.floor(y / height * grid * fine))
            x1, y1 = int(np.ceil((x + w) / width * grid * fine)), int(np.ceil((y + h) / height * grid * fine))
            covered[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)] = True
            centre_row = min(int((y + h / 2) / height * grid), grid - 1)
            centre_col = min(int((x + w / 2) / width * grid), grid - 1)
            cells[n, centre_row, centre_col] = 1.0
        share = covered.reshape(grid, fine, grid, fine).mean(axis=(1, 3))
        cells[n][share >= BOX_COVER] = 1.0
    return cells


def _linked_groups(items: list[Item], max_bits: int = NEAR_BITS) -> list[list[Item]]:
    """Items joined when they share a patient key (``group``) or their difference hashes differ in at most
    ``max_bits`` bits: the connected components, each in listing order."""
    parent = list(range(len(items)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, item in enumerate(items):
        parent[root(i)] = root(first.setdefault(item.group, i))
    hashed = [i for i, item in enumerate(items) if item.near]
    if len(hashed) > 1:
        bits = np.array([np.unpackbits(np.frombuffer(bytes.fromhex(items[i].near.split(":", 1)[1]), np.uint8))
                         for i in hashed], np.float32)
        signs = 2 * bits - 1  # +-1: a dot product is (bits - 2 * Hamming distance), exact in float32
        for start in range(0, len(hashed), 512):
            distance = (bits.shape[1] - signs[start:start + 512] @ signs.T) / 2
            for a, b in np.argwhere(distance <= max_bits):
                if start + a < b:
                    parent[root(hashed[start + a])] = root(hashed[b])
    components: dict[int, list[Item]] = defaultdict(list)
    for i, item in enumerate(items):
        components[root(i)].append(item)
    return list(components.values())


def split_listed(dataset: Dataset, policy: dict, *, validation_fraction: float = 0.15,
                 seed: int = 0) -> tuple[list[Item], list[Item]]:
    """The split an index CSV lists, with a random share of the files it leaves open.

    ``policy``: ``{"policy": "listed", "index": "../index.csv", "column": "official_split",
    "validation": ["valid"], "fraction": 0.15, "training_only": ["multiscan"]}``. A file whose
    ``column`` holds a ``validation`` value validates; one holding any other value trains. Of the files
    without a value, those with a non-zero ``training_only`` column (e.g. multi-view collages) train, and
    ``fraction`` (default ``validation_fraction``) of the others per class validate, drawn with ``seed``.
    Files linked by a patient key or as near-duplicates (:data:`NEAR_BITS`) move together: a group with a
    validation-listed file validates whole, else one with any listed or training-only file trains.
    Both lists keep the listing's order.
    """
    column = policy.get("column", "split")
    listed_validation = {str(v) for v in policy.get("validation", ["valid"])}
    training_only = list(policy.get("training_only", ()))
    fraction = float(policy.get("fraction", validation_fraction))
    rows = dict(zip(dataset.items, index_rows(dataset, policy.get("index", "index.csv"), dataset.items,
                                              (column, *training_only))))
    train, val, open_groups = [], [], defaultdict(list)
    for members in _linked_groups(list(dataset.items)):
        listed = [rows[m][column].strip() for m in members]
        if any(value in listed_validation for value in listed):
            val.extend(members)
        elif any(listed) or any(rows[m][c].strip() not in ("", "0") for m in members for c in training_only):
            train.extend(members)
        else:
            open_groups[Counter(m.label for m in members).most_common(1)[0][0]].append(members)
    rng = np.random.default_rng(seed)
    for label in sorted(open_groups):
        groups = sorted(open_groups[label], key=lambda g: g[0].path.name)
        rng.shuffle(groups)
        n_val = int(round(len(groups) * fraction))
        for i, members in enumerate(groups):
            (val if i < n_val else train).extend(members)
    order = {item: i for i, item in enumerate(dataset.items)}
    return sorted(train, key=order.__getitem__), sorted(val, key=order.__getitem__)


def split_dataset(dataset: Dataset, policy: dict | None, *, validation_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Training and validation items by a task spec's split policy (``{"policy": "group" | "file" | "listed"}``).

    ``group`` and ``file`` are :func:`split_by_group`: with ``group`` the files' patient or study keys (from
    the spec's patterns, already in each item's ``group``) keep a patient on one side; with ``file`` every
    file is its own group. ``listed`` is :func:`split_listed`: the split an index CSV names.
    """
    kind = (policy or {}).get("policy", "file")
    if kind == "listed":
        return split_listed(dataset, policy, validation_fraction=validation_fraction, seed=seed)
    if kind not in ("group", "file"):
        raise ValueError(f"unknown split policy {kind!r}")
    return split_by_group(dataset, validation_fraction=validation_fraction, seed=seed)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights (mean 1), so the rarer class counts as much in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = counts.sum() / (n_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


#: With :func:`group_balanced_weights`, groups smaller than this (or lacking a class) are pooled into one.
MIN_BALANCED_GROUP = 20


def group_balanced_weights(labels: np.ndarray, groups: list[str], n_classes: int,
                           min_group: int = MIN_BALANCED_GROUP) -> tuple[np.ndarray, dict]:
    """Per-image loss weights that give every class the same total weight within each group (e.g. each body part),
    each group keeping its share of the images: image ``i`` of class ``c`` in group ``g`` weighs
    ``n_g / (n_classes * n_gc)``. Where a label's base rate differs between groups (hand films fractured 31%
    of the time, leg films 10%), class weights alone still let a model score the group; balanced within each
    group, the group tells the loss nothing about the class. Groups with fewer than ``min_group`` images, or
    lacking a class, are pooled into one group, ``"other"``. The weights have mean 1. Returns them and, per
    group, its images per class and the weight each class's images get."""
    labels = np.asarray(labels)
    keys = np.asarray(groups, dtype=object)
    for key in set(groups):
        members = labels[keys == key]
        if len(members) < min_group or len(np.unique(members)) < n_classes:
            keys[keys == key] = "other"
    weights = np.ones(len(labels), dtype=np.float32)
    summary = {}
    for key in sorted(set(keys)):
        inside = keys == key
        counts = np.bincount(labels[inside], minlength=n_classes)
        per_class = inside.sum() / (n_classes * np.maximum(counts, 1))
        weights[inside] = per_class[labels[inside]]
        summary[key] = {"n": counts.tolist(), "weight": [round(float(w), 3) for w in per_class]}
    scale = len(labels) / weights.sum()
    for entry in summary.values():
        entry["weight"] = [round(w * float(scale), 3) for w in entry["weight"]]
    return weights * np.float32(scale), summary


def prepare_image(path: Path, pipeline: Pipeline) -> np.ndarray:
    """Decode one file and run the model's pipeline on it: the (size, size, channels) model image."""
    try:
        scan = load_scan(path.read_bytes(), path.name)
    except ScanError as err:
        raise ScanError(f"{path}: {err}") from None  # say which of thousands of files it is
    return pipeline.scan_tensor(scan)[0]


def prepare_arrays(items: list[Item], pipeline: Pipeline, *, workers: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Every item prepared once: images (n, size, size, channels) float32 and labels (n,)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(pool.map(lambda item: prepare_image(item.path, pipeline), items))
    x = np.stack(images).astype(np.float32) if images else np.zeros(
        (0, pipeline.input_size, pipeline.input_size, pipeline.channels), np.float32)
    return x, np.array([item.label for item in items], np.int64)


def augmentation(*, flip: bool, value_range: tuple[float, float]):
    """Keras preprocessing layers for training only: small shifts, rotations, zoom, contrast.

    ``value_range`` is the range of the pipeline's output (see :meth:`Pipeline.value_range`):
    ``RandomContrast`` clips to it, and its Keras default (0, 255) would wipe out every
    negative value of a standardised image in training but not at inference.
    Test-time augmentation uses the same ranges, so it stays inside what the model saw.
    """
    import keras
    from keras import layers

    steps = [
        layers.RandomTranslation(0.06, 0.06, fill_mode="nearest"),
        layers.RandomRotation(0.03, fill_mode="nearest"),
        layers.RandomZoom(0.12, fill_mode="nearest"),
        layers.RandomContrast(0.15, value_range=tuple(float(v) for v in value_range)),
    ]
    if flip:
        steps.insert(0, layers.RandomFlip("horizontal"))
    return keras.Sequential(steps, name="augmentation")


def cutmix_batch(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, probability: float):
    """CutMix (Yun et al., ICCV 2019): in a share ``probability`` of the images, a random box is replaced by the
    same box of another image of the batch, and the one-hot label becomes the two labels mixed by area.

    A class can then only be scored from where its evidence lies, so the classifier is pushed to rest on local
    findings rather than on the whole slice's look (a weakly supervised localisation aid; it needs no outlines).
    Boxes cover 0-100% of the image (area drawn uniformly, centre anywhere, clipped at the edges).

    >>> x = np.zeros((2, 8, 8, 1), np.float32); x[1] = 1
    >>> y = np.eye(2, dtype=np.float32)
    >>> mixed, soft = cutmix_batch(x, y, np.random.default_rng(0), 1.0)
    >>> bool(np.allclose(soft.sum(axis=1), 1)), bool(np.allclose(mixed[0].mean(), soft[0, 1]))
    (True, True)
    """
    source_images, source_labels = images, labels.astype(np.float32)
    images, labels = source_images.copy(), source_labels.copy()
    n, h, w = images.shape[:3]
    if n < 2 or probability <= 0:
        return images, labels
    partners = rng.permutation(n)
    for i in np.flatnonzero(rng.random(n) < probability):
        j = partners[i] if partners[i] != i else (i + 1) % n
        cut = np.sqrt(rng.random())  # side ratio: the box area is uniform on [0, 1]
        bh, bw = int(round(h * cut)), int(round(w * cut))
        cy, cx = rng.integers(h), rng.integers(w)
        y0, y1 = max(cy - bh // 2, 0), min(cy + bh - bh // 2, h)
        x0, x1 = max(cx - bw // 2, 0), min(cx + bw - bw // 2, w)
        if y1 <= y0 or x1 <= x0:
            continue
        images[i, y0:y1, x0:x1] = source_images[j, y0:y1, x0:x1]
        share = (y1 - y0) * (x1 - x0) / (h * w)
        labels[i] = (1 - share) * source_labels[i] + share * source_labels[j]
    return images, labels


def synthetic_positives(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, probability: float, *,
                        draw, positive: int, mean: float, std: float):
    """A finding drawn on a share ``probability`` of the images of a batch not labelled ``positive``, relabelled
    ``positive`` when one could be drawn: ``draw(grey, seed=...)`` gets the image back in [0, 1] (the tensor times
    ``std`` plus ``mean``) and returns ``(image, drawn)``, e.g. :func:`core.perturb.fracture_line`.

    >>> x = np.zeros((3, 8, 8, 1), np.float32); y = np.eye(2, dtype=np.float32)[[0, 0, 1]]
    >>> mark = lambda grey, seed: (grey + 0.5, True)
    >>> x2, y2 = synthetic_positives(x, y, np.random.default_rng(0), 1.0, draw=mark, positive=1, mean=0.0, std=1.0)
    >>> y2.argmax(axis=1).tolist(), float(x2[0].max()), float(x2[2].max())
    ([1, 1, 1], 0.5, 0.0)
    """
    images, labels = np.array(images, np.float32), np.array(labels, np.float32)
    for i in np.flatnonzero((labels.argmax(axis=1) != positive) & (rng.random(len(images)) < probability)):
        grey = np.clip(images[i, ..., 0] * std + mean, 0.0, 1.0)
        drawn, ok = draw(grey, seed=int(rng.integers(1 << 31)))
        if ok:
            images[i] = np.repeat(((drawn - mean) / std)[..., None], images.shape[-1], axis=-1)
            labels[i] = np.eye(labels.shape[1], dtype=np.float32)[positive]
    return images, labels


def make_tf_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, *, batch_size: int = 32, training: bool,
                    augment=None, degrade=None, mix=None, seed: int = 0, repeat: bool = False,
                    autotune: bool = False, sample_weight: np.ndarray | None = None, relabel=None):
    """``tf.data`` over prepared arrays: cached, shuffled and augmented for training, prefetched.

    ``repeat`` (training only) makes the batches endless, each pass over ``x`` in a new order and ending on a
    batch boundary: ``fit`` then reads them with ``steps_per_epoch`` through one iterator for the whole run.
    Keras otherwise opens a new iterator every epoch; without autotuning that neither stalls nor pauses either, but
    the endless iterator's epochs were a little faster (4.69 s against 4.99 s, ``BENCHMARKS.md`` section 9).

    ``autotune`` (off by default) leaves tf.data's autotuning on. Its optimisation thread sleeps for a period that
    grows to tens of seconds, and an iterator's destructor waits for that thread to wake
    (``RootDataset::Iterator::~Iterator``, seen with ``py-spy dump --native``): on this 2-core machine a new
    iterator each epoch stalled some epochs by about 20 s with no CPU time spent (the previous epoch's iterator
    going away), and an endless fit's ``fit`` call took 21-34 s to return after its last epoch. With autotuning
    off, TensorFlow sets the ``AUTOTUNE`` parallelism and buffer once instead of tuning them as the run goes;
    epochs are as fast here and neither pause happens (``BENCHMARKS.md`` section 9).

    ``degrade`` (training only) is a NumPy function of a batch of model tensors, run before the Keras
    ``augment`` layers: the image degradations of :func:`core.perturb.degrade_batch`. ``mix`` (training
    only) is a NumPy function of a batch of tensors and one-hot labels, run last: :func:`cutmix_batch`.
    ``relabel`` (training only) is a NumPy function of a batch of tensors and one-hot labels, run first, before the
    degradations: :func:`synthetic_positives`. ``sample_weight`` (one per image, e.g. :func:`group_balanced_weights`)
    rides along as each element's third part, which ``fit`` reads as the loss weights; not with ``mix`` (a mixed
    image has two weights).
    """
    import tensorflow as tf

    if sample_weight is not None and mix is not None:
        raise ValueError("Sample weights and mixed images cannot be combined: a mixed image has two weights.")
    parts = (x, tf.one_hot(y, n_classes)) + (() if sample_weight is None else (np.asarray(sample_weight, np.float32),))
    ds = tf.data.Dataset.from_tensor_slices(parts)
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and repeat:
        ds = ds.repeat()
    if training and relabel is not None:
        def relabelled(a, b, *rest):
            a2, b2 = tf.numpy_function(relabel, [a, b], (tf.float32, tf.float32))
            return tf.ensure_shape(a2, (None, *x.shape[1:])), tf.ensure_shape(b2, (None, n_classes)), *rest
        ds = ds.map(relabelled, num_parallel_calls=tf.data.AUTOTUNE)
    if training and degrade is not None:
        shape = (None, *x.shape[1:])
        ds = ds.map(lambda a, *rest: (tf.ensure_shape(tf.numpy_function(degrade, [a], tf.float32), shape), *rest),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if training and augment is not None:
        ds = ds.map(lambda a, *rest: (augment(a, training=True), *rest), num_parallel_calls=tf.data.AUTOTUNE)
    if training and mix is not None:
        def mixed(a, b):
            a2, b2 = tf.numpy_function(mix, [a, b], (tf.float32, tf.float32))
            return tf.ensure_shape(a2, (None, *x.shape[1:])), tf.ensure_shape(b2, (None, n_classes))
        ds = ds.map(mixed, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if not autotune:
        options = tf.data.Options()
        options.autotune.enabled = False
        ds = ds.with_options(options)
    return ds
