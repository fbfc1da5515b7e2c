"""Class-folder datasets: list, de-duplicate, split by patient, preprocess, feed ``tf.data``.

Images are decoded with :func:`core.io.load_scan` and prepared with the model's own
:class:`core.preprocess.Pipeline`, the very code used at inference, once per image; the
prepared arrays are cached in memory and ``tf.data`` shuffles, augments and prefetches them.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
            items.append(Item(path, label, group_key(path.name, tuple(group_patterns)), digest))
    if not items:
        raise ValueError(f"The dataset folder {root} holds no images in {', '.join(names)}.")
    return Dataset(root, tuple(names), tuple(items), removed)


def list_for_spec(root: str | Path, spec: dict, *, class_names: list[str] | None = None,
                  limit_per_class: int | None = None) -> Dataset:
    """:func:`list_dataset` with a task spec's (or a model folder's ``model.json``'s) own policies."""
    return list_dataset(root, class_names=class_names or spec.get("class_names"), limit_per_class=limit_per_class,
                        near_duplicates=bool(spec.get("near_duplicates")),
                        group_patterns=tuple((spec.get("split") or {}).get("patterns", ())))


def split_from_record(dataset: Dataset, validation_names) -> tuple[list[Item], list[Item]]:
    """A run's split rebuilt from the names its ``split.json`` lists as validation."""
    validation = set(validation_names)
    train = [i for i in dataset.items if item_key(i, dataset.class_names) not in validation]
    val = [i for i in dataset.items if item_key(i, dataset.class_names) in validation]
    return train, val


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


def split_dataset(dataset: Dataset, policy: dict | None, *, validation_fraction: float = 0.15,
                  seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Training and validation items by a task spec's split policy (``{"policy": "group" | "file"}``).

    Both policies are :func:`split_by_group`: with ``group`` the files' patient or study keys (from the
    spec's patterns, already in each item's ``group``) keep a patient on one side; with ``file`` every
    file is its own group.
    """
    kind = (policy or {}).get("policy", "file")
    if kind not in ("group", "file"):
        raise ValueError(f"unknown split policy {kind!r}")
    return split_by_group(dataset, validation_fraction=validation_fraction, seed=seed)


def class_weights(labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights (mean 1), so the rarer class counts as much in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(float)
    weights = counts.sum() / (n_classes * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


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
        layers.RandomZoom(0.08, fill_mode="nearest"),
        layers.RandomContrast(0.15, value_range=tuple(float(v) for v in value_range)),
    ]
    if flip:
        steps.insert(0, layers.RandomFlip("horizontal"))
    return keras.Sequential(steps, name="augmentation")


def make_tf_dataset(x: np.ndarray, y: np.ndarray, n_classes: int, *, batch_size: int = 32, training: bool,
                    augment=None, seed: int = 0):
    """``tf.data`` over prepared arrays: cached, shuffled and augmented for training, prefetched."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((x, tf.one_hot(y, n_classes)))
    ds = ds.cache()
    if training:
        ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        ds = ds.map(lambda a, b: (augment(a, training=True), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
