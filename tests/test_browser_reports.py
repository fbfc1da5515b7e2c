"""The Explain page's one-click reports in a real browser: ``streamlit run app.py`` driven by Debian Chromium.

pydicom's CT_small.dcm (a header with the patient's name, ID and other identifiers) is uploaded through the
Scan page's real file input; on Explain, "Report (PDF)" and "Report (PNG)" are clicked and the files the
browser saves are checked: the PDF's text (``pdftotext``) and the PNG's bytes and metadata hold none of the
header's identifiers (identifiers stay hidden unless the person reveals them and ticks the report box). The
PDF's first page is rendered with ``pdftoppm`` to ``test-artifacts/report-ct-page-1.png`` and the PNG saved as
``test-artifacts/report-ct.png`` for people to look at.

Without ``/usr/bin/chromium``, poppler or the default models the tests skip locally and fail when ``CI`` is set
(the pattern of ``tests/test_browser.py``, whose helpers this module uses).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings

import pydicom
import pytest

from conftest import dicom_path
from page_support import DEFAULT_MODELS, real_models_present
from test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    EXPLAIN_SECONDS,
    VIEWPORT,
    assert_no_errors,
    dashboard,
    screenshot,
    settle,
    show_anyway_if_asked,
    unavailable,
    wait_for_overlay,
)
from test_privacy import identifier_values

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SCAN = "CT_small.dcm"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``streamlit run app.py`` on a free port with the default models and no settings file; always stopped."""
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not found: install Debian's chromium (bash scripts/setup.sh --browser)")
    if shutil.which("pdftotext") is None or shutil.which("pdftoppm") is None:
        unavailable("pdftotext / pdftoppm not found: install Debian's poppler-utils (bash scripts/setup.sh --browser)")
    if not real_models_present():
        unavailable(f"the default models are missing from {DEFAULT_MODELS} (model.json and model.keras per task)")
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("reports_server")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDXAI_")}  # the real default models
    env |= {"TF_CPP_MIN_LOG_LEVEL": "2", "MEDXAI_WARM_UP": "1", "MEDXAI_SETTINGS": str(folder / "no-settings.toml")}
    with dashboard(env, ARTIFACTS / "streamlit-reports-server.log") as url:
        yield url


@pytest.fixture(scope="module")
def explained(server):
    """One Chromium page: CT_small.dcm uploaded on the Scan page, then the Explain page with its overlay."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT, accept_downloads=True)
            page.set_default_timeout(EXPLAIN_SECONDS * 1000)
            page.goto(server)
            # app.py's own navigation, not the pages/ folder's file names Streamlit lists until its first run ends
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Training history").wait_for()
            page.set_input_files('[data-testid="stFileUploader"] input[type=file]', str(dicom_path(SCAN)))
            page.wait_for_function(
                f"""() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                         .some(t => t.textContent === '{SCAN}')""")
            settle(page, EXPLAIN_SECONDS * 1000)
            page.locator('[data-testid="stSidebarNavLink"]', has_text="Explain").click()
            page.wait_for_selector('h1:has-text("Explain")')
            # Either the controls, or first the out-of-range sentence with its "show anyway" button.
            anyway = page.get_by_role("button", name="Show the prediction and maps anyway")
            page.get_by_text("Explain class").first.or_(anyway).first.wait_for(state="attached")
            settle(page, EXPLAIN_SECONDS * 1000)
            show_anyway_if_asked(page)
            wait_for_overlay(page)
            page.get_by_role("button", name="Report (PDF)").wait_for()
            assert_no_errors(page, error_boxes=False)  # the out-of-range sentence is an error box
            screenshot(page, "report-ct-explain")
            yield page
        finally:
            browser.close()


@pytest.fixture(scope="module")
def header_identifiers() -> dict[str, str]:
    """The patient's name, ID and birth date as CT_small.dcm's header holds them (empty when absent)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(dicom_path(SCAN), stop_before_pixels=True)
    found = {keyword: str(ds.get(keyword, "") or "").strip()
             for keyword in ("PatientName", "PatientID", "PatientBirthDate")}
    assert found["PatientName"] and found["PatientID"]  # the check has something to find
    return found


def searched_values(header_identifiers: dict[str, str]) -> set[str]:
    """Name (whole and its parts), ID and birth date, and the privacy test's distinctive identifier values."""
    name = pydicom.valuerep.PersonName(header_identifiers["PatientName"])
    values = {v for v in header_identifiers.values() if v} | {p for p in (name.family_name, name.given_name) if p}
    return values | identifier_values(SCAN)


def download(page, label: str):
    with page.expect_download(timeout=EXPLAIN_SECONDS * 1000) as event:
        page.get_by_role("button", name=label).click()
    settle(page, EXPLAIN_SECONDS * 1000)
    return event.value


def test_the_pdf_report_holds_no_identifier(explained, header_identifiers, tmp_path):
    saved = download(explained, "Report (PDF)")
    assert saved.suggested_filename == "CT_small_report.pdf"
    path = tmp_path / "report.pdf"
    saved.save_as(path)
    assert path.read_bytes().startswith(b"%PDF-")
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout
    flat = " ".join(text.split())
    assert "not a diagnostic device" in flat and "SHA-256" in flat  # the report's text is readable
    leaks = sorted(v for v in searched_values(header_identifiers) if v.lower() in text.lower() or v in flat)
    assert not leaks, leaks
    assert "CompressedSamples" not in text and SCAN not in text  # the name's family part; the file name
    subprocess.run(["pdftoppm", "-r", "110", "-png", "-f", "1", "-l", "1", "-singlefile", str(path),
                    str(ARTIFACTS / "report-ct-page-1")], check=True)
    assert (ARTIFACTS / "report-ct-page-1.png").stat().st_size > 20_000
    assert_no_errors(explained, error_boxes=False)


def test_the_png_report_holds_no_identifier(explained, header_identifiers, tmp_path):
    from PIL import Image

    saved = download(explained, "Report (PNG)")
    assert saved.suggested_filename == "CT_small_report.png"
    path = tmp_path / "report.png"
    saved.save_as(path)
    data = path.read_bytes()
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width >= 1000 and png.height >= 600
        metadata = " ".join(f"{k} {v}" for k, v in png.info.items() if isinstance(v, (str, bytes)))
    # Text in a PNG is either a metadata chunk (searched for every value) or drawn pixels, which reach the
    # file only as compressed bytes: there a 3-letter value like "CT1" turns up by chance (about once in
    # 30 reports), so the raw bytes are searched for the values long enough not to.
    leaks = sorted(v for v in searched_values(header_identifiers)
                   if v in metadata or (len(v) >= 6 and (v.encode() in data or v.encode("utf-16-le") in data)))
    assert not leaks, leaks
    shutil.copy(path, ARTIFACTS / "report-ct.png")
    assert_no_errors(explained, error_boxes=False)
