"""core.calibration and ``python -m core calibrate``: temperature scaling and the outlier check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO
from core.calibration import OutlierCheck, fit_temperature, scale
from core.io import load_scan
from core.predict import predict_files
from page_support import APP, go, upload, widget


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (4000, 3))
    true = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=p) for p in true])
    overconfident = scale(true, 1 / 2.0)  # logits doubled
    assert fit_temperature(overconfident, labels) == pytest.approx(2.0, rel=0.1)


def test_temperature_one_changes_nothing_and_keeps_the_ranking():
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    np.testing.assert_array_equal(scale(p, 1.0), p)
    softened = scale(p, 3.0)
    np.testing.assert_allclose(softened.sum(axis=1), 1.0)
    assert (softened.argmax(axis=1) == p.argmax(axis=1)).all() and softened.max() < p.max()
    assert fit_temperature(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1])) <= 1.0  # right and sure: no help


def test_outlier_check_threshold_is_the_validation_quantile(tmp_path):
    rng = np.random.default_rng(1)
    train, val = rng.normal(0, 1, (500, 4)), rng.normal(0, 1, (200, 4))
    check = OutlierCheck.fit(train, val, quantile=0.9)
    assert np.mean(check.distance(val) <= check.threshold) == pytest.approx(0.9, abs=0.01)
    assert check.distance(np.full(4, 8.0))[0] > check.threshold  # far from everything seen
    check.save(tmp_path / "ood.npz")
    again = OutlierCheck.load(tmp_path / "ood.npz")
    np.testing.assert_allclose(again.distance(val), check.distance(val))
    assert again.threshold == check.threshold


def test_a_wide_outlier_check_is_saved_as_a_packed_float16_factor_with_the_same_distances(tmp_path):
    """A pretrained backbone's 2,600 pooled features made a 54 MB ``ood.npz``; above
    ``DENSE_MAX_FEATURES`` the file holds the lower triangle of the precision's Cholesky factor in float16,
    and the threshold is fitted on the distances that file gives."""
    from core.calibration import DENSE_MAX_FEATURES

    rng = np.random.default_rng(2)
    n = DENSE_MAX_FEATURES + 88
    mixing = rng.normal(0, 1, (n, n)) / np.sqrt(n)  # correlated features, as a network's are
    train, val = rng.normal(0, 1, (2000, n)) @ mixing, rng.normal(0, 1, (300, n)) @ mixing
    check = OutlierCheck.fit(train, val)
    cov = np.cov(train - train.mean(axis=0), rowvar=False)
    exact = np.linalg.inv(cov + np.eye(n) * (1e-3 * np.trace(cov) / n))
    d = val - train.mean(axis=0)
    np.testing.assert_allclose(check.distance(val), np.sqrt(np.einsum("ij,jk,ik->i", d, exact, d)), rtol=1e-3)
    check.save(tmp_path / "ood.npz")
    assert (tmp_path / "ood.npz").stat().st_size < 0.3 * n * n * 8  # the dense float64 matrix: n * n * 8 bytes
    again = OutlierCheck.load(tmp_path / "ood.npz")
    np.testing.assert_allclose(again.distance(val), check.distance(val), rtol=1e-6)
    assert np.mean(again.distance(val) <= again.threshold) == pytest.approx(0.99, abs=0.005)
    assert again.distance(val[:1] * 3)[0] > again.threshold


@pytest.mark.slow
def test_calibrate_run_writes_temperature_outlier_check_and_card(tiny_run, chest_dir, tmp_path):
    import shutil

    from core.model import load_model
    from core.train import calibrate_run

    folder = shutil.copytree(tiny_run[0], tmp_path / "run")
    info = calibrate_run(folder, chest_dir, log=lambda *_: None)
    loaded = load_model(folder)
    assert loaded.temperature == info["temperature"] > 0
    assert set(info["calibration"]) >= {"ece_before", "ece_after", "n_validation"}
    assert info["ood"]["features"] == ["gap", "conv2b_relu"] and loaded.outlier_threshold == pytest.approx(info["ood"]["threshold"])
    assert "Temperature scaling" in (folder / "MODEL_CARD.md").read_text()


def _calibrated_copy(folder, tmp_path, chest_dir):
    import shutil

    from core.model import load_model
    from core.train import calibrate_run

    copy = shutil.copytree(folder, tmp_path / "models" / "chest_xray")
    calibrate_run(copy, chest_dir, log=lambda *_: None)
    return load_model(copy)


def _distances(model, images: list[bytes]) -> list[float]:
    return [float(model.predict_with_distance(model.pipeline.scan_tensor(load_scan(data)))[1][0]) for data in images]


def predict_file(path: str, model) -> dict:
    return next(predict_files([path], model))


@pytest.mark.slow
def test_brain_mri_given_to_the_chest_model_predicts_but_warns(tiny_run, chest_dir, data_dir, tmp_path, monkeypatch):
    """The outlier check exists after ``core calibrate``; the tiny chest model is calibrated here.

    The warning is asserted on the tiny model when its check separates chest images from brain
    MRIs (it has seen only 40 images); otherwise on the real chest model if it is calibrated.
    """
    from core.model import load_model

    brains = [p for cls in ("glioma", "meningioma", "notumor", "pituitary")
              for p in sorted((data_dir / "brain_mri" / "Training" / cls).glob("*.jpg"))[:2]]
    chests = sorted((chest_dir / "NORMAL").glob("*.jpeg"))[:4] + sorted((chest_dir / "PNEUMONIA").glob("*.jpeg"))[:4]
    model = _calibrated_copy(tiny_run[0], tmp_path, chest_dir)
    threshold = model.outlier_threshold
    brain_d = _distances(model, [p.read_bytes() for p in brains])
    chest_d = _distances(model, [p.read_bytes() for p in chests])
    if not (min(brain_d) > threshold and np.median(chest_d) < threshold):
        real = REPO / "assets" / "models" / "chest_xray"
        if not (real / "model.keras").exists() or "ood" not in json.loads((real / "model.json").read_text()):
            pytest.skip(f"the tiny model's outlier check does not separate brain MRIs (distances {min(brain_d):.1f}+) "
                        f"from chest images (median {np.median(chest_d):.1f}) at threshold {threshold:.1f}, and "
                        "assets/models/chest_xray is not calibrated yet (run python -m core calibrate)")
        model = load_model(real)
    for path in brains:
        record = predict_file(str(path), model)
        assert record["ok"] is True and set(record["probabilities"]) == set(model.class_names)
        assert any("looks unlike the images" in note and "unreliable" in note for note in record["warnings"]), path.name
    typical = [p for p, d in zip(chests, chest_d) if d < threshold]
    for path in typical:
        assert not any("looks unlike" in n for n in predict_file(str(path), model).get("warnings", [])), path.name

    # The dashboard: the Explain page leads with the image being unlike the training images; the prediction
    # stays behind an explicit "show anyway", and then comes with the same warning.
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MEDXAI_MODELS", str(model.path.parent))
    at = AppTest.from_file(str(APP), default_timeout=300).run()
    at = upload(at, brains[0].name, brains[0].read_bytes())
    at = go(at, "explain")
    widget(at.selectbox, "Model").set_value(str(model.path))  # the chest model, whatever the picker suggests
    at.run()
    assert not at.exception
    assert [e.value for e in at.error if "looks unlike the images" in e.value] and len(at.error) == 1
    assert not any("Predicted:" in m.value for m in at.markdown) and not at.get("plotly_chart")
    (anyway,) = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
    anyway.click().run()
    assert not at.exception and not at.error
    assert any("Predicted:" in m.value for m in at.markdown)
    assert [w.value for w in at.warning if "looks unlike the images" in w.value]


