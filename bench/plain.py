"""The plain ways, measured beside ours: what the code did before, or what a tutorial does.

Kept here, not in ``core``, so every run re-measures the "before" side of each change on
the same machine in the same minutes as the "after" side.
"""

from __future__ import annotations

import io

import numpy as np


def to_geometry_skimage(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The map enlarged with ``skimage.transform.resize`` (what the map enlargement did before)."""
    from skimage.transform import resize

    out = resize(saliency.astype(np.float32), shape, order=1, anti_aliasing=False, preserve_range=True)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def overlay_repeat(image: np.ndarray, saliency: np.ndarray, *, opacity: float = 0.5) -> np.ndarray:
    """The blend with the grey image copied to three channels first (the previous overlay)."""
    from core.render import colormap_lut

    grey = np.repeat(np.clip(image, 0, 1)[..., None] * 255.0, 3, axis=-1)
    colour = colormap_lut("Turbo")[np.clip((saliency * 255).astype(np.int32), 0, 255)].astype(np.float32)
    weight = opacity * np.where(saliency >= 0.0, saliency, 0.0)[..., None]
    return np.clip(grey * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)


def png_default(rgb: np.ndarray) -> bytes:
    """PNG with Pillow's default zlib level 6 (the previous ``png_bytes``)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def pil_generator(paths, labels, n_classes: int, *, size: int, batch_size: int, seed: int = 0,
                  mean: float = 0.5, std: float = 0.25):
    """The classic Keras-tutorial loop: open and decode every file with PIL for every batch.

    Grey, resized to the model input (bilinear), scaled to [0, 1] and standardised like our
    pipeline; shuffled each epoch; endless, as ``model.fit(generator, steps_per_epoch=...)``
    expects. No augmentation, which only makes this side faster.
    """
    from PIL import Image

    paths = list(paths)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    eye = np.eye(n_classes, dtype=np.float32)
    while True:
        order = rng.permutation(len(paths))
        for start in range(0, len(order), batch_size):
            chosen = order[start:start + batch_size]
            images = []
            for i in chosen:
                with Image.open(paths[i]) as image:
                    grey = image.convert("L").resize((size, size), Image.BILINEAR)
                images.append(np.asarray(grey, np.float32) / 255.0)
            x = (np.stack(images)[..., None] - mean) / std
            yield x.astype(np.float32), eye[labels[chosen]]
