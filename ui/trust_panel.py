"""The Explain page's "how much to trust this" section: faithfulness, sanity check, uncertainty."""

from __future__ import annotations

import hashlib

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from core.saliency import METHODS
from core.trust import SANITY_LIMIT, faithfulness, sanity_check, test_time_augmentation
from ui.state import Keys

#: Trust results kept per session: the map on screen and the few before it.
MEMO_SIZE = 8


def _digest(*parts) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return h.hexdigest()


def remembered(what: str, key: str, compute):
    """``compute()``, remembered in this session for the same inputs.

    Every widget change reruns the page: without this, moving the opacity slider would score
    the unchanged map again (about 400 forward passes). Results stay in the session's memory
    only, like the scan they came from.
    """
    memo = st.session_state.setdefault(Keys.TRUST, {})
    if (what, key) in memo:
        memo[(what, key)] = memo.pop((what, key))  # most recently used last
        return memo[(what, key)]
    value = compute()
    memo[(what, key)] = value
    while len(memo) > MEMO_SIZE:
        memo.pop(next(iter(memo)))
    return value


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


def trust_panel(loaded, tensor: np.ndarray, raw_map: np.ndarray, method: str, target: int, layer: str | None,
                names: list[str]) -> None:
    """Scores for the map on screen; the slower checks run when asked."""
    st.subheader("How much to trust this map")
    left, middle, right = st.columns(3)
    with left:
        st.markdown("**Faithfulness** (deletion / insertion)")
        with st.spinner("Scoring the map…"):
            result = remembered("faithfulness", _digest(loaded.path, tensor, raw_map, target),
                                lambda: faithfulness(loaded, tensor, raw_map, target))
        st.plotly_chart(curves_figure(result), config={"displayModeBar": False}, key="faithfulness_curves")
        if result.informative:
            verdict = ("better than" if result.deletion_ratio > 1.1 and result.insertion_ratio > 1.1
                       else "not clearly better than")
            st.markdown(
                f"Deletion AUC **{result.deletion_auc:.3f}** ({result.deletion_ratio:.2f}x better than random), "
                f"insertion AUC **{result.insertion_auc:.3f}** ({result.insertion_ratio:.2f}x random), average drop "
                f"**{result.average_drop:.1f}%** keeping the top 15%. This map is **{verdict} chance**.")
        else:
            st.info(f"Not measurable on this scan: the model gives even the fully blurred image "
                    f"{result.baseline_probability:.0%} {names[target]} (the intact scan: {result.full_probability:.0%}), "
                    "so removing pixels cannot lower the score, whatever the map. Try explaining the other class.")
        st.caption("Read it like this: if the map points at what the model uses, removing those pixels first makes the "
                   "probability fall fast (low deletion curve) and revealing them first makes it rise fast (high "
                   "insertion curve), compared with the dotted random orders.")
    with middle:
        st.markdown("**Sanity check** (model randomisation)")
        st.caption("Layers are re-initialised from the output down on a copy of the model. A map that stays the same "
                   "when the model is destroyed explains the image, not the model.")
        key = _digest(loaded.path, tensor, raw_map, method, target, layer)
        checks = st.session_state.setdefault(Keys.SANITY, {})
        if key not in checks and st.button("Run the sanity check", key=f"{Keys.SANITY_BUTTON}_{method}"):
            with st.spinner("Randomising layers and recomputing the map…"):
                checks[key] = sanity_check(loaded, tensor, method, target, layer, original=raw_map)
                while len(checks) > MEMO_SIZE:
                    checks.pop(next(iter(checks)))
        check = checks.get(key)  # kept with its map across reruns, this session only
        if check is not None:
            strip = st.columns(min(5, len(check.layers)))
            picks = np.linspace(0, len(check.layers) - 1, len(strip)).round().astype(int)
            for col, i in zip(strip, picks):
                col.image(np.clip(check.maps[i], 0, 1), clamp=True, width="stretch",
                          caption=f"to {check.layers[i]}: ρ {check.spearman[i]:.2f}, SSIM {check.ssim[i]:.2f}")
            if check.passes:
                st.success(f"{METHODS[method]} passes on this scan: with every layer randomised its map's rank "
                           f"correlation with the original is {check.spearman[-1]:.2f} (below {SANITY_LIMIT}).")
            else:
                st.error(f"{METHODS[method]} fails on this scan: with every layer randomised its map still correlates "
                         f"{check.spearman[-1]:.2f} with the original, so it mostly shows the image's structure.")
    with right:
        st.markdown("**Uncertainty** (test-time augmentation)")
        with st.spinner("Predicting shifted and re-contrasted copies…"):
            threshold = loaded.threshold if len(names) == 2 else None
            positive = 1 if len(names) == 2 else target
            tta_layer = layer or loaded.last_conv
            tta = remembered("uncertainty", _digest(loaded.path, tensor, positive, threshold, tta_layer),
                             lambda: test_time_augmentation(loaded, tensor, positive, threshold=threshold,
                                                            layer=tta_layer))
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
