"""Preprocessing: every step of the model's pipeline, in order, and the exact tensor it received."""

import io

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from ui.layout import page_with_scan
from ui.models import model_choice
from ui.runtime import through_app
from ui.scans import frame_index

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py


def as_picture(values: np.ndarray) -> np.ndarray:
    """Stretch any step's output to [0, 1] for display (the histogram shows the true values)."""
    values = np.asarray(values, np.float32)
    lo, hi = float(values.min()), float(values.max())
    return (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)


def histogram(values: np.ndarray, unit: str) -> go.Figure:
    flat = np.asarray(values, np.float32).ravel()
    if flat.size > 200_000:  # a fixed subsample keeps big radiographs fast and the shape exact enough
        flat = flat[:: flat.size // 200_000 + 1]
    fig = go.Figure(go.Histogram(x=flat, nbinsx=80, marker_color="#4c9be8"))
    fig.update_layout(height=220, margin=dict(l=0, r=0, t=10, b=0), bargap=0.02,
                      xaxis_title=f"value{f' ({unit})' if unit else ''}", yaxis_title="pixels", showlegend=False)
    return fig


chosen, scan = page_with_scan("Preprocessing")
loaded = model_choice(chosen, scan)
if loaded is None:
    st.stop()

frame = frame_index(scan)
trace = loaded.pipeline.scan_trace(scan, frame)
st.markdown(
    f"The **{loaded.info.get('title', loaded.task)}** model prepares **{chosen.name}**"
    f"{f' (frame {frame + 1} of {scan.n_frames})' if scan.n_frames > 1 else ''} in "
    f"{len(trace.steps)} steps. Training used exactly the same code and parameters, saved beside the model. "
    "The model always reads the scan's own header window, whatever display window you chose on the Scan page.")

with st.container(border=True):
    cols = st.columns([1, 2, 2])
    original = scan.frame(frame)
    cols[0].markdown("**0. Input** — the frame in native units")
    cols[0].image(as_picture(original if original.ndim == 2 else original.mean(axis=-1)), clamp=True,
                  width="stretch")
    cols[1].plotly_chart(histogram(original, scan.units), key="hist_input", config={"displayModeBar": False})
    cols[2].markdown(f"Shape {original.shape}, values {float(original.min()):g} to {float(original.max()):g}"
                     f"{' ' + scan.units if scan.units else ''}. "
                     + ("This is what the file stores, after the DICOM modality LUT (Hounsfield units for CT)."
                        if scan.kind == "dicom" else
                        "This is what the file stores: plain grey levels, with no DICOM header to turn them into "
                        "physical units."))

for number, step in enumerate(trace.steps, start=1):
    with st.container(border=True):
        cols = st.columns([1, 2, 2])
        cols[0].markdown(f"**{number}. {step.name}**")
        cols[0].image(as_picture(step.output), clamp=True, width="stretch")
        unit = scan.units if step.name == "grayscale" else ""
        cols[1].plotly_chart(histogram(step.output, unit), key=f"hist_{step.name}",
                             config={"displayModeBar": False})
        cols[2].markdown(step.why)
        cols[2].code(", ".join(f"{k}={v!r}" for k, v in step.params.items()) or "(no parameters)",
                     language="python")
        cols[2].caption(f"output shape {step.output.shape}, range {float(step.output.min()):.4g} "
                        f"to {float(step.output.max()):.4g}")

st.subheader("The tensor the model received")
tensor = trace.tensor
cols = st.columns([1, 2])
cols[0].image(as_picture(trace.model_image), clamp=True, width="stretch",
              caption="Model input, drawn with its own minimum as black and maximum as white")
cols[1].markdown(
    f"- shape **{tensor.shape}** (batch, height, width, channel), dtype **{tensor.dtype}**\n"
    f"- range **{float(tensor.min()):.4f} to {float(tensor.max()):.4f}**, mean {float(tensor.mean()):.4f}, "
    f"standard deviation {float(tensor.std()):.4f}\n"
    f"- the image was squashed from {scan.shape[1]} x {scan.shape[0]} px to "
    f"{loaded.pipeline.input_size} x {loaded.pipeline.input_size}: the training images were squashed the "
    "same way, so the model sees what it learned from.")
buffer = io.BytesIO()
np.save(buffer, tensor)
cols[1].download_button("Download the tensor (.npy)", buffer.getvalue(), file_name="model_input.npy",
                        mime="application/octet-stream")
