"""core.series: zips read in memory and refused when unsafe; slices grouped by series and ordered."""

from __future__ import annotations

import random
import re
import struct
import zipfile

import numpy as np
import pytest
from pydicom.uid import generate_uid

from core.io import ScanError, load_scan
from core.series import SeriesError, expand_zips, group_series, read_zip
from series_support import SAGITTAL, axial_series, ct_slice, zip_of
from conftest import dicom_bytes


def one_sentence(text: str) -> bool:
    """Ends with a full stop, one line, no second sentence starting after it."""
    return text.endswith(".") and "\n" not in text and not re.search(r"[.;]\s+[A-Z][a-z]", text.replace("e.g.", ""))


# ----------------------------------------------------------------------------- order

def test_a_shuffled_zip_of_one_series_comes_out_sorted_by_position():
    files = axial_series(7)
    shuffled = files[:]
    random.Random(3).shuffle(shuffled)
    assert shuffled != files

    series, notes = group_series(read_zip(zip_of(shuffled)))

    assert len(series) == 1 and notes[0] == "Found one series of 7 slices in 7 files."
    one = series[0]
    assert one.ordered_by == "position"
    assert one.names == tuple(name for name, _ in files)
    assert one.instance_numbers == tuple(range(1, 8))
    assert one.positions == pytest.approx([-75.0 + 2.5 * k for k in range(7)])
    assert one.slice_spacing == pytest.approx(2.5)
    assert one.scan.frames.shape == (7, 128, 128) and one.scan.units == "HU"
    for k, (name, data) in enumerate(files):  # each frame is that slice after its own modality LUT
        np.testing.assert_array_equal(one.scan.frames[k], load_scan(data, name).frames[0])
    assert one.scan.header["Slices"] == 7 and one.scan.header["Slice spacing (mm)"] == "2.5"
    assert any("position along the slice normal" in note for note in one.notes)


def test_sagittal_slices_are_ordered_along_their_normal_not_by_z():
    uid = generate_uid()
    xs = [30.0, 10.0, 20.0, 0.0]  # normal of SAGITTAL is -x: ascending position = descending x
    files = [(f"x{x:g}.dcm", ct_slice(series_uid=uid, position=(x, -100.0, 50.0), orientation=SAGITTAL,
                                      number=i + 1)) for i, x in enumerate(xs)]
    (one,), _ = group_series(files)
    assert one.ordered_by == "position"
    assert one.names == ("x30.dcm", "x20.dcm", "x10.dcm", "x0.dcm")
    assert one.positions == pytest.approx([-30.0, -20.0, -10.0, 0.0])


def test_without_positions_the_instance_number_orders_and_the_note_says_why():
    uid = generate_uid()
    numbers = [3, 1, 4, 2]
    files = [(f"n{n}.dcm", ct_slice(series_uid=uid, position=None, number=n, shift=n)) for n in numbers]
    (one,), _ = group_series(files)
    assert one.ordered_by == "instance number"
    assert one.instance_numbers == (1, 2, 3, 4)
    assert one.positions == (None,) * 4
    assert "Slices are ordered by instance number, because 4 slices lack a position or orientation." in one.notes


def test_shared_positions_fall_back_to_instance_number():
    uid = generate_uid()
    files = [(f"n{n}.dcm", ct_slice(series_uid=uid, number=n)) for n in (2, 1, 3)]  # all at the same z
    (one,), _ = group_series(files)
    assert one.ordered_by == "instance number" and one.names == ("n1.dcm", "n2.dcm", "n3.dcm")
    assert any("several slices share one position" in note for note in one.notes)


def test_without_positions_or_numbers_the_file_order_is_kept():
    uid = generate_uid()
    files = [(f"f{k}.dcm", ct_slice(series_uid=uid, position=None, number=None, shift=k)) for k in (2, 0, 1)]
    (one,), _ = group_series(files)
    assert one.ordered_by == "file order" and one.names == ("f2.dcm", "f0.dcm", "f1.dcm")
    assert any("order the files came in" in note and "instance numbers are missing" in note for note in one.notes)


def test_uneven_gaps_are_noted():
    files = axial_series(5)
    del files[2]
    (one,), _ = group_series(files)
    assert one.slice_spacing == pytest.approx(2.5)
    assert any("gaps between slices vary from 2.5 to 5 mm" in note for note in one.notes)


# ----------------------------------------------------------------------------- mixed input

def test_mixed_series_are_separated_with_a_sentence():
    first, second = axial_series(3), axial_series(2, spacing=5.0)
    mixed = [first[0], second[1], first[2], second[0], first[1]]
    series, notes = group_series(mixed)
    assert notes[0].startswith("Found 2 series in 5 files;") and one_sentence(notes[0])
    assert sorted(s.n_slices for s in series) == [2, 3]
    for s in series:
        assert s.ordered_by == "position" and list(s.positions) == sorted(s.positions)


def test_other_sizes_non_dicom_and_non_image_files_are_left_out_with_a_sentence_each():
    files = axial_series(3)
    odd = ("small.dcm", ct_slice(series_uid="1.2.3.4", size=64))  # same series UID as nothing else
    uid_of_files = "1.2.826.0.1.3680043.8.498.99"
    same_series = [(name, ct_slice(series_uid=uid_of_files, position=(0, 0, float(i)), number=i + 1))
                   for i, (name, _) in enumerate(files)]
    cropped = ("cropped.dcm", ct_slice(series_uid=uid_of_files, position=(0, 0, 9.0), number=9, size=64))
    inputs = same_series + [cropped, ("notes.txt", b"not an image"), ("report.dcm", dicom_bytes("test-SR.dcm")), odd]

    series, notes = group_series(inputs)

    main = next(s for s in series if s.n_slices == 3)
    assert "cropped.dcm" not in main.names
    assert "1 slice of another size than the series' 128 x 128 was left out (cropped.dcm)." in main.notes
    assert "1 file is not DICOM and was left out (notes.txt)." in notes
    assert any(note.startswith("1 DICOM file holds no image pixels") and "report.dcm" in note for note in notes)
    assert all(one_sentence(note) for note in notes + list(main.notes))


def test_slices_without_a_series_uid_are_one_series_with_a_sentence():
    import io

    import pydicom

    def without_uid(z: float) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(ct_slice(series_uid="1.2.3", position=(0.0, 0.0, z))))
        del ds.SeriesInstanceUID
        buffer = io.BytesIO()
        ds.save_as(buffer)
        return buffer.getvalue()

    (one,), _ = group_series([("a.dcm", without_uid(1.0)), ("b.dcm", without_uid(0.0))])
    assert one.names == ("b.dcm", "a.dcm") and one.ordered_by == "position"
    assert "2 files state no series (Series Instance UID) and are treated as one series." in one.notes


def test_multi_frame_files_stay_whole_in_stored_order():
    (one,), notes = group_series([("emri.dcm", dicom_bytes("emri_small.dcm"))])
    assert one.ordered_by == "frames" and one.n_slices == 10 and len(one.names) == 10
    np.testing.assert_array_equal(one.scan.frames, load_scan(dicom_bytes("emri_small.dcm")).frames)


def test_nothing_usable_is_one_sentence_not_a_crash():
    with pytest.raises(SeriesError) as err:
        group_series([("a.txt", b"hello"), ("b.png", b"\x89PNG\r\n\x1a\n")])
    assert str(err.value) == ("None of the files is a DICOM file; upload the DICOM files of one series or a zip "
                              "of them.")
    with pytest.raises(SeriesError, match="holds image pixels"):
        group_series([("plan.dcm", dicom_bytes("rtplan.dcm"))])
    assert issubclass(SeriesError, ScanError)  # pages that catch ScanError show it as they show any bad file


def test_notes_and_labels_carry_no_identifier_values():
    import pydicom

    files = axial_series(3, description="Secret Study Name")
    header = pydicom.dcmread(__import__("io").BytesIO(files[0][1]))
    (one,), notes = group_series(files + [("x.txt", b"x")])
    identifying = [str(header.PatientName), str(header.PatientID), header.SeriesInstanceUID,
                   header.StudyInstanceUID, "Secret Study Name"]
    text = " ".join(notes + list(one.notes) + [one.description])
    assert not [value for value in identifying if value and value in text]
    assert one.scan.identifiers == {} and "PatientName" in one.scan.hidden
    (revealed,), _ = group_series(files, keep_identifiers=True)
    assert revealed.scan.identifiers["PatientName"] == str(header.PatientName)


# ----------------------------------------------------------------------------- zip safety

def test_read_zip_skips_directories_and_resource_forks():
    buffer = __import__("io").BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("study/", b"")
        archive.writestr("study/series/", b"")
        archive.writestr("study/series/a.dcm", b"A")
        archive.writestr("__MACOSX/study/._a.dcm", b"fork")
        archive.writestr("study/DICOMDIR", b"dir")
    assert read_zip(buffer.getvalue()) == [("study/series/a.dcm", b"A")]


@pytest.mark.parametrize("name", ["../evil.dcm", "study/../../evil.dcm", "/etc/evil.dcm", "C:\\evil.dcm",
                                  "study\\..\\..\\evil.dcm"])
def test_zip_slip_names_are_refused_with_one_sentence(name):
    archive = zip_of([("ok.dcm", b"fine"), (name, b"evil")])
    with pytest.raises(SeriesError) as err:
        read_zip(archive)
    assert "outside itself" in str(err.value) and one_sentence(str(err.value))


def test_a_zip_bomb_is_refused_by_its_ratio():
    bomb = zip_of([("zeros.dcm", bytes(20 << 20))])  # 20 MB of zeros deflate to about 20 kB
    assert len(bomb) < 100_000
    with pytest.raises(SeriesError) as err:
        read_zip(bomb)
    assert "decompression bomb" in str(err.value) and one_sentence(str(err.value))


def test_a_zip_larger_than_allowed_is_refused_by_its_declared_size():
    archive = zip_of([(f"s{k}.dcm", bytes(range(256)) * 40) for k in range(4)], compression=zipfile.ZIP_STORED)
    with pytest.raises(SeriesError) as err:
        read_zip(archive, max_total_bytes=30_000)
    assert str(err.value) == ("The zip archive expands to at least 40.0 kB, more than the 29.3 kB read at once; "
                              "zip one series at a time.")
    with pytest.raises(SeriesError, match="holds 4 files, more than the 3"):
        read_zip(archive, max_files=3)


def test_a_member_that_lies_about_its_size_is_refused_when_read():
    data = bytes(range(256)) * 400  # 102,400 bytes
    archive = bytearray(zip_of([("liar.dcm", data)]))
    # Declare 1,000 bytes in both the local and the central header: the ratio and total checks pass.
    local = archive.index(b"PK\x03\x04")
    struct.pack_into("<I", archive, local + 22, 1000)
    central = archive.index(b"PK\x01\x02")
    struct.pack_into("<I", archive, central + 24, 1000)
    with pytest.raises(SeriesError) as err:
        read_zip(bytes(archive))
    assert "damaged" in str(err.value) and one_sentence(str(err.value))


def test_an_encrypted_zip_is_refused_with_one_sentence():
    archive = bytearray(zip_of([("a.dcm", b"secret" * 100)]))
    for signature, flag_offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = archive.index(signature)
        flags = struct.unpack_from("<H", archive, at + flag_offset)[0]
        struct.pack_into("<H", archive, at + flag_offset, flags | 0x1)
    with pytest.raises(SeriesError) as err:
        read_zip(bytes(archive))
    assert str(err.value) == ("The zip archive is encrypted (password-protected); zip the files again without a "
                              "password.")


@pytest.mark.parametrize("data", [b"", b"PK\x03\x04 truncated", dicom_bytes("CT_small.dcm")])
def test_a_non_zip_or_damaged_zip_is_one_sentence(data):
    with pytest.raises(SeriesError) as err:
        read_zip(data)
    assert str(err.value).startswith("This file is not a zip archive or the archive is damaged;")


def test_expand_zips_mixes_loose_files_and_zips():
    files = axial_series(2)
    expanded = expand_zips([("loose.dcm", files[0][1]), ("two.zip", zip_of(files))])
    assert [name for name, _ in expanded] == ["loose.dcm", "two.zip/slice00.dcm", "two.zip/slice01.dcm"]
