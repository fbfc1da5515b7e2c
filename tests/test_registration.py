"""Saliency maps are registered to the scan: the hot spot lies over the structure it refers to.

A tiny real model learns one thing, "is there a bright disc", from synthetic images prepared by
the real pipeline. A non-square scan (300 rows x 500 columns) with a single disc goes through
``load_scan`` and ``core.explain.explain``: the map's maximum, in the scan's own pixels, must
lie on the disc. A map squashed, transposed, flipped or shifted by the resize back would miss it.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

from core.saliency import explain as explain_tensor
from core.io import load_scan
from core.model import build_model, load_model, save_model
from core.preprocess import Pipeline

pytestmark = pytest.mark.slow

ROWS, COLS = 300, 500
RADIUS = 32
INPUT = 64
GRID = INPUT // 8  # the last convolution's grid: 8 x 8 cells
CELL = (ROWS / GRID, COLS / GRID)  # one cell on the scan: 37.5 x 62.5 px
CAM = ("gradcam", "gradcam++", "layercam", "scorecam")
BACKGROUND, DISC = 90.0, 220.0


def disc_image(shape: tuple[int, int], centre: tuple[float, float] | None, radius: float,
               rng: np.random.Generator) -> np.ndarray:
    """Grey noise with one bright disc (or none), 8-bit like a PNG."""
    image = BACKGROUND + rng.normal(0, 6, shape)
    if centre is not None:
        yy, xx = np.mgrid[:shape[0], :shape[1]]
        image[(yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2] = DISC
    return np.clip(image, 0, 255).astype(np.uint8)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def disc_model(tmp_path_factory):
    return train_disc_model(tmp_path_factory.mktemp("disc_model"))


def train_disc_model(folder):
    """A model folder trained in seconds to find the disc, loaded like the dashboard loads one."""
    import keras

    pipeline = Pipeline(input_size=INPUT)
    rng = np.random.default_rng(0)
    # Training scans have the test scan's aspect ratio at a fifth of its size: after the
    # pipeline's squash to 64 x 64 they look the same, and they are 25 times cheaper to make.
    small, radius = (ROWS // 5, COLS // 5), RADIUS / 5
    x, y = [], []
    for i in range(400):
        centre = (rng.uniform(radius, small[0] - radius), rng.uniform(radius, small[1] - radius)) if i % 2 else None
        image = disc_image(small, centre, radius, rng).astype(np.float32)
        x.append(pipeline(image, window=(127.5, 255.0))[0])
        y.append(i % 2)
    keras.utils.set_random_seed(0)
    model = build_model(INPUT, 2, width=8, dropout=0.0, name="disc")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="categorical_crossentropy")
    model.fit(np.stack(x), keras.utils.to_categorical(y, 2), epochs=12, batch_size=16, verbose=0)
    save_model(model, folder, {"task": "disc", "class_names": ["empty", "disc"], "preprocessing": pipeline.to_dict()})
    return load_model(folder)


def explain(loaded, scan, **kwargs):
    """The map of what the model received from this scan, on the scan's geometry."""
    return explain_tensor(loaded, loaded.pipeline.scan_tensor(scan), scan.shape, **kwargs)


def scan_with_disc(centre):
    return load_scan(png(disc_image((ROWS, COLS), centre, RADIUS, np.random.default_rng(1))), "disc.png")


def peak(saliency: np.ndarray) -> np.ndarray:
    return np.array(np.unravel_index(np.argmax(saliency), saliency.shape), float)


def quadrant(point) -> tuple[bool, bool]:
    return point[0] >= ROWS / 2, point[1] >= COLS / 2


def test_the_model_responds_to_the_disc(disc_model):
    empty = disc_model.predict(disc_model.pipeline.scan_tensor(scan_with_disc(None)))[0]
    assert empty[1] < 0.5
    for centre in ((80, 140), (230, 390)):
        assert disc_model.predict(disc_model.pipeline.scan_tensor(scan_with_disc(centre)))[0][1] > 0.5


@pytest.mark.parametrize("centre", [(80, 140), (70, 380), (220, 110), (230, 390)],
                         ids=["top-left", "top-right", "bottom-left", "bottom-right"])
@pytest.mark.parametrize("method", CAM + ("smoothgrad",))
def test_the_hot_spot_lies_on_the_disc(disc_model, centre, method):
    scan = scan_with_disc(centre)
    assert scan.shape == (ROWS, COLS)
    result = explain(disc_model, scan, method=method, class_index=1)
    assert result.on_scan.shape == scan.shape
    assert result.raw.shape == ((GRID, GRID) if method in CAM else (INPUT, INPUT))
    hot = peak(result.on_scan)
    assert quadrant(hot) == quadrant(centre), (hot, centre)
    assert np.hypot(*(hot - centre)) <= RADIUS + np.hypot(*CELL), (hot, centre)


def block_model(folder):
    """A model with a known Grad-CAM: each last-convolution cell is the mean brightness of its block.

    Average pooling over 8 x 8 blocks, a 1 x 1 ReLU convolution with weight 1 (background,
    standardised below zero, gives 0; the disc gives its area), global average and a dense
    layer that scores "disc" by that mean: every CAM method returns the disc's area per cell.
    Nothing is learned, so a misplaced peak can only come from the geometry chain.
    """
    import keras
    from keras import layers

    inputs = keras.Input((INPUT, INPUT, 1), name="image")
    x = layers.AveragePooling2D(INPUT // GRID, name="blocks")(inputs)
    x = layers.Conv2D(1, 1, activation="relu", name="last_conv")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs, name="blocks")
    model.get_layer("last_conv").set_weights([np.ones((1, 1, 1, 1), np.float32), np.zeros(1, np.float32)])
    model.get_layer("predictions").set_weights([np.array([[-4.0, 4.0]], np.float32), np.zeros(2, np.float32)])
    save_model(model, folder, {"task": "blocks", "class_names": ["empty", "disc"],
                               "preprocessing": Pipeline(input_size=INPUT).to_dict()})
    return load_model(folder)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory):
    return block_model(tmp_path_factory.mktemp("blocks"))


@pytest.mark.parametrize("cell", [(1, 1), (1, 6), (6, 1), (6, 6), (3, 4)])
def test_each_cam_cell_maps_back_onto_its_own_pixels(blocks, cell):
    """A disc centred on one CAM cell peaks within 1 px of that cell's centre on the scan.

    Pixel-centre aligned upsampling puts cell (i, j) at ((i + 0.5) * rows / grid - 0.5, ...);
    a corner-aligned zoom (tf-keras-vis's own expansion) would move it by up to half a cell,
    a transposed or flipped map by much more.
    """
    loaded = blocks
    centre = np.array([(cell[0] + 0.5) * CELL[0] - 0.5, (cell[1] + 0.5) * CELL[1] - 0.5])
    scan = scan_with_disc(tuple(centre))
    assert loaded.predict(loaded.pipeline.scan_tensor(scan))[0][1] > 0.5
    for method in CAM:
        result = explain(loaded, scan, method=method, class_index=1)
        assert result.raw.shape == (GRID, GRID)
        assert np.unravel_index(np.argmax(result.raw), result.raw.shape) == cell, method
        assert np.abs(peak(result.on_scan) - centre).max() <= 1, (method, peak(result.on_scan), centre)



def test_the_expert_outline_lies_on_the_mask_at_full_resolution():
    """The outline the Explain page draws, at the scan's own size, on a non-square scan, is the mask's own
    border pixels: never shifted, flipped or transposed, with or without a map under it."""
    from core.render import outline
    from ui.maps import overlay_picture

    rows, cols = 300, 500
    mask = np.zeros((rows, cols), bool)
    yy, xx = np.mgrid[:rows, :cols]
    mask[(yy - 70) ** 2 + (xx - 400) ** 2 <= 40 ** 2] = True  # top right: any transposition shows
    background = np.full((rows, cols), 0.3, np.float32)
    raw = np.random.default_rng(0).random((8, 8)).astype(np.float32)
    picture = overlay_picture(background, raw, opacity=0.6, colormap="Viridis", outline=mask)
    green = (picture[..., 0] == 0) & (picture[..., 1] == 255) & (picture[..., 2] == 0)
    expected = outline(mask, thickness=max(1, round(max(rows, cols) / 400)))
    assert np.array_equal(green, expected) and green.any()
    assert not (green & ~mask).any()
