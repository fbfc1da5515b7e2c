"""One-click reports: a real chest film and a real CT slice, rendered by poppler and read back.

The PDF is turned into pages with ``pdftoppm`` and into text with ``pdftotext`` (Debian
``poppler-utils``); the embedded images are listed with ``pdfimages`` to check their
resolution and aspect ratio. Identifiers are real values from pydicom's CT_small header.
"""

from __future__ import annotations

import inspect
import io
import shutil
import subprocess
import sys
import warnings
from datetime import datetime, timezone

import numpy as np
import pydicom
import pytest
from PIL import Image

from conftest import CHEST_FULLRES, dicom_bytes, dicom_path
from core import report
from core.io import load_scan
from core.report import DISCLAIMER, ReportContent, ReportError, legend_strip, report_pdf, report_png

FILM = CHEST_FULLRES / "PNEUMONIA" / "person1074_bacteria_3014.jpeg"  # 992 x 520, landscape
SHA = "5d41402abc4b2a76b9719d911017c592" + "7f0a9c3e1b2d4f6a8c0e1f2a3b4c5d6e"
VERSIONS = {"tensorflow": "2.21.0", "keras": "3.15.1", "tf_keras_vis": "0.8.7", "fpdf2": "2.8.9"}
TRUST = (
    ("Faithfulness", "deletion AUC 0.212 (1.84x better than random)",
     "Removing the map's hottest pixels first makes the probability fall faster than a random order."),
    ("Sanity check", "ρ 0.12 with every layer randomised: passes",
     "The map changes when the model is destroyed, so it explains the model."),
    ("Uncertainty", "90% interval 84.0% – 96.5%",
     "Small shifts keep the prediction on the same side of the threshold ≥ 0.42."),
)

needs_poppler = pytest.mark.skipif(shutil.which("pdftoppm") is None, reason="poppler-utils is not installed")


def turbo_lut() -> np.ndarray:
    """The dashboard's colour map; where it lives moves during the refactor of issue 10."""
    try:
        from core.render import colormap_lut
    except ImportError:
        from core.explain import colormap_lut
    return colormap_lut("Turbo")


def synthetic_overlay(grey: np.ndarray, lut: np.ndarray, *, centre=(0.55, 0.3), seed_shift: int = 0) -> np.ndarray:
    """A plausible Grad-CAM-like overlay: two smooth blobs over a lung, blended as the dashboard does."""
    rows, cols = grey.shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    blob = lambda cy, cx, s: np.exp(-(((yy - cy * rows) / (s * rows)) ** 2 + ((xx - cx * cols) / (s * cols)) ** 2))  # noqa: E731
    saliency = blob(*centre, 0.18) + 0.6 * blob(0.45, 0.7, 0.15)
    saliency = np.roll(saliency / saliency.max(), seed_shift, axis=1)
    weight = 0.5 * saliency[..., None]
    colour = lut[np.clip((saliency * 255).astype(int), 0, 255)].astype(np.float32)
    return np.clip(colour * weight + grey[..., None] * 255 * (1 - weight), 0, 255).astype(np.uint8)


def display(scan) -> np.ndarray:
    centre, width = scan.window
    frame = scan.frame().astype(np.float32)
    if frame.ndim == 3:
        frame = frame.mean(axis=2)
    grey = np.clip((frame - (centre - width / 2)) / width, 0, 1)
    return 1 - grey if scan.invert else grey


def chest_content(**changes) -> ReportContent:
    scan = load_scan(FILM.read_bytes(), FILM.name)
    grey = display(scan)
    lut = turbo_lut()
    main = synthetic_overlay(grey, lut)
    fields = dict(
        title="Chest X-ray: pneumonia vs normal", scan_image=grey,
        window_text=f"window centre {scan.window[0]:g}, width {scan.window[1]:g} (full range of the file)",
        overlay=main, colormap_lut=lut, colormap_name="Turbo",
        class_names=("NORMAL", "PNEUMONIA"), probabilities=(0.069, 0.931), predicted_index=1, threshold=0.42,
        probability_note="Probabilities calibrated by temperature scaling (T = 1.31).",
        true_label="PNEUMONIA", method="Grad-CAM++", layer="last_conv",
        methods=(("Grad-CAM", synthetic_overlay(grey, lut, seed_shift=20), "deletion 1.8x random"),
                 ("Grad-CAM++", main, "deletion 1.6x random"),
                 ("SmoothGrad", synthetic_overlay(grey, lut, seed_shift=-40), None)),
        trust=TRUST,
        data_source="Kermany et al. (2018), Mendeley Data v2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0.",
        intended_use="Teaching and demonstrating explainable AI; not for diagnosis.",
        limits=("Paediatric patients from one centre.", "Saliency maps show what raised the class score."),
        versions=VERSIONS, model_sha256=SHA, created=datetime(2026, 3, 4, 10, 30, tzinfo=timezone.utc),
    )
    fields.update(changes)
    return ReportContent(**fields)


@pytest.fixture(scope="module")
def content(data_dir) -> ReportContent:
    return chest_content()


@pytest.fixture(scope="module")
def ct_identifiers() -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(dicom_path("CT_small.dcm"))
    return {"Patient name": str(ds.PatientName), "Patient ID": str(ds.PatientID)}


def ct_content(**changes) -> ReportContent:
    scan = load_scan(dicom_bytes("CT_small.dcm"))
    grey = display(scan)
    lut = turbo_lut()
    overlay = synthetic_overlay(grey, lut, centre=(0.45, 0.55))
    fields = dict(title="Demonstration model", scan_image=grey,
                  window_text=f"window centre {scan.window[0]:g}, width {scan.window[1]:g} HU",
                  overlay=overlay, colormap_lut=lut, colormap_name="Turbo",
                  class_names=("a", "b", "c"), probabilities=(0.1, 0.7, 0.2), predicted_index=1,
                  method="Grad-CAM", layer="last_conv", model_sha256=SHA, created=datetime(2026, 3, 4, 10, 30),
                  spacing=scan.spacing, versions=VERSIONS)
    fields.update(changes)
    return ReportContent(**fields)


def pdf_text(pdf: bytes, tmp_path, name: str = "report") -> str:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(pdf)
    return subprocess.run(["pdftotext", "-raw", str(path), "-"], capture_output=True, text=True, check=True).stdout


def pdf_images(pdf: bytes, tmp_path) -> list[dict]:
    path = tmp_path / "images.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdfimages", "-list", str(path)], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines()[2:]:
        cols = line.split()
        rows.append({"page": int(cols[0]), "width": int(cols[3]), "height": int(cols[4]), "colour": cols[5],
                     "x_ppi": int(cols[12]), "y_ppi": int(cols[13])})
    return rows


# ----------------------------------------------------------------------------- the PDF

@needs_poppler
def test_pdf_renders_as_a4_pages_with_every_part_of_the_case(content, tmp_path):
    pdf = report_pdf(content)
    assert pdf.startswith(b"%PDF-")
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(tmp_path / "report.pdf"), str(tmp_path / "page")], check=True)
    pages = sorted(tmp_path.glob("page-*.png"))
    assert 1 <= len(pages) <= 3
    for page in pages:
        with Image.open(page) as image:
            # A4 at 40 dpi: 210 x 297 mm -> 331 x 468 px (poppler rounds up)
            assert abs(image.width - 331) <= 1 and abs(image.height - 468) <= 1
            assert np.asarray(image.convert("L")).min() < 100  # something is printed on every page

    text = pdf_text(pdf, tmp_path)
    flat = " ".join(text.split())
    for expected in ("Chest X-ray: pneumonia vs normal", DISCLAIMER, "NORMAL", "PNEUMONIA", "6.9%", "93.1%",
                     "P(PNEUMONIA) ≥ 0.42", "True label: PNEUMONIA", "Grad-CAM++", "layer last_conv",
                     "SmoothGrad", "deletion 1.8x random", SHA, "tensorflow 2.21.0", "keras 3.15.1",
                     "tf_keras_vis 0.8.7", "2026-03-04 10:30", "Kermany et al. (2018)", "Paediatric patients",
                     "Teaching and demonstrating", "1 high", "0 low", "window centre", "pixel spacing unknown",
                     f"Page 1 of {len(pages)}", "temperature scaling"):
        assert expected in flat, expected
    for label, value, reading in TRUST:
        assert label in flat and value in flat and reading in flat, label
    assert text.count(DISCLAIMER) >= len(pages)  # in the box and in every footer


@needs_poppler
def test_pdf_images_keep_the_scan_geometry_at_print_resolution(content, tmp_path):
    images = pdf_images(report_pdf(content), tmp_path)
    rows, cols = content.scan_image.shape
    scan, overlay = images[0], images[1]
    assert scan["colour"] == "gray" and overlay["colour"] == "rgb"
    assert (scan["width"], scan["height"]) == (overlay["width"], overlay["height"])  # exactly on top of each other
    assert abs(scan["width"] / scan["height"] - cols / rows) < 0.01
    for image in images:
        if image["width"] > 10:  # not the colour bar
            assert image["x_ppi"] == image["y_ppi"], image  # printed at the image's own aspect ratio
            assert 150 <= image["x_ppi"] <= 210, image


@needs_poppler
def test_a_large_radiograph_is_downscaled_and_a_small_ct_interpolated(data_dir, tmp_path):
    big = chest_content(scan_image=np.tile(np.linspace(0, 1, 2000, dtype=np.float32), (1800, 1)),
                        overlay=np.zeros((1800, 2000, 3), np.uint8), methods=())
    first = pdf_images(report_pdf(big), tmp_path)[0]
    assert first["width"] < 1000 and 150 <= first["x_ppi"] <= 210
    small = ct_content()
    first = pdf_images(report_pdf(small), tmp_path)[0]
    assert first["width"] > 128 and first["width"] == first["height"]


@needs_poppler
def test_mm_scale_bar_appears_only_when_the_spacing_is_known(tmp_path):
    with_spacing = " ".join(pdf_text(report_pdf(ct_content()), tmp_path, "ct").split())
    assert " mm" in with_spacing and "pixel spacing 0.661 x 0.661 mm" in with_spacing
    assert "20 mm" in with_spacing  # 128 px x 0.661 mm = 85 mm wide: a round bar of 20 mm
    without = " ".join(pdf_text(report_pdf(ct_content(spacing=None)), tmp_path, "flat").split())
    assert "pixel spacing unknown, no mm scale" in without


@needs_poppler
def test_identifiers_are_printed_only_when_passed(tmp_path, ct_identifiers):
    name, patient_id = ct_identifiers["Patient name"], ct_identifiers["Patient ID"]
    assert name and patient_id
    plain = report_pdf(ct_content())
    text = pdf_text(plain, tmp_path, "plain")
    info = subprocess.run(["pdfinfo", str(tmp_path / "plain.pdf")], capture_output=True, text=True).stdout
    for value in (name, patient_id):
        assert value not in text and value not in info and value.encode() not in plain
    assert "identifiers" not in text.lower()

    shown = pdf_text(report_pdf(ct_content(identifiers=ct_identifiers)), tmp_path, "shown")
    flat = " ".join(shown.split())
    assert name in flat and patient_id in flat
    assert "printed at the user's request" in flat


@needs_poppler
def test_unicode_names_print_as_they_are(tmp_path):
    assert report._font_paths() is not None, "DejaVu fonts (Debian fonts-dejavu-core) are not installed"
    text = pdf_text(report_pdf(ct_content(method="Grad-CAM++", class_names=("ρ-class", "b", "c"),
                                          trust=(("Sanity", "ρ 0.12 ≥ 0", "—"),))), tmp_path)
    assert "Grad-CAM++" in text and "ρ-class" in text and "ρ 0.12 ≥ 0" in text


@needs_poppler
def test_without_dejavu_core_fonts_spell_the_characters_out(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "_font_paths", lambda: None)
    text = " ".join(pdf_text(report_pdf(ct_content(trust=(("Sanity", "ρ 0.12 ≥ 0.5", "x"),))), tmp_path).split())
    assert "rho 0.12 >= 0.5" in text
    assert "Research and teaching tool - not a diagnostic device." in text


# ----------------------------------------------------------------------------- the PNG figure

def test_png_report_is_a_slide_with_the_disclaimer_and_the_colour_bar(content):
    png = report_png(content)
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size == (1920, 1080) and image.mode == "RGB"
        assert not image.text  # no metadata chunks
        pixels = np.asarray(image)
    band = pixels[80:140].reshape(-1, 3)
    assert (np.abs(band.astype(int) - report.WARN_EDGE).sum(axis=1) < 10).sum() > 2000  # the red disclaimer box
    colours = {tuple(p) for p in pixels.reshape(-1, 3)[::7]}
    lut = content.colormap_lut
    assert sum(tuple(lut[i]) in colours for i in range(0, 256, 16)) >= 12  # the colour bar's steps


def test_png_shows_identifiers_only_when_passed(ct_identifiers):
    plain = np.asarray(Image.open(io.BytesIO(report_png(ct_content()))))
    shown = np.asarray(Image.open(io.BytesIO(report_png(ct_content(identifiers=ct_identifiers)))))
    assert plain.shape == shown.shape
    # The identifiers take a band of their own under the disclaimer; without them it is white.
    band = slice(141, 148)
    assert (plain[band, 60:900] == 255).all()
    assert (np.abs(shown[band, 60:900].astype(int) - report.NOTE_FILL).sum(axis=2) < 6).mean() > 0.5


# ----------------------------------------------------------------------------- legend strip

def test_legend_strip_keeps_the_overlay_and_adds_what_it_shows(content):
    overlay = content.overlay
    out = legend_strip(overlay, model=content.title, class_name="PNEUMONIA", probability=0.931,
                       method="Grad-CAM++", layer="last_conv", date=content.created, colormap_lut=content.colormap_lut)
    rows, cols = overlay.shape[:2]
    assert out.dtype == np.uint8 and out.shape[1:] == (cols, 3) and out.shape[0] > rows + 40
    assert np.array_equal(out[:rows], overlay)
    strip = out[rows:]
    assert (np.abs(strip.reshape(-1, 3).astype(int) - report.WARN_EDGE).sum(axis=1) < 30).sum() > 50  # disclaimer
    colours = {tuple(p) for p in strip.reshape(-1, 3)}
    assert tuple(content.colormap_lut[0]) in colours and tuple(content.colormap_lut[255]) in colours  # colour bar
    assert (strip < 60).all(axis=2).sum() > 200  # dark text


def test_legend_strip_wraps_on_a_narrow_overlay_and_names_no_one(ct_identifiers):
    overlay = np.full((128, 128, 3), 90, np.uint8)
    out = legend_strip(overlay, model="Brain MRI: glioma, meningioma, pituitary tumour or none", class_name="glioma",
                       probability=0.62, method="Faster Score-CAM", layer="block3_conv", date="2026-03-04 10:30",
                       colormap_lut=turbo_lut())
    assert out.shape[1] == 128 and np.array_equal(out[:128], overlay)
    assert out.shape[0] > 128 + 100  # the text wrapped over several lines rather than being cut
    assert not any("ident" in name or "patient" in name for name in inspect.signature(legend_strip).parameters)


# ----------------------------------------------------------------------------- bad content and privacy

@pytest.mark.parametrize("change, words", [
    (dict(overlay=np.zeros((10, 10, 3), np.uint8)), "geometry"),
    (dict(probabilities=(0.5,)), "one probability per class"),
    (dict(predicted_index=5), "not one of the 2 classes"),
    (dict(colormap_lut=np.zeros((10, 3), np.uint8)), "(256, 3)"),
    (dict(scan_image=np.zeros((4, 4, 4))), "scan image"),
    (dict(threshold=1.5), "between 0 and 1"),
    (dict(spacing=(0.0, 1.0)), "spacing"),
    (dict(trust=(("only", "two"),)), "(label, value, one-sentence reading)"),
])
def test_bad_content_gives_one_sentence(data_dir, change, words):
    with pytest.raises(ReportError) as err:
        chest_content(**change)
    message = str(err.value)
    assert words in message and message.endswith(".") and "\n" not in message


def test_nothing_is_written_to_disk(content, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    writes: list[str] = []
    active = [True]

    def audit(event, args):
        if active[0] and event == "open" and len(args) > 1 and isinstance(args[1], str) and set(args[1]) & set("wax+"):
            writes.append(str(args[0]))

    sys.addaudithook(audit)  # audit hooks cannot be removed: this one switches itself off
    try:
        report_pdf(content)
        report_png(content)
        legend_strip(content.overlay, model="m", class_name="c", probability=0.5, method="Grad-CAM", layer=None,
                     date="today", colormap_lut=content.colormap_lut)
    finally:
        active[0] = False
    assert writes == [] and list(tmp_path.iterdir()) == []
