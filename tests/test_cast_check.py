"""scripts/cast_check.py and its labels: casts, splints and worn metal on the fracture validation films, looked at."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
FOLDER = ROOT / "assets" / "models" / "fracture"


def test_every_validation_film_of_the_default_was_looked_at_and_the_counts_are_the_ones_documented(data_dir):
    """The labels cover the default's validation split film for film (a film left out would be counted as seen
    without a cast), name only existing images, and hold what assets/labels/README.md says they hold."""
    import cast_check

    labels = cast_check.read_labels()
    validation = json.loads((FOLDER / "split.json").read_text())["validation"]
    assert set(labels) == set(validation) and len(labels) == 460
    assert all((data_dir / "fracatlas" / "images" / key).is_file() for key in labels)
    assert all(row["cast_or_splint"] in "01" and row["worn_metal"] in "01" for row in labels.values())
    casts = [k for k, row in labels.items() if row["cast_or_splint"] == "1"]
    worn = [k for k, row in labels.items() if row["worn_metal"] == "1"]
    assert len(casts) == 13 and all(k.startswith("fractured/") for k in casts)
    assert len(worn) == 34 and sum(k.startswith("not_fractured/") for k in worn) == 33
    readme = (ROOT / "assets" / "labels" / "README.md").read_text()
    assert "(1 on 13 films)" in readme and "(1 on 34 films)" in readme


def test_the_auc_interval_brackets_the_auc_and_is_reproducible():
    import cast_check

    rng = np.random.default_rng(0)
    positive, negative = rng.normal(1.0, 1.0, 40), rng.normal(0.0, 1.0, 60)
    auc, low, high = cast_check.auc_interval(positive, negative, n_resamples=300)
    assert low < auc < high and 0.6 < auc < 0.9
    assert cast_check.auc_interval(positive, negative, n_resamples=300) == (auc, low, high)


@pytest.mark.slow
def test_the_command_scores_each_subgroup_and_a_drawn_cast_with_the_models_own_decision(data_dir):
    """On the committed model and a handful of labelled films of each kind: each subgroup's share is the model's own
    decision on those films, and the drawn cast changes the intact films' P by what the rows say."""
    import cast_check
    from core import data as data_mod
    from core.model import load_model

    images = data_dir / "fracatlas" / "images"
    labels = cast_check.read_labels()
    pick = []
    for column, label in (("cast_or_splint", "fractured/"), ("worn_metal", "not_fractured/")):
        pick += [k for k, row in labels.items() if row[column] == "1" and k.startswith(label)][:3]
    pick += [k for k, row in labels.items() if row["cast_or_splint"] == row["worn_metal"] == "0"][:2]
    pick += [k for k, row in labels.items() if row["cast_or_splint"] == row["worn_metal"] == "0"][-2:]
    subset = {k: labels[k] for k in pick}
    scores = {}
    result = cast_check.cast_check(str(FOLDER), images, subset, scores=scores)
    assert result["labelled"] == len(pick) == 10 and result["validation"] == 460
    rows = result["rows"]
    late = [k for k in pick if k.startswith("not_fractured/") and cast_check.image_number(k) >= cast_check.LATE]
    assert list(rows) == [name for name, *_ in cast_check.GROUPS] + \
        (["intact films numbered 3500 and above"] if late else []) + ["intact films with a cast drawn"]
    index = data_mod.read_index(data_dir / "fracatlas" / "index.csv", ("hand",))
    hand_metal = [k for k in pick if k.startswith("not_fractured/") and subset[k]["worn_metal"] == "1"
                  and index[k]["hand"] == "1"]
    assert rows["intact hand films with worn metal"]["n"] == len(hand_metal) > 0
    assert rows["fractures in a cast or splint"]["n"] == 3 and rows["intact films with worn metal"]["n"] == 3
    loaded = load_model(str(FOLDER))
    casts = [k for k in pick if subset[k]["cast_or_splint"] == "1"]
    p = loaded.predict(np.stack([data_mod.prepare_image(images / k, loaded.pipeline) for k in casts]))[:, 1]
    assert rows["fractures in a cast or splint"]["called_fractured"] == pytest.approx(np.mean(p >= loaded.threshold))
    assert sorted(scores) == sorted(pick) and [scores[k] for k in casts] == pytest.approx(p, abs=1e-5)
    # a model compared with itself on the same films: no difference, and no width to the paired interval
    positive = [k for k in pick if k.startswith("fractured/")]
    negative = [k for k in pick if k.startswith("not_fractured/")]
    assert cast_check.paired_auc_difference(scores, scores, positive, negative, n_resamples=50) == [0.0, 0.0, 0.0]
    drawn = rows["intact films with a cast drawn"]
    assert drawn["n"] == sum(k.startswith("not_fractured/") for k in pick)
    low, high = drawn["mean_change"][1:]
    assert low <= drawn["mean_change"][0] <= high
    for row in rows.values():
        auc, low, high = row["auc"]
        assert 0 <= low <= auc <= high <= 1
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "cast_check.py"), "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "Casts, splints and worn metal" in out.stdout
