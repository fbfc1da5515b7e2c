"""Bad input: every file a workstation might export gives one clear sentence, or loads with a note.

Each case is checked three ways, as a user meets it: ``core.io.load_scan``, ``python -m core
predict --json`` (``ok: false`` with the same sentence, exit code 1, no traceback), and the
dashboard's Scan page (exactly one ``st.error`` with the sentence, no exception, and the next
good upload works). The files are real (pydicom-data, the shared chest and brain images) or
crafted from real ones in memory.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import REPO, dicom_bytes, dicom_path
from core.io import MAX_PIXELS_PER_FRAME, Scan, ScanError, load_scan
from ui.state import UPLOAD, Keys

APP = REPO / "app.py"
#: Words that say what would work; every refusal names one.
REMEDIES = ("upload", "export", "save")


# ----------------------------------------------------------------------------- building the files

def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def dicom_to_bytes(ds) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def png_declaring(width: int, height: int, rows_of_data: int = 4) -> bytes:
    """A valid PNG header for a ``width x height`` grey image, followed by only a few rows of data.

    A few hundred bytes that promise ``width * height`` pixels: a decompression bomb's header.
    """
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * rows_of_data, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def first_codestream(ds) -> bytes:
    from pydicom.encaps import generate_frames

    return next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames") or 1)))


def with_codestream(name: str, change) -> bytes:
    """A compressed DICOM file whose first frame's codestream went through ``change``."""
    from pydicom.encaps import encapsulate

    ds = pydicom.dcmread(dicom_path(name))
    ds.PixelData = encapsulate([change(first_codestream(ds))])
    return dicom_to_bytes(ds)


def flip_bytes(start: int, stop: int):
    return lambda data: data[:start] + bytes(b ^ 0xFF for b in data[start:stop]) + data[stop:]


def cut_to(fraction: float):
    return lambda data: data[: int(len(data) * fraction)]


def resized_dicom(name: str, side: int) -> bytes:
    """A real DICOM file with its pixels cut down to ``side`` x ``side``."""
    ds = pydicom.dcmread(dicom_path(name))
    ds.PixelData = ds.pixel_array[:side, :side].copy().tobytes()
    ds.Rows = ds.Columns = side
    return dicom_to_bytes(ds)


def claiming_size(name: str, rows: int, cols: int) -> bytes:
    ds = pydicom.dcmread(dicom_path(name))
    ds.Rows, ds.Columns = rows, cols
    return dicom_to_bytes(ds)


def structured_report() -> bytes:
    """A minimal Basic Text SR, made with pydicom in memory: a document, no pixels."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "SR"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "SR-0001"
    item = Dataset()
    item.RelationshipType, item.ValueType, item.TextValue = "CONTAINS", "TEXT", "No focal consolidation."
    ds.ValueType = "CONTAINER"
    ds.ContentSequence = [item]
    return dicom_to_bytes(ds)


def chest_grey(fullres: bool = False) -> np.ndarray:
    from conftest import CHEST, CHEST_FULLRES

    path = CHEST_FULLRES / "NORMAL" / "IM-0206-0001.jpeg" if fullres else CHEST / "NORMAL" / "IM-0115-0001.jpeg"
    if not path.is_file():
        pytest.skip(f"shared data not found: {path}")
    image = np.asarray(Image.open(path).convert("L"))
    return image


def brain_jpeg() -> bytes:
    from conftest import DATA_DIR

    paths = sorted((DATA_DIR / "brain_mri" / "Training" / "glioma").glob("*.jpg"))
    if not paths:
        pytest.skip("brain MRI images not found in the shared data")
    return paths[0].read_bytes()


def float_tiff(values: np.ndarray) -> bytes:
    return encode(Image.fromarray(values.astype(np.float32), mode="F"), "TIFF")


def with_nan_and_inf() -> bytes:
    values = chest_grey().astype(np.float32)
    values[0, 0], values[10, 10], values[20, 20] = np.nan, np.inf, -np.inf
    return float_tiff(values)


def radiograph_sized() -> bytes:
    """A real radiograph enlarged to 4,000 x 5,000 pixels (the size of real detector images)."""
    return encode(Image.fromarray(chest_grey(fullres=True)).resize((4000, 5000), Image.BILINEAR), "JPEG",
                  quality=90)


# ----------------------------------------------------------------------------- the cases

#: (case, file name, bytes builder, words the one-sentence refusal must contain)
REFUSED = [
    ("empty file", "scan.dcm", lambda: b"", ["empty"]),
    ("random bytes", "upload.bin", lambda: np.random.default_rng(4).bytes(8192),
     ["not a DICOM, PNG, JPEG or TIFF"]),
    ("text named .dcm", "report.dcm",
     lambda: b"Radiology report\nNo acute findings.\n" * 30, ["does not match its .dcm name"]),
    ("PDF named .dcm", "letter.dcm",
     lambda: b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n" * 8,
     ["does not match its .dcm name"]),
    ("truncated DICOM", "MR_truncated.dcm", lambda: dicom_bytes("MR_truncated.dcm"), ["truncated"]),
    ("RT plan, no pixels", "rtplan.dcm", lambda: dicom_bytes("rtplan.dcm"), ["(RTPLAN) holds no image pixels"]),
    ("structured report file", "test-SR.dcm", lambda: dicom_bytes("test-SR.dcm"), ["(SR) holds no image pixels"]),
    ("structured report in memory", "report.dcm", structured_report, ["(SR) holds no image pixels"]),
    ("JPEG 2000 cut short", "RG1_J2KR.dcm", lambda: with_codestream("RG1_J2KR.dcm", cut_to(0.4)),
     ["JPEG 2000", "corrupt or cut short"]),
    ("JPEG 2000 header bytes flipped", "MR_small_jp2klossless.dcm",
     lambda: with_codestream("MR_small_jp2klossless.dcm", flip_bytes(20, 40)), ["JPEG 2000", "corrupt"]),
    # CharLS would silently fill the missing part: the missing end marker gives it away.
    ("JPEG-LS cut short", "MR_small_jpeg_ls_lossless.dcm",
     lambda: with_codestream("MR_small_jpeg_ls_lossless.dcm", cut_to(0.5)), ["JPEG-LS", "cut short"]),
    ("RLE cut short", "MR_small_RLE.dcm", lambda: with_codestream("MR_small_RLE.dcm", cut_to(0.5)),
     ["RLE", "corrupt or cut short"]),
    # Found by tests/test_fuzz.py: pylibjpeg-rle (Rust) panicked on this stream, a BaseException
    # that escaped, and printed a Rust backtrace; pydicom's own RLE decoder now reads RLE.
    ("RLE with one byte inserted", "MR_small_RLE.dcm",
     lambda: (lambda raw: raw[:1800] + b"\0" + raw[1800:])(dicom_bytes("MR_small_RLE.dcm")),
     ["RLE", "corrupt or cut short"]),
    ("header claims 60000 x 60000", "huge.dcm", lambda: claiming_size("MR_small.dcm", 60000, 60000),
     ["too large", "60000 x 60000 pixels", "36 million"]),
    # Pillow's own bomb check (an error above ~179 million pixels) fires first: the words are ours.
    ("PNG bomb, 10 gigapixels", "bomb.png", lambda: png_declaring(100_000, 100_000),
     ["too large", "10,000 million pixels", "36 million"]),
    # Between Pillow's warning (~89 million) and error limits: still our words.
    ("PNG bomb, 100 megapixels", "bomb.png", lambda: png_declaring(10_000, 10_000),
     ["too large", "100 million pixels"]),
    # Below Pillow's limits: our own check. The data stops after 4 rows, so decoding would have
    # said "damaged"; "too large" proves the refusal came before any decoding.
    ("PNG bomb, 64 megapixels", "bomb.png", lambda: png_declaring(8000, 8000),
     ["too large", "8000 x 8000 pixels"]),
    ("float TIFF, all NaN", "nan.tif", lambda: float_tiff(np.full((32, 32), np.nan)), ["NaN or infinite"]),
    ("PNG cut short", "cut.png", lambda: encode(Image.fromarray(chest_grey()), "PNG")[:3000],
     ["damaged or truncated"]),
    # Too small to be a scan (issue 10: a 1 x 1 PNG was predicted "PNEUMONIA, 1.0").
    ("1 x 1 image", "dot.png", lambda: encode(Image.new("L", (1, 1), 90), "PNG"), ["1 x 1 pixels", "too small"]),
    ("3 x 3 image", "tiny.png", lambda: encode(Image.new("L", (3, 3), 90), "PNG"), ["3 x 3 pixels", "too small"]),
    ("31 x 400 image", "strip.png", lambda: encode(Image.new("L", (400, 31), 90), "PNG"), ["400 x 31", "32 pixels"]),
    ("DICOM of 16 x 16", "small.dcm", lambda: resized_dicom("MR_small.dcm", 16), ["16 x 16 pixels", "too small"]),
    # A 12-bit JPEG Extended stream really damaged: the imagecodecs fallback fails too, so "corrupt".
    ("12-bit JPEG damaged", "JPEG-lossy.dcm", lambda: with_codestream("JPEG-lossy.dcm", flip_bytes(150, 400)),
     ["JPEG Extended", "corrupt"]),
]


def check_png_named_dcm(scan: Scan) -> None:
    assert scan.kind == "image" and scan.header["Format"] == "PNG"
    assert np.array_equal(scan.frames[0], chest_grey().astype(np.float32))


def check_smallest(scan: Scan) -> None:
    assert scan.shape == (32, 32) and scan.warnings == ()


def check_jpeg_12bit(scan: Scan) -> None:
    """Every pydicom plugin here fails on 12-bit JPEG Extended; imagecodecs (libjpeg-turbo) decodes it.
    The same image stored losslessly (pydicom's JPEG-LL.dcm) is the reference: a lossy copy differs
    by a few grey levels on average, never by much."""
    reference = pydicom.dcmread(dicom_path("JPEG-LL.dcm")).pixel_array.astype(np.float32)
    assert scan.shape == reference.shape == (1024, 256) and scan.kind == "dicom"
    difference = np.abs(scan.frames[0] - reference)
    assert difference.mean() < 3.0 and difference.max() <= 40, (difference.mean(), difference.max())
    assert np.corrcoef(scan.frames[0].ravel(), reference.ravel())[0, 1] > 0.98


def check_16bit(scan: Scan) -> None:
    assert scan.header["Bit depth"] == 16 and scan.frames.max() > 255
    assert np.array_equal(scan.frames[0], chest_grey().astype(np.float32) * 250)


def check_grey_copy(tolerance: float, note: str | None = None):
    def check(scan: Scan) -> None:
        assert not scan.is_color and scan.shape == (224, 224)
        assert np.abs(scan.frames[0] - chest_grey().astype(np.float32)).max() <= tolerance
        assert scan.warnings == ((note,) if note else ())
    return check


def check_nan(scan: Scan) -> None:
    assert np.isfinite(scan.frames).all()
    assert scan.warnings == ("3 NaN or infinite pixel(s) were set to the image minimum.",)


def check_multiframe(scan: Scan) -> None:
    assert scan.n_frames == 10 and scan.default_frame == 5
    assert np.array_equal(scan.frame(None), scan.frames[5])


def check_radiograph_sized(scan: Scan) -> None:
    assert scan.shape == (5000, 4000) and 4000 * 5000 <= MAX_PIXELS_PER_FRAME


def check_brain(scan: Scan) -> None:
    assert scan.kind == "image" and min(scan.shape) >= 128


#: (case, file name, bytes builder, check of the loaded scan)
LOADED = [
    ("PNG named .dcm", "chest.dcm", lambda: encode(Image.fromarray(chest_grey()), "PNG"), check_png_named_dcm),
    ("smallest accepted, 32 x 32", "small.png", lambda: encode(Image.new("L", (32, 32), 90), "PNG"),
     check_smallest),
    ("12-bit JPEG Extended DICOM", "JPEG-lossy.dcm", lambda: dicom_bytes("JPEG-lossy.dcm"), check_jpeg_12bit),
    ("16-bit PNG", "wide.png", lambda: encode(Image.fromarray(chest_grey().astype(np.uint16) * 250), "PNG"),
     check_16bit),
    ("palette PNG", "palette.png", lambda: encode(Image.fromarray(chest_grey()).convert("P"), "PNG"),
     check_grey_copy(0)),
    ("RGBA PNG", "rgba.png", lambda: encode(Image.fromarray(chest_grey()).convert("RGBA"), "PNG"),
     check_grey_copy(0, "The image's transparency (alpha) was dropped.")),
    ("CMYK TIFF", "cmyk.tif", lambda: encode(Image.fromarray(chest_grey()).convert("CMYK"), "TIFF"),
     check_grey_copy(1)),
    ("CMYK JPEG", "cmyk.jpg", lambda: encode(Image.fromarray(chest_grey()).convert("CMYK"), "JPEG", quality=95),
     check_grey_copy(40)),
    ("float TIFF with NaN and infinity", "float.tif", with_nan_and_inf, check_nan),
    ("multi-frame DICOM", "emri_small.dcm", lambda: dicom_bytes("emri_small.dcm"), check_multiframe),
    ("radiograph-sized 4000 x 5000", "large.jpg", radiograph_sized, check_radiograph_sized),
    ("brain MRI (wrong kind for the chest model)", "brain.jpg", brain_jpeg, check_brain),
]


def one_sentence_with_remedy(message: str) -> None:
    assert message and "\n" not in message and len(message) < 220, message
    assert message[0].isupper() and message.endswith("."), message
    assert ". " not in message[:-1].replace("e.g. ", ""), f"more than one sentence: {message}"
    assert "Traceback" not in message and "Error" not in message and "Exception" not in message
    assert any(word in message for word in REMEDIES), f"no remedy in: {message}"


@pytest.fixture(scope="module")
def refused() -> dict[str, tuple[str, bytes, list[str]]]:
    return {case: (name, build(), words) for case, name, build, words in REFUSED}


@pytest.fixture(scope="module")
def loaded() -> dict[str, tuple[str, bytes]]:
    return {case: (name, build()) for case, name, build, _ in LOADED}


_MESSAGES: dict[tuple[str, bytes], str] = {}


def expected_message(name: str, data: bytes) -> str:
    """``load_scan``'s sentence for this file (worked out once per file)."""
    if (name, data) not in _MESSAGES:
        with pytest.raises(ScanError) as caught:
            load_scan(data, name)
        _MESSAGES[name, data] = str(caught.value)
    return _MESSAGES[name, data]


@pytest.fixture(scope="module")
def notes(loaded) -> dict[str, tuple[str, ...]]:
    """The notes ``load_scan`` gives each loadable case."""
    return {case: load_scan(data, name).warnings for case, (name, data) in loaded.items()}


# ----------------------------------------------------------------------------- core.io

@pytest.mark.parametrize("case", [c[0] for c in REFUSED])
def test_refused_with_one_specific_sentence(refused, case):
    name, data, words = refused[case]
    message = expected_message(name, data)
    one_sentence_with_remedy(message)
    for word in words:
        assert word in message, f"{case}: {message!r} lacks {word!r}"


@pytest.mark.parametrize("case", [c[0] for c in LOADED])
def test_loaded_with_notes_where_needed(loaded, case):
    name, data = loaded[case]
    check = next(c[3] for c in LOADED if c[0] == case)
    scan = load_scan(data, name)
    assert np.isfinite(scan.frames).all() and scan.frames.dtype == np.float32
    check(scan)


def test_bomb_is_refused_from_its_header_alone(monkeypatch):
    """The decoder is never reached: any decode would fail the test with a different message."""
    from PIL import ImageFile

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("decoded a decompression bomb")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for side in (100_000, 10_000, 8000):
        with pytest.raises(ScanError, match="too large"):
            load_scan(png_declaring(side, side), "bomb.png")


# ----------------------------------------------------------------------------- command line

@pytest.fixture(scope="module")
def input_files(refused, loaded, tmp_path_factory):
    """Every case written as a file under its own name (one folder per case keeps names as given)."""
    root = tmp_path_factory.mktemp("bad_inputs")
    paths = {}
    for i, (case, (name, data, *_)) in enumerate({**refused, **loaded}.items()):
        folder = root / f"{i:02d}"
        folder.mkdir()
        (folder / name).write_bytes(data)
        paths[case] = folder / name
    return paths


@pytest.mark.slow
def test_predict_json_in_process(tiny_run, refused, loaded, notes, input_files, capsys):
    from core.cli import main

    cases = [c[0] for c in REFUSED] + [c[0] for c in LOADED]
    assert main(["predict", "--model", str(tiny_run[0]), "--json", *map(str, (input_files[c] for c in cases))]) == 1
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["file"] for r in records] == [str(input_files[c]) for c in cases]
    assert "Traceback" not in out + err
    for case, record in zip(cases, records):
        if case in refused:
            name, data, _ = refused[case]
            assert record == {"file": str(input_files[case]), "ok": False, "error": expected_message(name, data)}, case
        else:
            assert record["ok"] is True, (case, record)
            assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
            for note in notes[case]:
                assert note in record["warnings"], case


@pytest.mark.slow
def test_predict_json_as_a_user_runs_it(tiny_run, refused, input_files, tmp_path):
    """One real ``python -m core predict --json`` over every refused file: exit 1, JSON lines, no traceback."""
    paths = [str(input_files[c[0]]) for c in REFUSED]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO), RUST_BACKTRACE="1")
    result = subprocess.run([sys.executable, "-m", "core", "predict", "--model", str(tiny_run[0]), "--json", *paths],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "panicked" not in result.stderr and "backtrace" not in result.stderr, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["file"] for r in records] == paths
    for (case, name, _, _), record in zip(REFUSED, records):
        assert record["ok"] is False
        assert record["error"] == expected_message(name, refused[case][1]), case


# ----------------------------------------------------------------------------- dashboard

@pytest.fixture(scope="module")
def scan_page():
    """The app on its Scan page: it needs no model, so none is trained for this."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    assert not at.exception and not at.error
    return at


def upload(at, name: str, data: bytes):
    at.file_uploader(key=Keys.UPLOADER).set_value((name, data, "application/octet-stream"))
    return at.run()


def test_dashboard_refuses_each_bad_file_in_one_sentence_and_keeps_serving(scan_page, refused):
    at = scan_page
    good = dicom_bytes("MR_small.dcm")
    for case, (name, data, _) in refused.items():
        at = upload(at, name, data)
        assert not at.exception, (case, [e.value for e in at.exception])
        assert [e.value for e in at.error] == [f"**{name}** cannot be used: {expected_message(name, data)}"], case
        assert not at.dataframe, case  # nothing half-drawn
        at = upload(at, "MR_small.dcm", good)
        assert not at.exception and not at.error, case
        header = dict(zip(at.dataframe[0].value["Attribute"], at.dataframe[0].value["Value"]))
        assert header["Rows"] == "64" and header["Modality"] == "MR", case


def test_dashboard_loads_odd_images_with_their_notes(scan_page, loaded, notes):
    at = scan_page
    for case in ("PNG named .dcm", "smallest accepted, 32 x 32", "float TIFF with NaN and infinity",
                 "RGBA PNG", "CMYK TIFF", "16-bit PNG", "multi-frame DICOM", "12-bit JPEG Extended DICOM"):
        name, data = loaded[case]
        at = upload(at, name, data)
        assert not at.exception and not at.error, case
        shown = [w.value for w in at.warning]
        assert all(note in shown for note in notes[case]), (case, shown)


@pytest.mark.slow
def test_odd_images_go_through_every_model_page(models_root, loaded, notes, monkeypatch):  # noqa: F811
    """The smallest, the non-finite, the 16-bit, the CMYK and the multi-frame uploads are
    predicted and explained like any other, with their notes on the Explain page."""
    from streamlit.testing.v1 import AppTest

    from page_support import DEFAULT_MODELS

    if models_root == DEFAULT_MODELS:
        monkeypatch.delenv("MEDXAI_MODELS", raising=False)
    else:
        monkeypatch.setenv("MEDXAI_MODELS", str(models_root))
    for case in ("smallest accepted, 32 x 32", "float TIFF with NaN and infinity", "16-bit PNG", "CMYK JPEG",
                 "multi-frame DICOM", "12-bit JPEG Extended DICOM"):
        name, data = loaded[case]
        at = AppTest.from_file(str(APP), default_timeout=300)
        at.session_state[Keys.UPLOAD] = {"name": name, "data": data}
        at.session_state[Keys.SOURCE] = UPLOAD
        for page in ("preprocessing", "explain"):
            at.switch_page(f"pages/{page}.py").run()
            anyway = [b for b in at.button if b.label == "Show the prediction and maps anyway"]
            if anyway:  # odd images are outside every model's range: said first, then shown on request
                assert len(at.error) == 1 and "looks unlike the images" in at.error[0].value, case
                anyway[0].click().run()
            assert not at.exception, (case, page, [e.value for e in at.exception])
            assert not at.error, (case, page, [e.value for e in at.error])
        assert any("Predicted:" in m.value for m in at.markdown), case
        shown = [w.value for w in at.warning]
        assert all(note in shown for note in notes[case]), (case, shown)
