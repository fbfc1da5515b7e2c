"""What the Streamlit pages share: session-state keys, scans, models, figures, layout, the trust panel.

``core`` never imports this package; pages import both.
"""
