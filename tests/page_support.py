"""Helpers for the page tests (AppTest) and the browser test: models, uploads, figures (fixtures: conftest.py).

The dashboard is tested against the real default models in ``assets/models`` when both are
there (what a user gets). Until they are, a tiny model per task is trained once per session
on real images and the app is pointed at it through ``MEDXAI_MODELS``.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

APP = REPO / "app.py"
DEFAULT_MODELS = REPO / "assets" / "models"
TASK_DATA = {"chest_xray": ("chest_xray", "train"), "brain_mri": ("brain_mri", "Training"),
             "fracture": ("fracatlas", "images")}
#: Same size as ``conftest.TINY`` but fewer images: the pages only need a real, working model.
TINY_PAGE_MODEL = {"epochs": 1, "input_size": 32, "width": 8, "limit_per_class": 12}

_TINY_ROOT: list[Path] = []  # built once per session, however many test modules ask


def real_models_present(root: Path = DEFAULT_MODELS) -> bool:
    return all((root / task / name).is_file() for task in TASK_DATA for name in ("model.json", "model.keras"))


def tiny_models(data_dir: Path, tmp_path_factory) -> Path:
    """A models folder with a tiny real model per task (trained once per session)."""
    if not _TINY_ROOT:
        from core.train import TrainConfig, train

        root = tmp_path_factory.mktemp("page_models")
        for task, parts in TASK_DATA.items():
            train(TrainConfig(task=task, data=str(data_dir.joinpath(*parts)), out=str(root / task),
                              **TINY_PAGE_MODEL), log=lambda *_: None)
        _TINY_ROOT.append(root)
    return _TINY_ROOT[0]


def loaded_model(models_root: Path, task: str = "chest_xray"):
    from core.model import load_model

    return load_model(models_root / task)


# ----------------------------------------------------------------------------- driving the app

def upload(at, name: str, data: bytes, mime: str = "application/octet-stream"):
    """Upload ``data`` through the Scan page's file uploader and rerun."""
    from ui.state import Keys

    at.file_uploader(key=Keys.UPLOADER).set_value((name, data, mime))
    return at.run()


def go(at, page: str):
    """Switch to ``pages/<page>.py`` and run it."""
    return at.switch_page(f"pages/{page}.py").run()


def assert_clean(at) -> None:
    """No exception element and no error message on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def widget(collection, label: str):
    """The widget of a collection (e.g. ``at.selectbox``) with this label."""
    found = [w for w in collection if w.label == label]
    assert len(found) == 1, f"expected one widget labelled {label!r}, found {[w.label for w in collection]}"
    return found[0]


def markdown_text(at) -> str:
    return "\n".join(m.value for m in at.markdown)


def caption_text(at) -> str:
    return "\n".join(c.value for c in at.caption)


# ----------------------------------------------------------------------------- figures

def figure(at, key: str) -> dict:
    """The plotly figure (as JSON) of the ``st.plotly_chart`` with this key."""
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1, f"expected one plotly chart with key {key!r}, found {len(charts)}"
    return json.loads(charts[0].proto.spec)


def decode(value) -> np.ndarray:
    """A plotly array: a list, or the typed-array form ``{"dtype", "bdata", "shape"}``."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        if shape is not None:
            shape = [int(s) for s in str(shape).split(",")] if isinstance(shape, str) else list(shape)
            array = array.reshape(shape)
        return array
    return np.asarray(value)


def _trace_pixels(trace: dict) -> np.ndarray:
    """An image trace's pixels: its PNG data URI decoded (RGB, or RGBA for a layer), or its ``z``."""
    from PIL import Image

    if "source" not in trace:
        return decode(trace["z"])
    header, payload = trace["source"].split(",", 1)
    assert header == "data:image/png;base64", header
    with Image.open(io.BytesIO(base64.b64decode(payload))) as image:
        return np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"))


def image_trace(spec: dict) -> tuple[np.ndarray, dict]:
    """The pixels (rows, cols, 3) a figure shows and its first image trace: the picture, with every further
    image trace (an RGBA layer: a map, an outline) blended over it at its opacity, as the browser draws them
    (:func:`core.render.composite`)."""
    from core.render import composite

    traces = [t for t in spec["data"] if t.get("type") == "image"]
    assert traces, "expected an image trace"
    base = _trace_pixels(traces[0])
    if len(traces) == 1:
        return base, traces[0]
    layers = []
    for layer in traces[1:]:
        pixels = _trace_pixels(layer)
        assert pixels.shape[:2] == base.shape[:2] and pixels.shape[2] == 4, "a layer is an RGBA picture of the same size"
        assert (layer.get("x0", 0), layer.get("y0", 0), layer.get("dx"), layer.get("dy")) == (
            traces[0].get("x0", 0), traces[0].get("y0", 0), traces[0].get("dx"), traces[0].get("dy")), "layers align"
        layers.append((pixels, layer.get("opacity", 1.0)))
    return composite(base[..., :3], layers), traces[0]


def assert_image_geometry(spec: dict, shape: tuple[int, int]) -> np.ndarray:
    """The figure shows an image of ``shape`` (rows, cols) in its own geometry; returns the pixels.

    The axes span exactly the scan's pixel coordinates, y down and locked to x, and the
    (possibly downsampled) picture covers them with the scan's aspect ratio.
    """
    rows, cols = shape
    z, trace = image_trace(spec)
    step_x, step_y = trace.get("dx", 1), trace.get("dy", 1)
    assert step_x == step_y, "the image is stretched on one axis"
    assert (trace.get("x0", 0), trace.get("y0", 0)) == (0, 0)
    assert z.shape[:2] == (-(-rows // step_y), -(-cols // step_x)), (z.shape, shape, step_x)
    layout = spec["layout"]
    assert layout["xaxis"]["range"] == [0, cols]
    assert layout["yaxis"]["range"] == [rows, 0]
    assert layout["yaxis"]["scaleanchor"] == "x"
    return z


# ----------------------------------------------------------------------------- files and text

def png_bytes_of(path: Path) -> bytes:
    """A real image re-encoded as PNG in memory."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(path).save(buffer, format="PNG")
    return buffer.getvalue()


def first_image(folder: Path) -> Path:
    found = sorted(folder.glob("*.jp*g"))
    assert found, f"no JPEG in {folder}"
    return found[0]


def is_one_sentence(text: str) -> bool:
    """One sentence: ends with a full stop and no further sentence starts inside it."""
    text = text.strip()
    return text.endswith((".", "!")) and not re.search(r"[.!?]\s+[A-Z]", text[:-1]) and "\n" not in text
