"""core.inputs: files and dicomweb: sources as one item per image, credentials from the settings.

The sources come from the session's real Orthanc (conftest); the login is given through a
settings-file mapping, with the environment empty, as an installation without variables has it.
"""

from __future__ import annotations

import pytest

from conftest import dicom_bytes
from core import inputs
from core.io import ScanError


def test_files_keep_their_order_and_get_unique_stems(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "scan.dcm").write_bytes(dicom_bytes("CT_small.dcm"))
    items = inputs.expand_inputs([str(tmp_path / "a" / "scan.dcm"), str(tmp_path / "scan.png"),
                                  str(tmp_path / "a" / "scan.dcm")])
    assert [i.label for i in items] == [str(tmp_path / "a" / "scan.dcm"), str(tmp_path / "scan.png"),
                                        str(tmp_path / "a" / "scan.dcm")]
    assert [i.stem for i in items] == ["scan", "scan-2", "scan-3"]
    assert items[0].read() == dicom_bytes("CT_small.dcm") and items[0].source is None
    with pytest.raises(ScanError, match="The file does not exist."):
        items[1].read()


def test_a_source_uses_the_settings_login_and_names_each_instance(orthanc, pacs):
    ct = pacs["CT_small.dcm"]
    login = {"dicomweb_user": orthanc.user, "dicomweb_password": orthanc.password}
    study = f"dicomweb:{orthanc.url}/studies/{ct.StudyInstanceUID}"
    (item,) = inputs.expand_inputs([study], environ={}, settings=login)
    assert item.error is None and item.data == dicom_bytes("CT_small.dcm")
    assert item.label == f"{study}#series1-instance1.dcm" and item.stem == "series1-instance1"
    assert item.source.study_uid == ct.StudyInstanceUID and item.read() is item.data
    client = inputs.pacs_client(environ={"MEDXAI_DICOMWEB_URL": orthanc.url}, settings=login)
    assert client.base_url == orthanc.url and orthanc.password not in repr(client._session.auth)

    (refused,) = inputs.expand_inputs([study], environ={}, settings={"dicomweb_user": orthanc.user})
    assert refused.data is None and refused.label == study
    assert refused.error.startswith("Only one of the user name and password is set;")
    (no_login,) = inputs.expand_inputs([study], environ={}, settings={})
    assert "HTTP 401" in no_login.error


def test_a_login_in_the_source_is_dropped_from_its_label():
    text = "dicomweb:http://alice:s3cret@127.0.0.1:9/dicom-web/studies/1.2"
    (item,) = inputs.expand_inputs([text], environ={}, settings={})
    assert item.label == "dicomweb:http://127.0.0.1:9/dicom-web/studies/1.2"
    assert "s3cret" not in item.error and "alice" not in item.error
