"""``python -m core predict dicomweb:... [--dicom-out DIR [--deidentify]] [--stow]`` against the real Orthanc.

The session's Orthanc (conftest) holds pydicom's real files; the tests store a three-slice CT series
and a CT slice of their own (new UIDs, study date MADE_DATE, so other tests' searches are unchanged).
Predicting an instance, a series and a study gives the probabilities of predicting the original
files; the DICOM results re-read with pydicom, validate with dciodvfy and reference the source
instance; the de-identified copies carry none of the source's identifying values; ``--stow`` stores
them in the source's study, where a QIDO search finds the report and retrieving it gives back the
model's SHA-256 and the probabilities. A wrong password, a stopped server, a slow answer, an empty
result and a non-image object each give their sentence and exit 1. No run prints the login.

The command runs in this process (``core.cli.main``, which holds TensorFlow already); stdout and
stderr are read from the file descriptors.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
import subprocess
import warnings

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import dicom_bytes, dicom_path
from core import dicomweb as dw
from core.cli import main
from core.dicom_results import ANONYMOUS_NAME, MANUFACTURER
from core.model import read_info
from orthanc import start_orthanc
from series_support import axial_series, ct_slice

pytestmark = pytest.mark.slow

#: Study date of what these tests store (as in tests/test_dicomweb.py).
MADE_DATE = "20240102"


# ----------------------------------------------------------------------------- fixtures and helpers

@pytest.fixture(scope="module")
def model_dir(tiny_run):
    return tiny_run[0]


@pytest.fixture()
def login(orthanc, monkeypatch, tmp_path):
    """The server's login in the environment, as a user would set it; no settings file of the machine's."""
    monkeypatch.setenv("MEDXAI_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("MEDXAI_DICOMWEB_PASSWORD", orthanc.password)
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "no-settings.toml"))
    return orthanc


@pytest.fixture(scope="module")
def made_series(orthanc, tmp_path_factory):
    """Three CT slices stored in a study of their own, and the same files on disk: (study, series, paths)."""
    study, series = generate_uid(), generate_uid()
    folder = tmp_path_factory.mktemp("made_series")
    paths = []
    for name, data in axial_series(3, series_uid=series, study_uid=study, study_date=MADE_DATE,
                                   description="medxai cli series"):
        orthanc.upload(data)
        (folder / name).write_bytes(data)
        paths.append(folder / name)
    return study, series, paths


def instance_url(server, header) -> str:
    return (f"dicomweb:{server.url}/studies/{header.StudyInstanceUID}/series/{header.SeriesInstanceUID}"
            f"/instances/{header.SOPInstanceUID}")


def run(capfd, server, *args) -> tuple[int, list[dict], str, str]:
    """``python -m core predict --json ARGS`` in this process: exit code, records, stdout, stderr.

    Every run is checked for what a user must never see: a traceback, the user name or the password.
    """
    capfd.readouterr()
    code = main(["predict", "--json", *map(str, args)])
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert server.password not in out + err and server.user not in out + err
    return code, [json.loads(line) for line in out.splitlines() if line.startswith("{")], out, err


def read(path_or_buffer) -> pydicom.Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path_or_buffer if isinstance(path_or_buffer, io.BytesIO) else str(path_or_buffer))


def kind(ds) -> str:
    name = ds.SOPClassUID.name
    if "Secondary Capture" in name:
        return "SOURCE" if ds.get("SeriesNumber") == 9000 else "SC"
    return {"Comprehensive SR Storage": "SR", "Parametric Map Storage": "PM", "Segmentation Storage": "SEG"}[name]


def dciodvfy_errors(path) -> list[str]:
    run_ = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run_.stdout + run_.stderr).splitlines() if line.startswith("Error")]


def referenced_instances(ds) -> set[str]:
    """Every SOP Instance UID an object references (evidence, source images, referenced series)."""
    found = set()

    def walk(item):
        for element in item:
            if element.keyword == "ReferencedSOPInstanceUID":
                found.add(str(element.value))
            elif element.VR == "SQ":
                for sub in element.value:
                    walk(sub)

    walk(ds)
    return found


def sr_facts(sr) -> dict:
    """What a report says, read from its content tree with pydicom alone: parameter texts, numbers, codes."""
    texts, numbers, codes = [], {}, {}

    def walk(items):
        for item in items:
            meaning = item.ConceptNameCodeSequence[0].CodeMeaning if "ConceptNameCodeSequence" in item else ""
            if item.ValueType == "TEXT":
                texts.append(str(item.TextValue))
            elif item.ValueType == "NUM":
                numbers[meaning] = float(item.MeasuredValueSequence[0].NumericValue)
            elif item.ValueType == "CODE":
                codes.setdefault(meaning, []).append(item.ConceptCodeSequence[0].CodeMeaning)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    return {"texts": texts, "numbers": numbers, "codes": codes}


def probabilities_of(records) -> list[list[float]]:
    return [list(r["probabilities"].values()) for r in records]


# ----------------------------------------------------------------------------- sources predict like files

def test_instance_series_and_study_predict_like_their_files(model_dir, login, pacs, made_series, capfd):
    ct = pacs["CT_small.dcm"]
    study, series, paths = made_series
    code, files, _, _ = run(capfd, login, dicom_path("CT_small.dcm"), *paths, "--model", model_dir)
    assert code == 0 and [r["ok"] for r in files] == [True] * 4

    series_url = f"dicomweb:{login.url}/studies/{study}/series/{series}"
    study_url = f"dicomweb:{login.url}/studies/{study}"
    code, records, out, _ = run(capfd, login, instance_url(login, ct), series_url, study_url, "--model", model_dir)
    assert code == 0 and [r["ok"] for r in records] == [True] * 7
    # One record per instance, named by the source and the series and instance numbers, never a patient.
    assert records[0]["file"] == instance_url(login, ct)
    for k, record in enumerate(records[1:4], start=1):
        assert re.fullmatch(re.escape(series_url) + rf"#series\d+-instance{k}\.dcm", record["file"]), record["file"]
    for k, record in enumerate(records[4:], start=1):
        assert re.fullmatch(re.escape(study_url) + rf"#series\d+-instance{k}\.dcm", record["file"]), record["file"]
    assert str(ct.PatientName) not in out and ct.PatientID not in out
    expected = probabilities_of(files)
    got = probabilities_of(records)
    np.testing.assert_allclose(got[0], expected[0], atol=1e-6)
    np.testing.assert_allclose(got[1:4], expected[1:], atol=1e-6)  # instance-number order = the files' order
    np.testing.assert_allclose(got[4:], expected[1:], atol=1e-6)
    assert [r["predicted"] for r in records[1:4]] == [r["predicted"] for r in files[1:]]


# ----------------------------------------------------------------------------- --dicom-out

@pytest.fixture(scope="module")
def chest_jpeg(chest_dir):
    return sorted((chest_dir / "NORMAL").iterdir())[0]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) is not installed")
def test_dicom_out_writes_valid_objects_in_the_source_study(model_dir, login, pacs, chest_jpeg, capfd, tmp_path):
    ct = pacs["CT_small.dcm"]
    out = tmp_path / "results"
    code, records, _, _ = run(capfd, login, instance_url(login, ct), chest_jpeg, "--model", model_dir,
                              "--dicom-out", out, "--method", "gradcam++")
    assert code == 0, records
    sha = read_info(model_dir)["sha256"]
    for record in records:
        objects = {kind(ds): ds for ds in map(read, record["dicom"])}
        assert all(p.startswith(str(out)) for p in record["dicom"])
        for path in record["dicom"]:
            assert dciodvfy_errors(path) == [], path
        facts = sr_facts(objects["SR"])
        assert f"Model file SHA-256: {sha}" in facts["texts"]
        for name, p in record["probabilities"].items():
            assert facts["numbers"][f"Calibrated probability of {name}"] == pytest.approx(p, abs=1e-6)
        assert facts["codes"]["Predicted class"] == [record["predicted"]]
        assert any(t.startswith("Explained layer: ") and "none" not in t for t in facts["texts"])
        assert objects["SC"].SeriesDescription.startswith("Saliency overlay (Grad-CAM++)")
        assert {ds.Manufacturer for ds in objects.values() if ds is not objects.get("SOURCE")} == {MANUFACTURER}

    # The CT slice: every object in the source's study, with its patient, referencing the source instance.
    ct_objects = {kind(ds): ds for ds in map(read, records[0]["dicom"])}
    assert sorted(ct_objects) == ["PM", "SC", "SEG", "SR"]
    assert all(p.split("/")[-1].startswith("series1-instance1_") for p in records[0]["dicom"])
    for label, ds in ct_objects.items():
        assert ds.StudyInstanceUID == ct.StudyInstanceUID, label
        assert ds.PatientName == ct.PatientName and ds.PatientID == ct.PatientID, label
        assert ct.SOPInstanceUID in referenced_instances(ds), label
        assert ds.SeriesInstanceUID != ct.SeriesInstanceUID, label
    pixels = ct_objects["SC"].pixel_array
    assert pixels.shape[1] == ct.Columns and pixels.shape[0] > ct.Rows  # the overlay and its legend strip below

    # The JPEG: a new study with an anonymous patient, its own image first, the results referencing it.
    jpeg_objects = {kind(ds): ds for ds in map(read, records[1]["dicom"])}
    assert sorted(jpeg_objects) == ["SC", "SEG", "SOURCE", "SR"]  # no position in a patient: no parametric map
    source = jpeg_objects["SOURCE"]
    assert str(source.PatientName) == ANONYMOUS_NAME
    for label in ("SR", "SEG", "SC"):
        assert jpeg_objects[label].StudyInstanceUID == source.StudyInstanceUID != ct.StudyInstanceUID
        assert source.SOPInstanceUID in referenced_instances(jpeg_objects[label]), label


def test_deidentify_writes_copies_that_keep_their_links_but_not_the_source(model_dir, login, pacs, capfd, tmp_path):
    ct = pacs["CT_small.dcm"]
    out = tmp_path / "deid"
    code, records, _, _ = run(capfd, login, instance_url(login, ct), "--model", model_dir, "--dicom-out", out,
                              "--deidentify")
    assert code == 0
    objects = [read(p) for p in records[0]["dicom"]]
    assert sorted(kind(ds) for ds in objects) == ["PM", "SC", "SEG", "SR"]
    studies = {ds.StudyInstanceUID for ds in objects}
    referenced = set.intersection(*(referenced_instances(ds) for ds in objects))
    assert len(studies) == 1 and ct.StudyInstanceUID not in studies  # one new study for all of them
    assert len(referenced) == 1 and ct.SOPInstanceUID not in referenced  # ... all citing one new source UID
    for ds in objects:
        assert str(ds.PatientName) == ANONYMOUS_NAME and ds.PatientIdentityRemoved == "YES"
    blob = b"".join(p.read_bytes() for p in out.iterdir())
    values = [str(ct.get(k) or "") for k in ("PatientName", "PatientID", "PatientBirthDate", "StudyDate",
                                             "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
                                             "FrameOfReferenceUID", "InstitutionName")]
    values = [v for v in values if v]
    assert len(values) >= 7  # (tests/test_privacy_dicom.py searches every identifying attribute)
    for value in values:
        assert value.encode() not in blob, value
    # A second run has a fresh salt: no pseudonym links the two downloads.
    code, again, _, _ = run(capfd, login, instance_url(login, ct), "--model", model_dir, "--dicom-out",
                            tmp_path / "deid2", "--deidentify")
    assert code == 0
    assert {read(p).StudyInstanceUID for p in again[0]["dicom"]}.isdisjoint(studies)
    assert {read(p).PatientID for p in again[0]["dicom"]}.isdisjoint({ds.PatientID for ds in objects})


# ----------------------------------------------------------------------------- --stow

def test_stow_stores_the_results_in_the_source_study(model_dir, login, orthanc, capfd):
    study, series = generate_uid(), generate_uid()
    data = ct_slice(series_uid=series, study_uid=study, study_date=MADE_DATE, description="medxai cli results")
    orthanc.upload(data)
    header = read(io.BytesIO(data))
    code, records, out, _ = run(capfd, login, instance_url(login, header), "--model", model_dir, "--stow", "--trust")
    assert code == 0, out
    (record,) = records
    assert record["stored"] == 4 and "dicom" not in record  # SR, parametric map, segmentation, overlay
    assert {"deletion_ratio", "insertion_ratio", "probability_mean", "crosses_threshold"} <= set(record["trust"])

    client = dw.make_client(orthanc.url, user=orthanc.user, password=orthanc.password)
    found = {row.modality: row for row in dw.search_series(client, study)}
    assert set(found) == {"CT", "SR", "OT", "SEG"}  # the source's series and the result series (PM and SC: OT)
    (sr_row,) = dw.search_instances(client, study, found["SR"].series_uid)
    sr = client.retrieve_instance(study, found["SR"].series_uid, sr_row.instance_uid)
    assert sr.StudyInstanceUID == study and sr.PatientName == header.PatientName
    assert header.SOPInstanceUID in referenced_instances(sr)
    facts = sr_facts(sr)
    assert f"Model file SHA-256: {read_info(model_dir)['sha256']}" in facts["texts"]
    for name, p in record["probabilities"].items():
        assert facts["numbers"][f"Calibrated probability of {name}"] == pytest.approx(p, abs=1e-6)
    assert facts["numbers"]["Faithfulness: deletion ratio (random AUC / map AUC)"] == \
        pytest.approx(record["trust"]["deletion_ratio"])

    # The study now holds the results too; predicting it again still predicts the one image.
    code, again, _, _ = run(capfd, login, f"dicomweb:{orthanc.url}/studies/{study}", "--model", model_dir)
    assert code == 0 and len(again) == 1
    assert again[0]["probabilities"] == pytest.approx(record["probabilities"], abs=1e-6)


#: Orthanc's own HTTP filter: DICOMweb is read-only here (no STOW-RS), as for a PACS login that may only read.
READ_ONLY_DICOMWEB = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  return not (method == "POST" and string.find(uri, "^/dicom%-web/") ~= nil)
end
"""


@pytest.fixture()
def read_only_orthanc(tmp_path, monkeypatch):
    """A second real Orthanc whose configuration refuses STOW-RS (a Lua request filter), holding CT_small."""
    import orthanc as orthanc_module

    script = tmp_path / "read-only.lua"
    script.write_text(READ_ONLY_DICOMWEB)
    plain = orthanc_module._configuration

    def read_only(*args, **kwargs):
        return plain(*args, **kwargs) | {"LuaScripts": [str(script)]}

    monkeypatch.setattr(orthanc_module, "_configuration", read_only)
    with orthanc_module.running_orthanc() as server:
        server.upload(dicom_path("CT_small.dcm"))  # Orthanc's own REST API, which the filter lets through
        yield server
        server.stop(graceful=False)


def test_a_refused_stow_is_one_sentence_and_exit_one(model_dir, read_only_orthanc, pacs, capfd, monkeypatch):
    server = read_only_orthanc
    monkeypatch.setenv("MEDXAI_DICOMWEB_USER", server.user)
    monkeypatch.setenv("MEDXAI_DICOMWEB_PASSWORD", server.password)
    code, (record,), _, _ = run(capfd, server, instance_url(server, pacs["CT_small.dcm"]), "--model", model_dir,
                                "--stow")
    assert code == 1 and record["ok"] and "stored" not in record  # the prediction stands; the results do not
    assert record["results_error"] == (f"The DICOMweb server at {server.rest_url} does not allow this user to do "
                                       "this (HTTP 403); ask its administrator for access.")


# ----------------------------------------------------------------------------- failures

def expect_one_failure(capfd, server, source, model_dir, *extra) -> str:
    code, records, out, err = run(capfd, server, source, "--model", model_dir, *extra)
    assert code == 1, out + err
    (record,) = records
    assert record["ok"] is False and "probabilities" not in record
    assert record["error"].endswith(".") and "\n" not in record["error"]
    return record["error"]


def test_a_wrong_password_is_its_sentence(model_dir, login, pacs, capfd, monkeypatch):
    monkeypatch.setenv("MEDXAI_DICOMWEB_PASSWORD", "not-" + login.password[:5])
    error = expect_one_failure(capfd, login, instance_url(login, pacs["CT_small.dcm"]), model_dir)
    assert error == (f"The DICOMweb server at {login.rest_url} refused the user name and password (HTTP 401); "
                     "check MEDXAI_DICOMWEB_USER and MEDXAI_DICOMWEB_PASSWORD or the settings.")


def test_a_stopped_server_is_its_sentence(model_dir, login, capfd):
    server = start_orthanc()
    server.stop(graceful=False)  # nothing of it is needed: no 2.5 s shutdown
    server.remove()
    error = expect_one_failure(capfd, login, f"dicomweb:{server.url}/studies/1.2.3", model_dir)
    assert error == (f"Cannot reach the DICOMweb server at {server.rest_url} (connection refused); check the "
                     "address and that the server is running.")


def test_a_slow_answer_is_its_sentence(model_dir, login, capfd):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel accepts; nobody ever answers
        port = silent.getsockname()[1]
        error = expect_one_failure(capfd, login, f"dicomweb:http://127.0.0.1:{port}/dicom-web/studies/1.2.3",
                                   model_dir, "--timeout", "0.5")
    assert error == (f"The DICOMweb server at http://127.0.0.1:{port} did not answer within 0.5 seconds; it may be "
                     "busy or the address may not be a DICOMweb server, so try again later or allow a longer "
                     "timeout.")


def test_an_empty_result_and_a_non_image_are_their_sentences(model_dir, login, pacs, capfd):
    ct, sr = pacs["CT_small.dcm"], pacs["test-SR.dcm"]
    missing = (f"dicomweb:{login.url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
               "/instances/1.2.3.4")
    assert expect_one_failure(capfd, login, missing, model_dir) == (
        "No instance with these UIDs is on the server (HTTP 404); search the series again and pick one from the list.")
    assert expect_one_failure(capfd, login, f"dicomweb:{login.url}/studies/1.2.3.4.5", model_dir) == (
        "The server has no series for this study (or no such study); search the studies again and pick one from "
        "the list.")
    assert expect_one_failure(capfd, login, instance_url(login, sr), model_dir) == (
        "This DICOM object (SR) holds no image pixels; pick an image series such as CR, DX, CT or MR.")


def test_a_failed_source_does_not_stop_the_others(model_dir, login, pacs, capfd):
    ct = pacs["CT_small.dcm"]
    with_password = instance_url(login, ct).replace("http://", f"http://{login.user}:{login.password}@")
    code, records, _, _ = run(capfd, login, with_password, instance_url(login, ct), dicom_path("MR_small.dcm"),
                              "--model", model_dir)
    assert code == 1 and [r["ok"] for r in records] == [False, True, True]
    assert records[0]["file"] == instance_url(login, ct)  # the login is dropped from the label
    assert "MEDXAI_DICOMWEB_USER" in records[0]["error"]


def test_usage_errors_exit_two(model_dir, login, capfd, tmp_path):
    for args in (["--stow"], ["--deidentify"], ["--trust"], ["--method", "gradcam"],
                 ["--dicom-out", str(dicom_path("CT_small.dcm"))]):
        capfd.readouterr()
        assert main(["predict", str(dicom_path("CT_small.dcm")), "--model", str(model_dir), *args]) == 2, args
        assert capfd.readouterr().err.startswith("error: --"), args
    assert dicom_bytes("CT_small.dcm")  # the file given as --dicom-out was not touched
