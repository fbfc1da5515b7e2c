"""Training history: every run of each model — learning curves, validation metrics, confusion
matrix, ROC curves, reliability diagram, parameters — and two runs side by side.

Runs are read by ``core.runs`` from ``MEDXAI_ASSETS`` (default: the project's ``assets/``), and from the
folders of extra models (models trained from the Models page); a training still running on the server's
queue (``core.jobs``) is listed too, its curves redrawn live as its epochs end.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from core.jobs import shared_queue
from core.metrics import operating_point, point_figures
from core.registry import extra_roots
from core.runs import Run, assets_root, list_runs, load_run
from core.settings import SettingsError
from ui.figures import LEGEND_BELOW, evidence_figure
from ui.layout import disclaimer
from ui.runtime import through_app

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

COLOURS = ("#4C9BE8", "#F28E2B")  # the chosen run, the run it is compared with
CURVES = {"loss": "Loss", "accuracy": "Accuracy", "auc": "AUC"}
LIVE_SECONDS = 3.0  # how often the curves of a run still training are redrawn
READ_CURVES = ("Read each chart left to right: solid lines are the training images, dashed lines the "
               "validation images the model never learned from; when the validation loss turns up while the "
               "training loss keeps falling, the model has started to memorise its training set (overfitting).")
READ_METRICS = ("Validation metrics of the model the run kept, measured on its held-out validation images; "
                "sensitivity is the share of positive cases found, specificity the share of negatives cleared.")
READ_CONFUSION = ("Rows are the true class and columns the predicted class: the diagonal counts correct answers "
                  "and every other cell counts one kind of mistake.")
READ_ROC = ("As the decision threshold moves, each curve plots the share of cases caught (sensitivity) against "
            "the share of other cases wrongly flagged (1 − specificity): the nearer the top-left corner the "
            "better, and the dotted diagonal is what guessing achieves (AUC 0.5).")
READ_SUBGROUPS = ("The same validation images split by a column of the dataset's index (1 = yes, 0 = no), at the "
                  "same decision threshold: where a group's sensitivity or specificity is far from the others', "
                  "one threshold does not serve the groups alike, and a feature like metal or body part may be "
                  "carrying the score. Few images in a group make its figures uncertain; an empty AUC means the "
                  "group holds one class only.")
READ_EVIDENCE = ("Each dot is one run of this model: across, how often it is right on its validation images; up, how "
                 "often its Grad-CAM map's peak lands on the lesion on outlined images it never trained on (the "
                 "pointing game, with its 95% interval). Only dots above the dotted line, a fixed blob in the image "
                 "centre, point at the lesion better than a guess that ignores the image: a dot far right and low is "
                 "right for the wrong reasons. Measured with `python -m core explain-eval`; runs not measured are "
                 "left out.")
READ_OPERATING = ("A binary model calls a case positive when its probability reaches the decision threshold. Choose "
                  "the share of positive cases it must catch: the table reads, from the run's validation ROC curve, "
                  "the threshold that does so and what it costs in false alarms, beside the threshold the run saved "
                  "(the one every page uses). Positive and negative predictive values are at the validation images' "
                  "own mix of classes; both move with how common the condition is where the model is used.")
SENSITIVITY_KEY = "history_sensitivity"
DEFAULT_SENSITIVITY = 0.90  # the slider's start: catch nine positive cases in ten
READ_CALIBRATION = ("If the model is well calibrated the dots lie on the diagonal — of the images given 80 % "
                    "confidence, about 80 % turn out right; dots below the line mean over-confidence, the grey "
                    "bars count the images in each bin, and the ECE is the count-weighted mean gap.")


def curves_figure(metric: str, runs: list[Run]) -> go.Figure | None:
    """Training (solid) and validation (dashed) values of one metric per epoch, one colour per run."""
    fig = go.Figure()
    for run, colour in zip(runs, COLOURS):
        for column, dash, split in ((metric, "solid", "training"), (f"val_{metric}", "dash", "validation")):
            if column in run.history:
                name = f"{split} · {run.run_id}" if len(runs) > 1 else split
                fig.add_trace(go.Scatter(x=run.history.get("epoch"), y=run.history[column], name=name,
                                         mode="lines+markers", line=dict(color=colour, dash=dash)))
    if not fig.data:
        return None
    for run, colour in zip(runs, COLOURS):  # the epoch whose weights the run kept (best validation score)
        if run.kept_epoch is not None:
            fig.add_vline(x=run.kept_epoch, line=dict(color=colour, dash="dash", width=1), annotation_text="kept",
                          annotation_position="top", annotation_font_color=colour)
    fig.update_layout(title=CURVES[metric], height=340, margin=dict(l=10, r=10, t=40, b=10),
                      legend=LEGEND_BELOW, hovermode="x unified")
    # one tick per epoch only for short runs: three charts share a row, and 20 labels overlapped
    fig.update_xaxes(title="epoch", dtick=1 if max(r.epochs for r in runs) <= 10 else None)
    if metric == "loss":  # early spikes would flatten the rest of a linear axis
        values = [v for trace in fig.data for v in trace.y if v == v and 0 < v < math.inf]
        ticks = log_ticks(min(values), max(values)) if values else []
        fig.update_yaxes(type="log", title="log scale", tickvals=ticks, ticktext=[f"{t:g}" for t in ticks],
                         range=[math.log10(ticks[0]), math.log10(ticks[-1])] if len(ticks) > 1 else None)
    return fig


def log_ticks(low: float, high: float) -> list[float]:
    """The 1-2-5 values from the largest at or below ``low`` to the smallest at or above ``high``.

    >>> log_ticks(0.03, 0.7)
    [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    """
    steps = [float(f"{m}e{k}") for k in range(math.floor(math.log10(low)) - 1, math.floor(math.log10(high)) + 2)
             for m in (1, 2, 5)]
    first = max(t for t in steps if t <= low * (1 + 1e-9))
    last = min(t for t in steps if t >= high * (1 - 1e-9))
    return [t for t in steps if first <= t <= last]


def confusion_figure(run: Run) -> go.Figure:
    names, counts = run.metrics["class_names"], run.metrics["confusion_matrix"]
    fig = go.Figure(go.Heatmap(z=counts, x=names, y=names, text=counts, texttemplate="%{text}", textfont=dict(size=16),
                               colorscale="Blues", showscale=False,
                               hovertemplate="true %{y}, predicted %{x}: %{z} images<extra></extra>"))
    fig.update_xaxes(title="predicted", type="category")
    fig.update_yaxes(title="true", type="category", autorange="reversed")
    fig.update_layout(title=f"Confusion matrix · {run.run_id}", height=380, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def roc_figure(run: Run) -> go.Figure | None:
    """One ROC curve per class (one-vs-rest), or the positive class's curve for a binary model, with the saved
    threshold's point and the operating point chosen below the charts."""
    roc, names = run.metrics.get("roc") or {}, run.metrics["class_names"]
    if not roc:
        return None
    binary = len(names) == 2
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance (AUC 0.5)",
                               line=dict(color="grey", dash="dot")))
    for name, curve in roc.items():
        fpr, tpr = curve["fpr"], curve["tpr"]
        if binary and run.metrics.get("auc") is not None:
            label = f"{name} (AUC {run.metrics['auc']:.3f})"
        else:  # area of the stored (thinned) curve: close to, not exactly, the one-vs-rest AUC
            area = sum((x1 - x0) * (y1 + y0) / 2 for x0, x1, y0, y1 in zip(fpr, fpr[1:], tpr, tpr[1:]))
            label = f"{name} vs rest (AUC ≈ {area:.3f})"
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=label, customdata=curve.get("threshold"),
                                 hovertemplate="1 − specificity %{x:.3f}<br>sensitivity %{y:.3f}"
                                               "<br>threshold %{customdata:.3f}<extra></extra>"))
    if binary:
        wanted = st.session_state.get(SENSITIVITY_KEY, DEFAULT_SENSITIVITY)
        for label, point, symbol in (("saved threshold", saved_point(run), "diamond"),
                                     (f"sensitivity ≥ {wanted:.2f}", chosen_point(run, wanted), "circle-open")):
            if point is not None:
                fig.add_trace(go.Scatter(x=[1 - point["specificity"]], y=[point["sensitivity"]], mode="markers",
                                         name=f"{label} ({point['threshold']:.3f})",
                                         marker=dict(symbol=symbol, size=12, line=dict(width=2)),
                                         hovertemplate="1 − specificity %{x:.3f}<br>sensitivity %{y:.3f}"
                                                       "<extra></extra>"))
    title = f"ROC · {run.run_id}"
    if not binary and run.metrics.get("auc") is not None:
        title += f" · macro AUC {run.metrics['auc']:.3f}"
    fig.update_xaxes(title="1 − specificity (false positive rate)", range=[0, 1], constrain="domain")
    fig.update_yaxes(title="sensitivity (true positive rate)", range=[0, 1.02], scaleanchor="x", scaleratio=1)
    fig.update_layout(title=title, height=420, margin=dict(l=10, r=10, t=40, b=10),
                      legend=LEGEND_BELOW)
    return fig


def class_totals(run: Run) -> tuple[int, int] | None:
    """(positives, negatives) among a binary run's validation images, from its confusion matrix's rows."""
    counts = run.metrics.get("confusion_matrix") or []
    if len(run.metrics.get("class_names") or []) != 2 or len(counts) != 2:
        return None
    return int(sum(counts[1])), int(sum(counts[0]))


def saved_point(run: Run) -> dict | None:
    """The saved threshold's figures, from the run's confusion matrix (as the metrics table shows them)."""
    totals = class_totals(run)
    if totals is None or run.metrics.get("threshold") is None or not all(totals):
        return None
    return point_figures(run.metrics["threshold"], run.metrics["confusion_matrix"])


def chosen_point(run: Run, wanted: float) -> dict | None:
    totals = class_totals(run)
    curve = next(iter((run.metrics.get("roc") or {}).values()), None)
    if totals is None or curve is None:
        return None
    return operating_point(curve, *totals, min_sensitivity=wanted)


def operating_table(runs: list[Run], wanted: float) -> pd.DataFrame | None:
    """The saved threshold and the one reaching ``wanted`` sensitivity, one row each per binary run."""
    rows = []
    for run in runs:
        negative, positive = run.metrics["class_names"]  # binary runs only (class_totals)
        for label, point in (("saved threshold", saved_point(run)),
                             (f"sensitivity ≥ {wanted:.2f}", chosen_point(run, wanted))):
            if point is None:
                continue
            rows.append({"run": run.run_id, "threshold rule": label, "threshold": point["threshold"],
                         "sensitivity": point["sensitivity"], "specificity": point["specificity"],
                         f"{positive} missed": f"{point['false_negatives']} of "
                                              f"{point['false_negatives'] + point['true_positives']}",
                         f"{negative} flagged": f"{point['false_positives']} of "
                                                f"{point['false_positives'] + point['true_negatives']}",
                         "PPV": point["ppv"], "NPV": point["npv"]})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    return table.drop(columns="run") if table["run"].nunique() == 1 else table


def calibration_figure(run: Run) -> go.Figure | None:
    """Reliability diagram: observed frequency against mean confidence per bin, counts as bars."""
    calibration = run.metrics.get("calibration") or {}
    bins = calibration.get("bins") or []
    if not bins:
        return None
    names = run.metrics["class_names"]
    binary = len(names) == 2
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_trace(go.Bar(x=[(b["low"] + b["high"]) / 2 for b in bins], y=[b["count"] for b in bins],
                         width=[b["high"] - b["low"] for b in bins], name="images per bin",
                         marker=dict(color="rgba(160,160,160,0.35)")), secondary_y=True)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration",
                             line=dict(color="grey", dash="dot")), secondary_y=False)
    used = [b for b in bins if b["count"]]
    fig.add_trace(go.Scatter(x=[b["confidence"] for b in used], y=[b["accuracy"] for b in used],
                             mode="lines+markers", name="model", line=dict(color=COLOURS[0])), secondary_y=False)
    fig.update_xaxes(title=f"predicted P({names[1]})" if binary else "confidence of the predicted class", range=[0, 1])
    fig.update_yaxes(title=f"fraction truly {names[1]}" if binary else "fraction correct", range=[0, 1.02],
                     secondary_y=False)
    fig.update_yaxes(title="images", showgrid=False, tickmode="auto", rangemode="tozero", secondary_y=True)
    fig.update_layout(title=f"Reliability · {run.run_id} · ECE {calibration.get('ece', float('nan')):.3f}",
                      height=420, margin=dict(l=10, r=10, t=40, b=10), legend=LEGEND_BELOW)
    return fig


def metrics_table(runs: list[Run]) -> pd.DataFrame:
    """Validation metrics, one column per run."""
    columns = {}
    for run in runs:
        m = run.metrics
        column = {"validation images": m.get("n"), "accuracy": m.get("accuracy"), "AUC": m.get("auc"),
                  "sensitivity": m.get("sensitivity"), "specificity": m.get("specificity"),
                  "decision threshold": m.get("threshold"), "ECE": (m.get("calibration") or {}).get("ece")}
        column |= {f"recall {name}": value for name, value in (m.get("per_class_recall") or {}).items()}
        columns[run.run_id] = {k: v for k, v in column.items() if v is not None}
    return pd.DataFrame(columns)


def subgroup_table(runs: list[Run]) -> pd.DataFrame | None:
    """Validation metrics by subgroup (``metrics.json``'s ``subgroups``, e.g. with and without metal, or body
    part), one row per run, column and value; None when no run recorded any."""
    rows = []
    for run in runs:
        for column, values in (run.metrics.get("subgroups") or {}).items():
            for value, m in values.items():
                counts = m.get("counts") or {}
                rows.append({"run": run.run_id, "subgroup": f"{column} = {value}", "images": m.get("n"),
                             "per class": ", ".join(f"{name} {count}" for name, count in counts.items()),
                             "AUC": m.get("auc"), "sensitivity": m.get("sensitivity"),
                             "specificity": m.get("specificity"), "accuracy": m.get("accuracy")})
    if not rows:
        return None
    table = pd.DataFrame(rows)
    return table.drop(columns="run") if table["run"].nunique() == 1 else table


def params_table(runs: list[Run]) -> pd.DataFrame:
    """Training parameters, one column per run, as text (nested values as compact JSON)."""
    def text(value):
        return value if isinstance(value, str) else json.dumps(value)
    return pd.DataFrame({run.run_id: {k: text(v) for k, v in run.params.items()} for run in runs}).fillna("")


def show(fig: go.Figure | None, missing: str) -> None:
    if fig is None:
        st.caption(missing)
    else:
        st.plotly_chart(fig, config={"displaylogo": False})


def live_run(view) -> Run:
    """A training still on the server's queue, read from its staging folder (``core.jobs``), under the run id
    its model folder will have once it is finished, so the page keeps it chosen when it is."""
    root = view.staging.parents[2]
    return replace(load_run(view.staging, view.staging), run_id=f"{root.name}/{view.name}", task=view.name,
                   is_default=False)


def extra_runs() -> tuple[list[Run], dict[str, str]]:
    """Runs of the models trained into the folders of extra models, and the trainings running now:
    (runs, {run id: job id} of the running ones)."""
    try:
        roots = extra_roots()
    except SettingsError:
        roots = []
    found = {}
    for root in roots:
        for path in sorted(root.glob("*/history.csv")) if root.is_dir() else []:
            run = replace(load_run(path.parent, root.parent), is_default=False)
            found[run.run_id] = run
    live = {}
    for view in shared_queue().views():
        if view.active and (view.staging / "history.csv").is_file():
            run = live_run(view)
            found.setdefault(run.run_id, run)
            live[run.run_id] = view.id
    return list(found.values()), live


def learning_curves(shown: list[Run]) -> None:
    for run in shown:
        if run.epochs == 0:
            st.info(f"**{run.run_id}** has not finished its first epoch yet.")
    for column, metric in zip(st.columns(len(CURVES)), CURVES):
        with column:
            show(curves_figure(metric, shown), f"No {CURVES[metric].lower()} was recorded.")
    for column, run in zip(st.columns(len(shown)), shown):
        column.download_button(f"Download the history of {run.run_id} (CSV)", run.history_csv(),
                               file_name=f"{run.run_id.replace('/', '_')}_history.csv", mime="text/csv",
                               icon=":material/download:")


@st.fragment(run_every=LIVE_SECONDS)
def live_learning_curves(job_id: str, compared: list[Run]) -> None:
    """The curves of a run still training, redrawn every few seconds from its growing ``history.csv``;
    the whole page is redrawn once the run ends (its metrics, or its removal when cancelled)."""
    view = shared_queue().view(job_id)
    if view is None or not view.active or not (view.staging / "history.csv").is_file():
        st.rerun()
    run = live_run(view)
    st.caption(f"Training now: {run.epochs} of {view.epochs} epochs done"
               + (", calibrating" if view.state == "calibrating" else "")
               + f"; the curves are redrawn every {LIVE_SECONDS:g} s.")
    learning_curves([run] + compared)


# ----------------------------------------------------------------------------- page

st.title("Training history")
disclaimer()

trained_here, live = extra_runs()
runs = list_runs() + trained_here
if not runs:
    st.info(f"No training runs yet: a run appears here as soon as `python -m core train` has finished its "
            f"first epoch under {assets_root()}.")
    st.stop()

titles = {}
for run in runs:  # default models first: their own model.json names the task
    titles.setdefault(run.task, run.title)
task = st.radio("Model", list(titles), format_func=titles.get, horizontal=True,
                key="history_model")  # keyed: a training that starts or ends elsewhere leaves the choice alone
task_runs = {run.run_id: run for run in runs if run.task == task}

st.dataframe(pd.DataFrame([run.summary() for run in task_runs.values()]).drop(columns="task"), hide_index=True,
             column_config={"run": st.column_config.TextColumn("run", width="large")})
st.caption("One row per training run of this model; the default model is the one the other pages use, and "
           "“no metrics yet” means the run is still training or stopped before its end. Grad-CAM pointing: the "
           "share of outlined images the run never trained on where its map's peak lands on the lesion; centre "
           "prior: the same for a fixed blob in the image centre (None: not measured, or no outlines exist).")

evidence = evidence_figure(list(task_runs.values()))
if evidence is not None:
    st.subheader("Right answer, right place")
    st.caption(READ_EVIDENCE)
    st.plotly_chart(evidence, config={"displaylogo": False})

left, right = st.columns(2)
chosen = left.selectbox("Run", list(task_runs))
others = [run_id for run_id in task_runs if run_id != chosen]
compared = right.selectbox("Compare with", ["(none)", *others], disabled=not others,
                           help="Overlay a second run's curves and put its metrics beside the first.")
shown = [task_runs[chosen]] + ([task_runs[compared]] if compared in task_runs else [])

st.subheader("Learning curves")
st.caption(READ_CURVES)
if chosen in live:
    live_learning_curves(live[chosen], shown[1:])
else:
    learning_curves(shown)

st.subheader("Validation metrics")
for run in shown:
    if not run.finished:
        st.info(f"Validation metrics of **{run.run_id}** are not available yet: the run is still training "
                "(or stopped before its end), so only its learning curves are shown.")
finished = [run for run in shown if run.finished]
if finished:
    st.caption(READ_METRICS)
    st.dataframe(metrics_table(finished))
    charts = (("Confusion matrix", confusion_figure, READ_CONFUSION), ("ROC curves", roc_figure, READ_ROC),
              ("Reliability diagram", calibration_figure, READ_CALIBRATION))
    missing = "Not available: the validation images did not contain every class."
    if len(finished) == 1:
        for column, (title, build, how) in zip(st.columns(len(charts)), charts):
            with column:
                st.markdown(f"**{title}**")
                st.caption(how)
                show(build(finished[0]), missing)
    else:
        for title, build, how in charts:
            st.markdown(f"**{title}**")
            st.caption(how)
            for column, run in zip(st.columns(len(finished)), finished):
                with column:
                    show(build(run), missing)

    subgroups = subgroup_table(finished)
    if subgroups is not None:
        st.markdown("**By subgroup**")
        st.caption(READ_SUBGROUPS)
        st.dataframe(subgroups, hide_index=True,
                     column_config={name: st.column_config.NumberColumn(name, format="%.3f")
                                    for name in ("AUC", "sensitivity", "specificity", "accuracy")})

    binary = [run for run in finished if class_totals(run) is not None and run.metrics.get("roc")]
    if binary:
        st.markdown("**Operating point**")
        st.caption(READ_OPERATING)
        wanted = st.slider("Sensitivity to reach", 0.50, 1.00, DEFAULT_SENSITIVITY, 0.01, key=SENSITIVITY_KEY,
                           help="The share of positive validation cases the threshold must catch; the ROC "
                                "chart above marks the point as a circle, the saved threshold as a diamond.")
        st.dataframe(operating_table(binary, wanted), hide_index=True,
                     column_config={name: st.column_config.NumberColumn(name, format="%.3f")
                                    for name in ("threshold", "sensitivity", "specificity", "PPV", "NPV")})

st.subheader("Parameters")
with_params = [run for run in shown if run.params]
if with_params:
    st.caption("How each run was trained: data, epochs, seed, image size, network width, learning rate and the "
               "class weights that balance the classes.")
    table = params_table(with_params)
    st.dataframe(table, height="content",  # every parameter, without scrolling inside the table
                 column_config={"_index": st.column_config.TextColumn("parameter", width="medium")}  # names uncut
                 | {run.run_id: st.column_config.TextColumn(run.run_id, width="large") for run in with_params})
else:
    st.caption("The parameters are written when the run ends.")
