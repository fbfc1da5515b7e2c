"""The dashboard in a real browser: ``streamlit run app.py`` (the README's command), driven by
Debian Chromium with Playwright.

One server and one browser page serve every step, with the committed default models in
``assets/models`` (what the README promises a user gets). Full-page screenshots of every
page are written to ``test-artifacts/`` (git-ignored) for people to look at.

Without ``/usr/bin/chromium`` (or the default models) the tests skip locally and fail when
the environment variable ``CI`` is set.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from conftest import REPO, dicom_path
from page_support import DEFAULT_MODELS, real_models_present
from ui.server import running_dashboard

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "test-artifacts"
VIEWPORT = {"width": 1440, "height": 900}
STARTUP_SECONDS = 90
#: The first Explain visit loads TensorFlow and the model and computes five maps on a shared CPU.
EXPLAIN_SECONDS = 300


def unavailable(reason: str) -> None:
    """Skip locally, fail in CI: a CI run must never pass without having driven the browser."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so this is a failure, not a skip)")
    pytest.skip(reason)


@contextlib.contextmanager
def dashboard(env: dict, log: Path):
    """``streamlit run app.py`` (the README's command) on a free loopback port with ``env``, its output in
    ``log``; yields the URL once the server answers its health check, and always stops it."""
    with running_dashboard(env, log, timeout=STARTUP_SECONDS) as (url, _process):
        yield url


@pytest.fixture(scope="module")
def server():
    """``streamlit run app.py`` on a free port with the default models (and the models' warm-up
    thread, as a user gets it); always terminated."""
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not found: install Debian's chromium (bash scripts/setup.sh --browser)")
    if not real_models_present():
        unavailable(f"the default models are missing from {DEFAULT_MODELS} (model.json and model.keras per task)")
    ARTIFACTS.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MEDXAI_MODELS"}  # the real default models
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["MEDXAI_WARM_UP"] = "1"  # as a user runs it
    with dashboard(env, ARTIFACTS / "streamlit-server.log") as url:
        yield url


@pytest.fixture(scope="module")
def page(server):
    """One Chromium page for every step, so the upload stays in the same session."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport=VIEWPORT)
            tab.set_default_timeout(60_000)
            tab.goto(server)
            # app.py's own navigation: until its first run ends Streamlit lists the pages/ folder's files (a click
            # on one of those reruns through app.py: ui.runtime.through_app)
            tab.locator('[data-testid="stSidebarNavLink"]', has_text="Training history").wait_for()
            yield tab
        finally:
            browser.close()


def settle(page, timeout_ms: int = 60_000) -> None:
    """Wait until the script run is over: no running indicator and no spinner."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
                 && !document.querySelector('[data-testid="stSpinner"]')""", timeout=timeout_ms)


def open_page(page, title: str, ready: str | None = None, timeout_ms: int = 60_000) -> None:
    """Click the sidebar link, then wait for the page's title, a text that ends it, and the run's end."""
    link = page.locator('[data-testid="stSidebarNavLink"]', has_text=title)
    link.click()
    try:
        try:
            page.wait_for_selector(f'h1:has-text("{title}")', timeout=min(timeout_ms, 30_000))
        except Exception:  # a click that lands while a rerun starts can be lost: click once more
            link.click()
            page.wait_for_selector(f'h1:has-text("{title}")', timeout=timeout_ms)
    except Exception:
        screenshot(page, f"failed-to-open-{title.lower().replace(' ', '-')}")  # for whoever reads the CI log
        raise
    if ready:
        page.get_by_text(ready).first.wait_for(state="attached", timeout=timeout_ms)  # may sit in a hidden tab
    else:
        page.wait_for_timeout(1500)  # let the run start before waiting for its end
    settle(page, timeout_ms)


def assert_no_errors(page, *, error_boxes: bool = True) -> None:
    """No exception box; with ``error_boxes``, no ``st.error`` message either (e.g. a missing model)."""
    exceptions = page.locator('[data-testid="stException"]')
    assert exceptions.count() == 0, exceptions.first.inner_text()
    if error_boxes:
        errors = page.locator('[data-testid="stAlertContentError"]')
        assert errors.count() == 0, errors.first.inner_text()


def screenshot(page, name: str) -> Path:
    """A full-page screenshot: the window is made as tall as Streamlit's scrolling main area."""
    height = page.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]');
        return Math.max(main ? main.scrollHeight : 0, document.documentElement.scrollHeight);
    }""")
    tall = min(height, 8000) > VIEWPORT["height"]
    if tall:
        page.set_viewport_size({"width": VIEWPORT["width"], "height": min(height, 8000)})
        page.wait_for_timeout(800)  # charts re-layout to the new window size
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if tall:
        page.set_viewport_size(VIEWPORT)
    assert path.stat().st_size > 10_000
    return path


def plotly_titles(page) -> list[str]:
    return page.locator('[data-testid="stPlotlyChart"] .gtitle').all_text_contents()


@pytest.fixture(scope="module")
def uploaded(page):
    """RG1_UNCI.dcm uploaded through the Scan page's real file input."""
    page.set_input_files('[data-testid="stFileUploader"] input[type=file]', str(dicom_path("RG1_UNCI.dcm")))
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                 .some(t => t.textContent === 'RG1_UNCI.dcm')""")
    settle(page)
    return page


def test_scan_page_shows_the_upload(uploaded):
    page = uploaded
    assert "RG1_UNCI.dcm" in plotly_titles(page)
    assert page.locator('[data-testid="stPlotlyChart"] .main-svg').count() >= 1
    captions = page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
    assert any("1841 x 1955 px" in text for text in captions)
    assert "CompressedSamples" not in page.locator('[data-testid="stMain"]').inner_text()
    assert_no_errors(page)
    screenshot(page, "1-scan")


def test_preprocessing_page(uploaded):
    page = uploaded
    open_page(page, "Preprocessing", "Download the tensor (.npy)")
    assert page.get_by_text("The tensor the model received").count() == 1
    assert page.locator('[data-testid="stImage"] img').count() >= 8
    assert_no_errors(page)
    screenshot(page, "2-preprocessing")


def show_anyway_if_asked(page) -> bool:
    """The adult radiograph is outside the paediatric chest model's range: the page says so first."""
    button = page.get_by_role("button", name="Show the prediction and maps anyway")
    if not button.count():
        return False
    assert page.locator('[data-testid="stAlertContentError"]').first.inner_text().startswith("This image looks unlike")
    assert page.get_by_text("Predicted:").count() == 0  # the prediction stays behind the click
    button.click()
    page.get_by_text("Predicted:").first.wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    settle(page, EXPLAIN_SECONDS * 1000)
    return True


def segmented(page, text: str):
    """An option of an ``st.segmented_control``: a button with the ARIA role ``radio``."""
    return page.get_by_role("radio", name=text).first


def pick_sample(page, label: str, title: str) -> None:
    """On the Scan page, pick the first sample whose label holds ``label``, and wait until the scan on screen is
    titled as ``title`` (a regular expression) before the page is left."""
    open_page(page, "Scan")
    field = page.locator('[data-testid="stSelectbox"]', has_text="Pick a sample").locator('input[role="combobox"]')
    field.click()
    field.fill(label)
    page.locator('[role="option"]', has_text=label).first.click()
    page.wait_for_function("""(title) => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                              .some(t => new RegExp(title).test(t.textContent))""", arg=title)
    settle(page)


def wait_for_overlay(page, prefix: str = "Grad-CAM for") -> None:
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('[data-testid="stPlotlyChart"] .gtitle')]
                 .some(t => t.textContent.startsWith('{prefix}'))""", timeout=EXPLAIN_SECONDS * 1000)
    settle(page, EXPLAIN_SECONDS * 1000)


def test_explain_page_overlays_the_map(uploaded):
    page = uploaded
    open_page(page, "Explain", None, EXPLAIN_SECONDS * 1000)
    # Either the controls, or first the out-of-range sentence with its "show anyway" button.
    anyway = page.get_by_role("button", name="Show the prediction and maps anyway")
    page.get_by_text("Explain class").first.or_(anyway).first.wait_for(state="attached",
                                                                        timeout=EXPLAIN_SECONDS * 1000)
    settle(page, EXPLAIN_SECONDS * 1000)
    show_anyway_if_asked(page)
    wait_for_overlay(page)
    assert page.get_by_text("Predicted:").count() == 1
    # The overlay is drawn inside the plot, over the scan's own pixel axes, with a colour bar: the scan and the
    # map as two images the browser blends, lying exactly on top of each other.
    overlay = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Grad-CAM for")
    assert overlay.locator("image").count() == 2
    assert overlay.locator(".colorbar").count() == 1 and "1 high" in overlay.inner_text()
    box = overlay.locator("image").first.bounding_box()
    assert overlay.locator("image").nth(1).bounding_box() == box
    plain = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Scan").locator("image").bounding_box()
    assert box and box["width"] > 100 and plain
    assert abs(box["height"] / box["width"] - 1955 / 1841) < 0.03  # the scan's aspect ratio
    assert abs(plain["width"] - box["width"]) < 2  # the plain scan and the overlay are drawn the same size
    assert_no_errors(page)
    screenshot(page, "3-explain")

    # The overlay PNG is encoded only when the button is clicked: the scan's full size, and a legend strip.
    with page.expect_download(timeout=EXPLAIN_SECONDS * 1000) as download:
        page.get_by_role("button", name="Download overlay (PNG, scan resolution, with legend)").click()
    assert download.value.suggested_filename.startswith("RG1_UNCI_gradcam_")
    from PIL import Image

    with Image.open(download.value.path()) as png:
        assert png.format == "PNG" and png.width == 1841 and png.height > 1955 and png.mode == "RGB"

    segmented(page, "All methods side by side").click()
    page.get_by_text("All maps ready.").wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    settle(page, EXPLAIN_SECONDS * 1000)
    assert page.locator('[data-testid="stImage"] img').count() >= 5  # five maps (and their shared colour bar)
    assert_no_errors(page, error_boxes=False)
    screenshot(page, "3-explain-all-methods")
    segmented(page, "One method").click()
    wait_for_overlay(page)


def test_an_outlined_brain_slice_shows_its_outline_and_scores(page):
    """A curated brain slice with its radiologists' outline: the outline over the map, and the scores."""
    pick_sample(page, "figshare", r"^(glioma|meningioma|pituitary)_[0-9]+[.]jpg$")
    open_page(page, "Explain", "Expert outline", EXPLAIN_SECONDS * 1000)
    wait_for_overlay(page)
    # the scores come after the overlay in the same run: on a busy machine they may lag behind the settle
    page.get_by_text("Does the map point at the finding?").wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    assert page.get_by_text("Does the map point at the finding?").count() == 1
    table = page.locator('[data-testid="stDataFrame"]').first
    table.wait_for(state="visible")
    # below the scores, the slice without its tumour and with a control region filled, P(class) under each
    page.get_by_text("Does the prediction need the finding?").wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    for label in ("as scanned: P(", "outline filled in: P(", "the same shape filled elsewhere: P("):
        page.get_by_text(label).first.wait_for(state="visible")
    assert page.get_by_text("Without the finding, P(").count() == 1
    assert_no_errors(page)
    screenshot(page, "3-explain-outline")

    def outline_pixels(page, layers: int) -> int:
        """Outline-green pixels in a screenshot of the overlay's image (the plot's colour bar left out: Turbo has
        greens too). The browser shrinks the 1-pixel line and blends it with its neighbours, so "green" is an excess
        of green over red and blue of more than 50; Turbo blended at the page's 0.6 opacity over any grey reaches
        39 at most."""
        import io

        import numpy as np
        from PIL import Image

        from playwright.sync_api import expect

        overlay = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Grad-CAM for").locator("image")
        # the scan, the map and (when shown) the outline; a redrawn chart briefly holds its old images too
        expect(overlay).to_have_count(layers, timeout=60_000)
        shot = np.asarray(Image.open(io.BytesIO(overlay.first.screenshot())).convert("RGB")).astype(int)
        red, green, blue = shot[..., 0], shot[..., 1], shot[..., 2]
        return int(((green > 100) & (green - np.maximum(red, blue) > 50)).sum())

    # The outline is really drawn: green pixels (ui.maps draws it in (0, 255, 0)) in the overlay's image as
    # the browser shows it, and none once the toggle is off.
    drawn = outline_pixels(page, 3)
    assert drawn > 30, drawn  # the sample's outline, shrunk from 512 to about 265 pixels on screen, gives about 50
    page.locator('[data-testid="stCheckbox"]', has_text="Expert outline").locator("label").click()
    settle(page, EXPLAIN_SECONDS * 1000)
    page.wait_for_function("""() => !document.body.innerText.includes('Green: the expert outline.')""")
    assert outline_pixels(page, 2) == 0
    page.locator('[data-testid="stCheckbox"]', has_text="Expert outline").locator("label").click()
    settle(page, EXPLAIN_SECONDS * 1000)
    page.get_by_text("Green: the expert outline.").first.wait_for(state="attached")

    # Side by side: every method's localisation in one table, with the baselines.
    page.get_by_role("radio", name="All methods side by side").click()  # a segmented control's option
    page.get_by_text("All maps ready.").wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    page.get_by_text("Which method finds the finding?").wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    settle(page, EXPLAIN_SECONDS * 1000)
    # the header, the five methods and the three baselines (the one-method view's table has 1 + 4 rows)
    nine_rows = page.locator('[role="grid"][aria-rowcount="9"]')  # the grid's (hidden) accessible table
    page.locator('[data-testid="stDataFrame"]').filter(has=nine_rows).wait_for(state="visible")
    assert page.locator('[data-testid="stImage"] img').count() >= 5  # one overlay per method (and a colour scale)
    assert page.get_by_text("A method that scores like the centre prior").count() == 1
    assert_no_errors(page, error_boxes=False)
    screenshot(page, "3-explain-outline-all-methods")
    page.get_by_role("radio", name="One method").click()
    wait_for_overlay(page)


@pytest.mark.parametrize("title, name", [("Training history", "4-training-history"), ("About", "5-about")])
def test_other_pages_open_without_errors(uploaded, title, name):
    open_page(uploaded, title)
    assert_no_errors(uploaded)
    screenshot(uploaded, name)


def test_a_fracture_sample_goes_to_the_fracture_model_with_its_outline(page):
    """A curated fracture radiograph: the page picks the fracture model by itself, draws the outline over the
    map on the non-square film, and scores it; the map explains the outlined class, and when the model predicts
    otherwise (the shipped model calls this leg film not fractured) the page says so."""
    pick_sample(page, "leg, fractured, with the fracture outline", r"^fractured_IMG0003797")
    open_page(page, "Explain", "Expert outline", EXPLAIN_SECONDS * 1000)
    wait_for_overlay(page)
    # the sample carries its model: the picker shows the fracture model's short title
    assert "Radiograph — fracture" in page.locator('[data-testid="stMain"]').inner_text()
    page.get_by_text("Does the map point at the finding?").wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    overlay = page.locator('[data-testid="stPlotlyChart"]').filter(has_text="Grad-CAM for").locator("image")
    box = overlay.first.bounding_box()
    assert all(overlay.nth(i).bounding_box() == box for i in range(overlay.count()))  # the layers lie on the film
    assert box and abs(box["height"] / box["width"] - 454 / 373) < 0.03  # the films' own aspect ratio (373 x 454)
    main = page.locator('[data-testid="stMain"]').inner_text()
    assert "Grad-CAM for fractured" in main
    assert ("although the model predicts not_fractured" in main) == ("Predicted: not_fractured" in main)
    assert_no_errors(page, error_boxes=False)
    screenshot(page, "3-explain-fracture")


def test_a_fracture_film_without_an_outline_warns_where_the_maps_point(page):
    """An intact fracture sample, no outline to score its map: under the overlay, in an alert box, the fracture
    model's measured record (its Grad-CAM lands on the experts' outlines no more often than a centre blob)."""
    pick_sample(page, "not fractured", r"^not_fractured_IMG0000013")
    open_page(page, "Explain", None, EXPLAIN_SECONDS * 1000)
    anyway = page.get_by_role("button", name="Show the prediction and maps anyway")
    page.get_by_text("Explain class").first.or_(anyway).first.wait_for(state="attached",
                                                                        timeout=EXPLAIN_SECONDS * 1000)
    show_anyway_if_asked(page)
    wait_for_overlay(page)
    note = page.locator('[data-testid="stAlert"]').filter(has_text="Where this model's maps point, measured")
    note.wait_for(state="attached", timeout=EXPLAIN_SECONDS * 1000)
    assert "over 62 outlined images it never trained on" in note.inner_text()
    assert "No better than the blob" in note.inner_text()
    assert_no_errors(page, error_boxes=False)
    screenshot(page, "3-explain-fracture-record")


def test_the_scan_page_answers_at_its_name_too(page, server):
    """The Scan page is the default one, served at ``/``; typed by its name, ``/scan``, it opened Streamlit's "Page
    not found" dialog. Now the address leads to the page, at ``/``, with no dialog, and the sidebar still lists it
    once."""
    with tab_at(page, server.rstrip("/") + "/scan", "Scan") as tab:
        assert tab.url.rstrip("/") == server.rstrip("/")
        assert tab.get_by_text("Page not found").count() == 0
        links = tab.locator('[data-testid="stSidebarNavLink"]').all_inner_texts()
        assert [text.split("\n")[-1].strip() for text in links].count("Scan") == 1, links  # after the icon's name
        assert_no_errors(tab, error_boxes=False)


@contextlib.contextmanager
def tab_at(page, address: str, title: str):
    """A new tab of the module's browser opened at ``address``, once the page titled ``title`` has finished its
    run; closed afterwards."""
    tab = page.context.browser.new_page(viewport=VIEWPORT)
    try:
        tab.set_default_timeout(60_000)
        tab.goto(address)
        tab.wait_for_selector(f'h1:has-text("{title}")')
        settle(tab)
        yield tab
    finally:
        tab.close()


def test_a_first_visit_by_address_runs_through_app(page, tmp_path):
    """A fresh server whose first visitor opens ``/history`` by its address: the page comes through app.py
    (its navigation with the pages' titles, its window title and its sidebar note), not alone as a file of the
    ``pages/`` folder, which Streamlit serves that way until some session has run ``st.navigation``
    (``ui.runtime.through_app``). A server of its own: the module's server has long had its first visit. The
    module's browser opens it (one Playwright per process)."""
    env = {k: v for k, v in os.environ.items() if k != "MEDXAI_MODELS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["MEDXAI_WARM_UP"] = "0"  # nothing to warm up for this check
    with dashboard(env, tmp_path / "server.log") as url:
        with tab_at(page, url.rstrip("/") + "/history", "Training history") as tab:
            nav = tab.locator('[data-testid="stSidebarNav"]').inner_text()
            assert "Training history" in nav and "Preprocessing" in nav, nav
            assert "app" not in nav.split(), nav  # not the folder's file names
            assert tab.title() == "XAI imaging dashboard"
            assert "not a diagnostic device" in tab.locator('[data-testid="stSidebar"]').inner_text()
            assert_no_errors(tab, error_boxes=False)
