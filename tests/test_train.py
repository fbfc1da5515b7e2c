"""core.train: one epoch of a tiny model on 20 real chest images per class writes a complete run folder."""

from __future__ import annotations

import csv
import json

import pytest

from conftest import TINY
from core.data import list_dataset
from core.model import MODEL_FILE, sha256_file

pytestmark = pytest.mark.slow


def read_json(path):
    return json.loads(path.read_text())


def test_run_folder_holds_every_file(tiny_run):
    folder, _, _ = tiny_run
    names = {p.name for p in folder.iterdir()}
    assert {"history.csv", "params.json", "metrics.json", "model.keras", "model.json", "split.json"} <= names
    assert "best.weights.h5" not in names  # the checkpoint is folded into model.keras


def test_history_has_one_row_per_epoch(tiny_run):
    folder, _, _ = tiny_run
    with open(folder / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == TINY["epochs"]
    assert {"epoch", "loss", "accuracy", "auc", "val_loss", "val_accuracy", "val_auc"} <= set(rows[0])
    assert all(float(rows[0][k]) >= 0 for k in ("loss", "val_loss"))


def test_params_record_the_run(tiny_run, chest_dir):
    folder, _, _ = tiny_run
    params = read_json(folder / "params.json")
    for key, value in TINY.items():
        assert params[key] == value
    assert params["task"] == "chest_xray" and params["monitor"] == "val_auc"
    assert params["counts"] == {"NORMAL": 20, "PNEUMONIA": 20}
    assert params["n_train"] + params["n_validation"] == 40 - params["removed_duplicates"]
    assert params["pipeline"] == {"input_size": 32, "contrast": None, "mean": 0.5, "std": 0.25}
    assert set(params["class_weights"]) == {"0", "1"} and params["model_parameters"] > 0


def test_metrics_are_returned_and_written(tiny_run):
    folder, metrics, log = tiny_run
    assert read_json(folder / "metrics.json") == json.loads(json.dumps(metrics))
    assert metrics["class_names"] == ["NORMAL", "PNEUMONIA"]
    assert metrics["n"] == read_json(folder / "params.json")["n_validation"]
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert any(line.startswith("epoch 1/1") for line in log) and log[-1].startswith("done in")


def test_model_card_describes_model_and_data(tiny_run, chest_dir):
    folder, metrics, _ = tiny_run
    info = read_json(folder / "model.json")
    assert info["class_names"] == ["NORMAL", "PNEUMONIA"] and info["input_size"] == 32
    assert info["preprocessing"] == read_json(folder / "params.json")["pipeline"]
    assert info["sha256"] == sha256_file(folder / MODEL_FILE)
    dataset = list_dataset(chest_dir, class_names=["NORMAL", "PNEUMONIA"], limit_per_class=20)
    assert info["dataset"]["fingerprint"] == dataset.fingerprint()
    assert info["validation"]["n"] == metrics["n"] and info["validation"]["auc"] == metrics["auc"]
    assert info["validation"]["ece"] == metrics["calibration"]["ece"]


def test_validation_patients_never_trained_on(tiny_run, chest_dir):
    folder, _, _ = tiny_run
    validation = set(read_json(folder / "split.json")["validation"])
    dataset = list_dataset(chest_dir, class_names=["NORMAL", "PNEUMONIA"], limit_per_class=20)
    names = dataset.class_names
    val_items = [i for i in dataset.items if f"{names[i.label]}/{i.path.name}" in validation]
    train_items = [i for i in dataset.items if f"{names[i.label]}/{i.path.name}" not in validation]
    assert len(val_items) == len(validation) > 0
    assert {i.label for i in val_items} == {0, 1}
    assert {i.group for i in val_items}.isdisjoint({i.group for i in train_items})
