"""pages/history.py through the real app entry (``app.py`` + ``st.navigation``) with AppTest.

Runs are read from ``MEDXAI_ASSETS``: the committed ``assets/`` as they are, an empty folder,
and a small assets folder of real tiny trainings (two chest X-ray runs, one brain MRI run, and
the ``history.csv`` alone of a run still training).
"""

from __future__ import annotations

import json
import shutil

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO
from core.runs import ASSETS, list_runs, load_run
from core.train import TrainConfig, train


def history_page(assets=None, monkeypatch=None) -> AppTest:
    if assets is not None:
        monkeypatch.setenv("MEDXAI_ASSETS", str(assets))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("pages/history.py")
    at.run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    return at


def chest_page(assets, monkeypatch) -> AppTest:
    """The page on the chest X-ray runs (the models are listed in their folders' order)."""
    at = history_page(assets, monkeypatch)
    at.radio[0].set_value("chest_xray").run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    return at


def table_ids(at: AppTest) -> list[str]:
    return list(at.dataframe[0].value["run"])


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def titled(at: AppTest, prefix: str) -> list[dict]:
    return [f for f in figures(at) if f["layout"].get("title", {}).get("text", "").startswith(prefix)]


def texts(at: AppTest) -> str:
    return "\n".join(e.value for kind in ("info", "caption", "markdown") for e in getattr(at, kind))


# ----------------------------------------------------------------------------- the committed assets

def test_real_assets_table_lists_every_run(monkeypatch):
    monkeypatch.delenv("MEDXAI_ASSETS", raising=False)
    at = history_page()
    runs = list_runs(ASSETS)
    if not runs:
        assert "No training runs yet" in at.info[0].value
        return
    tasks = sorted({r.task for r in runs})
    assert len(at.radio[0].options) == len(tasks)
    for task in tasks:
        at.radio[0].set_value(task).run(timeout=60)
        assert not at.exception
        assert table_ids(at) == [r.run_id for r in list_runs(ASSETS, task=task)]
        assert at.download_button, "the chosen run's history can be downloaded"


def test_no_runs_is_one_sentence(tmp_path, monkeypatch):
    at = history_page(tmp_path, monkeypatch)
    assert len(at.info) == 1 and at.info[0].value.startswith("No training runs yet")
    assert not at.dataframe and not at.get("plotly_chart")


# ----------------------------------------------------------------------------- tiny real runs

@pytest.fixture(scope="module")
def assets(data_dir, tmp_path_factory):
    """models/chest_xray, runs/chest_xray/seed1, runs/chest_xray/in_progress, models/brain_mri."""
    root = tmp_path_factory.mktemp("assets")
    tiny = dict(input_size=32, width=8, limit_per_class=12, batch_size=8)
    chest = str(data_dir / "chest_xray" / "train")
    train(TrainConfig(task="chest_xray", data=chest, out=str(root / "models" / "chest_xray"), epochs=1, **tiny),
          log=lambda _: None)
    train(TrainConfig(task="chest_xray", data=chest, out=str(root / "runs" / "chest_xray" / "seed1"), epochs=2,
                      seed=1, **tiny), log=lambda _: None)
    # A run still training has written its history.csv and nothing else yet.
    (root / "runs" / "chest_xray" / "in_progress").mkdir()
    shutil.copy(root / "runs" / "chest_xray" / "seed1" / "history.csv", root / "runs" / "chest_xray" / "in_progress")
    brain = data_dir / "brain_mri" / "Training"
    if brain.is_dir():
        train(TrainConfig(task="brain_mri", data=str(brain), out=str(root / "models" / "brain_mri"), epochs=1, **tiny),
              log=lambda _: None)
    return root


@pytest.mark.slow
def test_table_lists_the_runs_of_each_task(assets, monkeypatch):
    at = history_page(assets, monkeypatch)
    assert "Chest X-ray — pneumonia vs normal" in at.radio[0].options  # the title from the run's model.json
    at = chest_page(assets, monkeypatch)
    assert table_ids(at) == [r.run_id for r in list_runs(assets, task="chest_xray")] == [
        "models/chest_xray", "runs/chest_xray/in_progress", "runs/chest_xray/seed1"]
    statuses = dict(zip(table_ids(at), at.dataframe[0].value["status"]))
    assert statuses["runs/chest_xray/in_progress"] == "no metrics yet"
    assert statuses["models/chest_xray"] == "finished"


@pytest.mark.slow
def test_selected_run_shows_curves_metrics_matrix_roc_and_calibration(assets, monkeypatch):
    at = chest_page(assets, monkeypatch)
    run = load_run(assets / "models" / "chest_xray", assets)
    assert at.selectbox[0].value == run.run_id

    for title in ("Loss", "Accuracy", "AUC"):
        (curve,) = titled(at, title)
        assert [t["name"] for t in curve["data"]] == ["training", "validation"]
        assert curve["data"][1]["y"] == pytest.approx(run.history[f"val_{title.lower()}"])

    metrics = at.dataframe[1].value
    assert list(metrics.columns) == [run.run_id]
    assert metrics.loc["accuracy", run.run_id] == pytest.approx(run.metrics["accuracy"])

    (matrix,) = titled(at, "Confusion matrix")
    heatmap = matrix["data"][0]
    assert heatmap["z"] == run.metrics["confusion_matrix"]
    assert heatmap["x"] == heatmap["y"] == ["NORMAL", "PNEUMONIA"]
    assert matrix["layout"]["xaxis"]["title"]["text"] == "predicted"
    assert matrix["layout"]["yaxis"]["title"]["text"] == "true"

    (roc,) = titled(at, "ROC")
    diagonal, curve, saved, chosen = roc["data"]
    assert diagonal["x"] == [0, 1] and diagonal["y"] == [0, 1]
    assert saved["y"] == [pytest.approx(run.metrics["sensitivity"])] and saved["name"].startswith("saved threshold")
    assert chosen["name"].startswith("sensitivity ≥ 0.90")
    assert curve["x"] == run.metrics["roc"]["PNEUMONIA"]["fpr"]
    assert f"AUC {run.metrics['auc']:.3f}" in curve["name"]

    (reliability,) = titled(at, "Reliability")
    assert f"ECE {run.metrics['calibration']['ece']:.3f}" in reliability["layout"]["title"]["text"]
    bars = next(t for t in reliability["data"] if t["type"] == "bar")
    assert bars["y"] == [b["count"] for b in run.metrics["calibration"]["bins"]]

    (download,) = at.download_button
    assert run.run_id in download.label and download.proto.url.endswith(".csv")
    (params,) = [t.value for t in at.dataframe if "seed" in t.value.index]
    assert params.loc["seed", run.run_id] == "0"
    # one sentence on how to read each chart
    assert all(s in texts(at) for s in ("overfitting", "diagonal counts correct", "top-left corner", "calibrated"))


@pytest.mark.slow
def test_two_runs_side_by_side(assets, monkeypatch):
    at = chest_page(assets, monkeypatch)
    at.selectbox[1].select("runs/chest_xray/seed1").run(timeout=60)
    assert not at.exception
    (loss,) = titled(at, "Loss")
    assert len(loss["data"]) == 4  # training and validation of each run, overlaid
    assert list(at.dataframe[1].value.columns) == ["models/chest_xray", "runs/chest_xray/seed1"]
    (operating,) = [t.value for t in at.dataframe if "threshold rule" in t.value.columns]
    assert list(operating["run"]) == ["models/chest_xray"] * 2 + ["runs/chest_xray/seed1"] * 2  # both runs' rows
    (params,) = [t.value for t in at.dataframe if "seed" in t.value.index]
    assert list(params.columns) == ["models/chest_xray", "runs/chest_xray/seed1"]
    assert len(titled(at, "Confusion matrix")) == len(titled(at, "ROC")) == len(titled(at, "Reliability")) == 2
    assert len(at.download_button) == 2


@pytest.mark.slow
def test_run_still_training_shows_curves_and_says_metrics_are_not_available(assets, monkeypatch):
    at = chest_page(assets, monkeypatch)
    at.selectbox[0].select("runs/chest_xray/in_progress").run(timeout=60)
    assert not at.exception
    assert any("not available yet" in i.value for i in at.info)
    assert len(titled(at, "Loss")) == 1 and not titled(at, "Confusion matrix")
    assert at.download_button


@pytest.mark.slow
def test_the_chosen_model_stays_chosen_when_a_run_starts_or_ends_elsewhere(assets, tmp_path, monkeypatch):
    """A training started by someone else adds a model to the radio (and one that ends renames it); the model a
    person is looking at stays chosen, and a model whose only run is gone falls back to the first."""
    root = tmp_path / "assets"
    shutil.copytree(assets, root)
    at = chest_page(root, monkeypatch)
    started = root / "runs" / "knee_xray" / "live"
    started.mkdir(parents=True)
    shutil.copy(root / "runs" / "chest_xray" / "seed1" / "history.csv", started)
    at.run(timeout=60)
    assert not at.exception
    assert "knee_xray" in at.radio[0].options and at.radio[0].value == "chest_xray"
    assert table_ids(at)[0] == "models/chest_xray"
    at.radio[0].set_value("knee_xray").run(timeout=60)
    assert table_ids(at) == ["runs/knee_xray/live"]
    shutil.rmtree(started.parent)
    at.run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    assert "knee_xray" not in at.radio[0].options and at.radio[0].value == "brain_mri"  # the first, as on arrival


@pytest.mark.slow
def test_four_class_model_has_one_roc_curve_per_class(assets, monkeypatch):
    if not (assets / "models" / "brain_mri").is_dir():
        pytest.skip("brain MRI data not found")
    at = history_page(assets, monkeypatch)
    at.radio[0].set_value("brain_mri").run(timeout=60)
    assert not at.exception
    assert table_ids(at) == ["models/brain_mri"]
    (matrix,) = titled(at, "Confusion matrix")
    assert matrix["data"][0]["x"] == ["glioma", "meningioma", "notumor", "pituitary"]
    (roc,) = titled(at, "ROC")
    run = load_run(assets / "models" / "brain_mri", assets)
    assert len(roc["data"]) == 1 + len(run.metrics["roc"])  # no operating point: four classes have no threshold
    assert not [s for s in at.slider if s.label == "Sensitivity to reach"]


# ----------------------------------------------------------------------------- issue 13: kept epoch, log axis, parameters

def test_curves_mark_the_kept_epoch_with_readable_log_ticks_and_every_parameter_row(monkeypatch):
    """The committed default brain model: its curves mark the epoch it kept, the loss axis is labelled
    1-2-5 over the data's range, and the parameter table is as tall as its rows with the full run id."""
    import math

    import streamlit

    run = load_run(ASSETS / "models" / "brain_mri", ASSETS)
    if run.kept_epoch is None:
        pytest.skip("the committed brain model has no params.json")
    heights = []
    original = streamlit.dataframe

    def spy(data, *args, **kwargs):  # what the page asks of each table (the height is not in AppTest's proto)
        heights.append((kwargs.get("height"), kwargs.get("column_config")))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(streamlit, "dataframe", spy)
    monkeypatch.delenv("MEDXAI_ASSETS", raising=False)
    at = history_page()
    at.radio[0].set_value("brain_mri").run(timeout=60)
    assert not at.exception
    assert at.selectbox[0].value == run.run_id

    for title in ("Loss", "Accuracy"):
        (curve,) = titled(at, title)
        (line,) = [s for s in curve["layout"].get("shapes", []) if s.get("type") == "line"]
        assert line["x0"] == line["x1"] == run.kept_epoch and line["line"]["dash"] == "dash"
        assert [a["text"] for a in curve["layout"]["annotations"]] == ["kept"]

    (loss,) = titled(at, "Loss")
    axis = loss["layout"]["yaxis"]
    assert axis["type"] == "log" and "dtick" not in axis
    values = [float(v) for v in axis["tickvals"]]
    assert axis["ticktext"] == [f"{v:g}" for v in values]
    assert all(f"{v:.0e}"[0] in "125" for v in values) and values == sorted(values)
    assert len(set(axis["ticktext"])) == len(values)  # never "5, 2, 1, 5, 2, 0.1"
    losses = [v for column in ("loss", "val_loss") for v in run.history[column]]
    assert values[0] <= min(losses) and values[-1] >= max(losses)
    assert axis["range"] == pytest.approx([math.log10(values[0]), math.log10(values[-1])])

    params = at.dataframe[-1].value
    assert list(params.columns) == [run.run_id] and len(params) == len(run.params)
    assert set(params.index) == set(run.params)
    height, columns = heights[-1]
    assert height == "content"  # every row shown, no scrolling inside the table
    assert columns[run.run_id]["width"] == "large"
    summary_columns = heights[0][1]
    assert summary_columns["run"]["width"] == "large"  # the full run id, e.g. runs/brain_mri/e36-seed0


# ----------------------------------------------------------------------------- issue 14: subgroups

def test_fracture_model_shows_its_metrics_by_hardware_and_body_part(monkeypatch):
    """The committed fracture model recorded validation metrics by subgroup; the page lists them under the
    charts, one row per column and value, with the counts per class; the chest model has none and no table."""
    run = load_run(ASSETS / "models" / "fracture", ASSETS)
    if not run.metrics.get("subgroups"):
        pytest.skip("the committed fracture model has no subgroup metrics")
    monkeypatch.delenv("MEDXAI_ASSETS", raising=False)
    at = history_page()
    at.radio[0].set_value("fracture").run(timeout=60)
    assert not at.exception
    assert at.selectbox[0].value == run.run_id
    tables = [t.value for t in at.dataframe if "subgroup" in t.value.columns]
    assert len(tables) == 1
    table = tables[0].set_index("subgroup")
    expected = {f"{c} = {v}": m for c, values in run.metrics["subgroups"].items() for v, m in values.items()}
    assert set(table.index) == set(expected) and {"hand = 1", "leg = 1", "hardware = 1"} <= set(table.index)
    for name, m in expected.items():
        assert table.loc[name, "images"] == m["n"]
        assert table.loc[name, "sensitivity"] == pytest.approx(m["sensitivity"])
    assert table.loc["hand = 1", "per class"] == ", ".join(f"{k} {v}" for k, v in expected["hand = 1"]["counts"].items())
    assert any("one threshold does not serve the groups alike" in c.value for c in at.caption)

    at.radio[0].set_value("chest_xray").run(timeout=60)
    assert not at.exception
    assert not [t for t in at.dataframe if "subgroup" in t.value.columns]


def test_operating_point_reads_the_threshold_a_sensitivity_needs_from_the_validation_roc(monkeypatch):
    """The committed fracture model saved its threshold for Youden's J (sensitivity 0.60); a teacher asks what
    catching 85% of fractures would cost. The table's second row is the ROC point reaching it with the fewest
    false alarms, its counts from the confusion matrix's rows; the ROC chart marks both points."""
    from core.metrics import operating_point

    run = load_run(ASSETS / "models" / "fracture", ASSETS)
    monkeypatch.delenv("MEDXAI_ASSETS", raising=False)
    at = history_page()
    at.radio[0].set_value("fracture").run(timeout=60)
    (slider,) = [s for s in at.slider if s.label == "Sensitivity to reach"]
    assert slider.value == pytest.approx(0.90)
    slider.set_value(0.85).run(timeout=60)
    assert not at.exception
    (table,) = [t.value for t in at.dataframe if "threshold rule" in t.value.columns]
    saved, chosen = table.to_dict("records")
    (tn, fp), (fn, tp) = run.metrics["confusion_matrix"]
    assert saved["threshold"] == pytest.approx(run.metrics["threshold"])
    assert saved["sensitivity"] == pytest.approx(run.metrics["sensitivity"])
    assert saved["fractured missed"] == f"{fn} of {fn + tp}" and saved["not_fractured flagged"] == f"{fp} of {fp + tn}"
    expected = operating_point(run.metrics["roc"]["fractured"], fn + tp, tn + fp, 0.85)
    assert chosen["threshold rule"] == "sensitivity ≥ 0.85"
    assert chosen["threshold"] == pytest.approx(expected["threshold"])
    assert chosen["threshold"] < run.metrics["threshold"]
    assert 0.85 <= chosen["sensitivity"] and chosen["specificity"] < saved["specificity"]
    assert chosen["not_fractured flagged"] == f"{expected['false_positives']} of {fp + tn}"
    (roc,) = titled(at, "ROC")
    marker = next(t for t in roc["data"] if t["name"].startswith("sensitivity ≥ 0.85"))
    assert marker["x"] == [pytest.approx(1 - chosen["specificity"])] and marker["y"] == [pytest.approx(chosen["sensitivity"])]
    assert any("what it costs in false alarms" in c.value for c in at.caption)


def test_runs_are_placed_by_right_answer_against_right_place(monkeypatch):
    """Issue 12's story on the page: each run measured against outlines is a dot, validation score across and
    Grad-CAM's pointing game up, the default a star and the centre blob a dotted line; the chest model, whose task
    has no outlines, has no such chart."""
    monkeypatch.delenv("MEDXAI_ASSETS", raising=False)
    at = history_page()
    at.radio[0].set_value("fracture").run(timeout=60)
    assert not at.exception
    measured = [run for run in list_runs(ASSETS, task="fracture") if run.localisation and run.finished]
    (figure,) = titled(at, "Validation AUC against Grad-CAM pointing")
    dots = {name: (x, y) for trace in figure["data"]
            for name, x, y in zip((c[0] for c in trace["customdata"]), trace["x"], trace["y"])}
    assert set(dots) == {run.run_id for run in measured}
    default = next(run for run in measured if run.is_default)
    assert dots[default.run_id] == (default.metrics["auc"], default.localisation["pointing"])
    (star,) = [t for t in figure["data"] if t["marker"]["symbol"] == "star"]
    assert star["customdata"][0][0] == "models/fracture"
    (line,) = [s for s in figure["layout"]["shapes"] if s.get("line", {}).get("dash") == "dot"]
    assert line["y0"] == default.localisation["centre"]
    table = at.dataframe[0].value.set_index("run")
    assert table.loc["models/fracture", "Grad-CAM pointing"] == round(default.localisation["pointing"], 3)
    assert any("right for the wrong reasons" in c.value for c in at.caption)

    at.radio[0].set_value("chest_xray").run(timeout=60)
    assert not at.exception and not titled(at, "Validation AUC against Grad-CAM pointing")
