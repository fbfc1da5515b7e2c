"""The Scan page's PACS browser and the Explain page's DICOM results, against the session's real Orthanc."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest

from page_support import assert_clean, decode, figure, go, widget
from ui.state import UPLOAD, Keys

pytestmark = pytest.mark.slow


def connect(at, orthanc, password=None):
    """Open the PACS section's fields: address, user, password (typed, as a person would)."""
    widget(at.text_input, "DICOMweb address").set_value(orthanc.url)
    widget(at.text_input, "User").set_value(orthanc.user)
    widget(at.text_input, "Password").set_value(password or orthanc.password)
    return at.run()


def search(at, modality=None):
    if modality:
        widget(at.text_input, "Modality").set_value(modality)
    (button,) = [b for b in at.button if b.label == "Search the PACS"]
    button.click().run()
    return at


def test_search_retrieve_explain_and_send_the_results_back(app, orthanc, pacs, monkeypatch):
    from core import dicomweb

    at = search(connect(app, orthanc), "CT")
    assert_clean(at)
    # The session's one Orthanc also holds what other tests stored: pick CT_small's own study.
    found = at.session_state[Keys.PACS_RESULTS]
    (studies,) = [w for w in at.selectbox if w.label == f"Studies found ({len(found)})"]
    (index,) = [i for i, row in enumerate(found) if row.study_uid == pacs["CT_small.dcm"].StudyInstanceUID]
    at = studies.set_value(index).run()
    (studies,) = [w for w in at.selectbox if w.label == f"Studies found ({len(found)})"]
    assert "CT" in studies.options[index]
    assert pacs["CT_small.dcm"].PatientName.family_name not in " ".join(studies.options)  # hidden until revealed
    (open_image,) = [b for b in at.button if b.label == "Open this image"]  # the first image, as chosen
    open_image.click().run()
    assert_clean(at)
    assert at.session_state[Keys.SOURCE] == UPLOAD and at.session_state[Keys.UPLOAD]["pacs"] is not None
    at = go(at, "explain")
    anyway = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
    if anyway:
        anyway[0].click().run()
    assert_clean(at)
    widget(at.button, "Prepare the DICOM results").click().run()
    assert_clean(at)
    labels = [b.proto.label for b in at.get("download_button")]
    assert "DICOM results (SR, map, overlay; zip)" in labels
    (send,) = [b for b in at.button if b.label == "Send the results to the PACS"]
    send.click().run()
    assert not at.exception and not at.error
    assert any(s.value.startswith("Stored") for s in at.success)
    client = dicomweb.make_client(orthanc.url, user=orthanc.user, password=orthanc.password)
    study = pacs["CT_small.dcm"].StudyInstanceUID
    modalities = {row.modality for row in dicomweb.search_series(client, study)}
    assert "SR" in modalities  # the report went back into the source's own study


def test_a_wrong_password_is_one_sentence(app, orthanc):
    at = search(connect(app, orthanc, password="not-the-password"))
    assert not at.exception
    assert len(at.error) == 1 and "not-the-password" not in at.error[0].value
    assert "password" in at.error[0].value.lower() or "credentials" in at.error[0].value.lower()


def test_dicom_results_download_is_de_identified(app, orthanc, pacs):
    """The zip the page offers (the same function, with the session's salt) holds no patient name or source UID."""
    from core.dicom_export import results_for_scan
    from core.dicom_results import to_zip
    from core.io import load_scan
    from core.model import load_model

    from conftest import dicom_bytes
    from page_support import DEFAULT_MODELS

    data = dicom_bytes("CT_small.dcm")
    loaded = load_model(DEFAULT_MODELS / "chest_xray")
    objects = results_for_scan(loaded, load_scan(data), data, salt="session-secret").objects
    blob = to_zip(objects)
    source = pydicom.dcmread(io.BytesIO(data))
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for name in archive.namelist():
            raw = archive.read(name)
            assert str(source.PatientName).encode() not in raw and source.StudyInstanceUID.encode() not in raw


def choose_study(at, study_uid: str):
    """Pick the study with this UID among the search's rows (the session's Orthanc holds other tests' studies)."""
    found = at.session_state[Keys.PACS_RESULTS]
    (studies,) = [w for w in at.selectbox if w.label == f"Studies found ({len(found)})"]
    (index,) = [i for i, row in enumerate(found) if row.study_uid == study_uid]
    return studies.set_value(index).run()


def test_an_image_picked_from_a_series_is_opened(app, orthanc, pacs):
    ct = pacs["CT_small.dcm"]
    at = choose_study(search(connect(app, orthanc), "CT"), ct.StudyInstanceUID)
    assert_clean(at)
    (picker,) = [w for w in at.selectbox if w.label.startswith("Image of the series")]
    assert picker.label == "Image of the series (1)" and picker.options == [f"number {ct.InstanceNumber} · 128 x 128"]
    picker.set_value(0).run()
    widget(at.button, "Open this image").click().run()
    assert_clean(at)
    upload = at.session_state[Keys.UPLOAD]
    assert at.session_state[Keys.SOURCE] == UPLOAD and upload["name"] == f"PACS image {ct.InstanceNumber}"
    assert upload["pacs"].instance_uid == ct.SOPInstanceUID and "files" not in upload
    assert pydicom.dcmread(io.BytesIO(upload["data"])).SOPInstanceUID == ct.SOPInstanceUID


def test_a_whole_series_from_the_pacs_gets_a_probability_strip_on_explain(app, orthanc):
    from pydicom.uid import generate_uid

    from series_support import axial_series

    study, series = generate_uid(), generate_uid()
    for _, data in reversed(axial_series(3, series_uid=series, study_uid=study, study_date="20240103",
                                         description="medxai page series")):  # stored last slice first
        orthanc.upload(data)
    at = connect(app, orthanc)
    widget(at.text_input, "Study description contains").set_value("medxai page series")
    at = choose_study(search(at), study)
    assert_clean(at)
    picker = widget(at.selectbox, "Image of the series (3)")
    assert [o.split(" · ")[0] for o in picker.options] == ["number 1", "number 2", "number 3"]  # by instance number
    widget(at.button, "Open the whole series").click().run()
    assert_clean(at)
    upload = at.session_state[Keys.UPLOAD]
    assert len(upload["files"]) == 3 and upload["pacs"].instance_uid is None

    at = go(at, "explain")
    anyway = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
    if anyway:  # a CT given to a radiograph model: said first, shown on request
        anyway[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    slider = widget(at.slider, "Slice")
    assert (slider.min, slider.max) == (1, 3)
    strip = figure(at, "slice_strip")
    lines = [t for t in strip["data"] if t.get("type") == "scatter"]
    assert lines and all(list(decode(t["x"])) == [1, 2, 3] for t in lines)
    assert all(0 <= p <= 1 for t in lines for p in decode(t["y"]))
    captions = [c.value for c in at.caption]
    assert any(c.startswith("The model reads each slice on its own") and "3 slices" in c
               and "not a diagnosis of the whole volume" in c for c in captions), captions


def test_the_patient_module_checkbox_needs_revealed_identifiers(app):
    from conftest import dicom_bytes
    from page_support import upload

    data = dicom_bytes("CT_small.dcm")
    name = str(pydicom.dcmread(io.BytesIO(data)).PatientName)

    def explain(at):
        at = go(at, "explain")
        anyway = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
        if anyway:
            anyway[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        return at, widget(at.checkbox, "With the patient module (as stored in the PACS)")

    def zipped_text(at) -> bytes:
        for prepare in [b for b in at.button if b.label == "Prepare the DICOM results"]:  # none: built already
            prepare.click().run()
        assert not at.exception, [e.value for e in at.exception]
        built = at.session_state[Keys.DICOM_RESULTS]
        assert built["error"] is None and "DICOM results (SR, map, overlay; zip)" in [
            b.proto.label for b in at.get("download_button")]
        with zipfile.ZipFile(io.BytesIO(built["zip"])) as archive:
            return b"".join(archive.read(member) for member in archive.namelist())

    at, keep = explain(upload(app, "CT_small.dcm", data))
    assert keep.proto.disabled and not keep.value  # identifiers hidden: de-identified only
    assert name.encode() not in zipped_text(at)

    at = go(at, "scan")
    widget(at.toggle, "Reveal identifiers for this session").set_value(True).run()
    at, keep = explain(at)
    assert not keep.proto.disabled and not keep.value  # possible now, still off by default
    assert name.encode() not in zipped_text(at)
    keep.check().run()
    assert name.encode() in zipped_text(at)  # the objects as the PACS would store them

    at = go(at, "scan")
    widget(at.toggle, "Reveal identifiers for this session").set_value(False).run()
    at, keep = explain(at)
    assert keep.proto.disabled and not keep.value  # hidden again: the choice does not stay on
    assert name.encode() not in zipped_text(at)


def test_dicom_results_that_cannot_be_made_are_a_sentence_and_no_download(app, monkeypatch):
    from conftest import dicom_bytes
    from core import dicom_export
    from core.dicom_results import DicomResultError
    from page_support import upload

    sentence = "The DICOM results cannot be made for this scan because its header is damaged."

    def refuse(*args, **kwargs):
        raise DicomResultError(sentence)

    monkeypatch.setattr(dicom_export, "results_for_scan", refuse)  # the page imports it on every run
    at = go(upload(app, "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm")), "explain")
    for anyway in [b for b in at.button if b.label == "Show the prediction and maps anyway"]:  # an adult film
        anyway.click().run()
    assert_clean(at)
    widget(at.button, "Prepare the DICOM results").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert [e.value for e in at.error] == [sentence]
    assert "DICOM results (SR, map, overlay; zip)" not in [b.proto.label for b in at.get("download_button")]
    assert not [b for b in at.button if b.label == "Prepare the DICOM results"]  # remembered for these settings
    at.run()
    assert [e.value for e in at.error] == [sentence]
