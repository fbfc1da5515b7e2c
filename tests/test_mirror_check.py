"""scripts/mirror_check.py on the committed brain model and real radiologist-outlined slices."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def brain(data_dir):
    from core.model import load_model

    return load_model(ROOT / "assets" / "models" / "brain_mri")


def test_a_mirrored_slice_gives_the_mirror_answers(brain, data_dir):
    """The check is symmetric: run on a slice's mirror image, the lesion and the peaks change side and the
    correlation between the two maps is the same number."""
    import mirror_check
    from core.io import load_scan
    from core.masks import load_mask

    image = data_dir / "brain_mri_masks" / "images" / "glioma" / "209.jpg"
    scan = load_scan(image.read_bytes(), image.name)
    mask = load_mask((data_dir / "brain_mri_masks" / "masks" / "glioma" / "209.png").read_bytes(), scan.shape) > 0
    target = brain.class_names.index("glioma")
    row = mirror_check.check_one(brain, scan, mask, target)
    flipped = mirror_check.check_one(brain, mirror_check.mirrored(scan), mask[:, ::-1], target)
    assert -1 <= row["correlation"] <= 1
    assert flipped["correlation"] == pytest.approx(row["correlation"], abs=1e-3)
    assert flipped["lesion_right"] != row["lesion_right"]
    assert (flipped["hit"], flipped["hit_mirrored"]) == (row["hit_mirrored"], row["hit"])
    # a convolutional map follows a 16 px shift of this slice (the default model: 0.94 over 150 unseen gliomas)
    assert 0.5 < row["shift_correlation"] <= 1


def test_the_command_reports_every_class_and_refuses_a_chest_model(data_dir, tmp_path):
    out = tmp_path / "mirror.json"
    args = ["--data", str(data_dir / "brain_mri_masks" / "images"), "--masks", str(data_dir / "brain_mri_masks" / "masks"),
            "--where", "subset=unseen", "--limit", "6"]
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "mirror_check.py"), "--model",
                           str(ROOT / "assets" / "models" / "brain_mri"), *args, "--json", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    summary = {s["class"]: s for s in report["summary"]}
    assert set(summary) == {"glioma", "meningioma", "pituitary", "all"} and summary["all"]["n"] == 6
    for line in summary.values():
        assert all(0 <= line[k] <= 1 for k in ("peak_right", "lesion_right", "same_side", "hit", "hit_mirrored"))
        for key in ("correlation", "shift_correlation"):
            mean, low, high = line[key]
            assert -1 <= mean <= 1 and (np.isnan(low) or low <= mean <= high)
    assert "| all | 6 |" in done.stdout and "Half-mirror test:" in done.stdout
    for row in report["rows"]:
        assert 0.5 <= row["lesion_one_side"] <= 1
        assert 0 <= row["p_lesion_side"] <= 1 and 0 <= row["p_healthy_side"] <= 1
        assert row["answer_healthy_side"] in summary
    for line in summary.values():
        one_sided = [r for r in report["rows"] if (line["class"] in ("all", r["class"]))
                     and r["lesion_one_side"] >= 0.9]
        assert line["one_sided"] == len(one_sided) and sum(line["healthy_side_answers"].values()) == len(one_sided)
    chest = subprocess.run([sys.executable, str(ROOT / "scripts" / "mirror_check.py"), "--model",
                            str(ROOT / "assets" / "models" / "chest_xray"), *args],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert chest.returncode == 2 and "not the same anatomy" in chest.stderr


def test_the_half_mirror_test_takes_the_outline_from_one_composite(brain, data_dir):
    """Slice 873's glioma lies wholly on one side of the head's midline: the test says so, and of the two
    half-mirror composites of the model's input one holds the outline's pixels twice (mirrored into both halves)
    and the other none: a composite without the lesion exists to be scored."""
    import mirror_check
    from core.io import load_scan
    from core.masks import load_mask
    from core.preprocess import resize_to
    from core.train import HALF_MIRROR_FOREGROUND, half_mirrors

    image = data_dir / "brain_mri_masks" / "images" / "glioma" / "873.jpg"
    scan = load_scan(image.read_bytes(), image.name)
    mask = load_mask((data_dir / "brain_mri_masks" / "masks" / "glioma" / "873.png").read_bytes(), scan.shape) > 0
    tensor = brain.pipeline.scan_tensor(scan).astype(np.float32)
    row = mirror_check.half_mirror_test(brain, tensor, mask, brain.class_names.index("glioma"))
    assert row["lesion_one_side"] >= mirror_check.ONE_SIDED
    outline = (resize_to(mask.astype(np.float32), tensor.shape[1:3]) > 0.5).astype(np.float32)[None, ..., None]
    # The outline's composites about the image's own midline: an image channel carries the outline along.
    threshold = (HALF_MIRROR_FOREGROUND - brain.pipeline.mean) / brain.pipeline.std
    both = np.concatenate([tensor, outline], axis=-1)
    import tensorflow as tf

    left, right = (c.numpy()[0, ..., 1] for c in half_mirrors(tf.constant(both), threshold))
    assert sorted([left.sum() > 0, right.sum() > 0]) == [False, True]
    assert max(left.sum(), right.sum()) >= 1.6 * outline.sum()
