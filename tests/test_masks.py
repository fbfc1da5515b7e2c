"""Reading mask files and pairing mask folders with image folders (core/masks.py)."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.masks import MaskError, load_mask, pair_masks


@pytest.fixture(scope="module")
def brain_masks(data_dir) -> Path:
    folder = data_dir / "brain_mri_masks"
    if not folder.is_dir():
        pytest.skip(f"{folder} is not available")
    return folder


@pytest.fixture(scope="module")
def real_mask(brain_masks) -> tuple[bytes, np.ndarray]:
    """The bytes of a real radiologist's mask (glioma 209) and its boolean pixels."""
    path = brain_masks / "masks" / "glioma" / "209.png"
    return path.read_bytes(), np.asarray(Image.open(path), bool)


def encode(array: np.ndarray, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, kind)
    return buffer.getvalue()


def palette(grey: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(grey).convert("P").save(buffer, "PNG")
    return buffer.getvalue()


def one_sentence(message: str) -> bool:
    return message.endswith(".") and "\n" not in message and ". " not in message[:-1]


# --- load_mask -------------------------------------------------------------------------------

def test_a_real_mask_loads_with_its_pixel_count(brain_masks, real_mask):
    data, pixels = real_mask
    mask = load_mask(data, (512, 512))
    assert mask.dtype == bool and mask.shape == (512, 512) and np.array_equal(mask, pixels)
    with open(brain_masks / "index.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["mask"] == "masks/glioma/209.png")
    assert mask.sum() == int(row["tumour_pixels"])


def test_other_encodings_of_a_binary_mask_are_accepted(real_mask):
    _, pixels = real_mask
    grey = pixels.astype(np.uint8) * 255
    for data in (encode(grey),                                     # 0/255 greyscale
                 encode(pixels.astype(np.uint8)),                  # 0/1
                 encode(np.stack([grey] * 3, axis=2)),             # RGB with equal channels
                 encode(np.dstack([grey] * 3 + [np.full_like(grey, 255)])),  # opaque RGBA
                 encode(pixels.astype(np.uint16) * 1000),          # 16-bit
                 palette(grey)):
        assert np.array_equal(load_mask(data, (512, 512)), pixels)


def test_a_non_square_mask_keeps_rows_and_columns():
    pixels = np.zeros((30, 50), bool)
    pixels[5:10, 20:40] = True
    assert np.array_equal(load_mask(encode(pixels.astype(np.uint8) * 255), (30, 50)), pixels)


def bad_masks(pixels: np.ndarray) -> dict[str, tuple[bytes, str]]:
    grey = pixels.astype(np.uint8) * 255
    colour = np.stack([grey, np.zeros_like(grey), np.zeros_like(grey)], axis=2)  # red outline
    three_levels = grey.copy()
    three_levels[:10, :10] = 128
    transparent = np.dstack([grey] * 3 + [np.where(pixels, 255, 0).astype(np.uint8)])
    return {
        "not an image": (b"this is not a picture", "not an image"),
        "truncated PNG": (encode(grey)[:200], "not an image"),
        "other size": (encode(grey[:, :500]), "The mask is 500 x 512 pixels but its image is 512 x 512"),
        "empty": (encode(np.zeros_like(grey)), "empty"),
        "whole image": (encode(np.full_like(grey, 255)), "whole image"),
        "grey levels": (encode(three_levels), "3 grey levels"),
        "JPEG": (encode(grey, "JPEG"), "JPEG compression adds grey levels"),
        "colour": (encode(colour), "in colour"),
        "transparent": (encode(transparent), "transparent"),
    }


@pytest.mark.parametrize("case", ["not an image", "truncated PNG", "other size", "empty", "whole image",
                                  "grey levels", "JPEG", "colour", "transparent"])
def test_each_bad_mask_gives_its_own_sentence(real_mask, case):
    data, expected = bad_masks(real_mask[1])[case]
    with pytest.raises(MaskError) as error:
        load_mask(data, (512, 512))
    assert expected in str(error.value) and one_sentence(str(error.value)), str(error.value)


# --- pair_masks ------------------------------------------------------------------------------

def test_the_real_folders_pair_completely(brain_masks):
    pairs, skipped = pair_masks(brain_masks / "images", brain_masks / "masks")
    assert skipped == [] and len(pairs) == 2151
    assert {cls for cls, _, _ in pairs} == {"glioma", "meningioma", "pituitary"}
    assert all(image.stem == mask.stem and image.parent.name == mask.parent.name == cls
               for cls, image, mask in pairs)


def link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_mismatches_are_skipped_with_a_reason_and_nothing_is_written(brain_masks, tmp_path):
    source = brain_masks
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("209", "210", "717"):
        link(source / "images" / "glioma" / f"{name}.jpg", images / "glioma" / f"{name}.jpg")
    for name in ("209", "210", "718"):  # 717 has no mask, 718 no image
        link(source / "masks" / "glioma" / f"{name}.png", masks / "glioma" / f"{name}.png")
    meningioma = sorted((source / "images" / "meningioma").glob("*.jpg"))[0]
    link(meningioma, images / "meningioma" / meningioma.name)
    link(source / "masks" / "meningioma" / f"{meningioma.stem}.png", masks / "meningioma" / f"{meningioma.stem}.png")
    (masks / "meningioma" / "notes.txt").write_text("drawn by hand")  # not a PNG
    (masks / "loose.png").write_bytes(b"")  # outside any class folder
    (images / "glioma" / ".DS_Store").write_bytes(b"")  # hidden: ignored
    before = listing(tmp_path)

    pairs, skipped = pair_masks(images, masks)

    assert [(cls, image.name, mask.name) for cls, image, mask in pairs] == [
        ("glioma", "209.jpg", "209.png"), ("glioma", "210.jpg", "210.png"),
        ("meningioma", meningioma.name, f"{meningioma.stem}.png")]
    reasons = {path.relative_to(tmp_path).as_posix(): reason for path, reason in skipped}
    assert set(reasons) == {"images/glioma/717.jpg", "masks/glioma/718.png", "masks/meningioma/notes.txt",
                            "masks/loose.png"}
    assert reasons["images/glioma/717.jpg"].startswith("No mask for this image")
    assert reasons["masks/glioma/718.png"].startswith("No image for this mask")
    assert "must be PNG" in reasons["masks/meningioma/notes.txt"]
    assert "not inside a class folder" in reasons["masks/loose.png"]
    assert all(one_sentence(reason) for reason in reasons.values())
    assert listing(tmp_path) == before


def test_a_class_without_a_mask_folder_shares_one_reason(brain_masks, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    for name in ("209", "210"):
        link(brain_masks / "images" / "glioma" / f"{name}.jpg", images / "glioma" / f"{name}.jpg")
    masks.mkdir()
    pairs, skipped = pair_masks(images, masks)
    assert pairs == [] and len(skipped) == 2
    assert {reason for _, reason in skipped} == {"The mask folder has no glioma folder, so no glioma image has a mask."}


def test_two_images_with_one_stem_are_ambiguous(brain_masks, tmp_path):
    images, masks = tmp_path / "images", tmp_path / "masks"
    link(brain_masks / "images" / "glioma" / "209.jpg", images / "glioma" / "209.jpg")
    link(brain_masks / "images" / "glioma" / "210.jpg", images / "glioma" / "209.png")
    link(brain_masks / "masks" / "glioma" / "209.png", masks / "glioma" / "209.png")
    pairs, skipped = pair_masks(images, masks)
    assert pairs == [] and len(skipped) == 2 and all("share the name 209" in r for _, r in skipped)


def test_a_missing_folder_is_one_sentence(tmp_path):
    with pytest.raises(MaskError, match="folder .* does not exist"):
        pair_masks(tmp_path / "nowhere", tmp_path)
