"""core.io: real DICOM test files, real chest JPEGs, and images re-encoded in memory with PIL."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import dicom_bytes, dicom_names, dicom_path
from core.io import Scan, ScanError, load_scan


def load(name: str, **kwargs) -> Scan:
    return load_scan(dicom_bytes(name), name, **kwargs)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def assert_one_sentence(err: ScanError) -> None:
    message = str(err)
    assert message and "\n" not in message and len(message) < 200
    assert message[0].isupper() and message.endswith(".")
    assert "Traceback" not in message and "Error" not in message


@pytest.fixture(scope="module")
def grey(fullres_dir) -> np.ndarray:
    """A 256 x 320 crop of a real 8-bit grey chest radiograph (native resolution)."""
    image = np.asarray(Image.open(fullres_dir / "NORMAL" / "IM-0206-0001.jpeg"))
    assert image.dtype == np.uint8 and image.ndim == 2
    return np.ascontiguousarray(image[200:456, 300:620])


# ----------------------------------------------------------------------------- DICOM

def test_chest_cr_is_monochrome1_and_keeps_its_size_and_window():
    scan = load("RG1_UNCI.dcm")
    assert scan.kind == "dicom" and scan.n_frames == 1 and not scan.is_color
    assert scan.shape == (1955, 1841)
    assert scan.invert is True  # MONOCHROME1: shown inverted on a reading station
    assert scan.window == (15000.0, 30000.0)  # the header's own window
    assert scan.frames.dtype == np.float32
    assert scan.units == ""  # CR stored values, not Hounsfield units
    assert scan.spacing is None  # PixelSpacing is 0\0 in this file: not a usable spacing
    assert scan.header["Modality"] == "CR" and scan.header["Pixel spacing (mm)"] == "not stated"


def test_rg1_lossless_jpeg2000_is_bit_identical_to_the_uncompressed_original():
    # RG1_J2KR is the reversible encoding of RG1_UNCR: lossless means equal, pixel for pixel.
    assert np.array_equal(load("RG1_J2KR.dcm").frames, load("RG1_UNCR.dcm").frames)


def test_rg1_lossy_jpeg2000_decodes_to_its_uncompressed_twin():
    # RG1_UNCI is RG1_J2KI already decompressed (DerivationDescription says so), so the
    # decoder must reproduce it; 1 stored value of slack for float rounding in the 9/7 wavelet.
    unci, j2ki = load("RG1_UNCI.dcm"), load("RG1_J2KI.dcm")
    assert j2ki.shape == unci.shape and j2ki.invert and j2ki.window == unci.window
    assert np.abs(j2ki.frames - unci.frames).max() <= 1.0


def test_rg1_lossless_and_lossy_twins_differ_only_by_the_lossy_compression_error():
    # RG1_UNCI carries the 10:1 irreversible compression error; RG1_J2KR does not. So J2KR is
    # NOT bit-identical to UNCI: they differ by the lossy error (observed RMSE ~63 of a range
    # of ~25,700, PSNR ~52 dB, max ~400), which is what we bound here.
    header = pydicom.dcmread(dicom_path("RG1_UNCI.dcm"), stop_before_pixels=True)
    assert "irreversible" in str(header.DerivationDescription) and header.LossyImageCompression == "01"
    unci = load("RG1_UNCI.dcm").frames[0].astype(np.float64)
    j2kr = load("RG1_J2KR.dcm").frames[0].astype(np.float64)
    error = j2kr - unci
    value_range = unci.max() - unci.min()
    psnr = 10 * np.log10(value_range**2 / np.mean(error**2))
    assert not np.array_equal(j2kr, unci)
    assert psnr > 45.0
    assert abs(error.mean()) < 1.0  # no bias, only noise
    assert np.abs(error).max() < 0.05 * value_range
    assert np.corrcoef(unci.ravel(), j2kr.ravel())[0, 1] > 0.999


def test_ct_is_in_hounsfield_units():
    scan = load("CT_small.dcm")
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    assert scan.units == "HU" and scan.shape == (128, 128)
    expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert np.array_equal(scan.frames[0], expected.astype(np.float32))
    assert -1024 <= scan.frames.min() <= -800  # air in and around the patient (-896 here)
    assert scan.frames.max() < 3100  # within the range of bone and contrast
    assert -200 < np.median(scan.frames) < 200  # mostly soft tissue
    assert scan.spacing == pytest.approx((0.661468, 0.661468))


def test_enhanced_ct_takes_rescale_window_and_spacing_from_its_functional_groups():
    """An enhanced CT keeps no RescaleIntercept, WindowCenter or PixelSpacing at the top level:
    they sit in the shared functional groups, and must still give Hounsfield units, the header
    window and a scale bar."""
    scan = load("eCT_Supplemental.dcm")
    ds = pydicom.dcmread(dicom_path("eCT_Supplemental.dcm"))
    assert "RescaleIntercept" not in ds and "PixelSpacing" not in ds and "WindowCenter" not in ds
    shared = ds.SharedFunctionalGroupsSequence[0]
    rescale = shared.PixelValueTransformationSequence[0]
    expected = ds.pixel_array.astype(np.float64) * float(rescale.RescaleSlope) + float(rescale.RescaleIntercept)
    assert scan.units == "HU" and scan.n_frames == 2
    np.testing.assert_array_equal(scan.frames, expected.astype(np.float32))
    assert scan.frames.min() == -1024.0  # air outside the field of view
    voi = shared.FrameVOILUTSequence[0]
    assert scan.window == (float(voi.WindowCenter), float(voi.WindowWidth)) == (49.0, 102.0)
    assert scan.spacing == pytest.approx((0.388672, 0.388672))
    assert scan.header["Pixel spacing (mm)"] == "0.3887 x 0.3887"


def test_mr_small_compressed_variants_exist():
    names = dicom_names("MR_small*")
    for expected in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm"):
        assert expected in names


@pytest.mark.parametrize("name", dicom_names("MR_small*"))
def test_every_mr_small_encoding_decodes_to_the_same_pixels(name):
    reference = load("MR_small.dcm")
    scan = load(name)
    assert scan.shape == (64, 64)
    assert np.array_equal(scan.frames, reference.frames), name
    assert scan.window == reference.window == (600.0, 1600.0)


def test_multiframe_mr_middle_frame_is_the_default():
    scan = load("emri_small.dcm")
    assert scan.n_frames == 10 and scan.shape == (64, 64)
    assert scan.default_frame == 5
    assert np.array_equal(scan.frame(None), scan.frames[5])
    assert np.array_equal(scan.frame(0), scan.frames[0])
    with pytest.raises(ScanError, match="Frame 10 does not exist"):
        scan.frame(10)


@pytest.mark.parametrize("name", [n for n in dicom_names("emri_small*") if "too_short" not in n])
def test_every_multiframe_encoding_decodes_to_the_same_frames(name):
    assert np.array_equal(load(name).frames, load("emri_small.dcm").frames)


def test_dicom_recognised_by_preamble_whatever_its_name():
    data = dicom_bytes("CT_small.dcm")
    reference = load_scan(data, "CT_small.dcm")
    for name in ("scan", "IMG0001", "upload.bin", None):
        scan = load_scan(data, name)
        assert scan.kind == "dicom" and np.array_equal(scan.frames, reference.frames)


def test_dicom_without_preamble_loads_when_named_dcm():
    headless = dicom_bytes("CT_small.dcm")[132:]  # no 128-byte preamble, no "DICM"
    scan = load_scan(headless, "slice.dcm")
    assert scan.units == "HU" and np.array_equal(scan.frames, load("CT_small.dcm").frames)
    with pytest.raises(ScanError, match="not a DICOM, PNG, JPEG or TIFF"):
        load_scan(headless, "slice")


@pytest.mark.parametrize("name", ["RG1_UNCI.dcm", "CT_small.dcm", "MR_small.dcm"])
def test_identifiers_are_hidden_by_default(name):
    ds = pydicom.dcmread(dicom_path(name), stop_before_pixels=True)
    scan = load(name)
    assert {"PatientName", "PatientID", "StudyInstanceUID"} <= set(scan.hidden)
    assert scan.identifiers == {}
    shown = repr(scan) + repr(scan.header)
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "StudyInstanceUID",
                    "SeriesInstanceUID", "SOPInstanceUID", "ReferringPhysicianName"):
        value = str(ds.get(keyword) or "")
        if value:
            assert value not in shown, keyword
        assert keyword not in scan.header
    assert "CompressedSamples" not in shown  # the family name of every PatientName here


def test_identifiers_are_kept_only_on_request_and_still_not_in_repr():
    ds = pydicom.dcmread(dicom_path("CT_small.dcm"), stop_before_pixels=True)
    scan = load("CT_small.dcm", keep_identifiers=True)
    assert scan.identifiers["PatientName"] == str(ds.PatientName)
    assert scan.identifiers["PatientID"] == str(ds.PatientID)
    assert set(scan.identifiers) <= set(scan.hidden)
    assert str(ds.PatientName) not in repr(scan) + repr(scan.header)


# ----------------------------------------------------------------------------- images

@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP"])
def test_8bit_grey_image_is_lossless(grey, fmt):
    scan = load_scan(encode(Image.fromarray(grey), fmt), f"x.{fmt.lower()}")
    assert scan.kind == "image" and scan.n_frames == 1 and not scan.is_color and not scan.invert
    assert np.array_equal(scan.frames[0], grey.astype(np.float32))
    assert scan.window == (127.5, 255.0) and scan.header["Bit depth"] == 8 and scan.warnings == ()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_grey_image_keeps_its_values_and_windows_over_its_range(grey, fmt):
    wide = grey.astype(np.uint16) * 257 + 3
    scan = load_scan(encode(Image.fromarray(wide), fmt), f"x.{fmt.lower()}")
    assert scan.header["Bit depth"] == 16
    assert np.array_equal(scan.frames[0], wide.astype(np.float32))
    low, high = float(wide.min()), float(wide.max())
    assert scan.window == ((low + high) / 2, high - low)


def test_rgb_with_equal_channels_becomes_grey(grey):
    scan = load_scan(encode(Image.fromarray(grey).convert("RGB"), "PNG"), "x.png")
    assert not scan.is_color and np.array_equal(scan.frames[0], grey.astype(np.float32))


def test_true_colour_keeps_three_channels(grey):
    tinted = np.stack([grey, grey // 2, grey // 3], axis=-1)
    scan = load_scan(encode(Image.fromarray(tinted), "PNG"), "x.png")
    assert scan.is_color and scan.frames.shape == (1, *grey.shape, 3)
    assert np.array_equal(scan.frames[0], tinted.astype(np.float32))


def test_rgba_drops_alpha_with_a_note(grey):
    scan = load_scan(encode(Image.fromarray(grey).convert("RGBA"), "PNG"), "x.png")
    assert np.array_equal(scan.frames[0], grey.astype(np.float32))
    assert scan.warnings == ("The image's transparency (alpha) was dropped.",)


def test_palette_images(grey):
    scan = load_scan(encode(Image.fromarray(grey).convert("P"), "PNG"), "x.png")
    assert np.array_equal(scan.frames[0], grey.astype(np.float32))  # a grey palette is exact
    tinted = np.stack([grey, grey // 2, grey // 3], axis=-1)
    paletted = Image.fromarray(tinted).convert("P", palette=Image.Palette.ADAPTIVE)
    scan = load_scan(encode(paletted, "PNG"), "x.png")
    assert scan.is_color and scan.frames.shape == (1, *grey.shape, 3)


def test_multiframe_rgba_tiff_notes_the_dropped_alpha_once(grey):
    frames = [Image.fromarray(np.roll(grey, k, axis=0)).convert("RGBA") for k in range(3)]
    data = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    scan = load_scan(data, "x.tif")
    assert scan.n_frames == 3 and scan.default_frame == 1
    assert np.array_equal(scan.frame(None), np.roll(grey, 1, axis=0).astype(np.float32))
    assert scan.warnings == ("The image's transparency (alpha) was dropped.",)


def test_jpeg_reencoding_stays_within_jpeg_error(grey):
    scan = load_scan(encode(Image.fromarray(grey), "JPEG", quality=95), "x.jpg")
    error = np.abs(scan.frames[0] - grey.astype(np.float32))
    assert scan.header["Format"] == "JPEG" and error.mean() < 1.5 and error.max() <= 16


def test_nan_pixels_are_replaced_with_a_note(grey):
    values = grey.astype(np.float32)
    values[0, 0], values[1, 1] = np.nan, np.inf
    scan = load_scan(encode(Image.fromarray(values), "TIFF"), "x.tif")
    assert np.isfinite(scan.frames).all() and scan.frames[0, 0, 0] == values[np.isfinite(values)].min()
    assert scan.warnings == ("2 NaN or infinite pixel(s) were set to the image minimum.",)


def test_real_fullres_chest_jpegs(fullres_dir):
    paths = sorted(fullres_dir.glob("*/*.jpeg"))
    assert len(paths) == 24
    for path in paths:
        with Image.open(path) as image:
            width, height = image.size
        scan = load_scan(path.read_bytes(), path.name)
        assert scan.shape == (height, width), path.name
        assert not scan.is_color, path.name  # the few RGB originals have equal channels
        assert scan.window == (127.5, 255.0)


def test_real_training_jpegs_are_grey_224(chest_dir):
    paths = sorted((chest_dir / "NORMAL").glob("*.jpeg"))[:5] + sorted((chest_dir / "PNEUMONIA").glob("*.jpeg"))[:5]
    for path in paths:
        scan = load_scan(path.read_bytes(), path.name)
        assert scan.shape == (224, 224) and not scan.is_color, path.name


# ----------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("name, match", [
    ("MR_truncated.dcm", "truncated"),
    ("rtplan.dcm", "RTPLAN"),
    ("emri_small_jpeg_2k_lossless_too_short.dcm", "damaged or truncated"),
])
def test_unusable_dicom_files_raise_one_sentence(name, match):
    with pytest.raises(ScanError, match=match) as caught:
        load(name)
    assert_one_sentence(caught.value)


@pytest.mark.parametrize("data, name, match", [
    (b"", "x.png", "empty"),
    (np.random.default_rng(0).bytes(4096), "upload", "not a DICOM, PNG, JPEG or TIFF"),
    (np.random.default_rng(1).bytes(4096), "upload.dcm", "does not match its .dcm name"),
    (b"\x89PNG\r\n\x1a\n" + np.random.default_rng(2).bytes(512), "x.png", "damaged or truncated"),
], ids=["empty", "random", "random-named-dcm", "png-magic-then-noise"])
def test_empty_and_random_bytes_raise_one_sentence(data, name, match):
    with pytest.raises(ScanError, match=match) as caught:
        load_scan(data, name)
    assert_one_sentence(caught.value)


def test_truncated_real_jpeg_raises_one_sentence(fullres_dir):
    data = (fullres_dir / "NORMAL" / "IM-0206-0001.jpeg").read_bytes()
    with pytest.raises(ScanError, match="damaged or truncated") as caught:
        load_scan(data[: len(data) // 2], "IM-0206-0001.jpeg")
    assert_one_sentence(caught.value)


def test_not_bytes_and_oversized_images_are_refused():
    with pytest.raises(ScanError, match="bytes"):
        load_scan("not bytes")  # type: ignore[arg-type]
    with pytest.raises(ScanError, match="too large") as caught:
        load_scan(encode(Image.new("L", (7000, 6000)), "PNG"), "huge.png")
    assert_one_sentence(caught.value)
