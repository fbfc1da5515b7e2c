"""core.predict: batch prediction of real files with the session's tiny model (``tiny_run``): a DICOM from
pydicom's test files and real chest JPEGs give the same probabilities as the model called on each file's
tensor, in the order given, whatever the batch size; a file that cannot be used is a record with one
sentence and the others still run; the explanation writer's overlay has the scan's own size."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import dicom_path
from core.io import ScanError, load_scan
from core.model import load_model
from core.predict import (
    Prediction,
    out_of_range_sentence,
    predict_files,
    predict_tensors,
    read_input,
    write_explanation,
)
from page_support import is_one_sentence

pytestmark = pytest.mark.slow  # trains the session's tiny model


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run[0])


@pytest.fixture(scope="module")
def chest_files(chest_dir):
    """Four real chest films, two of each class."""
    return [sorted((chest_dir / label).glob("*.jpeg"))[i] for label in ("NORMAL", "PNEUMONIA") for i in (0, 1)]


def expected(loaded, path, frame=None) -> np.ndarray:
    """The model's probabilities for one file, called on its own tensor (no batching, no threads)."""
    scan = load_scan(path.read_bytes(), path.name)
    return loaded.predict(loaded.pipeline.scan_tensor(scan, frame))[0]


def test_real_files_and_a_bad_one_give_one_record_each_in_order(loaded, chest_files, tmp_path):
    dicom = dicom_path("CT_small.dcm")
    bad = tmp_path / "notes.dcm"
    bad.write_text("These are a radiologist's notes, not an image.")
    paths = [dicom, chest_files[0], bad, chest_files[2], tmp_path / "missing.png"]

    records = list(predict_files(paths, loaded))

    assert [r["file"] for r in records] == [str(p) for p in paths]
    assert [r["ok"] for r in records] == [True, True, False, True, False]
    for record, path in zip(records, paths):
        if not record["ok"]:
            assert set(record) == {"file", "ok", "error"} and is_one_sentence(record["error"]), record
            continue
        assert list(record["probabilities"]) == loaded.class_names
        got = np.array(list(record["probabilities"].values()))
        np.testing.assert_allclose(got, expected(loaded, path), atol=2e-6)  # rounded to 6 decimals
        assert record["predicted"] == loaded.class_names[loaded.decide(got)]
        assert isinstance(record["out_of_range"], bool)
        json.dumps(record)  # what ``predict --json`` prints: plain JSON, no arrays
    assert records[4]["error"] == "The file does not exist."


def test_batches_and_threads_change_nothing(loaded, chest_files):
    paths = chest_files + [dicom_path("CT_small.dcm")]
    one_batch = list(predict_files(paths, loaded))
    small_batches = list(predict_files(paths, loaded, batch_size=2, workers=1))
    assert [r["file"] for r in small_batches] == [str(p) for p in paths]
    for a, b in zip(one_batch, small_batches):
        assert a["predicted"] == b["predicted"]
        np.testing.assert_allclose(list(a["probabilities"].values()), list(b["probabilities"].values()), atol=2e-6)


def test_a_frame_of_a_multi_frame_file_and_the_kept_scan(loaded):
    path = dicom_path("emri_small.dcm")  # 10 MR frames
    record = next(predict_files([path], loaded, frame=7, keep_scans=True))
    assert record["ok"] and record["scan"].n_frames == 10
    size, channels = loaded.pipeline.input_size, loaded.pipeline.channels
    assert record["tensor"].shape == (1, size, size, channels)
    np.testing.assert_allclose(record["prediction"].probabilities, expected(loaded, path, frame=7), atol=1e-6)
    assert "scan" not in next(predict_files([path], loaded))  # only kept when asked for


def test_predict_tensors_is_one_forward_pass_per_batch(loaded, chest_files):
    tensors = np.concatenate([loaded.pipeline.scan_tensor(load_scan(p.read_bytes(), p.name)) for p in chest_files])
    predictions = predict_tensors(loaded, tensors)
    assert len(predictions) == len(chest_files)
    for prediction, path in zip(predictions, chest_files):
        np.testing.assert_allclose(prediction.probabilities, expected(loaded, path), atol=1e-6)
        assert prediction.predicted == loaded.decide(prediction.probabilities)
        assert prediction.limit == loaded.outlier_threshold


def test_out_of_range_is_one_sentence_only_beyond_the_limit():
    p = np.array([0.3, 0.7])
    assert Prediction(p, 1).in_range and out_of_range_sentence(Prediction(p, 1), "Chest") is None  # no check fitted
    assert Prediction(p, 1, distance=2.0, limit=3.0).in_range
    far = Prediction(p, 1, distance=9.25, limit=3.0)
    sentence = out_of_range_sentence(far, "Chest X-ray")
    assert not far.in_range and is_one_sentence(sentence)
    assert "Chest X-ray model" in sentence and "9.2" in sentence and "3.0" in sentence


def test_read_input_says_in_one_sentence_why_a_path_cannot_be_read(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    assert read_input(tmp_path / "scan.png") == b"\x89PNG"
    for path, sentence in ((tmp_path / "gone.dcm", "The file does not exist."),
                           (tmp_path, "This is a folder, not a file.")):
        with pytest.raises(ScanError) as err:
            read_input(path)
        assert str(err.value) == sentence


def test_write_explanation_overlays_the_scan_at_its_own_size(loaded, chest_files, tmp_path):
    path = chest_files[2]
    record = next(predict_files([path], loaded, keep_scans=True))
    scan = record["scan"]
    written = write_explanation(loaded, scan, record["tensor"], "gradcam++", record["prediction"].predicted, None,
                                path.stem, tmp_path / "out")
    assert written["method"] == "gradcam++" and written["explained"] == record["predicted"]
    assert written["overlay"].endswith(f"{path.stem}_gradcampp.png")
    with Image.open(written["overlay"]) as picture:
        assert picture.size == (scan.shape[1], scan.shape[0])
    raw = np.load(written["map"])
    assert raw.ndim == 2 and np.isfinite(raw).all()
