"""scripts/part_threshold_check.py: a threshold per body part against one threshold, on made-up scores where the
answer is known, and on the committed fracture model's real validation films."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_per_part_thresholds_win_where_parts_differ_and_keep_the_specificity():
    """Hands score high whatever the truth, legs low: one threshold sacrifices the leg fractures; a threshold per
    part finds them at the same specificity, in-sample and cross-validated."""
    import part_threshold_check as check

    rng = np.random.default_rng(0)
    parts = np.array(["hand"] * 200 + ["leg"] * 200)
    fractured = np.array(([True] * 40 + [False] * 160) * 2)
    p = np.where(parts == "hand", 0.5, 0.0) + np.where(fractured, 0.3, 0.0) + rng.uniform(0, 0.25, 400)
    result = check.part_threshold_check(p, fractured, parts, saved=0.55, folds=5)
    assert abs(result["in_sample"]["per body part"]["specificity"] - result["specificity"]) < 0.02
    one, each = result["cross_validated"]["one threshold"], result["cross_validated"]["per body part"]
    assert each["sensitivity"] > one["sensitivity"] + 0.3
    change, low, high = result["sensitivity_change_cross_validated"]
    assert low > 0 and abs(change - (each["sensitivity"] - one["sensitivity"])) < 1e-9
    bound = result["in_sample"]["per body part, best split of the false alarms (upper bound)"]["sensitivity"]
    assert bound >= result["in_sample"]["per body part"]["sensitivity"] - 1e-9
    assert result["films"] == {"hand": {"fractured": 40, "intact": 160}, "leg": {"fractured": 40, "intact": 160}}


def test_a_part_with_too_few_intact_films_keeps_the_one_threshold():
    import part_threshold_check as check

    p = np.array([0.9, 0.2, 0.1, 0.3, 0.8, 0.05])
    fractured = np.array([True, False, False, False, True, False])
    parts = np.array(["leg", "leg", "leg", "leg", "hip", "hip"])
    overall, per_part = check.thresholds(p, fractured, parts, 0.75)
    assert per_part["hip"] == overall  # one intact hip film: not enough to choose on


def test_on_the_committed_fracture_model_a_threshold_per_part_finds_no_more_fractures(data_dir, capsys):
    """The measured answer for the shipped default (README, EXPLANATIONS): at the saved threshold's specificity,
    per-part thresholds find fewer fractures cross-validated, and even the best in-sample split stays far from
    the issue's 0.85."""
    import part_threshold_check as check

    folder = ROOT / "assets" / "models" / "fracture"
    code = check.main([str(folder), "--data", str(data_dir / "fracatlas" / "images"), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    meta = json.loads((folder / "metrics.json").read_text())
    assert abs(result["in_sample"]["one threshold"]["sensitivity"] - meta["sensitivity"]) < 0.02
    assert abs(result["specificity"] - meta["specificity"]) < 0.01
    assert sum(v["fractured"] + v["intact"] for v in result["films"].values()) == meta["n"]
    one, each = result["cross_validated"]["one threshold"], result["cross_validated"]["per body part"]
    assert each["sensitivity"] <= one["sensitivity"]
    assert result["in_sample"]["per body part, best split of the false alarms (upper bound)"]["sensitivity"] < 0.85


def test_bad_arguments_are_one_sentence(capsys):
    import part_threshold_check as check

    assert check.main([str(ROOT / "assets" / "models" / "brain_mri"), "--folds", "1"]) == 2
    assert capsys.readouterr().err.strip() == "--folds needs at least 2 folds."
    assert check.main([str(ROOT / "assets" / "models" / "brain_mri")]) == 2
    assert "has no 'fractured' class" in capsys.readouterr().err
