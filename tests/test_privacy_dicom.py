"""Privacy of the DICOM outputs: de-identified downloads and the command line's outputs name no patient.

Real files whose headers carry identifiers (pydicom-data's CT_small and MR_small, and an MR_small whose
identifiers are malformed, which pydicom and highdicom would quote in their errors and warnings) go
through what issue 17 adds:

- :func:`core.dicom_export.results_for_scan` with a salt, the Explain page's de-identified download:
  every object's Part 10 bytes and every member of their zip;
- ``python -m core predict --json --dicom-out DIR --deidentify`` on the files and on a ``dicomweb:``
  instance from the session's Orthanc: stdout and stderr (file descriptors), and every file written.

Each run's warnings and every log record at DEBUG are kept too, and a Python audit hook records every
file this process opens for writing; home, working and temporary folders are fresh. Everything is
searched for the identifier values read from the files with pydicom directly, as
``tests/test_privacy.py`` does for the pages. The only identifiers allowed in a CLI output are the UIDs
the user typed in a ``dicomweb:`` source (the record's ``file`` repeats the source); the written files
carry none at all.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import sys
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path

import pydicom
import pytest

from conftest import dicom_path
from core.io import IDENTIFYING_KEYWORDS, load_scan

pytestmark = pytest.mark.slow

FILES = ("CT_small.dcm", "MR_small.dcm", "MR_small_malformed.dcm")


# ----------------------------------------------------------------------------- the files and their identifiers

def malformed() -> bytes:
    """MR_small with identifiers pydicom finds invalid (as in tests/test_privacy.py)."""
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


def identifier_values(data: bytes, name: str) -> set[str]:
    """The distinctive values of the file's identifying attributes, read with pydicom (the same rule as
    tests/test_privacy.py: short or generic values and values the de-identified header rightly shows for
    another attribute are left out)."""
    values = set()
    with warnings.catch_warnings():  # pydicom converts (and warns about) a value when it is first read
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        shown = " ".join(str(v) for v in load_scan(data, name).header.values()) + " " + name
        for keyword in IDENTIFYING_KEYWORDS:
            if keyword not in ds or ds[keyword].VR == "SQ" or ds[keyword].value in (None, ""):
                continue
            value = ds[keyword].value
            texts = [str(value)] + ([value.family_name, value.given_name] if ds[keyword].VR == "PN" else [])
            for text in (t.strip() for t in texts):
                distinctive = (any(c.isalpha() for c in text) and len(text) >= 4) or len(text) >= 8
                if distinctive and len(set(text)) > 2 and text not in shown:
                    values.add(text)
    return values


@pytest.fixture(scope="module")
def uploads() -> dict[str, bytes]:
    return {name: file_bytes(name) for name in FILES}


@pytest.fixture(scope="module")
def identifiers(uploads) -> dict[str, set[str]]:
    found = {name: identifier_values(data, name) for name, data in uploads.items()}
    for name, values in found.items():
        assert len(values) >= 6, (name, values)  # the search has something to find
    assert "QR-77123-Z" in found["MR_small_malformed.dcm"]
    return found


def occurrences(values: set[str], outputs: dict[str, bytes]) -> list[tuple[str, str]]:
    """(value, where) for every identifier value found in any output."""
    return [(value, where) for where, blob in outputs.items() for value in sorted(values)
            if value.encode() in blob or value.encode("utf-16-le") in blob]


# ----------------------------------------------------------------------------- capturing every output

_WRITES: list[str] | None = None
_LOCK = threading.Lock()


def _audit(event: str, args) -> None:
    if event != "open" or _WRITES is None:
        return
    path, mode, flags = (tuple(args) + (None, None))[:3]
    writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
        mode is None and isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
    if writing and not isinstance(path, int):
        with _LOCK:
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
    """Fresh home, working and temporary folders; every log record at DEBUG; warnings; every file write."""
    global _WRITES
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    folders = {name: tmp_path / name for name in ("home", "cwd", "tmp")}
    for folder in folders.values():
        folder.mkdir()
    monkeypatch.setenv("HOME", str(folders["home"]))
    monkeypatch.setenv("TMPDIR", str(folders["tmp"]))
    monkeypatch.setenv("MEDXAI_SETTINGS", str(folders["home"] / "no-settings.toml"))
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
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield {"folders": folders, "logs": handler.lines, "writes": _WRITES, "capfd": capfd, "warnings": caught}
    finally:
        _WRITES = None
        for logger, level in levels.items():
            logger.setLevel(level)
            logger.removeHandler(handler)


def written_files(writes: list[str]) -> list[Path]:
    """Files opened for writing, but Python's bytecode caches, /dev/null and TensorFlow's generated code
    (autograph writes the program text of traced functions to the temporary folder)."""
    paths = {Path(p) for p in writes if "__pycache__" not in p and not p.endswith(".pyc") and p != os.devnull}
    return sorted(p for p in paths if not p.is_dir() and not p.name.startswith("__autograph_generated_file"))


def side_outputs(capture) -> dict[str, bytes]:
    out, err = capture["capfd"].readouterr()
    return {"stdout": out.encode(), "stderr": err.encode(), "logs": "\n".join(capture["logs"]).encode(),
            "warnings": "\n".join(str(w.message) for w in capture["warnings"]).encode()}


# ----------------------------------------------------------------------------- the page's download

@pytest.fixture(scope="module")
def loaded(tiny_run):
    from core.model import load_model

    return load_model(tiny_run[0])


def test_deidentified_downloads_carry_no_identifier(loaded, uploads, identifiers, capture):
    from core.dicom_export import results_for_scan
    from core.dicom_results import to_bytes, to_zip

    capture["writes"].clear()
    report, outputs_of = {}, {}
    for name, data in uploads.items():
        scan = load_scan(data, name)
        objects, _ = results_for_scan(loaded, scan, data, method="gradcam", salt=secrets.token_hex(16))
        outputs = {f"object {i} ({ds.SOPClassUID.name})": to_bytes(ds) for i, ds in enumerate(objects)}
        with zipfile.ZipFile(io.BytesIO(to_zip(objects))) as archive:
            outputs |= {f"zip member {member}": archive.read(member) for member in archive.namelist()}
        outputs_of[name] = outputs
    side = side_outputs(capture)
    for name in uploads:
        report[name] = occurrences(identifiers[name], outputs_of[name] | side)
    assert report == {name: [] for name in uploads}
    assert written_files(capture["writes"]) == []  # a download is built in memory only
    # The search finds what is there: the PACS copies of the same scan carry the patient's name.
    ct = uploads["CT_small.dcm"]
    pacs_copy, _ = results_for_scan(loaded, load_scan(ct, "CT_small.dcm"), ct, method="gradcam")
    assert occurrences(identifiers["CT_small.dcm"], {"sr": to_bytes(pacs_copy[0])})


# ----------------------------------------------------------------------------- the command line

def test_cli_dicom_out_deidentified_names_no_one(tiny_run, orthanc, pacs, uploads, identifiers, capture, tmp_path,
                                                 monkeypatch):
    from core.cli import main

    monkeypatch.setenv("MEDXAI_DICOMWEB_USER", orthanc.user)
    monkeypatch.setenv("MEDXAI_DICOMWEB_PASSWORD", orthanc.password)
    ct = pacs["CT_small.dcm"]
    source = (f"dicomweb:{orthanc.url}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}"
              f"/instances/{ct.SOPInstanceUID}")
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("MR_small.dcm", "MR_small_malformed.dcm"):
        (inputs / name).write_bytes(uploads[name])
    out_dir = capture["folders"]["cwd"] / "results"
    capture["writes"].clear()
    argv = ["predict", "--model", str(tiny_run[0]), "--json", "--dicom-out", str(out_dir), "--deidentify",
            source, str(inputs / "MR_small.dcm"), str(inputs / "MR_small_malformed.dcm")]
    code = main(argv)
    side = side_outputs(capture)
    assert code == 0, side["stderr"].decode()
    records = [json.loads(line) for line in side["stdout"].decode().splitlines()]
    assert [r["ok"] for r in records] == [True, True, True] and all(len(r["dicom"]) == 4 for r in records)

    written = written_files(capture["writes"])
    assert written and all(p.parent == out_dir for p in written)  # only the files asked for
    files = {f"file {p.name}": p.read_bytes() for p in written}
    typed = " ".join(argv)
    for name in FILES:
        assert occurrences(identifiers[name], files) == [], name
        shown = {value for value in identifiers[name] if value not in typed}  # the source's UIDs were typed
        assert occurrences(shown, side) == [], name
    assert orthanc.password.encode() not in side["stdout"] + side["stderr"] + side["logs"]
    assert [p for p in capture["folders"]["home"].rglob("*") if p.is_file()] == []
