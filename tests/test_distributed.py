"""core.distributed: archive scoring on a real two-worker Dask cluster on loopback.

One ``LocalCluster(n_workers=2, processes=True, threads_per_worker=1)`` serves the module (ports chosen
by the system, no dashboard); the test whose file kills every worker gets a cluster of its own. Workers read real chest radiographs and DICOM files; a reader that logs
every read (and, when asked, kills its worker process) shows which files a run opened. Nothing waits
on a clock: runs are awaited, and a killed worker is replaced by Dask's own nanny.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import dicom_path
from core.cli import main
from core.distributed import (KILLER_ERROR, DistributedError, archive_paths, cluster_client, explain_archive,
                              predict_archive, read_records, run_file, stream_records, summarise_explanations)
from core.model import load_model
from core.predict import predict_files, read_input

pytestmark = pytest.mark.slow


class LoggingReader:
    """Reads a file's bytes on a worker, appending its path to a log file first; with ``crash`` it ends the
    worker process (``os._exit``) on reading that file, once (``crash_times=1``) or every time."""

    def __init__(self, log: Path, crash: str | None = None, crash_times: int | None = 1):
        self.log, self.crash, self.crash_times = str(log), crash, crash_times

    def __call__(self, path):
        self.note(str(path))
        if self.crash is not None and str(path).endswith(self.crash):
            marker = Path(f"{self.log}.crashes")
            crashes = int(marker.read_text()) if marker.exists() else 0
            if self.crash_times is None or crashes < self.crash_times:
                marker.write_text(str(crashes + 1))
                self.note(CRASH)
                os._exit(1)
        return read_input(path)

    def note(self, line: str) -> None:
        with open(self.log, "a") as fh:  # appends of one short line: whole, whichever process writes
            fh.write(f"{line}\n")

    def entries(self) -> list[str]:
        return Path(self.log).read_text().splitlines() if Path(self.log).exists() else []

    def reads(self) -> list[str]:
        return [e for e in self.entries() if e != CRASH and not e.startswith(RECORDED)]


CRASH, RECORDED = "CRASH", "RECORDED "


@pytest.fixture(scope="module")
def client():
    with cluster_client("local:2") as client:
        yield client


@pytest.fixture(scope="module")
def model_dir(tiny_run):
    return tiny_run[0]


@pytest.fixture(scope="module")
def loaded(model_dir):
    return load_model(model_dir)


@pytest.fixture(scope="module")
def inputs(chest_dir, tmp_path_factory):
    """Ten real radiographs, a real DICOM file, random bytes named .dcm and a missing file."""
    folder = tmp_path_factory.mktemp("inputs")
    noise = folder / "noise.dcm"
    noise.write_bytes(os.urandom(4096))
    images = [str(p) for cls in ("NORMAL", "PNEUMONIA") for p in sorted((chest_dir / cls).iterdir())[:5]]
    return images[:4] + [str(dicom_path("CT_small.dcm")), str(noise)] + images[4:] + [str(folder / "missing.png")]


def lines(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def assert_same_records(cluster_records, in_process_records):
    """The same files in the same order, each with the same record; probabilities to float tolerance
    (the cluster batches files differently)."""
    assert [r["file"] for r in cluster_records] == [r["file"] for r in in_process_records]
    for ours, theirs in zip(cluster_records, in_process_records):
        assert {k: v for k, v in ours.items() if k != "probabilities"} == \
            {k: v for k, v in theirs.items() if k != "probabilities"}
        if ours["ok"]:
            assert ours["probabilities"].keys() == theirs["probabilities"].keys()
            for name, p in ours["probabilities"].items():
                assert p == pytest.approx(theirs["probabilities"][name], abs=2e-6), ours["file"]


# ----------------------------------------------------------------------------- predict

def test_cluster_records_equal_the_in_process_ones_file_by_file(client, model_dir, loaded, inputs, tmp_path):
    out = tmp_path / "scores.jsonl"
    run = predict_archive(inputs, model_dir, out, client=client, files_per_task=3)
    expected = list(predict_files(inputs, loaded))
    assert_same_records(lines(out), expected)
    assert (run.inputs, run.already, run.scored, run.errors) == (len(inputs), 0, len(inputs), 2)
    # Each worker process loaded the model once and the two together scored every file once.
    assert len(run.workers) == 2 and len({w["pid"] for w in run.workers.values()}) == 2
    assert sum(w["files_scored"] for w in run.workers.values()) == len(inputs)
    facts = json.loads(run_file(out).read_text())
    assert facts["command"] == "predict" and facts["model_sha256"] == loaded.info["sha256"]
    bad = {r["file"]: r["error"] for r in lines(out) if not r["ok"]}
    assert set(bad) == {inputs[5], inputs[-1]}
    assert all(e[0].isupper() and e.endswith(".") and "\n" not in e for e in bad.values())


def test_a_second_run_only_scores_what_the_first_did_not_record(client, model_dir, loaded, inputs, tmp_path):
    out, reader = tmp_path / "scores.jsonl", LoggingReader(tmp_path / "reads.log")
    half = inputs[:6]
    first = predict_archive(half, model_dir, out, client=client, files_per_task=2, read=reader)
    assert (first.scored, first.already) == (6, 0)
    written = out.read_bytes()
    Path(reader.log).unlink()

    second = predict_archive(inputs, model_dir, out, client=client, files_per_task=2, read=reader)
    assert (second.inputs, second.already, second.scored) == (len(inputs), 6, len(inputs) - 6)
    assert sum(w["files_scored"] for w in second.workers.values()) == len(inputs) - 6
    reads = reader.reads()
    assert not set(reads) & {str(Path(p).absolute()) for p in half}  # nothing recorded was opened again
    assert sorted(reads) == sorted(str(Path(p).absolute()) for p in inputs[6:])
    assert out.read_bytes().startswith(written)  # the first run's lines are untouched, the rest appended
    assert_same_records(lines(out), list(predict_files(inputs, loaded)))


def test_a_run_stopped_mid_way_resumes_from_its_last_whole_line(client, model_dir, loaded, inputs, tmp_path):
    out, reader = tmp_path / "scores.jsonl", LoggingReader(tmp_path / "reads.log")

    class Stop(Exception):
        pass

    seen = []

    def stop_after_four(record):
        seen.append(record["file"])
        if len(seen) == 4:
            raise Stop

    with pytest.raises(Stop):
        predict_archive(inputs, model_dir, out, client=client, files_per_task=2, read=reader,
                        on_record=stop_after_four)
    assert [r["file"] for r in lines(out)] == inputs[:4]
    with open(out, "a") as fh:  # the process was killed while writing the fifth line
        fh.write('{"file": "' + inputs[4][:10])
    Path(reader.log).unlink()

    run = predict_archive(inputs, model_dir, out, client=client, files_per_task=2, read=reader)
    assert (run.already, run.scored) == (4, len(inputs) - 4)
    assert not set(reader.reads()) & {str(Path(p).absolute()) for p in inputs[:4]}
    assert_same_records(lines(out), list(predict_files(inputs, loaded)))  # the torn line is gone


def test_a_worker_that_dies_is_replaced_and_finished_files_are_not_redone(client, model_dir, loaded, inputs,
                                                                        tmp_path):
    out = tmp_path / "scores.jsonl"
    victim = inputs[-2]  # in the sixth task: one task in flight at a time, so five are recorded before it dies
    reader = LoggingReader(tmp_path / "reads.log", crash=Path(victim).name, crash_times=1)
    run = predict_archive(inputs, model_dir, out, client=client, files_per_task=2, read=reader, window=1,
                          on_record=lambda record: reader.note(RECORDED + str(Path(record["file"]).absolute())))
    assert Path(f"{reader.log}.crashes").read_text() == "1"  # a worker process did die
    assert_same_records(lines(out), list(predict_files(inputs, loaded)))  # every file once, in order
    assert run.scored == len(inputs) and run.split_tasks == 0
    entries = reader.entries()
    crash = entries.index(CRASH)
    recorded_before = {e[len(RECORDED):] for e in entries[:crash] if e.startswith(RECORDED)}
    read_after = {e for e in entries[crash + 1:] if e != CRASH and not e.startswith(RECORDED)}
    assert recorded_before == {str(Path(p).absolute()) for p in inputs[:10]}
    assert not recorded_before & read_after  # nothing finished was redone
    assert str(Path(victim).absolute()) in read_after  # the file whose task died was read again


def test_a_file_that_kills_every_worker_is_isolated_and_recorded_as_an_error(model_dir, inputs, tmp_path):
    """On a two-worker cluster of its own: the file kills one worker process after another, and a nanny that
    gives up restarting under load (seen on a busy 2-core machine) must not leave the module's cluster empty."""
    with cluster_client("local:2") as client:
        client.cluster.scheduler.allowed_failures = 0  # give up on a task at the first worker it kills (default 3)
        out = tmp_path / "scores.jsonl"
        victim = Path(inputs[2]).name
        run = predict_archive(inputs, model_dir, out, client=client, files_per_task=4, window=1,  # alone on its worker
                              read=LoggingReader(tmp_path / "reads.log", crash=victim, crash_times=None))
    records = lines(out)
    assert [r["file"] for r in records] == inputs
    assert records[2] == {"file": inputs[2], "ok": False, "error": KILLER_ERROR}
    assert all(r["ok"] for i, r in enumerate(records[:5]) if i != 2)  # its task's other files were scored
    assert run.split_tasks == 1 and run.errors == 3


def test_results_of_another_model_are_refused_not_mixed(client, model_dir, inputs, tmp_path):
    out = tmp_path / "scores.jsonl"
    predict_archive(inputs[:2], model_dir, out, client=client)
    other = tmp_path / "other_model"
    shutil.copytree(model_dir, other)
    info = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps(info | {"sha256": "0" * 64}))  # refused before any worker loads it
    with pytest.raises(DistributedError, match="holds the results of another run") as err:
        predict_archive(inputs, other, out, client=client)
    assert "\n" not in str(err.value) and len(lines(out)) == 2


def test_the_command_line_streams_to_the_file_and_prints_as_in_process(client, model_dir, inputs, tmp_path, capsys):
    out = tmp_path / "scores.jsonl"
    address = client.cluster.scheduler_address  # the module's cluster, reached like a remote one
    code = main(["predict", *inputs, "--model", str(model_dir), "--json", "--cluster", address, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 1  # two inputs could not be used, as in process
    assert [json.loads(line) for line in captured.out.splitlines()] == lines(out)
    assert f"{len(inputs)} files scored on the cluster and 0 found already in {out}" in captured.err
    assert main(["predict", *inputs, "--model", str(model_dir), "--cluster", address, "--out", str(out)]) == 1
    assert "0 files scored on the cluster and 13 found already" in capsys.readouterr().err


def test_command_line_usage_errors_are_one_sentence(model_dir, inputs, tmp_path, capsys):
    assert main(["predict", inputs[0], "--model", str(model_dir), "--cluster", "local:1"]) == 2
    assert "--cluster needs --out FILE.jsonl" in capsys.readouterr().err
    assert main(["predict", inputs[0], "--model", str(model_dir), "--cluster", "local:x", "--out",
                 str(tmp_path / "o.jsonl")]) == 2
    assert "is not understood" in capsys.readouterr().err
    assert main(["explain-eval", "--model", str(model_dir), "--data", str(tmp_path), "--masks", str(tmp_path),
                 "--cluster", "local:1", "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "localisation against --masks runs in this process" in capsys.readouterr().err


def test_no_scheduler_at_an_address_is_one_sentence():
    from core.multiworker import free_port

    with pytest.raises(DistributedError, match="No Dask scheduler answers at") as err:
        with cluster_client(f"tcp://127.0.0.1:{free_port()}", timeout=2):
            pass
    assert "\n" not in str(err.value)


def echo(payloads):
    return [{"key": payload, "ok": True} for payload in payloads]


def test_a_cluster_left_without_workers_stops_the_run_with_one_sentence_and_keeps_its_records(tmp_path):
    """Its only worker retired (as when every nanny gives up restarting), a run stops after the timeout
    instead of waiting for ever, and the same command resumes from what was written."""
    import time

    from distributed import Client, LocalCluster

    out = tmp_path / "r.jsonl"
    with LocalCluster(n_workers=1, processes=False, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:  # in this process (its own in-process transport), no port but the dashboard's
        first = stream_records(client, [("a", "a")], echo, out, key="key", files_per_task=1)
        cluster.scale(0)
        for _ in range(200):
            if not client.scheduler_info()["workers"]:
                break
            time.sleep(0.05)
        assert not client.scheduler_info()["workers"]
        started = time.monotonic()
        with pytest.raises(DistributedError, match="no worker for 1 s") as err:
            stream_records(client, [("a", "a"), ("b", "b"), ("c", "c")], echo, out, key="key", files_per_task=1,
                           no_worker_timeout=1)
        assert time.monotonic() - started < 30 and "\n" not in str(err.value)
        assert "0 of 2 tasks written" in str(err.value)
        assert first.scored == 1 and lines(out) == [{"key": "a", "ok": True}]
        cluster.scale(1)
        rest = stream_records(client, [("a", "a"), ("b", "b"), ("c", "c")], echo, out, key="key", files_per_task=1)
    assert (rest.already, rest.scored) == (1, 2) and [r["key"] for r in lines(out)] == ["a", "b", "c"]


# ----------------------------------------------------------------------------- the results file

def test_a_torn_last_line_is_cut_and_a_foreign_line_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"file": "a", "ok": true}\n{"file": "b", "ok": false, "error": "x"}\n{"file": "c", "o')
    assert list(read_records(out, "file")) == ["a", "b"]
    assert out.read_text().endswith('"error": "x"}\n')
    out.write_text('{"file": "a", "ok": true}\nnot json\n{"file": "c", "ok": true}\n')
    with pytest.raises(DistributedError, match="Line 2 of"):
        read_records(out, "file")
    assert read_records(tmp_path / "none.jsonl", "file") == {}


def test_archive_paths_expand_folders_in_order_once(tmp_path):
    for name in ("b/2.dcm", "b/1", "a.png", "b/.hidden", ".git/x"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert archive_paths([tmp_path / "b", tmp_path / "a.png", tmp_path / "b" / "1"]) == [
        str(tmp_path / "b" / "1"), str(tmp_path / "b" / "2.dcm"), str(tmp_path / "a.png")]
    assert str(tmp_path / ".git" / "x") not in archive_paths([tmp_path])


# ----------------------------------------------------------------------------- explain-eval

def copy_of(chest_dir, folder, per_class=2):
    for cls in ("NORMAL", "PNEUMONIA"):
        (folder / cls).mkdir(parents=True)
        for path in sorted((chest_dir / cls).iterdir())[-per_class:]:
            shutil.copy(path, folder / cls / path.name)
    return folder


def test_explain_eval_on_the_cluster_gives_the_in_process_report(client, loaded, chest_dir, tmp_path):
    from core.evaluation import evaluate_explanations

    clean = copy_of(chest_dir, tmp_path / "clean")
    expected = evaluate_explanations(loaded, clean, limit=6, sanity_limit=0, log=lambda *_: None)

    dirty = copy_of(chest_dir, tmp_path / "dirty")
    (dirty / "NORMAL" / "broken.jpeg").write_bytes(b"\xff\xd8\xff" + os.urandom(600))  # a truncated JPEG
    out = tmp_path / "explain.jsonl"
    report, run = explain_archive(loaded, dirty, out, client=client, limit=6, sanity_limit=0, log=lambda *_: None)

    records = lines(out)
    assert [r["image"] for r in records][:3] == sorted(["NORMAL/broken.jpeg"] + [
        f"NORMAL/{p.name}" for p in (clean / "NORMAL").iterdir()])
    assert run.errors == 1 and report["skipped"] == 1 and report["images"] == expected["images"] == 4
    broken = next(r for r in records if not r["ok"])
    assert broken["image"] == "NORMAL/broken.jpeg" and broken["error"].endswith(".")
    assert report.keys() >= expected.keys() and report["methods"].keys() == expected["methods"].keys()
    for method, theirs in expected["methods"].items():
        ours = report["methods"][method]
        assert ours["faithfulness_images"] + ours["uninformative_images"] == 4
        if method == "smoothgrad":  # its noise is drawn per image here, from NumPy's global state in process
            continue
        assert ours["faithfulness_images"] == theirs["faithfulness_images"]
        for key, value in theirs.items():
            if isinstance(value, dict):
                assert ours[key]["mean"] == pytest.approx(value["mean"], rel=1e-4, abs=1e-6), (method, key)
                assert ours[key]["std"] == pytest.approx(value["std"], rel=1e-3, abs=1e-6), (method, key)

    again, rerun = explain_archive(loaded, dirty, out, client=client, limit=6, sanity_limit=0, log=lambda *_: None)
    assert (rerun.already, rerun.scored) == (5, 0) and again == report


def test_explain_eval_command_line_prints_the_report_of_its_records(client, model_dir, loaded, chest_dir, tmp_path,
                                                                     capsys):
    folder = copy_of(chest_dir, tmp_path / "images", per_class=1)
    out = tmp_path / "explain.jsonl"
    code = main(["explain-eval", "--model", str(model_dir), "--data", str(folder), "--limit", "2", "--sanity-limit",
                 "0", "--json", "--cluster", client.cluster.scheduler_address, "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0
    report = json.loads(captured.out)
    assert report == summarise_explanations(lines(out), model=str(model_dir), task=loaded.task,
                                            subset=f"all 2 images of {folder}")
    assert report["images"] == 2 and "2 images scored on the cluster" in captured.err


def test_merging_per_image_records_follows_the_in_process_rules():
    def scores(deletion, informative, spearman=None):
        entry = {"deletion_auc": deletion, "insertion_auc": 0.5, "deletion_ratio": 1.0, "insertion_ratio": 1.0,
                 "average_drop": 10.0, "informative": informative}
        return entry | ({"sanity_spearman": spearman, "sanity_pass": spearman < 0.5} if spearman is not None else {})

    records = [{"image": "a", "ok": True, "methods": {"gradcam": scores(0.2, True, 0.1)}},
               {"image": "b", "ok": True, "methods": {"gradcam": scores(0.4, True, 0.9)}},
               {"image": "c", "ok": True, "methods": {"gradcam": scores(0.9, False)}},
               {"image": "d", "ok": False, "error": "The file is empty."}]
    report = summarise_explanations(records, model="m", task="t", subset="s")
    gradcam = report["methods"]["gradcam"]
    assert gradcam["deletion_auc"]["mean"] == pytest.approx(0.3) and gradcam["deletion_auc"]["std"] == pytest.approx(0.1)
    assert (gradcam["faithfulness_images"], gradcam["uninformative_images"], gradcam["sanity_passed"]) == (2, 1, "1/2")
    assert (report["images"], report["sanity_images"], report["skipped"]) == (3, 2, 1)
    assert report["skipped_reasons"] == {"The file is empty.": 1}
