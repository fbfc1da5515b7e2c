"""Explain: the prediction with its threshold, and saliency maps lying over the scan."""

import secrets
from datetime import datetime, timezone

import numpy as np
import streamlit as st

from core import localisation as loc
from core.masks import MaskError, load_mask
from core.predict import out_of_range_sentence, predict_tensors
from core.render import COLORMAPS, colormap_lut, colour_bar, display_image, display_pixels, png_bytes
from core.report import legend_strip, report_pdf, report_png
from core.report_content import content_for, probability_note
from core.dicom_export import results_for_scan, trust_scores
from core.dicom_results import DicomResultError, to_zip
from core.dicomweb import DicomWebError, store
from core.saliency import (CAM_METHODS, DESCRIPTIONS, METHODS, SCORE_LABELS, SCORES, Explanation, method_label,
                           to_geometry)
from ui.figures import DISPLAY_SIDE, figure_height, image_figure, probability_chart, slice_strip
from ui.layout import page_with_scan
from ui.maps import (baseline_scores, digest, display_picture, heat_layer, localisation, outline_layer,
                     overlay_picture, raw_map, remembered)
from ui.models import model_choice, models_that_fit
from ui.pacs import pacs_client
from ui.runtime import through_app
from ui.scans import display_window, frame_index, shrunk_frame, source_bytes
from ui.state import Keys, scan_key
from ui.trust_panel import (map_record_note, measured_record, outline_ablation_panel, outline_scores, scored_results,
                             trust_panel)

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

VIEWS = ("One method", "All methods side by side")

chosen, scan = page_with_scan("Explain")
top = st.columns([1, 1])
with top[0]:
    loaded = model_choice(chosen, scan)
if loaded is None:
    st.stop()
if scan.n_frames > 1:
    with top[0]:
        frame = st.slider("Slice" if chosen.is_series else "Frame", 1, scan.n_frames, frame_index(scan) + 1,
                          key=scan_key(Keys.EXPLAIN_FRAME_WIDGET, chosen.digest),
                          help="The model reads, and the maps explain, the frame shown.") - 1
    st.session_state[Keys.FRAME] = frame
else:
    frame = frame_index(scan)
names = loaded.class_names
# The exact tensor and the model's answer, once per scan, frame and model in this session: a change of class,
# layer or method reruns the page, and a full-resolution pass through the pipeline would cost ~0.1 s each time.
def tensor_and_prediction():
    model_input = loaded.pipeline.scan_tensor(scan, frame)
    return model_input, predict_tensors(loaded, model_input)[0]  # probabilities and the outlier check, one pass


tensor, prediction = remembered(
    "prediction", digest(loaded.path, chosen.digest, st.session_state.get(Keys.SERIES, 0), frame,
                         st.session_state.get(Keys.REVEAL, False)), tensor_and_prediction, size=4)
probs, predicted = prediction.probabilities, prediction.predicted
for note in scan.warnings:
    st.warning(note)

# A scan outside what the model learned from: say so first; the prediction stays behind a click.
shown_anyway = st.session_state.setdefault(Keys.SHOW_ANYWAY, set())
if not prediction.in_range and (chosen.digest, str(loaded.path)) not in shown_anyway:
    st.error(out_of_range_sentence(prediction, loaded.title))
    fitting = models_that_fit(scan, exclude=str(loaded.path))
    st.caption((f"The {', '.join(fitting)} model would fit this scan: pick it above. " if fitting else
                "No installed model was trained on images like this one. ")
               + "You can still look at what this model says, knowing that it answers a question about an image "
                 "it was never meant for.")
    if st.button("Show the prediction and maps anyway"):
        shown_anyway.add((chosen.digest, str(loaded.path)))
        st.rerun()
    st.stop()

with top[1]:
    st.plotly_chart(probability_chart(names, probs, predicted, loaded.threshold if len(names) == 2 else None),
                    config={"displayModeBar": False}, key="probabilities")
    st.markdown(f"Predicted: **{names[predicted]}**"
                + (f" — true label **{chosen.true_label}**" if chosen.true_label else ""))
    note = probability_note(loaded)
    if note:
        st.caption(note)
if not prediction.in_range:
    st.warning(out_of_range_sentence(prediction, loaded.title))
if scan.n_frames > 1:
    kind = "slice" if chosen.is_series else "frame"
    every = remembered("strip", digest(loaded.path, chosen.digest, scan.n_frames), lambda: loaded.predict(
        np.concatenate([loaded.pipeline.scan_tensor(scan, f) for f in range(scan.n_frames)])))
    st.plotly_chart(slice_strip(every, names, frame, loaded.threshold if len(names) == 2 else None, kind),
                    config={"displayModeBar": False}, key="slice_strip")
    st.caption(f"The model reads each {kind} on its own, as the 2-D images it was trained on: the strip shows where "
               f"its answer changes across the {scan.n_frames} {kind}s, not a diagnosis of the whole volume — it "
               f"knows nothing of the {kind}s around the one it reads.")

# The expert outline: a sample's own, or a mask the person uploads beside the scan (kept in memory only).
mask, mask_problem = None, None
if chosen.mask is None:
    with st.expander("Compare with an expert outline (optional)"):
        file = st.file_uploader("Outline of the finding: a black-and-white PNG of exactly the scan's size",
                                type=["png"], key=scan_key(Keys.MASK_UPLOADER, chosen.digest))
        if file is not None:
            st.session_state[Keys.MASK] = {"for": chosen.digest, "name": file.name, "data": file.getvalue()}
    upload = st.session_state.get(Keys.MASK)
    mask_bytes = upload["data"] if upload and upload["for"] == chosen.digest else None
else:
    mask_bytes = chosen.mask
if mask_bytes is not None:
    try:
        mask = load_mask(mask_bytes, scan.shape)
    except MaskError as err:
        st.error(f"The outline cannot be used: {err}")

window, invert_display, voi = display_window(chosen, scan)
layers = loaded.explainable_layers
methods = [m for m in METHODS if layers or m not in CAM_METHODS]
controls = st.columns([1, 1.3, 1, 1.5])
# With an expert outline of a labelled sample, the map to score against it is the outlined finding's class,
# whatever the model answered: a "not fractured" map says nothing about whether the fracture was seen.
outlined = names.index(chosen.true_label) if mask is not None and chosen.true_label in names else None
target = controls[0].selectbox("Explain class", range(len(names)),
                               index=predicted if outlined is None else outlined, format_func=lambda i: names[i],
                               key=scan_key(Keys.TARGET_WIDGET, chosen.digest, loaded.path),
                               help="Which class score the map explains: the predicted class, or the outlined "
                                    "finding's class when the sample comes with an expert outline.")
if outlined is not None and outlined != predicted and target == outlined:
    st.caption(f"The map explains **{names[outlined]}**, the class of the outlined finding, although the model "
               f"predicts {names[predicted]}: it shows what evidence for {names[outlined]} the model saw and where. "
               "Pick the predicted class to see what drove its answer.")
layer = controls[1].selectbox("Convolution layer (CAM methods)", layers, index=layers.index(loaded.last_conv),
                              key=scan_key(Keys.LAYER_WIDGET, loaded.path),
                              help="Deeper layers: coarser but more class-specific maps.") if layers else None
score = controls[2].selectbox(
    "Map explains", SCORES, index=SCORES.index(loaded.map_score), format_func=SCORE_LABELS.get,
    key=scan_key(Keys.SCORE_WIDGET, loaded.path), disabled=loaded.output == "sigmoid",
    help="Which number of the model the gradient maps follow. The class logit counts evidence that raises every "
         "class's score alike (the body, the film's edges); the log-odds against the other classes is what the "
         "class's probability depends on, so that evidence cancels out. Score-CAM weighs by the probability: "
         "the same map either way.")
if score != loaded.map_score:
    loaded = loaded.with_map_score(score)
view = controls[3].segmented_control("View", VIEWS, default=VIEWS[0],
                                     key=Keys.VIEW) or VIEWS[0]
if not layers:
    st.info("This model has no convolution layer, so only SmoothGrad (input gradients) can explain it: the "
            "Grad-CAM family weighs a convolution's feature maps.")

background, background_picture = display_picture(
    chosen.digest, frame, window, invert_display, voi,
    lambda: display_pixels(shrunk_frame(chosen, scan, frame, DISPLAY_SIDE), window, invert_display, voi=voi))
tolerance = loc.pointing_tolerance(scan.shape, spacing=scan.spacing).describe() if mask is not None else ""
distance_unit = loc.peak_distance_unit(scan.spacing)  # of each map's peak-to-outline distance


def full_background():
    return display_image(scan.frame(frame), window, invert_display, voi=voi)


@st.fragment
def one_method():
    """One method's map over the scan: a change of method, opacity, colour map or outline reruns only this."""
    remembered_method = st.session_state.get(Keys.METHOD, "gradcam")
    method = st.radio("Method", methods, format_func=METHODS.get, horizontal=True,
                      index=methods.index(remembered_method) if remembered_method in methods else 0,
                      key=Keys.METHOD_WIDGET)
    st.session_state[Keys.METHOD] = method
    st.caption(DESCRIPTIONS[method])
    settings = st.columns([2, 1, 1])
    opacity = settings[0].slider("Opacity", 0.0, 1.0, st.session_state.get(Keys.OPACITY, 0.6), 0.05,
                                 key=Keys.OPACITY_WIDGET)
    st.session_state[Keys.OPACITY] = opacity
    colormap = settings[1].selectbox("Colour map", COLORMAPS,
                                     index=COLORMAPS.index(st.session_state.get(Keys.COLORMAP, "Turbo")),
                                     key=Keys.COLORMAP_WIDGET)
    st.session_state[Keys.COLORMAP] = colormap
    show_outline = mask is not None and settings[2].toggle("Expert outline", value=st.session_state.get(Keys.OUTLINE, True),
                                                           key=f"{Keys.OUTLINE}_widget",
                                                           help="The radiologists' outline of the finding, in green.")
    if mask is not None:
        st.session_state[Keys.OUTLINE] = show_outline
    use_layer = layer if method in CAM_METHODS else None
    with st.spinner(f"Computing {METHODS[method]}…"):
        raw = raw_map(loaded, tensor, method, target, use_layer)
    # The scan, the map and the outline travel as separate pictures, each encoded once (ui.maps), and the
    # browser blends them: a change of opacity sends a number, a change of colour map one small layer.
    shape = background.shape[:2]
    outlined = ((outline_layer(mask, shape), 1.0),) if show_outline else ()
    height = figure_height(scan.shape, scan.spacing, width=620)
    left, right = st.columns(2)
    left.plotly_chart(image_figure(background_picture, scan.shape, spacing=scan.spacing, title="Scan", height=height,
                                   bar_space=True, layers=outlined),
                      key="plain",
                      config={"scrollZoom": True, "displaylogo": False})
    right.plotly_chart(image_figure(background_picture, scan.shape, spacing=scan.spacing, height=height,
                                    colormap=colormap, layers=((heat_layer(raw, shape, colormap), opacity),) + outlined,
                                    title=f"{method_label(method, loaded.map_score)} for {names[target]}"
                                          + (f", layer {use_layer}" if use_layer else "")),
                       key="overlay", config={"scrollZoom": True, "displaylogo": False})
    st.caption(f"The map ({raw.shape[0]} x {raw.shape[1]} cells) is upsampled straight to the scan's "
               f"{scan.shape[1]} x {scan.shape[0]} pixels: the model saw the whole scan squashed to a square, so each "
               "cell lies over the region it was computed from. Warm colours: regions that raised the score."
               + (" Green: the expert outline." if show_outline else ""))
    if mask is None:
        map_record_note(loaded)
    stem = (chosen.name.rsplit(".", 1)[0] or "scan") if chosen.name else "scan"

    def download() -> bytes:  # encoded only when clicked: the full-resolution overlay with its legend strip
        full = overlay_picture(full_background(), raw, opacity=opacity, colormap=colormap,
                               outline=mask if show_outline else None)
        strip = legend_strip(full, model=loaded.title, class_name=names[target], probability=float(probs[target]),
                             method=method_label(method, loaded.map_score), layer=use_layer,
                             date=datetime.now(timezone.utc),
                             colormap_lut=colormap_lut(colormap))
        return png_bytes(strip)

    buttons = st.columns([2, 1, 1, 2])
    buttons[0].download_button("Download overlay (PNG, scan resolution, with legend)", download,
                               file_name=f"{stem}_{method}_{names[target]}.png", mime="image/png")
    identifiers = bool(scan.identifiers) and buttons[3].checkbox(
        "Put the revealed identifiers in the report", value=False,
        help="Only possible while identifiers are revealed on the Scan page; off by default.")

    def report(kind: str) -> bytes:  # built only when clicked: every method, trust scores, model card summary
        content = content_for(loaded, scan, method=method, frame=frame, class_index=target, layer=layer,
                              window=window, invert=invert_display, colormap=colormap, opacity=opacity,
                              true_label=chosen.true_label, mask=mask, include_identifiers=identifiers,
                              **scored_results(loaded, tensor, raw, target, layer))
        return report_pdf(content) if kind == "pdf" else report_png(content)

    buttons[1].download_button("Report (PDF)", lambda: report("pdf"), file_name=f"{stem}_report.pdf",
                               mime="application/pdf", icon=":material/picture_as_pdf:")
    buttons[2].download_button("Report (PNG)", lambda: report("png"), file_name=f"{stem}_report.png",
                               mime="image/png", icon=":material/image:")
    dicom_results(method, use_layer, raw, colormap, opacity, stem)
    if mask is not None:
        st.markdown("**Does the map point at the finding?** Scores against the expert outline, beside baselines "
                    "that know nothing about the disease:")
        shown_full = full_background() if mask.shape == scan.shape else background
        measured = measured_record(loaded) if method == "gradcam" else {}
        same = (measured.get("layer"), measured.get("map_score")) == (use_layer, loaded.map_score)
        overall = measured if same else None  # the model's rate for this very method, layer and score
        outline_scores(localisation(raw, mask, scan.spacing),
                       baseline_scores(chosen.digest, shown_full, mask, scan.spacing), tolerance,
                       unit=distance_unit, overall=overall)
        outline_ablation_panel(loaded, scan, frame, mask, target, names, chosen.digest)
    trust_panel(loaded, tensor, raw, method, target, use_layer, names)


def dicom_results(method, use_layer, raw, colormap, opacity, stem) -> None:
    """The results as DICOM objects (SR, saliency map, overlay capture): a de-identified zip to download, and,
    for a scan retrieved from a PACS, sent back into its study on request."""
    def objects(salt):
        explanation = Explanation(method, int(target), use_layer, raw, to_geometry(raw, scan.shape))
        trust = trust_scores(loaded, tensor, explanation, uncertainty=False,
                             **scored_results(loaded, tensor, raw, target, layer))
        return results_for_scan(loaded, scan, source_bytes(chosen, frame), method=method, frame=frame,
                                class_index=target, layer=use_layer, trust=trust, tensor=tensor, probabilities=probs,
                                explanation=explanation, colormap=colormap, opacity=opacity, salt=salt).objects

    salt = st.session_state.setdefault(Keys.SALT, secrets.token_hex(16))
    revealed = bool(st.session_state.get(Keys.REVEAL, False))
    if not revealed:  # the patient module goes into a download only while identifiers are revealed
        st.session_state[Keys.WITH_IDENTIFIERS] = False
    cols = st.columns([2, 2, 2])
    keep = cols[1].checkbox(
        "With the patient module (as stored in the PACS)", key=Keys.WITH_IDENTIFIERS, disabled=not revealed,
        help="Only possible while identifiers are revealed on the Scan page; off: the objects are de-identified "
             "(new UIDs, anonymous patient, no dates).") and revealed
    # Built before any download is offered (on request: seconds of work, so not on every change of a setting), and
    # kept for this scan and these settings: a result that cannot be made is a sentence, never a "zip" holding it.
    key = digest(chosen.digest, st.session_state.get(Keys.SERIES, 0), frame, loaded.path, method, int(target),
                 use_layer, colormap, opacity, keep, raw, sorted(scored_results(loaded, tensor, raw, target, layer)))
    slot = cols[0].empty()
    built = st.session_state.get(Keys.DICOM_RESULTS)
    if (built is None or built["for"] != key) and slot.button(
            "Prepare the DICOM results", icon=":material/folder_zip:",
            help="The SR, the saliency map and the overlay as DICOM objects for this scan and these settings."):
        try:
            with st.spinner("Building the DICOM results…"):
                built = {"for": key, "zip": to_zip(objects(None if keep else salt)), "error": None}
        except DicomResultError as err:
            built = {"for": key, "zip": None, "error": str(err)}
        st.session_state[Keys.DICOM_RESULTS] = built  # the last one only: memory stays bounded
    if built is not None and built["for"] == key:
        if built["error"]:
            slot.error(built["error"])
        else:
            slot.download_button("DICOM results (SR, map, overlay; zip)", built["zip"],
                                 file_name=f"{stem}_dicom_results.zip", mime="application/zip",
                                 icon=":material/folder_zip:")
    if chosen.pacs is not None and cols[2].button("Send the results to the PACS", icon=":material/upload:"):
        try:
            with st.spinner("Storing in the source's study…"):
                stored = store(pacs_client(), objects(None), study_uid=chosen.pacs.study_uid)
            st.success(f"Stored {len(stored.stored)} object(s) in the study of this scan on the PACS.")
        except (DicomResultError, DicomWebError) as err:
            st.error(str(err))


@st.fragment
def side_by_side():
    """Every method for the same scan, class and layer; with an outline, each one's localisation score."""
    st.caption("The same scan, class and layer for every method. Maps agreeing on a region is reassuring; "
               "disagreement is a reason for caution.")
    opacity = st.session_state.get(Keys.OPACITY, 0.6)
    colormap = st.session_state.get(Keys.COLORMAP, "Turbo")
    small = display_pixels(shrunk_frame(chosen, scan, frame, DISPLAY_SIDE // 2), window, invert_display, voi=voi)
    progress = st.progress(0.0, text="Computing maps…")
    columns = st.columns(len(methods))
    rows = []
    for i, method in enumerate(methods):
        progress.progress(i / len(methods), text=f"Computing {METHODS[method]}…")
        use_layer = layer if method in CAM_METHODS else None
        raw = raw_map(loaded, tensor, method, target, use_layer)
        columns[i].image(overlay_picture(small, raw, opacity=opacity, colormap=colormap, outline=mask),
                         caption=method_label(method, loaded.map_score), width="stretch")
        if mask is not None:
            scores = localisation(raw, mask, scan.spacing)
            rows.append([method_label(method, loaded.map_score)] + [scores[m] for m in (*loc.METRICS, "peak_distance")])
    progress.progress(1.0, text="All maps ready.")
    st.image(np.rot90(colour_bar(colormap, height=512, width=12), k=-1), width="stretch",
             caption=f"Colour scale of every map above ({colormap}): saliency 0 at the left to 1 at the right. Each map "
                     "is scaled to its own range, so compare where the maps are warm, not how warm.")
    if mask is None:
        map_record_note(loaded)
    if rows:
        baselines = baseline_scores(chosen.digest, full_background(), mask, scan.spacing)
        rows += [[name] + [scores[m] for m in (*loc.METRICS, "peak_distance")] for name, scores in baselines.items()]
        st.markdown("**Which method finds the finding?** Every method's localisation against the expert outline:")
        st.dataframe({"method": [r[0] for r in rows],
                      **{loc.LABELS[m]: [f"{r[j + 1]:.2f}" for r in rows] for j, m in enumerate(loc.METRICS)},
                      f"peak to outline ({distance_unit})": [f"{r[-1]:.1f}" if r[-1] == r[-1] else "–" for r in rows]},
                     hide_index=True, width="stretch")
        st.caption(f"{tolerance} Peak to outline: how far each map's hottest point lies from the outline, 0 on "
                   "it. A method that scores like the centre prior or the image intensity follows the head or the "
                   "bone, not the lesion.")


if view == VIEWS[0]:
    one_method()
else:
    side_by_side()
