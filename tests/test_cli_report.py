"""``python -m core report``: a real DICOM radiograph, a real CT slice with identifiers and an outlined brain
slice through the real default models; the PDF rendered by poppler (``pdftoppm``) and read back
(``pdftotext``), the PNG slide opened with Pillow. The privacy check of ``tests/test_privacy.py``
extended to the report: no identifier of the DICOM header in the PDF, the PNG, stdout or stderr unless
``--identifiers`` is given, and nothing written but the report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from PIL import Image

from conftest import REPO, dicom_path
from page_support import is_one_sentence

pytestmark = pytest.mark.slow

needs_poppler = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils is not installed")
BRAIN = REPO / "assets" / "samples" / "brain_mri"


def identifier_values(name: str) -> set[str]:
    """The distinctive identifier values of a pydicom test file (the rule of tests/test_privacy.py)."""
    import test_privacy

    return test_privacy.identifier_values(name)


def run(argv, capfd) -> tuple[int, str, str]:
    from core.cli import main

    code = main(argv)
    out, err = capfd.readouterr()
    return code, out, err


def pdf_text(path: Path) -> str:
    """The PDF's text in reading order, each run of white space (table cells wrap) one space."""
    text = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout
    return " ".join(text.split())


def pdf_pages(path: Path, tmp_path: Path) -> list[Path]:
    subprocess.run(["pdftoppm", "-r", "50", "-png", str(path), str(tmp_path / "page")], check=True)
    return sorted(tmp_path.glob("page-*.png"))


@needs_poppler
def test_report_of_a_dicom_radiograph_renders_every_part(models_root, tmp_path, capfd):
    out = tmp_path / "report.pdf"
    code, stdout, stderr = run(["report", str(dicom_path("RG1_UNCI.dcm")), "--model", str(models_root / "chest_xray"),
                                "--out", str(out), "--method", "gradcam++", "--png"], capfd)
    assert code == 0, stderr
    assert stdout.strip() == f"wrote {out} and {out.with_suffix('.png')}"
    assert "Computing Faster Score-CAM…" in stderr and "Report ready." in stderr  # progress, on stderr
    pages = pdf_pages(out, tmp_path)
    assert len(pages) == 2
    for page in pages:
        with Image.open(page) as picture:
            assert abs(picture.height / picture.width - 297 / 210) < 0.01  # A4 portrait
    text = pdf_text(out)
    info = json.loads((models_root / "chest_xray" / "model.json").read_text())
    for words in (info["title"], "Research and teaching tool", "not a diagnostic device", "Prediction", "NORMAL",
                  "PNEUMONIA", "Decision:", "Grad-CAM++ overlay", "window centre 15000, width 30000",
                  "inverted (MONOCHROME1", "The methods side by side", "Faster Score-CAM", "SmoothGrad",
                  "Faithfulness", "Uncertainty", "Sanity check", "not run for this report",
                  "The model (from its model card)", "Intended use", "Limits", info["sha256"], "tensorflow",
                  "fpdf2", date.today().isoformat(), "Page 1 of 2"):
        assert words in text, words
    assert info["limits"][0][:40] in text
    with Image.open(out.with_suffix(".png")) as slide:
        assert slide.size == (1920, 1080) and slide.mode == "RGB"
    leaked = [v for v in identifier_values("RG1_UNCI.dcm") if v in text or v.encode() in out.read_bytes()
              or v in stdout + stderr]
    assert leaked == []


@needs_poppler
def test_identifiers_are_printed_only_when_asked_for(models_root, tmp_path, capfd):
    scan, model = str(dicom_path("CT_small.dcm")), str(models_root / "chest_xray")
    values = identifier_values("CT_small.dcm")
    plain, named = tmp_path / "plain.pdf", tmp_path / "named.pdf"
    assert run(["report", scan, "--model", model, "--out", str(plain), "--png"], capfd)[0] == 0
    assert run(["report", scan, "--model", model, "--out", str(named), "--identifiers"], capfd)[0] == 0
    plain_text, named_text = pdf_text(plain), pdf_text(named)
    assert [v for v in values if v in plain_text or v.encode() in plain.read_bytes()] == []
    assert "Patient identifiers, printed at the user's request" in named_text
    assert "CompressedSamples^CT1" in named_text
    with Image.open(plain.with_suffix(".png")) as slide:
        assert slide.size == (1920, 1080)


@needs_poppler
def test_outline_scores_and_the_sanity_check(models_root, tmp_path, capfd):
    out = tmp_path / "brain.pdf"
    code, _, stderr = run(["report", str(BRAIN / "glioma_2334.jpg"), "--model", str(models_root / "brain_mri"),
                           "--out", str(out), "--mask", str(BRAIN / "glioma_2334_outline.png"), "--sanity",
                           "--true-label", "glioma"], capfd)
    assert code == 0, stderr
    text = pdf_text(out)
    for words in ("Against the expert outline", "Pointing game", "Energy", "Rank accuracy",
                  "Pixel AUROC", "centre baseline", "True label: glioma", "with every layer randomised",
                  "Without the finding", "with the outline filled in", "a region of the same shape elsewhere"):
        assert words in text, words
    assert "not run for this report" not in text
    assert "0.49 x 0.49" not in text  # a JPEG states no spacing and the CLI is given none: pixels, said so
    assert "pixel spacing unknown" in text
    assert "Where this model's maps point" not in text  # the outline scores this map itself


@needs_poppler
def test_a_report_without_an_outline_carries_the_models_measured_map_record(models_root, tmp_path, capfd):
    """A fracture film with no outline: the report says, beside the prediction, how often the model's Grad-CAM
    landed on the experts' outlines where it was measured (the record in its folder)."""
    from core.runs import read_localisation, record_sentence

    said = record_sentence(read_localisation(models_root / "fracture"))
    out = tmp_path / "fracture.pdf"
    code, _, stderr = run(["report", str(REPO / "assets" / "samples" / "fracture" / "not_fractured_IMG0000013.jpg"),
                           "--model", str(models_root / "fracture"), "--out", str(out)], capfd)
    assert code == 0, stderr
    text = pdf_text(out)
    if said is None:
        assert "Where this model's maps point" not in text
        return
    assert " ".join(said[1].replace("`", "").split()) in text
    if said[0]:
        assert "No better than the blob" in text


def test_bad_inputs_give_one_sentence_and_the_exit_code(models_root, tmp_path, capfd):
    model = str(models_root / "chest_xray")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not a scan at all\n")
    film = str(REPO / "assets" / "samples" / "chest_xray" / "IM-0206-0001.jpeg")
    cases = [
        (["report", str(text_file), "--model", model, "--out", str(tmp_path / "r.pdf")], 1, "notes.txt cannot be used"),
        (["report", str(tmp_path / "missing.dcm"), "--model", model, "--out", str(tmp_path / "r.pdf")], 1,
         "does not exist"),
        (["report", film, "--model", model, "--out", str(tmp_path / "r.txt")], 2, ".pdf or .png"),
        (["report", film, "--model", str(tmp_path), "--out", str(tmp_path / "r.pdf")], 2, "not a model folder"),
        (["report", film, "--model", model, "--out", str(tmp_path / "no" / "r.pdf")], 2, "does not exist"),
        (["report", film, "--model", model, "--out", str(tmp_path / "r.pdf"), "--explain-class", "COVID"], 2,
         "must be one of NORMAL, PNEUMONIA"),
        (["report", film, "--model", model, "--out", str(tmp_path / "r.pdf"), "--mask", str(text_file)], 1,
         "the outline notes.txt cannot be used"),
    ]
    for argv, expected, words in cases:
        code, stdout, stderr = run(argv, capfd)
        assert code == expected, (argv, stderr)
        line = stderr.strip().splitlines()[-1]
        assert line.startswith("error: ") and words in line, line
        assert line.endswith(".") and "\n" not in line, line
        assert "Traceback" not in stderr and stdout == ""
    with pytest.raises(SystemExit) as exit_:
        run(["report", film, "--model", model, "--out", str(tmp_path / "r.pdf"), "--method", "occlusion"], capfd)
    assert exit_.value.code == 2
    assert not (tmp_path / "r.pdf").exists()


@needs_poppler
def test_as_a_separate_process_only_the_report_is_written(models_root, tmp_path):
    folders = {name: tmp_path / name for name in ("home", "cwd", "tmp", "out")}
    for folder in folders.values():
        folder.mkdir()
    env = dict(os.environ, HOME=str(folders["home"]), TMPDIR=str(folders["tmp"]), PYTHONPATH=str(REPO),
               PYTHONDONTWRITEBYTECODE="1", TF_CPP_MIN_LOG_LEVEL="0")
    out = folders["out"] / "ct.pdf"
    result = subprocess.run([sys.executable, "-m", "core", "report", str(dicom_path("CT_small.dcm")), "--model",
                             str(models_root / "chest_xray"), "--out", str(out)],
                            cwd=folders["cwd"], env=env, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    assert sorted(p.name for p in folders["out"].iterdir()) == ["ct.pdf"]
    assert list(folders["cwd"].iterdir()) == []
    assert all(p.name.startswith("__autograph_generated_file") for p in folders["tmp"].rglob("*") if p.is_file())
    assert all(p.name == "keras.json" for p in folders["home"].rglob("*") if p.is_file())
    outputs = result.stdout + result.stderr + pdf_text(out).encode()
    assert [v for v in identifier_values("CT_small.dcm") if v.encode() in outputs or v.encode() in out.read_bytes()] == []
