"""core.data on the real chest X-ray folder: patient keys, duplicates, the patient split, tf.data."""

from __future__ import annotations

import hashlib
import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from core.data import (
    cutmix_batch,
    _linked_groups, class_weights, group_balanced_weights, group_key, index_rows, item_key, list_dataset, list_for_spec, make_tf_dataset,
    prepare_arrays, prepare_image, split_by_group, split_dataset, split_from_record,
)
from core.io import ScanError
from core.preprocess import Pipeline
from core.tasks import load_spec

CHEST_PATTERNS = tuple(load_spec("chest_xray")["split"]["patterns"])


def patient_key(name: str) -> str:
    return group_key(name, CHEST_PATTERNS)


@pytest.fixture(scope="module")
def chest(chest_dir):
    """The full chest listing with the chest task's policies: hashes ~5,200 small files (about a second)."""
    return list_for_spec(chest_dir, load_spec("chest_xray"))


@pytest.mark.parametrize("name, key", [
    ("person1000_bacteria_2931.jpeg", "person1000"),
    ("person1_virus_6.jpeg", "person1"),
    ("person1481_bacteria_3866.jpeg", "person1481"),
    ("IM-0115-0001.jpeg", "IM-0115"),
    ("NORMAL2-IM-0587-0001-0002.jpeg", "NORMAL2-IM-0587"),
    ("Tr-glTr_0000.jpg", "Tr-glTr_0000.jpg"),  # brain MRI names carry no patient: own group
])
def test_patient_key(name, key):
    assert patient_key(name) == key


def test_patient_key_on_every_real_chest_file(chest_dir):
    for path in (chest_dir / "PNEUMONIA").iterdir():
        assert patient_key(path.name).startswith("person"), path.name
    for path in (chest_dir / "NORMAL").iterdir():
        key = patient_key(path.name)
        assert key != path.name and "IM-" in key and path.name.startswith(key + "-"), path.name
    # "IM-0001" and "NORMAL2-IM-0001" are different studies
    assert patient_key("IM-0001-0001.jpeg") != patient_key("NORMAL2-IM-0001-0001.jpeg")


def test_list_dataset_with_limit_per_class(chest_dir):
    dataset = list_dataset(chest_dir, limit_per_class=5, group_patterns=CHEST_PATTERNS)
    assert dataset.class_names == ("NORMAL", "PNEUMONIA")
    assert dataset.counts() == {"NORMAL": 5, "PNEUMONIA": 5}
    assert dataset.labels.tolist() == [0] * 5 + [1] * 5
    for item in dataset.items:
        assert item.path.parent.name == dataset.class_names[item.label]
        assert item.digest == hashlib.sha256(item.path.read_bytes()).hexdigest()
        assert item.group == patient_key(item.path.name)
    reordered = list_dataset(chest_dir, class_names=["PNEUMONIA", "NORMAL"], limit_per_class=5)
    assert reordered.class_names == ("PNEUMONIA", "NORMAL") and reordered.labels.tolist() == [0] * 5 + [1] * 5


def test_fingerprint_names_the_exact_data(chest_dir):
    a = list_dataset(chest_dir, limit_per_class=5)
    assert a.fingerprint() == list_dataset(chest_dir, limit_per_class=5).fingerprint()
    assert a.fingerprint() != list_dataset(chest_dir, limit_per_class=6).fingerprint()


def test_byte_identical_duplicates_are_removed(chest, chest_dir):
    files = [p for p in chest_dir.glob("*/*") if p.is_file()]
    distinct = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    # The data README speaks of 30 groups; this copy has 24 groups holding 26 redundant files.
    assert chest.removed_duplicates == len(files) - len(distinct) > 0
    assert len(chest.items) == len(distinct)
    assert len({item.digest for item in chest.items}) == len(chest.items)
    assert chest.counts()["NORMAL"] + chest.counts()["PNEUMONIA"] == len(distinct)


def test_split_never_puts_one_patient_in_both_parts(chest):
    per_patient = Counter(item.group for item in chest.items if item.label == 1)
    assert max(per_patient.values()) > 1  # personN repeats, so a file-wise split would leak
    train, val = split_by_group(chest, validation_fraction=0.15, seed=0)
    assert len(train) + len(val) == len(chest.items)
    assert {i.path for i in train}.isdisjoint({i.path for i in val})
    assert {i.group for i in train}.isdisjoint({i.group for i in val})
    assert 0.10 < len(val) / len(chest.items) < 0.20
    assert {i.label for i in val} == {0, 1}  # stratified by class
    again, _ = split_by_group(chest, validation_fraction=0.15, seed=0)
    other, _ = split_by_group(chest, validation_fraction=0.15, seed=1)
    assert [i.path for i in again] == [i.path for i in train]
    assert {i.path for i in other} != {i.path for i in train}


def test_split_policy_and_split_record(chest):
    train, val = split_dataset(chest, {"policy": "group"}, validation_fraction=0.15, seed=0)
    assert [i.path for i in val] == [i.path for i in split_by_group(chest, validation_fraction=0.15, seed=0)[1]]
    again_train, again_val = split_from_record(chest, [item_key(i, chest.class_names) for i in val])
    assert {i.path for i in again_val} == {i.path for i in val}
    assert {i.path for i in again_train} == {i.path for i in train}
    assert item_key(val[0], chest.class_names) == f"{val[0].path.parent.name}/{val[0].path.name}"
    with pytest.raises(ValueError, match="unknown split policy"):
        split_dataset(chest, {"policy": "by-moon-phase"})


def test_without_patterns_every_file_is_its_own_group(chest_dir):
    dataset = list_dataset(chest_dir, limit_per_class=5)
    assert all(item.group == item.path.name for item in dataset.items)


def test_near_duplicates_are_removed_on_request(chest_dir, tmp_path):
    original = chest_dir / "NORMAL" / "IM-0115-0001.jpeg"
    other = chest_dir / "PNEUMONIA" / "person1000_bacteria_2931.jpeg"
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
    (tmp_path / "a" / "IM-0115-0001.jpeg").symlink_to(original)
    buffer = io.BytesIO()
    Image.open(original).save(buffer, "PNG")  # same picture, other bytes
    (tmp_path / "a" / "copy.png").write_bytes(buffer.getvalue())
    (tmp_path / "b" / other.name).symlink_to(other)
    assert list_dataset(tmp_path).removed_duplicates == 0
    near = list_dataset(tmp_path, near_duplicates=True)
    assert near.removed_duplicates == 1 and near.counts() == {"a": 1, "b": 1}


def test_unusable_dataset_folders_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_dataset(tmp_path / "missing")
    with pytest.raises(ValueError, match="no class sub-folders"):
        list_dataset(tmp_path)
    (tmp_path / "NORMAL").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folder PNEUMONIA"):
        list_dataset(tmp_path, class_names=["NORMAL", "PNEUMONIA"])
    with pytest.raises(ValueError, match="holds no images"):
        list_dataset(tmp_path)


def test_class_weights_balance_the_loss():
    labels = np.array([0] * 10 + [1] * 30)
    weights = class_weights(labels, 2)
    assert weights == pytest.approx({0: 2.0, 1: 2 / 3})
    assert np.mean([weights[y] for y in labels]) == pytest.approx(1.0)
    assert class_weights(np.array([0, 0]), 2)[1] == pytest.approx(1.0)  # absent class: no division by zero


def test_group_balanced_weights_give_each_class_the_same_weight_within_each_group():
    """A group whose base rate differs (leg films rarely fractured, hand films often) tells the loss nothing about the
    class once each class weighs the same inside it; each group keeps its share, small groups are pooled."""
    labels = np.array([0] * 90 + [1] * 10 + [0] * 20 + [1] * 40 + [0] * 5 + [1] * 1 + [1] * 25)
    groups = ["leg"] * 100 + ["hand"] * 60 + ["hip"] * 6 + ["hand+hip"] * 25
    weights, summary = group_balanced_weights(labels, groups, 2)
    assert weights.shape == labels.shape and weights.mean() == pytest.approx(1.0)
    kept = np.asarray(groups)
    for group, size in (("leg", 100), ("hand", 60)):
        inside = kept == group
        by_class = [weights[inside & (labels == c)].sum() for c in (0, 1)]
        assert by_class[0] == pytest.approx(by_class[1])  # the classes weigh the same inside the group
        assert sum(by_class) == pytest.approx(size)  # the group keeps its share of the loss
    # "hip" is too small and "hand+hip" lacks a class: both pooled into "other", balanced there
    assert set(summary) == {"hand", "leg", "other"} and summary["other"]["n"] == [5, 26]
    other = np.isin(kept, ["hip", "hand+hip"])
    assert weights[other & (labels == 0)].sum() == pytest.approx(weights[other & (labels == 1)].sum())
    assert summary["leg"]["weight"][1] == pytest.approx(weights[100 - 1], rel=1e-3)  # the summary's weights are the images'


def test_prepare_arrays_and_tf_dataset(chest_dir):
    dataset = list_dataset(chest_dir, limit_per_class=3)
    pipeline = Pipeline(input_size=32)
    x, y = prepare_arrays(list(dataset.items), pipeline)
    assert x.shape == (6, 32, 32, 1) and x.dtype == np.float32 and y.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(x[4], prepare_image(dataset.items[4].path, pipeline))  # order kept
    batches = list(make_tf_dataset(x, y, 2, batch_size=4, training=False))
    assert [b[0].shape[0] for b in batches] == [4, 2]
    assert np.array_equal(batches[0][0].numpy(), x[:4])
    assert batches[1][1].numpy().tolist() == [[0.0, 1.0], [0.0, 1.0]]
    shuffled = np.concatenate([b[1].numpy() for b in make_tf_dataset(x, y, 2, batch_size=4, training=True)])
    assert sorted(shuffled.argmax(1).tolist()) == y.tolist()
    # Endless: each pass of ceil(6 / 4) = 2 batches holds every image once, in a new order each time.
    endless = make_tf_dataset(x, y, 2, batch_size=4, training=True, repeat=True, seed=1)
    passes = [np.concatenate([x_b.numpy() for x_b, _ in endless.skip(2 * k).take(2)]) for k in range(4)]
    for images in passes:
        assert sorted(images.sum(axis=(1, 2, 3)).tolist()) == sorted(x.sum(axis=(1, 2, 3)).tolist())
    assert len({tuple(np.round(images.sum(axis=(1, 2, 3)), 3)) for images in passes}) > 1
    # tf.data's autotuning off unless asked for: its thread made dropping an iterator wait (BENCHMARKS section 9)
    assert endless.options().autotune.enabled is False
    assert make_tf_dataset(x, y, 2, batch_size=4, training=False).options().autotune.enabled is False
    assert make_tf_dataset(x, y, 2, training=True, autotune=True).options().autotune.enabled is not False
    # Sample weights ride along as each element's third part, through the augmentation, shuffled with their image
    weights = np.arange(1, 7, dtype=np.float32)
    weighted = list(make_tf_dataset(x, y, 2, batch_size=4, training=True, sample_weight=weights, seed=2,
                                    degrade=lambda batch: batch, augment=lambda batch, training: batch))
    assert all(len(batch) == 3 for batch in weighted)
    for images, _, w in weighted:
        for image, weight in zip(images.numpy(), w.numpy()):
            assert np.array_equal(image, x[int(weight) - 1])
    with pytest.raises(ValueError, match="a mixed image has two weights"):
        make_tf_dataset(x, y, 2, training=True, sample_weight=weights, mix=lambda a, b: (a, b))


def test_cutmix_pastes_a_box_of_another_real_image_and_mixes_the_labels_by_its_area(chest_dir):
    dataset = list_dataset(chest_dir, limit_per_class=4)
    x, y = prepare_arrays(list(dataset.items), Pipeline(input_size=64))
    onehot = np.eye(2, dtype=np.float32)[y]
    mixed, soft = cutmix_batch(x, onehot, np.random.default_rng(3), 1.0)
    assert mixed.shape == x.shape and soft.shape == onehot.shape
    assert np.allclose(soft.sum(axis=1), 1.0) and not np.array_equal(mixed, x)
    for i in range(len(x)):
        changed = np.any(mixed[i] != x[i], axis=-1)
        if not changed.any():
            continue
        rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
        box = (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
        partner = [j for j in range(len(x)) if j != i and np.array_equal(
            mixed[i, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], x[j, rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])]
        assert partner, "the box comes from another image of the batch"
        share = soft[i, y[partner[0]]] if y[partner[0]] != y[i] else None
        if share is not None:  # a box from the other class carries its label in proportion to its area
            assert abs(share - box / (64 * 64)) < 0.05
    untouched, labels = cutmix_batch(x, onehot, np.random.default_rng(3), 0.0)
    assert np.array_equal(untouched, x) and np.array_equal(labels, onehot)
    batches = list(make_tf_dataset(x, y, 2, batch_size=4, training=True,
                                   mix=lambda a, b: cutmix_batch(a, b, np.random.default_rng(0), 1.0)))
    soft_labels = np.concatenate([b[1].numpy() for b in batches])
    assert soft_labels.shape == (8, 2) and np.allclose(soft_labels.sum(axis=1), 1.0)
    assert ((soft_labels > 0) & (soft_labels < 1)).any()  # some labels are mixed


def test_prepare_image_names_the_file_it_cannot_use(tmp_path):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8\xff" + b"\x00" * 64)
    with pytest.raises(ScanError, match="broken.jpeg: This image file is damaged"):
        prepare_image(broken, Pipeline(input_size=32))


# --- the `listed` split, on a small copy of real FracAtlas files with a tiny index written here ---

FRACTURE = load_spec("fracture")
LISTED = {**FRACTURE["split"], "index": "../index.csv"}
# Real FracAtlas films whose difference hashes lie within NEAR_BITS of each other (measured on the full set).
NEAR_NOT_FRACTURED = ("IMG0001134.jpg", "IMG0001807.jpg", "IMG0001727.jpg", "IMG0001242.jpg")  # 7-10 bits apart
NEAR_FRACTURED = ("IMG0004232.jpg", "IMG0002904.jpg")  # 10 bits apart, the same plated forearm; valid / train


@pytest.fixture(scope="module")
def fracatlas_rows(data_dir):
    import csv

    index = data_dir / "fracatlas" / "index.csv"
    if not index.is_file():
        pytest.skip(f"FracAtlas not found at {index.parent}")
    with open(index, newline="") as fh:
        return {row["image"].split("/", 1)[1]: row for row in csv.DictReader(fh)}  # "class/name" -> row


def _pick(rows, label, split, multiscan, n, skip=()):
    names = [key for key, r in sorted(rows.items()) if r["label"] == label and r["official_split"] == split
             and r["multiscan"] == multiscan and key.split("/")[1] not in skip]
    return names[:n]


def fracture_copy(tmp_path, data_dir, rows, listed: dict[str, str], *, leave_out=()):
    """``tmp_path/images/CLASS/NAME`` links to the real files of ``listed`` (``class/name`` -> split value)
    and ``tmp_path/index.csv`` their rows, with the split values given here; the listing with near hashes."""
    import csv

    tmp_path.mkdir(parents=True, exist_ok=True)
    with open(tmp_path / "index.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "label", "official_split", "multiscan", "hardware"])
        for key, value in listed.items():
            target = tmp_path / "images" / key
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(data_dir / "fracatlas" / "images" / key)
            if key not in leave_out:
                writer.writerow([f"images/{key}", rows[key]["label"], value, rows[key]["multiscan"],
                                 rows[key]["hardware"]])
    return list_dataset(tmp_path / "images", class_names=FRACTURE["class_names"], near_duplicates=True)


@pytest.fixture
def frac_files(fracatlas_rows):
    """A small selection of real files by role (``class/name`` lists)."""
    rows, skip = fracatlas_rows, NEAR_FRACTURED + NEAR_NOT_FRACTURED
    return {
        "valid": _pick(rows, "fractured", "valid", "0", 3, skip),
        "train": _pick(rows, "fractured", "train", "0", 3, skip) + _pick(rows, "fractured", "train", "1", 1, skip),
        "multiview": _pick(rows, "not_fractured", "", "1", 3, skip),
        "single": _pick(rows, "not_fractured", "", "0", 40, skip),
        "near_not_fractured": [f"not_fractured/{n}" for n in NEAR_NOT_FRACTURED],
        "near_fractured": [f"fractured/{n}" for n in NEAR_FRACTURED],
    }


def _as_listed(files, **values):
    """``class/name`` -> split value for every file: the real value for fractured ones (the near pair:
    ``valid`` and ``train``), blank for the others, overridden per role by ``values``."""
    real = {"valid": "valid", "train": "train"}
    listed = {key: values.get(role, real.get(role, "")) for role, keys in files.items() for key in keys}
    listed["fractured/IMG0004232.jpg"], listed["fractured/IMG0002904.jpg"] = "valid", "train"
    return listed


def _names(items, class_names=tuple(FRACTURE["class_names"])):
    return {item_key(i, class_names) for i in items}


def test_listed_split_follows_the_index_and_draws_a_share_of_the_rest(tmp_path, data_dir, fracatlas_rows, frac_files):
    dataset = fracture_copy(tmp_path, data_dir, fracatlas_rows, _as_listed(frac_files))
    train, val = split_dataset(dataset, LISTED, seed=0)
    assert len(train) + len(val) == len(dataset.items) and _names(train).isdisjoint(_names(val))
    assert set(frac_files["valid"]) <= _names(val) and set(frac_files["train"]) <= _names(train)
    assert set(frac_files["multiview"]) <= _names(train)  # multi-view collages without a listed value train
    # 40 unrelated single views: round(40 x 0.15) = 6 validate, drawn with the seed
    drawn = set(frac_files["single"]) & _names(val)
    assert len(drawn) == 6
    again = split_dataset(dataset, LISTED, seed=0)[1]
    other = split_dataset(dataset, LISTED, seed=1)[1]
    assert _names(again) == _names(val) and set(frac_files["single"]) & _names(other) != drawn
    assert len(set(frac_files["single"]) & _names(split_dataset(dataset, {**LISTED, "fraction": 0.5})[1])) == 20
    # the run's split.json rebuilds the same split
    re_train, re_val = split_from_record(dataset, sorted(_names(val)))
    assert _names(re_val) == _names(val) and _names(re_train) == _names(train)


def test_listed_split_keeps_near_duplicates_on_one_side(tmp_path, data_dir, fracatlas_rows, frac_files):
    """A near-duplicate of a validation-listed film validates with it, even one the index lists for training."""
    dataset = fracture_copy(tmp_path, data_dir, fracatlas_rows,
                            _as_listed(frac_files, near_not_fractured=""))
    groups = [_names(g) for g in _linked_groups(list(dataset.items)) if len(g) > 1]
    assert sorted(groups, key=len) == [set(frac_files["near_fractured"]), set(frac_files["near_not_fractured"])]
    _, val = split_dataset(dataset, LISTED, seed=0)
    assert set(frac_files["near_fractured"]) <= _names(val)  # IMG0002904 is listed `train`, its twin `valid`
    for seed in range(6):  # the unlisted group of four is drawn as one
        _, val = split_dataset(dataset, LISTED, seed=seed)
        assert len(set(frac_files["near_not_fractured"]) & _names(val)) in (0, 4)

    listed = _as_listed(frac_files, near_not_fractured="")
    listed["not_fractured/IMG0001134.jpg"] = "valid"
    marked = fracture_copy(tmp_path / "marked", data_dir, fracatlas_rows, listed)
    for seed in range(3):
        assert set(frac_files["near_not_fractured"]) <= _names(split_dataset(marked, LISTED, seed=seed)[1])


def test_listed_split_without_listed_files_still_splits(tmp_path, data_dir, fracatlas_rows, frac_files):
    """As with ``--limit-per-class``: no validation-listed file in the listing, only the random share."""
    listed = {k: v for k, v in _as_listed(frac_files).items() if v != "valid"}
    train, val = split_dataset(fracture_copy(tmp_path, data_dir, fracatlas_rows, listed), LISTED, seed=0)
    assert val and {i.label for i in val} == {0} and train


def test_listed_split_needs_every_file_in_the_index(tmp_path, data_dir, fracatlas_rows, frac_files):
    missing = frac_files["single"][0]
    dataset = fracture_copy(tmp_path, data_dir, fracatlas_rows, _as_listed(frac_files), leave_out=(missing,))
    with pytest.raises(ValueError) as err:
        split_dataset(dataset, LISTED)
    assert str(err.value) == f"The dataset index {tmp_path / 'images' / '../index.csv'} has no row for {missing}."
    with pytest.raises(ValueError, match="has no column nowhere"):
        split_dataset(dataset, {**LISTED, "column": "nowhere"})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        split_dataset(dataset, {**LISTED, "index": "missing.csv"})


def test_index_rows_give_subgroup_values(tmp_path, data_dir, fracatlas_rows, frac_files):
    dataset = fracture_copy(tmp_path, data_dir, fracatlas_rows, _as_listed(frac_files))
    rows = index_rows(dataset, "../index.csv", dataset.items[:3], ["hardware", "multiscan"])
    assert [r["image"] for r in rows] == [f"images/{item_key(i, dataset.class_names)}" for i in dataset.items[:3]]


def test_box_cells_mark_where_the_radiologists_boxed_each_fracture_on_the_model_grid(data_dir):
    """``core.data.box_cells`` on real FracAtlas films (portrait, not square): every fractured film's grid marks
    the cells its boxes cover and no more than the boxes' extent, the outline's own pixels fall in marked cells
    (the boxes and the outlines are the same radiologists' regions), and a not-fractured film's grid is empty."""
    import ast
    import csv
    from pathlib import Path

    from core.data import box_cells, list_for_spec
    from core.masks import load_mask

    spec = load_spec("fracture")
    dataset = list_for_spec(data_dir / "fracatlas" / "images", spec, limit_per_class=12)
    items = list(dataset.items)
    grid = 16
    cells = box_cells(dataset, spec["boxes"], items, grid)
    assert cells.shape == (len(items), grid, grid) and set(np.unique(cells)) <= {0.0, 1.0}
    rows = {Path(r["image"]).name: r for r in csv.DictReader(open(data_dir / "fracatlas" / "index.csv"))}
    names = list(dataset.class_names)
    checked = metal = 0
    for item, marked in zip(items, cells):
        row = rows[item.path.name]
        if names[item.label] == "not_fractured" or row["hardware"] == "1":  # metal films teach no location
            assert marked.sum() == 0
            metal += names[item.label] == "fractured"
            continue
        assert marked.sum() >= 1
        height, width = int(row["height"]), int(row["width"])
        assert height != width  # the squash to the square input is what the grid must follow
        mask = load_mask((data_dir / "fracatlas" / row["mask"]).read_bytes(), (height, width))
        rr, cc = np.nonzero(mask)
        on_grid = marked[(rr * grid // height), (cc * grid // width)]
        assert on_grid.mean() > 0.6  # most of the outline lies in marked cells (a box's edge cells may fall short)
        ys, xs = np.nonzero(marked)
        boxes = np.array(ast.literal_eval(row["boxes_xywh"]), float)
        assert ys.min() >= np.floor(boxes[:, 1].min() / height * grid) - 1
        assert xs.max() <= np.ceil((boxes[:, 0] + boxes[:, 2]).max() / width * grid)
        checked += 1
    assert checked == 12 - metal and checked >= 8


def test_box_cells_leave_the_films_a_skip_column_flags_without_boxes(data_dir):
    """A task spec's ``boxes.skip`` (the fracture task skips ``hardware``): a fractured film flagged 1 in a
    skipped column gets an empty grid, as if it had no box, and the others keep theirs; here with ``hand``,
    which flags about a third of the real FracAtlas films, so both sides are seen."""
    import csv

    from core.data import box_cells, list_for_spec

    spec = load_spec("fracture")
    dataset = list_for_spec(data_dir / "fracatlas" / "images", spec, limit_per_class=30)
    fractured = [i for i in dataset.items if dataset.class_names[i.label] == "fractured"]
    rows = {r["image"].split("/")[-1]: r for r in csv.DictReader(open(data_dir / "fracatlas" / "index.csv"))}
    kept = box_cells(dataset, {**spec["boxes"], "skip": []}, fractured, 16)
    skipped = box_cells(dataset, {**spec["boxes"], "skip": ["hand"]}, fractured, 16)
    hand = np.array([rows[i.path.name]["hand"] == "1" for i in fractured])
    assert 0 < hand.sum() < len(fractured)
    assert (kept.reshape(len(fractured), -1).max(axis=1) > 0).all()
    assert skipped[hand].sum() == 0
    assert np.array_equal(skipped[~hand], kept[~hand])
