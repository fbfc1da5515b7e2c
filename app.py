"""Explainable medical imaging dashboard: entry point. Run with ``streamlit run app.py``."""

# pandas before anything draws a figure: plotly checks for it with sys.modules.get("pandas"), which
# hands out a half-imported module while another thread (an overlapping rerun's script thread, or
# the models' warm-up thread) is importing it, and the page then fails with "partially initialized module
# 'pandas' has no attribute 'Series'". An import statement waits for the other import to finish.
import pandas  # noqa: F401
import streamlit as st

from ui.runtime import keep_keras_state

keep_keras_state()  # no Keras reset after every rerun (ui/runtime.py: about 0.45 s each)

st.set_page_config(page_title="XAI imaging dashboard", page_icon=":material/radiology:", layout="wide")

pages = [
    # served at "/"; its own pathname must differ from the hidden /scan page's below, and is never shown
    st.Page("pages/scan.py", title="Scan", icon=":material/image:", default=True, url_path="start"),
    st.Page("pages/preprocessing.py", title="Preprocessing", icon=":material/tune:"),
    st.Page("pages/explain.py", title="Explain", icon=":material/visibility:"),
    st.Page("pages/lesson.py", title="Lesson", icon=":material/school:"),
    st.Page("pages/quiz.py", title="Quiz", icon=":material/quiz:"),
    st.Page("pages/classroom.py", title="Classroom", icon=":material/groups:"),
    st.Page("pages/history.py", title="Training history", icon=":material/monitoring:"),
    st.Page("pages/models.py", title="Models", icon=":material/model_training:"),
    st.Page("pages/about.py", title="About", icon=":material/info:"),
]


def _scan_by_name() -> None:
    """``/scan``: the Scan page is the default one, served at ``/``; its name in the sidebar is an address too."""
    st.switch_page(pages[0])


# Hidden from the sidebar: without it, typing /scan gave Streamlit's "Page not found" dialog.
page = st.navigation([*pages, st.Page(_scan_by_name, title="Scan", url_path="scan", visibility="hidden")])
st.sidebar.caption("Research and teaching tool — **not a diagnostic device**. "
                   "Uploaded files stay in memory for your session only.")
page.run()

# Once per server process, after the first page is drawn (so it is not slowed down): load the
# models and trace their compiled paths in the background, ready for the Explain page. TensorFlow is
# imported there, quietly (core.runtime), not here: the Scan page does not need it.
from ui.models import start_warm_up  # noqa: E402

start_warm_up()
