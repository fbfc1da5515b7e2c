"""core.settings: an environment variable wins over the settings file; a bad file is one sentence."""

from __future__ import annotations

import os

import pytest

from core.settings import SettingsError, read_settings_file, setting


def test_environment_wins_over_the_file_and_the_default(tmp_path, monkeypatch):
    path = tmp_path / "settings.toml"
    path.write_text('dicomweb_url = "http://127.0.0.1:8042/dicom-web"\nextra_models = ["/a", "/b"]\n')
    monkeypatch.setenv("MEDXAI_SETTINGS", str(path))
    monkeypatch.delenv("MEDXAI_DICOMWEB_URL", raising=False)
    monkeypatch.delenv("MEDXAI_EXTRA_MODELS", raising=False)
    assert setting("dicomweb_url") == "http://127.0.0.1:8042/dicom-web"
    assert setting("extra_models") == os.pathsep.join(["/a", "/b"])
    monkeypatch.setenv("MEDXAI_DICOMWEB_URL", "http://pacs/dicom-web")
    assert setting("dicomweb_url") == "http://pacs/dicom-web"
    assert setting("class_db", "sqlite:///x") == "sqlite:///x"


def test_no_file_means_nothing_set(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDXAI_SETTINGS", str(tmp_path / "none.toml"))
    assert read_settings_file() == {}


def test_a_bad_file_is_one_sentence(tmp_path):
    (tmp_path / "bad.toml").write_text("dicomweb_url = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        read_settings_file(tmp_path / "bad.toml")
    (tmp_path / "odd.toml").write_text('colour = "blue"\n')
    with pytest.raises(SettingsError, match="unknown settings: colour"):
        read_settings_file(tmp_path / "odd.toml")
    with pytest.raises(KeyError):
        setting("colour")
