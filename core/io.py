"""Scans in: bytes of a DICOM, PNG, JPEG or TIFF file become a :class:`Scan`.

Nothing here writes to disk or logs pixel data or header values. Patient identifiers stay
inside this module unless the caller asks for them with ``keep_identifiers=True``. The decoders'
own warnings and log records are silenced while a thread reads an upload: pydicom quotes odd
header values (a malformed name or UID) in them, and Pillow logs TIFF tags at debug level.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np

#: Largest image accepted, in pixels per frame: admits radiographs of about 6,000 x 6,000
#: (real ones are about 4,000 x 5,000) and refuses decompression bombs before decoding.
MAX_PIXELS_PER_FRAME = 36_000_000
#: Largest total number of pixels over all frames (about 1 GB of float32).
MAX_TOTAL_PIXELS = 256_000_000

#: DICOM attributes named by the PS3.15 Annex E basic application level confidentiality
#: profile that can identify a patient, a clinician, an institution or a study.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientBirthName", "PatientMotherBirthName", "OtherPatientIDs", "OtherPatientIDsSequence",
    "OtherPatientNames", "PatientAddress", "PatientTelephoneNumbers", "PatientAge",
    "PatientSex", "PatientSize", "PatientWeight", "MedicalRecordLocator", "EthnicGroup",
    "Occupation", "AdditionalPatientHistory", "PatientComments", "PatientReligiousPreference",
    "MilitaryRank", "BranchOfService", "CountryOfResidence", "RegionOfResidence",
    "PatientInsurancePlanCodeSequence", "ResponsiblePerson", "ResponsibleOrganization",
    "AccessionNumber", "StudyID", "StudyDate", "StudyTime", "SeriesDate", "SeriesTime",
    "AcquisitionDate", "AcquisitionTime", "ContentDate", "ContentTime", "AcquisitionDateTime",
    "InstanceCreationDate", "InstanceCreationTime",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName",
    "InstitutionCodeSequence", "ReferringPhysicianName", "ReferringPhysicianAddress",
    "ReferringPhysicianTelephoneNumbers", "PhysiciansOfRecord", "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy", "OperatorsName", "RequestingPhysician",
    "RequestingService", "ScheduledPerformingPhysicianName", "StationName",
    "DeviceSerialNumber", "PlateID", "DetectorID", "GantryID", "CassetteID",
    "StudyDescription", "SeriesDescription", "ImageComments", "RequestAttributesSequence",
    "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "ScheduledProcedureStepDescription", "RequestedProcedureDescription",
    "ProtocolName", "DerivationDescription", "AdmittingDiagnosesDescription",
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
    "MediaStorageSOPInstanceUID", "ReferencedSOPInstanceUID", "IrradiationEventUID",
    "ContentSequence", "TextValue", "PersonName", "VerifyingObserverName",
    "VerifyingOrganization", "ContributionDescription", "TextComments", "TextString",
    "PatientState", "Allergies",
    "PregnancyStatus", "SmokingStatus", "LastMenstrualDate",
)


#: Loggers of the decoders whose records can quote header values (pydicom, Pillow's TIFF tags).
DECODER_LOGGERS = (
    "pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils",
    "PIL.Image", "PIL.ImageFile", "PIL.PngImagePlugin", "PIL.TiffImagePlugin",
)
_READING = threading.local()


class _NotWhileReading(logging.Filter):
    """Drops a decoder's log record when the thread that made it is reading an upload."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_READING, "active", False)


_QUIET = _NotWhileReading()
for _name in DECODER_LOGGERS:  # a logger's filter sees only its own records, so each one gets it
    logging.getLogger(_name).addFilter(_QUIET)


@contextlib.contextmanager
def _reading():
    """This thread reads an upload: no decoder warning is shown and no decoder log record kept.

    The log filter is per thread, so other sessions' logging is untouched. The warnings filter
    is process-wide, as ``warnings`` is, so concurrent loads can race on it; that is why
    identifying values are only ever read raw (``_has_value``, ``_raw_text``), never converted
    by pydicom, whose validation would quote them.
    """
    previous = getattr(_READING, "active", False)
    _READING.active = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _READING.active = previous


class ScanError(ValueError):
    """A file that cannot be used as a scan; ``str(err)`` is one sentence for the user."""


@dataclass(frozen=True)
class Scan:
    """One image or series of frames in native units, with how to display it.

    Attributes
    ----------
    frames : ndarray, float32, shape (n_frames, rows, cols) or (n_frames, rows, cols, 3)
        Pixel values in native units: Hounsfield units for CT after the modality LUT,
        stored values otherwise. Colour images keep three channels.
    window : (centre, width)
        Default display window, from the DICOM header when it has one.
    invert : bool
        True for MONOCHROME1, where low values are white on a reading station.
    spacing : (row_mm, col_mm) or None
        Physical size of one pixel, when the file states a usable one.
    header : dict
        De-identified summary (modality, size, spacing, manufacturer, ...).
    hidden : tuple of str
        Keywords of identifying attributes present in the file and withheld.
    identifiers : dict
        Values of those attributes, filled only when ``load_scan(keep_identifiers=True)``.
    warnings : tuple of str
        One-sentence notes about what loading had to do (e.g. replaced NaN values).
    """

    frames: np.ndarray
    window: tuple[float, float]
    invert: bool = False
    spacing: tuple[float, float] | None = None
    kind: str = "image"
    units: str = ""
    name: str | None = None
    header: dict = field(default_factory=dict)
    hidden: tuple[str, ...] = ()
    identifiers: dict = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of one frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def is_color(self) -> bool:
        return self.frames.ndim == 4

    @property
    def default_frame(self) -> int:
        """The middle frame, the usual starting point for a multi-frame series."""
        return self.n_frames // 2

    def frame(self, index: int | None = None) -> np.ndarray:
        """One frame in native units; ``None`` gives the middle one."""
        i = self.default_frame if index is None else int(index)
        if not 0 <= i < self.n_frames:
            raise ScanError(f"Frame {i} does not exist; this scan has {self.n_frames} frame(s).")
        return self.frames[i]


def load_scan(data: bytes, name: str | None = None, *, keep_identifiers: bool = False) -> Scan:
    """Read a DICOM, PNG, JPEG or TIFF file from its bytes.

    Parameters
    ----------
    data : bytes
        The whole file. It is read in memory and never written anywhere.
    name : str, optional
        File name, used only to choose the message for a file that is neither format.
    keep_identifiers : bool
        Keep the values of identifying DICOM attributes in ``Scan.identifiers``.

    Returns
    -------
    Scan

    Raises
    ------
    ScanError
        With one sentence saying what is wrong and what would work.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> scan = load_scan(open(get_testdata_file("CT_small.dcm"), "rb").read())
    >>> scan.units, scan.shape
    ('HU', (128, 128))
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ScanError("Expected the bytes of a file.")
    data = bytes(data)
    if len(data) == 0:
        raise ScanError("The file is empty; upload a DICOM, PNG, JPEG or TIFF image.")
    try:
        with _reading():
            return _load_any(data, name, keep_identifiers)
    except ScanError:
        raise
    except MemoryError:
        raise ScanError("The image is too large to load in memory.") from None
    except BaseException as exc:  # noqa: BLE001 - any decoder failure becomes one sentence
        if not _decoder_failure(exc):
            raise
        raise ScanError(_describe_failure(data)) from None


def _decoder_failure(exc: BaseException) -> bool:
    """An exception a decoder raised on bad data, not an interrupt or exit.

    Decoders written in Rust (pylibjpeg-rle) panic on some damaged streams, and pyo3 turns
    a panic into ``PanicException``, which derives from ``BaseException``, not ``Exception``.
    """
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _load_any(data: bytes, name: str | None, keep_identifiers: bool) -> Scan:
    if _looks_like_dicom(data):
        return _load_dicom(data, name, keep_identifiers)
    if _looks_like_image(data):
        return _load_image(data, name)
    if (name or "").lower().endswith((".dcm", ".dicom")):
        # DICOM written without the 128-byte preamble: let pydicom try.
        return _load_dicom(data, name, keep_identifiers)
    raise ScanError("This file is not a DICOM, PNG, JPEG or TIFF image; upload one of those formats.")


def _describe_failure(data: bytes) -> str:
    if _looks_like_dicom(data):
        return ("This DICOM file is damaged or truncated and its pixels cannot be decoded; "
                "export it again from the imaging system.")
    return "This image file is damaged or truncated and cannot be decoded; save or download it again."


def _looks_like_dicom(data: bytes) -> bool:
    return len(data) >= 132 and data[128:132] == b"DICM"


_IMAGE_MAGIC = (
    b"\x89PNG\r\n\x1a\n",  # PNG
    b"\xff\xd8\xff",  # JPEG
    b"II*\x00", b"MM\x00*",  # TIFF
    b"II+\x00", b"MM\x00+",  # BigTIFF
    b"BM",  # BMP
    b"GIF87a", b"GIF89a",
)


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC)


# ----------------------------------------------------------------------------- images

def _load_image(data: bytes, name: str | None) -> Scan:
    from PIL import Image

    with warnings.catch_warnings():
        # Opening reads only the header. Pillow's own decompression-bomb check (a warning above
        # ~89 million pixels, an error above ~179 million) fires inside ``open``, before ours.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ScanError(_too_large_message(declared=_declared_pixels(exc))) from None
    width, height = image.size
    if width * height > MAX_PIXELS_PER_FRAME:
        raise ScanError(_too_large_message(width, height))
    n = getattr(image, "n_frames", 1)
    if n * width * height > MAX_TOTAL_PIXELS:
        raise ScanError(_too_large_message(width, height, n))

    notes: list[str] = []
    frames = []
    for i in range(n):
        image.seek(i)
        frames.append(_image_to_array(image, notes))
    if len({f.shape for f in frames}) != 1:
        frames = frames[:1]
        notes.append("The frames differ in size; only the first one is used.")
    pixels = np.stack(frames).astype(np.float32, copy=False)
    pixels = _finite(pixels, notes)
    if pixels.ndim == 4 and np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(
        pixels[..., 0], pixels[..., 2]
    ):
        pixels = np.ascontiguousarray(pixels[..., 0])  # grey stored as RGB, like the chest set
    _note_if_tiny(pixels, notes)
    depth = _bit_depth(image.mode)
    window = (127.5, 255.0) if depth == 8 else _range_window(pixels)
    header = {
        "Format": image.format or "image",
        "Mode": image.mode,
        "Columns": int(pixels.shape[2]),
        "Rows": int(pixels.shape[1]),
        "Frames": int(pixels.shape[0]),
        "Bit depth": depth,
    }
    return Scan(frames=pixels, window=window, kind="image", name=name, header=header,
                warnings=tuple(notes))


def _note_if_tiny(pixels: np.ndarray, notes: list[str]) -> None:
    if min(pixels.shape[1:3]) < 8:
        notes.append(f"The image is only {pixels.shape[2]} x {pixels.shape[1]} pixels; "
                     "the model sees it enlarged and its prediction means little.")


def _bit_depth(mode: str) -> int:
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return 16
    if mode in ("I", "F"):
        return 32
    return 8


_ALPHA_NOTE = "The image's transparency (alpha) was dropped."


def _image_to_array(image, notes: list[str]) -> np.ndarray:
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA"):
        if _ALPHA_NOTE not in notes:
            notes.append(_ALPHA_NOTE)
        image = image.convert("RGB" if mode == "RGBA" else "L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")
    elif mode == "1":
        image = image.convert("L")
    return np.asarray(image)


def _finite(pixels: np.ndarray, notes: list[str]) -> np.ndarray:
    finite = np.isfinite(pixels)
    if finite.all():
        return pixels
    if not finite.any():
        raise ScanError("Every pixel of this image is NaN or infinite, so there is nothing to show; "
                        "export it again with finite values.")
    fill = float(pixels[finite].min())
    notes.append(f"{int((~finite).sum())} NaN or infinite pixel(s) were set to the image minimum.")
    return np.where(finite, pixels, fill).astype(np.float32)


def _range_window(pixels: np.ndarray) -> tuple[float, float]:
    lo, hi = float(pixels.min()), float(pixels.max())
    width = max(hi - lo, 1.0)
    return (lo + hi) / 2.0, width


def _too_large_message(width: int | None = None, height: int | None = None, n: int = 1, *,
                       declared: int | None = None) -> str:
    if width:
        size = f" ({width} x {height}{f' x {n} frames' if n > 1 else ''} pixels)"
    elif declared:
        size = f" (its header declares {declared / 1_000_000:,.0f} million pixels)"
    else:
        size = ""
    return (f"The image is too large to load{size}; the limit is {MAX_PIXELS_PER_FRAME // 1_000_000} "
            "million pixels per frame, so export it at a lower resolution.")


def _declared_pixels(exc: Exception) -> int | None:
    """The pixel count in Pillow's decompression-bomb message, e.g. "Image size (10000000000 pixels)"."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    return int(found.group(1)) if found else None


# ----------------------------------------------------------------------------- DICOM

def _load_dicom(data: bytes, name: str | None, keep_identifiers: bool) -> Scan:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not _looks_like_dicom(data))
    except InvalidDicomError:
        raise ScanError("This file is not a valid DICOM file; upload a DICOM, PNG, JPEG or TIFF image.") from None
    except Exception:  # noqa: BLE001
        raise ScanError(_UNREADABLE_DICOM) from None
    if not _looks_like_dicom(data) and not any(k in ds for k in ("SOPClassUID", "Modality", "Rows")):
        # A forced read turns any bytes into some element; none of the basic ones means not DICOM.
        raise ScanError("This file is not a DICOM, PNG, JPEG or TIFF image (its content does not match "
                        "its .dcm name); upload one of those formats.")
    if len(ds) == 0:
        # pydicom returns an empty dataset when the file ends inside an undefined-length element.
        raise ScanError(_UNREADABLE_DICOM)

    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if "Rows" in ds and "Columns" in ds:
            raise ScanError("This DICOM file is truncated: its header describes an image but the pixel data is "
                            "missing; export the complete file again.")
        modality = ds.get("Modality")
        raise ScanError(f"This DICOM file{f' ({modality})' if modality else ''} holds no image pixels; "
                        "upload an image series such as CR, DX, CT or MR.")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if rows <= 0 or cols <= 0:
        raise ScanError("This DICOM file does not state its image size (Rows/Columns), so its pixels cannot be "
                        "read; export it again from the imaging system.")
    if rows * cols > MAX_PIXELS_PER_FRAME:
        raise ScanError(_too_large_message(cols, rows))
    if rows * cols * n_frames > MAX_TOTAL_PIXELS:
        raise ScanError(_too_large_message(cols, rows, n_frames))

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not _can_decode(syntax):
        raise ScanError(f"The pixel data uses {_syntax_name(syntax)}, which this installation "
                        "cannot decode; export it uncompressed or as PNG.")
    if not _ends_complete(ds, syntax, n_frames):
        raise ScanError(_corrupt_message(syntax))
    if syntax == "1.2.840.10008.1.2.5":  # RLE Lossless
        # pylibjpeg-rle (Rust) panics on some damaged streams and prints a backtrace to stderr;
        # pydicom's own RLE decoder reports the same streams as errors, for this dataset only.
        ds.pixel_array_options(decoding_plugin="pydicom")
    try:
        raw = ds.pixel_array
    except BaseException as exc:  # noqa: BLE001
        if not _decoder_failure(exc):
            raise
        raise ScanError(_corrupt_message(syntax) if getattr(syntax, "is_compressed", False) else
                        "The pixel data is shorter than the header says or damaged, so the file is truncated; "
                        "export the complete file again.") from None

    samples = int(ds.get("SamplesPerPixel") or 1)
    pixels = np.asarray(raw)
    if n_frames == 1 or (pixels.ndim == 2 or (pixels.ndim == 3 and samples == 3)):
        pixels = pixels[np.newaxis]
    notes: list[str] = []
    enhanced_rescale = False
    if samples == 1:
        if _has_top_level_rescale(ds) or not _functional_item(ds, "PixelValueTransformationSequence"):
            pixels = apply_modality_lut(pixels, ds)
        else:  # enhanced CT / MR: the rescale sits in the functional groups, per frame or shared
            pixels = _enhanced_rescale(pixels, ds)
            enhanced_rescale = True
    pixels = _finite(np.asarray(pixels, dtype=np.float32), notes)
    _note_if_tiny(pixels, notes)

    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2")
    modality = str(ds.get("Modality") or "")
    units = "HU" if modality == "CT" and ("RescaleIntercept" in ds or enhanced_rescale) else ""
    if pixels.ndim == 4:
        window = (127.5, 255.0) if int(ds.get("BitsStored") or 8) <= 8 else _range_window(pixels)
    else:
        window = _dicom_window(ds, pixels)
    spacing = _dicom_spacing(ds)
    hidden, identifiers = _identifiers(ds, keep_identifiers)
    header = _summary(ds, pixels, spacing)
    return Scan(
        frames=pixels, window=window, invert=photometric == "MONOCHROME1", spacing=spacing,
        kind="dicom", units=units, name=name, header=header, hidden=hidden,
        identifiers=identifiers, warnings=tuple(notes),
    )


_UNREADABLE_DICOM = ("This DICOM file is damaged or truncated and cannot be read; "
                     "export it again from the imaging system.")

#: Transfer syntaxes whose every frame is a JPEG, JPEG-LS or JPEG 2000 codestream, which ends with
#: the marker FF D9 (EOI / EOC). Some decoders fill a cut-short stream silently, so we look first.
_FF_D9_SYNTAXES = (
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
)


def _can_decode(syntax) -> bool:
    """Whether an installed pydicom pixel-data plugin decodes this transfer syntax."""
    from pydicom.pixels import get_decoder

    if syntax is None:
        return True  # pydicom assumes a native encoding; decoding says whether it fits
    try:
        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def _ends_complete(ds, syntax, n_frames: int) -> bool:
    """False when a JPEG-family frame lacks its end marker, i.e. its codestream was cut short."""
    if syntax not in _FF_D9_SYNTAXES or "PixelData" not in ds:
        return True
    from pydicom.encaps import generate_frames

    try:
        frames = list(generate_frames(ds.PixelData, number_of_frames=n_frames))
    except Exception:  # noqa: BLE001 - fragment layouts the decoder will judge itself
        return True
    # Encoders pad an odd-length stream with one 00 or FF byte after the marker.
    return bool(frames) and all(b"\xff\xd9" in frame[-4:] for frame in frames)


def _corrupt_message(syntax) -> str:
    return (f"The pixel data, compressed as {_syntax_name(syntax)}, is corrupt or cut short and cannot "
            "be decoded; export the file again from the imaging system.")


def _syntax_name(syntax) -> str:
    """The transfer syntax's name, not a damaged header's raw bytes."""
    name = getattr(syntax, "name", "")
    return name if name and name != str(syntax) else "an unknown transfer syntax"


def _first_number(value) -> float | None:
    if value is None:
        return None
    try:
        if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
            value = value[0]
        number = float(value)
    except (TypeError, ValueError, IndexError):
        return None
    return number if np.isfinite(number) else None


def _functional_item(ds, sequence: str, frame: int = 0):
    """The first item of ``sequence`` in an enhanced (multi-frame) file's functional groups:
    the shared group first, else the given frame's own group; None for a classic file."""
    for group, index in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", frame)):
        try:
            item = ds.get(group)[index].get(sequence)[0]
        except (TypeError, IndexError, AttributeError, KeyError):
            continue
        if item is not None:
            return item
    return None


def _has_top_level_rescale(ds) -> bool:
    return any(keyword in ds for keyword in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence"))


def _enhanced_rescale(pixels: np.ndarray, ds) -> np.ndarray:
    """Rescale slope and intercept from the Pixel Value Transformation functional group, frame by frame."""
    out = np.asarray(pixels, dtype=np.float32).copy()
    for f in range(out.shape[0]):
        item = _functional_item(ds, "PixelValueTransformationSequence", f)
        if item is None:
            continue
        slope = _first_number(item.get("RescaleSlope"))
        intercept = _first_number(item.get("RescaleIntercept"))
        out[f] = out[f] * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)
    return out


def _dicom_window(ds, pixels: np.ndarray) -> tuple[float, float]:
    centre = _first_number(ds.get("WindowCenter"))
    width = _first_number(ds.get("WindowWidth"))
    if centre is None or width is None:
        voi = _functional_item(ds, "FrameVOILUTSequence", pixels.shape[0] // 2)
        if voi is not None:
            centre, width = _first_number(voi.get("WindowCenter")), _first_number(voi.get("WindowWidth"))
    if centre is not None and width is not None and width > 0:
        # The header window applies to values after the modality LUT, like our pixels.
        return centre, width
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    return float(lo + hi) / 2.0, float(max(hi - lo, 1.0))


def _dicom_spacing(ds) -> tuple[float, float] | None:
    measures = _functional_item(ds, "PixelMeasuresSequence")  # enhanced multi-frame files keep it there
    for source, keyword in ((ds, "PixelSpacing"), (measures, "PixelSpacing"), (ds, "ImagerPixelSpacing"),
                            (ds, "NominalScannedPixelSpacing")):
        value = source.get(keyword) if source is not None else None
        try:
            row, col = float(value[0]), float(value[1])
        except (TypeError, ValueError, IndexError):
            continue
        if 0 < row < 100 and 0 < col < 100:
            return row, col
    return None


def _identifiers(ds, keep: bool) -> tuple[tuple[str, ...], dict]:
    hidden = []
    values = {}
    for keyword in IDENTIFYING_KEYWORDS:
        if _has_value(ds, keyword):
            hidden.append(keyword)
            if keep:
                values[keyword] = _raw_text(ds, keyword)
    private = sum(1 for tag in ds.keys() if tag.is_private)
    if private:
        hidden.append(f"private tags ({private})")
    return tuple(hidden), values


def _has_value(ds, keyword: str) -> bool:
    """Present and not empty, judged on the raw bytes: converting would validate, and quote, the value."""
    if keyword not in ds:
        return False
    value = ds.get_item(keyword).value
    if isinstance(value, (bytes, bytearray)):
        return bool(bytes(value).strip(b" \x00"))
    return value not in (None, "")


def _raw_text(ds, keyword: str) -> str:
    """An identifying value as text, decoded from its raw bytes.

    pydicom's own conversion validates the value and, when it is malformed, quotes it in a
    warning and a log record; warnings are process-wide, so another session could print it.
    """
    from pydicom.charset import convert_encodings, decode_bytes
    from pydicom.datadict import dictionary_VR

    if dictionary_VR(keyword) == "SQ":
        return "(sequence)"
    value = ds.get_item(keyword).value
    if not isinstance(value, (bytes, bytearray)):
        return str(value)  # already converted by the caller of pydicom, not by us
    encodings = convert_encodings(getattr(ds, "original_character_set", None) or "ISO_IR 6")
    return decode_bytes(bytes(value), encodings, {0x5C}).strip(" \x00")


_SUMMARY_KEYWORDS = (
    "Modality", "BodyPartExamined", "ViewPosition", "PhotometricInterpretation",
    "Manufacturer", "ManufacturerModelName", "BitsStored", "SliceThickness",
    "KVP", "MagneticFieldStrength", "RescaleSlope", "RescaleIntercept",
    "WindowCenter", "WindowWidth",
)


def _summary(ds, pixels: np.ndarray, spacing) -> dict:
    summary = {}
    for keyword in _SUMMARY_KEYWORDS:
        value = ds.get(keyword)
        if value not in (None, ""):
            summary[keyword] = _plain(value)
    summary["Rows"] = int(pixels.shape[1])
    summary["Columns"] = int(pixels.shape[2])
    summary["Frames"] = int(pixels.shape[0])
    summary["Pixel spacing (mm)"] = f"{spacing[0]:.4g} x {spacing[1]:.4g}" if spacing else "not stated"
    meta = getattr(ds, "file_meta", None)
    syntax = getattr(meta, "TransferSyntaxUID", None) if meta is not None else None
    if syntax is not None:
        summary["Transfer syntax"] = syntax.name
    sop = ds.get("SOPClassUID")
    if sop is not None:
        summary["SOP class"] = getattr(sop, "name", str(sop))
    return summary


def _plain(value):
    if hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
        return ", ".join(str(v) for v in value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)
