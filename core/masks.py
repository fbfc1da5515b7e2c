"""Expert outlines from user files: read one mask, pair a folder of masks with its images.

A mask is a black-and-white PNG of exactly its image's size, white (the higher of its two values)
where the lesion is. Folders mirror each other: ``images/{class}/N.jpg`` goes with
``masks/{class}/N.png`` (same class folder, same file stem). Nothing here writes anything, next to
the user's files or anywhere else.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from core.data import IMAGE_SUFFIXES  # the files that count as images in a class folder

MASK_SUFFIX = ".png"


class MaskError(ValueError):
    """A mask that cannot be used; ``str()`` is one sentence for the user."""


def load_mask(data: bytes, image_shape: tuple[int, int]) -> np.ndarray:
    """The boolean outline in a mask file, checked against its image's shape.

    Accepted: any image Pillow reads (PNG expected) of the image's size with exactly two values,
    the higher one being the outline (0/255, 0/1, a 1-bit PNG); greyscale, or colour whose red,
    green and blue are equal everywhere; an alpha channel only when it is fully opaque. Refused,
    with one sentence each: not an image, another size, no outlined pixel, outline everywhere,
    more than two grey levels (JPEG compression adds some: masks must be lossless), different
    colour channels, transparency.

    Parameters
    ----------
    data : the mask file's bytes.
    image_shape : (rows, cols) of the image the mask outlines (extra channel dimensions ignored).

    Returns
    -------
    (rows, cols) bool array, True inside the outline.

    >>> buffer = io.BytesIO(); Image.fromarray(np.eye(3, dtype=np.uint8) * 255).save(buffer, "PNG")
    >>> load_mask(buffer.getvalue(), (3, 3)).sum()
    np.int64(3)
    """
    unreadable = MaskError("This file is not an image that can be read; a mask must be a PNG image.")
    try:
        picture = Image.open(io.BytesIO(data))  # reads the header only: the size check costs nothing
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise unreadable from None
    rows, cols = image_shape[:2]  # a colour scan's (rows, cols, channels) works too
    if (picture.height, picture.width) != (rows, cols):
        raise MaskError(f"The mask is {picture.width} x {picture.height} pixels but its image is "
                        f"{cols} x {rows} (width x height); a mask must have exactly its image's size.")
    try:
        picture.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        raise unreadable from None
    jpeg = picture.format == "JPEG"
    if picture.mode == "P":
        picture = picture.convert("RGBA")
    if picture.mode in ("LA", "PA", "RGBA", "La", "RGBa"):
        alpha = np.asarray(picture.getchannel("A"))
        if alpha.min() != alpha.max():
            raise MaskError("The mask has transparent parts; save it as an opaque black-and-white PNG.")
        picture = picture.convert("RGB") if picture.mode.startswith(("RGB", "P")) else picture.convert("L")
    if picture.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F", "RGB"):
        picture = picture.convert("RGB")
    values = np.asarray(picture)
    if values.ndim == 3:
        if not (values == values[..., :1]).all():
            raise MaskError("The mask is in colour (its red, green and blue differ); a mask must be "
                            "black and white.")
        values = values[..., 0]
    levels = np.unique(values)
    if levels.size > 2:
        advice = "; JPEG compression adds grey levels, so save masks as PNG" if jpeg else ""
        raise MaskError(f"The mask has {levels.size} grey levels but a mask has exactly two, black "
                        f"background and white outline{advice}.")
    if levels.size == 1:
        if levels[0] == 0:
            raise MaskError("The mask is empty: it has no white (outlined) pixel.")
        raise MaskError("The mask is white everywhere, so it outlines the whole image rather than a lesion.")
    return values == levels[1]


def _by_stem(root: Path, suffixes: set[str] | None,
             skipped: list[tuple[Path, str]], kind: str) -> dict[tuple[str, str], list[Path]]:
    """{(class, stem): [files]} of the class folders of ``root``; files outside them are skipped."""
    found: dict[tuple[str, str], list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file():
            if suffixes is None or entry.suffix.lower() in suffixes:
                skipped.append((entry, f"This {kind} is not inside a class folder; put it in "
                                       f"{root.name}/<class>/ like the others."))
            continue
        for path in sorted(entry.iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            if suffixes is not None and path.suffix.lower() not in suffixes:
                continue
            found.setdefault((entry.name, path.stem), []).append(path)
    return found


def pair_masks(images_dir: str | Path, masks_dir: str | Path
               ) -> tuple[list[tuple[str, Path, Path]], list[tuple[Path, str]]]:
    """Pair each image of ``images_dir/{class}/`` with its mask ``masks_dir/{class}/{stem}.png``.

    Only the folder listings are read (no image is opened). Every file that cannot be paired is
    returned with one sentence saying why: an image without a mask (the same sentence for every
    image of a class that has no mask folder at all, e.g. FracAtlas's ``not_fractured``), a mask
    without an image, a mask that is not a PNG, several images sharing one stem, a file outside
    the class folders.

    Parameters
    ----------
    images_dir : folder of class sub-folders of images (.jpg, .png, .dcm, ...).
    masks_dir : the mirrored folder of PNG masks.

    Returns
    -------
    pairs : [(class, image_path, mask_path)], sorted by class and image path.
    skipped : [(path, reason)], sorted by path.
    """
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    for folder, what in ((images_dir, "image"), (masks_dir, "mask")):
        if not folder.is_dir():
            raise MaskError(f"The {what} folder {folder} does not exist.")
    skipped: list[tuple[Path, str]] = []
    images = _by_stem(images_dir, IMAGE_SUFFIXES, skipped, "image")
    masks = _by_stem(masks_dir, None, skipped, "mask")
    pairs = []
    for (cls, stem), paths in images.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            skipped += [(p, f"Several images of {cls} share the name {stem} ({names}), so its mask "
                            "is ambiguous; keep one.") for p in paths]
            continue
        candidates = [p for p in masks.get((cls, stem), []) if p.suffix.lower() == MASK_SUFFIX]
        if not (masks_dir / cls).is_dir():  # one shared sentence, so a report can count them
            skipped.append((paths[0], f"The mask folder has no {cls} folder, so no {cls} image has a mask."))
        elif not candidates:
            skipped.append((paths[0], f"No mask for this image: expected {masks_dir / cls / stem}{MASK_SUFFIX}."))
        else:
            pairs.append((cls, paths[0], candidates[0]))
    for (cls, stem), paths in masks.items():
        for path in paths:
            if path.suffix.lower() != MASK_SUFFIX:
                skipped.append((path, f"Masks must be PNG files (lossless); save this one as {stem}{MASK_SUFFIX}."))
            elif (cls, stem) not in images:
                skipped.append((path, f"No image for this mask: expected {images_dir / cls / stem} "
                                      "with an image suffix (.jpg, .png, .dcm, ...)."))
    pairs.sort(key=lambda pair: (pair[0], str(pair[1])))
    skipped.sort(key=lambda item: str(item[0]))
    return pairs, skipped
