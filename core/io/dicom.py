"""DICOM files through pydicom 3: pixel-data plugins, ``pydicom.pixels`` LUTs, enhanced files.

The modality LUT (Hounsfield units for CT) is applied with ``pydicom.pixels.apply_modality_lut``,
per functional-group item for enhanced multi-frame files; the header's display transform (window
with its VOI LUT Function, or a VOI LUT Sequence) is kept as a :class:`VOI` that applies
``pydicom.pixels.apply_voi_lut``. 12-bit JPEG (JPEG Extended), which no pydicom plugin here
decodes, falls back to imagecodecs (libjpeg-turbo).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from core.io.common import check_size, decoder_failure, finite, range_window
from core.io.deid import identifiers, summary
from core.io.scan import Scan, ScanError
from core.io.sniff import looks_like_dicom

UNREADABLE = "This DICOM file is damaged or truncated and cannot be read; export it again from the imaging system."

#: Transfer syntaxes whose every frame is a JPEG, JPEG-LS or JPEG 2000 codestream, which ends with
#: the marker FF D9 (EOI / EOC). Some decoders fill a cut-short stream silently, so we look first.
_FF_D9_SYNTAXES = (
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91",
    "1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203",
)
#: JPEG Baseline and JPEG Extended: 12-bit streams (Extended) fail in every pydicom plugin here.
_JPEG_LOSSY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51")
_RLE = "1.2.840.10008.1.2.5"


@dataclass(frozen=True, repr=False)
class VOI:
    """A DICOM header's VOI transform (PS3.3 C.11.2), applied by ``pydicom.pixels.apply_voi_lut``.

    ``header`` holds only the attributes the transform reads (window, VOI LUT Function, VOI LUT
    Sequence, bits stored, rescale), none that identify anyone. :meth:`apply` maps values after
    the modality LUT onto [0, 1], 0 being the transform's lowest output.
    """

    header: object
    description: str

    def __repr__(self) -> str:
        return self.description

    @cached_property
    def _range(self) -> tuple[float, float]:
        if "VOILUTSequence" in self.header:  # a VOI LUT's output spans its descriptor's bit depth (C.11.2.1.1)
            return 0.0, float(2 ** int(self.header.VOILUTSequence[0].LUTDescriptor[2]) - 1)
        # A window clamps: far below and far above give its lowest and highest outputs.
        low, high = self._pydicom(np.array([-(2 ** 30), 2 ** 30], np.float64))
        return float(low), float(high)

    def _pydicom(self, values: np.ndarray) -> np.ndarray:
        from pydicom.pixels import apply_voi_lut

        if "VOILUTSequence" in self.header:  # a lookup table is indexed by whole values
            values = np.rint(np.clip(values, -(2 ** 31), 2 ** 31 - 1)).astype(np.int64)
        with np.errstate(over="ignore"):  # a sigmoid of a far-off value overflows exp() on its way to 0 or 1
            return np.asarray(apply_voi_lut(values, self.header), np.float64)

    def apply(self, image: np.ndarray) -> np.ndarray:
        low, high = self._range
        out = self._pydicom(np.asarray(image, np.float64))
        return np.clip((out - low) / max(high - low, 1e-12), 0.0, 1.0).astype(np.float32)


def load_dicom(data: bytes, name: str | None, keep_identifiers: bool) -> Scan:
    import pydicom
    from pydicom.errors import InvalidDicomError

    dicm = looks_like_dicom(data)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=not dicm)
    except InvalidDicomError:
        raise ScanError("This file is not a valid DICOM file; upload a DICOM, PNG, JPEG or TIFF image.") from None
    except Exception:  # noqa: BLE001
        raise ScanError(UNREADABLE) from None
    if not dicm and not any(k in ds for k in ("SOPClassUID", "Modality", "Rows")):
        # A forced read turns any bytes into some element; none of the basic ones means not DICOM.
        raise ScanError("This file is not a DICOM, PNG, JPEG or TIFF image (its content does not match "
                        "its .dcm name); upload one of those formats.")
    if len(ds) == 0:
        # pydicom returns an empty dataset when the file ends inside an undefined-length element.
        raise ScanError(UNREADABLE)

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
    check_size(rows, cols, n_frames)

    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if not _can_decode(syntax):
        raise ScanError(f"The pixel data uses {_syntax_name(syntax)}, which this installation "
                        "cannot decode; export it uncompressed or as PNG.")
    if not _ends_complete(ds, syntax, n_frames):
        raise ScanError(_corrupt_message(syntax))
    raw = _decode(ds, syntax, n_frames)

    samples = int(ds.get("SamplesPerPixel") or 1)
    pixels = np.asarray(raw)
    if n_frames == 1 or (pixels.ndim == 2 or (pixels.ndim == 3 and samples == 3)):
        pixels = pixels[np.newaxis]
    notes: list[str] = []
    rescaled = samples == 1 and _modality_lut_source(ds) is not None
    if samples == 1:
        pixels = _modality_lut(pixels, ds)
    pixels = finite(np.asarray(pixels, dtype=np.float32), notes)

    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2")
    units = "HU" if str(ds.get("Modality") or "") == "CT" and rescaled else ""
    voi = None
    if pixels.ndim == 4:
        window = (127.5, 255.0) if int(ds.get("BitsStored") or 8) <= 8 else range_window(pixels)
    else:
        voi = _voi(ds, pixels.shape[0] // 2)
        window = _window_of(voi, pixels)
    spacing = _spacing(ds)
    hidden, values = identifiers(ds, keep_identifiers)
    return Scan(
        frames=pixels, window=window, voi=voi, invert=photometric == "MONOCHROME1", spacing=spacing,
        kind="dicom", units=units, name=name, header=summary(ds, pixels, spacing), hidden=hidden,
        identifiers=values, warnings=tuple(notes),
    )


def _decode(ds, syntax, n_frames: int) -> np.ndarray:
    """The stored pixel values, by pydicom's plugins, or imagecodecs for 12-bit JPEG."""
    if syntax == _RLE:
        # pylibjpeg-rle (Rust) panics on some damaged streams and prints a backtrace to stderr;
        # pydicom's own RLE decoder reports the same streams as errors, for this dataset only.
        ds.pixel_array_options(decoding_plugin="pydicom")
    try:
        return ds.pixel_array
    except BaseException as exc:  # noqa: BLE001
        if not decoder_failure(exc):
            raise
        if syntax in _JPEG_LOSSY:
            fallback = _decode_jpeg_imagecodecs(ds, n_frames)
            if fallback is not None:
                return fallback
        raise ScanError(_corrupt_message(syntax) if getattr(syntax, "is_compressed", False) else
                        "The pixel data is shorter than the header says or damaged, so the file is truncated; "
                        "export the complete file again.") from None


def _decode_jpeg_imagecodecs(ds, n_frames: int) -> np.ndarray | None:
    """JPEG Baseline/Extended frames through libjpeg-turbo (8 and 12 bit); None if it fails too."""
    try:
        import imagecodecs
        from pydicom.encaps import generate_frames

        frames = [imagecodecs.jpeg8_decode(f) for f in generate_frames(ds.PixelData, number_of_frames=n_frames)]
    except Exception:  # noqa: BLE001 - really corrupt: the caller says so
        return None
    shape = (int(ds.Rows), int(ds.Columns))
    if len(frames) != n_frames or any(f.shape[:2] != shape for f in frames):
        return None
    return frames[0] if n_frames == 1 else np.stack(frames)


def _can_decode(syntax) -> bool:
    """Whether an installed pydicom pixel-data plugin (or our JPEG fallback) decodes this syntax."""
    from pydicom.pixels import get_decoder

    if syntax is None or syntax in _JPEG_LOSSY:
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


def _number(value) -> float | None:
    """The first value of a (possibly multi-valued) numeric attribute, if finite."""
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


def _modality_lut_source(ds, frame: int = 0):
    """The dataset holding the modality LUT or rescale of a frame: the file itself, an enhanced file's
    Pixel Value Transformation item, or None when there is none."""
    if any(keyword in ds for keyword in ("RescaleSlope", "RescaleIntercept", "ModalityLUTSequence")):
        return ds
    return _functional_item(ds, "PixelValueTransformationSequence", frame)


def _modality_lut(pixels: np.ndarray, ds) -> np.ndarray:
    """``apply_modality_lut`` frame by frame, each with its own rescale (enhanced files may differ per frame)."""
    from pydicom.pixels import apply_modality_lut

    if _modality_lut_source(ds) is ds:
        return apply_modality_lut(pixels, ds)
    out = np.asarray(pixels, np.float32).copy()
    for f in range(out.shape[0]):
        item = _modality_lut_source(ds, f)
        if item is not None:
            out[f] = apply_modality_lut(out[f], item)
    return out


#: What the VOI transform reads besides the window: the output range depends on them.
_VOI_CONTEXT = ("BitsStored", "PixelRepresentation", "ModalityLUTSequence", "RescaleSlope", "RescaleIntercept")


def _voi(ds, frame: int) -> VOI | None:
    """The header's VOI transform, as a small dataset of the attributes it reads, or None without one."""
    from pydicom.dataset import Dataset

    source = ds
    if not _valid_window(ds) and not ds.get("VOILUTSequence"):
        source = _functional_item(ds, "FrameVOILUTSequence", frame)  # enhanced files keep it per frame
        if source is None or not _valid_window(source):
            return None
    header = Dataset()
    header.PhotometricInterpretation = "MONOCHROME2"  # inversion (MONOCHROME1) is applied after, separately
    for keyword in _VOI_CONTEXT:
        if keyword in ds:
            header[keyword] = ds[keyword]
    rescale = _modality_lut_source(ds, frame)
    if rescale is not None and rescale is not ds:
        for keyword in ("RescaleSlope", "RescaleIntercept"):
            if keyword in rescale:
                header[keyword] = rescale[keyword]
    header.BitsStored = int(ds.get("BitsStored") or 16)
    header.PixelRepresentation = int(ds.get("PixelRepresentation") or 0)
    function = str(source.get("VOILUTFunction") or "LINEAR").upper()
    if ds.get("VOILUTSequence") and ds.VOILUTSequence[0].get("LUTData") is not None:
        header.VOILUTSequence = [ds.VOILUTSequence[0]]
        entries = ds.VOILUTSequence[0].LUTDescriptor[0] or 65536
        description = f"VOI LUT Sequence from the header ({entries} entries)"
    elif _valid_window(source):
        centre, width = _number(source.get("WindowCenter")), _number(source.get("WindowWidth"))
        header.WindowCenter, header.WindowWidth = centre, width
        header.VOILUTFunction = function if function in ("LINEAR", "LINEAR_EXACT", "SIGMOID") else "LINEAR"
        description = f"header window {centre:g} / {width:g} ({header.VOILUTFunction})"
    else:
        return None
    return VOI(header, description)


def _valid_window(ds) -> bool:
    centre, width = _number(ds.get("WindowCenter")), _number(ds.get("WindowWidth"))
    return centre is not None and width is not None and width >= 1


def _window_of(voi: VOI | None, pixels: np.ndarray) -> tuple[float, float]:
    """(centre, width) for the display sliders: the header's window, or the range a VOI LUT spans, or
    the 0.5-99.5 percentile range of the pixels when the header states no display transform."""
    if voi is not None and "WindowCenter" in voi.header:
        return float(voi.header.WindowCenter), float(voi.header.WindowWidth)
    if voi is not None:
        descriptor = voi.header.VOILUTSequence[0].LUTDescriptor
        entries, first = descriptor[0] or 65536, descriptor[1]
        return first + entries / 2.0, float(entries)
    lo, hi = np.percentile(pixels, [0.5, 99.5])
    return float(lo + hi) / 2.0, float(max(hi - lo, 1.0))


def _spacing(ds) -> tuple[float, float] | None:
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
