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
    assert code == 1 and err.startswith("error: ") and err.strip().endswith(".") and "Traceback" not in err


def test_evaluation_error_names_the_folder(loaded, tmp_path):
    from PIL import Image

    for cls in ("NORMAL", "PNEUMONIA"):
        (tmp_path / cls).mkdir()
    Image.new("L", (40, 40), 10).save(tmp_path / "NORMAL" / "a.png")
    with pytest.raises(EvaluationError, match=f"No image in {tmp_path} could be scored"):
        evaluate_explanations(loaded, tmp_path, limit=0, sanity_limit=0, log=lambda *_: None)


# ----------------------------------------------------------------------------- expert outlines (--masks)

@pytest.fixture(scope="module")
def brain_model():
    from conftest import REPO

    folder = REPO / "assets" / "models" / "brain_mri"
    if not (folder / "model.keras").is_file():
        pytest.skip("the committed brain model is missing")
    return load_model(folder)


def outlined_folder(data_dir, tmp_path):
    """A small mirrored images/masks layout: real outlined brain slices, plus every kind of bad mask."""
    import numpy as np
    from PIL import Image

    source = data_dir / "brain_mri_masks"
    names = ["209", "210", "717", "718"]
    for sub in ("images/glioma", "masks/glioma"):
        (tmp_path / sub).mkdir(parents=True)
    for name in names:
        shutil.copy(source / "images" / "glioma" / f"{name}.jpg", tmp_path / "images" / "glioma" / f"{name}.jpg")
    shutil.copy(source / "masks" / "glioma" / "209.png", tmp_path / "masks" / "glioma" / "209.png")
    shutil.copy(source / "masks" / "glioma" / "210.png", tmp_path / "masks" / "glioma" / "210.png")
    Image.new("L", (100, 80), 255).save(tmp_path / "masks" / "glioma" / "717.png")  # another size
    grey = (np.random.default_rng(0).random((512, 512)) * 255).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "masks" / "glioma" / "718.png")  # not black and white
    Image.new("L", (512, 512), 255).save(tmp_path / "masks" / "glioma" / "999.png")  # a mask without its image
    (tmp_path / "images" / "glioma" / "1000.jpg").write_bytes(
        (source / "images" / "glioma" / "209.jpg").read_bytes())  # an image without its mask
    return tmp_path


def test_localisation_on_real_outlines_scores_and_skips_with_reasons(brain_model, data_dir, tmp_path):
    from core.evaluation import evaluate_localisation

    root = outlined_folder(data_dir, tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    report = evaluate_localisation(brain_model, root / "images", root / "masks", limit=10, spacing=(0.49, 0.49),
                                   n_resamples=200, log=lambda *_: None)
    assert report["n_images"] == 2 and report["skipped"] == 4
    reasons = " ".join(report["skipped_reasons"])
    for words in ("100 x 80", "exactly two", "No image for this mask", "No mask for this image"):
        assert words in reasons, words
    assert report["layers"][0] == brain_model.last_conv and len(report["layers"]) == 2
    methods = {(g["method"], g["layer"]) for g in report["groups"] if g["class"] == "all"}
    assert ("gradcam", brain_model.last_conv) in methods and ("baseline:centre", None) in methods
    assert any("4 files were skipped" in note for note in report["notes"])
    assert any("within 7 mm" in note for note in report["notes"])
    # how far each peak lies from the outline, a median in mm (the spacing is given), beside every score
    for group in report["groups"]:
        distance = group["peak_distance"]
        # (a flat map, all zero at an early layer, has no peak: no distance, while its pointing game is 0)
        assert distance["unit"] == "mm" and 1 <= distance["n"] <= group["n"] and distance["median"] >= 0
        if group["metrics"]["pointing_game"]["mean"] == 1.0:  # every peak within 7 mm: so is the median
            assert distance["median"] <= 7.0
        if group["metrics"]["pointing_game"]["mean"] == 0.0:
            assert distance["median"] > 7.0
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written beside the files
    # the ablation: both slices with the outline filled in and a control region, P(glioma) for each version
    (overall, glioma) = report["ablation"]["groups"]
    assert overall["n"] == glioma["n"] == 2 and glioma["n_control"] == 2
    for version in ("intact", "outline", "control"):
        assert 0.0 <= glioma["probability"][version]["mean"] <= 1.0
        assert glioma["accuracy"][version] in (0.0, 0.5, 1.0)
    assert any("found on 2 of 2 images" in note for note in report["notes"])


def test_localisation_cli_json_and_nothing_to_score(brain_model, data_dir, tmp_path, capsys):
    root = outlined_folder(data_dir, tmp_path)
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(root / "images"), "--masks",
                 str(root / "masks"), "--limit", "2", "--spacing", "0.49", "--layers", "last_conv", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)
    assert report["layers"] == ["last_conv"] and report["n_images"] == 2 and report["map_score"] == "logit"
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(root / "images"), "--masks",
                 str(root / "masks"), "--limit", "2", "--spacing", "0.49", "--layers", "last_conv", "--json",
                 "--score", "log-odds"])
    odds = json.loads(capsys.readouterr().out)
    assert code == 0 and odds["map_score"] == "log-odds" and odds["n_images"] == 2
    assert any("log-odds" in note for note in odds["notes"]) and not any("log-odds" in n for n in report["notes"])
    empty = tmp_path / "nothing"
    (empty / "images" / "glioma").mkdir(parents=True)
    (empty / "masks" / "glioma").mkdir(parents=True)
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(empty / "images"),
                 "--masks", str(empty / "masks")])
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]  # progress goes to stderr first
    assert code == 1 and last.startswith("error: No outlined image") and "Traceback" not in err


def test_localisation_of_chosen_methods_keeps_every_baseline(brain_model, data_dir, tmp_path, capsys):
    """``explain-eval --masks ... --methods gradcam``: Grad-CAM on each layer and the three baselines, no other
    method; an unknown method, or --methods without --masks, is refused with one sentence."""
    root = outlined_folder(data_dir, tmp_path)
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(root / "images"), "--masks",
                 str(root / "masks"), "--limit", "2", "--spacing", "0.49", "--methods", "gradcam", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    methods = {g["method"] for g in report["groups"] if g["class"] == "all"}
    assert methods == {"gradcam", "baseline:centre", "baseline:intensity", "baseline:random"}
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(root / "images"), "--masks",
                 str(root / "masks"), "--methods", "gradcam,occlusion"])
    assert code == 1 and capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: --methods takes methods among gradcam, gradcam++, scorecam, layercam, smoothgrad, not occlusion.")
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(root / "images"),
                 "--methods", "gradcam"])
    assert code == 2 and "--methods goes with --masks" in capsys.readouterr().err


def test_localisation_cli_on_the_real_outlined_folder_with_a_subset(brain_model, data_dir, capsys):
    """The documented command on the shared folder itself: --where picks the subset from its index.csv."""
    source = data_dir / "brain_mri_masks"
    if not (source / "index.csv").is_file():
        pytest.skip("the outlined brain slices are missing")
    code = main(["explain-eval", "--model", str(brain_model.path), "--data", str(source / "images"),
                 "--masks", str(source / "masks"), "--spacing", "0.49", "--where", "subset=unseen",
                 "--limit", "2", "--layers", "last_conv", "--markdown"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    out = captured.out
    assert "subset = unseen" in out and "2 outlined images" in out and "within 7 mm" in out
    assert "| gradcam | last_conv | all |" in out
    for baseline in ("centre", "intensity", "random"):
        assert f"| baseline:{baseline} | - | all |" in out, baseline  # its own row of scores
        assert f"| gradcam | last_conv | all | baseline:{baseline} |" in out, baseline  # and the paired difference


def test_the_tolerance_note_names_every_spacing_of_a_mixed_run():
    """The note used to describe the first image's tolerance only, wrong for a run of mixed spacings."""
    from collections import Counter

    from core.evaluation import tolerance_note
    from core.localisation import pointing_tolerance

    figshare = pointing_tolerance((512, 512), spacing=(0.49, 0.49))
    assert tolerance_note(Counter({figshare: 3})) == figshare.describe()
    mixed = tolerance_note(Counter({figshare: 3, pointing_tolerance((256, 256), spacing=(0.9, 0.9)): 1,
                                    pointing_tolerance((300, 400)): 2}))
    assert "3 images: a hit is the map's peak on the outline or within 7 mm of it (14.3 x 14.3 pixels" in mixed
    assert "1 image: a hit is the map's peak on the outline or within 7 mm of it (7.8 x 7.8 pixels" in mixed
    assert "2 images: a hit is the map's peak on the outline or within 10.0 pixels" in mixed
    assert mixed.startswith("The tolerance differs between the images") and mixed.endswith(").")
