"""Real CT slices for the series tests: copies of pydicom's ``CT_small.dcm`` with their own UIDs,
positions and instance numbers, and pixel values shifted per slice so that an order can be
checked from the pixels alone. Not a test module."""

from __future__ import annotations

import io
import warnings
import zipfile

import numpy as np

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
#: Rows along +y, columns along -z: the slice normal is -x, so z says nothing about the order.
SAGITTAL = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)


def _source():
    import pydicom
    from pydicom.data import get_testdata_file

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def ct_slice(*, series_uid: str, study_uid: str | None = None, position=(-158.1, -179.0, -75.0),
             orientation=AXIAL, number: int | None = 1, shift: int = 0, size: int | None = None,
             description: str | None = None, study_date: str | None = None) -> bytes:
    """One CT slice as Part 10 bytes. ``position=None`` or ``number=None`` leave the tag out;
    ``shift`` is added to every stored pixel value; ``size`` crops to size x size."""
    from pydicom.uid import generate_uid

    ds = _source()
    ds.SeriesInstanceUID = series_uid
    if study_uid:
        ds.StudyInstanceUID = study_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if description is not None:
        ds.StudyDescription = description
    if study_date is not None:
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    if position is None:
        del ds.ImagePositionPatient
    else:
        ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    if number is None:
        del ds.InstanceNumber
    else:
        ds.InstanceNumber = number
    stored = ds.pixel_array
    pixels = stored.astype(np.int32) + shift
    if size is not None:
        pixels = pixels[:size, :size]
        ds.Rows, ds.Columns = size, size
    ds.PixelData = np.ascontiguousarray(pixels.astype(stored.dtype)).tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def axial_series(n: int, *, series_uid: str | None = None, study_uid: str | None = None, spacing: float = 2.5,
                 description: str | None = None, study_date: str | None = None) -> list[tuple[str, bytes]]:
    """n slices in true order (slice k at z = -75 + k * spacing, instance number k + 1, pixels + 10 k)."""
    from pydicom.uid import generate_uid

    series_uid = series_uid or generate_uid()
    return [(f"slice{k:02d}.dcm", ct_slice(series_uid=series_uid, study_uid=study_uid,
                                           position=(-158.1, -179.0, -75.0 + k * spacing), number=k + 1,
                                           shift=10 * k, description=description, study_date=study_date))
            for k in range(n)]


def zip_of(files: list[tuple[str, bytes]], *, compression=zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, data in files:
            archive.writestr(name, data)
    return buffer.getvalue()
