"""After training: temperature scaling and an out-of-distribution check, fitted on the run's own split.

``python -m core calibrate --model DIR --data DIR`` rebuilds the run's split from its
``split.json`` and writes into the model folder:

- ``temperature`` in ``model.json`` (1.0 when scaling would not lower the validation NLL),
  with the ECE before and after, so the dashboard shows calibrated probabilities;
- ``ood.npz``: mean and precision of the model's pooled features on the training images and
  a distance threshold (the 99th percentile of the validation images' distances). An upload
  farther than that from the training images is flagged as unlike what the model learned.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.model import INFO_FILE, _json_default, sha256_file

OOD_FILE = "ood.npz"
OOD_QUANTILE = 0.99


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of ``softmax(log p / T)``.

    >>> p = np.array([[0.99, 0.01], [0.01, 0.99], [0.99, 0.01], [0.01, 0.99]])
    >>> fit_temperature(p, np.array([0, 1, 1, 0])) > 1  # over-confident and wrong half the time
    True
    """
    from scipy.optimize import minimize_scalar

    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0))
    labels = np.asarray(labels, int)

    def nll(log_t):
        z = logits / np.exp(log_t)
        z -= z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -log_p[np.arange(len(labels)), labels].mean()

    result = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x)) if result.fun < nll(0.0) else 1.0


def scale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    logits = np.log(np.clip(np.asarray(probabilities, np.float64), 1e-12, 1.0)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


def feature_model(model, layer: str = "gap"):
    """The model up to its pooled features (shares weights; nothing is modified)."""
    import keras

    return keras.Model(model.input, model.get_layer(layer).output)


class OutlierCheck:
    """Mahalanobis distance of pooled features to the training images' features."""

    def __init__(self, mean: np.ndarray, precision: np.ndarray, threshold: float):
        self.mean, self.precision, self.threshold = mean, precision, float(threshold)

    @classmethod
    def fit(cls, train_features: np.ndarray, val_features: np.ndarray, quantile: float = OOD_QUANTILE):
        mean = train_features.mean(axis=0)
        cov = np.cov(train_features - mean, rowvar=False)
        cov += np.eye(len(cov)) * (1e-3 * np.trace(cov) / len(cov))  # shrinkage keeps it invertible
        check = cls(mean, np.linalg.inv(cov), 0.0)
        check.threshold = float(np.quantile(check.distance(val_features), quantile))
        return check

    def distance(self, features: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(features) - self.mean
        return np.sqrt(np.einsum("ij,jk,ik->i", d, self.precision, d))

    def save(self, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, mean=self.mean, precision=self.precision, threshold=self.threshold)

    @classmethod
    def load(cls, path: Path) -> "OutlierCheck":
        with np.load(path) as data:
            return cls(data["mean"], data["precision"], float(data["threshold"]))


def calibrate(model_dir: str | Path, data_dir: str | Path, log=print) -> dict:
    """Fit the temperature and the outlier check for a trained model folder; update its model.json."""
    from core import data as data_mod
    from core.metrics import calibration_bins
    from core.model import load_model

    model_dir = Path(model_dir)
    loaded = load_model(model_dir)
    names = loaded.class_names
    split = json.loads((model_dir / "split.json").read_text())
    val_names = set(split["validation"])
    params = json.loads((model_dir / "params.json").read_text()) if (model_dir / "params.json").exists() else {}
    dataset = data_mod.list_dataset(data_dir, class_names=names, limit_per_class=params.get("limit_per_class"),
                                    near_duplicates=bool(loaded.info.get("task") == "brain_mri"))
    train_items = [i for i in dataset.items if f"{names[i.label]}/{i.path.name}" not in val_names]
    val_items = [i for i in dataset.items if f"{names[i.label]}/{i.path.name}" in val_names]
    log(f"{len(train_items)} training and {len(val_items)} validation images from the run's split")
    x_train, _ = data_mod.prepare_arrays(train_items, loaded.pipeline)
    x_val, y_val = data_mod.prepare_arrays(val_items, loaded.pipeline)

    raw = np.asarray(loaded.model.predict(x_val, batch_size=64, verbose=0), np.float64)
    temperature = fit_temperature(raw, y_val)
    calibrated = scale(raw, temperature)

    def ece(p):
        if len(names) == 2:
            return calibration_bins(p[:, 1], y_val == 1)[1]
        return calibration_bins(p.max(axis=1), p.argmax(axis=1) == y_val)[1]

    features = feature_model(loaded.model)
    check = OutlierCheck.fit(features.predict(x_train, batch_size=64, verbose=0),
                             features.predict(x_val, batch_size=64, verbose=0))
    check.save(model_dir / OOD_FILE)

    info = json.loads((model_dir / INFO_FILE).read_text())
    info["temperature"] = temperature
    info["calibration"] = {"ece_before": ece(raw), "ece_after": ece(calibrated), "n_validation": len(y_val),
                           "method": "temperature scaling on the validation split"}
    info["ood"] = {"file": OOD_FILE, "sha256": sha256_file(model_dir / OOD_FILE), "threshold": check.threshold,
                   "quantile": OOD_QUANTILE, "features": "gap"}
    (model_dir / INFO_FILE).write_text(json.dumps(info, indent=2, default=_json_default) + "\n")
    if (model_dir / "metrics.json").exists():
        from core.card import write_card

        write_card(model_dir)
    log(f"temperature {temperature:.3f}: ECE {info['calibration']['ece_before']:.4f} -> "
        f"{info['calibration']['ece_after']:.4f}; outlier threshold {check.threshold:.2f}")
    return info
