"""Explain: the prediction with its threshold, and saliency maps lying over the scan."""

import hashlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.explain import CAM_METHODS, DESCRIPTIONS, METHODS, display_image, explain, overlay, png_bytes
from core.model import conv_layer_names
from pages.common import Keys, frame_index, image_figure, model_choice, page_with_scan
from pages.trust_panel import trust_panel

COLORMAPS = ["Turbo", "Jet", "Inferno", "Viridis", "Hot"]


def probability_chart(names, probs, predicted: int, threshold: float | None) -> go.Figure:
    colours = ["#e8744c" if i == predicted else "#4c9be8" for i in range(len(names))]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for p in probs], textposition="auto"))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="white",
                      annotation_text=f"threshold {threshold:.2f} for {names[1]}", annotation_position="top")
    fig.update_layout(height=80 + 45 * len(names), margin=dict(l=0, r=10, t=30, b=0),
                      xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"), yaxis=dict(autorange="reversed"))
    return fig


chosen, scan = page_with_scan("Explain")

top = st.columns([1, 1])
with top[0]:
    loaded = model_choice(chosen.model)
if loaded is None:
    st.stop()
frame = frame_index(scan)
names = loaded.class_names
tensor = loaded.pipeline.scan_tensor(scan, frame)
probabilities, outside = loaded.predict_and_check(tensor)  # one forward pass for both
probs, outside = probabilities[0], outside[0]
predicted = loaded.decide(probs)

with top[1]:
    st.plotly_chart(probability_chart(names, probs, predicted, loaded.threshold if len(names) == 2 else None),
                    config={"displayModeBar": False}, key="probabilities")
    st.markdown(f"Predicted: **{names[predicted]}**"
                + (f" — true label **{chosen.true_label}**" if chosen.true_label else ""))
    if loaded.temperature != 1.0:
        st.caption(f"Probabilities calibrated by temperature scaling (T = {loaded.temperature:.2f}) on the "
                   "model's validation split.")
for note in scan.warnings:
    st.warning(note)
if outside:
    st.warning(outside)

# Display window: the one chosen on the Scan page for this scan, else the header's.
digest = hashlib.sha256(chosen.data).hexdigest()[:16]
window = st.session_state.get(Keys.WINDOW) if st.session_state.get("_window_for") == digest else None
invert_display = st.session_state.get(Keys.INVERT, scan.invert) if window else scan.invert
background = display_image(scan.frame(frame), window or scan.window, invert_display)

controls = st.columns(4)
target = controls[0].selectbox("Explain class", range(len(names)), index=predicted, format_func=lambda i: names[i],
                               help="Which class score the map explains; the predicted class by default.")
layers = conv_layer_names(loaded.model)
default_layer = loaded.info.get("last_conv", layers[-1])
layer = controls[1].selectbox("Convolution layer (CAM methods)", layers, index=layers.index(default_layer),
                              help="Deeper layers: coarser but more class-specific maps.")
opacity = controls[2].slider("Opacity", 0.0, 1.0, st.session_state.get(Keys.OPACITY, 0.6), 0.05,
                             key=Keys.OPACITY_WIDGET)
st.session_state[Keys.OPACITY] = opacity
colormap = controls[3].selectbox("Colour map", COLORMAPS, index=COLORMAPS.index(st.session_state.get(Keys.COLORMAP, "Turbo")),
                                 key=Keys.COLORMAP_WIDGET)
st.session_state[Keys.COLORMAP] = colormap

single, grid = st.tabs(["One method", "All methods side by side"])

with single:
    method = st.radio("Method", list(METHODS), format_func=METHODS.get, horizontal=True,
                      index=list(METHODS).index(st.session_state.get(Keys.METHOD, "gradcam")),
                      key=Keys.METHOD_WIDGET)
    st.session_state[Keys.METHOD] = method
    st.caption(DESCRIPTIONS[method])
    with st.spinner(f"Computing {METHODS[method]}…"):
        result = explain(loaded, scan, method=method, class_index=target, layer=layer, frame=frame)
    figure = overlay(background, result.on_scan, opacity=opacity, colormap=colormap)
    left, right = st.columns(2)
    # Half-page columns are about 500 px wide: a landscape scan needs less height than a portrait one.
    aspect = scan.shape[0] * (scan.spacing[0] / scan.spacing[1] if scan.spacing else 1.0) / scan.shape[1]
    height = int(min(560, max(300, 520 * aspect)))
    left.plotly_chart(image_figure(background, spacing=scan.spacing, title="Scan", height=height), key="plain",
                      config={"scrollZoom": True, "displaylogo": False})
    right.plotly_chart(image_figure(figure, spacing=scan.spacing, height=height,
                                    title=f"{METHODS[method]} for {names[target]}"
                                          + (f", layer {result.layer}" if result.layer else "")),
                       key="overlay", config={"scrollZoom": True, "displaylogo": False})
    st.caption(f"The map ({result.raw.shape[0]} x {result.raw.shape[1]} cells) is upsampled straight to the scan's "
               f"{scan.shape[1]} x {scan.shape[0]} pixels: the model saw the whole scan squashed to a square, so each "
               "cell lies over the region it was computed from. Warm colours: regions that raised the score.")
    stem = (chosen.name.rsplit(".", 1)[0] or "scan") if chosen.name else "scan"
    # Encoded only when clicked (about 0.1 s for a 1955 x 1841 radiograph), not on every rerun.
    st.download_button("Download overlay (PNG, scan resolution)", lambda picture=figure: png_bytes(picture),
                       file_name=f"{stem}_{method}_{names[target]}.png", mime="image/png")
    trust_panel(loaded, tensor, result.raw, method, target, result.layer, names)

with grid:
    st.caption("The same scan, class and layer for every method. Maps agreeing on a region is reassuring; "
               "disagreement is a reason for caution.")
    progress = st.progress(0.0, text="Computing maps…")
    columns = st.columns(len(METHODS))
    small = max(1, max(scan.shape) // 512)
    for i, (key, title) in enumerate(METHODS.items()):
        progress.progress(i / len(METHODS), text=f"Computing {title}…")
        result = explain(loaded, scan, method=key, class_index=target, layer=layer if key in CAM_METHODS else None,
                         frame=frame)
        picture = overlay(background[::small, ::small], result.on_scan[::small, ::small], opacity=opacity,
                          colormap=colormap)
        columns[i].image(picture, caption=title, width="stretch")
    progress.progress(1.0, text="All maps ready.")
