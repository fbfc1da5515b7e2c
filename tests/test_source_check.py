"""scripts/source_check.py on the committed brain model and the real brain training folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_colour_mode_is_read_from_the_jpeg_header(data_dir, tmp_path):
    """The proxy for a slice's source collection: how its JPEG stores the pixels, grey or colour."""
    from PIL import Image

    import source_check

    Image.new("L", (8, 8)).save(tmp_path / "grey.jpg")
    Image.new("RGB", (8, 8)).save(tmp_path / "colour.jpg")
    assert source_check.colour_mode(tmp_path / "grey.jpg") == "grey"
    assert source_check.colour_mode(tmp_path / "colour.jpg") == "colour"
    glioma = sorted((data_dir / "brain_mri" / "Training" / "glioma").iterdir())[:20]
    assert {source_check.colour_mode(p) for p in glioma} <= {"grey", "colour"}


def test_the_default_model_is_scored_by_class_and_colour_mode(data_dir, tmp_path):
    """The command on the committed model, a few images per row: every class appears in its validation rows in
    both modes where the split holds both, the training rows are of each class's rare mode only, each row's
    accuracy is the share of its answers that name the class, and the JSON holds what the table prints."""
    out = tmp_path / "source.json"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "source_check.py"), "assets/models/brain_mri",
                           "--images", str(data_dir / "brain_mri" / "Training"), "--limit", "3", "--json", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (table,) = json.loads(out.read_text())
    assert table["mode_share"]["glioma"]["grey"] > 0.8 and table["mode_share"]["notumor"]["grey"] < 0.1
    rows = table["rows"]
    assert {(r["part"], r["class"]) for r in rows if r["part"] == "validation"} == {
        ("validation", c) for c in ("glioma", "meningioma", "notumor", "pituitary")}
    for row in rows:
        assert 1 <= row["n"] <= 3 and sum(row["answers"].values()) == row["n"]
        assert row["accuracy"] == round(row["answers"].get(row["class"], 0) / row["n"], 4)
        if row["part"] != "validation":
            assert table["mode_share"][row["class"]][row["mode"]] <= 0.5  # the class's rare mode
        assert f"| {row['part']} | {row['class']} | {row['mode']} | {row['n']} |" in done.stdout
