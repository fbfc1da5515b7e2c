"""Privacy: what identifies a patient in an upload's header never reaches an output, a log or a file.

Real DICOM files whose headers carry identifiers (pydicom-data's RG1_UNCI, CT_small, MR_small,
and an MR_small whose identifiers are malformed, which pydicom would quote in its warnings) go
through every page of the dashboard and through ``python -m core predict --json --explain``.
Everything they produce is searched for the identifier values, read with pydicom directly:

- the page's whole element tree (main and sidebar: every element's protobuf, which holds all
  text, tables and figures) and every media file it stored (images, downloads);
- stdout and stderr (file descriptors, so C libraries too), and every log record at DEBUG;
- every file opened for writing by this process (a Python audit hook), and the home, working
  and temporary folders, which are fresh and must stay empty (but for the program text that
  TensorFlow's autograph writes to the temporary folder). The command line runs once more as a
  separate process with its own home, working and temporary folders.

Only the explicit "reveal" toggle shows identifiers, and only on the Scan page.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import pydicom
import pytest

from conftest import REPO, dicom_path
from core.io import IDENTIFYING_KEYWORDS, load_scan
from page_support import DEFAULT_MODELS
from ui.state import UPLOAD, Keys

pytestmark = pytest.mark.slow

APP = REPO / "app.py"
PAGES = ("scan", "preprocessing", "explain", "history", "about")
FILES = ("RG1_UNCI.dcm", "CT_small.dcm", "MR_small.dcm", "MR_small_malformed.dcm")


# ----------------------------------------------------------------------------- the files and their identifiers

def malformed() -> bytes:
    """MR_small with identifiers pydicom finds invalid, so its validation would quote them."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(dicom_path("MR_small.dcm"))
        ds.PatientName = "Quinnell^Rosalind^" + "M" * 70  # a component longer than PN allows
        ds.PatientID = "QR-77123-Z"
        ds.PatientBirthDate = "1951-07-14"  # not the DA format
        ds.StudyInstanceUID = "1.2.826.Quinnell.4711"  # letters in a UID
        ds.InstitutionName = "St Quinnell Infirmary"
        ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def file_bytes(name: str) -> bytes:
    return malformed() if name == "MR_small_malformed.dcm" else dicom_path(name).read_bytes()


def identifier_values(name: str) -> set[str]:
    """The distinctive values of the file's identifying attributes, read with pydicom.

    Short or generic values ("F", "0.000000", "185059") would be found by chance anywhere, and a value
    the de-identified header rightly shows for another attribute (InstitutionName "TOSHIBA" =
    Manufacturer) is not a leak; both are left out.
    """
    data = file_bytes(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        shown = " ".join(str(v) for v in load_scan(data, name).header.values()) + " " + name
        values = set()
        for keyword in IDENTIFYING_KEYWORDS:
            if keyword not in ds or ds[keyword].VR == "SQ" or ds[keyword].value in (None, ""):
                continue
            value = ds[keyword].value
            texts = [str(value)]
            if ds[keyword].VR == "PN":
                texts += [value.family_name, value.given_name]
            for text in (t.strip() for t in texts):
                has_letter = any(c.isalpha() for c in text)
                distinctive = (has_letter and len(text) >= 4) or len(text) >= 8  # names, IDs, dates, UIDs
                if distinctive and len(set(text)) > 2 and text not in shown:  # not "000000000"
                    values.add(text)
    return values


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    """The files' bytes, made before any test starts capturing (building one makes pydicom warn)."""
    return {name: file_bytes(name) for name in FILES}


@pytest.fixture(scope="module")
def identifiers() -> dict[str, set[str]]:
    found = {name: identifier_values(name) for name in FILES}
    for name, values in found.items():
        assert len(values) >= 6, (name, values)  # the search has something to find
    assert "CompressedSamples^RG1" in found["RG1_UNCI.dcm"] and "9RG1" in found["RG1_UNCI.dcm"]
    return found


def occurrences(values: set[str], outputs: dict[str, bytes]) -> list[tuple[str, str]]:
    """(value, where) for every identifier value found in any output."""
    return [(value, where) for where, blob in outputs.items() for value in sorted(values)
            if value.encode() in blob or value.encode("utf-16-le") in blob]


# ----------------------------------------------------------------------------- capturing every output

_WRITES: list[str] | None = None
_WRITES_LOCK = threading.Lock()


def _audit(event: str, args) -> None:
    if event != "open" or _WRITES is None:
        return
    path, mode, flags = (tuple(args) + (None, None))[:3]
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    if writing and not isinstance(path, int):
        with _WRITES_LOCK:
            _WRITES.append(os.fsdecode(path))


sys.addaudithook(_audit)  # cannot be removed; records only while a test asks it to


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()} {record.exc_text or ''}")


@pytest.fixture
def capture(tmp_path, monkeypatch, capfd):
    """Fresh home, working and temporary folders; every log record at DEBUG; every file write.

    TensorFlow and Keras are imported first: on its first import in a process Keras writes its own
    settings file (``~/.keras/keras.json``), which holds nothing of any upload.
    """
    global _WRITES
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    folders = {name: tmp_path / name for name in ("home", "cwd", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("TMPDIR", str(folders["tmp"]))
    monkeypatch.setattr(tempfile, "tempdir", str(folders["tmp"]))
    monkeypatch.chdir(folders["cwd"])

    handler = _Records()
    loggers = [logging.getLogger()] + [logging.getLogger(n) for n in list(logging.root.manager.loggerDict)]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(handler)
    _WRITES = []
    try:
        yield {"folders": folders, "logs": handler.lines, "writes": _WRITES, "capfd": capfd}
    finally:
        _WRITES = None
        for logger, level in levels.items():
            logger.setLevel(level)
            logger.removeHandler(handler)


def written_files(writes: list[str]) -> list[Path]:
    """Files this process opened for writing, apart from Python's own bytecode caches and /dev/null."""
    paths = {Path(p) for p in writes if "__pycache__" not in p and not p.endswith(".pyc") and p != os.devnull}
    return sorted(p for p in paths if not p.is_dir())


def generated_code(path: Path) -> bool:
    """TensorFlow's autograph writes the code it generates for traced functions to the temporary
    folder (``__autograph_generated_file*.py``): program text, never data."""
    return path.name.startswith("__autograph_generated_file") and path.suffix == ".py"


def upload_pieces(data: bytes, size: int = 64) -> list[bytes]:
    """Three stretches of an upload's pixel data (its last half): a written copy would contain them."""
    return [data[at:at + size] for at in (len(data) // 2, 3 * len(data) // 4, len(data) - size)]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- core.io itself

def test_loading_never_logs_or_warns_a_header_value(uploads, identifiers, capture):
    """pydicom quotes a malformed name, date or UID in its warnings and log records; loading
    (also with ``keep_identifiers``, also from eight threads at once) lets none of them out."""
    data = uploads["MR_small_malformed.dcm"]
    failures = []

    def load(keep: bool) -> None:
        try:
            load_scan(data, "upload.dcm", keep_identifiers=keep)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(False)
        load(True)
        threads = [threading.Thread(target=load, args=(i % 2 == 1,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not failures, failures
    out, err = capture["capfd"].readouterr()
    outputs = {"warnings": "\n".join(str(w.message) for w in caught).encode(), "stdout": out.encode(),
               "stderr": err.encode(), "logs": "\n".join(capture["logs"]).encode()}
    assert occurrences(identifiers["MR_small_malformed.dcm"], outputs) == []


# ----------------------------------------------------------------------------- the dashboard

def tree_outputs(at) -> bytes:
    """Everything the page shows: each element's protobuf (text, tables, figure JSON) and decoded values."""
    chunks = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None and hasattr(proto, "SerializeToString"):
            chunks.append(proto.SerializeToString())
        try:
            value = node.value
        except Exception:  # noqa: BLE001 - containers and some elements have no value
            value = None
        if value is not None:
            chunks.append((value.to_csv() if hasattr(value, "to_csv") else str(value)).encode())
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at.main)
    walk(at.sidebar)
    return b"\n".join(chunks)


def new_app(models_root, monkeypatch):  # noqa: F811 - the fixture's value
    from streamlit.testing.v1 import AppTest

    if models_root == DEFAULT_MODELS:
        monkeypatch.delenv("MEDXAI_MODELS", raising=False)
    else:
        monkeypatch.setenv("MEDXAI_MODELS", str(models_root))
    return AppTest.from_file(str(APP), default_timeout=300)


def run_every_page(at, name: str, data: bytes, reveal: bool = False) -> dict[str, bytes]:
    """Upload on the Scan page, then visit every page; the element tree of each."""
    at.session_state[Keys.REVEAL] = reveal
    at.run()
    at.file_uploader(key=Keys.UPLOADER).set_value((name, data, "application/dicom"))
    at.run()
    assert at.session_state[Keys.SOURCE] == UPLOAD
    outputs = {}
    for page in PAGES:
        if page != "scan":
            at.switch_page(f"pages/{page}.py").run()
        anyway = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
        if anyway:  # a scan outside the model's range: see the prediction and maps all the same
            anyway[0].click().run()
        assert not at.exception, (page, [e.value for e in at.exception])
        outputs[f"page {page}"] = tree_outputs(at)
    assert name.encode() in outputs["page scan"]  # the pages really showed this upload
    return outputs


def test_no_page_shows_logs_or_writes_an_identifier(models_root, monkeypatch, uploads, identifiers,  # noqa: F811
                                                     capture, media):
    report = {}
    for name in FILES:
        at = new_app(models_root, monkeypatch)
        outputs = run_every_page(at, name, uploads[name])
        assert "Predicted:" in outputs["page explain"].decode(errors="replace")
        out, err = capture["capfd"].readouterr()
        outputs |= {f"media {file_id}": data for file_id, data in media().items()}  # conftest's fixture
        outputs |= {"stdout": out.encode(), "stderr": err.encode(), "logs": "\n".join(capture["logs"]).encode()}
        outputs |= {f"file {p}": p.read_bytes() for p in written_files(capture["writes"]) if p.is_file()}
        report[name] = occurrences(identifiers[name], outputs)
    assert report == {name: [] for name in FILES}
    written = written_files(capture["writes"])
    assert [p for p in written if not generated_code(p)] == []  # nothing but TensorFlow's own code
    for p in written:
        for name in FILES:
            assert not any(piece in p.read_bytes() for piece in upload_pieces(uploads[name])), (p, name)
    for folder in ("home", "cwd"):
        assert files_under(capture["folders"][folder]) == {}, folder
    assert all(generated_code(Path(p)) for p in files_under(capture["folders"]["tmp"]))


def test_reveal_shows_identifiers_on_the_scan_page_only(models_root, monkeypatch, uploads,  # noqa: F811
                                                        identifiers, capture):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(dicom_path("RG1_UNCI.dcm"), stop_before_pixels=True)
    at = new_app(models_root, monkeypatch)
    outputs = run_every_page(at, "RG1_UNCI.dcm", uploads["RG1_UNCI.dcm"], reveal=True)
    scan_page = outputs.pop("page scan")
    for value in (str(ds.PatientName), str(ds.PatientID), str(ds.PatientBirthDate), str(ds.StudyInstanceUID)):
        assert value.encode() in scan_page, value
    assert "Identifiers are visible" in scan_page.decode(errors="replace")
    assert occurrences(identifiers["RG1_UNCI.dcm"], outputs) == []
    # Hidden again: gone from the Scan page too.
    at.switch_page("pages/scan.py")
    at.session_state[Keys.REVEAL] = False
    at.run()
    assert occurrences(identifiers["RG1_UNCI.dcm"], {"page scan": tree_outputs(at)}) == []


def test_hidden_attributes_are_listed_not_their_values(models_root, monkeypatch, identifiers):  # noqa: F811
    at = new_app(models_root, monkeypatch).run()
    at.file_uploader(key=Keys.UPLOADER).set_value(("CT_small.dcm", file_bytes("CT_small.dcm"), "application/dicom"))
    at.run()
    assert not at.exception and not at.error
    listed = [c.value for c in at.caption if c.value.startswith("Hidden identifying attributes")]
    assert len(listed) == 1
    for keyword in ("PatientName", "PatientID", "InstitutionName", "StudyInstanceUID", "private tags"):
        assert keyword in listed[0], keyword


# ----------------------------------------------------------------------------- the command line

def test_cli_predict_and_explain_in_process(models_root, uploads, identifiers, capture, tmp_path):  # noqa: F811
    from core.cli import main

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in FILES:
        (inputs / name).write_bytes(uploads[name])
    out_dir = capture["folders"]["cwd"] / "explained"
    capture["writes"].clear()
    code = main(["predict", "--model", str(models_root / "chest_xray"), "--json", "--explain", "gradcam",
                 "--out", str(out_dir), *(str(inputs / name) for name in FILES)])
    out, err = capture["capfd"].readouterr()
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["ok"] for r in records] == [True] * len(FILES)
    written = [p for p in written_files(capture["writes"]) if not generated_code(p)]
    assert written and all(p.parent == out_dir for p in written)  # only the overlays and maps asked for
    outputs = {"stdout": out.encode(), "stderr": err.encode(), "logs": "\n".join(capture["logs"]).encode()}
    outputs |= {f"file {p}": p.read_bytes() for p in written}
    for name in FILES:
        assert occurrences(identifiers[name], outputs) == [], name
    assert files_under(capture["folders"]["home"]) == {}
    assert all(generated_code(Path(p)) for p in files_under(capture["folders"]["tmp"]))


def test_cli_as_a_separate_process(models_root, uploads, identifiers, tmp_path):  # noqa: F811
    """``python -m core predict --json --explain`` with its own home, working and temporary folders."""
    folders = {name: tmp_path / name for name in ("home", "cwd", "tmp", "out", "inputs")}
    for folder in folders.values():
        folder.mkdir()
    for name in FILES:
        (folders["inputs"] / name).write_bytes(uploads[name])
    env = dict(os.environ, HOME=str(folders["home"]), TMPDIR=str(folders["tmp"]), TF_CPP_MIN_LOG_LEVEL="0",
               PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1")
    env.pop("MEDXAI_MODELS", None)
    result = subprocess.run(
        [sys.executable, "-m", "core", "predict", "--model", str(models_root / "chest_xray"), "--json",
         "--explain", "gradcam++", "--out", str(folders["out"]), *(str(folders["inputs"] / n) for n in FILES)],
        cwd=folders["cwd"], env=env, capture_output=True, timeout=300)
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    outputs = {"stdout": result.stdout, "stderr": result.stderr}
    outputs |= {f"file {p}": data for folder in ("home", "cwd", "tmp", "out") for p, data in
                files_under(folders[folder]).items()}
    for name in FILES:
        assert occurrences(identifiers[name], outputs) == [], name
    assert files_under(folders["cwd"]) == {}
    assert all(generated_code(Path(p)) for p in files_under(folders["tmp"]))
    # Keras may create its own settings file in a new home; nothing else appears there.
    assert all(Path(p).name == "keras.json" for p in files_under(folders["home"]))
    stems = {Path(n).stem for n in FILES}
    assert {Path(p).name for p in files_under(folders["out"])} == {
        f"{stem}_gradcampp.{ext}" for stem in stems for ext in ("png", "npy")}
