"""Scan: upload a DICOM, PNG or JPEG (or pick a sample) and view it as on a reading station."""

import streamlit as st

from core.render import display_image, display_rgb
from ui.figures import image_figure
from ui.layout import disclaimer
from ui.scans import current_scan, frame_index, samples
from ui.state import UPLOAD, Keys

#: CT window presets (centre, width) in Hounsfield units, as on common reading stations.
CT_PRESETS = {
    "Lung": (-600.0, 1500.0),
    "Mediastinum": (50.0, 350.0),
    "Soft tissue": (40.0, 400.0),
    "Bone": (400.0, 1800.0),
    "Brain": (40.0, 80.0),
}

st.title("Scan")
disclaimer()

options = [s.label for s in samples()] + [UPLOAD]
if st.session_state.get(Keys.SOURCE) not in options:
    st.session_state[Keys.SOURCE] = options[0]

left, right = st.columns([2, 1])
with right:
    uploaded = st.file_uploader(
        "Upload a scan (DICOM with or without extension, PNG, JPEG, TIFF)", key=Keys.UPLOADER,
        help="The file stays in this session's memory: it is not written to disk, logged or sent anywhere.")
    if uploaded is not None:
        data = uploaded.getvalue()
        previous = st.session_state.get(Keys.UPLOAD)
        if not previous or previous["data"] != data:
            st.session_state[Keys.UPLOAD] = {"name": uploaded.name, "data": data}
            st.session_state[Keys.SOURCE] = UPLOAD
            st.session_state[Keys.FRAME] = None
    choice = st.selectbox("…or pick a sample", options, index=options.index(st.session_state[Keys.SOURCE]),
                          help="Real DICOM files from pydicom-data; dataset images with their true label.")
    if choice != st.session_state[Keys.SOURCE]:
        st.session_state[Keys.SOURCE] = choice
        st.session_state[Keys.FRAME] = None
        st.rerun()

chosen, scan = current_scan()
if scan is None:
    st.stop()

digest = chosen.digest
frame = frame_index(scan)
header_window = scan.window
if st.session_state.get(Keys.WINDOW_FOR) != digest:  # a new scan starts from its own defaults
    st.session_state[Keys.WINDOW_FOR] = digest
    st.session_state[Keys.WINDOW] = header_window
    st.session_state[Keys.INVERT] = scan.invert
    st.session_state[Keys.PRESET] = "Header default"

with right:
    st.subheader("Display")
    if scan.n_frames > 1:
        # Numbered from 1, as in the figure title and on reading stations; stored from 0.
        frame = st.slider("Frame", 1, scan.n_frames, frame + 1, key=f"{Keys.FRAME_WIDGET}_{digest}",
                          help="Multi-frame file: the model reads the frame shown.") - 1
        st.session_state[Keys.FRAME] = frame
    pixels = scan.frame(frame)
    lo, hi = float(pixels.min()), float(pixels.max())
    presets = {"Header default": header_window, "Full range": ((lo + hi) / 2, max(hi - lo, 1.0))}
    if scan.units == "HU":
        presets.update(CT_PRESETS)
    names = list(presets) + ["Custom"]
    preset = st.session_state.get(Keys.PRESET, "Header default")
    preset = st.selectbox("Window preset", names, index=names.index(preset) if preset in names else 0,
                          key=f"{Keys.PRESET_WIDGET}_{digest}",
                          help="CT presets are in Hounsfield units; other scans offer the header window and the full range.")
    st.session_state[Keys.PRESET] = preset
    if preset != "Custom":
        st.session_state[Keys.WINDOW] = presets[preset]
    centre, width = st.session_state[Keys.WINDOW]
    # Slider bounds must not follow the value being dragged: that would make a new widget each time.
    span = max(hi - lo, 1.0)
    centres = [c for c, _ in presets.values()] + [centre]
    widths = [w for _, w in presets.values()] + [width]
    centre = st.slider(f"Window centre (level){' [HU]' if scan.units else ''}", min(lo - span, *centres),
                       max(hi + span, *centres), float(centre),
                       disabled=preset != "Custom", key=f"{Keys.CENTRE_WIDGET}_{digest}_{preset}")
    width = st.slider("Window width", 1.0, max(2 * span, *widths), float(width), disabled=preset != "Custom",
                      key=f"{Keys.WIDTH_WIDGET}_{digest}_{preset}")
    if preset == "Custom":
        st.session_state[Keys.WINDOW] = (centre, width)
    invert = st.checkbox("Invert (white ↔ black)", value=st.session_state[Keys.INVERT],
                         key=f"{Keys.INVERT_WIDGET}_{digest}",
                         help="MONOCHROME1 files are inverted by default so bone is white.")
    st.session_state[Keys.INVERT] = invert

with left:
    centre, width = st.session_state[Keys.WINDOW]
    voi = scan.voi if preset == "Header default" else None
    if scan.is_color:
        image = display_rgb(pixels, (centre, width), invert)
    else:
        image = display_image(pixels, (centre, width), invert, voi=voi)
    title = f"{chosen.name} — frame {frame + 1} of {scan.n_frames}" if scan.n_frames > 1 else chosen.name
    st.plotly_chart(image_figure(image, spacing=scan.spacing, title=title), config={"scrollZoom": True,
                    "displaylogo": False}, key="scan_figure")
    rows, cols = scan.shape
    size = f"{cols} x {rows} px"
    if scan.spacing:
        size += f", {cols * scan.spacing[1]:.0f} x {rows * scan.spacing[0]:.0f} mm"
    st.caption(f"{size}; window centre {centre:g}, width {width:g}{' HU' if scan.units else ''}"
               f"{'; inverted' if invert else ''}. Scroll to zoom, drag to pan, double-click to reset."
               + ("" if scan.spacing else " No pixel spacing stated, so no scale bar."))
    if chosen.true_label:
        st.info(f"True label from the dataset: **{chosen.true_label}**")
    for note in scan.warnings:
        st.warning(note)

st.subheader("Header (de-identified)")
st.dataframe({"Attribute": list(scan.header), "Value": [str(v) for v in scan.header.values()]},
             hide_index=True, width="stretch", height="content")  # every row, no hidden scroll
if scan.hidden:
    st.caption("Hidden identifying attributes (DICOM PS3.15 Annex E basic profile): " + ", ".join(scan.hidden))
    reveal = st.toggle("Reveal identifiers for this session", value=st.session_state.get(Keys.REVEAL, False),
                       help="Shown on screen only, for this session; never exported or logged.")
    if reveal != st.session_state.get(Keys.REVEAL, False):
        st.session_state[Keys.REVEAL] = reveal
        st.rerun()
    if reveal and scan.identifiers:
        st.warning("Identifiers are visible. Hide them before sharing your screen.")
        st.dataframe({"Attribute": list(scan.identifiers), "Value": list(scan.identifiers.values())},
                     hide_index=True, width="stretch")
st.caption("Burned-in text in the pixels (names, dates) is not removed: never treat an image as anonymous.")
