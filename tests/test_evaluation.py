"""core.evaluation (``python -m core explain-eval``): the folder given is what gets scored."""

from __future__ import annotations

import json
import shutil

import pytest

from core.cli import main
from core.evaluation import EvaluationError, evaluate_explanations, evaluation_items
from core.model import load_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run[0])


def copy_of(chest_dir, names, folder):
    """A class-folder dataset holding copies of real chest images (another folder than the training data)."""
    for cls, files in names.items():
        (folder / cls).mkdir(parents=True)
        for name in files:
            shutil.copy(chest_dir / cls / name, folder / cls / name)
    return folder


def test_the_models_own_training_data_is_restricted_to_its_validation_split(loaded, chest_dir):
    validation = set(json.loads((loaded.path / "split.json").read_text())["validation"])
    items, subset = evaluation_items(loaded, chest_dir, limit=50)
    assert items and {f"{loaded.class_names[i.label]}/{i.path.name}" for i in items} <= validation
    assert "the model's own validation split" in subset


def test_any_other_folder_is_evaluated_whole(loaded, chest_dir, tmp_path):
    """Defect 1 of issue 10: a folder of other images used to give "images": 0 and exit 0."""
    names = {cls: sorted(p.name for p in (chest_dir / cls).iterdir())[-3:] for cls in ("NORMAL", "PNEUMONIA")}
    folder = copy_of(chest_dir, names, tmp_path / "external")
    items, subset = evaluation_items(loaded, folder, limit=20)
    assert sorted(i.path.name for i in items) == sorted(n for files in names.values() for n in files)
    assert subset == f"all 6 images of {folder}"
    report = evaluate_explanations(loaded, folder, limit=2, sanity_limit=0, log=lambda *_: None)
    assert report["images"] == 2 and report["subset"] == subset


def test_a_folder_with_nothing_to_score_exits_one_with_a_sentence(tiny_run, tmp_path, capsys):
    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / "empty" / cls).mkdir(parents=True)
        (tmp_path / "empty" / cls / "notes.txt").write_text("no images here")
    code = main(["explain-eval", "--model", str(tiny_run[0]), "--data", str(tmp_path / "empty"), "--json"])
    err = capsys.readouterr().err
    assert code in (1, 2) and err.startswith("error: ") and err.strip().endswith(".") and "Traceback" not in err


def test_evaluation_error_names_the_folder(loaded, tmp_path):
    from PIL import Image

    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / cls).mkdir()
    Image.new("L", (40, 40), 10).save(tmp_path / "NORMAL" / "a.png")
    with pytest.raises(EvaluationError, match=f"No image in {tmp_path} could be scored"):
        evaluate_explanations(loaded, tmp_path, limit=0, sanity_limit=0, log=lambda *_: None)
