"""core.robustness and ``python -m core evaluate --perturbations``: a model's metrics under each degradation,
on real chest films, written into the model folder and its card."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from core.cli import main
from core.model import load_model
from core.perturb import EVALUATION, label
from core.robustness import ROBUSTNESS_FILE, display_grey, markdown, robustness_table, tensor_of_grey

pytestmark = pytest.mark.slow


@pytest.fixture
def run_copy(tiny_run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(tiny_run[0], folder)
    return folder


def test_the_grey_image_path_reproduces_the_pipeline(tiny_run, chest_dir):
    """Degrading nothing must give the very tensor the model gets for the file."""
    from core.io import load_scan

    loaded = load_model(tiny_run[0])
    path = sorted((chest_dir / "NORMAL").iterdir())[0]
    scan = load_scan(path.read_bytes(), path.name)
    assert np.allclose(tensor_of_grey(loaded.pipeline, display_grey(scan)), loaded.pipeline.scan_tensor(scan)[0],
                       atol=1e-5)


def test_the_table_has_a_clean_row_then_one_per_perturbation(tiny_run, chest_dir):
    from core import data as data_mod

    loaded = load_model(tiny_run[0])
    items = list(data_mod.list_for_spec(chest_dir, loaded.info, limit_per_class=3).items)
    table = robustness_table(loaded, items, perturbations=EVALUATION[:2])
    assert [r["perturbation"] for r in table["rows"]] == ["none", "blur sigma=2 px at 224", "blur sigma=4 px at 224"]
    for row in table["rows"]:
        assert row["n"] == 6 and 0 <= row["accuracy"] <= 1 and 0 <= row["positive_rate"] <= 1
    assert table["worst_auc"]["auc"] == min(r["auc"] for r in table["rows"])
    assert markdown(table).count("\n") == 2 + 2  # header, rule, three rows


def test_cli_writes_the_table_into_the_folder_and_the_card(run_copy, chest_dir, capsys):
    code = main(["evaluate", "--model", str(run_copy), "--data", str(chest_dir), "--perturbations", "--write",
                 "--limit-per-class", "2", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run_copy / ROBUSTNESS_FILE).read_text())
    assert len(saved["rows"]) == 1 + len(EVALUATION) and saved["rows"] == printed["rows"]
    assert "--perturbations --write" in saved["command"]
    card = (run_copy / "MODEL_CARD.md").read_text()
    assert "## Robustness: validation under realistic degradations" in card and "jpeg quality=10" in card


def test_write_without_perturbations_is_a_usage_error(run_copy, chest_dir, capsys):
    assert main(["evaluate", "--model", str(run_copy), "--data", str(chest_dir), "--write"]) == 2
    assert "--write only goes with --perturbations." in capsys.readouterr().err


def test_only_some_degradations_each_at_the_table_strengths(run_copy, chest_dir, capsys):
    """``--only blur,jpeg`` scores the clean images and those two degradations at every strength of the table,
    and the command saved beside the table says so; an unknown name, or --only without --perturbations, is
    refused with one sentence."""
    code = main(["evaluate", "--model", str(run_copy), "--data", str(chest_dir), "--perturbations", "--write",
                 "--limit-per-class", "2", "--only", "jpeg, blur", "--json"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    expected = [label(name, strength) for name, strength in EVALUATION if name in ("blur", "jpeg")]
    assert [row["perturbation"] for row in printed["rows"]] == ["none", *expected]
    saved = json.loads((run_copy / ROBUSTNESS_FILE).read_text())
    assert saved["command"].endswith("--only blur,jpeg")
    assert main(["evaluate", "--model", str(run_copy), "--data", str(chest_dir), "--perturbations",
                 "--only", "blur,fog"]) == 2
    assert "--only takes degradations among blur, contrast, crop_scale, gamma, jpeg, noise, sharpen, not fog." \
        in capsys.readouterr().err
    assert main(["evaluate", "--model", str(run_copy), "--data", str(chest_dir), "--only", "blur"]) == 2
    assert "--only only goes with --perturbations." in capsys.readouterr().err
