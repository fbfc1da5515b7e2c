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
        mean, low, high = line["correlation"]
        assert -1 <= mean <= 1 and (np.isnan(low) or low <= mean <= high)
    assert "| all | 6 |" in done.stdout
    chest = subprocess.run([sys.executable, str(ROOT / "scripts" / "mirror_check.py"), "--model",
                            str(ROOT / "assets" / "models" / "chest_xray"), *args],
                           capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert chest.returncode == 2 and "not the same anatomy" in chest.stderr
