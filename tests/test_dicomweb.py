"""core.dicomweb against a real Orthanc (Debian, started once per session on loopback).

Stores real pydicom test files, searches (QIDO-RS), retrieves (WADO-RS) and stores back
(STOW-RS); a wrong password, a stopped server, a server that never answers, an empty search
and a non-image object each give their one sentence; credentials never reach a log record or
an error string.
"""

from __future__ import annotations

import io
import logging
import re
import socket

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from conftest import dicom_bytes, dicom_path
from core import dicomweb as dw
from core.io import load_scan
from core.series import group_series
from orthanc import start_orthanc
from series_support import axial_series

#: Study date of the objects the tests themselves make and store, so that searches over the
#: files the session's server holds (conftest.ORTHANC_FILES) find the same rows whatever order the
#: tests run in. The ``orthanc`` and ``pacs`` fixtures are conftest's, shared by the session.
MADE_DATE = "20240102"


@pytest.fixture()
def client(orthanc):
    return dw.make_client(orthanc.url, user=orthanc.user, password=orthanc.password)


def one_sentence(text: str) -> bool:
    return text.endswith(".") and "\n" not in text and not re.search(r"[.;]\s+[A-Z][a-z]", text)


# ----------------------------------------------------------------------------- search

def test_search_by_modality_hides_patient_fields_unless_revealed(client, pacs):
    ct = pacs["CT_small.dcm"]
    (row,) = dw.search_studies(client, modality="CT", date=ct.StudyDate)
    assert row.study_uid == ct.StudyInstanceUID and row.modalities == ("CT",)
    assert row.date == ct.StudyDate and row.description == ct.StudyDescription
    assert row.n_series == 1 and row.n_instances == 1
    assert row.patient_name is None and row.patient_id is None
    assert {"patient_name", "patient_id"} <= set(row.hidden)
    assert str(ct.PatientName) not in repr(row)

    (revealed,) = dw.search_studies(client, modality="ct", date=ct.StudyDate, reveal=True)
    assert revealed.patient_name == str(ct.PatientName) and revealed.patient_id == ct.PatientID
    assert revealed.hidden == ()


def test_search_by_date_single_and_range(client, pacs):
    ct_date = pacs["CT_small.dcm"].StudyDate  # 20040119
    assert [r.study_uid for r in dw.search_studies(client, date=ct_date)] == [pacs["CT_small.dcm"].StudyInstanceUID]
    in_2004 = dw.search_studies(client, date="20040101-20041231")
    expected = {h.StudyInstanceUID for h in pacs.values() if str(h.get("StudyDate", "")).startswith("2004")}
    assert {r.study_uid for r in in_2004} == expected and len(expected) >= 4
    assert [r.date for r in in_2004] == sorted((r.date for r in in_2004), reverse=True)  # newest first
    import datetime

    assert {r.study_uid for r in dw.search_studies(client, date=(datetime.date(2004, 1, 1), None))} >= expected
    with pytest.raises(dw.DicomWebError) as err:
        dw.search_studies(client, date="2004-13-01")
    assert err.value.kind == "query" and one_sentence(str(err.value))


def test_search_by_description_matches_words_in_any_case(client, pacs):
    # "Whole Body Bone": the space and the wildcards must reach Orthanc 1.10 unencoded.
    (row,) = dw.search_studies(client, description="body BONE")
    assert row.study_uid == pacs["JPEG2000.dcm"].StudyInstanceUID and row.description == "Whole Body Bone"
    (row,) = dw.search_studies(client, description="thorax", modality="CR")
    assert row.study_uid == pacs["RG1_UNCI.dcm"].StudyInstanceUID


def test_an_empty_search_is_one_sentence_naming_the_filters(client, pacs):
    with pytest.raises(dw.DicomWebError) as err:
        dw.search_studies(client, modality="XA", date="19990101-19991231")
    assert err.value.kind == "empty"
    assert str(err.value) == "No study on the server matches modality XA and dates 19990101-19991231; widen the search."
    with pytest.raises(dw.DicomWebError) as err:
        dw.search_series(client, "1.2.3.4.5")
    assert err.value.kind == "empty" and one_sentence(str(err.value))


def test_series_and_instances_of_a_study(client, pacs):
    ct = pacs["CT_small.dcm"]
    (series,) = dw.search_series(client, ct.StudyInstanceUID)
    assert series.series_uid == ct.SeriesInstanceUID and series.modality == "CT" and series.n_instances == 1
    (instance,) = dw.search_instances(client, ct.StudyInstanceUID, ct.SeriesInstanceUID)
    assert instance.instance_uid == ct.SOPInstanceUID and instance.sop_class == "CT Image Storage"
    assert (instance.rows, instance.columns) == (128, 128) and instance.has_pixels


# ----------------------------------------------------------------------------- retrieve

@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm"])
def test_a_retrieved_instance_loads_with_the_pixels_of_the_file(client, pacs, name):
    header = pacs[name]
    data = dw.retrieve_instance(client, header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)
    scan, original = load_scan(data, name), load_scan(dicom_bytes(name), name)
    np.testing.assert_array_equal(scan.frames, original.frames)
    assert scan.units == original.units and scan.window == original.window


def test_a_series_source_gives_files_that_group_into_a_sorted_series(orthanc, client):
    study, series_uid = generate_uid(), generate_uid()
    files = axial_series(4, series_uid=series_uid, study_uid=study, study_date=MADE_DATE)
    for _, data in reversed(files):
        orthanc.upload(data)

    source = f"dicomweb:{orthanc.url}/studies/{study}/series/{series_uid}"
    fetched = dw.fetch_source(source, user=orthanc.user, password=orthanc.password)
    assert [name for name, _ in fetched] == [f"series1-instance{k}.dcm" for k in range(1, 5)]
    assert len(dw.retrieve_series(client, study, series_uid)) == 4
    (one,), _ = group_series(fetched)
    assert one.ordered_by == "position" and one.instance_numbers == (1, 2, 3, 4)
    for k, (_, data) in enumerate(files):
        np.testing.assert_array_equal(one.scan.frames[k], load_scan(data).frames[0])
    # the study-level source gives the same files
    assert [n for n, _ in dw.fetch_source(f"dicomweb:{orthanc.url}/studies/{study}", client=client)] == \
        [n for n, _ in fetched]


def test_an_instance_source_from_the_environment(orthanc, pacs, monkeypatch):
    ct = pacs["CT_small.dcm"]
    monkeypatch.setenv(dw.USER_VARIABLE, orthanc.user)
    monkeypatch.setenv(dw.PASSWORD_VARIABLE, orthanc.password)
    source = (f"dicomweb:{orthanc.url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
              f"/instances/{ct.SOPInstanceUID}")
    ((name, data),) = dw.fetch_source(source)
    assert name == "series1-instance1.dcm" and data == dicom_bytes("CT_small.dcm")  # the very bytes stored
    monkeypatch.setenv(dw.URL_VARIABLE, orthanc.url)
    (row,) = dw.search_studies(dw.make_client(), modality="CT", date=ct.StudyDate)
    assert row.study_uid == ct.StudyInstanceUID


@pytest.mark.parametrize("name, modality", [("test-SR.dcm", "SR"), ("rtplan.dcm", "RTPLAN")])
def test_a_non_image_object_is_one_sentence(orthanc, client, pacs, name, modality):
    header = pacs[name]
    with pytest.raises(dw.DicomWebError) as err:
        dw.retrieve_instance(client, header.StudyInstanceUID, header.SeriesInstanceUID, header.SOPInstanceUID)
    assert err.value.kind == "not_image"
    assert str(err.value) == (f"This DICOM object ({modality}) holds no image pixels; pick an image series such as "
                              "CR, DX, CT or MR.")
    with pytest.raises(dw.DicomWebError) as err:
        dw.fetch_source(f"dicomweb:{orthanc.url}/studies/{header.StudyInstanceUID}", client=client)
    assert err.value.kind == "not_image"


def test_an_instance_that_is_not_there_is_one_sentence(client, pacs):
    ct = pacs["CT_small.dcm"]
    with pytest.raises(dw.DicomWebError) as err:
        dw.retrieve_instance(client, ct.StudyInstanceUID, ct.SeriesInstanceUID, "1.2.3.4")
    assert err.value.kind == "empty" and one_sentence(str(err.value))


# ----------------------------------------------------------------------------- store

def test_stow_a_real_dataset_and_find_it_again(client, pacs):
    result = pydicom.dcmread(dicom_path("CT_small.dcm"))
    result.StudyInstanceUID, result.SeriesInstanceUID = generate_uid(), generate_uid()
    result.SOPInstanceUID = result.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    result.StudyDescription, result.StudyDate = "medxai stow check", MADE_DATE
    assert dw.store(client, [result]).stored == (result.SOPInstanceUID,)

    (row,) = dw.search_studies(client, description="stow check")
    assert row.study_uid == result.StudyInstanceUID
    data = dw.retrieve_instance(client, row.study_uid, result.SeriesInstanceUID, result.SOPInstanceUID)
    np.testing.assert_array_equal(load_scan(data).frames, load_scan(dicom_bytes("CT_small.dcm")).frames)

    again = pydicom.dcmread(io.BytesIO(data))
    again.SOPInstanceUID = again.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    again.save_as(buffer)
    assert dw.store(client, [buffer.getvalue()], study_uid=row.study_uid).stored == (again.SOPInstanceUID,)
    assert len(dw.search_instances(client, row.study_uid, result.SeriesInstanceUID)) == 2


def test_stow_into_another_study_is_refused_with_one_sentence(client, pacs):
    other = pydicom.dcmread(dicom_path("MR_small.dcm"))
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    with pytest.raises(dw.DicomWebError) as err:
        dw.store(client, [other], study_uid=pacs["CT_small.dcm"].StudyInstanceUID)
    assert err.value.kind == "refused" and one_sentence(str(err.value))


# ----------------------------------------------------------------------------- failures

def test_a_wrong_password_says_so_without_echoing_it(orthanc, pacs):
    wrong = "not-the-" + orthanc.password[:6]
    client = dw.make_client(orthanc.url, user=orthanc.user, password=wrong)
    with pytest.raises(dw.DicomWebError) as err:
        dw.search_studies(client)
    assert err.value.kind == "auth"
    assert str(err.value) == (f"The DICOMweb server at {orthanc.rest_url} refused the user name and password "
                              "(HTTP 401); check MEDXAI_DICOMWEB_USER and MEDXAI_DICOMWEB_PASSWORD or the settings.")
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_a_stopped_server_is_unreachable(orthanc):  # the session's server only for its skip when not installed
    server = start_orthanc()
    try:
        client = dw.make_client(server.url, user=server.user, password=server.password)
        with pytest.raises(dw.DicomWebError) as err:
            dw.search_studies(client)
        assert err.value.kind == "empty" and str(err.value) == "The DICOMweb server holds no studies."
        server.stop(graceful=False)  # its data is thrown away: no need for Orthanc's 2.5 s shutdown
        with pytest.raises(dw.DicomWebError) as err:
            dw.search_studies(client)
    finally:
        server.remove()
    assert err.value.kind == "unreachable"
    assert str(err.value) == (f"Cannot reach the DICOMweb server at {server.rest_url} (connection refused); check "
                              "the address and that the server is running.")


def test_a_server_that_never_answers_times_out():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)  # the kernel completes connections; nobody ever reads or answers
        port = silent.getsockname()[1]
        client = dw.make_client(f"http://127.0.0.1:{port}/dicom-web", user="u", password="p", timeout=(2.0, 0.3))
        with pytest.raises(dw.DicomWebError) as err:
            dw.search_studies(client, modality="CT")
    assert err.value.kind == "timeout"
    assert str(err.value) == (f"The DICOMweb server at http://127.0.0.1:{port} did not answer within 0.3 seconds; "
                              "it may be busy or the address may not be a DICOMweb server, so try again later or "
                              "allow a longer timeout.")


def test_something_that_is_not_a_dicomweb_root_is_one_sentence(orthanc):
    client = dw.make_client(orthanc.rest_url + "/not-dicom-web", user=orthanc.user, password=orthanc.password)
    with pytest.raises(dw.DicomWebError) as err:
        dw.search_studies(client)
    assert err.value.kind == "protocol" and one_sentence(str(err.value))


# ----------------------------------------------------------------------------- sources

def test_parse_source_at_each_level():
    base = "http://127.0.0.1:8042/dicom-web"
    assert dw.parse_source(f"dicomweb:{base}/studies/1.2/series/3.4/instances/5.6") == (base, "1.2", "3.4", "5.6")
    assert dw.parse_source(f"dicomweb:{base}/studies/1.2/series/3.4/").level == "series"
    study = dw.parse_source(f"DICOMweb:{base}/studies/1.2")
    assert study == (base, "1.2", None, None) and study.level == "study"
    assert dw.source_url(dw.parse_source(f"dicomweb:{base}/studies/1.2/series/3.4")) == \
        f"dicomweb:{base}/studies/1.2/series/3.4"
    assert dw.is_source("dicomweb:x") and not dw.is_source("scan.dcm")


@pytest.mark.parametrize("text", [
    "dicomweb:", "dicomweb:http://127.0.0.1:8042/dicom-web", "dicomweb:ftp://host/studies/1.2",
    "dicomweb:http://127.0.0.1:8042/dicom-web/studies/1.2/series", "dicomweb:http://h/studies/1.2x",
    "dicomweb:http://h/studies/1.2/instances/3.4", "http://h/studies/1.2", "dicomweb:http://h:port/studies/1.2",
    "dicomweb:http://h/studies/1.2?limit=1",
])
def test_a_malformed_source_is_one_sentence(text):
    with pytest.raises(dw.DicomWebError) as err:
        dw.parse_source(text)
    assert err.value.kind == "source" and one_sentence(str(err.value))


def test_credentials_in_an_address_are_refused_and_not_repeated():
    with pytest.raises(dw.DicomWebError) as err:
        dw.parse_source("dicomweb:http://alice:s3cret-pw@127.0.0.1:8042/dicom-web/studies/1.2")
    assert "s3cret-pw" not in str(err.value) and "alice" not in str(err.value)
    assert "MEDXAI_DICOMWEB_USER" in str(err.value) and err.value.kind == "source"
    with pytest.raises(dw.DicomWebError, match="user name or password"):
        dw.make_client("http://alice:s3cret-pw@127.0.0.1:8042/dicom-web")
    with pytest.raises(dw.DicomWebError, match="Only one of the user name and password"):
        dw.make_client("http://127.0.0.1:8042/dicom-web", user="alice", password=None)


# ----------------------------------------------------------------------------- privacy

def test_credentials_never_reach_logs_or_errors(orthanc, pacs, caplog):
    caplog.set_level(logging.DEBUG)
    logging.getLogger("medxai.test").debug("capture is on")
    good = dw.make_client(orthanc.url, user=orthanc.user, password=orthanc.password)
    bad = dw.make_client(orthanc.url, user=orthanc.user, password=orthanc.password + "x")
    ct = pacs["CT_small.dcm"]
    messages = []
    dw.search_studies(good, modality="CT", description="e 1")
    dw.retrieve_instance(good, ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID)
    for call in (lambda: dw.search_studies(bad), lambda: dw.search_studies(good, modality="XA"),
                 lambda: dw.retrieve_instance(bad, ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID),
                 lambda: dw.store(bad, [dicom_bytes("CT_small.dcm")])):
        with pytest.raises(dw.DicomWebError) as err:
            call()
        messages.append(str(err.value))
    assert "capture is on" in caplog.text  # the capture works, so silence below means something
    everything = caplog.text + "\n".join(messages) + repr(good.__dict__) + repr(bad._session.auth)
    assert orthanc.password not in everything and orthanc.user not in everything
    # Nor do the request URLs (UIDs, search terms) reach any log: those libraries stay quiet during requests.
    assert not [r for r in caplog.records if r.name.startswith(("urllib3", "dicomweb_client", "requests"))]
    assert ct.SOPInstanceUID not in caplog.text
