"""The Scan page's PACS browser and the Explain page's DICOM results, against the session's real Orthanc."""

from __future__ import annotations

import io
import zipfile

import pydicom
import pytest

from page_support import assert_clean, go, widget
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
    studies = widget(at.selectbox, "Studies found (1)")
    assert "CT" in studies.options[0]
    assert pacs["CT_small.dcm"].PatientName.family_name not in " ".join(studies.options)  # hidden until revealed
    (open_image,) = [b for b in at.button if b.label == "Open its first image"]
    open_image.click().run()
    assert_clean(at)
    assert at.session_state[Keys.SOURCE] == UPLOAD and at.session_state[Keys.UPLOAD]["pacs"] is not None
    at = go(at, "explain")
    anyway = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
    if anyway:
        anyway[0].click().run()
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
