"""pages/about.py through the real app entry (``app.py`` + ``st.navigation``) with AppTest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conftest import REPO
from core.model import read_info


def about_page() -> AppTest:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    at.switch_page("pages/about.py")
    at.run(timeout=60)
    assert not at.exception, [e.value for e in at.exception]
    return at


def everything(at: AppTest) -> str:
    kinds = ("error", "warning", "info", "caption", "markdown")
    return "\n".join(e.value for kind in kinds for e in getattr(at, kind))


def test_states_plainly_that_it_is_not_a_diagnostic_device():
    at = about_page()
    assert "not a diagnostic device" in at.warning[0].value  # first, and in an alert box


def test_cites_data_sources_and_licences():
    text = everything(about_page())
    for citation in ("Kermany", "doi:10.17632/rscbjbr9sj.2", "CC BY 4.0", "Nickparvar", "CC0", "Cheng et al.",
                     "SARTAJ", "Br35H", "pydicom-data", "MIT"):
        assert citation in text, citation


def test_privacy_section():
    at = about_page()
    text = everything(at)
    for statement in ("in memory, for your session only", "never written to disk, logged, or sent",
                      "Usage statistics are switched off", "PS3.15 Annex E"):
        assert statement in text, statement
    assert any("Burned-in text" in w.value and "anonymous" in w.value for w in at.warning)


def test_saliency_guide_warns_a_plausible_map_is_no_proof():
    at = about_page()
    assert "How to read a saliency map" in [h.value for h in at.header]
    text = everything(at)
    assert "plausible map is not proof" in text


def test_each_committed_model_is_described():
    from ui.models import model_folders

    at = about_page()
    text = everything(at)
    entries = model_folders()
    assert entries and [t.label for t in at.tabs] == [entry.title for entry in entries]
    for entry in entries:
        folder = Path(entry.folder)
        card = folder / "MODEL_CARD.md"
        if card.is_file():
            assert card.read_text().strip().splitlines()[0].lstrip("# ") in text
        elif (folder / "model.json").is_file():
            assert ", ".join(read_info(folder)["class_names"]) in text
        else:
            assert "has not been trained yet" in text


@pytest.mark.slow
def test_model_card_or_model_json_facts(tiny_run, tmp_path, monkeypatch):
    folder = tmp_path / "chest_xray"
    shutil.copytree(tiny_run[0], folder)
    monkeypatch.setenv("MEDXAI_MODELS", str(tmp_path))
    card = (folder / "MODEL_CARD.md").read_text()  # written by core.train

    text = everything(about_page())
    assert card.splitlines()[0].lstrip("# ") in text
    assert "Intended use" in text

    (folder / "MODEL_CARD.md").unlink()  # a model folder from before model cards: key facts from model.json
    info = read_info(folder)
    text = everything(about_page())
    assert "Classes:** NORMAL, PNEUMONIA" in text
    assert f"{info['input_size']} × {info['input_size']}" in text
    assert f"accuracy {info['validation']['accuracy']:.3f}" in text
    assert "Mendeley Data" in text
