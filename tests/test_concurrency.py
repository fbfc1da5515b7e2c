"""Many users at once: one shared model, eight sessions, nobody sees or changes anyone else's work.

- Eight threads explain eight different real scans on ONE shared ``LoadedModel`` at the same
  moment, with different methods, classes and layers; each gets exactly what it gets alone,
  and the shared model predicts exactly as before (explanations work on clones).
- Eight dashboard sessions (AppTest, each with its own session state) upload eight different
  files and are run interleaved; each shows its own file and header only.
- A model folder whose SHA-256 does not match is refused with one sentence on the dashboard.
  The same refusal in ``core.model.load_model`` and the command line is tested in
  ``tests/test_model.py::test_tampered_model_file_is_refused``,
  ``tests/test_model.py::test_swapped_model_file_is_refused`` and
  ``tests/test_cli.py::test_tampered_model_is_bad_usage``.
"""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest

from conftest import REPO, dicom_bytes
from core.io import load_scan

pytestmark = pytest.mark.slow

APP = REPO / "app.py"
SESSIONS = 8


def session_files(data_dir, *, full_size: bool = True) -> list[tuple[str, bytes]]:
    """Eight different real scans: four DICOM (CR or colour SC, CT, MR, multi-frame MR) and four
    dataset images (chest radiographs at full or training resolution, brain MRIs)."""
    chest = data_dir / ("chest_xray_fullres" if full_size else "chest_xray/train")
    brain = data_dir / "brain_mri" / "Training"
    images = [sorted((chest / "NORMAL").glob("*.jpeg"))[0], sorted((chest / "PNEUMONIA").glob("*.jpeg"))[0],
              sorted((brain / "glioma").glob("*.jpg"))[0], sorted((brain / "pituitary").glob("*.jpg"))[0]]
    first = "RG1_UNCI.dcm" if full_size else "SC_rgb_jpeg_dcmtk.dcm"
    files = [(name, dicom_bytes(name)) for name in (first, "CT_small.dcm", "MR_small.dcm", "emri_small.dcm")]
    files += [(path.name, path.read_bytes()) for path in images]
    assert len({data for _, data in files}) == SESSIONS
    return files


#: What each session asks for: (method, class index, layer or None for the default, frame)
REQUESTS = [
    ("gradcam", 1, None, None), ("gradcam++", 0, None, None), ("scorecam", 1, None, None),
    ("layercam", 0, "conv2b", 2), ("smoothgrad", 1, None, None), ("gradcam", 0, "conv3a", None),
    ("layercam", 1, None, None), ("gradcam++", 1, "conv3b", None),
]
assert len(REQUESTS) == SESSIONS and sum(r[0] == "smoothgrad" for r in REQUESTS) == 1


def one_session(loaded, name: str, data: bytes, request) -> dict:
    from core.saliency import explain

    method, target, layer, frame = request
    scan = load_scan(data, name)
    tensor = loaded.pipeline.scan_tensor(scan, frame)
    result = explain(loaded, tensor, scan.shape, method=method, class_index=target, layer=layer)
    return {"name": name, "shape": scan.shape, "probs": loaded.predict(tensor)[0], "raw": result.raw,
            "on_scan": result.on_scan, "layer": result.layer}


def test_eight_sessions_explaining_at_once_get_what_they_get_alone(tiny_run, data_dir, chest_dir):
    from core.data import list_dataset, prepare_arrays
    from core.model import load_model

    loaded = load_model(tiny_run[0])
    files = session_files(data_dir)
    reference_batch, _ = prepare_arrays(list(list_dataset(chest_dir, limit_per_class=4).items), loaded.pipeline)
    before = loaded.predict(reference_batch)
    weights = [w.copy() for w in loaded.model.get_weights()]

    # All eight at once: a barrier releases the threads together.
    barrier = threading.Barrier(SESSIONS)
    together: list[dict | BaseException | None] = [None] * SESSIONS

    def run(i):
        try:
            barrier.wait(timeout=120)
            together[i] = one_session(loaded, *files[i], REQUESTS[i])
        except BaseException as exc:  # noqa: BLE001 - reported below, with the session
            together[i] = exc

    np.random.seed(7)  # SmoothGrad's noise; only one session draws from it
    threads = [threading.Thread(target=run, args=(i,), name=f"session-{i}") for i in range(SESSIONS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    failures = {i: r for i, r in enumerate(together) if isinstance(r, BaseException)}
    assert not failures, failures

    # Each alone, one after the other, from a cold cache.
    alone = []
    for i in range(SESSIONS):
        if REQUESTS[i][0] == "smoothgrad":
            np.random.seed(7)
        alone.append(one_session(loaded, *files[i], REQUESTS[i]))

    for i, (shared, single) in enumerate(zip(together, alone)):
        label = f"session {i}: {files[i][0]} {REQUESTS[i][0]}"
        assert shared["name"] == files[i][0] and shared["shape"] == single["shape"], label
        assert shared["on_scan"].shape == shared["shape"], label  # its own scan's geometry
        assert shared["layer"] == single["layer"], label
        np.testing.assert_allclose(shared["probs"], single["probs"], rtol=0, atol=1e-6, err_msg=label)
        np.testing.assert_allclose(shared["raw"], single["raw"], rtol=0, atol=1e-5, err_msg=label)
        np.testing.assert_allclose(shared["on_scan"], single["on_scan"], rtol=0, atol=1e-5, err_msg=label)
        assert float(shared["raw"].max()) > 0.0 or REQUESTS[i][0] != "smoothgrad", label
    # The sessions really differ from each other (nobody got a neighbour's map).
    assert len({r["raw"].tobytes() for r in together}) == SESSIONS

    # The shared model is untouched: same weights, still softmax, same predictions.
    assert all(np.array_equal(a, b) for a, b in zip(weights, loaded.model.get_weights()))
    assert loaded.model.get_layer("predictions").activation.__name__ == "softmax"
    np.testing.assert_array_equal(loaded.predict(reference_batch), before)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)


# ----------------------------------------------------------------------------- dashboard sessions

def plotly_title(at, key: str) -> str:
    charts = [c for c in at.get("plotly_chart") if c.proto.id.endswith(f"-{key}")]
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)["layout"]["title"]["text"]


def page_text(at) -> str:
    """Everything the page shows about the scan: all elements but the sample picker, whose
    options name the bundled DICOM samples for everyone."""
    parts = []

    def walk(node):
        if getattr(node, "type", None) == "selectbox" and getattr(node, "label", "") == "Pick a sample…":
            return
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "SerializeToString"):
            parts.append(proto.SerializeToString().decode("utf-8", errors="replace"))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return "\n".join(parts)


def test_eight_dashboard_sessions_each_see_only_their_own_scan(data_dir):
    from streamlit.testing.v1 import AppTest

    from ui.state import UPLOAD, Keys

    files = session_files(data_dir, full_size=False)  # the page's work per file is not what is tested here
    sessions = [AppTest.from_file(str(APP), default_timeout=120) for _ in range(SESSIONS)]
    # Interleaved: every session starts with its upload (put in its state as the uploader does,
    # which spares eight renderings of the default sample), then every session runs again in turn.
    for at, (name, data) in zip(sessions, files):
        at.session_state[Keys.UPLOAD] = {"name": name, "data": data}
        at.session_state[Keys.SOURCE] = UPLOAD
        at.run()
    for i, (at, (name, data)) in enumerate(zip(sessions, files)):
        at.run()
        assert not at.exception and not at.error, name
        assert at.session_state[Keys.SOURCE] == UPLOAD and at.session_state[Keys.UPLOAD]["name"] == name
        scan = load_scan(data, name)
        title = plotly_title(at, "scan_figure")
        assert title.startswith(name), (title, name)
        header = dict(zip(at.dataframe[0].value["Attribute"], at.dataframe[0].value["Value"]))
        assert header == {k: str(v) for k, v in scan.header.items()}, name
        text = page_text(at)
        others = [other for j, (other, _) in enumerate(files) if j != i]
        assert not [other for other in others if other in text], (name, others)


# ----------------------------------------------------------------------------- a tampered model

def test_dashboard_refuses_a_model_whose_sha256_does_not_match(tiny_run, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.model import MODEL_FILE

    root = tmp_path / "models"
    folder = shutil.copytree(tiny_run[0], root / "chest_xray")
    data = bytearray((folder / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / MODEL_FILE).write_bytes(bytes(data))
    monkeypatch.setenv("MEDXAI_MODELS", str(root))
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    at.switch_page("pages/explain.py").run()
    assert not at.exception
    assert len(at.error) == 1 and at.error[0].value.startswith("No model is available")
    message = "\n".join(c.value for c in at.caption if c.value.startswith("chest_xray:"))  # why it is unusable
    assert "does not match the SHA-256" in message and "refused" in message
