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


#: How the operating threshold of a two-class model is chosen (``model.json``'s ``threshold_rule``).
THRESHOLD_RULE = ("the positive class's share of the training split: on calibrated probabilities this is the "
                  "Bayes decision that maximises the expected Youden's J (sensitivity + specificity - 1); "
                  "unlike the empirical maximum of J on validation, it does not follow a few borderline images")


def prevalence_threshold(y_train: np.ndarray) -> float:
    """The decision threshold on calibrated P(positive) that maximises expected sensitivity + specificity.

    Deciding "positive" when ``p / (1 - p) > pi / (1 - pi)``, that is ``p > pi`` with ``pi`` the prevalence
    the probabilities were calibrated at, weighs a missed positive and a false alarm by the inverse of
    their class's frequency: the balanced-cost Bayes rule, whose expected balanced accuracy is highest.

    >>> prevalence_threshold(np.array([0, 1, 1, 1]))
    0.75
    """
    y_train = np.asarray(y_train, int)
    return round(float(y_train.mean()), 6) if len(y_train) else 0.5


def youden_threshold(y: np.ndarray, p_positive: np.ndarray) -> float:
    """The decision threshold on P(positive) that maximises Youden's J on ``(y, p_positive)``.

    The cut is placed halfway between the score that reaches the best J and the next lower score, so
    a validation image that sits exactly on it does not decide it. With one class only: 0.5.

    >>> youden_threshold(np.array([0, 0, 1, 1]), np.array([0.1, 0.3, 0.6, 0.9]))
    0.45
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y, int)
    p_positive = np.asarray(p_positive, float)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thresholds = roc_curve(y, p_positive)
    best = int(np.argmax(tpr - fpr))
    cut = float(min(thresholds[best], 1.0))
    lower = p_positive[p_positive < cut]
    return round(float((cut + lower.max()) / 2) if len(lower) else cut, 6)


def subgroup_metrics(y: np.ndarray, p: np.ndarray, groups: dict[str, np.ndarray], class_names: list[str],
                     threshold: float = 0.5) -> dict:
    """Metrics of the images within each value of each grouping, e.g. with and without metal hardware.

    Parameters
    ----------
    y, p : labels (n,) and probabilities (n, n_classes) of one evaluation, e.g. the validation split.
    groups : ``{name: values (n,)}``, one value per image (``0``/``1`` columns of an index CSV).
    class_names, threshold : as for :func:`classification_metrics`, which scores every subgroup.

    Returns
    -------
    ``{name: {value: {"n", "counts", "accuracy", "auc", "sensitivity", "specificity", "threshold"}}}`` with
    the values as strings (JSON keys); ``auc`` is None unless both classes occur in the subgroup, sensitivity
    or specificity None when it holds no image of their class; sensitivity, specificity and threshold only
    for two classes. A blank value is reported as ``"missing"``.

    >>> y = np.array([0, 0, 1, 1, 0, 1])
    >>> p1 = np.array([0.2, 0.6, 0.7, 0.4, 0.1, 0.9])
    >>> out = subgroup_metrics(y, np.stack([1 - p1, p1], axis=1), {"metal": np.array([0, 0, 0, 0, 1, 1])},
    ...                        ["no", "yes"])
    >>> out["metal"]["0"]["n"], out["metal"]["0"]["auc"], out["metal"]["0"]["sensitivity"]
    (4, 0.75, 0.5)
    >>> out["metal"]["1"]["auc"], out["metal"]["1"]["specificity"], out["metal"]["1"]["counts"]
    (1.0, 1.0, {'no': 1, 'yes': 1})
    """
    y = np.asarray(y, int)
    p = np.asarray(p, float)
    result = {}
    for name, values in groups.items():
        values = np.array([str(v).strip() or "missing" for v in values], dtype=object)
        if len(values) != len(y):
            raise ValueError(f"The grouping {name} has {len(values)} values for {len(y)} images.")
        result[name] = {}
        for value in sorted(set(values)):
            mask = values == value
            m = classification_metrics(y[mask], p[mask], class_names, threshold=threshold)
            result[name][value] = {"n": m["n"],
                                   "counts": {c: int((y[mask] == i).sum()) for i, c in enumerate(class_names)},
                                   **{k: m[k] for k in ("accuracy", "auc", "sensitivity", "specificity", "threshold")
                                      if k in m}}
    return result


def operating_point(curve: dict, positives: int, negatives: int, min_sensitivity: float) -> dict | None:
    """The point of a stored ROC curve that keeps at least ``min_sensitivity`` with the most specificity:
    what a binary model would give at the threshold that reaches that sensitivity on its validation images.

    Parameters
    ----------
    curve : ``{"fpr", "tpr", "threshold"}`` as stored in ``metrics.json`` (:func:`_thin_roc`; a case is called
        positive when its probability is at or above the threshold, as ``LoadedModel.decide`` does).
    positives, negatives : validation images of each class (the confusion matrix's rows), to turn the rates
        into counts.
    min_sensitivity : the share of positive cases the threshold must catch, in [0, 1].

    Returns
    -------
    ``{"threshold", "sensitivity", "specificity", "true_positives", "false_negatives", "false_positives",
    "true_negatives", "ppv", "npv"}`` (ppv, npv at the validation images' prevalence; None when no case is
    called that way), or None when the curve is empty or no image of a class was seen.

    >>> curve = {"fpr": [0.0, 0.0, 0.25, 0.5, 1.0], "tpr": [0.0, 0.5, 0.5, 1.0, 1.0],
    ...          "threshold": [1.0, 0.8, 0.6, 0.3, 0.1]}
    >>> point = operating_point(curve, positives=2, negatives=4, min_sensitivity=0.9)
    >>> point["threshold"], point["sensitivity"], point["specificity"], point["false_positives"], point["ppv"]
    (0.3, 1.0, 0.5, 2, 0.5)
    >>> operating_point(curve, 2, 4, 0.5)["threshold"]   # the first point at 0.5 sensitivity, no false alarm
    0.8
    """
    fpr, tpr, thr = (np.asarray(curve.get(k) or [], float) for k in ("fpr", "tpr", "threshold"))
    if not len(fpr) or positives <= 0 or negatives <= 0:
        return None
    reaching = np.flatnonzero(tpr >= min_sensitivity - 1e-9)
    i = int(reaching[np.argmin(fpr[reaching])]) if len(reaching) else int(np.argmax(tpr))
    tp, fp = int(round(tpr[i] * positives)), int(round(fpr[i] * negatives))
    return point_figures(float(thr[i]), [[negatives - fp, fp], [positives - tp, tp]])


def point_figures(threshold: float, confusion: list[list[int]]) -> dict:
    """A binary model's figures at one threshold from its 2 x 2 confusion matrix ``[[tn, fp], [fn, tp]]`` (rows:
    true negative, positive class; the keys of :func:`operating_point`).

    >>> point = point_figures(0.2, [[8, 2], [1, 3]])
    >>> point["sensitivity"], point["specificity"], point["ppv"], point["npv"]
    (0.75, 0.8, 0.6, 0.888...)
    """
    (tn, fp), (fn, tp) = confusion
    return {"threshold": float(threshold), "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "true_positives": tp, "false_negatives": fn, "false_positives": fp, "true_negatives": tn,
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn)}


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
