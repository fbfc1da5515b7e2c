"""Image degradations a radiograph or MR slice meets in practice: blur, sharpening, gamma, contrast,
noise, crop and rescale, JPEG re-encoding.

Each is a plain function of a grey image in [0, 1] and explicit strengths, returning a grey image in
[0, 1] of the same shape. They serve twice, with the same code:

- **training** (:func:`random_degradation`): every training image, of every class, gets a random
  subset of them at random strengths, so that none of them can tell the classes apart. The default
  chest model of 2026-11 had learned "a blurred film is pneumonia"; blurring normal and pneumonic
  films alike in training takes that shortcut away (``docs/EXPLANATIONS.md``, issue 12);
- **evaluation** (:data:`EVALUATION`, :func:`apply`): a model's metrics under each degradation at
  fixed, realistic strengths, for the model card's robustness table.

Strengths in pixels are given for a 224 px image side (the size of the training sets' files) and
scaled to the image's own size, so "sigma 4 px" means the same amount of blur at any input size.

>>> import numpy as np
>>> image = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
>>> [apply(image, name, strength).shape for name, strength in EVALUATION[:3]]
[(64, 64), (64, 64), (64, 64)]
"""

from __future__ import annotations

import io

import numpy as np

#: Side, in pixels, that strengths in pixels refer to.
REFERENCE_SIDE = 224


def _pixels(value: float, image: np.ndarray) -> float:
    """A length given at :data:`REFERENCE_SIDE` px, on this image's grid."""
    return float(value) * min(image.shape[:2]) / REFERENCE_SIDE


def blur(image: np.ndarray, *, sigma: float) -> np.ndarray:
    """Gaussian blur, ``sigma`` in pixels at 224 px (a soft or moved film: 1-4 px).

    >>> float(blur(np.eye(8, dtype=np.float32), sigma=0).sum())
    8.0
    """
    from scipy.ndimage import gaussian_filter

    if sigma <= 0:
        return np.asarray(image, np.float32)
    return gaussian_filter(np.asarray(image, np.float32), _pixels(sigma, image), mode="nearest").astype(np.float32)


def sharpen(image: np.ndarray, *, amount: float, sigma: float = 2.0) -> np.ndarray:
    """Unsharp masking, as many radiography consoles apply by default: ``x + amount * (x - blur(x))``."""
    image = np.asarray(image, np.float32)
    return np.clip(image + amount * (image - blur(image, sigma=sigma)), 0.0, 1.0).astype(np.float32)


def gamma(image: np.ndarray, *, gamma: float) -> np.ndarray:
    """``x ** gamma``: another detector response or display curve (below 1 brightens)."""
    return np.power(np.clip(np.asarray(image, np.float32), 0.0, 1.0), np.float32(gamma)).astype(np.float32)


def contrast(image: np.ndarray, *, factor: float) -> np.ndarray:
    """Contrast scaled by ``factor`` around the image's mean (another exposure or window), clipped."""
    image = np.asarray(image, np.float32)
    mean = float(image.mean())
    return np.clip(mean + factor * (image - mean), 0.0, 1.0).astype(np.float32)


def noise(image: np.ndarray, *, std: float, seed: int = 0) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``std`` (quantum mottle of a low-dose exposure)."""
    image = np.asarray(image, np.float32)
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0.0, std, image.shape).astype(np.float32), 0.0, 1.0).astype(np.float32)


def crop_scale(image: np.ndarray, *, keep: float) -> np.ndarray:
    """The central ``keep`` share of each side, resized back to the full size (another collimation or
    field of view); ``keep`` above 1 shrinks the image inside a border of its edge values instead."""
    from core.preprocess import resize_to

    image = np.asarray(image, np.float32)
    rows, cols = image.shape[:2]
    if keep <= 1:
        r, c = max(1, round(rows * keep)), max(1, round(cols * keep))
        top, left = (rows - r) // 2, (cols - c) // 2
        return resize_to(image[top:top + r, left:left + c], (rows, cols))
    small = resize_to(image, (max(1, round(rows / keep)), max(1, round(cols / keep))))
    top, left = (rows - small.shape[0]) // 2, (cols - small.shape[1]) // 2
    out = np.pad(small, ((top, rows - small.shape[0] - top), (left, cols - small.shape[1] - left)), mode="edge")
    return out.astype(np.float32)


def jpeg(image: np.ndarray, *, quality: int) -> np.ndarray:
    """Re-encoded as 8-bit JPEG at ``quality`` (1-95), as images are when exported or mailed."""
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.round(np.clip(np.asarray(image, np.float32), 0.0, 1.0) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
        return (np.asarray(decoded.convert("L"), np.float32) / 255.0).astype(np.float32)


#: The plate's width, its screws' length and width, as fractions of the image's long side (its length is the strength).
PLATE_WIDTH, SCREW_LENGTH, SCREW_WIDTH = 0.025, 0.08, 0.01


def implant_opacity(shape: tuple[int, int], centre: tuple[float, float], angle: float, *, length: float,
                    width: float = PLATE_WIDTH, screws: int = 6) -> np.ndarray:
    """Opacity in [0, 1] of a metal plate with ``screws`` screws across it (none: a rod or nail), ``length`` and
    ``width`` fractions of the image's long side, centred at ``centre`` (row, col) along ``angle`` (radians from
    the row axis); edges softened over about a pixel.

    >>> a = implant_opacity((200, 100), (100, 50), 0.0, length=0.35)
    >>> a.shape, float(a[100, 50]), float(a[100, 5]), float(a[5, 50])
    ((200, 100), 1.0, 0.0, 0.0)
    >>> bool(a[:, 50].sum() > 60) and bool(a[100, :].sum() < 20)  # long along the rows, its own axis
    True
    """
    from scipy.ndimage import gaussian_filter

    side = float(max(shape))
    rows, columns = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float32)
    dr, dc = rows - centre[0], columns - centre[1]
    along = dr * np.cos(angle) + dc * np.sin(angle)
    across = -dr * np.sin(angle) + dc * np.cos(angle)
    length, width = length * side, max(width * side, 2.0)
    metal = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
    screw_length, screw_width = SCREW_LENGTH * side, max(SCREW_WIDTH * side, 1.5)
    for k in range(screws):
        position = -length / 2 + (k + 0.5) * length / screws
        metal |= (np.abs(along - position) <= screw_width / 2) & (np.abs(across) <= screw_length / 2)
    return np.clip(gaussian_filter(metal.astype(np.float32), 0.6), 0.0, 1.0)


def limb_axis(limb: np.ndarray) -> float:
    """The long axis of a body-part mask (its coordinates' first principal direction), in radians from the row axis.

    >>> mask = np.zeros((50, 50), bool); mask[5:45, 20:26] = True
    >>> round(abs(limb_axis(mask)), 2) in (0.0, 3.14)
    True
    """
    points = np.argwhere(limb).astype(float)
    if len(points) < 3:
        return 0.0
    _, vectors = np.linalg.eigh(np.cov((points - points.mean(axis=0)).T))
    return float(np.arctan2(vectors[1, -1], vectors[0, -1]))


def implant(image: np.ndarray, *, length: float, seed: int = 0) -> np.ndarray:
    """A metal plate drawn on the limb: white (metal is the brightest thing on a radiograph), ``length`` a fraction
    of the image's long side, laid near the limb's long axis (within about 15 degrees) at a random point of the limb,
    with 0 to 8 screws (0: a rod) and a width of 1.5-3.5% of the side, all drawn from ``seed``.

    Radiographs of fractures often carry plates and screws that follow the fracture (89 of FracAtlas's 91 films with
    metal are fractured); drawn on training films of every class alike, metal can no longer tell the classes apart.

    >>> film = np.zeros((64, 48), np.float32); film[:, 16:32] = 0.5
    >>> out = implant(film, length=0.4, seed=1)
    >>> out.shape, float(out.max()) > 0.8, bool((out[:, :8] == 0).all())
    ((64, 48), True, True)
    """
    from core.preprocess import body_region

    image = np.asarray(image, np.float32)
    rng = np.random.default_rng(seed)
    limb = body_region(image, margin=0.0)
    angle = limb_axis(limb) + float(rng.normal(0.0, np.radians(15)))
    spots = np.argwhere(limb)
    centre = spots[int(rng.integers(len(spots)))] if len(spots) else np.array(image.shape) / 2
    opacity = implant_opacity(image.shape, (float(centre[0]), float(centre[1])), angle, length=float(length),
                              width=float(rng.uniform(0.015, 0.035)), screws=int(rng.integers(0, 9)))
    opacity *= np.float32(rng.uniform(0.85, 1.0))
    return (image * (1.0 - opacity) + opacity * max(float(image.max()), 0.9)).astype(np.float32)


def cast(image: np.ndarray, *, length: float, seed: int = 0) -> np.ndarray:
    """A plaster cast drawn round the limb, or on one side of it a splint (3 in 10), all drawn from ``seed``: a sleeve
    ``length`` a fraction of the image's long side along the limb's axis at a random point of the limb (the largest
    piece of body on the film), reaching 2-6% of the side beyond the skin; the plaster adds a faint grey over the
    whole sleeve, brighter along its outer edges (where the shell is seen side-on), with a grainy texture.

    13 of FracAtlas's 63 validation fractures wear a cast, slab or splint and none of its 397 validation films
    without a fracture does (``assets/labels/fracatlas_looked.csv``); drawn on training films of every class alike,
    a cast can no longer tell the classes apart.

    >>> film = np.zeros((80, 60), np.float32); film[:, 20:40] = 0.5
    >>> out = cast(film, length=0.5, seed=1)
    >>> out.shape, bool(out.max() <= 1.0), bool((out[:, 45:50] > 0).any()), bool((out[:, :5] == 0).all())
    ((80, 60), True, True, True)
    """
    from scipy import ndimage as ndi

    from core.preprocess import body_region

    image = np.asarray(image, np.float32)
    rng = np.random.default_rng(seed)
    side = float(max(image.shape))
    pieces, n = ndi.label(body_region(image, margin=0.0))
    limb = pieces == 1 + int(np.argmax(ndi.sum(pieces > 0, pieces, range(1, n + 1)))) if n else pieces > 0
    angle = limb_axis(limb) + float(rng.normal(0.0, np.radians(5)))
    spots = np.argwhere(limb)
    centre = spots[int(rng.integers(len(spots)))] if len(spots) else np.array(image.shape) / 2
    rows, columns = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    dr, dc = rows - float(centre[0]), columns - float(centre[1])
    along = dr * np.cos(angle) + dc * np.sin(angle)
    across = -dr * np.sin(angle) + dc * np.cos(angle)
    thickness = float(rng.uniform(0.02, 0.06)) * side
    band = np.abs(along) <= float(length) * side / 2
    inside = limb & band
    middle = float(np.median(across[inside])) if inside.any() else 0.0
    half = float(np.percentile(np.abs(across[inside] - middle), 90)) if inside.any() else 0.0
    # the limb's own width: not along a bright film edge or a neighbouring limb that touches it
    sleeve = (ndi.distance_transform_edt(~limb) <= thickness) & band & (np.abs(across - middle) <= half + thickness)
    if rng.random() < 0.3:  # a splint: the shell on one side of the limb's middle only
        sleeve &= (across > middle) if rng.random() < 0.5 else (across < middle)
    rim = sleeve & (ndi.distance_transform_edt(sleeve) <= max(0.006 * side, 1.0))
    grain = ndi.gaussian_filter(rng.normal(0.0, 1.0, image.shape).astype(np.float32), max(0.002 * side, 0.7))
    grain /= max(float(grain.std()), 1e-6)
    plaster = (float(rng.uniform(0.08, 0.2)) * sleeve + float(rng.uniform(0.15, 0.35)) * rim) * (1.0 + 0.15 * grain)
    plaster = ndi.gaussian_filter(np.clip(plaster, 0.0, None), 0.7)
    return np.clip(image + plaster, 0.0, 1.0).astype(np.float32)


def bone_region(image: np.ndarray, body: np.ndarray | None = None) -> np.ndarray:
    """Where bone is likely on a radiograph: body (``body``, else :func:`core.preprocess.body_region`) brighter than
    the body's median and than its surroundings (6 px at 224), with some texture (a flat white strip, a label or the
    film's saturated edge has none), away from the film's edges (10 px at 224).

    >>> film = np.full((224, 224), 0.05, np.float32); film[:, 80:150] = 0.35; film[:, 108:122] = 0.7
    >>> film += np.random.default_rng(0).normal(0, 0.02, film.shape).astype(np.float32)
    >>> bone = bone_region(film)
    >>> bool(bone[112, 115]), bool(bone[112, 90]), bool(bone[112, 20])
    (True, False, False)
    """
    from scipy import ndimage as ndi

    from core.preprocess import body_region

    image = np.asarray(image, np.float32)
    scale = max(image.shape) / REFERENCE_SIDE
    body = body_region(image, margin=0.0) if body is None else body
    if body.all() or body.sum() < 50:
        return np.zeros(image.shape, bool)
    smooth = ndi.gaussian_filter(image, 1.0)
    local = ndi.gaussian_filter(image, 6.0 * scale)
    spread = np.sqrt(np.maximum(ndi.gaussian_filter(image ** 2, 3 * scale) - ndi.gaussian_filter(image, 3 * scale) ** 2,
                                0.0))
    inner = np.zeros(image.shape, bool)
    edge = int(round(10 * scale))
    inner[edge:-edge, edge:-edge] = True
    return (body & inner & (smooth > np.percentile(smooth[body], 50)) & (smooth - local > 0.02) & (spread > 0.01)
            & (smooth < 0.97))


def fracture_line(image: np.ndarray, *, seed: int = 0) -> tuple[np.ndarray, bool]:
    """A synthetic fracture drawn across a bone, and whether one could be drawn (no bone found: the film unchanged).

    A point of :func:`bone_region` is drawn at random; the line runs across the bone there (the local direction of
    the bone's edges, from the structure tensor of the smoothed bone mask, within about 25 degrees) to where the
    bone ends on each side (at most 25 px each way at 224), or, in 3 cases in 10, part of the way from one side (an
    incomplete fracture). It wanders by a random walk (up to 3 px), is 0.6-1.6 px wide, and takes the bone down
    35-80% of the way to the soft tissue's grey (its 25th percentile): a lucent gap in the bone only. In half the
    draws one side of the line is also shifted 1-2.5 px along it near the line, on that bone only (a displaced
    fragment's step in the cortex). All sizes are in pixels at 224 and scale with the film. Used by
    ``train --synthetic-fractures`` to teach what a fracture line looks like, labelled fractured on films that have
    none; no outline is read.

    >>> film = np.full((224, 224), 0.05, np.float32); film[:, 80:150] = 0.35; film[:, 108:122] = 0.7
    >>> film += np.random.default_rng(0).normal(0, 0.02, film.shape).astype(np.float32)
    >>> out, drawn = fracture_line(np.clip(film, 0, 1), seed=3)
    >>> drawn, out.shape, bool(np.abs(out - np.clip(film, 0, 1))[:, :70].max() < 1e-6)
    (True, (224, 224), True)
    >>> bool((np.clip(film, 0, 1) - out)[:, 105:125].max() > 0.15)
    True
    >>> fracture_line(np.zeros((64, 64), np.float32))[1]
    False
    """
    from scipy import ndimage as ndi

    from core.preprocess import body_region

    image = np.asarray(image, np.float32)
    rng = np.random.default_rng(seed)
    scale = max(image.shape) / REFERENCE_SIDE
    body = body_region(image, margin=0.0)
    bone = ndi.binary_opening(bone_region(image, body), iterations=max(1, int(round(scale))))
    spots = np.argwhere(bone)
    if len(spots) < 30:
        return image, False
    centre = spots[int(rng.integers(len(spots)))].astype(float)
    soft = ndi.gaussian_filter(bone.astype(np.float32), 2.0 * scale)
    gy, gx = np.gradient(soft)
    rows, columns = np.mgrid[0:image.shape[0], 0:image.shape[1]].astype(np.float32)
    window = np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * (8.0 * scale) ** 2))
    tensor = np.array([[np.sum(window * gy * gy), np.sum(window * gy * gx)],
                       [np.sum(window * gy * gx), np.sum(window * gx * gx)]])
    across = np.linalg.eigh(tensor)[1][:, -1]  # across the bone's edges
    angle = float(np.arctan2(across[1], across[0]) + rng.normal(0.0, np.radians(25)))
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    ends = []
    for sign in (-1.0, 1.0):
        t = 0.0
        while t < 25 * scale:
            p = np.round(centre + sign * (t + 1) * direction).astype(int)
            if not (0 <= p[0] < image.shape[0] and 0 <= p[1] < image.shape[1]) or not bone[p[0], p[1]]:
                break
            t += 1
        ends.append(sign * (t + rng.uniform(0, 2) * scale))
    low, high = ends
    if high - low < 4 * scale:
        return image, False
    if rng.random() < 0.3:
        keep = rng.uniform(0.4, 0.8) * (high - low)
        low, high = (low, low + keep) if rng.random() < 0.5 else (high - keep, high)
    steps = np.arange(low, high, 0.5 * scale)
    wander = np.clip(np.cumsum(rng.normal(0.0, 0.2 * scale, len(steps))), -3 * scale, 3 * scale)
    points = centre + steps[:, None] * direction + wander[:, None] * normal
    line = np.zeros(image.shape, bool)
    points = np.clip(np.round(points).astype(int), 0, np.array(image.shape) - 1)
    line[points[:, 0], points[:, 1]] = True
    width = rng.uniform(0.6, 1.6) * scale
    distance = ndi.distance_transform_edt(~line)
    gap = np.clip(1.0 - (distance - width / 2) / max(0.7 * scale, 0.5), 0.0, 1.0)
    gap *= ndi.gaussian_filter(bone.astype(np.float32), scale)
    out = image.copy()
    if rng.random() < 0.5:
        side = (rows - centre[0]) * normal[0] + (columns - centre[1]) * normal[1]
        near = np.exp(-np.maximum(distance - 1, 0) ** 2 / (2 * (10 * scale) ** 2))
        pieces = ndi.label(bone)[0]
        fragment = pieces == pieces[int(centre[0]), int(centre[1])]  # this bone only, not its neighbour
        grown = ndi.binary_dilation(fragment, iterations=max(1, int(round(3 * scale))))
        near *= (side > 0) * ndi.gaussian_filter(grown.astype(np.float32), 2.0 * scale)  # no seam in the soft tissue
        step = rng.uniform(1.0, 2.5) * scale * rng.choice((-1.0, 1.0))
        out = out * (1 - near) + ndi.shift(image, step * direction, order=1, mode="nearest") * near
    tissue = float(np.percentile(image[body], 25))
    out = out - rng.uniform(0.35, 0.8) * gap * np.maximum(out - tissue, 0.0)
    return np.clip(out, 0.0, 1.0).astype(np.float32), True


def cell_mix(image: np.ndarray, other: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """``image`` with the cells of a grid that ``cells`` (a boolean grid, rows x columns) marks taken from ``other``.

    >>> a = np.zeros((4, 4), np.float32); b = np.ones((4, 4), np.float32)
    >>> float(cell_mix(a, b, np.array([[True, False], [False, False]])).sum())
    4.0
    """
    rows = np.arange(image.shape[0]) * cells.shape[0] // image.shape[0]
    columns = np.arange(image.shape[1]) * cells.shape[1] // image.shape[1]
    return np.where(cells[rows[:, None], columns[None, :]], other, image).astype(np.float32)


def patchwork(image: np.ndarray, *, share: float, seed: int = 0) -> np.ndarray:
    """A share of the cells of a grid (4 to 12 a side) taken from a blurred (sigma 1-9 px at 224) or a sharpened
    (unsharp amount 0.5-2) copy of the image, all drawn from ``seed``: breaks in texture that are no fracture.

    A deletion curve's blurred cells, a harsh JPEG's blocks, a console's local sharpening all give a film straight
    breaks in its texture; a fracture model that reads such breaks as fractures (``scripts/edge_check.py``) is
    taught here, on every class alike, that they say nothing.

    >>> film = (np.indices((32, 32)).sum(axis=0) % 4 / 3).astype(np.float32)
    >>> out = patchwork(film, share=0.5, seed=3)
    >>> out.shape, bool(np.array_equal(out, patchwork(film, share=0.5, seed=3))), bool((out != film).any())
    ((32, 32), True, True)
    """
    image = np.asarray(image, np.float32)
    rng = np.random.default_rng(seed)
    grid = int(rng.integers(4, 13))
    cells = rng.random((grid, grid)) < share
    if rng.random() < 0.5:
        other = blur(image, sigma=float(rng.uniform(1.0, 9.0)))
    else:
        other = sharpen(image, amount=float(rng.uniform(0.5, 2.0)))
    return cell_mix(image, other, cells)


DEGRADATIONS = {"blur": (blur, "sigma"), "sharpen": (sharpen, "amount"), "gamma": (gamma, "gamma"),
                "contrast": (contrast, "factor"), "noise": (noise, "std"), "crop_scale": (crop_scale, "keep"),
                "jpeg": (jpeg, "quality"), "implant": (implant, "length"), "patchwork": (patchwork, "share"),
                "cast": (cast, "length")}

#: Realistic strengths for the robustness table: each degradation mild and strong.
EVALUATION = (("blur", 2.0), ("blur", 4.0), ("sharpen", 1.0), ("gamma", 0.7), ("gamma", 1.5),
              ("contrast", 0.7), ("contrast", 1.3), ("noise", 0.02), ("noise", 0.05),
              ("crop_scale", 0.85), ("crop_scale", 1.15), ("jpeg", 30), ("jpeg", 10))


def apply(image: np.ndarray, name: str, strength: float, **extra) -> np.ndarray:
    """One named degradation at one strength (its parameter is :data:`DEGRADATIONS`' second item); ``extra``
    goes to the function as it is (``seed`` for noise and the implant)."""
    function, parameter = DEGRADATIONS[name]
    return function(image, **{parameter: strength}, **extra)


def label(name: str, strength: float) -> str:
    """``"blur sigma=4 px"``: a row of the robustness table."""
    parameter = DEGRADATIONS[name][1]
    unit = " px at 224" if parameter == "sigma" else ""
    return f"{name.replace('_', '/')} {parameter}={strength:g}{unit}"


#: Training degradations: (name, probability, low, high); the strength is drawn uniformly in
#: [low, high] (log-uniformly for gamma and contrast, whose neutral value is 1).
TRAINING = (("blur", 0.35, 0.5, 5.0), ("sharpen", 0.2, 0.3, 1.5), ("gamma", 0.5, 0.6, 1.7),
            ("contrast", 0.3, 0.7, 1.4), ("noise", 0.3, 0.005, 0.05), ("jpeg", 0.3, 10, 90))
#: Training changes a task asks for by name in its overrides, off otherwise: a metal plate on the limb (fracture),
#: a patchwork of blurred or sharpened cells, a cast or splint round the limb (fracture).
OPT_IN = ("implant", "patchwork", "cast")
_LOG_UNIFORM = {"gamma", "contrast"}


def training_recipe(overrides: dict | None = None) -> tuple:
    """:data:`TRAINING` with a task spec's overrides (``augment.degradations`` in ``assets/tasks/*.json``):
    ``{"blur": [probability, low, high], "jpeg": null, ...}``; ``null`` leaves a degradation out.

    A fracture line is a few pixels wide: blur at sigma 5 px or JPEG quality 10 would erase the very
    finding, so the fracture task asks for milder ones than the chest films need.

    >>> [name for name, *_ in training_recipe({"jpeg": None, "blur": [0.2, 0.3, 1.0]})]
    ['blur', 'sharpen', 'gamma', 'contrast', 'noise']
    >>> training_recipe({"blur": [0.2, 0.3, 1.0]})[0]
    ('blur', 0.2, 0.3, 1.0)
    """
    overrides = dict(overrides or {})
    unknown = set(overrides) - {name for name, *_ in TRAINING} - set(OPT_IN)
    if unknown:
        raise ValueError(f"unknown degradations: {', '.join(sorted(unknown))}")
    recipe = []
    for name, *values in TRAINING:
        if name in overrides:
            if overrides[name] is None:
                continue
            values = [float(v) for v in overrides[name]]
        recipe.append((name, *values))
    recipe += [(name, *(float(v) for v in overrides[name])) for name in OPT_IN if overrides.get(name) is not None]
    return tuple(recipe)


def recipe_for(facts: dict, kind: str = "task") -> tuple:
    """The degradations a training run draws from: :func:`training_recipe` with the overrides of ``facts`` (a
    task spec, or the model.json it wrote: their ``augment.degradations``), or without them when ``kind`` is
    ``"general"`` (``train --degrade-recipe general``), which still keeps the :data:`OPT_IN` ones asked for.

    >>> facts = {"augment": {"degradations": {"blur": [0.2, 0.3, 1.0], "implant": [0.2, 0.15, 0.45]}}}
    >>> recipe_for(facts)[0], recipe_for(facts, "general")[0]
    (('blur', 0.2, 0.3, 1.0), ('blur', 0.35, 0.5, 5.0))
    >>> recipe_for(facts, "general")[-1]
    ('implant', 0.2, 0.15, 0.45)
    """
    overrides = (facts.get("augment") or {}).get("degradations") or {}
    if kind == "general":
        overrides = {name: value for name, value in overrides.items() if name in OPT_IN}
    return training_recipe(overrides)


def random_degradation(image: np.ndarray, rng: np.random.Generator, recipe=TRAINING) -> np.ndarray:
    """``image`` with each of ``recipe``'s degradations applied with its probability, at a random
    strength, in a random order: the training augmentation, the same for every class."""
    order = rng.permutation(len(recipe))
    for index in order:
        name, probability, low, high = recipe[index]
        if rng.random() >= probability:
            continue
        if name in _LOG_UNIFORM:
            strength = float(np.exp(rng.uniform(np.log(low), np.log(high))))
        else:
            strength = float(rng.uniform(low, high))
        if name == "jpeg":
            strength = int(round(strength))
        if name in ("noise", "implant", "patchwork", "cast"):
            image = apply(image, name, strength, seed=int(rng.integers(1 << 31)))
        else:
            image = apply(image, name, strength)
    return image


def degrade_batch(batch: np.ndarray, rng: np.random.Generator, *, mean: float, std: float,
                  recipe=TRAINING) -> np.ndarray:
    """:func:`random_degradation` on every image of a batch of model tensors (n, size, size, channels),
    standardised with ``mean`` and ``std``: back to [0, 1], degrade, standardise again."""
    out = np.empty_like(batch, dtype=np.float32)
    for i, tensor in enumerate(batch):
        grey = np.clip(tensor[..., 0] * std + mean, 0.0, 1.0)
        degraded = (random_degradation(grey, rng, recipe) - mean) / std
        out[i] = np.repeat(degraded[..., None], batch.shape[-1], axis=-1)
    return out
