"""Every ``st.session_state`` key the app uses, named in one place.

Keys of widgets whose value a page also reads elsewhere have a fixed name: without a fixed key a
widget's identity changes with its default, so every second change a user made was lost.
Scan-specific widgets append the scan's digest (:func:`scan_key`): a new scan starts from its own defaults.
"""

from __future__ import annotations


class Keys:
    SOURCE = "source"  # label of the chosen sample, or UPLOAD
    UPLOAD = "upload"  # dict(name=..., data=...) of the last upload, in memory only
    UPLOADER = "uploader_widget"
    MODEL = "model_folder"  # {scan digest: folder of the model in use} (the suggested one until changed)
    MODEL_WIDGET = "model_widget"
    ROUTES = "routes"  # {(scan digest, model folders): core.routing.Route}, this session only
    FRAME = "frame"
    PRESET = "window_preset"
    WINDOW = "window"  # (centre, width) chosen for display
    WINDOW_FOR = "window_for"  # digest of the scan the display window was chosen for
    INVERT = "invert_display"
    REVEAL = "reveal_identifiers"
    SCANS = "loaded_scans"  # digest -> Scan, this session only
    METHOD = "method"
    TARGET = "target_class"
    LAYER = "layer"
    OPACITY = "opacity"
    COLORMAP = "colormap"
    TRUST = "trust_scores"  # (what, inputs' digest) -> faithfulness / uncertainty result, this session only
    SANITY = "sanity_checks"  # (map digest) -> sanity check result, this session only
    FRAME_WIDGET = "frame_widget"
    PRESET_WIDGET = "window_preset_widget"
    CENTRE_WIDGET = "window_centre_widget"
    WIDTH_WIDGET = "window_width_widget"
    INVERT_WIDGET = "invert_widget"
    METHOD_WIDGET = "method_widget"
    TARGET_WIDGET = "target_widget"
    LAYER_WIDGET = "layer_widget"
    OPACITY_WIDGET = "opacity_widget"
    COLORMAP_WIDGET = "colormap_widget"
    SANITY_BUTTON = "sanity_button"


UPLOAD = "Your upload"


def scan_key(key: str, digest: str, *extra) -> str:
    """A widget key tied to one scan (and optionally more context), e.g. ``frame_widget_3fa2…``."""
    return "_".join([key, digest, *map(str, extra)])
