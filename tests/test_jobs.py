"""core.jobs: the training queue runs the project's own ``python -m core train`` (and ``calibrate``) as separate
processes, one at a time, and an uploaded zip of class folders is unpacked privately and safely.

Datasets are tiny real ones (8 chest radiographs per class from ``../shared/data``), copied into the test's
temporary folder or zipped in memory. Every training is real: a finished one is calibrated and passes the
registry's checks; a cancelled or failed one leaves no process, no staging folder and no dataset copy.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tempfile
import time
import zipfile
from pathlib import Path

import psutil
import pytest

from core.jobs import FINAL, STAGING, UPLOADED_DATASET, JobError, JobQueue, check_dataset, dataset_from_zip
from core.registry import check_folder
from page_support import is_one_sentence

PER_CLASS = 8
#: Small and fast: the page and browser tests train with the page's own defaults instead.
OPTIONS = {"width": 8, "batch_size": 16}
TRAINING_SECONDS = 900  # a shared 2-core machine: TensorFlow's import alone can take half a minute


def chest_files(chest_dir, per_class=PER_CLASS) -> dict[str, list[Path]]:
    return {name: sorted((chest_dir / name).glob("*.jpeg"))[:per_class] for name in ("NORMAL", "PNEUMONIA")}


@pytest.fixture(scope="module")
def tiny_dataset(chest_dir, tmp_path_factory) -> Path:
    """A class-folder dataset of 8 real images per class."""
    root = tmp_path_factory.mktemp("tiny_dataset")
    for name, paths in chest_files(chest_dir).items():
        (root / name).mkdir()
        for path in paths:
            (root / name / path.name).write_bytes(path.read_bytes())
    return root


def zip_bytes(members: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def dataset_zip(chest_dir, top: str = "my_dataset/", per_class: int = PER_CLASS) -> bytes:
    members = {f"{top}{name}/{p.name}": p.read_bytes() for name, paths in chest_files(chest_dir, per_class).items()
               for p in paths}
    members[f"{top}README.txt"] = b"not an image"
    members["__MACOSX/._junk"] = b"resource fork"
    return zip_bytes(members)


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Where tempfile makes folders during the test, to see that nothing is left there."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


# ----------------------------------------------------------------------------- datasets

def test_a_zip_of_class_folders_is_unpacked_privately(chest_dir, private_tmp):
    folder = dataset_from_zip(dataset_zip(chest_dir))
    assert folder.parent == private_tmp
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert sorted(p.name for p in folder.iterdir()) == ["NORMAL", "PNEUMONIA"]  # top folder and README dropped
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert len(files) == 2 * PER_CLASS and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    assert check_dataset(folder) == {"NORMAL": PER_CLASS, "PNEUMONIA": PER_CLASS}
    original = chest_files(chest_dir)["NORMAL"][0]
    assert (folder / "NORMAL" / original.name).read_bytes() == original.read_bytes()


def bomb() -> bytes:
    return zip_bytes({"a/x.png": b"\0" * (20 << 20), "b/y.png": b"\0" * 10})


BAD_ZIPS = {
    "not a zip": (lambda c: b"GIF89a" + os.urandom(100), "not a zip archive"),
    "zip slip": (lambda c: zip_bytes({"a/x.png": b"1", "../../evil/y.png": b"2"}), "names files outside itself"),
    "zip bomb": (lambda c: bomb(), "decompression bomb"),
    "no class folders": (lambda c: zip_bytes({"x.png": b"1", "y.png": b"2"}), "no images in class folders"),
    "one class": (lambda c: zip_bytes({f"only/{i}.png": b"1" for i in range(5)}), "two or more class folders"),
    "too few images": (lambda c: dataset_zip(c, per_class=3), "at least 4 images"),
}


@pytest.mark.parametrize("case", list(BAD_ZIPS))
def test_a_bad_zip_is_one_sentence_and_leaves_nothing(chest_dir, private_tmp, case):
    make, expected = BAD_ZIPS[case]
    with pytest.raises(JobError) as caught:
        dataset_from_zip(make(chest_dir))
    assert expected in str(caught.value) and is_one_sentence(str(caught.value)), str(caught.value)
    assert "series" not in str(caught.value)
    assert list(private_tmp.iterdir()) == []


def test_size_limits_are_one_sentence(chest_dir, private_tmp):
    data = dataset_zip(chest_dir)
    with pytest.raises(JobError, match="more than the 5 a training takes"):
        dataset_from_zip(data, max_files=5)
    with pytest.raises(JobError, match="expands to more than 1000 bytes"):
        dataset_from_zip(data, max_bytes=1000)
    assert list(private_tmp.iterdir()) == []


def test_a_server_folder_is_checked_before_it_is_queued(tmp_path):
    with pytest.raises(JobError, match="does not exist on the server"):
        check_dataset(tmp_path / "missing")
    (tmp_path / "a").mkdir()
    for i in range(4):
        (tmp_path / "a" / f"{i}.png").write_bytes(b"1")
    with pytest.raises(JobError, match="two or more class folders"):
        check_dataset(tmp_path)
    (tmp_path / "b").mkdir()
    with pytest.raises(JobError, match="sub-folder without images"):
        check_dataset(tmp_path)
    (tmp_path / "b" / "0.png").write_bytes(b"1")
    with pytest.raises(JobError, match="b has fewer"):
        check_dataset(tmp_path)


# ----------------------------------------------------------------------------- the queue

def training_children() -> list[psutil.Process]:
    """This test process's children that run ``-m core``."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "core" in child.cmdline() and child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child)
        except psutil.Error:
            continue
    return found


def assert_nothing_left(out_root: Path, temp: Path | None = None) -> None:
    staging = out_root / STAGING
    assert not staging.exists() or list(staging.iterdir()) == [], list(staging.rglob("*"))
    if temp is not None:
        assert not temp.exists()
    assert training_children() == []


@pytest.mark.slow
def test_a_tiny_training_from_a_zip_finishes_calibrated_and_a_queued_one_waits(tiny_dataset, chest_dir, tmp_path,
                                                                              private_tmp):
    queue = JobQueue()
    out_root = tmp_path / "my-models"
    temp = dataset_from_zip(dataset_zip(chest_dir))
    first = queue.submit(data=temp, title="Tiny chest", out_root=out_root, epochs=1, input_size=32, owner="me",
                         temp_dir=temp, options=OPTIONS)
    assert queue.wait(first.id, timeout=30, states=("running", "calibrating", *FINAL)).state == "running"
    second = queue.submit(data=tiny_dataset, title="Tiny chest", out_root=out_root, epochs=1, input_size=32,
                          owner="me", options=OPTIONS)
    assert second.name != first.name  # the first one's folder name is reserved
    waiting = queue.view(second.id)
    assert waiting.state == "queued" and waiting.position == 1 and queue.waiting() == 1
    assert not queue.cancel(second.id, owner="somebody else")
    assert queue.cancel(second.id, owner="me")
    assert queue.view(second.id).state == "cancelled"
    assert not (out_root / STAGING / second.name).exists()

    done = queue.wait(first.id, timeout=TRAINING_SECONDS)
    assert done.state == "finished", (done.error, done.last_lines())
    assert done.calibrated and done.model_folder == out_root / "tiny_chest"
    assert not temp.exists() and list(private_tmp.iterdir()) == [], "the unpacked upload is removed"
    entry = check_folder(done.model_folder)
    assert entry.usable, entry.problem
    info = entry.info
    assert info["title"] == "Tiny chest" and info["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert info["temperature"] > 0 and info["ood"]["file"] == "ood.npz"
    assert info["trained_here"]["job"] == first.id and info["trained_here"]["uploaded"]
    for name in ("history.csv", "metrics.json", "params.json", "split.json", "MODEL_CARD.md", "train.log", "ood.npz"):
        assert (done.model_folder / name).is_file(), name
    # Where the upload was unpacked is said nowhere: the folder is gone, and it was private.
    assert info["dataset"]["path"] == UPLOADED_DATASET
    assert json.loads((done.model_folder / "params.json").read_text())["data"] == UPLOADED_DATASET
    for path in done.model_folder.iterdir():
        if path.suffix in (".json", ".md", ".log", ".csv"):
            assert str(temp) not in path.read_text(), path.name
    card = (done.model_folder / "MODEL_CARD.md").read_text()
    assert "# Model card: Tiny chest" in card
    # The card's command and params.json name the folder the model lives in, not the staging folder renamed into it.
    assert f"--out {done.model_folder.as_posix()} " in card and STAGING not in card
    assert json.loads((done.model_folder / "params.json").read_text())["out"] == str(done.model_folder)
    assert done.not_calibrated is None
    assert any(line.startswith("epoch 1/1") for line in done.log)
    assert done.epochs_done == 1
    assert_nothing_left(out_root)


@pytest.mark.slow
def test_cancelling_a_running_training_leaves_nothing_behind(chest_dir, tmp_path, private_tmp):
    queue = JobQueue()
    out_root = tmp_path / "my-models"
    temp = dataset_from_zip(dataset_zip(chest_dir))
    job = queue.submit(data=temp, title="Long one", out_root=out_root, epochs=200, input_size=32, owner="me",
                       temp_dir=temp, options=OPTIONS)
    assert queue.wait(job.id, timeout=30, states=("running", *FINAL)).state == "running"
    deadline = time.monotonic() + TRAINING_SECONDS
    while not (job.staging / "history.csv").exists():  # it is training: the run folder is being written
        assert time.monotonic() < deadline, queue.view(job.id).last_lines()
        assert queue.view(job.id).state == "running", queue.view(job.id)
        time.sleep(0.5)
    assert training_children(), "the training runs in a process of its own"
    assert queue.cancel(job.id, owner="me")
    ended = queue.wait(job.id, timeout=60)
    assert ended.state == "cancelled" and ended.model_folder is None
    assert_nothing_left(out_root, temp)
    assert [p.name for p in out_root.iterdir()] in ([], [STAGING])
    assert list(private_tmp.iterdir()) == []


@pytest.mark.slow
def test_a_failed_training_shows_its_last_lines_and_leaves_nothing(tiny_dataset, tmp_path, private_tmp):
    import shutil

    data = tmp_path / "broken"
    shutil.copytree(tiny_dataset, data)
    (data / "NORMAL" / "damaged.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    queue = JobQueue()
    out_root = tmp_path / "my-models"
    job = queue.submit(data=data, title="Broken", out_root=out_root, epochs=1, input_size=32, owner="me",
                       options=OPTIONS)
    ended = queue.wait(job.id, timeout=TRAINING_SECONDS)
    assert ended.state == "failed"
    assert "damaged.png" in ended.error and "Traceback" not in ended.error, ended.error
    assert any("damaged.png" in line for line in ended.last_lines())
    assert_nothing_left(out_root)
    assert not (out_root / "broken").exists()


def test_bad_requests_are_one_sentence(tiny_dataset, tmp_path):
    queue = JobQueue()
    for arguments, expected in ((dict(title=""), "Give the model a name"), (dict(epochs=0), "between 1 and 500"),
                                (dict(input_size=8), "between 16 and 512"), (dict(options={"gpu": 1}), "Unknown"),
                                (dict(data=tmp_path / "none"), "does not exist")):
        request = dict(data=tiny_dataset, title="x", out_root=tmp_path / "out", epochs=1, input_size=32) | arguments
        with pytest.raises(JobError, match=expected) as caught:
            queue.submit(**request)
        assert is_one_sentence(str(caught.value))
    assert queue.views() == []


@pytest.mark.slow
def test_staging_folders_of_a_server_that_died_are_removed(tiny_dataset, tmp_path):
    """A server killed mid-training leaves its staging folder (its training died with it); the next queue
    to write into that folder of models removes it, and never one of a live server."""
    import subprocess

    dead = subprocess.Popen(["true"])
    dead.wait()
    out_root = tmp_path / "my-models"
    for name, pid in (("of_a_dead_server", dead.pid), ("of_a_live_server", os.getppid()), ("without_pid", None)):
        (out_root / STAGING / name / "job").mkdir(parents=True)
        if pid is not None:
            (out_root / STAGING / name / "server.pid").write_text(str(pid))
    queue = JobQueue()
    job = queue.submit(data=tiny_dataset, title="x", out_root=out_root, epochs=1, input_size=32)
    queue.cancel(job.id)
    assert queue.wait(job.id, timeout=60).state == "cancelled"
    assert sorted(p.name for p in (out_root / STAGING).iterdir()) == ["of_a_live_server"]


def test_a_failed_calibration_says_why_and_the_card_names_the_final_folder(tiny_run, tiny_dataset, tmp_path):
    """A stand-in for ``python`` whose ``train`` copies the session's real tiny run and whose ``calibrate`` fails as
    the CLI does: the job still finishes, says why its model is not calibrated (not the validation split's fault),
    and its card's command and params.json name the model's final folder."""
    import sys

    fake = tmp_path / "python"
    fake.write_text(f"""#!{sys.executable}
import shutil, sys
command = sys.argv[3:]  # after "-m core"
if command[0] == "train":
    shutil.copytree({str(tiny_run[0])!r}, command[command.index("--out") + 1])
    sys.exit(0)
print("error: The run's split names images the dataset no longer holds.", file=sys.stderr)
sys.exit(1)
""")
    fake.chmod(0o700)
    queue = JobQueue(python=str(fake))
    out_root = tmp_path / "my-models"
    job = queue.submit(data=tiny_dataset, title="Half done", out_root=out_root, epochs=1, input_size=32)
    done = queue.wait(job.id, timeout=120)
    assert done.state == "finished" and not done.calibrated, (done.state, done.error, done.last_lines())
    assert done.not_calibrated == "calibration failed: The run's split names images the dataset no longer holds"
    assert done.model_folder == out_root / "half_done"
    card = (done.model_folder / "MODEL_CARD.md").read_text()
    assert f"--out {done.model_folder.as_posix()} " in card and STAGING not in card and str(tiny_run[0]) not in card
    assert json.loads((done.model_folder / "params.json").read_text())["out"] == str(done.model_folder)
    assert_nothing_left(out_root)
