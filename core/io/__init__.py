"""Scans in: bytes of a DICOM, PNG, JPEG or TIFF file become a :class:`Scan`.

Nothing here writes to disk or logs pixel data or header values. Patient identifiers stay
inside this package unless the caller asks for them with ``keep_identifiers=True``.

- :mod:`core.io.sniff` tells the format from the first bytes;
- :mod:`core.io.images` decodes PNG, JPEG, TIFF, BMP and GIF with Pillow;
- :mod:`core.io.dicom` decodes DICOM with pydicom's pixel-data plugins and ``pydicom.pixels``;
- :mod:`core.io.deid` lists and withholds identifying attributes;
- :mod:`core.io.quiet` keeps the decoders' warnings and log records out of the logs while reading.
"""

from __future__ import annotations

from core.io.common import MAX_PIXELS_PER_FRAME, MAX_TOTAL_PIXELS, MIN_SIDE, decoder_failure
from core.io.deid import IDENTIFYING_KEYWORDS
from core.io.scan import Scan, ScanError
from core.io.sniff import looks_like_dicom, looks_like_image, named_dicom

__all__ = ["IDENTIFYING_KEYWORDS", "MAX_PIXELS_PER_FRAME", "MAX_TOTAL_PIXELS", "MIN_SIDE", "Scan", "ScanError",
           "load_scan"]


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
    from core.io.quiet import reading

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ScanError("Expected the bytes of a file.")
    data = bytes(data)
    if len(data) == 0:
        raise ScanError("The file is empty; upload a DICOM, PNG, JPEG or TIFF image.")
    try:
        with reading():
            return _load_any(data, name, keep_identifiers)
    except ScanError:
        raise
    except MemoryError:
        raise ScanError("The image is too large to load in memory.") from None
    except BaseException as exc:  # noqa: BLE001 - any decoder failure becomes one sentence
        if not decoder_failure(exc):
            raise
        raise ScanError(_describe_failure(data)) from None


def _load_any(data: bytes, name: str | None, keep_identifiers: bool) -> Scan:
    from core.io.dicom import load_dicom
    from core.io.images import load_image

    if looks_like_dicom(data):
        return load_dicom(data, name, keep_identifiers)
    if looks_like_image(data):
        return load_image(data, name)
    if named_dicom(name):
        # DICOM written without the 128-byte preamble: let pydicom try.
        return load_dicom(data, name, keep_identifiers)
    raise ScanError("This file is not a DICOM, PNG, JPEG or TIFF image; upload one of those formats.")


def _describe_failure(data: bytes) -> str:
    if looks_like_dicom(data):
        return ("This DICOM file is damaged or truncated and its pixels cannot be decoded; "
                "export it again from the imaging system.")
    return "This image file is damaged or truncated and cannot be decoded; save or download it again."
