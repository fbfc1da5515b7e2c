"""Classification metrics for a run or an evaluation: AUC, sensitivity, confusion, ROC, calibration.

All functions take integer labels ``y`` (n,) and probabilities ``p`` (n, n_classes).
"""

from __future__ import annotations

import numpy as np


def calibration_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 10) -> tuple[list[dict], float]:
    """Reliability diagram bins and the expected calibration error (ECE).

    ``confidence`` is the probability the model gave to the event, ``correct`` whether the
    event happened (0/1). ECE is the count-weighted mean of |accuracy - confidence|.

    >>> bins, ece = calibration_bins(np.array([0.9, 0.9]), np.array([1, 1]), n_bins=2)
    >>> round(ece, 2)
    0.1
    """
    confidence = np.asarray(confidence, float)
    correct = np.asarray(correct, float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1]), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        if count:
            mean_conf, accuracy = float(confidence[mask].mean()), float(correct[mask].mean())
            ece += count / len(confidence) * abs(accuracy - mean_conf)
        else:
            mean_conf = accuracy = None
        bins.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                     "confidence": mean_conf, "accuracy": accuracy})
    return bins, float(ece)


def calibration_of(p: np.ndarray, y: np.ndarray) -> tuple[list[dict], float, str]:
    """Reliability bins, ECE and what they are of, the way every report here measures calibration.

    Two classes: calibration of P(positive class), the probability a binary decision reads.
    More classes: of the confidence of the predicted (arg-max) class.
    """
    p = np.asarray(p, float)
    y = np.asarray(y, int)
    if p.shape[1] == 2:
        bins, ece = calibration_bins(p[:, 1], y == 1)
        return bins, ece, "P(positive class)"
    bins, ece = calibration_bins(p.max(axis=1), p.argmax(axis=1) == y)
    return bins, ece, "confidence of the predicted class"


def expected_calibration_error(p: np.ndarray, y: np.ndarray) -> float:
    """The ECE of :func:`calibration_of`."""
    return calibration_of(p, y)[1]


def classification_metrics(y: np.ndarray, p: np.ndarray, class_names: list[str], *, threshold: float = 0.5) -> dict:
    """Everything the history page and the model card show, as plain JSON-able values.

    For two classes the last class is the positive one (e.g. PNEUMONIA) and the decision
    is ``p[:, 1] >= threshold``; otherwise the decision is the arg-max.
    """
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    y = np.asarray(y, int)
    p = np.asarray(p, float)
    n_classes = len(class_names)
    binary = n_classes == 2
    predicted = (p[:, 1] >= threshold).astype(int) if binary else p.argmax(axis=1)
    cm = confusion_matrix(y, predicted, labels=list(range(n_classes)))
    recall = {name: _ratio(cm[i, i], cm[i].sum()) for i, name in enumerate(class_names)}
    result = {
        "n": int(len(y)),
        "class_names": list(class_names),
        "accuracy": float((predicted == y).mean()) if len(y) else None,
        "per_class_recall": recall,
        "confusion_matrix": cm.tolist(),
    }
    present = np.unique(y)
    roc = {}
    if binary:
        result["threshold"] = float(threshold)
        result["sensitivity"] = recall[class_names[1]]
        result["specificity"] = recall[class_names[0]]
        if len(present) == 2:
            result["auc"] = float(roc_auc_score(y, p[:, 1]))
            fpr, tpr, thr = roc_curve(y, p[:, 1])
            roc[class_names[1]] = _thin_roc(fpr, tpr, thr)
    elif len(present) == n_classes:
        result["auc"] = float(roc_auc_score(y, p, multi_class="ovr", average="macro"))
        for i, name in enumerate(class_names):
            fpr, tpr, thr = roc_curve(y == i, p[:, i])
            roc[name] = _thin_roc(fpr, tpr, thr)
    bins, ece, of = calibration_of(p, y)
    result.setdefault("auc", None)
    result["roc"] = roc
    result["calibration"] = {"bins": bins, "ece": ece, "of": of}
    return result


def _ratio(a, b):
    return float(a) / float(b) if b else None


def _thin_roc(fpr, tpr, thr, max_points: int = 200) -> dict:
    """ROC points, thinned to at most ``max_points`` so run folders stay small."""
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return {"fpr": [round(float(v), 5) for v in fpr], "tpr": [round(float(v), 5) for v in tpr],
            "threshold": [round(float(v), 5) for v in thr]}
