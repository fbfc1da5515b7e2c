"""core.routing: a scan goes to the model meant for it, and the page says why."""

from __future__ import annotations

import pytest

from conftest import dicom_bytes
from core.io import load_scan
from core.model import load_model
from core.routing import route, route_by_header

CHEST = ("models/chest", {"title": "Chest X-ray", "routing": {"modalities": ["CR", "DX"], "body_parts": ["CHEST"]}})
BRAIN = ("models/brain", {"title": "Brain MRI", "routing": {"modalities": ["MR"], "body_parts": ["BRAIN", "HEAD"]}})
HANDS = ("models/hands", {"title": "Fractures", "routing": {"modalities": ["CR", "DX"], "body_parts": ["HAND"]}})


def test_the_header_decides_when_it_can():
    chest_cr = load_scan(dicom_bytes("RG1_UNCI.dcm"))  # CR, body part CHEST
    found = route_by_header(chest_cr, [BRAIN, HANDS, CHEST])
    assert found.folder == "models/chest" and "CR of the chest" in found.reason
    head_mr = load_scan(dicom_bytes("emri_small.dcm"))  # MR, body part HEAD
    assert route_by_header(head_mr, [CHEST, BRAIN]).folder == "models/brain"
    mr_no_body = load_scan(dicom_bytes("MR_small.dcm"))  # MR, no body part: the only MR model
    assert route_by_header(mr_no_body, [CHEST, BRAIN]).folder == "models/brain"


def test_the_header_does_not_decide_for_images_or_unknown_kinds():
    assert route_by_header(load_scan(dicom_bytes("CT_small.dcm")), [CHEST, BRAIN]) is None  # no CT model
    nm_body = load_scan(dicom_bytes("JPEG-lossy.dcm"))  # NM, whole body
    assert route_by_header(nm_body, [CHEST, BRAIN]) is None
    chest = load_scan(dicom_bytes("RG1_UNCI.dcm"))
    assert route_by_header(chest, [HANDS]) is None  # a radiograph of a part no model was trained on


@pytest.mark.slow
def test_the_outlier_check_decides_otherwise(models_root, fullres_dir, data_dir):
    """A PNG of a chest film goes to the chest model and a brain slice to the brain model, by fit."""
    from page_support import png_bytes_of

    models = [(str(models_root / task), load_model(models_root / task)) for task in ("brain_mri", "chest_xray")]
    if any(loaded.outlier_threshold is None for _, loaded in models):
        pytest.skip("the models in use have no outlier check (tiny models)")
    film = load_scan(png_bytes_of(sorted((fullres_dir / "NORMAL").glob("*.jpeg"))[0]), "film.png")
    assert route(film, models).folder == str(models_root / "chest_xray")
    slice_ = sorted((data_dir / "brain_mri" / "Training" / "glioma").glob("*.jpg"))[0]
    brain = load_scan(slice_.read_bytes(), slice_.name)
    chosen = route(brain, models)
    assert chosen.folder == str(models_root / "brain_mri") and "looks most like" in chosen.reason


@pytest.mark.slow
def test_a_fracture_radiograph_goes_to_the_fracture_model_and_a_chest_film_does_not(models_root, fullres_dir,
                                                                                  data_dir):
    """With the three default models: by fit for plain images, by the header for a DICOM of a wrist."""
    import io

    import pydicom

    from page_support import png_bytes_of

    tasks = ("brain_mri", "chest_xray", "fracture")
    if not all((models_root / task / "model.keras").is_file() for task in tasks):
        pytest.skip("the fracture model is not in the models folder in use")
    models = [(str(models_root / task), load_model(models_root / task)) for task in tasks]
    if any(loaded.outlier_threshold is None for _, loaded in models):
        pytest.skip("the models in use have no outlier check (tiny models)")
    fractures = data_dir / "fracatlas" / "images" / "fractured"
    for path in sorted(fractures.glob("*.jpg"))[:3]:
        assert route(load_scan(path.read_bytes(), path.name), models).folder == str(models_root / "fracture"), path.name
    film = load_scan(png_bytes_of(sorted((fullres_dir / "NORMAL").glob("*.jpeg"))[0]), "film.png")
    assert route(film, models).folder == str(models_root / "chest_xray")

    wrist = pydicom.dcmread(io.BytesIO(dicom_bytes("RG1_UNCI.dcm")))  # a real CR, its body part changed
    wrist.BodyPartExamined = "WRIST"
    buffer = io.BytesIO()
    wrist.save_as(buffer)
    chosen = route(load_scan(buffer.getvalue(), "wrist.dcm"), models)
    assert chosen.folder == str(models_root / "fracture") and "wrist" in chosen.reason.lower()
