"""The scan a session is looking at: samples, the upload, loading it once, the frame in view.

Nothing here writes an upload to disk: uploaded bytes live in ``st.session_state`` of the session
that uploaded them, and loaded scans in that session's own memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import streamlit as st

from core.io import Scan, ScanError, load_scan
from ui.state import UPLOAD, Keys

ROOT = Path(__file__).resolve().parent.parent


SAMPLES_DIR = ROOT / "assets" / "samples"


@dataclass(frozen=True)
class Sample:
    label: str
    path: Path
    true_label: str | None = None
    model: str | None = None  # the task of the model this sample suits
    mask: Path | None = None  # an expert outline of the finding, same size as the image
    spacing: tuple[float, float] | None = None  # mm per pixel, for files that do not state it
    tags: tuple[str, ...] = ()
    source: str = ""  # the sample set's citation and licence


DICOM_SAMPLES = (
    ("Chest radiograph, CR, MONOCHROME1 (RG1_UNCI.dcm)", "RG1_UNCI.dcm", "chest_xray"),
    ("Same radiograph, JPEG 2000 lossless (RG1_J2KR.dcm)", "RG1_J2KR.dcm", "chest_xray"),
    ("CT slice in Hounsfield units (CT_small.dcm)", "CT_small.dcm", None),
    ("MR slice (MR_small.dcm)", "MR_small.dcm", "brain_mri"),
    ("Multi-frame MR, 10 frames (emri_small.dcm)", "emri_small.dcm", "brain_mri"),
    ("Enhanced CT, 2 frames, in Hounsfield units (eCT_Supplemental.dcm)", "eCT_Supplemental.dcm", None),
)


def sample_sets(root: Path = SAMPLES_DIR) -> list[dict]:
    """The ``samples.json`` of every curated sample set: title, licence, citation and cases."""
    import json

    return [json.loads(listing.read_text()) for listing in sorted(root.glob("*/samples.json"))]


def curated_samples(root: Path = SAMPLES_DIR) -> list[Sample]:
    """The sample and teaching cases shipped in ``assets/samples/<set>/samples.json``, each set with its
    licence and citation (``LICENSE.md`` beside it), so a fresh install shows every model."""
    import json

    found = []
    for listing in sorted(root.glob("*/samples.json")):
        spec = json.loads(listing.read_text())  # (read again beside its folder: the files' paths are relative)
        source = f"{spec.get('citation', '')} Licence {spec.get('licence', 'unknown')}.".strip()
        for item in spec.get("samples", []):
            found.append(Sample(
                label=item["label"], path=listing.parent / item["file"], true_label=item.get("true_label"),
                model=item.get("task"), mask=listing.parent / item["mask"] if item.get("mask") else None,
                spacing=tuple(item["spacing"]) if item.get("spacing") else None, tags=tuple(item.get("tags", ())),
                source=source))
    return found


@st.cache_data(show_spinner=False)
def samples() -> list[Sample]:
    """Real DICOM files from pydicom-data, then the curated cases of every model."""
    from pydicom.data import get_testdata_file

    found = []
    for label, name, model in DICOM_SAMPLES:
        path = get_testdata_file(name)
        if path:
            found.append(Sample(label, Path(path), None, model))
    return found + curated_samples()


def sample_by_label(label: str) -> Sample | None:
    return next((s for s in samples() if s.label == label), None)


@dataclass(frozen=True)
class Chosen:
    name: str
    data: bytes
    true_label: str | None
    model: str | None  # the task of the model a sample suits
    mask: bytes | None = None  # the expert outline's PNG, when there is one
    spacing: tuple[float, float] | None = None
    source: str = ""
    files: tuple = ()  # (name, bytes) of every file of a series (several files, a zip, or a PACS series)
    pacs: object | None = None  # the DICOMweb source it was retrieved from, for sending results back

    known_digest: str | None = None  # computed once where the bytes arrive (a 2k radiograph's 7 MB: ~20 ms)

    @property
    def digest(self) -> str:
        """A short digest of the bytes: names this scan in widget keys and caches."""
        return self.known_digest or digest_of(self.data, self.files)

    @property
    def is_series(self) -> bool:
        return bool(self.files)


def digest_of(data: bytes, files=()) -> str:
    """A short digest of a scan's bytes (and of every file of a series): names it in widget keys and caches."""
    h = hashlib.sha256(data)
    for name, content in files:
        h.update(name.encode() + hashlib.sha256(content).digest())
    return h.hexdigest()[:16]


@st.cache_resource(show_spinner=False, max_entries=64)
def _sample_digest(path: str) -> str:
    return digest_of(_read_sample(path))


def chosen_input() -> Chosen | None:
    """The upload or sample picked on the Scan page (the first sample until then)."""
    source = st.session_state.get(Keys.SOURCE)
    if source == UPLOAD and st.session_state.get(Keys.UPLOAD):
        upload = st.session_state[Keys.UPLOAD]
        if "digest" not in upload:
            upload["digest"] = digest_of(upload.get("data", b""), upload.get("files", ()))
        return Chosen(upload["name"], upload.get("data", b""), None, None, files=tuple(upload.get("files", ())),
                      known_digest=upload["digest"],
                      pacs=upload.get("pacs"))
    sample = sample_by_label(source) if source else None
    if sample is None and samples():
        sample = samples()[0]
    if sample is None:
        return None
    mask = _read_sample(str(sample.mask)) if sample.mask else None
    return Chosen(sample.path.name, _read_sample(str(sample.path)), sample.true_label, sample.model, mask,
                  sample.spacing, sample.source, known_digest=_sample_digest(str(sample.path)))


@st.cache_resource(show_spinner=False, max_entries=32)  # bytes are immutable: one shared copy, not one per run
def _read_sample(path: str) -> bytes:
    return Path(path).read_bytes()


def current_scan() -> tuple[Chosen | None, Scan | None]:
    """Load the chosen input once per session; a bad file shows one sentence and returns no scan."""
    chosen = chosen_input()
    if chosen is None:
        st.info("Upload a scan on the **Scan** page to begin.")
        return None, None
    reveal = bool(st.session_state.get(Keys.REVEAL, False))
    cache = st.session_state.setdefault(Keys.SCANS, {})
    key = (chosen.digest, reveal, st.session_state.get(Keys.SERIES, 0) if chosen.is_series else 0)
    if key not in cache:
        try:
            with st.spinner("Reading the scan…"):
                cache.clear()  # one scan at a time per session keeps memory bounded
                scan = series_scan(chosen, reveal) if chosen.is_series else load_scan(chosen.data, chosen.name,
                                                                                        keep_identifiers=reveal)
                if scan.spacing is None and chosen.spacing:  # a sample's known pixel size (its set says so)
                    scan = dataclasses.replace(scan, spacing=chosen.spacing)
                cache[key] = scan
        except ScanError as err:
            st.error(f"**{chosen.name}** cannot be used: {err}")
            return chosen, None
    return chosen, cache[key]


def series_scan(chosen: Chosen, reveal: bool) -> Scan:
    """The chosen series of a multi-file upload as one scan, slices in order (:func:`core.series.group_series`);
    every series found, and what ordering them took, kept for the page in the session."""
    from core.series import SeriesError, group_series

    found, notes = group_series(list(chosen.files), keep_identifiers=reveal)
    if not found:
        raise SeriesError(notes[0] if notes else "None of these files is an image series; upload DICOM slices.")
    index = min(int(st.session_state.get(Keys.SERIES, 0)), len(found) - 1)
    st.session_state[Keys.SERIES_FOUND] = {"for": chosen.digest, "labels": [s.description for s in found],
                                           "notes": list(notes) + list(found[index].notes),
                                           "ordered_by": found[index].ordered_by,
                                           "positions": found[index].positions, "names": found[index].names}
    return found[index].scan


def series_found(chosen: Chosen) -> dict | None:
    """What :func:`series_scan` found for this upload (labels of every series, notes), or None."""
    found = st.session_state.get(Keys.SERIES_FOUND)
    return found if chosen.is_series and found and found["for"] == chosen.digest else None


def source_bytes(chosen: Chosen, frame: int) -> bytes:
    """The file the scan in view was read from: the upload itself, or the slice of a series in view."""
    found = series_found(chosen)
    if found:
        by_name = dict(chosen.files)
        return by_name.get(found["names"][frame], b"")
    return chosen.data


def frame_index(scan: Scan) -> int:
    """The frame chosen for this scan (the middle one by default)."""
    index = st.session_state.get(Keys.FRAME)
    if index is None or not 0 <= index < scan.n_frames:
        return scan.default_frame
    return int(index)


def display_window(chosen: Chosen, scan: Scan) -> tuple[tuple[float, float], bool, object]:
    """(window, invert, voi) the person chose on the Scan page for this scan, else the header's."""
    if st.session_state.get(Keys.WINDOW_FOR) == chosen.digest and st.session_state.get(Keys.WINDOW):
        window = tuple(st.session_state[Keys.WINDOW])
        voi = scan.voi if window == tuple(scan.window) else None
        return window, bool(st.session_state.get(Keys.INVERT, scan.invert)), voi
    return scan.window, scan.invert, scan.voi


def shrunk_frame(chosen: Chosen, scan: Scan, frame: int, max_side: int):
    """The frame in native units shrunk for the screen (:func:`core.render.downsample`), computed once per
    scan and frame in this session: a change of window then costs milliseconds, not a 4-megapixel pass."""
    from core.render import downsample

    memo = st.session_state.setdefault(Keys.SHRUNK, {})
    key = (chosen.digest, frame, max_side)
    if key not in memo:
        memo.clear() if len(memo) >= 8 else None
        memo[key] = downsample(scan.frame(frame), max_side)
    return memo[key]
