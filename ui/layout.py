"""The frame every page shares: the disclaimer, and a title with the chosen scan."""

from __future__ import annotations

import streamlit as st

from core.io import Scan
from ui.scans import Chosen, current_scan

DISCLAIMER = ("Research and teaching tool. **Not a diagnostic device**: do not use it to make or change "
              "clinical decisions.")


def disclaimer() -> None:
    st.caption(f":warning: {DISCLAIMER}")


def page_with_scan(title: str) -> tuple[Chosen, Scan]:
    """Title, disclaimer and the chosen scan; stops the page (after one clear sentence) without one."""
    st.title(title)
    disclaimer()
    chosen, scan = current_scan()
    if scan is None:
        st.stop()
    return chosen, scan
