"""Maps for the Explain page: computed once per session and input, drawn at screen size.

Every widget change reruns part of the page; without these memos moving the opacity slider would
recompute the map, and a change of method would redo every other method's map. Results stay in the
session's memory only, like the scan they come from, and are bounded.
"""

from __future__ import annotations

import hashlib

import numpy as np
import streamlit as st

from core import localisation as loc
from core.render import draw_outline, heat_rgba, outline_rgba, overlay, shrink_mask
from core.saliency import to_geometry
from ui.figures import Picture
from ui.state import Keys

#: Results kept per session and kind: the maps on screen and the few before them.
MEMO_SIZE = 16


def digest(*parts) -> str:
    """A short key for arrays and values (a model folder, a tensor, a method, ...)."""
    h = hashlib.sha1()
    for part in parts:
        h.update(np.ascontiguousarray(part).tobytes() if isinstance(part, np.ndarray) else repr(part).encode())
    return h.hexdigest()


def remembered(what: str, key: str, compute, size: int = MEMO_SIZE):
    """``compute()``, remembered in this session for the same ``(what, key)``; least recently used first out."""
    memo = st.session_state.setdefault(Keys.TRUST, {})
    if (what, key) in memo:
        memo[(what, key)] = memo.pop((what, key))  # most recently used last
        return memo[(what, key)]
    value = compute()
    memo[(what, key)] = value
    kinds = [k for k in memo if k[0] == what]
    for stale in kinds[:max(0, len(kinds) - size)]:
        memo.pop(stale)
    return value


def raw_map(loaded, tensor: np.ndarray, method: str, target: int, layer: str | None) -> np.ndarray:
    """One method's map of the exact tensor the model received, on its own grid (remembered)."""
    return remembered("map", digest(loaded.path, loaded.map_score, tensor, method, target, layer),
                      lambda: loaded.explainer.saliency(tensor, method, target, layer))


def display_picture(scan_digest: str, frame: int, window, invert: bool, voi, compute) -> tuple[np.ndarray, Picture]:
    """The frame as shown (``compute()``, e.g. :func:`core.render.display_pixels` at screen size) and its PNG,
    made once per scan, frame, window and inversion in this session: going back to a window, or a rerun
    that changes something else, costs nothing. Few are kept: each is a screen-sized image."""
    def make():
        shown = compute()
        return shown, Picture.of(shown)

    key = digest(scan_digest, int(frame), tuple(float(v) for v in window), bool(invert), voi is not None)
    return remembered("display", key, make, size=4)


def heat_layer(raw: np.ndarray, shape: tuple[int, int], colormap: str) -> Picture:
    """A map as an RGBA layer of ``shape`` (:func:`core.render.heat_rgba`), encoded once per map and colour map."""
    return remembered("heat", digest(raw, tuple(shape), colormap),
                      lambda: Picture.of(heat_rgba(to_geometry(raw, tuple(shape)), colormap=colormap)), size=8)


def outline_layer(mask: np.ndarray, shape: tuple[int, int]) -> Picture:
    """The expert outline as an RGBA layer of ``shape``, drawn as :func:`overlay_picture` draws it."""
    return remembered("outline", digest(mask, tuple(shape)), lambda: Picture.of(outline_rgba(
        shrink_mask(mask, tuple(shape)), colour=(0, 255, 0), thickness=max(1, round(max(shape) / 400)))), size=4)


def overlay_picture(background: np.ndarray, raw: np.ndarray, *, opacity: float, colormap: str,
                    outline: np.ndarray | None = None) -> np.ndarray:
    """The map blended over a background of any size (screen or full resolution), with the expert outline
    drawn on it pixel for pixel when given (a full-resolution mask is shrunk to the background's size)."""
    shape = background.shape[:2]
    picture = overlay(background, to_geometry(raw, shape), opacity=opacity, colormap=colormap)
    if outline is not None:
        picture = draw_outline(picture, shrink_mask(outline, shape), colour=(0, 255, 0),
                               thickness=max(1, round(max(shape) / 400)))
    return picture


def localisation(raw: np.ndarray, mask: np.ndarray, spacing) -> dict:
    """The four localisation scores of a map against an expert outline, at the scan's full resolution, and how far
    its peak lies from the outline (:func:`core.localisation.outline_scores`)."""
    return remembered("localisation", digest(raw, mask, spacing),
                      lambda: loc.outline_scores(to_geometry(raw, mask.shape), mask, spacing=spacing))


def baseline_scores(scan_digest: str, shown_full: np.ndarray, mask: np.ndarray, spacing) -> dict[str, dict]:
    """The centre, intensity and random baselines' scores on this scan (remembered per scan and outline)."""
    import zlib

    def compute():
        shape = mask.shape
        priors = {"centre prior": loc.centre_prior(shape, spacing=spacing),
                  "image intensity": loc.intensity_prior(shown_full),
                  "random smooth map": loc.random_smooth_map(shape, seed=zlib.crc32(scan_digest.encode()))}
        return {name: loc.outline_scores(prior, mask, spacing=spacing) for name, prior in priors.items()}

    return remembered("baselines", digest(scan_digest, mask, spacing), compute)
