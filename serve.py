"""Start the dashboard with its models warming up while the server starts.

    streamlit run serve.py     # what the README says; ``streamlit run app.py`` works too

``app.py`` is the dashboard. This file wraps it in a ``st.App`` whose start-up hook loads
TensorFlow, both default models and their compiled forward pass and Grad-CAM path in a
background thread, while the server starts and the first browser connects. The first page
that needs a model then finds it loaded (or waits for the load already under way) instead
of starting it. Nothing here reads or keeps user data.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

import streamlit as st


@asynccontextmanager
async def warm_up(_app):
    threading.Thread(target=_warm, name="model-warm-up", daemon=True).start()
    yield


def _warm() -> None:
    from pages.common import warm_models

    warm_models()


app = st.App("app.py", lifespan=warm_up)
