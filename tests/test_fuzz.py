"""Property-based fuzzing of ``core.io.load_scan`` (hypothesis) on mutated real files.

Real DICOM files (uncompressed, RLE, JPEG-LS, JPEG 2000, JPEG baseline, multi-frame) and real
PNG / JPEG / TIFF images are damaged the way transfers and broken exporters damage them: bytes
flipped, cut, inserted or deleted, and header fields (DICOM tags, PNG IHDR, JPEG SOF) given
random values. Whatever comes out, loading returns a usable :class:`Scan` or raises the
project's own :class:`ScanError` with one sentence, never anything else.

The runs are derandomised (a fixed seed, no example database) and each tries exactly its
share of :data:`FUZZ_CASES` inputs. Hypothesis also mixes in constants it finds in the project
modules already imported, so which inputs are tried can change with the tests run before.
One of them found that pylibjpeg-rle (Rust) panics on an RLE stream with one byte inserted, a
``BaseException`` that escaped ``load_scan``; it is now a fixed case in ``test_bad_input.py``.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import CHEST, DATA_DIR, dicom_bytes
from core.io import Scan, ScanError, load_scan
from core.preprocess import Pipeline

#: Examples per test; together they are the number of fuzz cases reported in the README.
EXAMPLES = {"dicom_bytes": 250, "dicom_fields": 150, "image_bytes": 150, "image_fields": 50}
FUZZ_CASES = sum(EXAMPLES.values())

DICOM_SEEDS = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm",
    "MR_small_jp2klossless.dcm", "emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm", "SC_rgb_jpeg_dcmtk.dcm",
)
#: Tags whose values steer decoding (little-endian tag bytes as they appear in the file).
DICOM_TAGS = {
    "TransferSyntaxUID": (0x0002, 0x0010), "SamplesPerPixel": (0x0028, 0x0002),
    "PhotometricInterpretation": (0x0028, 0x0004), "PlanarConfiguration": (0x0028, 0x0006),
    "NumberOfFrames": (0x0028, 0x0008), "Rows": (0x0028, 0x0010), "Columns": (0x0028, 0x0011),
    "PixelSpacing": (0x0028, 0x0030), "BitsAllocated": (0x0028, 0x0100), "BitsStored": (0x0028, 0x0101),
    "HighBit": (0x0028, 0x0102), "PixelRepresentation": (0x0028, 0x0103), "WindowCenter": (0x0028, 0x1050),
    "WindowWidth": (0x0028, 0x1051), "RescaleIntercept": (0x0028, 0x1052), "RescaleSlope": (0x0028, 0x1053),
    "PixelData": (0x7FE0, 0x0010),
}
SETTINGS = dict(deadline=None, derandomize=True, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
NAMES = st.sampled_from([None, "scan.dcm", "upload", "image.png"])
PIPELINE = Pipeline(input_size=16)


@lru_cache(maxsize=None)
def seed_dicom(name: str) -> bytes:
    return dicom_bytes(name)


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def image_seeds() -> dict[str, bytes]:
    """Real images: a chest JPEG and a brain MRI JPEG as stored, and the chest one re-encoded."""
    chest_path = CHEST / "NORMAL" / "IM-0115-0001.jpeg"
    brain = sorted((DATA_DIR / "brain_mri" / "Training" / "notumor").glob("*.jpg"))
    if not chest_path.is_file() or not brain:
        pytest.skip(f"shared data not found at {DATA_DIR}")
    chest = Image.open(chest_path).convert("L")
    small = chest.resize((64, 64))
    frames = [small, small.rotate(90), small.rotate(180)]
    return {
        "chest.jpeg": chest_path.read_bytes(),
        "brain.jpg": min(brain, key=lambda p: p.stat().st_size).read_bytes(),
        "chest.png": _encode(chest, "PNG"),
        "chest16.png": _encode(Image.fromarray(np.asarray(small, np.uint16) * 257), "PNG"),
        "palette.png": _encode(small.convert("P"), "PNG"),
        "float.tif": _encode(Image.fromarray(np.asarray(small, np.float32) / 255.0, mode="F"), "TIFF"),
        "frames.tif": _encode(frames[0], "TIFF", save_all=True, append_images=frames[1:]),
    }


# ----------------------------------------------------------------------------- mutations

#: (kind, where in [0, 1), whether to aim at the first kilobyte (headers), payload)
MUTATION = st.tuples(
    st.sampled_from(["flip", "truncate", "insert", "delete", "duplicate"]),
    st.floats(0.0, 1.0, exclude_max=True),
    st.booleans(),
    st.binary(min_size=1, max_size=32),
)


def mutate(data: bytes, mutations) -> bytes:
    for kind, where, head, payload in mutations:
        if not data:
            break
        span = min(len(data), 1024) if head else len(data)
        at = int(where * span)
        if kind == "flip":
            data = data[:at] + bytes([data[at] ^ (payload[0] or 0xFF)]) + data[at + 1:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + payload + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(payload) * 8:]
        else:  # a chunk repeated, as a broken transfer resends one
            data = data[:at] + data[at:at + len(payload) * 16] + data[at:]
    return data


def overwrite_after(data: bytes, marker: bytes, offset: int, value: bytes) -> bytes:
    """Overwrite the bytes ``offset`` after the first ``marker`` (unchanged if there is none)."""
    at = data.find(marker, 128 if data[128:132] == b"DICM" else 0)
    if at < 0:
        return data
    start = at + offset
    return data[:start] + value + data[start + len(value):]


def edit_dicom_field(data: bytes, keyword: str, value: bytes, into_length: bool) -> bytes:
    """Give a DICOM element new value bytes, or a new length field, in place in the raw file."""
    group, element = DICOM_TAGS[keyword]
    tag = struct.pack("<HH", group, element)
    # Explicit VR: tag (4), VR (2), length (2) for short VRs; implicit VR: tag (4), length (4).
    return overwrite_after(data, tag, 6 if into_length else 8, value[:2] if into_length else value)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def edit_png_header(data: bytes, width: int, height: int, depth: int, colour: int, interlace: int) -> bytes:
    """A new IHDR with a valid CRC, so the decoder trusts it and goes on to the pixel data."""
    if not data.startswith(b"\x89PNG") or data[12:16] != b"IHDR":
        return data
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, interlace)
    return data[:8] + png_chunk(b"IHDR", ihdr) + data[33:]


def edit_jpeg_header(data: bytes, height: int, width: int, components: int) -> bytes:
    """New height, width and component count in the first start-of-frame segment."""
    for marker in (b"\xff\xc0", b"\xff\xc1", b"\xff\xc2"):
        if data.find(marker) > 0:
            data = overwrite_after(data, marker, 5, struct.pack(">HH", height, width))
            return overwrite_after(data, marker, 9, bytes([components]))
    return data


# ----------------------------------------------------------------------------- the property

def check(data: bytes, name: str | None) -> None:
    """``load_scan`` returns a usable scan or raises ``ScanError`` with one sentence; nothing else."""
    try:
        scan = load_scan(data, name)
    except ScanError as err:
        message = str(err)
        assert message and "\n" not in message and message.endswith("."), message
        assert "Traceback" not in message and "Error" not in message, message
        return
    assert isinstance(scan, Scan)
    assert scan.frames.dtype == np.float32 and scan.frames.ndim in (3, 4) and scan.n_frames >= 1
    assert min(scan.shape) >= 1 and np.isfinite(scan.frames).all()
    assert np.isfinite(scan.window).all() and scan.window[1] > 0
    tensor = PIPELINE.scan_tensor(scan)  # whatever loads, the model can be given
    assert tensor.shape == (1, 16, 16, 1) and np.isfinite(tensor).all()


def test_mutated_dicom_bytes():
    counted = []  # inputs tried, checked against the planned count

    @settings(max_examples=EXAMPLES["dicom_bytes"], **SETTINGS)
    @given(st.sampled_from(DICOM_SEEDS), st.lists(MUTATION, min_size=1, max_size=4), NAMES)
    def run(seed, mutations, name):
        counted.append(seed)
        check(mutate(seed_dicom(seed), mutations), name)

    run()
    assert len(counted) >= EXAMPLES["dicom_bytes"]


def test_dicom_header_fields_given_random_values():
    counted = []  # inputs tried, checked against the planned count

    @settings(max_examples=EXAMPLES["dicom_fields"], **SETTINGS)
    @given(st.sampled_from(DICOM_SEEDS), st.lists(st.tuples(st.sampled_from(sorted(DICOM_TAGS)),
                                                            st.binary(min_size=1, max_size=8), st.booleans()),
                                                  min_size=1, max_size=3), NAMES)
    def run(seed, edits, name):
        counted.append(seed)
        data = seed_dicom(seed)
        for keyword, value, into_length in edits:
            data = edit_dicom_field(data, keyword, value, into_length)
        check(data, name)

    run()
    assert len(counted) >= EXAMPLES["dicom_fields"]


def test_mutated_image_bytes():
    counted = []  # inputs tried, checked against the planned count
    seeds = image_seeds()

    @settings(max_examples=EXAMPLES["image_bytes"], **SETTINGS)
    @given(st.sampled_from(sorted(seeds)), st.lists(MUTATION, min_size=1, max_size=4), NAMES)
    def run(seed, mutations, name):
        counted.append(seed)
        check(mutate(seeds[seed], mutations), name)

    run()
    assert len(counted) >= EXAMPLES["image_bytes"]


def test_image_headers_given_random_values():
    counted = []  # inputs tried, checked against the planned count
    seeds = image_seeds()
    sides = st.one_of(st.integers(0, 70), st.integers(0, 70_000), st.sampled_from([1, 2**31 - 1, 2**32 - 1]))

    @settings(max_examples=EXAMPLES["image_fields"], **SETTINGS)
    @given(st.sampled_from(sorted(seeds)), sides, sides, st.sampled_from([1, 2, 4, 8, 16, 3, 0]),
           st.sampled_from([0, 2, 3, 4, 6, 1, 7]), st.integers(0, 2), NAMES)
    def run(seed, width, height, depth, colour, interlace, name):
        counted.append(seed)
        data = seeds[seed]
        if seed.endswith(".png"):
            data = edit_png_header(data, width, height, depth, colour, interlace)
        elif seed.endswith((".jpg", ".jpeg")):
            data = edit_jpeg_header(data, height & 0xFFFF, width & 0xFFFF, colour)
        else:  # TIFF: the first IFD's ImageWidth / ImageLength values, wherever they sit
            data = overwrite_after(data, b"\x00\x01\x03\x00", 8, struct.pack("<H", width & 0xFFFF))
            data = overwrite_after(data, b"\x01\x01\x03\x00", 8, struct.pack("<H", height & 0xFFFF))
        check(data, name)

    run()
    assert len(counted) >= EXAMPLES["image_fields"]


def test_the_seeds_themselves_load():
    """The fuzzing starts from files that work, so what breaks is the mutation."""
    for name in DICOM_SEEDS:
        assert isinstance(load_scan(seed_dicom(name), name), Scan), name
    for name, data in image_seeds().items():
        assert isinstance(load_scan(data, name), Scan), name
