"""The Models page in a real browser: ``streamlit run app.py`` driven by Debian Chromium with Playwright.

One server (with the committed default models and a temporary folder of extra models) and one browser
page serve every step: a Keras model imported through the form, a tiny training started from a dataset
folder that finishes and appears in the Explain page's picker, and a training from an uploaded zip that
is cancelled and leaves nothing behind (no model folder, no staging folder, nothing in the server's
temporary folder). Screenshots go to ``test-artifacts/`` (git-ignored).

Without ``/usr/bin/chromium`` (or the default models) the tests skip locally and fail when ``CI`` is set.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest

from conftest import dicom_path
from core.jobs import STAGING
from page_support import DEFAULT_MODELS, real_models_present
from test_browser import (
    ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, STARTUP_SECONDS, VIEWPORT, assert_no_errors, open_page, screenshot, settle,
    unavailable,
)
from ui.server import running_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PER_CLASS = 8
#: TensorFlow's import, a training and its calibration on a shared 2-core machine.
TRAINING_MS = 900_000


@pytest.fixture(scope="module")
def folders(chest_dir, tmp_path_factory):
    """The server's folder of extra models, its temporary folder, and a tiny class-folder dataset."""
    base = tmp_path_factory.mktemp("browser_models")
    extra, temp, dataset = base / "extra", base / "tmp", base / "dataset"
    for folder in (extra, temp):
        folder.mkdir()
    for name in ("NORMAL", "PNEUMONIA"):
        (dataset / name).mkdir(parents=True)
        for path in sorted((chest_dir / name).glob("*.jpeg"))[:PER_CLASS]:
            (dataset / name / path.name).write_bytes(path.read_bytes())
    return {"extra": extra, "tmp": temp, "dataset": dataset, "base": base}


@pytest.fixture(scope="module")
def server(folders):
    """``streamlit run app.py`` on a free port, writing models into the temporary extra folder; always terminated."""
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not found: install Debian's chromium (bash scripts/setup.sh --browser)")
    if not real_models_present():
        unavailable(f"the default models are missing from {DEFAULT_MODELS} (model.json and model.keras per task)")
    ARTIFACTS.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MEDXAI_MODELS"}
    env |= {"TF_CPP_MIN_LOG_LEVEL": "2", "MEDXAI_WARM_UP": "0", "MEDXAI_EXTRA_MODELS": str(folders["extra"]),
            "MEDXAI_SETTINGS": str(folders["base"] / "no-settings.toml"), "TMPDIR": str(folders["tmp"])}
    # Its training processes die with it (PR_SET_PDEATHSIG).
    with running_dashboard(env, ARTIFACTS / "streamlit-server-models.log", timeout=STARTUP_SECONDS) as (url, _):
        yield url


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.set_default_timeout(60_000)
            tab.goto(server)
            # app.py's navigation (titles), not the pages/ folder's file names Streamlit lists until it arrives:
            # a click on one of those runs the page without app.py.
            tab.locator('[data-testid="stSidebarNavLink"]', has_text="Training history").wait_for()
            yield tab
        finally:
            browser.close()


def keras_file(folder: Path) -> Path:
    from core.runtime import quiet_tensorflow
    from test_importer import sequential_rgb

    quiet_tensorflow()
    path = folder / "browser_rgb.keras"
    sequential_rgb().save(path)
    return path


def uploader(page, label: str):
    return page.locator('[data-testid="stFileUploader"]').filter(has_text=label).locator("input[type=file]")


def tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")  # Streamlit takes a text input's value on Enter or blur
    page.wait_for_timeout(800)
    settle(page)


def choose(page, label: str, option: str) -> None:
    page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
    page.get_by_role("option", name=option).click()
    page.wait_for_timeout(800)
    settle(page)


def test_import_a_keras_model_through_the_form(page, folders):
    open_page(page, "Models", "Every model folder the dashboard knows")
    assert_no_errors(page)
    assert page.get_by_text("Uploaded files stay in memory for your session only.").count() == 1  # via app.py
    tab(page, "Import a Keras model")
    uploader(page, "Keras 3 model file").set_input_files(str(keras_file(folders["base"])))
    page.get_by_text("browser_rgb.keras").first.wait_for()
    fill(page, "Name shown in the dashboard", "Browser RGB")
    fill(page, "Class names, in the order of the model's outputs", "a, b, c")
    page.get_by_role("button", name="Import the model").click()
    page.get_by_text("Imported Browser RGB:").first.wait_for(timeout=120_000)
    settle(page)
    assert_no_errors(page)
    assert (folders["extra"] / "browser_rgb" / "model.keras").is_file()
    screenshot(page, "models-1-import")


def test_a_training_from_a_server_folder_finishes_and_appears_in_the_picker(page, folders):
    tab(page, "Train a model")
    fill(page, "Dataset folder on the server", str(folders["dataset"]))
    fill(page, "Model name", "Browser trained")
    fill(page, "Epochs", "1")
    choose(page, "Input size", "32 x 32")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Browser trained", exact=False).first.wait_for()
    screenshot(page, "models-2-training")
    page.get_by_text("Finished: Browser trained is in the model picker").wait_for(timeout=TRAINING_MS)
    settle(page)
    assert_no_errors(page)
    assert (folders["extra"] / "browser_trained" / "ood.npz").is_file(), "calibrated, with its outlier check"
    screenshot(page, "models-3-finished")

    open_page(page, "Scan")
    page.set_input_files('[data-testid="stFileUploader"] input[type=file]', str(dicom_path("RG1_UNCI.dcm")))
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                 .some(t => t.textContent === 'RG1_UNCI.dcm')""")
    settle(page)
    open_page(page, "Explain", timeout_ms=300_000)  # the scan may be out of the suggested model's range: no
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").wait_for(timeout=300_000)  # maps yet
    choose(page, "Model", "Browser trained")
    overlay_drawn = """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                             .some(t => t.textContent.startsWith('Grad-CAM for'))"""
    anyway = page.get_by_role("button", name="Show the prediction and maps anyway")
    # The model loads first (TensorFlow too, without the warm-up); an adult radiograph may then lie outside the
    # tiny model's training images, and the page asks before it shows anything.
    page.wait_for_function(f"""() => ({overlay_drawn})() || [...document.querySelectorAll('button')]
                                      .some(b => b.textContent.includes('Show the prediction and maps anyway'))""",
                           timeout=300_000)
    if anyway.count():
        anyway.click()
    page.wait_for_function(overlay_drawn, timeout=300_000)
    assert_no_errors(page, error_boxes=False)
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")
    assert "Browser trained" in options and "Browser RGB" in options, options
    screenshot(page, "models-4-explain")


def dataset_zip(dataset: Path, target: Path) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(dataset.rglob("*.jpeg")):
            archive.write(path, f"upload/{path.relative_to(dataset)}")
    target.write_bytes(buffer.getvalue())
    return target


def test_a_cancelled_training_from_a_zip_leaves_nothing_behind(page, folders):
    before = sorted(p.name for p in folders["extra"].iterdir() if p.name != STAGING)
    open_page(page, "Models", "Every model folder the dashboard knows")
    tab(page, "Train a model")
    page.get_by_text("A zip of class folders").click()
    settle(page)
    uploader(page, "Zip of class folders").set_input_files(str(dataset_zip(folders["dataset"],
                                                                            folders["base"] / "upload.zip")))
    page.get_by_text("upload.zip").first.wait_for()
    fill(page, "Model name", "Browser cancelled")
    fill(page, "Epochs", "200")
    choose(page, "Input size", "32 x 32")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("of 200 epochs done").first.wait_for(timeout=TRAINING_MS)
    assert len(list(folders["tmp"].glob("medxai-dataset-*"))) == 1, "the zip is unpacked in one private folder"
    screenshot(page, "models-5-running")
    page.get_by_role("button", name="Cancel").click()
    page.get_by_text("Cancelled: its partial run and its dataset copy were removed.").wait_for(timeout=120_000)
    settle(page)
    assert_no_errors(page)
    assert list(folders["tmp"].glob("medxai-dataset-*")) == []
    assert sorted(p.name for p in folders["extra"].iterdir() if p.name != STAGING) == before
    staging = folders["extra"] / STAGING
    assert not staging.exists() or list(staging.iterdir()) == []
    screenshot(page, "models-6-cancelled")
