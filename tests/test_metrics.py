"""core.metrics: values checked by hand on small cases, JSON-ability, calibration bins."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.metrics import calibration_bins, classification_metrics, subgroup_metrics

NAMES = ["NORMAL", "PNEUMONIA"]


def binary(p_positive):
    p = np.asarray(p_positive, float)
    return np.stack([1 - p, p], axis=1)


def test_binary_metrics_by_hand():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = binary([0.1, 0.4, 0.6, 0.35, 0.8, 0.9])
    m = classification_metrics(y, p, NAMES)
    # decisions at 0.5: [0, 0, 1, 0, 1, 1]
    assert m["n"] == 6 and m["class_names"] == NAMES
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(2 / 3)
    assert m["per_class_recall"] == pytest.approx({"NORMAL": 2 / 3, "PNEUMONIA": 2 / 3})
    # positive/negative pairs ranked correctly: 0.35 beats only 0.1, 0.8 and 0.9 beat all: 7 of 9
    assert m["auc"] == pytest.approx(7 / 9)
    roc = m["roc"]["PNEUMONIA"]
    assert roc["fpr"][0] == 0.0 and roc["fpr"][-1] == 1.0 and roc["tpr"][-1] == 1.0
    assert all(np.isfinite(roc["threshold"]))
    assert m["threshold"] == 0.5 and m["calibration"]["of"] == "P(positive class)"


def test_threshold_moves_the_decision():
    y = np.array([0, 0, 0, 1, 1, 1])
    p = binary([0.1, 0.4, 0.6, 0.35, 0.8, 0.9])
    m = classification_metrics(y, p, NAMES, threshold=0.3)
    assert m["sensitivity"] == 1.0 and m["specificity"] == pytest.approx(1 / 3)
    assert m["auc"] == classification_metrics(y, p, NAMES)["auc"]  # AUC does not depend on it


def test_single_class_present_has_no_auc():
    m = classification_metrics(np.array([1, 1, 1]), binary([0.7, 0.2, 0.9]), NAMES)
    assert m["auc"] is None and m["roc"] == {} and m["specificity"] is None
    assert m["sensitivity"] == pytest.approx(2 / 3)


def test_multiclass_metrics():
    names = ["glioma", "meningioma", "notumor", "pituitary"]
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    p = np.full((8, 4), 0.1)
    p[np.arange(8), y] = 0.7
    p[7] = [0.1, 0.1, 0.7, 0.1]  # one pituitary called notumor
    m = classification_metrics(y, p, names)
    assert m["accuracy"] == pytest.approx(7 / 8)
    assert m["per_class_recall"]["pituitary"] == 0.5
    assert "sensitivity" not in m and m["auc"] is not None and set(m["roc"]) == set(names)
    assert np.trace(np.array(m["confusion_matrix"])) == 7
    assert m["calibration"]["of"] == "confidence of the predicted class"


def test_metrics_are_strict_json_and_roc_is_thinned():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    p = binary(np.clip(0.3 * y + rng.random(2000) * 0.7, 0, 1))
    m = classification_metrics(y, p, NAMES)
    assert json.loads(json.dumps(m, allow_nan=False)) == m
    assert len(m["roc"]["PNEUMONIA"]["fpr"]) <= 200


def test_calibration_bins_by_hand():
    bins, ece = calibration_bins(np.array([0.9, 0.9]), np.array([1, 1]), n_bins=2)
    assert ece == pytest.approx(0.1)
    assert bins[0]["count"] == 0 and bins[0]["confidence"] is None and bins[0]["accuracy"] is None
    assert bins[1] == {"low": 0.5, "high": 1.0, "count": 2, "confidence": 0.9, "accuracy": 1.0}
    _, perfect = calibration_bins(np.array([0.25, 0.25, 0.25, 0.25]), np.array([1, 0, 0, 0]), n_bins=4)
    assert perfect == pytest.approx(0.0)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=50), st.integers(1, 20))
def test_calibration_bins_partition_every_prediction(pairs, n_bins):
    confidence = np.array([c for c, _ in pairs])
    correct = np.array([k for _, k in pairs])
    bins, ece = calibration_bins(confidence, correct, n_bins=n_bins)
    assert len(bins) == n_bins and sum(b["count"] for b in bins) == len(pairs)
    assert 0.0 <= ece <= 1.0
    for b in bins:
        if b["count"]:
            assert b["low"] - 1e-12 <= b["confidence"] <= b["high"] + 1e-12


def test_subgroup_metrics_by_hand():
    """With and without metal: the same validation probabilities, scored within each value."""
    y = np.array([0, 0, 0, 1, 1, 1, 0, 1, 1])
    p = binary([0.1, 0.4, 0.6, 0.35, 0.8, 0.9, 0.7, 0.95, 0.2])
    hardware = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    out = subgroup_metrics(y, p, {"hardware": hardware, "view": ["", "", "", "", "", "", "", "", "1"]}, NAMES)
    assert set(out) == {"hardware", "view"} and set(out["hardware"]) == {"0", "1"}
    without = out["hardware"]["0"]  # the case of test_binary_metrics_by_hand
    assert without == {"n": 6, "counts": {"NORMAL": 3, "PNEUMONIA": 3}, "accuracy": pytest.approx(4 / 6),
                       "auc": pytest.approx(7 / 9), "sensitivity": pytest.approx(2 / 3),
                       "specificity": pytest.approx(2 / 3), "threshold": 0.5}
    metal = out["hardware"]["1"]  # 0.95 and 0.2 positive, 0.7 negative: one of two pairs ranked right
    assert metal["n"] == 3 and metal["auc"] == pytest.approx(0.5)
    assert metal["sensitivity"] == pytest.approx(0.5) and metal["specificity"] == 0.0
    assert out["view"]["missing"]["n"] == 8 and out["view"]["1"] == {
        "n": 1, "counts": {"NORMAL": 0, "PNEUMONIA": 1}, "accuracy": 0.0, "auc": None, "sensitivity": 0.0,
        "specificity": None, "threshold": 0.5}  # one class only: no AUC, no specificity
    assert subgroup_metrics(y, p, {"hardware": hardware}, NAMES, threshold=0.15)["hardware"]["1"]["sensitivity"] == 1.0
    assert json.loads(json.dumps(out, allow_nan=False)) == out
    with pytest.raises(ValueError, match="has 2 values for 9 images"):
        subgroup_metrics(y, p, {"short": [0, 1]}, NAMES)


def test_subgroup_metrics_for_more_classes():
    names = ["a", "b", "c"]
    y = np.array([0, 1, 2, 0])
    p = np.eye(3)[[0, 1, 1, 0]]
    out = subgroup_metrics(y, p, {"site": np.array([1, 1, 2, 2])}, names)
    assert out["site"]["1"]["accuracy"] == 1.0 and out["site"]["2"]["accuracy"] == 0.5
    assert "sensitivity" not in out["site"]["1"] and out["site"]["1"]["auc"] is None
