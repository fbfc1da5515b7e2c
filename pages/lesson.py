"""Lesson: one curated case walked through step by step, the shortcut lesson (a model that calls any
blurred film pneumonia), the skull lesson (a brain model that reads the class without seeing the
brain) and the metal lesson (a fracture model that reads plates and casts as fractures), with forward
and back buttons and one or two sentences beside each step."""

import json

import numpy as np
import streamlit as st

from core.localisation import outline_scores, peak_distance_unit
from core.model import ModelError
from core.predict import out_of_range_sentence, predict_tensors
from core.render import display_image
from core.robustness import display_grey
from core.runs import centre_prior, list_runs, read_localisation, record_sentence
from core.report_content import faithfulness_row, outline_rows, probability_note, sanity_row, uncertainty_row
from core.saliency import CAM_METHODS, DESCRIPTIONS, METHODS
from core.teaching import blur_sigma, lesson_cases, map_peak, peak_on_drawing, shortcut_film
from ui.figures import evidence_figure, figure_height, image_figure, probability_chart
from ui.layout import disclaimer
from ui.models import get_model
from ui.runtime import through_app
from ui.state import Keys
from ui.teaching import (
    PEAK_COLOUR,
    blurred_case,
    case_display,
    case_faithfulness,
    case_map,
    case_mask,
    case_sanity,
    case_scan,
    case_uncertainty,
    dressed_case,
    film_ablation,
    film_faithfulness,
    film_reading,
    lesson_spec,
    model_answers,
    model_for,
    picture,
    rim_model_dir,
    shortcut_model_dir,
    small,
    step_bar,
    teaching_samples,
    truths,
)
from ui.trust_panel import curves_figure

through_app()  # a first visit by address, before app.py ever ran: rerun through app.py

CASE_STEPS = ["The scan", "What the model receives", "The prediction", "Where the model looked",
              "How far to trust the map", "What to take away"]
SHORTCUT_STEPS = ["Two chest models", "The same film, blurred", "What their maps show", "The deletion test",
                  "What to take away"]
SKULL_STEPS = ["A brain model that never sees the brain", "Its answers", "Where the default model looks",
               "The tumour filled in", "Every brain model we trained", "What to take away"]
METAL_STEPS = ["An intact limb film", "A plate and a cast drawn on it", "Where the maps point",
               "Over the validation films", "What to take away"]
KINDS = ["One case, step by step", "The shortcut lesson", "The skull lesson", "The metal lesson"]

st.title("Lesson")
disclaimer()
spec = lesson_spec()
if spec is None:
    st.stop()
kind = st.segmented_control("Lesson", KINDS, default=KINDS[0], required=True, key=Keys.LESSON_KIND,
                            label_visibility="collapsed")


# ----------------------------------------------------------------------------- one case, step by step

def stretched(values: np.ndarray) -> np.ndarray:
    """Any step's output shown with its own minimum as black and maximum as white."""
    values = np.asarray(values, np.float32)
    low, high = float(values.min()), float(values.max())
    return small((values - low) / (high - low) if high > low else np.zeros_like(values), 320)


def rule_sentence(loaded, probs, predicted) -> str:
    names = loaded.class_names
    if len(names) == 2:
        return (f"The decision rule: {names[1]} when its probability reaches the threshold {loaded.threshold:.2f}; "
                f"here it is {probs[1]:.1%}, so the answer is **{names[predicted]}**.")
    return f"The decision rule: the most probable of the {len(names)} classes, here **{names[predicted]}**."


def case_lesson() -> None:
    samples = teaching_samples()
    cases = lesson_cases(spec, truths(), model_answers())
    if not cases:
        st.error("No lesson case can be shown: the models for the curated cases are not installed.")
        return
    slots = [c.slot for c in cases]
    if st.session_state.get(Keys.LESSON_CASE) not in slots:
        st.session_state[Keys.LESSON_CASE] = slots[0]
    titles = {c.slot: c.title for c in cases}
    slot = st.selectbox("Case", slots, key=Keys.LESSON_CASE, format_func=titles.get,
                        help="Curated cases: a chest film of each class, an outlined brain slice of each tumour "
                             "type, an outlined fracture, and cases the models in use get wrong (found by asking "
                             "them when the page opens).")
    case = next(c for c in cases if c.slot == slot)
    sample = samples[case.sample]
    folder = model_for(sample)
    try:
        loaded = get_model(folder)
    except ModelError as err:
        st.error(str(err))
        return
    scan = case_scan(sample)
    display = case_display(scan)
    mask = case_mask(sample, scan)
    names = loaded.class_names
    tensor = loaded.pipeline.scan_tensor(scan)
    prediction = predict_tensors(loaded, tensor)[0]
    probs, predicted = prediction.probabilities, prediction.predicted
    truth = sample.true_label
    if case.note:
        st.info(case.note)

    step = step_bar(case.slot, CASE_STEPS)
    st.subheader(CASE_STEPS[step])

    if step == 0:
        left, right = st.columns([3, 2])
        with right:
            st.markdown(case.intro)
            st.markdown("This is the image as a reading station shows it: the file's own window and its aspect "
                        "ratio" + (", with a scale bar from the pixel spacing." if scan.spacing else
                                   "; the file states no pixel spacing, so there is no scale bar."))
            show_outline = mask is not None and st.toggle("Show the radiologists' outline", value=True,
                                                          key=f"{Keys.LESSON_OUTLINE}_{case.slot}")
            rows, cols = scan.shape
            size = f"{cols} x {rows} pixels" + (f", {cols * scan.spacing[1]:.0f} x {rows * scan.spacing[0]:.0f} mm"
                                                 if scan.spacing else "")
            st.caption(f"{size}. Label from the dataset: **{truth}**. Source: {sample.source}")
        with left:
            image = picture(display, mask=mask if show_outline else None, side=1024)
            st.plotly_chart(image_figure(image, scan.shape, spacing=scan.spacing,
                                         height=figure_height(scan.shape, scan.spacing, width=640)),
                            key=Keys.LESSON_SCAN_CHART, config={"scrollZoom": True, "displaylogo": False})
            st.caption("Scroll to zoom, drag to pan, double-click to reset.")

    elif step == 1:
        trace = loaded.pipeline.scan_trace(scan)
        st.markdown(f"The model never sees the picture of step 1: it sees the {loaded.pipeline.input_size} x "
                    f"{loaded.pipeline.input_size} grid of numbers at the end of these steps. Its training images went "
                    "through exactly the same code with the same parameters, saved beside the model.")
        columns = st.columns(len(trace.steps))
        for number, (column, record) in enumerate(zip(columns, trace.steps), start=1):
            column.image(stretched(record.output), width="stretch", clamp=True)
            column.markdown(f"**{number}. {record.name}**")
            column.caption(record.why)
        t = trace.tensor
        st.markdown(f"The tensor the model receives: shape **{t.shape}**, values {float(t.min()):.2f} to "
                    f"{float(t.max()):.2f}. The {scan.shape[1]} x {scan.shape[0]} image was squashed to a square "
                    "without keeping its aspect ratio, as every training image was.")

    elif step == 2:
        left, right = st.columns([3, 2])
        threshold = loaded.threshold if len(names) == 2 else None
        left.plotly_chart(probability_chart(names, probs, predicted, threshold), key=Keys.LESSON_PROBABILITIES,
                          config={"displayModeBar": False})
        with right:
            verdict = "right" if names[predicted] == truth else "wrong"
            st.markdown(f"The model says **{names[predicted]}** ({probs[predicted]:.1%}); the dataset says "
                        f"**{truth}**: the model is **{verdict}** on this case.")
            st.markdown(rule_sentence(loaded, probs, predicted))
            st.caption(probability_note(loaded) or "These are the model's own probabilities (no calibration is "
                                                    "saved with it).")
            outside = out_of_range_sentence(prediction, loaded.title)
            if outside:
                st.warning(outside)
            st.caption("A probability says how sure the model is, not how often it is right on cases like this one; "
                       "calibration on the validation split brings the two closer, on average.")

    elif step == 3:
        st.markdown(f"Five ways of asking the model where the evidence for **{names[predicted]}** lies, on the same "
                    "scan. Warm colours: the pixels that raised that class's score most."
                    + (" The green line is the radiologists' outline of what they found." if mask is not None else ""))
        methods = [m for m in METHODS if loaded.explainable_layers or m not in CAM_METHODS]
        progress = st.progress(0.0, text="Computing maps…")
        columns = st.columns(len(methods))
        for i, method in enumerate(methods):
            progress.progress(i / len(methods), text=f"Computing {METHODS[method]}…")
            result = case_map(folder, sample, method, predicted)
            columns[i].image(picture(display, saliency=result.on_scan, mask=mask, side=420), width="stretch")
            columns[i].markdown(f"**{METHODS[method]}**")
            columns[i].caption(DESCRIPTIONS[method])
        progress.progress(1.0, text="All maps ready.")
        st.caption("Maps that agree are reassuring; maps that disagree show how much the picture depends on the "
                   "method. None of them shows where disease is: they show what the model used.")

    elif step == 4:
        trust_step(loaded, scan, sample, folder, display, mask, predicted)

    else:
        takeaway(loaded, scan, sample, folder, probs, predicted, truth, mask, case)

    st.divider()
    step_bar(case.slot, CASE_STEPS, where="bottom")


def trust_step(loaded, scan, sample, folder, display, mask, predicted) -> None:
    names = loaded.class_names
    positive = 1 if len(names) == 2 else predicted
    threshold = loaded.threshold if len(names) == 2 else None
    st.markdown("Three checks of the Grad-CAM map of the previous step: does it point at what the model uses, does it "
                "depend on what the model learned, and how steady is the answer?")
    left, middle, right = st.columns(3, gap="large")
    with left:
        st.markdown("**Faithfulness** (deletion / insertion)")
        with st.spinner("Removing and revealing pixels in the map's order…"):
            faith = case_faithfulness(folder, sample, "gradcam", predicted)
        st.plotly_chart(curves_figure(faith), config={"displayModeBar": False}, key=Keys.LESSON_CURVES)
        label, value, reading = faithfulness_row(faith, names[predicted])
        st.markdown(f"{value}. {reading}")
    with middle:
        st.markdown("**Uncertainty** (test-time augmentation)")
        with st.spinner("Predicting shifted and re-contrasted copies…"):
            tta = case_uncertainty(folder, sample, positive)
        st.metric(f"Mean P({names[positive]}) over {len(tta.probabilities)} copies", f"{tta.mean:.1%}")
        label, value, reading = uncertainty_row(tta, names[positive], threshold)
        st.markdown(f"90% interval **{tta.low:.1%} – {tta.high:.1%}**; the hot spot moves "
                    f"{100 * tta.hotspot_spread:.1f}% of the image side. {reading}")
    with right:
        st.markdown("**Sanity check** (model randomisation)")
        st.caption("The model's layers are re-initialised from the output down, on a copy; a map that stays the same "
                   "when the model is destroyed shows the image, not the model.")
        asked = st.session_state.setdefault(Keys.LESSON_SANITY, set())
        if sample.path.name not in asked and st.button("Run the sanity check (a few seconds)",
                                                       key=f"{Keys.LESSON_SANITY_BUTTON}_{sample.path.name}"):
            asked.add(sample.path.name)
        if sample.path.name in asked:
            with st.spinner("Randomising layers and recomputing the map…"):
                check = case_sanity(folder, sample, "gradcam", predicted)
            strip = st.columns(3)
            for column, i in zip(strip, np.linspace(0, len(check.maps) - 1, 3).round().astype(int)):
                column.image(np.clip(check.maps[i], 0, 1), clamp=True, width="stretch", caption=f"ρ {check.spearman[i]:.2f}")
            label, value, reading = sanity_row(check, METHODS["gradcam"])
            (st.success if check.passes else st.error)(f"{value[0].upper()}{value[1:]}. {reading}")
    if mask is not None:
        st.subheader("Against the radiologists' outline")
        result = case_map(folder, sample, "gradcam", predicted)
        left, right = st.columns([1, 2])
        peak = map_peak(result.on_scan)
        left.image(picture(display, saliency=result.on_scan, mask=mask, points=((peak, PEAK_COLOUR),), side=420),
                   width="stretch", caption="Grad-CAM with its hottest point (pink ring) and the outline (green).")
        rows = outline_rows(result.on_scan, mask, scan.spacing)
        right.dataframe({"Score": [r[0] for r in rows], "Grad-CAM": [r[1] for r in rows],
                         "How to read it": [r[2] for r in rows]}, hide_index=True, width="stretch")
        right.caption("The centre baseline is a blob in the middle of the image that knows nothing of the model: "
                      "a map is only interesting where it beats it.")


def takeaway(loaded, scan, sample, folder, probs, predicted, truth, mask, case) -> None:
    names = loaded.class_names
    result = case_map(folder, sample, "gradcam", predicted)
    right = names[predicted] == truth
    lines = [f"The model answered **{names[predicted]}** with {probs[predicted]:.0%}; the truth is **{truth}**: "
             + ("it was right." if right else "it was **wrong**" + (", and sure of itself." if probs[predicted] >= 0.8
                                                                   else "."))]
    if mask is not None:
        scores = outline_scores(result.on_scan, mask, spacing=scan.spacing)
        distance = scores["peak_distance"]
        away = (f" ({distance:.0f} {peak_distance_unit(scan.spacing)} from it)"
                if distance == distance and distance > 0 else "")
        lines.append(f"Its Grad-CAM peak landed {'on' if scores['pointing_game'] == 1 else 'off'} the radiologists' "
                     f"outline{away}, and {scores['energy']:.0%} of the map's weight lies inside it.")
    with st.spinner("Scoring the map (deletion and insertion)…"):
        faith = case_faithfulness(folder, sample, "gradcam", predicted)
    if faith.informative:
        better = faith.deletion_ratio > 1.1 and faith.insertion_ratio > 1.1
        lines.append("Deleting the map's hottest pixels first lowered the probability "
                     + ("faster than random deletions: the map points at what the model used." if better else
                        "no faster than random deletions: this map is not clearly better than chance."))
    else:
        lines.append("The deletion test could not measure this map: even the fully blurred image keeps the class.")
    lines.append("A map that looks right can belong to a wrong answer, and a right answer can rest on the wrong "
                 "evidence: read the image yourself first.")
    st.markdown("\n".join(f"- {line}" for line in lines))

    handouts = st.session_state.setdefault(Keys.LESSON_HANDOUT, {})
    if case.slot not in handouts:
        if st.button("Prepare this case as a PDF handout", key=f"{Keys.HANDOUT_BUTTON}_{case.slot}"):
            from core.report import report_pdf
            from core.report_content import content_for

            bar = st.progress(0.0, text="Preparing the handout…")
            content = content_for(loaded, scan, method="gradcam", true_label=truth, mask=mask,
                                  progress=lambda fraction, text: bar.progress(fraction, text=text))
            handouts.clear()  # one handout at a time per session keeps memory bounded
            handouts[case.slot] = report_pdf(content)
            st.rerun()
    else:
        st.download_button("Download the handout (PDF)", handouts[case.slot], file_name=f"lesson_{case.slot}.pdf",
                           mime="application/pdf", key=f"{Keys.HANDOUT_DOWNLOAD}_{case.slot}", type="primary")
    st.caption("The handout holds the scan, the maps, the trust scores and the model card summary on two A4 pages; "
               "curated teaching cases carry no patient identifier.")


# ----------------------------------------------------------------------------- the shortcut lesson

def shortcut_lesson() -> None:
    teaching_dir = shortcut_model_dir()
    if not (teaching_dir / "model.json").is_file():
        st.info(f"The shortcut lesson needs the old chest teaching model, which is not installed yet (it belongs in "
                f"{teaching_dir}).")
        return
    samples = teaching_samples()
    shortcut = spec.get("shortcut") or {}
    candidates = [c for c in shortcut.get("choose_from", []) if c in samples]
    # The current model is the default model of the lesson's own films (named in their samples.json).
    current = next((model_for(samples[c]) for c in candidates if model_for(samples[c])), None)
    if current is None:
        st.info("The shortcut lesson needs the default chest model beside the teaching model, and it is not installed.")
        return
    try:
        old, new = get_model(str(teaching_dir)), get_model(current)
    except ModelError as err:
        st.error(str(err))
        return
    sigma = float(shortcut.get("sigma_224", 4.0))
    names = old.class_names
    positive = names.index("PNEUMONIA") if "PNEUMONIA" in names else len(names) - 1
    name = names[positive]
    with st.spinner("Blurring the candidate films and asking the teaching model…"):
        flips = {c: film_reading(str(teaching_dir), samples[c], positive).decision
                 != film_reading(str(teaching_dir), samples[c], positive, sigma).decision for c in candidates}
    film = shortcut_film(candidates, flips)
    if film is None:
        st.error("None of the shortcut lesson's films can be read.")
        return
    sample = samples[film]
    sharp, soft = case_scan(sample), blurred_case(sample, sigma)
    models = (("Teaching model (old)", str(teaching_dir), old), ("Current default model", current, new))
    with st.spinner("Both models read the sharp and the blurred film…"):
        readings = {(label, which): film_reading(folder, sample, positive, None if which == "sharp" else sigma)
                    for label, folder, _ in models for which in ("sharp", "blurred")}

    step = step_bar("shortcut", SHORTCUT_STEPS)
    st.subheader(SHORTCUT_STEPS[step])
    old_label, new_label = models[0][0], models[1][0]

    if step == 0:
        st.markdown("Two chest models side by side. The **teaching model** is the project's earlier chest model, kept "
                    "only for this lesson and never offered as a default; the **current model** is the one the "
                    "dashboard uses. Both read this normal film.")
        left, right = st.columns([3, 2])
        left.image(picture(case_display(sharp), side=900), width="stretch",
                   caption=f"A normal film ({sample.path.name}), as a reading station shows it.")
        with right:
            for label, _, loaded in models:
                reading = readings[(label, "sharp")]
                st.metric(f"{label}: P({name})", f"{reading.probability:.1%}",
                          help=f"Decision threshold {loaded.threshold:.2f}.")
            st.caption("On a sharp normal film both models may well be right: a shortcut hides behind correct answers.")

    elif step == 1:
        st.markdown(f"The same film blurred (Gaussian, sigma {sigma:g} pixels on a 224-pixel side, "
                    f"{blur_sigma(sharp.shape, sigma):.1f} pixels on this {sharp.shape[1]} x {sharp.shape[0]} film), as "
                    "a soft film from a cheap detector or a child who moved would look. Nothing in the lungs changed.")
        left, right = st.columns(2)
        left.image(picture(case_display(sharp), side=700), width="stretch", caption="Sharp")
        right.image(picture(case_display(soft), side=700), width="stretch", caption="Blurred")
        st.dataframe({"Model": [label for label, _, _ in models],
                      f"P({name}), sharp": [f"{readings[(label, 'sharp')].probability:.1%}" for label, _, _ in models],
                      f"P({name}), blurred": [f"{readings[(label, 'blurred')].probability:.1%}" for label, _, _ in models]},
                     hide_index=True, width="stretch")
        flipped = readings[(old_label, "blurred")].decision == positive != readings[(old_label, "sharp")].decision
        blurred_p = readings[(old_label, "blurred")].probability
        st.markdown((f"The teaching model now calls the film **{name}** ({blurred_p:.0%}): it learned that soft films "
                     "are pneumonia films, because in its training data pneumonia films were softer on average."
                     if flipped else
                     f"On this film the teaching model does not cross its threshold ({blurred_p:.0%})."
                     ) + (f" The current model is fooled too ({readings[(new_label, 'blurred')].probability:.0%}): it "
                          "has the same shortcut." if readings[(new_label, "blurred")].decision == positive else
                          f" The current model keeps the film {names[readings[(new_label, 'blurred')].decision]} "
                          f"({readings[(new_label, 'blurred')].probability:.0%} {name})."))

    elif step == 2:
        st.markdown(f"Grad-CAM maps for **{name}** from both models, on the sharp and on the blurred film. Look for a "
                    "difference that would tell you the teaching model is using the blur.")
        grid = st.columns(4)
        for i, (label, _, _) in enumerate(models):
            for j, (which, scan) in enumerate((("sharp", sharp), ("blurred", soft))):
                reading = readings[(label, which)]
                grid[2 * i + j].image(picture(case_display(scan), saliency=reading.on_scan, side=420), width="stretch",
                                      caption=f"{label}, {which}: P({name}) {reading.probability:.0%}")
        st.markdown("A map shows **where** the evidence for a class lies, not **what kind** of evidence it is. Blur is "
                    "everywhere at once, so a map can spread over the lungs and look reasonable while the model's real "
                    "reason is the missing sharpness: the map alone rarely reveals this shortcut.")

    elif step == 3:
        st.markdown("The deletion test removes the map's hottest pixels first (replacing them with a blurred copy) and "
                    "watches the probability fall; a faithful map makes it fall faster than random orders do.")
        columns = st.columns(2)
        for column, (label, folder, _) in zip(columns, models):
            with column:
                st.markdown(f"**{label}**, blurred film")
                with st.spinner("Scoring the map (deletion and insertion)…"):
                    result = film_faithfulness(folder, sample, positive, sigma)
                st.plotly_chart(curves_figure(result), config={"displayModeBar": False},
                                key=f"{Keys.SHORTCUT_CURVES}_{label}")
                if result.informative:
                    st.caption(f"Deletion AUC {result.deletion_auc:.2f} ({result.deletion_ratio:.1f}x better than "
                               "random): removing the hottest pixels does lower the score.")
                else:
                    st.caption(f"Not measurable: even the fully blurred baseline gets {result.baseline_probability:.0%} "
                               f"{name}, so deleting pixels cannot lower the score. That is the clue: the blurred "
                               "image itself carries the class.")

    else:
        st.markdown(
            "- A model can be right on sharp films for a wrong reason; the blur test exposed it, the maps did not.\n"
            "- Saliency maps answer *where*, not *why*: global properties (sharpness, contrast, a border, a marker "
            "seen everywhere) slip through them.\n"
            "- The deletion test uses a blurred image as its 'nothing': when the blurred image already is the class, "
            "the test says so, and that failure is information.\n"
            "- Test a model on the changes real images go through (blur, exposure, another device) before trusting "
            "its maps.")
    st.divider()
    step_bar("shortcut", SHORTCUT_STEPS, where="bottom")


# ----------------------------------------------------------------------------- the skull lesson

def skull_lesson() -> None:
    rim_dir = rim_model_dir()
    if not (rim_dir / "model.json").is_file():
        st.info(f"The skull lesson needs the rim-only brain model, which is not installed (it belongs in {rim_dir}).")
        return
    samples = teaching_samples()
    brain = [s for _, s in sorted(samples.items()) if s.model == "brain_mri" and s.true_label]
    current = next((model_for(s) for s in brain if model_for(s)), None)
    if current is None:
        st.info("The skull lesson needs the default brain model beside the rim-only model, and it is not installed.")
        return
    try:
        rim = get_model(str(rim_dir))
        get_model(current)  # loaded here so that a broken default model is one sentence, not a traceback below
    except ModelError as err:
        st.error(str(err))
        return
    names = rim.class_names
    brain = [s for s in brain if s.true_label in names]
    if not brain:
        st.info("The skull lesson needs the curated brain slices (assets/samples/brain_mri), and none is installed.")
        return
    focus = next((s for s in brain if s.true_label == "pituitary" and s.mask), brain[0])
    scan = case_scan(focus)
    models = (("Default brain model (whole slice)", current), ("Rim-only model (no brain)", str(rim_dir)))
    with st.spinner("Both models read the curated brain slices…"):
        readings = {(label, s.path.name): film_reading(folder, s, names.index(s.true_label))
                    for label, folder in models for s in brain}
    metrics_file = rim_dir / "metrics.json"
    rim_accuracy = json.loads(metrics_file.read_text()).get("accuracy") if metrics_file.is_file() else None

    step = step_bar("skull", SKULL_STEPS)
    st.subheader(SKULL_STEPS[step])

    if step == 0:
        st.markdown(
            "The **rim-only model** was trained with the same command as the default brain model, on the same slices, "
            "with one change (`train --rim-only 0.12`): before it sees a slice, everything inside the head is blacked "
            "out. It sees the scalp, the skull, the outline of the head and the background, and never the brain, so "
            "it cannot see a tumour. It is kept for this lesson only and never offered as a model."
            + (f" On its validation slices it still names the right class **{rim_accuracy:.1%}** of the time "
               f"(guessing among {len(names)} classes: {1 / len(names):.0%})." if rim_accuracy else ""))
        trace = rim.pipeline.scan_trace(scan)
        left, middle, right = st.columns(3)
        left.image(picture(case_display(scan), side=420), width="stretch",
                   caption=f"A pituitary tumour slice ({focus.path.name}), as a reading station shows it.")
        middle.image(stretched(trace.model_image), clamp=True, width="stretch",
                     caption=f"What the rim-only model receives ({rim.pipeline.input_size} x "
                             f"{rim.pipeline.input_size}): the sella and the tumour are blacked out.")
        right.markdown("What is left still says a lot: whether the cut is axial, coronal or sagittal, how high it "
                       "passes through the head (the outline narrows towards the vertex and takes in the face and "
                       "neck at the skull base), and how the scalp and background of its source collection look. "
                       "The Preprocessing page shows this step, `rim`, for any model trained with it.")

    elif step == 1:
        st.markdown("Every curated brain slice, read by both models: the probability each gives to the true class, "
                    "and whether its answer is right.")
        rows = {"Slice": [], "True class": []}
        for label, _ in models:
            rows[label] = []
        for s in brain:
            rows["Slice"].append(s.path.name)
            rows["True class"].append(s.true_label)
            for label, _ in models:
                reading = readings[(label, s.path.name)]
                right = names[reading.decision] == s.true_label
                rows[label].append(f"{'right' if right else 'wrong, ' + names[reading.decision]} "
                                   f"({reading.probability:.0%})")
        st.dataframe(rows, hide_index=True, width="stretch")
        score = {label: sum(names[readings[(label, s.path.name)].decision] == s.true_label for s in brain)
                 for label, _ in models}
        rim_label = models[1][0]
        by_class = {c: [names[readings[(rim_label, s.path.name)].decision] == c for s in brain if s.true_label == c]
                    for c in names}
        found = ", ".join(f"{sum(v)} of {len(v)} {c}" for c, v in by_class.items() if v)
        st.markdown(f"The default model gets **{score[models[0][0]]} of {len(brain)}** right, the rim-only model "
                    f"**{score[rim_label]} of {len(brain)}** ({found}) without seeing a single tumour. What it uses "
                    "is written in the outline: the plane and level of the cut (a pituitary slice always passes "
                    "through the sella, at the skull base) and the collection a slice came from (the tumour-free "
                    "slices come from another dataset, with another scalp, field of view and contrast).")

    elif step == 2:
        pituitary = names.index("pituitary") if "pituitary" in names else 0
        reading = readings[(models[0][0], focus.path.name)]
        mask = case_mask(focus, scan)
        peak = map_peak(reading.on_scan)
        left, right = st.columns(2)
        left.image(picture(case_display(scan), saliency=reading.on_scan, mask=mask, points=((peak, PEAK_COLOUR),),
                           side=520), width="stretch",
                   caption=f"Default model, Grad-CAM for {names[pituitary]}: its hottest point (pink ring) and the "
                           "radiologists' outline (green).")
        with right:
            if mask is not None:
                scores = outline_scores(reading.on_scan, mask, spacing=scan.spacing)
                st.metric("Peak on the tumour (within 7 mm)", "yes" if scores["pointing_game"] else "no")
                st.metric("Peak to the outline", f"{scores['peak_distance']:.0f} {peak_distance_unit(scan.spacing)}",
                          help="How far the map's hottest point lies from the nearest outlined pixel: 0 on the "
                               "tumour, and a near miss reads as one.")
                st.metric("Share of the map inside the outline", f"{scores['energy']:.0%}")
            st.markdown("A map says which parts of the slice weighed in the score, not where the tumour is. On the 150 "
                        "slices with radiologists' outlines that the default model never saw, its Grad-CAM peak lands "
                        "on the tumour less than half the time, and hardly more often than a fixed blob in the middle "
                        "of the image (`docs/EXPLANATIONS.md`, brain localisation). The rim-only model shows why the "
                        "model need not find the gland: the cut's plane and level, which the whole head shows, already "
                        "say *pituitary*.")

    elif step == 3:
        outlined = [s for s in brain if s.mask]
        if not outlined:
            st.info("This step needs the curated slices' outlines (assets/samples/brain_mri), and none is installed.")
        else:
            with st.spinner("The default model reads each outlined slice with its tumour filled in…"):
                ablated = {s.path.name: film_ablation(current, s, names.index(s.true_label)) for s in outlined}
            example = next((s for s in outlined if s.true_label == "glioma"), outlined[0])
            example_scan = case_scan(example)
            example_mask = case_mask(example, example_scan)
            result = ablated[example.path.name]
            filled = display_image(result["filled"]["outline"], example_scan.window, example_scan.invert,
                                   voi=example_scan.voi)
            target = example.true_label
            left, right = st.columns(2)
            left.image(picture(case_display(example_scan), mask=example_mask, side=420), width="stretch",
                       caption=f"{example.path.name} as scanned, the outline in green: P({target}) = "
                                f"{result['p_intact']:.2f}.")
            right.image(picture(filled, side=420), width="stretch",
                        caption=f"The same slice with the outlined tumour filled in from the tissue around it: "
                                f"P({target}) = {result['p_outline']:.2f}.")
            rows = {"Slice": [], "True class": [], "As scanned": [], "Tumour filled in": [],
                    "Same shape filled elsewhere": []}
            for s in outlined:
                r = ablated[s.path.name]
                rows["Slice"].append(s.path.name)
                rows["True class"].append(s.true_label)
                for column, version in (("As scanned", "intact"), ("Tumour filled in", "outline"),
                                        ("Same shape filled elsewhere", "control")):
                    p, right_answer = r[f"p_{version}"], r[f"right_{version}"]
                    rows[column].append("–" if p is None else f"{'right' if right_answer else 'wrong'} ({p:.0%})")
            st.dataframe(rows, hide_index=True, width="stretch")
            read_right = [s for s in outlined if ablated[s.path.name]["right_intact"]]
            kept = sum(bool(ablated[s.path.name]["right_outline"]) for s in read_right)
            st.markdown(f"Of the {len(read_right)} outlined slices the default model gets right as scanned, it still "
                        f"names the right class on **{kept} of {len(read_right)}** with the tumour gone. The control "
                        "fills a region of the same shape elsewhere in the head, because a smooth patch is itself unusual. Measured on the 150 outlined "
                        "slices it never saw, it still calls 95% of the gliomas glioma without their tumour "
                        "(`python -m core explain-eval --masks ...`, its last table; `docs/EXPLANATIONS.md`, \"Does the "
                        "prediction need the lesion?\"). A map cannot point at a tumour the answer does not need.")

    elif step == 4:
        runs = [run for run in list_runs(task="brain_mri") if run.localisation and run.finished]
        if not runs:
            st.info("This step needs the brain model's training runs measured against outlines (assets/runs/brain_mri "
                    "with their localisation files), and none is installed.")
        else:
            accuracy = [run.metrics["accuracy"] for run in runs]
            pointing = [run.localisation["pointing"] for run in runs]
            centre = centre_prior(runs)
            above = sum(p >= 2 * centre for p in pointing) if centre else 0
            accurate = [p for a, p in zip(accuracy, pointing) if a >= 0.95]
            st.markdown(
                f"The default model is one of **{len(runs)}** brain models this project trained and measured, each "
                "trying one more way to make the maps find the tumour: other pooling, a mask over the skull, a "
                "pretrained network, tumour-free copies of the slices, maps that must move with the slice. Each dot "
                "is one of them: across, its accuracy on its validation slices; up, how often its Grad-CAM peak lands "
                "on the tumour on the outlined slices it never saw.")
            st.plotly_chart(evidence_figure(runs, title="Every brain model: accuracy against Grad-CAM on the tumour"),
                            config={"displaylogo": False}, key="skull_runs")
            st.markdown(
                f"Their accuracy runs from {min(accuracy):.1%} to {max(accuracy):.1%}; their maps find the tumour on "
                f"{min(pointing):.0%} to {max(pointing):.0%} of the slices"
                + (f", and {above} of {len(runs)} reach twice the centred blob's {centre:.0%}" if centre else "")
                + "." + (f" Among the {len(accurate)} models right on at least 95% of their slices, the maps find the "
                         f"tumour on {min(accurate):.0%} to {max(accurate):.0%}: being right says little about where "
                         "the evidence lies." if len(accurate) > 1 else "")
                + " The slices can be classified without the tumour, so nothing in the training pushes the evidence "
                "onto it, and two runs of one recipe can land far apart (`docs/EXPLANATIONS.md`, brain section; the "
                "Training history page lists every run).")

    else:
        st.markdown(
            "- A model can be accurate for the dataset's reason rather than the disease's: here the head's outline, "
            "the cut's level and the source collection give two of the four classes away almost entirely.\n"
            "- An ablation answers what a map cannot: train (or test) a model on what you suspect it uses, *without* "
            "the lesion, and see how far it gets; or take the lesion out of the image and see whether the answer "
            "changes.\n"
            "- A map that covers the right region of the head is not a map of the tumour: check it against an "
            "expert outline and against a centred blob.\n"
            "- The cure is data: tumour-free slices at the same levels, from the same scanners, so that the level no "
            "longer tells the class (the project's measurements: `docs/EXPLANATIONS.md`, brain section).")
    st.divider()
    step_bar("skull", SKULL_STEPS, where="bottom")


# ----------------------------------------------------------------------------- the metal lesson

def _share(row: dict | None) -> str:
    return "–" if not row or not row.get("n") else f"{row['called_fractured']:.0%} of {row['n']}"


def metal_reading(metal_rows: dict, cast_rows: dict) -> str:
    """What the validation table says, read from its rows: whether drawn metal and plaster move the model, against
    the control (the plate's shape at the limb's own grey)."""
    def called(rows, name):
        return (rows.get(name) or {}).get("called_fractured")

    base, plate = called(metal_rows, "as scanned"), called(metal_rows, "plate on the limb")
    control = called(metal_rows, "plate's shape at the limb's grey")
    drawn_cast = called(cast_rows, "intact films with a cast drawn")
    in_cast, without = called(cast_rows, "fractures in a cast or splint"), called(cast_rows, "fractures without")
    said = []
    if None not in (base, plate, control):
        if plate - base >= 0.1 and control - base < (plate - base) / 2:
            said.append(f"The control row is the point: the plate's shape alone, at the limb's own grey, moves the "
                        f"share called fractured from {base:.0%} to {control:.0%}; the brightness of metal moves it to "
                        f"{plate:.0%}.")
        else:
            said.append(f"A drawn plate moves this model little ({base:.0%} to {plate:.0%} of intact films called "
                        "fractured): it does not read metal as a fracture.")
    if None not in (base, drawn_cast):
        said.append(f"A drawn cast takes it to {drawn_cast:.0%}" + (
            f", and real fractures in plaster are called fractured {in_cast:.0%} of the time against {without:.0%} "
            "without." if None not in (in_cast, without) else "."))
    return " ".join(said)


def metal_lesson() -> None:
    samples = teaching_samples()
    metal = spec.get("metal") or {}
    candidates = [samples[c] for c in metal.get("choose_from", []) if c in samples]
    folder = next((model_for(s) for s in candidates if model_for(s)), None)
    if folder is None:
        st.info("The metal lesson needs the fracture model and its intact sample films (assets/samples/fracture), and "
                "they are not installed.")
        return
    try:
        loaded = get_model(folder)
    except ModelError as err:
        st.error(str(err))
        return
    names = loaded.class_names
    if "fractured" not in names:
        st.info(f"The metal lesson needs a model with a 'fractured' class; {loaded.title} has none.")
        return
    positive = names.index("fractured")
    with st.spinner("The fracture model reads the lesson's films…"):
        plain = {s.path.name: film_reading(folder, s, positive) for s in candidates}
    sample = next((s for s in candidates if plain[s.path.name].decision != positive), candidates[0])
    seeds = {"plate": int(metal.get("plate_seed", 0)), "cast": int(metal.get("cast_seed", 0))}
    # (what was drawn, its caption, the film, the model's reading of it)
    versions = (("", "as scanned", case_scan(sample), plain[sample.path.name]),
                *((kind, f"with a {kind} drawn", dressed_case(sample, kind, seed),
                   film_reading(folder, sample, positive, dressing=(kind, seed))) for kind, seed in seeds.items()))
    threshold = loaded.threshold

    def verdict(reading) -> str:
        return f"P(fractured) {reading.probability:.0%}, **{names[reading.decision]}**"

    step = step_bar("metal", METAL_STEPS)
    st.subheader(METAL_STEPS[step])

    if step == 0:
        left, right = st.columns([3, 2])
        left.image(picture(case_display(versions[0][2]), side=900), width="stretch",
                   caption=f"{sample.path.name}: the dataset's radiologists found no fracture.")
        with right:
            st.metric("P(fractured), as scanned", f"{versions[0][3].probability:.1%}",
                      help=f"The model calls a film fractured from {threshold:.2f} up.")
            st.markdown(
                f"The fracture model ({loaded.title}) reads this intact film as **{names[versions[0][3].decision]}**. "
                "In its training data (FracAtlas), 89 of the 91 films with a plate or screws are fractured: metal "
                "is put in to hold a fracture. Of the 63 validation fractures 13 wear a cast or splint, and none of "
                "the 397 intact validation films does. A model rewarded for finding fractures can learn the metal "
                "and the plaster instead.")

    elif step == 1:
        st.markdown("The same film with a metal plate (and its screws), then a plaster cast, drawn on the limb, each "
                    "at a random place; nothing else changed and the bone beneath is intact.")
        for column, (_, label, scan, reading) in zip(st.columns(3), versions):
            column.image(picture(case_display(scan), side=520), width="stretch", caption=f"{label}: {verdict(reading)}")
        scanned = versions[0][3]
        changes = [f"the {kind} {'raises' if r.probability > scanned.probability else 'lowers'} P(fractured) from "
                   f"{scanned.probability:.0%} to {r.probability:.0%}"
                   + (" and crosses the threshold" if r.decision == positive != scanned.decision else "")
                   for kind, _, _, r in versions[1:]]
        st.markdown(f"On this film {changes[0]}; {changes[1]}. One film and one placement prove little: step 4 "
                    "counts every intact validation film.")

    elif step == 2:
        st.markdown("Grad-CAM for **fractured** on the three films; the pink ring marks each map's hottest point.")
        grey = display_grey(versions[0][2])
        for column, (kind, label, scan, reading) in zip(st.columns(3), versions):
            peak = map_peak(reading.on_scan)
            on = bool(kind) and peak_on_drawing(grey, display_grey(scan), peak)
            column.image(picture(case_display(scan), saliency=reading.on_scan, points=((peak, PEAK_COLOUR),),
                                 side=520), width="stretch",
                         caption=f"{label}: {verdict(reading)}" + ("; the hottest point is on what was drawn" if on
                                                                   else ""))
        st.markdown("Where the map is warm on the drawn film, the plate or the plaster raised the fracture score: the "
                    "map shows what the model used, and here that is the metal, not a break in the bone. On a real "
                    "film with a plate the map lands on the plate too, and looks as if it found the fracture the plate "
                    "holds.")

    elif step == 3:
        measured = {name: json.loads((loaded.path / f"{name}_valid.json").read_text())
                    for name in ("metal", "cast") if (loaded.path / f"{name}_valid.json").is_file()}
        if not measured:
            st.info("This step needs the model's measurements on its validation films (metal_valid.json and "
                    "cast_valid.json from scripts/metal_check.py and scripts/cast_check.py), and none is installed.")
        else:
            metal_rows = (measured.get("metal") or {}).get("rows", {})
            cast_rows = (measured.get("cast") or {}).get("rows", {})
            rows = [("Intact films as scanned", metal_rows.get("as scanned")),
                    ("The same with a plate drawn on the limb", metal_rows.get("plate on the limb")),
                    ("… its shape at the limb's own grey (no metal)", metal_rows.get("plate's shape at the limb's grey")),
                    ("… the plate on the empty film beside the limb", metal_rows.get("plate on the open field")),
                    ("Intact films with a cast drawn", cast_rows.get("intact films with a cast drawn")),
                    ("Real fractures in a cast or splint", cast_rows.get("fractures in a cast or splint")),
                    ("Real fractures without", cast_rows.get("fractures without"))]
            rows = [(label, row) for label, row in rows if row]
            st.dataframe({"Films": [label for label, _ in rows],
                          "Called fractured": [_share(row) for _, row in rows],
                          "Median P(fractured)": [f"{row['median_p']:.2f}" for _, row in rows]},
                         hide_index=True, width="stretch")
            st.caption(f"At the model's threshold {threshold:.2f}, every intact validation film: the plate along the limb "
                       "over its brightest bone, with six screws; the cast at a random place on each film (`python "
                       "scripts/metal_check.py` and `python scripts/cast_check.py` with the "
                       "model folder; `docs/EXPLANATIONS.md`, \"Metal and collages\" and \"Casts, splints and worn "
                       "metal\").")
            record = record_sentence(read_localisation(loaded.path))
            st.markdown(metal_reading(metal_rows, cast_rows) + (f" {record[1]}" if record else ""))

    else:
        st.markdown(
            "- A model can score well by reading what comes *with* a finding (the plate that holds a fracture, the cast "
            "put on after it), and it will then call a healed or a sound limb with metal or plaster fractured.\n"
            "- Test for it on purpose: draw the suspect on films without the finding, and keep a control that changes "
            "the same pixels without the suspect (here, the plate's shape at the limb's own grey).\n"
            "- A map on the plate looks convincing, because the plate sits where the fracture was: check a map against "
            "the radiologists' outline, and against a fixed blob, before reading it as the fracture's place.\n"
            "- The fix is in the training data: films with metal and plaster on both sides of the label, or metal drawn "
            "on intact films as they train (`train --implant`). Measured here, that takes four fifths of the metal "
            "effect away, but the model trained so was no better overall and was not shipped, so the default still "
            "carries the effect: this lesson shows the model in use (`docs/EXPLANATIONS.md`, \"Metal and collages\").")
    st.divider()
    step_bar("metal", METAL_STEPS, where="bottom")


if kind == KINDS[1]:
    shortcut_lesson()
elif kind == KINDS[2]:
    skull_lesson()
elif kind == KINDS[3]:
    metal_lesson()
else:
    case_lesson()
