"""scripts/margin_check.py: the outline grown by a margin and filled, the inside of the head filled, and how far
the map's peak lies from the outline, on real outlined brain slices and the committed brain model."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import slice_ablation
from core.localisation import log_odds

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "margin_check.py"


@pytest.fixture(scope="module")
def margin_check():
    spec = importlib.util.spec_from_file_location("margin_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_three_unseen_slices_one_per_class_agree_with_explain_eval_s_ablation(margin_check, data_dir, tmp_path,
                                                                              capsys):
    """The first three unseen slices (one per tumour class, in explain-eval's order): with no margin the fill is
    explain-eval's own (the same P(true) with the outline filled as :func:`core.evaluation.outline_ablation`); a
    5 mm margin fills a larger region; the inside of the head filled gives one of the model's classes; the map's
    peak distance is a distance in millimetres. The table has a row per class and one for all."""
    from core.model import load_model

    root = data_dir / "brain_mri_masks"
    out = tmp_path / "margins.json"
    assert margin_check.main(["--model", "assets/models/brain_mri", "--data", str(root / "images"), "--masks",
                              str(root / "masks"), "--spacing", "0.49", "--where", "subset=unseen", "--limit", "3",
                              "--margins", "0,5", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert [line.split("|")[1].strip() for line in table.splitlines()[2:]] == [
        "glioma", "meningioma", "pituitary", "all"]
    report = json.loads(out.read_text())
    rows = report["rows"]
    assert [row["class"] for row in rows] == ["glioma", "meningioma", "pituitary"]
    loaded = load_model("assets/models/brain_mri")
    for row in rows:
        expected = slice_ablation(loaded, root, row["image"])
        assert row["p"] == pytest.approx(expected["p_intact"], abs=1e-5)
        assert row["outline_0"] == pytest.approx(expected["p_outline"], abs=1e-5)
        assert 0.0 <= row["outline_5"] <= 1.0 and row["answer_inside"] in loaded.class_names
        assert row["peak_mm_gradcam"] >= 0 and np.isfinite(row["peak_mm_centre"])
    everything = report["summary"][-1]
    assert everything["class"] == "all" and everything["n"] == 3
    paired = [row for row in rows if row["control_0"] is not None]
    assert everything["0 mm"]["extra_drop"][0] == pytest.approx(
        np.mean([row["control_0"] - row["outline_0"] for row in paired]), abs=1e-3)
    assert everything["log_odds_extra_drop_0"][0] == pytest.approx(  # the drop in log-odds, outline minus control
        np.mean([log_odds(row["control_0"]) - log_odds(row["outline_0"]) for row in paired]), abs=1e-3)
    assert sum(everything["answers_inside"].values()) == 3
