"""The Explain page's "how much to trust this map": faithfulness, sanity check, uncertainty, and the
expert-outline scores when the scan has an outline.

The outline scores are cheap and always shown; faithfulness and uncertainty (about a second) and the
sanity check (several seconds) run when asked, and every result stays with its map for the session.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core import localisation as loc
from core.runs import read_localisation, record_sentence
from core.saliency import METHODS
from core.trust import BASELINES, SANITY_LIMIT, model_faithfulness, sanity_check, test_time_augmentation
from ui.maps import digest, remembered
from ui.state import Keys


def curves_figure(result) -> go.Figure:
    fig = go.Figure()
    x = result.fractions
    fig.add_scatter(x=x, y=result.deletion, name=f"deletion (AUC {result.deletion_auc:.2f})", line=dict(color="#e8744c"))
    fig.add_scatter(x=x, y=result.random_deletion, name="deletion, random order", line=dict(color="#e8744c", dash="dot"))
    fig.add_scatter(x=x, y=result.insertion, name=f"insertion (AUC {result.insertion_auc:.2f})", line=dict(color="#4c9be8"))
    fig.add_scatter(x=x, y=result.random_insertion, name="insertion, random order", line=dict(color="#4c9be8", dash="dot"))
    fig.update_layout(height=330, margin=dict(l=0, r=0, t=10, b=0),
                      legend=dict(font=dict(size=10), orientation="h", y=-0.3),
                      xaxis=dict(title="fraction of pixels removed / revealed", tickformat=".0%", dtick=0.25),
                      yaxis=dict(title="probability of class", range=[0, 1]))
    return fig


def scored_faithfulness(loaded, tensor, raw_map, target):
    """Deletion/insertion against the model's own baseline (``core.trust.deletion_baseline``, as the report
    and the DICOM SR): (result, the baseline in words)."""
    result = model_faithfulness(loaded, tensor, raw_map, target)
    return result, BASELINES[result.baseline]


def faithfulness_column(loaded, tensor, raw_map, target, names, key) -> None:
    st.markdown("**Faithfulness** (deletion / insertion)")
    store = st.session_state.setdefault(Keys.SCORED, {})
    if key not in store:
        st.caption("Removes the pixels the map ranks highest first and watches the probability fall (about 1 s).")
        return
    result, baseline = store[key]["faithfulness"]
    st.plotly_chart(curves_figure(result), config={"displayModeBar": False}, key="faithfulness_curves")
    if result.informative:
        verdict = "better than" if result.deletion_ratio > 1.1 and result.insertion_ratio > 1.1 else "not clearly better than"
        st.markdown(
            f"Deletion AUC **{result.deletion_auc:.3f}** ({result.deletion_ratio:.2f}x the random order's; above 1 is better), "
            f"insertion AUC **{result.insertion_auc:.3f}** ({result.insertion_ratio:.2f}x random), average drop "
            f"**{result.average_drop:.1f}%** keeping the top 15%. Removed pixels take the values of {baseline}. "
            f"This map is **{verdict} chance**.")
    else:
        st.info(f"Deletion cannot judge this map: the model already gives the image with its detail removed "
                f"{result.baseline_probability:.0%} {names[target]} (the intact scan: {result.full_probability:.0%}), "
                "so removing the pixels the map points at cannot lower the score, whatever the map shows. That is a "
                "finding about the model: it calls a featureless image this class (see its model card).")
    st.caption("If the map points at what the model uses, removing those pixels first makes the probability fall "
               "fast (low deletion curve) and revealing them first makes it rise fast (high insertion curve), "
               "compared with the dotted random orders.")


def uncertainty_column(loaded, names, key) -> None:
    st.markdown("**Uncertainty** (test-time augmentation)")
    store = st.session_state.setdefault(Keys.SCORED, {})
    if key not in store:
        st.caption("Predicts 16 slightly shifted and re-contrasted copies of the scan.")
        return
    tta, positive = store[key]["uncertainty"]
    st.metric(f"Mean P({names[positive]}) over 16 variants", f"{tta.mean:.1%}",
              help="Small shifts and contrast changes within the training augmentation's range; uncalibrated.")
    st.markdown(f"90% interval **{tta.low:.1%} – {tta.high:.1%}**; the Grad-CAM hot spot moves by "
                f"{100 * tta.hotspot_spread:.1f}% of the image side.")
    if tta.crosses_threshold:
        st.warning("The interval crosses the decision threshold: small changes to the image flip the prediction.")
    cal = loaded.info.get("calibration")
    if cal:
        st.caption(f"Calibration on the validation split: ECE {cal['ece_before']:.3f} before and "
                   f"{cal['ece_after']:.3f} after temperature scaling (T = {loaded.temperature:.2f}).")


def sanity_column(loaded, tensor, raw_map, method, target, layer) -> None:
    st.markdown("**Sanity check** (model randomisation)")
    st.caption("Layers are re-initialised from the output down on a copy of the model. A map that stays the same "
               "when the model is destroyed explains the image, not the model.")
    key = digest(loaded.path, tensor, raw_map, method, target, layer)
    checks = st.session_state.setdefault(Keys.SANITY, {})
    if key not in checks and st.button("Run the sanity check (a few seconds)", key=f"{Keys.SANITY_BUTTON}_{key[:12]}"):
        with st.spinner("Randomising layers and recomputing the map…"):
            checks[key] = sanity_check(loaded, tensor, method, target, layer, original=raw_map)
            while len(checks) > 8:
                checks.pop(next(iter(checks)))
    check = checks.get(key)  # kept with its map across reruns, this session only
    if check is None:
        return
    strip = st.columns(min(5, len(check.layers)))
    picks = np.linspace(0, len(check.layers) - 1, len(strip)).round().astype(int)
    for col, i in zip(strip, picks):
        col.image(np.clip(check.maps[i], 0, 1), clamp=True, width="stretch", caption=f"ρ {check.spearman[i]:.2f}")
    st.caption("Each thumbnail: the map with the layers down to "
               + ", ".join(check.layers[i] for i in picks) + " randomised; ρ is its rank correlation with the original.")
    if check.passes:
        st.success(f"{METHODS[method]} passes on this scan: with every layer randomised its map's rank "
                   f"correlation with the original is {check.spearman[-1]:.2f} (below {SANITY_LIMIT}).")
    else:
        st.error(f"{METHODS[method]} fails on this scan: with every layer randomised its map still correlates "
                 f"{check.spearman[-1]:.2f} with the original, so it mostly shows the image's structure.")


def measured_record(loaded) -> dict:
    """The model's Grad-CAM record against expert outlines (:func:`core.runs.read_localisation`), read once per
    model in a session, not on every change of opacity."""
    return remembered("model rate", digest(loaded.path), lambda: read_localisation(loaded.path))


def map_record_note(loaded) -> None:
    """For a scan without an expert outline: how often this model's maps land on the finding where it was
    measured, a warning when no more often than a fixed blob in the image centre (:func:`core.runs.record_sentence`)."""
    said = record_sentence(measured_record(loaded))
    if said:
        below, text = said
        (st.warning if below else st.info)(text, icon=":material/my_location:")


def outline_scores(scores: dict, baselines: dict, tolerance: str, *, unit: str = "mm",
                   overall: dict | None = None) -> None:
    """A map's localisation scores beside the three baselines', with how to read them; ``unit`` ("mm" or "pixels")
    is the one the peak's distance from the outline is measured in. ``overall``: the same method's pointing game
    over many outlined images (:func:`core.runs.read_localisation`), so that one image's hit or miss is read
    against the model's rate."""
    rows = {"this map": scores} | baselines
    distance = f"peak to outline ({unit})"
    st.dataframe({"": list(rows), **{loc.LABELS[m]: [f"{r[m]:.2f}" if r[m] == r[m] else "–" for r in rows.values()]
                                    for m in loc.METRICS},
                  distance: [f"{r['peak_distance']:.1f}" if r["peak_distance"] == r["peak_distance"] else "–"
                             for r in rows.values()]}, hide_index=True, width="stretch")
    not_beaten = [name for name, r in baselines.items() if scores["pointing_game"] <= r["pointing_game"]
                  and scores["energy"] <= r["energy"]]
    st.caption(f"{tolerance} Peak to outline: how far the map's hottest point lies from the outline, 0 on it, so a "
               "near miss shows as one. Energy: the share of the map's weight inside the outline. A map is only "
               "interesting where it does better than the baselines, which know nothing about the disease"
               + (f"; here it does no better than the {', '.join(not_beaten)} on both." if not_beaten else "."))
    if overall:
        st.caption(f"Over {overall['n']} outlined images this model never trained on, its Grad-CAM peak lands on the "
                   f"outline on **{overall['pointing']:.0%}** [{overall['low']:.0%}, {overall['high']:.0%}]"
                   + (f", a fixed blob in the image centre on {overall['centre']:.0%}" if overall.get("centre")
                      is not None else "")
                   + ": one image's hit or miss says little on its own (`python -m core explain-eval`, the model's "
                     f"`{overall['file']}`).")


def outline_ablation_panel(loaded, scan, frame, mask: np.ndarray, target: int, names: list[str],
                           scan_digest: str) -> None:
    """Does the prediction need the outlined finding? The frame as it is, with the outline filled in from its
    surroundings, and with a region of the same shape filled elsewhere (the control), each with P(class)."""
    from core.evaluation import outline_ablation
    from core.render import display_image

    if mask.shape != scan.shape[:2]:
        return
    result = remembered("ablation", digest(loaded.path, scan_digest, frame, mask, target),
                        lambda: outline_ablation(loaded, scan, mask, target, frame=frame))
    pixels = scan.frame(frame)
    st.markdown(f"**Does the prediction need the finding?** The outline filled in from the tissue around it (no "
                f"lesion left), and the same shape filled elsewhere as a control; P({names[target]}) for each:")
    columns = st.columns(3)
    versions = (("as scanned", pixels, result["p_intact"]),
                ("outline filled in", result["filled"]["outline"], result["p_outline"]),
                ("the same shape filled elsewhere", result["filled"]["control"], result["p_control"]))
    for column, (label, frame_pixels, p) in zip(columns, versions):
        if p is None:
            column.caption(f"{label}: no clear place of the same shape on the body, so no control here.")
            continue
        shown = display_image(frame_pixels, scan.window, scan.invert, voi=scan.voi)
        column.image(np.clip(shown, 0.0, 1.0), width="stretch", caption=f"{label}: P({names[target]}) = {p:.2f}")
    drop, control = result["p_intact"] - result["p_outline"], result["p_control"]
    moves = f"moves by {-drop:+.2f}" if round(abs(drop), 2) > 0 else "does not move (to two decimals)"
    if control is None:
        verdict = f"Without the finding, P({names[target]}) {moves}."
    elif drop > (result["p_intact"] - control) + 0.1:
        verdict = (f"Without the finding, P({names[target]}) falls by {drop:.2f}, more than without a region of the "
                   "same size elsewhere: on this image the prediction rests on the finding.")
    else:
        verdict = (f"Without the finding, P({names[target]}) {moves}, no more than without a region of "
                   "the same size elsewhere: on this image the prediction does not need the finding, whatever the "
                   "map shows.")
    st.caption(verdict + " A smooth fill is itself unusual, which is what the control measures. The same check over "
               "many outlined images: `python -m core explain-eval --masks ...` (its last table).")


def scored_results(loaded, tensor, raw_map, target, layer) -> dict:
    """The faithfulness and uncertainty already computed for this map in the session (for a report), else {}."""
    scored = st.session_state.get(Keys.SCORED, {}).get(digest(loaded.path, tensor, raw_map, target, layer))
    if not scored:
        return {}
    return {"faithfulness_result": scored["faithfulness"][0], "uncertainty_result": scored["uncertainty"][0]}


def trust_panel(loaded, tensor: np.ndarray, raw_map: np.ndarray, method: str, target: int, layer: str | None,
                names: list[str]) -> None:
    """Faithfulness, uncertainty and the sanity check for the map on screen, computed when asked."""
    st.subheader("How much to trust this map")
    key = digest(loaded.path, tensor, raw_map, target, layer)
    store = st.session_state.setdefault(Keys.SCORED, {})
    if key not in store and st.button("Score this map: faithfulness and uncertainty (about 1 s)",
                                      key=f"{Keys.SCORE_BUTTON}_{key[:12]}", type="primary"):
        with st.spinner("Removing and revealing pixels, predicting shifted copies…"):
            positive = 1 if len(names) == 2 else target
            threshold = loaded.threshold if len(names) == 2 else None
            store[key] = {
                "faithfulness": remembered("faithfulness", key, lambda: scored_faithfulness(loaded, tensor, raw_map, target)),
                "uncertainty": (remembered("uncertainty", digest(loaded.path, tensor, positive, layer),
                                           lambda: test_time_augmentation(loaded, tensor, positive, threshold=threshold,
                                                                          layer=layer or loaded.last_conv)), positive),
            }
            while len(store) > 16:
                store.pop(next(iter(store)))
    left, middle, right = st.columns(3)
    with left:
        faithfulness_column(loaded, tensor, raw_map, target, names, key)
    with middle:
        sanity_column(loaded, tensor, raw_map, method, target, layer)
    with right:
        uncertainty_column(loaded, names, key)
