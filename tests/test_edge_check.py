"""scripts/edge_check.py on the committed fracture model and real FracAtlas validation films."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_a_patchwork_keeps_the_film_where_no_cell_is_blurred_and_blurs_the_chosen_cells(data_dir):
    import edge_check
    from core.io import load_scan
    from core.robustness import display_grey

    path = data_dir / "fracatlas" / "images" / "not_fractured" / "IMG0000049.jpg"
    grey = display_grey(load_scan(path.read_bytes(), path.name))
    h, w = grey.shape
    np.testing.assert_array_equal(edge_check.patchwork(grey, 0.0, np.random.default_rng(0)), grey)
    half = edge_check.patchwork(grey, 0.5, np.random.default_rng(0))
    cells = np.random.default_rng(0).random((edge_check.GRID, edge_check.GRID)) < 0.5
    changed = np.abs(half - grey) > 1e-6
    rows, columns = np.arange(h) * edge_check.GRID // h, np.arange(w) * edge_check.GRID // w
    chosen = cells[rows[:, None], columns[None, :]]
    assert not changed[~chosen].any()  # untouched outside the chosen cells
    assert changed[chosen].mean() > 0.5  # and the chosen ones blurred (flat regions may not change)
    whole = edge_check.patchwork(grey, 1.0, np.random.default_rng(0))
    assert np.abs(np.diff(whole, axis=1)).mean() < np.abs(np.diff(grey, axis=1)).mean()


@pytest.mark.slow
def test_the_command_scores_every_version_with_the_models_own_decision(data_dir):
    """As scanned, the shares are the model's own predictions at its threshold; the table has one row per model."""
    import edge_check
    from core import data as data_mod
    from core.model import load_model

    folder = str(ROOT / "assets" / "models" / "fracture")
    result = edge_check.edge_check(folder, data_dir / "fracatlas" / "images", limit=4)
    assert result["films"] == 4 and set(result["rows"]) == {name for name, _ in edge_check.VERSIONS}
    for row in result["rows"].values():
        assert 0 <= row["called_fractured"] <= 1 and 0 <= row["median_p"] <= 1
    loaded = load_model(folder)
    keys = [k for k in json.loads((Path(folder) / "split.json").read_text())["validation"]
            if k.startswith("not_fractured/")][:4]
    tensors = np.stack([data_mod.prepare_image(data_dir / "fracatlas" / "images" / k, loaded.pipeline) for k in keys])
    p = loaded.predict(tensors)[:, loaded.class_names.index("fractured")]
    assert result["rows"]["as scanned"]["called_fractured"] == pytest.approx(np.mean(p >= loaded.threshold))
    assert result["rows"]["as scanned"]["median_p"] == pytest.approx(float(np.median(p)), abs=1e-3)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "edge_check.py"), folder, "--data",
                          str(data_dir / "fracatlas" / "images"), "--limit", "2"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| `" + folder + "` | 2 |" in out.stdout and "50% of cells blurred" in out.stdout


def test_a_model_without_the_fractured_class_gets_one_sentence():
    """As scripts/line_check.py: one sentence and exit 2, not a traceback from the class lookup."""
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "edge_check.py"), "assets/models/chest_xray"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 2 and "has no class 'fractured'" in out.stderr and "Traceback" not in out.stderr
