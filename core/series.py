"""Whole series from files: a zip read in memory, slices grouped by series and put in order.

A series arrives as several DICOM files, a zip of them, or a DICOMweb retrieval (the
(name, bytes) pairs of :func:`core.dicomweb.fetch_source`). :func:`group_series` separates
mixed series by Series Instance UID, orders each one's slices along the slice normal (falling
back to the instance number, then to the order given) and stacks them into one
:class:`core.io.Scan` whose frames are the slices in native units (each slice through
:func:`core.io.load_scan`, so CT is in Hounsfield units after its own rescale).

Nothing is written to disk: a zip is read in memory and refused when it looks like a
decompression bomb, is encrypted, or names paths outside itself. Notes are sentences with
counts and file names, never header values (UIDs, descriptions and names stay out of them).
"""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pydicom

from core.io import MAX_TOTAL_PIXELS, Scan, ScanError, load_scan
from core.quiet import quiet, silence

#: Most files read from one zip or grouped at once (a large CT series is about 1,000 slices).
MAX_FILES = 2000
#: Most bytes a zip may expand to, declared and actual (about 1,000 CT slices of 512 x 512).
MAX_TOTAL_BYTES = 1 << 30
#: Largest expansion of one member (uncompressed / compressed). Real DICOM slices shrink 2-20
#: times with deflate; a crafted bomb expands about 1,000 times.
MAX_RATIO = 200
#: Two slices closer than this along the normal (mm) share a position.
SAME_POSITION_MM = 1e-3
#: Orientation cosines further apart than this mean a different slice direction.
SAME_ORIENTATION = 1e-3

silence(["pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils"])


class SeriesError(ScanError):
    """Files or a zip that cannot be made into a series; ``str(err)`` is one sentence."""


@dataclass(frozen=True)
class Series:
    """The slices of one series, in order, as one scan.

    Attributes
    ----------
    scan : Scan
        Frames ``(n_slices, rows, cols)`` in native units; window, inversion and pixel
        spacing from the middle slice; ``header["Slices"]`` and, when the positions allow,
        ``header["Slice spacing (mm)"]``.
    description : str
        A label without identifiers ("CT series 3, 24 slices of 128 x 128"); the Series
        Description is added only with ``keep_identifiers=True``.
    modality : str or None
    positions : tuple of float or None
        Each slice's position along the slice normal in mm, in slice order (None when unknown).
    instance_numbers : tuple of int or None
    ordered_by : str
        ``"position"``, ``"instance number"``, ``"file order"`` or ``"frames"`` (one
        multi-frame file, kept in its stored order).
    names : tuple of str
        File name of each slice, in slice order.
    slice_spacing : float or None
        Median distance between neighbouring slices along the normal, in mm.
    notes : tuple of str
        One sentence per thing worth knowing (order used, slices left out, uneven gaps).
    """

    scan: Scan
    description: str
    modality: str | None
    positions: tuple[float | None, ...]
    instance_numbers: tuple[int | None, ...]
    ordered_by: str
    names: tuple[str, ...]
    slice_spacing: float | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_slices(self) -> int:
        return self.scan.n_frames


# ----------------------------------------------------------------------------- zip

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a member, or the end record of an empty archive


def is_zip(data: bytes) -> bool:
    """Whether the bytes start like a zip archive."""
    return bytes(data[:4]) in _ZIP_MAGIC


def read_zip(data: bytes, *, max_files: int = MAX_FILES, max_total_bytes: int = MAX_TOTAL_BYTES,
             max_ratio: float = MAX_RATIO) -> list[tuple[str, bytes]]:
    """The files of a zip archive as (name, bytes), read in memory only.

    Directory entries, macOS resource forks (``__MACOSX/``, ``._name``) and ``DICOMDIR`` are
    skipped. A zip that names a path outside itself (``../``, ``/etc/...``, ``C:\\...``) is
    refused: a scanner's export never does that, an attack does.

    Parameters
    ----------
    data : bytes
        The whole archive.
    max_files : int
        Most member files.
    max_total_bytes : int
        Most bytes all members expand to, checked against the declared sizes before reading
        and against the bytes actually read while reading.
    max_ratio : float
        Largest expansion of one member (declared size / compressed size).

    Returns
    -------
    list of (str, bytes)
        Member path inside the archive and its content, in archive order.

    Raises
    ------
    SeriesError
        One sentence: not a zip or damaged, encrypted, a compression method that cannot be
        read, too many files, too large, a likely zip bomb, or an unsafe member path.

    Examples
    --------
    >>> buffer = io.BytesIO()
    >>> with zipfile.ZipFile(buffer, "w") as archive:
    ...     archive.writestr("series/slice1.dcm", b"...")
    >>> read_zip(buffer.getvalue())
    [('series/slice1.dcm', b'...')]
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(bytes(data)))
        members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise SeriesError("This file is not a zip archive or the archive is damaged; upload the DICOM files of "
                          "one series or a zip of them.") from None
    with archive:
        files = [m for m in members if not m.is_dir() and not _skipped(m.filename)]
        if any(not _safe_member_path(m.filename) for m in members):
            raise SeriesError("The zip archive names files outside itself (such as ../ or an absolute path), "
                              "which a scanner's export never does; it was refused, so zip the series folder "
                              "again.")
        if any(m.flag_bits & 0x1 for m in files):
            raise SeriesError("The zip archive is encrypted (password-protected); zip the files again without a "
                              "password.")
        if len(files) > max_files:
            raise SeriesError(f"The zip archive holds {len(files)} files, more than the {max_files} read at once; "
                              "zip one series at a time.")
        declared = sum(m.file_size for m in files)
        if declared > max_total_bytes:
            raise SeriesError(_too_large(declared, max_total_bytes))
        for member in files:
            if member.file_size > max_ratio * max(member.compress_size, 1) and member.file_size > 1 << 20:
                raise SeriesError(f"A file in the zip archive expands {member.file_size / max(member.compress_size, 1):,.0f} "
                                  "times, as a decompression bomb does, so the archive was refused.")
        out = []
        total = 0
        for member in files:
            try:
                content = _read_member(archive, member, limit=max_total_bytes - total)
            except NotImplementedError:
                raise SeriesError("The zip archive uses a compression method that cannot be read here; zip the "
                                  "files again with the usual (deflate) compression.") from None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError):
                raise SeriesError("The zip archive is damaged (a file in it fails its check); zip the series "
                                  "again.") from None
            if content is None:
                raise SeriesError(_too_large(total + member.file_size + 1, max_total_bytes))
            total += len(content)
            out.append((member.filename, content))
    return out


def _read_member(archive: zipfile.ZipFile, member: zipfile.ZipInfo, *, limit: int) -> bytes | None:
    """A member's bytes, read in chunks; None once more than ``limit`` bytes or more than its
    declared size come out (a header that lies about the size)."""
    cap = min(limit, member.file_size)
    chunks = []
    size = 0
    with archive.open(member) as stream:
        while True:
            chunk = stream.read(1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > cap:
                return None
            chunks.append(chunk)
    return b"".join(chunks)


def _too_large(size: int, limit: int) -> str:
    return (f"The zip archive expands to at least {_bytes(size)}, more than the {_bytes(limit)} read at once; "
            "zip one series at a time.")


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def _skipped(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return ("__MACOSX" in path.parts or path.name.startswith("._") or path.name.upper() == "DICOMDIR"
            or path.name in (".DS_Store", "Thumbs.db"))


def _safe_member_path(name: str) -> bool:
    normal = name.replace("\\", "/")
    if normal.startswith("/") or (len(normal) > 1 and normal[1] == ":") or "\x00" in normal:
        return False
    return ".." not in PurePosixPath(normal).parts


def expand_zips(files: list[tuple[str, bytes]], **limits) -> list[tuple[str, bytes]]:
    """Files as given, with each zip among them replaced by its members (``zipname/member``).

    ``limits`` go to :func:`read_zip`. Example: the files of a multi-file upload, some of
    which may be zips, ready for :func:`group_series`.
    """
    out = []
    for name, data in files:
        if is_zip(data):
            out.extend((f"{name}/{member}", content) for member, content in read_zip(data, **limits))
        else:
            out.append((name, bytes(data)))
    return out


# ----------------------------------------------------------------------------- grouping and order

@dataclass
class _Slice:
    index: int  # position in the files given
    name: str
    data: bytes
    series_key: str | None
    series_number: int | None
    modality: str | None
    description: str | None
    size: tuple[int, int] | None
    frames: int
    position: np.ndarray | None  # ImagePositionPatient, mm
    orientation: np.ndarray | None  # ImageOrientationPatient, 6 cosines
    instance_number: int | None


def group_series(files: list[tuple[str, bytes]], *, max_files: int = MAX_FILES,
                 keep_identifiers: bool = False) -> tuple[list[Series], list[str]]:
    """Separate files into series and stack each one's slices in order.

    Parameters
    ----------
    files : list of (str, bytes)
        File names and contents (several uploads, :func:`read_zip`'s output, or
        :func:`core.dicomweb.fetch_source`'s).
    max_files : int
        Most files grouped at once.
    keep_identifiers : bool
        Passed to :func:`core.io.load_scan` (``Scan.identifiers``) and adds the Series
        Description to ``Series.description``.

    Returns
    -------
    (list of Series, list of str)
        Series by series number; notes about the whole lot (how many series were found,
        files left out). Each series has its own notes too.

    Raises
    ------
    SeriesError
        When no file is a usable DICOM image slice, or there are too many files.

    Examples
    --------
    >>> series, notes = group_series(read_zip(zip_bytes))  # doctest: +SKIP
    >>> series[0].ordered_by, series[0].scan.frames.shape  # doctest: +SKIP
    ('position', (24, 128, 128))
    """
    files = list(files)
    if not files:
        raise SeriesError("No files were given; upload the DICOM files of one series or a zip of them.")
    if len(files) > max_files:
        raise SeriesError(f"{len(files)} files were given, more than the {max_files} grouped at once; "
                          "upload one series at a time.")
    notes: list[str] = []
    slices: list[_Slice] = []
    not_dicom: list[str] = []
    no_pixels: list[str] = []
    for index, (name, data) in enumerate(files):
        item = _read_header(index, str(name), bytes(data))
        if item is None:
            not_dicom.append(str(name))
        elif item.size is None:
            no_pixels.append(str(name))
        else:
            slices.append(item)
    if not_dicom:
        notes.append(f"{_count(len(not_dicom), 'file')} {'is' if len(not_dicom) == 1 else 'are'} not DICOM and "
                     f"{'was' if len(not_dicom) == 1 else 'were'} left out ({_names(not_dicom)}).")
    if no_pixels:
        notes.append(f"{_count(len(no_pixels), 'DICOM file')} {'holds' if len(no_pixels) == 1 else 'hold'} no image "
                     f"pixels (a report, a plan or a directory) and {'was' if len(no_pixels) == 1 else 'were'} left "
                     f"out ({_names(no_pixels)}).")

    groups: dict[str | None, list[_Slice]] = {}
    for item in slices:
        groups.setdefault(item.series_key, []).append(item)
    built: list[tuple[tuple, Series]] = []
    for key, members in groups.items():
        found, left_out = _series_of_group(members, keep_identifiers, unknown_series=key is None)
        notes.extend(left_out)
        for series in found:
            first = members[0]
            built.append(((first.series_number is None, first.series_number or 0, first.index), series))
    built.sort(key=lambda pair: pair[0])
    result = [series for _, series in built]
    if not result:
        if not slices and not no_pixels:
            raise SeriesError("None of the files is a DICOM file; upload the DICOM files of one series or a zip "
                              "of them.")
        if not slices:
            raise SeriesError("None of the DICOM files holds image pixels (they are reports, plans or "
                              "directories); upload the image files of a series.")
        raise SeriesError("None of the DICOM slices could be read as an image; export the series again from the "
                          "imaging system.")
    n_slices = sum(s.n_slices for s in result)
    if len(result) == 1:
        notes.insert(0, f"Found one series of {_count(n_slices, 'slice')} in {_count(len(files), 'file')}.")
    else:
        notes.insert(0, f"Found {len(result)} series in {_count(len(files), 'file')}; each is shown on its own, "
                        "because slices of different series do not belong in one stack.")
    return result, notes


def _series_of_group(members: list[_Slice], keep_identifiers: bool, *,
                     unknown_series: bool) -> tuple[list[Series], list[str]]:
    """One series of single-frame slices, plus one per multi-frame file (each a stack of its own);
    and the notes of any that could not be built."""
    out: list[Series] = []
    lost: list[str] = []
    multi = [m for m in members if m.frames > 1]
    single = [m for m in members if m.frames <= 1]
    for item in multi:
        notes = [f"{item.name} is a multi-frame file; its {item.frames} frames are shown in their stored order."]
        series = _build([item], "frames", keep_identifiers, notes)
        if series is not None:
            out.append(series)
        else:
            lost.extend(notes[1:])
    if not single:
        return out, lost
    notes: list[str] = []
    if unknown_series:
        one = len(single) == 1
        notes.append(f"{_count(len(single), 'file')} state{'s' if one else ''} no series (Series Instance UID) "
                     f"and {'is' if one else 'are'} treated as one series.")
    sizes = Counter(m.size for m in single)
    size, _ = sizes.most_common(1)[0]
    odd = [m for m in single if m.size != size]
    if odd:
        notes.append(f"{_count(len(odd), 'slice')} of another size than the series' {size[1]} x {size[0]} "
                     f"{'was' if len(odd) == 1 else 'were'} left out ({_names([m.name for m in odd])}).")
        single = [m for m in single if m.size == size]
    ordered, ordered_by, positions, order_note = _order(single)
    notes.append(order_note)
    series = _build(ordered, ordered_by, keep_identifiers, notes, positions=positions)
    if series is not None:
        out.append(series)
    else:
        lost.extend(note for note in notes if note != order_note)
    return out, lost


def _order(slices: list[_Slice]) -> tuple[list[_Slice], str, list[float | None], str]:
    """Slices by position along the normal, else by instance number, else as given; and a
    sentence saying which was used and why."""
    n = len(slices)
    if n == 1:
        return slices, "file order", [_along_normal(slices[0])], "The series has a single slice."
    reason = ""
    with_geometry = [s for s in slices if s.position is not None and s.orientation is not None]
    if len(with_geometry) == n:
        reference = slices[0].orientation
        if all(np.allclose(s.orientation, reference, atol=SAME_ORIENTATION) for s in slices):
            along = [_along_normal(s, reference) for s in slices]
            ranked = sorted(range(n), key=lambda i: along[i])
            gaps = np.diff([along[i] for i in ranked])
            if np.all(gaps > SAME_POSITION_MM):
                return ([slices[i] for i in ranked], "position", [along[i] for i in ranked],
                        "Slices are ordered by their position along the slice normal (Image Position Patient).")
            reason = "several slices share one position"
        else:
            reason = "the slices' orientations differ"
    else:
        reason = f"{_count(n - len(with_geometry), 'slice')} lack{'s' if n - len(with_geometry) == 1 else ''} a position or orientation"
    numbers = [s.instance_number for s in slices]
    if all(v is not None for v in numbers) and len(set(numbers)) == n:
        ranked = sorted(range(n), key=lambda i: numbers[i])
        return ([slices[i] for i in ranked], "instance number", [_along_normal(slices[i]) for i in ranked],
                f"Slices are ordered by instance number, because {reason}.")
    why = "instance numbers are missing" if any(v is None for v in numbers) else "instance numbers repeat"
    return (slices, "file order", [_along_normal(s) for s in slices],
            f"Slices are kept in the order the files came in, because {reason} and {why}.")


def _along_normal(item: _Slice, orientation: np.ndarray | None = None) -> float | None:
    orientation = item.orientation if orientation is None else orientation
    if item.position is None or orientation is None:
        return None
    normal = np.cross(orientation[:3], orientation[3:])
    return float(np.dot(item.position, normal))


def _build(slices: list[_Slice], ordered_by: str, keep_identifiers: bool, notes: list[str], *,
           positions: list[float | None] | None = None) -> Series | None:
    """Load each slice with :func:`load_scan` and stack them; None when none loads."""
    rows, cols = slices[0].size
    if sum(s.frames for s in slices) * rows * cols > MAX_TOTAL_PIXELS:
        notes.append(f"The series' {_count(len(slices), 'slice')} of {cols} x {rows} pixels are too many to hold in "
                     "memory and it was left out.")
        return None
    scans: list[Scan] = []
    kept: list[int] = []
    failed: list[str] = []
    for i, item in enumerate(slices):
        try:
            scan = load_scan(item.data, item.name, keep_identifiers=keep_identifiers)
        except ScanError:
            failed.append(item.name)
            continue
        if scans and scan.frames.shape[1:] != scans[0].frames.shape[1:]:
            failed.append(item.name)  # e.g. colour among grey slices
            continue
        scans.append(scan)
        kept.append(i)
    if failed:
        notes.append(f"{_count(len(failed), 'slice')} could not be read as images of this series and "
                     f"{'was' if len(failed) == 1 else 'were'} left out ({_names(failed)}).")
    if not scans:
        return None
    kept_slices = [slices[i] for i in kept]
    positions = [positions[i] for i in kept] if positions is not None else [None] * len(kept)
    # One entry per frame: a multi-frame file repeats its name and number for each of its frames.
    per_frame = [(item, position) for item, scan, position in zip(kept_slices, scans, positions)
                 for _ in range(scan.n_frames)]
    frames = scans[0].frames if len(scans) == 1 else np.concatenate([s.frames for s in scans], axis=0)
    middle = scans[len(scans) // 2]
    spacing_between = _slice_spacing(positions, notes) if ordered_by != "frames" else None
    if len({s.spacing for s in scans}) > 1:
        notes.append("The slices state different pixel spacings; the middle slice's is used.")
    header = dict(middle.header)
    header["Frames"] = int(frames.shape[0])
    header["Slices"] = int(frames.shape[0])
    header["Slice order"] = ordered_by
    if spacing_between is not None:
        header["Slice spacing (mm)"] = f"{spacing_between:.4g}"
    first = kept_slices[0]
    hidden = tuple(dict.fromkeys(k for s in scans for k in s.hidden))
    warnings = tuple(dict.fromkeys(w for s in scans for w in s.warnings))
    scan = Scan(frames=frames, window=middle.window, invert=middle.invert, spacing=middle.spacing, kind="dicom",
                units=middle.units, name=first.name, header=header, hidden=hidden,
                identifiers=dict(middle.identifiers) if keep_identifiers else {}, warnings=warnings)
    modality = first.modality
    label = f"{modality or 'DICOM'} series{f' {first.series_number}' if first.series_number is not None else ''}"
    label += f", {_count(int(frames.shape[0]), 'slice' if ordered_by != 'frames' else 'frame')} of {cols} x {rows}"
    if keep_identifiers and first.description:
        label += f" ({first.description})"
    return Series(
        scan=scan, description=label, modality=modality, positions=tuple(p for _, p in per_frame),
        instance_numbers=tuple(item.instance_number for item, _ in per_frame), ordered_by=ordered_by,
        names=tuple(item.name for item, _ in per_frame), slice_spacing=spacing_between, notes=tuple(notes),
    )


def _slice_spacing(positions: list[float | None], notes: list[str]) -> float | None:
    known = [p for p in positions if p is not None]
    if len(known) < 2 or len(known) != len(positions):
        return None
    gaps = np.abs(np.diff(known))
    median = float(np.median(gaps))
    if median <= 0:
        return None
    if gaps.max() - gaps.min() > max(0.01 * median, 0.01):
        notes.append(f"The gaps between slices vary from {gaps.min():.3g} to {gaps.max():.3g} mm; a slice may be "
                     "missing or the series may have been acquired in parts.")
    return median


# ----------------------------------------------------------------------------- headers

def _read_header(index: int, name: str, data: bytes) -> _Slice | None:
    """The tags that group and order a slice, read without its pixels; None for non-DICOM."""
    looks_dicom = len(data) >= 132 and data[128:132] == b"DICM"
    if not looks_dicom and not name.lower().endswith((".dcm", ".dicom")):
        return None
    try:
        with quiet():
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not looks_dicom)
            if not looks_dicom and not any(k in ds for k in ("SOPClassUID", "Modality", "Rows")):
                return None
            rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
            return _Slice(
                index=index, name=name, data=data, series_key=_raw_text(ds, "SeriesInstanceUID"),
                series_number=_int(ds, "SeriesNumber"), modality=_raw_text(ds, "Modality"),
                description=_raw_text(ds, "SeriesDescription"),
                size=(rows, cols) if rows and cols else None, frames=max(_int(ds, "NumberOfFrames") or 1, 1),
                position=_floats(ds, "ImagePositionPatient", 3), orientation=_unit_orientation(ds),
                instance_number=_int(ds, "InstanceNumber"),
            )
    except Exception:  # noqa: BLE001 - any unreadable header means "not a usable DICOM file"
        return None


def _raw_text(ds, keyword: str) -> str | None:
    """A value as text from its raw bytes: converting would validate, and a warning quote, it."""
    if keyword not in ds:
        return None
    value = ds.get_item(keyword).value
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("latin-1", errors="replace")
    text = str(value).strip(" \x00") if value is not None else ""
    return text or None


def _int(ds, keyword: str) -> int | None:
    """A numeric value (US, IS), converted by pydicom: these tags identify no one."""
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        if isinstance(value, (list, tuple)) or hasattr(value, "__len__") and not isinstance(value, (str, bytes)):
            value = value[0]
        return int(float(value))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _floats(ds, keyword: str, n: int) -> np.ndarray | None:
    """A multi-valued DS (position, orientation) as n finite floats, or None."""
    try:
        value = ds.get(keyword)
        values = np.array([float(v) for v in value], dtype=float) if value is not None else None
    except (TypeError, ValueError, OverflowError):
        return None
    return values if values is not None and values.shape == (n,) and np.all(np.isfinite(values)) else None


def _unit_orientation(ds) -> np.ndarray | None:
    """ImageOrientationPatient with each direction normalised; None when degenerate."""
    values = _floats(ds, "ImageOrientationPatient", 6)
    if values is None:
        return None
    row, col = values[:3], values[3:]
    if np.linalg.norm(row) < 1e-6 or np.linalg.norm(col) < 1e-6:
        return None
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if np.linalg.norm(np.cross(row, col)) < 1e-6:
        return None
    return np.concatenate([row, col])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _names(names: list[str], shown: int = 3) -> str:
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")
