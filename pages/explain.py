"""Explain: the prediction with its threshold, and saliency maps lying over the scan."""

import streamlit as st

from core.predict import out_of_range_sentence, predict_tensors
from core.render import COLORMAPS, display_image, overlay, png_bytes
from core.saliency import CAM_METHODS, DESCRIPTIONS, METHODS, explain
from ui.figures import image_figure, probability_chart
from ui.layout import page_with_scan
from ui.models import model_choice
from ui.scans import display_window, frame_index
from ui.state import Keys
from ui.trust_panel import trust_panel

chosen, scan = page_with_scan("Explain")

top = st.columns([1, 1])
with top[0]:
    loaded = model_choice(chosen, scan)
if loaded is None:
    st.stop()
frame = frame_index(scan)
names = loaded.class_names
tensor = loaded.pipeline.scan_tensor(scan, frame)
prediction = predict_tensors(loaded, tensor)[0]  # probabilities and the outlier check from one forward pass
probs, predicted = prediction.probabilities, prediction.predicted
outside = out_of_range_sentence(prediction, loaded.title)

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
window, invert_display, voi = display_window(chosen, scan)
background = display_image(scan.frame(frame), window, invert_display, voi=voi)

controls = st.columns(4)
target = controls[0].selectbox("Explain class", range(len(names)), index=predicted, format_func=lambda i: names[i],
                               help="Which class score the map explains; the predicted class by default.")
layers = loaded.explainable_layers
layer = controls[1].selectbox("Convolution layer (CAM methods)", layers or ["(none)"],
                              index=layers.index(loaded.last_conv) if layers else 0, disabled=not layers,
                              help="Deeper layers: coarser but more class-specific maps.") if layers else None
methods = [m for m in METHODS if layers or m not in CAM_METHODS]
opacity = controls[2].slider("Opacity", 0.0, 1.0, st.session_state.get(Keys.OPACITY, 0.6), 0.05,
                             key=Keys.OPACITY_WIDGET)
st.session_state[Keys.OPACITY] = opacity
colormap = controls[3].selectbox("Colour map", COLORMAPS, index=COLORMAPS.index(st.session_state.get(Keys.COLORMAP, "Turbo")),
                                 key=Keys.COLORMAP_WIDGET)
st.session_state[Keys.COLORMAP] = colormap

single, grid = st.tabs(["One method", "All methods side by side"])

with single:
    if not layers:
        st.info("This model has no convolution layer, so only SmoothGrad (input gradients) can explain it: the "
                "Grad-CAM family weighs a convolution's feature maps.")
    remembered_method = st.session_state.get(Keys.METHOD, "gradcam")
    method = st.radio("Method", methods, format_func=METHODS.get, horizontal=True,
                      index=methods.index(remembered_method) if remembered_method in methods else 0,
                      key=Keys.METHOD_WIDGET)
    st.session_state[Keys.METHOD] = method
    st.caption(DESCRIPTIONS[method])
    with st.spinner(f"Computing {METHODS[method]}…"):
        result = explain(loaded, tensor, scan.shape, method=method, class_index=target, layer=layer)
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
    columns = st.columns(len(methods))
    small = max(1, max(scan.shape) // 512)
    for i, key in enumerate(methods):
        title = METHODS[key]
        progress.progress(i / len(methods), text=f"Computing {title}…")
        result = explain(loaded, tensor, scan.shape, method=key, class_index=target,
                         layer=layer if key in CAM_METHODS else None)
        picture = overlay(background[::small, ::small], result.on_scan[::small, ::small], opacity=opacity,
                          colormap=colormap)
        columns[i].image(picture, caption=title, width="stretch")
    progress.progress(1.0, text="All maps ready.")
