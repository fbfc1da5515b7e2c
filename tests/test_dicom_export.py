"""core.dicom_export: one scan + the session's tiny model + a method -> its DICOM results.

Real files: CT_small and MR_small (single frames with a patient frame of reference), emri_small
(multi-frame MR without frame positions), a series of three CT slices stacked by core.series, and
a real chest JPEG. The SR's content is read back with pydicom alone.
"""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest

from conftest import dicom_bytes
from core import dicom_export as de
from core.dicom_results import ANONYMOUS_NAME, DicomResultError, to_bytes
from core.io import load_scan
from core.saliency import explain
from series_support import axial_series

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def loaded(tiny_run):
    from core.model import load_model

    return load_model(tiny_run[0])


def kinds(objects) -> list[str]:
    return [ds.SOPClassUID.name.split(" Storage")[0] for ds in objects]


def sr_numbers(sr) -> dict[str, float]:
    numbers = {}

    def walk(items):
        for item in items:
            if item.ValueType == "NUM":
                numbers[item.ConceptNameCodeSequence[0].CodeMeaning] = float(item.MeasuredValueSequence[0].NumericValue)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return numbers


def test_a_ct_slice_gets_every_object_with_what_the_page_computed(loaded):
    data = dicom_bytes("CT_small.dcm")
    scan = load_scan(data, "CT_small.dcm")
    tensor = loaded.pipeline.scan_tensor(scan)
    probabilities = loaded.predict(tensor)[0]
    other = 1 - loaded.decide(probabilities)
    explanation = explain(loaded, tensor, scan.shape, method="layercam", class_index=other)
    trust = {"deletion_ratio": 1.5, "sanity_passes": True}
    objects, facts = de.results_for_scan(loaded, scan, data, tensor=tensor, probabilities=probabilities,
                                         explanation=explanation, trust=trust, created="2026-01-02")
    assert kinds(objects) == ["Comprehensive SR", "Parametric Map", "Segmentation", "Secondary Capture Image"]
    assert facts.method == "layercam" and facts.explained_index == other and facts.layer == explanation.layer
    assert facts.probabilities == pytest.approx(tuple(probabilities)) and dict(facts.trust) == trust
    assert facts.model_sha256 == loaded.info["sha256"] and facts.model_version == de.model_version(loaded.info)
    sr = pydicom.dcmread(io.BytesIO(to_bytes(objects[0])))
    numbers = sr_numbers(sr)
    for name, p in zip(loaded.class_names, probabilities):
        assert numbers[f"Calibrated probability of {name}"] == pytest.approx(float(p), abs=1e-9)
    pm = objects[1]
    np.testing.assert_allclose(pm.pixel_array.astype(np.float32), explanation.on_scan, atol=1e-6)  # the very map
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert {ds.StudyInstanceUID for ds in objects} == {header.StudyInstanceUID}


def test_a_slice_of_a_series_refers_to_its_own_file(loaded):
    from core.series import group_series

    files = axial_series(3)
    (series,), _ = group_series(files)
    objects, facts = de.results_for_scan(loaded, series.scan, files[2][1], frame=2, method="gradcam")
    slice_header = pydicom.dcmread(io.BytesIO(files[2][1]), stop_before_pixels=True)
    assert facts.frame_index is None  # the source file is a single frame: no frame number to cite
    assert objects[-1].SourceImageSequence[0].ReferencedSOPInstanceUID == slice_header.SOPInstanceUID
    with pytest.raises(DicomResultError, match="pass the file the scan was loaded from"):
        de.results_for_scan(loaded, load_scan(dicom_bytes("MR_small.dcm")), dicom_bytes("CT_small.dcm"))


def test_a_multi_frame_source_records_the_frame_explained(loaded):
    data = dicom_bytes("emri_small.dcm")
    scan = load_scan(data, "emri_small.dcm")
    objects, facts = de.results_for_scan(loaded, scan, data, frame=3)
    assert facts.frame_index == 3
    assert kinds(objects) == ["Comprehensive SR", "Secondary Capture Image"]  # no frame positions: no map
    assert objects[-1].SourceImageSequence[0].ReferencedFrameNumber == 4  # DICOM counts frames from 1
    with pytest.raises(DicomResultError, match="Frame 99 does not exist"):
        de.results_for_scan(loaded, scan, data, frame=99)


def test_a_jpeg_gets_a_new_study_and_de_identified_copies_keep_their_links(loaded, chest_dir):
    path = sorted((chest_dir / "PNEUMONIA").iterdir())[0]
    data = path.read_bytes()
    objects, _ = de.results_for_scan(loaded, load_scan(data, path.name), data, method="smoothgrad")
    assert kinds(objects) == ["Secondary Capture Image", "Comprehensive SR", "Segmentation",
                              "Secondary Capture Image"]
    assert str(objects[0].PatientName) == ANONYMOUS_NAME
    assert objects[-1].SourceImageSequence[0].ReferencedSOPInstanceUID == objects[0].SOPInstanceUID
    copies, _ = de.results_for_scan(loaded, load_scan(data, path.name), data, method="smoothgrad", salt="s" * 16)
    assert copies[-1].SourceImageSequence[0].ReferencedSOPInstanceUID == copies[0].SOPInstanceUID
    assert copies[0].SOPInstanceUID != objects[0].SOPInstanceUID and copies[0].PatientIdentityRemoved == "YES"


def malformed() -> bytes:
    """MR_small with a birth date and a name out of the standard's form, which pydicom quotes when it refuses them."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(dicom_bytes("MR_small.dcm")))
        ds.PatientName, ds.PatientBirthDate = "Quinnell^Rosalind^" + "M" * 70, "1951-07-14"
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_malformed_header_is_one_sentence_that_quotes_nothing_and_still_gives_copies(loaded):
    data = malformed()
    scan = load_scan(data, "upload.dcm")
    with pytest.raises(DicomResultError) as err:
        de.results_for_scan(loaded, scan, data)
    assert str(err.value) == de.MALFORMED_SOURCE and err.value.__cause__ is None
    assert "1951" not in str(err.value) and "Quinnell" not in str(err.value)
    copies, _ = de.results_for_scan(loaded, scan, data, salt="a-session-secret")
    assert len(copies) == 4 and all(b"Quinnell" not in to_bytes(ds) for ds in copies)


def test_trust_scores_use_the_results_given_and_compute_the_rest(loaded):
    data = dicom_bytes("MR_small.dcm")
    scan = load_scan(data)
    tensor = loaded.pipeline.scan_tensor(scan)
    explanation = explain(loaded, tensor, scan.shape, method="gradcam", class_index=1)
    scores = de.trust_scores(loaded, tensor, explanation, uncertainty=False)
    assert set(scores) == {"deletion_auc", "insertion_auc", "deletion_ratio", "insertion_ratio", "average_drop",
                           "informative"}
    from core.trust import faithfulness

    given = faithfulness(loaded, tensor, explanation.raw, 1, random_orders=1)
    assert de.trust_scores(loaded, tensor, explanation, faithfulness_result=given, uncertainty=False) == \
        {k: (v if isinstance(v, bool) else float(v)) for k, v in given.summary().items()}
    with_tta = de.trust_scores(loaded, tensor, explanation, faithfulness_result=given)
    assert 0.0 <= with_tta["probability_low"] <= with_tta["probability_high"] <= 1.0
    assert isinstance(with_tta["crosses_threshold"], bool)


def test_write_results_names_files_by_what_they_are(loaded, tmp_path):
    data = dicom_bytes("CT_small.dcm")
    objects, _ = de.results_for_scan(loaded, load_scan(data), data)
    written = de.write_results(objects + objects[-1:], tmp_path / "out", "CT_small")
    assert [p.name for p in written] == ["CT_small_report-sr.dcm", "CT_small_saliency-pm.dcm",
                                         "CT_small_salient-region-seg.dcm", "CT_small_overlay-sc.dcm",
                                         "CT_small_overlay-sc-2.dcm"]
    assert pydicom.dcmread(written[0]).SOPInstanceUID == objects[0].SOPInstanceUID
