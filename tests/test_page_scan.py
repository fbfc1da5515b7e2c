"""The Scan page, driven headlessly with AppTest: uploads, geometry, windows, frames, privacy, bad files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from conftest import dicom_bytes, dicom_path
from core.render import display_image
from core.io import load_scan
from page_support import (
    assert_clean,
    assert_image_geometry,
    caption_text,
    figure,
    first_image,
    is_one_sentence,
    png_bytes_of,
    upload,
    go,
    widget,
)
from ui.state import UPLOAD, Keys

pytestmark = pytest.mark.slow


def everything_shown(at) -> str:
    """All text of the page: markdown, captions, messages and every table cell."""
    parts = [e.value for kind in ("markdown", "caption", "title", "subheader", "info", "warning", "error")
             for e in getattr(at, kind)]
    for frame in at.dataframe:
        parts += [str(v) for v in frame.value.to_numpy().ravel()]
    return "\n".join(parts)


def test_dicom_upload_is_shown_in_its_own_geometry(app):
    at = upload(app, "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm"), "application/dicom")
    assert_clean(at)
    assert at.session_state[Keys.SOURCE] == UPLOAD
    spec = figure(at, "scan_figure")
    assert spec["layout"]["title"]["text"] == "RG1_UNCI.dcm"
    assert_image_geometry(spec, (1955, 1841))
    shown = caption_text(at)
    assert "1841 x 1955 px" in shown
    assert "inverted" in shown  # MONOCHROME1: bone white by default
    assert widget(at.checkbox, "Invert (white ↔ black)").value is True


def test_header_table_hides_patient_identifiers(app):
    path = dicom_path("RG1_UNCI.dcm")
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    name, patient_id = str(ds.PatientName), str(ds.PatientID)
    assert name and patient_id
    at = upload(app, path.name, path.read_bytes())
    assert_clean(at)
    header = at.dataframe[0].value
    assert list(header.columns) == ["Attribute", "Value"]
    assert "Modality" in set(header["Attribute"]) and "PatientName" not in set(header["Attribute"])
    shown = everything_shown(at)
    for secret in (name, patient_id, name.split("^")[0]):
        assert secret not in shown
    assert "PatientName" in caption_text(at)  # said to be hidden, not shown

    # Revealing is explicit, for this session only, and comes with a warning.
    widget(at.toggle, "Reveal identifiers for this session").set_value(True)
    at.run()
    assert not at.exception
    assert any("Identifiers are visible" in w.value for w in at.warning)
    assert name in everything_shown(at)
    widget(at.toggle, "Reveal identifiers for this session").set_value(False)
    at.run()
    assert name not in everything_shown(at)


def test_png_upload_keeps_aspect_ratio(app, fullres_dir):
    source = first_image(fullres_dir / "NORMAL")
    data = png_bytes_of(source)
    scan = load_scan(data, "xray.png")
    rows, cols = scan.shape
    assert rows != cols
    at = upload(app, "xray.png", data, "image/png")
    assert_clean(at)
    z = assert_image_geometry(figure(at, "scan_figure"), (rows, cols))
    assert abs(z.shape[1] / z.shape[0] - cols / rows) < 0.01
    assert f"{cols} x {rows} px" in caption_text(at)
    assert "No pixel spacing stated" in caption_text(at)
    header = dict(zip(at.dataframe[0].value["Attribute"], at.dataframe[0].value["Value"]))
    assert header["Format"] == "PNG"


def test_multiframe_dicom_has_a_frame_slider(app):
    at = upload(app, "emri_small.dcm", dicom_bytes("emri_small.dcm"))
    assert_clean(at)
    frames = widget(at.slider, "Frame")
    assert (frames.min, frames.max, frames.value) == (1, 10, 6)  # numbered from 1; the middle frame first
    first = figure(at, "scan_figure")
    assert first["layout"]["title"]["text"] == "emri_small.dcm — frame 6 of 10"
    for index in (7, 2):  # every change counts, not only every second one
        widget(at.slider, "Frame").set_value(index + 1)
        at.run()
        assert_clean(at)
        assert at.session_state[Keys.FRAME] == index
    spec = figure(at, "scan_figure")
    assert spec["layout"]["title"]["text"] == "emri_small.dcm — frame 3 of 10"
    scan = load_scan(dicom_bytes("emri_small.dcm"))
    z = assert_image_geometry(spec, scan.shape)
    expected = (display_image(scan.frame(2), scan.window, scan.invert) * 255).astype(np.uint8)
    assert np.array_equal(z[..., 0], expected)


def test_ct_window_presets_change_the_picture(app):
    data = dicom_bytes("CT_small.dcm")
    at = upload(app, "CT_small.dcm", data)
    assert_clean(at)
    presets = widget(at.selectbox, "Window preset")
    assert {"Header default", "Full range", "Lung", "Mediastinum", "Soft tissue", "Bone", "Brain",
            "Custom"} <= set(presets.options)
    centre = widget(at.slider, "Window centre (level) [HU]")
    assert centre.disabled  # presets fix the window; only "Custom" frees the sliders
    scan = load_scan(data)
    for preset, window in (("Lung", (-600, 1500)), ("Bone", (400, 1800))):
        widget(at.selectbox, "Window preset").set_value(preset)
        at.run()
        assert_clean(at)
        assert f"window centre {window[0]:g}, width {window[1]:g} HU" in caption_text(at)
        z = assert_image_geometry(figure(at, "scan_figure"), scan.shape)
        expected = (display_image(scan.frame(0), window, False) * 255).astype(np.uint8)
        assert np.array_equal(z[..., 0], expected)
    widget(at.selectbox, "Window preset").set_value("Custom")
    at.run()
    assert not widget(at.slider, "Window centre (level) [HU]").disabled
    for width in (500.0, 900.0):
        widget(at.slider, "Window width [HU]").set_value(int(width))
        at.run()
        assert at.session_state[Keys.WINDOW] == (400.0, width)
    for invert in (True, False):
        widget(at.checkbox, "Invert (white ↔ black)").set_value(invert)
        at.run()
        assert at.session_state[Keys.INVERT] is invert


def test_enhanced_ct_sample_shows_hounsfield_window_and_scale_bar(app):
    """eCT_Supplemental keeps its rescale, window and spacing in functional groups."""
    picker = widget(app.selectbox, "Pick a sample…")
    picker.set_value(next(label for label in picker.options if "eCT_Supplemental.dcm" in label))
    at = app.run()
    assert_clean(at)
    assert "Lung" in widget(at.selectbox, "Window preset").options  # offered for CT in HU only
    assert "window centre 49, width 102 HU" in caption_text(at)
    spec = figure(at, "scan_figure")
    assert any("mm" in (shape.get("text") or "") for shape in spec["layout"].get("annotations", []))
    scan = load_scan(dicom_bytes("eCT_Supplemental.dcm"))
    assert_image_geometry(spec, scan.shape)


def test_radiograph_offers_no_ct_presets(app):
    at = upload(app, "RG1_UNCI.dcm", dicom_bytes("RG1_UNCI.dcm"))
    assert set(widget(at.selectbox, "Window preset").options) == {"Header default", "Full range", "Custom"}


@pytest.mark.parametrize("name, data", [
    ("noise.bin", np.random.default_rng(0).bytes(4096)),
    ("noise.dcm", np.random.default_rng(1).bytes(4096)),
    ("MR_truncated.dcm", None),
], ids=["random-bytes", "random-bytes-named-dcm", "truncated-dicom"])
def test_bad_upload_shows_one_sentence_and_the_app_recovers(app, name, data):
    data = dicom_bytes(name) if data is None else data
    at = upload(app, name, data)
    assert not at.exception
    assert len(at.error) == 1
    message = at.error[0].value
    prefix = f"**{name}** cannot be used: "
    assert message.startswith(prefix)
    assert is_one_sentence(message[len(prefix):]), message
    assert "Traceback" not in message and "Error" not in message
    assert not at.get("plotly_chart")  # nothing half-drawn
    assert not at.dataframe

    # The other pages say the same one sentence, and the next good upload works.
    go(at, "explain")
    assert not at.exception and len(at.error) == 1
    go(at, "scan")
    at = upload(at, "CT_small.dcm", dicom_bytes("CT_small.dcm"))
    assert_clean(at)
    assert_image_geometry(figure(at, "scan_figure"), (128, 128))


def test_sample_picker_and_page_switches_keep_the_choice(app):
    picker = widget(app.selectbox, "Pick a sample…")
    ct = next(label for label in picker.options if "CT_small.dcm" in label)
    picker.set_value(ct)
    at = app.run()
    assert_clean(at)
    assert figure(at, "scan_figure")["layout"]["title"]["text"] == "CT_small.dcm"

    at = upload(at, "emri_small.dcm", dicom_bytes("emri_small.dcm"))
    widget(at.slider, "Frame").set_value(8)
    at.run()
    go(at, "preprocessing")
    assert not at.exception
    go(at, "scan")
    assert_clean(at)
    assert widget(at.selectbox, "Pick a sample…").value == UPLOAD
    assert figure(at, "scan_figure")["layout"]["title"]["text"] == "emri_small.dcm — frame 8 of 10"


def test_a_zip_of_a_shuffled_series_is_shown_in_slice_order(app):
    """Slices uploaded shuffled (in a zip) come out ordered by their position; the slice slider walks them."""
    from pydicom.uid import generate_uid

    from series_support import ct_slice, zip_of

    uid = generate_uid()
    order = [3, 0, 4, 1, 2]  # shuffled
    files = [(f"s{i}.dcm", ct_slice(series_uid=uid, position=(-158.1, -179.0, -75.0 + 5 * i), number=i + 1,
                                    shift=100 * i)) for i in order]
    at = upload(app, "series.zip", zip_of(files), "application/zip")
    assert_clean(at)
    slider = widget(at.slider, "Slice")
    assert (slider.min, slider.max) == (1, 5)
    means = []
    for index in range(1, 6):
        widget(at.slider, "Slice").set_value(index)
        at.run()
        assert_clean(at)
        means.append(at.session_state[Keys.SCANS][next(iter(at.session_state[Keys.SCANS]))].frames[index - 1].mean())
    assert means == sorted(means)  # each slice 100 HU brighter than the one below it: the order is the positions'
    assert any("position" in c.value for c in at.caption)


def test_two_series_in_one_upload_are_separated(app):
    from pydicom.uid import generate_uid

    from series_support import ct_slice

    first, second = generate_uid(), generate_uid()
    files = [(f"a{i}.dcm", ct_slice(series_uid=first, position=(0.0, 0.0, float(i)), number=i + 1)) for i in range(3)]
    files += [(f"b{i}.dcm", ct_slice(series_uid=second, position=(0.0, 0.0, float(i)), number=i + 1, size=64))
              for i in range(2)]
    app.file_uploader(key=Keys.UPLOADER).set_value([(n, d, "application/dicom") for n, d in files])
    at = app.run()
    assert_clean(at)
    (picker,) = [s for s in at.selectbox if s.label.startswith("This upload holds 2 series")]
    assert len(picker.options) == 2 and widget(at.slider, "Slice").max == 3  # the first series: 3 slices
    picker.set_value(1).run()
    assert_clean(at)
    assert widget(at.slider, "Slice").max == 2  # the second: 2 slices of 64 x 64
