"""scripts/line_check.py on the committed fracture model and real FracAtlas validation films."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_the_drawn_films_are_the_models_own_intact_validation_films_with_the_same_line_for_every_model(data_dir):
    """Film ``k`` of the split gets seed ``k``: two calls give the same lines, each film differs from its original
    only in a thin line, and every film is an intact validation film of the model's split."""
    import line_check

    folder = ROOT / "assets" / "models" / "fracture"
    images = data_dir / "fracatlas" / "images"
    first = line_check.drawn_films(str(folder), images, limit=6)
    again = line_check.drawn_films(str(folder), images, limit=6)
    validation = set(json.loads((folder / "split.json").read_text())["validation"])
    assert len(first) >= 4
    for (key, grey, lined), (key2, _, lined2) in zip(first, again):
        assert key == key2 and key in validation and key.startswith("not_fractured/")
        np.testing.assert_array_equal(lined, lined2)
        changed = np.abs(lined - grey) > line_check.CHANGED
        assert 0 < changed.mean() < 0.02


def test_the_command_prints_a_row_per_model_with_the_calls_and_where_grad_cam_points(data_dir):
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "line_check.py"), "assets/models/fracture",
                          "--data", str(data_dir / "fracatlas" / "images"), "--limit", "8"],
                         capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr
    row = [line for line in out.stdout.splitlines() if line.startswith("| `assets/models/fracture`")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    films = int(cells[1])
    assert 5 <= films <= 8
    assert cells[5].endswith(f"of {films}") and cells[6].endswith(f"of {films}")


def test_a_model_without_the_fractured_class_gets_one_sentence():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "line_check.py"), "assets/models/chest_xray"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "has no class 'fractured'" in out.stderr and "Traceback" not in out.stderr
