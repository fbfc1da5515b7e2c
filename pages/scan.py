"""Scan: upload a DICOM, PNG or JPEG (or pick a sample) and view it as on a reading station."""

import numpy as np
import streamlit as st

from core.render import display_pixels
from ui.figures import DISPLAY_SIDE, image_figure
from ui.layout import disclaimer
from ui.maps import display_picture
from core.io import ScanError
from core.series import expand_zips, is_zip
from ui.pacs import pacs_browser
from ui.runtime import through_app
from ui.scans import current_scan, frame_index, samples, series_found, shrunk_frame
from ui.state import UPLOAD, Keys, scan_key

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

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

pick, upload = st.columns([1, 1])
with upload:
    uploaded = st.file_uploader(
        "Upload a scan (DICOM with or without extension, PNG, JPEG, TIFF), or the slices of a series (several "
        "files or a zip)", key=Keys.UPLOADER, accept_multiple_files=True,
        help="The files stay in this session's memory: they are not written to disk, logged or sent anywhere.")
    if uploaded:
        files = [(file.name, file.getvalue()) for file in uploaded]
        single = len(files) == 1 and not is_zip(files[0][1])
        new = {"name": files[0][0], "data": files[0][1]} if single else {
            "name": f"{len(files)} files" if len(files) > 1 else files[0][0], "data": b"", "files": files}
        previous = st.session_state.get(Keys.UPLOAD)
        if not previous or (previous.get("data"), previous.get("files")) != (new["data"], new.get("files")):
            if not single:
                try:
                    new["files"] = expand_zips(files)
                except ScanError as err:
                    st.error(f"The upload cannot be used: {err}")
                    new = None
            if new:
                st.session_state[Keys.UPLOAD] = new
                st.session_state[Keys.SOURCE] = UPLOAD
                st.session_state[Keys.FRAME] = None
                st.session_state[Keys.SERIES] = 0
with pick:
    choice = st.selectbox("Pick a sample…", options, index=options.index(st.session_state[Keys.SOURCE]),
                          help="Real DICOM files from pydicom-data; curated cases of every model with their true "
                               "label (and the expert outline where one exists).")
    if choice != st.session_state[Keys.SOURCE]:
        st.session_state[Keys.SOURCE] = choice
        st.session_state[Keys.FRAME] = None
        st.rerun()

with st.expander("From a PACS (DICOMweb)", icon=":material/dns:"):
    pacs_browser()

chosen, scan = current_scan()
if scan is None:
    st.stop()
digest = chosen.digest
found = series_found(chosen)
if found:
    if len(found["labels"]) > 1:
        index = st.selectbox(f"This upload holds {len(found['labels'])} series; the one shown",
                             range(len(found["labels"])), index=int(st.session_state.get(Keys.SERIES, 0)),
                             format_func=lambda i: found["labels"][i], key=scan_key(Keys.SERIES_WIDGET, digest))
        if index != st.session_state.get(Keys.SERIES, 0):
            st.session_state[Keys.SERIES] = index
            st.session_state[Keys.FRAME] = None
            st.rerun()
    for note in found["notes"]:
        st.caption(note)
if st.session_state.get(Keys.WINDOW_FOR) != digest:  # a new scan starts from its own defaults
    st.session_state[Keys.WINDOW_FOR] = digest
    st.session_state[Keys.WINDOW] = scan.window
    st.session_state[Keys.INVERT] = scan.invert
    st.session_state[Keys.PRESET] = "Header default"


def slider_range(pixels: np.ndarray, units: str) -> tuple[float, float, float]:
    """(low, high, step) of the window sliders: the data's own range, whole numbers for integer data (HU)."""
    lo, hi = float(pixels.min()), float(pixels.max())
    integral = units == "HU" or np.allclose(pixels[::7, ::7], np.round(pixels[::7, ::7]))
    if integral:  # whole HU or stored values: integer sliders
        return int(np.floor(lo)), int(np.ceil(max(hi, lo + 1))), 1
    span = max(hi - lo, 1e-6)
    step = float(10 ** np.floor(np.log10(span / 500)))
    return lo, lo + span, step


@st.fragment
def viewer():
    """The picture and its display controls: a change here reruns only this part of the page."""
    frame = frame_index(scan)
    left, right = st.columns([2, 1])
    with right:
        st.subheader("Display")
        if scan.n_frames > 1:
            # Numbered from 1, as in the figure title and on reading stations; stored from 0.
            frame = st.slider("Slice" if chosen.is_series else "Frame", 1, scan.n_frames, frame + 1,
                              key=scan_key(Keys.FRAME_WIDGET, digest),
                              help="The model reads the slice shown." if chosen.is_series else
                                   "Multi-frame file: the model reads the frame shown.") - 1
            st.session_state[Keys.FRAME] = frame
        pixels = scan.frame(frame)
        low, high, step = slider_range(pixels if pixels.ndim == 2 else pixels.mean(axis=-1), scan.units)
        presets = {"Header default": scan.window, "Full range": ((low + high) / 2, max(high - low, step))}
        if scan.units == "HU":
            presets.update(CT_PRESETS)
        names = list(presets) + ["Custom"]
        preset = st.session_state.get(Keys.PRESET, "Header default")
        preset = st.selectbox("Window preset", names, index=names.index(preset) if preset in names else 0,
                              key=scan_key(Keys.PRESET_WIDGET, digest),
                              help="CT presets are in Hounsfield units; other scans offer the header window and the "
                                   "full range of their values.")
        st.session_state[Keys.PRESET] = preset
        if preset != "Custom":
            st.session_state[Keys.WINDOW] = presets[preset]
        centre, width = st.session_state[Keys.WINDOW]
        # The bounds cover the data and every preset, and never follow the value being dragged.
        kind = type(step)
        c_low = kind(min(low, *(np.floor(c) for c, _ in presets.values())))
        c_high = kind(max(high, *(np.ceil(c) for c, _ in presets.values())))
        w_high = kind(max(high - low, *(np.ceil(w) for _, w in presets.values()), 2 * step))
        unit = " [HU]" if scan.units == "HU" else ""
        centre = st.slider(f"Window centre (level){unit}", c_low, c_high, kind(np.clip(centre, c_low, c_high)), step,
                           disabled=preset != "Custom", key=scan_key(Keys.CENTRE_WIDGET, digest, preset))
        width = st.slider(f"Window width{unit}", step, w_high, kind(np.clip(width, step, w_high)), step,
                          disabled=preset != "Custom", key=scan_key(Keys.WIDTH_WIDGET, digest, preset))
        if preset == "Custom":
            st.session_state[Keys.WINDOW] = (centre, width)
        invert = st.checkbox("Invert (white ↔ black)", value=st.session_state[Keys.INVERT],
                             key=scan_key(Keys.INVERT_WIDGET, digest),
                             help="MONOCHROME1 files are inverted by default so bone is white.")
        st.session_state[Keys.INVERT] = invert
    with left:
        centre, width = st.session_state[Keys.WINDOW]
        voi = scan.voi if preset == "Header default" else None  # the header's own transform, as stored
        picture, encoded = display_picture(digest, frame, (centre, width), invert, voi, lambda: display_pixels(
            shrunk_frame(chosen, scan, frame, DISPLAY_SIDE), (centre, width), invert, voi=voi))
        kind = "slice" if chosen.is_series else "frame"
        title = f"{chosen.name} — {kind} {frame + 1} of {scan.n_frames}" if scan.n_frames > 1 else chosen.name
        st.plotly_chart(image_figure(encoded, scan.shape, spacing=scan.spacing, title=title),
                        config={"scrollZoom": True, "displaylogo": False}, key="scan_figure")
        rows, cols = scan.shape
        size = f"{cols} x {rows} px"
        if scan.spacing:
            size += f", {cols * scan.spacing[1]:.0f} x {rows * scan.spacing[0]:.0f} mm"
        shown = "" if picture.shape[:2] == scan.shape else f" (shown at {picture.shape[1]} x {picture.shape[0]})"
        st.caption(f"{size}{shown}; window centre {centre:g}, width {width:g}{' HU' if scan.units else ''}"
                   f"{'; inverted' if invert else ''}. Scroll to zoom, drag to pan, double-click to reset."
                   + ("" if scan.spacing else " No pixel spacing stated, so no scale bar."))


viewer()
with st.container():
    if chosen.true_label:
        st.info(f"True label from the dataset: **{chosen.true_label}**"
                + (" — an expert outline of the finding comes with this case (see Explain)." if chosen.mask else ""))
    if chosen.source:
        st.caption(f"Source: {chosen.source}")
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
