"""core.cli: ``python -m core predict|evaluate`` as a user runs it, on the session's tiny model.

Subprocesses check what a user sees (exit codes, JSON lines, no traceback); the error paths
that need no new process call :func:`core.cli.main` in this one, which already holds TensorFlow.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO, dicom_path
from core.cli import main
from core.model import MODEL_FILE

pytestmark = pytest.mark.slow


def run_cli(*args: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), **env_vars)
    env = {k: v for k, v in env.items() if v is not None}  # None: the variable unset
    result = subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


@pytest.fixture(scope="module")
def model_dir(tiny_run):
    return tiny_run[0]


def test_predict_json_reports_each_input(model_dir, fullres_dir, tmp_path):
    noise = tmp_path / "noise.dcm"
    noise.write_bytes(os.urandom(4096))
    inputs = [
        fullres_dir / "PNEUMONIA" / "person276_virus_569.jpeg",
        dicom_path("emri_small.dcm"),
        noise,
        tmp_path / "missing.png",
        dicom_path("MR_truncated.dcm"),
    ]
    result = run_cli("predict", "--model", model_dir, "--json", *inputs)
    assert result.returncode == 1  # some inputs could not be used
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(p) for p in inputs]
    assert [r["ok"] for r in records] == [True, True, False, False, False]
    for record in records[:2]:
        assert set(record["probabilities"]) == {"NORMAL", "PNEUMONIA"}
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert record["predicted"] in ("NORMAL", "PNEUMONIA")
    for record in records[2:]:
        error = record["error"]
        assert "probabilities" not in record
        assert error[0].isupper() and error.endswith(".") and "\n" not in error
    assert "does not match its .dcm name" in records[2]["error"]
    assert records[3]["error"] == "The file does not exist."
    assert "truncated" in records[4]["error"]


def test_predict_all_good_exits_zero(model_dir, fullres_dir):
    image = fullres_dir / "NORMAL" / "IM-0206-0001.jpeg"
    dicom = dicom_path("emri_small.dcm")
    result = run_cli("predict", "--model", model_dir, "--frame", "0", image, dicom)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if not line.startswith("  warning: ")]
    assert len(lines) == 2
    assert lines[0].startswith(f"{image}: ") and "NORMAL 0." in lines[0] and "PNEUMONIA 0." in lines[0]


def test_usage_errors_exit_two(model_dir, tmp_path):
    missing_model = run_cli("predict", "some.png")
    assert missing_model.returncode == 2 and "--model" in missing_model.stderr
    no_folder = run_cli("predict", "--model", tmp_path / "no_such_model", "some.png")
    assert no_folder.returncode == 2
    assert no_folder.stdout == ""
    assert "error: " in no_folder.stderr and "is not a model folder" in no_folder.stderr


def test_evaluate_json_on_a_small_dataset(model_dir, chest_dir):
    result = run_cli("evaluate", "--model", model_dir, "--data", chest_dir, "--limit-per-class", "5", "--json")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert metrics["n"] == 10 and metrics["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert sum(map(sum, metrics["confusion_matrix"])) == 10
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["auc"] is not None


def test_frame_out_of_range_is_a_bad_input(model_dir, capsys):
    assert main(["predict", "--model", str(model_dir), "--json", "--frame", "99", str(dicom_path("emri_small.dcm"))]) == 1
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is False and record["error"] == "Frame 99 does not exist; this scan has 10 frame(s)."


def test_tampered_model_is_bad_usage(model_dir, tmp_path, capsys):
    folder = shutil.copytree(model_dir, tmp_path / "tampered")
    with open(folder / MODEL_FILE, "ab") as fh:
        fh.write(b"\0")
    assert main(["predict", "--model", str(folder), "x.png"]) == 2
    assert "SHA-256" in capsys.readouterr().err


def test_evaluate_refuses_unusable_datasets_in_one_line(model_dir, chest_dir, tmp_path, capsys):
    one_class = tmp_path / "one_class"
    (one_class / "NORMAL").mkdir(parents=True)
    (one_class / "NORMAL" / "IM-0115-0001.jpeg").symlink_to(chest_dir / "NORMAL" / "IM-0115-0001.jpeg")
    assert main(["evaluate", "--model", str(model_dir), "--data", str(one_class)]) == 2
    assert capsys.readouterr().err.strip() == f"error: The dataset folder {one_class} has no class folder PNEUMONIA."

    (one_class / "PNEUMONIA").mkdir()
    broken = one_class / "PNEUMONIA" / "person1_virus_1.jpeg"
    broken.write_bytes((chest_dir / "PNEUMONIA" / "person1000_bacteria_2931.jpeg").read_bytes()[:3000])
    assert main(["evaluate", "--model", str(model_dir), "--data", str(one_class), "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.strip() == f"error: {broken}: This image file is damaged or truncated and cannot be decoded; save or download it again."


def test_tensorflow_start_up_lines_are_silent_unless_verbose(model_dir, fullres_dir):
    """Defect 4 of issue 10: every call printed absl and oneDNN lines on stderr. TensorFlow turns oneDNN on by
    itself only on processors with AVX-512 neural-network instructions, so it is asked to here and always has its line to print."""
    image = str(sorted((fullres_dir / "NORMAL").glob("*.jpeg"))[0])
    quiet = run_cli("predict", "--model", model_dir, "--json", image, TF_ENABLE_ONEDNN_OPTS="1")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    loud = run_cli("--verbose", "predict", "--model", model_dir, "--json", image, TF_ENABLE_ONEDNN_OPTS="1")
    assert loud.returncode == 0 and "oneDNN" in loud.stderr
    assert json.loads(loud.stdout) == json.loads(quiet.stdout)


@pytest.mark.parametrize("asked", [None, "0"])
def test_training_asks_for_onednn_unless_the_user_said_otherwise(chest_dir, tmp_path, asked):
    """TensorFlow turns oneDNN on by itself only with AVX-512; ``train`` asks for it (a training step 1.6
    to 1.7 times faster on an AVX2-only machine, BENCHMARKS.md section 8) and TensorFlow's own verbose line
    says it is on; a user's ``TF_ENABLE_ONEDNN_OPTS=0`` is kept."""
    done = run_cli("--verbose", "train", "--task", "chest_xray", "--data", chest_dir, "--out", tmp_path / "run",
                   "--input-size", "32", "--width", "8", "--limit-per-class", "6", "--epochs", "1",
                   "--batch-size", "8", TF_ENABLE_ONEDNN_OPTS=asked)
    assert done.returncode == 0, done.stderr
    assert ("oneDNN custom operations are on" in done.stderr) == (asked is None), done.stderr


def test_out_of_range_is_reported_and_still_exits_zero(data_dir):
    """The committed chest model (with its outlier check): a brain MRI JPEG is out of range, a film of the
    model's own validation split is not; both are predicted (exit 0), and the plain output leads with the
    out-of-range sentence before the probabilities."""
    chest = REPO / "assets" / "models" / "chest_xray"
    info = json.loads((chest / "model.json").read_text()) if (chest / "model.json").is_file() else {}
    if not info.get("ood"):
        pytest.skip("the committed chest model has no outlier check")
    brain = sorted((data_dir / "brain_mri" / "Training" / "glioma").glob("*.jpg"))[0]
    film = data_dir / "chest_xray" / "train" / json.loads((chest / "split.json").read_text())["validation"][0]
    result = run_cli("predict", "--model", chest, "--json", brain, film)
    assert result.returncode == 0, result.stderr
    by_file = {r["file"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert by_file[str(brain)]["ok"] is True and by_file[str(brain)]["out_of_range"] is True
    assert "looks unlike the images" in by_file[str(brain)]["warnings"][-1]
    assert by_file[str(film)]["ok"] is True and by_file[str(film)]["out_of_range"] is False

    plain = run_cli("predict", "--model", chest, brain)
    assert plain.returncode == 0
    first, second = plain.stdout.splitlines()[:2]
    assert first.startswith(f"{brain}: This image looks unlike the images") and "NORMAL" not in first
    assert "NORMAL 0." in second and "PNEUMONIA " in second

    usage = run_cli("predict", "--help")
    assert "out_of_range true" in usage.stdout and "still exits 0" in usage.stdout
