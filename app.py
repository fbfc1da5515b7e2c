"""Explainable medical imaging dashboard: entry point. Run with ``streamlit run app.py``."""

import streamlit as st

st.set_page_config(page_title="XAI imaging dashboard", page_icon=":material/radiology:", layout="wide")

pages = [
    st.Page("pages/scan.py", title="Scan", icon=":material/image:", default=True),
    st.Page("pages/preprocessing.py", title="Preprocessing", icon=":material/tune:"),
    st.Page("pages/explain.py", title="Explain", icon=":material/visibility:"),
    st.Page("pages/history.py", title="Training history", icon=":material/monitoring:"),
    st.Page("pages/about.py", title="About", icon=":material/info:"),
]
page = st.navigation(pages)
st.sidebar.caption("Research and teaching tool — **not a diagnostic device**. "
                   "Uploaded files stay in memory for your session only.")
page.run()
