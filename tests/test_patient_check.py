"""scripts/patient_check.py: the brain model's answers and maps on unseen outlined slices, grouped by how far (in
figshare numbers, patient by patient) the nearest slice seen in training lies, on real slices and the committed
model."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from conftest import slice_ablation

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import patient_check  # noqa: E402

pytestmark = pytest.mark.slow


def test_the_gap_is_the_distance_to_the_nearest_figshare_number_seen_in_training(data_dir):
    index = data_dir / "brain_mri_masks" / "index.csv"
    gaps = patient_check.figshare_gaps(index)
    with open(index, newline="") as handle:
        rows = list(csv.DictReader(handle))
    seen = [int(r["figshare_index"]) for r in rows if r["subset"] == "seen_in_training"]
    assert len(gaps) == len(rows)
    for row in rows[:: max(1, len(rows) // 40)]:
        key = row["image"].removeprefix("images/")
        expected = min(abs(int(row["figshare_index"]) - s) for s in seen)
        assert gaps[key] == expected
        assert (gaps[key] == 0) == (row["subset"] == "seen_in_training")
    unseen = [gaps[r["image"].removeprefix("images/")] for r in rows if r["subset"] == "unseen"]
    assert min(unseen) >= 1 and max(unseen) > 20  # some unseen slices lie far from any seen one


def test_three_unseen_slices_are_scored_and_grouped_by_their_gap(data_dir, tmp_path, capsys):
    """One slice per tumour class in explain-eval's order: each row has the model's P(true) as scanned and with the
    outline filled (explain-eval's own fill), a pointing score of 0 or 1 for Grad-CAM and the centre prior, its gap
    and group; the table has a line per class and group and then per group over all classes."""
    from core.model import load_model

    root = data_dir / "brain_mri_masks"
    out = tmp_path / "patients.json"
    assert patient_check.main(["--model", "assets/models/brain_mri", "--data", str(root / "images"), "--masks",
                               str(root / "masks"), "--spacing", "0.49", "--where", "subset=unseen", "--limit", "3",
                               "--json", str(out)]) == 0
    table = capsys.readouterr().out.splitlines()
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [row["class"] for row in rows] == ["glioma", "meningioma", "pituitary"]
    gaps = patient_check.figshare_gaps(root / "index.csv")
    loaded = load_model("assets/models/brain_mri")
    for row in rows:
        assert row["gap"] == gaps[row["image"]] and row["group"] == patient_check.group_of(row["gap"], 2, 20)
        assert row["pointing_gradcam"] in (0.0, 1.0) and row["pointing_centre"] in (0.0, 1.0)
        expected = slice_ablation(loaded, root, row["image"])
        assert row["p"] == pytest.approx(expected["p_intact"], abs=1e-5)
        assert row["p_filled"] == pytest.approx(expected["p_outline"], abs=1e-5)
    lines = report["summary"]
    assert len(table) == 2 + len(lines)
    overall = [line for line in lines if line["class"] == "all"]
    assert sum(line["n"] for line in overall) == 3
    for line in overall:
        members = [row for row in rows if row["group"] == line["group"]]
        assert line["accuracy"][0] == pytest.approx(sum(row["right"] for row in members) / len(members), abs=1e-3)
