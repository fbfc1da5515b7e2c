"""The teaching pages in a real browser: ``streamlit run app.py`` driven by Debian Chromium with Playwright.

- the Lesson: forward through every step of one case and back;
- the Quiz on one's own: a real mouse click on the image component (an iframe), converted to the scan's
  own pixel, a diagnosis, the reveal; three cases to the end and "Download my results (CSV)": the answers
  and clicks, no nickname, image path or file name;
- a class: the teacher in one browser context opens it, two students in two other contexts join with
  the code and click; both submit before the test waits for either reveal (two sessions score and write
  to the class's SQLite file at once), and the teacher's page shows both answers without a reload (it
  polls the class every two seconds); a duplicate nickname is one sentence.

The server uses the committed default models, a class database in a temporary folder and, for the
shortcut lesson, a stand-in copy of the chest model until the teaching model is installed. Full-page
screenshots go to ``test-artifacts/`` (git-ignored). Without ``/usr/bin/chromium`` or the default models
the tests skip locally and fail when ``CI`` is set (the pattern of ``tests/test_browser.py``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from core.teaching import spoken_label
from page_support import DEFAULT_MODELS, real_models_present
from test_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    VIEWPORT,
    assert_no_errors,
    dashboard,
    unavailable,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: The first visit loads TensorFlow and both models and asks them about every curated case, on a shared CPU.
FIRST_SECONDS = 300
COMPONENT = 'iframe[title="streamlit_image_coordinates.streamlit_image_coordinates"]'


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``streamlit run app.py`` on a free port, the default models, a fresh class folder; always stopped."""
    if not CHROMIUM.is_file():
        unavailable(f"{CHROMIUM} not found: install Debian's chromium (bash scripts/setup.sh --browser)")
    if not real_models_present():
        unavailable(f"the default models are missing from {DEFAULT_MODELS} (model.json and model.keras per task)")
    ARTIFACTS.mkdir(exist_ok=True)
    folder = tmp_path_factory.mktemp("teaching_server")
    shortcut = REPO / "assets" / "teaching" / "chest_xray_shortcut"
    if not (shortcut / "model.json").is_file():  # a stand-in until the teaching model is installed
        shortcut = folder / "chest_xray_shortcut"
        shutil.copytree(DEFAULT_MODELS / "chest_xray", shortcut)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDXAI_")}
    env |= {"TF_CPP_MIN_LOG_LEVEL": "2", "MEDXAI_WARM_UP": "1", "MEDXAI_CLASS_DIR": str(folder / "classes"),
            "MEDXAI_SHORTCUT_MODEL": str(shortcut), "MEDXAI_SETTINGS": str(folder / "no-settings.toml")}
    with dashboard(env, ARTIFACTS / "streamlit-teaching-server.log") as url:
        yield {"url": url, "classes": folder / "classes"}


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_tab(browser, server):
    """A page in its own browser context: its own cookies, so its own Streamlit session."""
    context = browser.new_context(viewport=VIEWPORT)
    tab = context.new_page()
    tab.set_default_timeout(FIRST_SECONDS * 1000)
    tab.goto(server["url"])
    # app.py's own navigation (titles, not the pages/ folder's file names Streamlit lists until its first run ends)
    tab.locator('[data-testid="stSidebarNavLink"]', has_text="Training history").wait_for()
    return tab


def settle(page, timeout_ms: int = FIRST_SECONDS * 1000) -> None:
    """Wait until the script run is over: not running nor about to rerun, no spinner, no element left stale."""
    page.wait_for_timeout(600)
    page.wait_for_function(
        """() => !['running', 'rerunRequested'].includes(
                     document.querySelector('[data-testid="stApp"]')?.getAttribute('data-test-script-state'))
                 && !document.querySelector('[data-testid="stSpinner"]')
                 && !document.querySelector('[data-stale="true"]')""", timeout=timeout_ms)


def open_page(page, title: str, heading: str) -> None:
    page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
    page.wait_for_selector(f'h1:has-text("{heading}")', timeout=FIRST_SECONDS * 1000)
    settle(page)


def screenshot(page, name: str) -> Path:
    """A full-page screenshot once every picture and every lazily loaded element (a table, a download button,
    a component: a grey ``stSkeleton`` until its code arrives) is drawn."""
    page.wait_for_function("""() => [...document.images].every(i => i.complete && i.naturalWidth > 0)
                                   && !document.querySelector('[data-testid="stSkeleton"]')""", timeout=60_000)
    height = page.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]');
        return Math.max(main ? main.scrollHeight : 0, document.documentElement.scrollHeight);
    }""")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), 8000)})
    page.wait_for_timeout(800)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(VIEWPORT)
    assert path.stat().st_size > 10_000
    return path


def click_image(page, fraction_x: float, fraction_y: float) -> tuple[float, float, float, float]:
    """A real mouse click on the image component at a fraction of its shown size; (x, y, width, height)."""
    image = page.frame_locator(COMPONENT).locator("#image")
    image.wait_for(state="visible")
    box = image.bounding_box()
    x, y = round(box["width"] * fraction_x), round(box["height"] * fraction_y)
    image.click(position={"x": x, "y": y})
    settle(page)
    return x, y, box["width"], box["height"]


def mark_caption(page) -> tuple[int, int, int, int]:
    """(row, col, rows, cols) from the "Your mark: row R, column C of the ROWS x COLS image." caption."""
    text = page.get_by_text("Your mark: row").first.inner_text()
    row, col, rows, cols = (int(v) for v in re.search(r"row (\d+), column (\d+) of the (\d+) x (\d+)", text).groups())
    return row, col, rows, cols


def pick_diagnosis(page, index: int = 0) -> None:
    page.locator('[data-testid="stRadio"] [role="radiogroup"] label').nth(index).click()
    settle(page)


def segmented(page, text: str):
    """An option of an ``st.segmented_control``: in Streamlit 1.67 a ``button`` with ``role="radio"`` and
    ``data-variant="segmented_control"`` (no ``kind`` attribute, and not a button to ``get_by_role``)."""
    return page.locator("button[data-variant='segmented_control']", has_text=text).first


def wait_for_reveal(page) -> None:
    """The reveal is drawn to its end: its two pictures and its "next" button (the last thing it draws)."""
    page.get_by_text("the reveal").first.wait_for()
    page.get_by_role("button", name=re.compile(r"^(Next case|See my results) ▶$")).wait_for()
    page.locator('[data-testid="stImage"] img').nth(1).wait_for()
    settle(page)


def submit(page) -> None:
    page.get_by_role("button", name="Submit my read").click()
    wait_for_reveal(page)


def test_lesson_forward_through_every_step_and_back(browser, server):
    page = new_tab(browser, server)
    open_page(page, "Lesson", "Lesson")
    page.get_by_text("Step 1 of 6").wait_for()
    titles = ["The scan", "What the model receives", "The prediction", "Where the model looked",
              "How far to trust the map", "What to take away"]
    for number, title in enumerate(titles, start=1):
        page.get_by_text(f"Step {number} of 6: {title}").wait_for()
        settle(page)
        assert page.locator("h3", has_text=title).count() == 1
        assert_no_errors(page)
        screenshot(page, f"teaching-lesson-{number}")
        if number < len(titles):
            page.get_by_role("button", name="Next ▶").first.click()
    page.get_by_role("button", name="◀ Back").first.click()
    page.get_by_text("Step 5 of 6: How far to trust the map").wait_for()
    settle(page)
    assert_no_errors(page)

    segmented(page, "The shortcut lesson").click()
    page.get_by_text("Step 1 of 5: Two chest models").wait_for()
    settle(page)
    for number in range(1, 6):
        assert_no_errors(page)
        screenshot(page, f"teaching-shortcut-{number}")
        if number < 5:
            page.get_by_role("button", name="Next ▶").first.click()
            page.get_by_text(f"Step {number + 1} of 5").wait_for()
            settle(page)

    # the skull lesson: at its fourth step the outlined slices read again with their tumour filled in, at its fifth
    # every brain run placed by accuracy and Grad-CAM on the tumour
    segmented(page, "The skull lesson").click()
    page.get_by_text("Step 1 of 6: A brain model that never sees the brain").wait_for()
    settle(page)
    for number in range(1, 7):
        assert_no_errors(page)
        if number == 4:
            page.get_by_text("with the outlined tumour filled in").first.wait_for()
            assert page.get_by_text("with the tumour gone").count() == 1
        if number == 5:
            page.get_by_text("Every brain model: accuracy against Grad-CAM on the tumour").first.wait_for()
        screenshot(page, f"teaching-skull-{number}")
        if number < 6:
            page.get_by_role("button", name="Next ▶").first.click()
            page.get_by_text(f"Step {number + 1} of 6").wait_for()
            settle(page)

    # the metal lesson: an intact film, the same with a plate and a cast drawn, their maps, the validation count
    segmented(page, "The metal lesson").click()
    page.get_by_text("Step 1 of 5: An intact limb film").wait_for()
    settle(page)
    for number in range(1, 6):
        assert_no_errors(page)
        if number in (2, 3):
            for drawn in ("as scanned", "with a plate drawn", "with a cast drawn"):
                page.get_by_text(f"{drawn}: P(fractured)").first.wait_for()
        if number == 4:
            page.get_by_text("Intact films with a cast drawn").first.wait_for(state="attached")
            page.get_by_text("The control row is the point").wait_for()
        screenshot(page, f"teaching-metal-{number}")
        if number < 5:
            page.get_by_role("button", name="Next ▶").first.click()
            page.get_by_text(f"Step {number + 1} of 5").wait_for()
            settle(page)
    page.context.close()


def test_quiz_a_real_click_lands_on_the_scans_pixel(browser, server):
    page = new_tab(browser, server)
    open_page(page, "Quiz", "Quiz: reader versus model")
    screenshot(page, "teaching-quiz-0-setup")
    page.get_by_role("button", name="Start the quiz").click()
    page.get_by_text("Case 1 of 8").first.wait_for()
    settle(page)
    x, y, width, height = click_image(page, 0.4, 0.3)
    row, col, rows, cols = mark_caption(page)
    # the component reports the click in displayed pixels; the page stores the scan's own (row, col)
    assert abs(row - math.floor(y * rows / height)) <= 1 and abs(col - math.floor(x * cols / width)) <= 1
    assert abs(width / height - cols / rows) < 0.02  # shown at the scan's aspect ratio
    pick_diagnosis(page, 1)
    screenshot(page, "teaching-quiz-1-ask")
    submit(page)
    assert page.get_by_text("the truth is").count() >= 1
    assert page.locator("img").count() >= 2  # the student's read and the model's map
    assert_no_errors(page)
    screenshot(page, "teaching-quiz-2-reveal")
    page.context.close()


def test_quiz_results_download_as_csv_with_the_answers_and_no_identifier(browser, server):
    """Three cases on one's own, then "Download my results (CSV)": one row per case with the student's diagnosis
    and click; no nickname, and no image's path or file name (curated file names carry dataset patient numbers)."""
    from playwright.sync_api import expect

    from core.quiz import CSV_COLUMNS

    page = new_tab(browser, server)
    open_page(page, "Quiz", "Quiz: reader versus model")
    slider = page.get_by_role("slider", name="Number of cases")  # react-aria's hidden range input
    slider.focus()
    slider.press("Home")  # the keyboard's way to the slider's minimum: 3 cases
    expect(slider).to_have_value("3")
    settle(page)
    expect(page.locator('[data-testid="stSliderThumbValue"]').first).to_have_text("3")
    page.get_by_role("button", name="Start the quiz").click()
    given = []
    for number in (1, 2, 3):
        page.get_by_text(f"Case {number} of 3").first.wait_for()
        settle(page)
        click_image(page, 0.3 + 0.1 * number, 0.5)
        row, col, _, _ = mark_caption(page)
        label = page.locator('[data-testid="stRadio"] [role="radiogroup"] label').nth(number % 2).inner_text()
        pick_diagnosis(page, number % 2)
        submit(page)
        given.append((label.strip(), str(row), str(col)))
        page.get_by_role("button", name="See my results ▶" if number == 3 else "Next case ▶").click()
    page.get_by_text("Your results").first.wait_for()
    page.get_by_role("button", name="Download my results (CSV)").wait_for()
    page.locator('[data-testid="stDataFrame"]').wait_for()
    settle(page)
    assert_no_errors(page)
    screenshot(page, "teaching-quiz-3-results")
    with page.expect_download() as event:
        page.get_by_role("button", name="Download my results (CSV)").click()
    assert event.value.suggested_filename == "quiz_results.csv"
    text = Path(event.value.path()).read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == CSV_COLUMNS
    answers = [dict(zip(CSV_COLUMNS, r)) for r in rows[1:]]
    assert [(spoken_label(a["diagnosis"]), a["click_row"], a["click_col"]) for a in answers] == given
    pool = json.loads((REPO / "assets" / "teaching" / "quiz.json").read_text())["cases"]
    assert {a["case_id"] for a in answers} <= {c["id"] for c in pool} and len({a["case_id"] for a in answers}) == 3
    for a in answers:
        assert a["nickname"] == "" and a["true_label"] and a["model_label"] and a["diagnosis_correct"] in ("yes", "no")
    names = {part for c in pool for part in (c["sample"], Path(c["sample"]).name, Path(c["sample"]).stem)}
    leaks = sorted(n for n in names if n in text)
    assert not leaks and "/" not in text and "assets" not in text, leaks
    page.context.close()


def join_class(page, code: str, nickname: str):
    """On the Quiz page, "In a class": type the class code and a nickname, press "Join the class"."""
    open_page(page, "Quiz", "Quiz: reader versus model")
    segmented(page, "In a class").click()
    settle(page)
    fields = page.locator('[data-testid="stTextInput"] input')
    fields.nth(0).fill(code)
    fields.nth(0).press("Tab")
    fields.nth(1).fill(nickname)
    fields.nth(1).press("Tab")
    settle(page)
    page.get_by_role("button", name="Join the class").click()
    return page


def test_a_teacher_and_two_students_in_separate_browsers(browser, server):
    teacher = new_tab(browser, server)
    open_page(teacher, "Classroom", "Classroom")
    screenshot(teacher, "teaching-classroom-0-open")
    teacher.get_by_role("button", name="Open the class").click()
    teacher.get_by_text("The class code: students type it on the Quiz page.").wait_for()
    settle(teacher)
    code = teacher.wait_for_function(  # the code's own block may come a moment after the sentence above it
        """() => [...document.querySelectorAll('[data-testid="stMarkdownContainer"] div')]
                 .map(d => d.textContent.trim()).find(t => /^[A-HJ-NP-Z2-9]{6}$/.test(t)) || null""",
        timeout=FIRST_SECONDS * 1000).json_value()
    assert code and len(code) == 6
    students = []
    for name, where, pick in (("Ada", (0.35, 0.3), 0), ("Ben", (0.6, 0.45), 1)):
        student = join_class(new_tab(browser, server), code.lower(), name)  # typed in lower case: the same code
        student.get_by_text(f"You are {name} in class {code}").wait_for()
        settle(student)
        click_image(student, *where)
        pick_diagnosis(student, pick)
        students.append(student)
    # the teacher's page is never touched: its poll of the class version redraws it
    answers = teacher.locator('[data-testid="stMetric"]', has_text="Answers")
    teacher.get_by_text("Joined: Ada, Ben").wait_for(timeout=120_000)
    answers.filter(has_text="0 of").wait_for(timeout=120_000)
    # both students submit on their own tabs before the test waits for either result: two sessions of the
    # server score and write to the class database at the same time
    for student in students:
        student.get_by_role("button", name="Submit my read").click()
    for student in students:
        wait_for_reveal(student)
        assert student.get_by_text("the truth is").count() >= 1
        assert_no_errors(student)
    screenshot(students[0], "teaching-classroom-student-reveal")
    answers.filter(has_text="2 of").wait_for(timeout=120_000)
    teacher.get_by_text("Where the class clicked (2 clicks)").wait_for(timeout=120_000)
    settle(teacher)
    assert teacher.get_by_text("Joined: Ada, Ben").count() == 1
    assert teacher.get_by_text("2 answers:").count() == 1  # the first case: both reads
    assert_no_errors(teacher)
    screenshot(teacher, "teaching-classroom-1-live")
    # a duplicate nickname in a third browser: one sentence
    third = join_class(new_tab(browser, server), code, "ADA")
    error = third.locator('[data-testid="stAlertContentError"]')
    error.wait_for()
    assert "already taken" in error.inner_text()
    for tab in [teacher, third, *students]:
        tab.context.close()
