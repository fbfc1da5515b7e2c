"""core.runs: run folders read while they are still being written, and where runs are read from."""

from __future__ import annotations

from core.runs import ASSETS, assets_root, list_runs, read_history

HEADER = "epoch,accuracy,auc,loss,val_accuracy,val_auc,val_loss\n"
EPOCH_1 = "0,0.89,0.96,0.23,0.73,0.73,5.38\n"


def test_a_default_model_still_training_is_listed_under_its_task(tmp_path):
    folder = tmp_path / "models" / "chest_xray"
    folder.mkdir(parents=True)
    (folder / "history.csv").write_text(HEADER + EPOCH_1)  # no params.json / metrics.json yet

    (run,) = list_runs(tmp_path)
    assert (run.run_id, run.task, run.is_default, run.epochs, run.finished) == (
        "models/chest_xray", "chest_xray", True, 1, False)
    assert run.summary()["status"] == "no metrics yet" and run.summary()["minutes"] is None
    assert run.history["epoch"] == [1] and run.history["val_loss"] == [5.38]


def test_a_half_written_line_reads_as_missing_values(tmp_path):
    path = tmp_path / "history.csv"
    path.write_text(HEADER + EPOCH_1 + "1,0.9")
    history = read_history(path)
    assert history["accuracy"] == [0.89, 0.9]
    assert history["loss"][0] == 0.23 and history["loss"][1] != history["loss"][1]  # NaN


def test_an_empty_history_is_a_run_with_no_epochs(tmp_path):
    folder = tmp_path / "runs" / "brain_mri" / "seed1"
    folder.mkdir(parents=True)
    (folder / "history.csv").write_text("")  # CSVLogger opened the file, no epoch ended yet
    (run,) = list_runs(tmp_path, task="brain_mri")
    assert (run.run_id, run.task, run.is_default, run.epochs) == ("runs/brain_mri/seed1", "brain_mri", False, 0)


def test_runs_root_comes_from_medxai_assets(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDXAI_ASSETS", raising=False)
    assert assets_root() == ASSETS
    monkeypatch.setenv("MEDXAI_ASSETS", str(tmp_path))
    assert assets_root() == tmp_path and list_runs() == []


def test_kept_epoch_is_the_best_epoch_of_the_monitored_score_in_a_real_run():
    from core.runs import load_run

    folders = [p.parent for p in sorted(ASSETS.glob("*/*/params.json")) + sorted(ASSETS.glob("runs/*/*/params.json"))]
    runs = [load_run(folder) for folder in folders]
    runs = [run for run in runs if run.params.get("monitor") in run.history]
    assert runs, "no finished run folder under assets/models or assets/runs"
    for run in runs:
        scores = run.history[run.params["monitor"]]
        best = max(s for s in scores if s == s)
        assert run.kept_epoch == run.history["epoch"][scores.index(best)]  # the first best, as the checkpoint keeps
        assert run.summary()["kept epoch"] == run.kept_epoch
    default = load_run(ASSETS / "models" / "fracture")
    if default.params:  # 20 epochs; validation AUC was best at epoch 13: the kept epoch is not simply the last
        assert default.epochs > default.kept_epoch >= 1


def test_kept_epoch_is_none_until_the_run_names_its_monitor(tmp_path):
    folder = tmp_path / "runs" / "chest_xray" / "live"
    folder.mkdir(parents=True)
    (folder / "history.csv").write_text(HEADER + EPOCH_1 + "1,0.9,0.97,0.2,0.8,0.9,0.7\n2,0.9,0.97,0.2,0.8,0.85,0.7\n")
    (run,) = list_runs(tmp_path)
    assert run.kept_epoch is None
    (folder / "params.json").write_text('{"monitor": "val_auc"}')
    (run,) = list_runs(tmp_path)
    assert run.kept_epoch == 2  # val_auc 0.73, 0.9, 0.85


def test_localisation_is_read_from_the_explain_eval_json_beside_a_run(tmp_path):
    """A run's ``localisation_*.json`` (``explain-eval --json``, written beside it): Grad-CAM's pointing game on the
    first layer measured, its interval and the centre blob's score; files measured on images the model trained on
    are passed over, and a run without any file, or with a broken one, has none."""
    import json
    import shutil

    from core.runs import load_run, read_localisation

    default = load_run(ASSETS / "models" / "fracture", ASSETS)
    report = json.loads((ASSETS / "models" / "fracture" / "localisation_valid.json").read_text())
    rows = {(g["method"], g["layer"]): g["metrics"]["pointing_game"] for g in report["groups"] if g["class"] == "all"}
    found = default.localisation
    assert found["layer"] == report["layers"][0] == "last_conv" and found["n"] == report["n_images"]
    assert found["pointing"] == rows[("gradcam", "last_conv")]["mean"]
    assert found["low"] <= found["pointing"] <= found["high"]
    assert found["centre"] == rows[("baseline:centre", None)]["mean"]
    assert default.summary()["Grad-CAM pointing"] == round(found["pointing"], 3)

    # Seen and unseen slices measured side by side: only the unseen ones say where the maps point
    both = ASSETS / "runs" / "brain_mri" / "e26-seed0"
    assert {p.name for p in both.glob("localisation_*.json")} >= {"localisation_seen.json", "localisation_unseen.json"}
    assert read_localisation(both)["file"] == "localisation_unseen.json"
    assert "unseen" in read_localisation(both)["subset"]

    folder = tmp_path / "run"
    folder.mkdir()
    assert read_localisation(folder) == {}
    (folder / "localisation_valid.json").write_text("{not json")
    assert read_localisation(folder) == {}
    shutil.copy(both / "localisation_seen.json", folder / "localisation_seen.json")
    assert read_localisation(folder) == {}


def test_the_committed_defaults_map_records_read_as_the_cards_state_them():
    """What the Explain page and the report say under a map with no outline to check it against: the fracture
    default's Grad-CAM lands on the outline no more often than a centre blob (a warning), the brain default's
    more often but not twice as often, and the chest default was never measured against outlines (nothing said)."""
    from core.runs import read_localisation, record_sentence

    fracture = record_sentence(read_localisation(ASSETS / "models" / "fracture"))
    brain = record_sentence(read_localisation(ASSETS / "models" / "brain_mri"))
    assert fracture[0] is True
    assert "over 62 outlined images it never trained on" in fracture[1] and "No better than the blob" in fracture[1]
    assert "8% [2%, 15%], a fixed blob in the image centre on 15%" in fracture[1]
    assert brain[0] is False
    assert "over 150 outlined images" in brain[1] and "30% [23%, 37%]" in brain[1] and "less than twice" in brain[1]
    assert record_sentence(read_localisation(ASSETS / "models" / "chest_xray")) is None


def test_a_record_scored_on_the_log_odds_says_so_and_twice_the_blob_reads_plainly():
    from core.runs import record_sentence

    below, text = record_sentence({"n": 20, "pointing": 0.6, "low": 0.4, "high": 0.8, "centre": 0.2,
                                   "layer": "block5", "map_score": "log-odds"})
    assert not below
    assert "Grad-CAM peak of the class's log-odds (layer block5)" in text and "60% [40%, 80%]" in text
    assert "One map's hit or miss says little on its own" in text
    assert record_sentence({"n": 0, "pointing": None}) is None
