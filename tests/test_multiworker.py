"""core.multiworker and ``python -m core train --strategy``: two real worker processes on loopback.

The two-worker test runs the command a cluster user runs, once per worker, each with its own
``TF_CONFIG`` naming loopback ports that were free a moment before (no fixed ports), and waits for both
processes to end (no sleeps). Each worker gets its own ``--out`` so that a write by the non-chief would
show; its temporary folder is checked to be gone.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from core import multiworker as mw
from core.cli import main

SMALL = ["--limit-per-class", "8", "--input-size", "32", "--width", "8", "--batch-size", "4"]


def worker_env(tf_config: dict | None, tmp) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), TMPDIR=str(tmp))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return env


def train_command(chest_dir, out, strategy: str, epochs: int = 2) -> list[str]:
    return [sys.executable, "-m", "core", "train", "--task", "chest_xray", "--data", str(chest_dir), "--out", str(out),
            *SMALL, "--epochs", str(epochs), "--strategy", strategy]


# ----------------------------------------------------------------------------- helpers, in this process

def test_tf_config_gives_each_worker_its_role():
    configs = mw.tf_configs(["n1:2222", "n2:2222", "n3:2222", "n4:2222"])
    roles = [mw.worker_role(c) for c in configs]
    assert [(r.index, r.workers, r.chief) for r in roles] == [(0, 4, True), (1, 4, False), (2, 4, False),
                                                              (3, 4, False)]
    with_chief = {"cluster": {"chief": ["c:1"], "worker": ["w:1", "w:2"]}, "task": {"type": "worker", "index": 0}}
    assert not mw.is_chief(with_chief) and mw.worker_role(with_chief).workers == 3
    assert mw.is_chief(with_chief | {"task": {"type": "chief", "index": 0}})
    assert mw.is_chief(None) and mw.worker_role(None) == mw.WorkerRole("worker", 0, 1, True)


@pytest.mark.parametrize("text", ["{not json", '{"cluster": {"worker": ["a:1"]}}',
                                  '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'])
def test_a_malformed_tf_config_is_one_sentence(text):
    with pytest.raises(mw.StrategyError) as err:
        mw.read_tf_config({"TF_CONFIG": text})
    message = str(err.value)
    assert message.endswith(".") and "\n" not in message and "TF_CONFIG" in message
    assert mw.read_tf_config({}) is None


def test_global_batch_and_linear_learning_rate():
    assert mw.global_batch_size(32, 8) == 256
    assert mw.scaled_learning_rate(1e-3, 8) == pytest.approx(8e-3)
    assert mw.scaled_learning_rate(1e-3, 1) == 1e-3


def test_loopback_configs_name_distinct_ports_that_can_be_bound():
    configs = mw.loopback_tf_configs(3)
    addresses = configs[0]["cluster"]["worker"]
    assert all(c["cluster"]["worker"] == addresses for c in configs) and len(set(addresses)) == 3
    for address in addresses:
        host, port = address.split(":")
        with socket.socket() as sock:
            sock.bind((host, int(port)))  # free: a worker can listen there


def test_weights_digest_sees_a_single_changed_value():
    weights = [np.zeros((3, 3), np.float32), np.ones(4, np.float32)]
    changed = [weights[0].copy(), weights[1].copy()]
    changed[1][2] = np.nextafter(np.float32(1), np.float32(2))
    assert mw.weights_digest(weights) == mw.weights_digest([w.copy() for w in weights])
    assert mw.weights_digest(weights) != mw.weights_digest(changed)


def test_unknown_strategy_and_missing_tf_config_are_refused(monkeypatch, chest_dir, tmp_path, capsys):
    with pytest.raises(mw.StrategyError, match="Unknown strategy"):
        mw.make_strategy("parameter-server")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = main(["train", "--task", "chest_xray", "--data", str(chest_dir), "--out", str(tmp_path / "run"),
                 "--strategy", "multiworker"])
    err = capsys.readouterr().err
    assert code == 2 and "needs the TF_CONFIG environment variable" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_gpu_requirements_pin_what_requirements_txt_pins_with_the_cuda_build_of_tensorflow():
    def pins(name):
        lines = (REPO / name).read_text().splitlines()
        return dict(line.split("==", 1) for line in lines if line.strip() and not line.startswith("#"))

    cpu, gpu = pins("requirements.txt"), pins("requirements-gpu.txt")
    assert gpu.pop("tensorflow[and-cuda]") == cpu.pop("tensorflow-cpu")
    assert gpu == cpu


# ----------------------------------------------------------------------------- real workers

@pytest.mark.slow
def test_two_workers_end_with_identical_weights_and_only_the_chief_writes(chest_dir, tmp_path):
    from core import data as data_mod
    from core.metrics import classification_metrics
    from core.model import load_model

    outs = [tmp_path / "chief_run", tmp_path / "worker1_run"]
    scratch = [tmp_path / "tmp0", tmp_path / "tmp1"]
    for folder in scratch:
        folder.mkdir()
    workers = [subprocess.Popen(train_command(chest_dir, out, "multiworker"), cwd=REPO, env=worker_env(config, tmp),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for config, out, tmp in zip(mw.loopback_tf_configs(2), outs, scratch)]
    logs = []
    try:
        for worker in workers:
            stdout, stderr = worker.communicate(timeout=600)
            logs.append(stdout)
            assert worker.returncode == 0, stderr[-2000:]
            assert "Traceback" not in stdout + stderr
    finally:
        for worker in workers:
            worker.kill()

    digests = [re.findall(r"final weights SHA-256 ([0-9a-f]{64})", log) for log in logs]
    assert all(len(d) == 1 for d in digests) and digests[0] == digests[1], logs  # identical, bit for bit
    assert logs[1].splitlines()[-1].startswith("worker 1: ")

    run = outs[0]
    assert not outs[1].exists(), "the non-chief wrote its --out"
    assert not any(scratch[1].iterdir()), "the non-chief left its temporary run behind"
    assert {"history.csv", "params.json", "metrics.json", "split.json", "model.keras", "model.json",
            "MODEL_CARD.md"} <= {p.name for p in run.iterdir()}
    assert not (run / "best.weights.h5").exists()
    loaded = load_model(run)
    assert mw.weights_digest(loaded.model) == digests[0][0]  # what the chief saved is what both ended with

    with open(run / "history.csv", newline="") as fh:
        history = list(csv.DictReader(fh))
    assert [int(row["epoch"]) for row in history] == [0, 1]
    assert all(row[k] != "" for row in history for k in ("loss", "val_loss", "auc", "val_auc"))

    params = json.loads((run / "params.json").read_text())
    assert params["strategy"] == "multiworker" and params["replicas"] == 2 and params["workers"] == 2
    assert params["batch_size"] == 4 and params["global_batch_size"] == 8
    assert params["learning_rate"] == 1e-3 and params["scaled_learning_rate"] == pytest.approx(2e-3)
    assert params["data_sharding"] == "DATA"

    # The validation metrics the workers computed together (predictions gathered from both) are the
    # saved model's own on its split, in one process.
    metrics = json.loads((run / "metrics.json").read_text())
    dataset = data_mod.list_for_spec(chest_dir, loaded.info, class_names=loaded.class_names, limit_per_class=8)
    _, validation = data_mod.split_from_record(dataset, json.loads((run / "split.json").read_text())["validation"])
    x_val, y_val = data_mod.prepare_arrays(validation, loaded.pipeline)
    again = classification_metrics(y_val, loaded.predict(x_val), loaded.class_names)
    assert metrics["n"] == again["n"] == len(validation)
    assert metrics["accuracy"] == pytest.approx(again["accuracy"])
    assert metrics["confusion_matrix"] == again["confusion_matrix"]


@pytest.mark.slow
def test_mirrored_on_a_cpu_machine_is_one_replica(chest_dir, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(train_command(chest_dir, out, "mirrored", epochs=1),
                            cwd=REPO, env=worker_env(None, tmp_path), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "mirrored strategy: 1 replicas on 1 worker(s)" in result.stdout
    params = json.loads((out / "params.json").read_text())
    assert (params["replicas"], params["global_batch_size"], params["scaled_learning_rate"]) == (1, 4, 1e-3)
    with open(out / "history.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 1
