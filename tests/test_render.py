"""core.render: display windowing, overlays, the colour bar, outlines and PNG bytes."""

from __future__ import annotations

import io

import numpy as np
import pytest

from core import render


@pytest.mark.parametrize("shape", [(1, 1, 3), (5, 7, 3), (64, 33, 3), (9, 4), (1, 12), (6, 5, 4)])
def test_png_bytes_is_lossless_and_has_no_metadata(shape):
    from PIL import Image

    pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    data = render.png_bytes(pixels)
    Image.open(io.BytesIO(data)).verify()  # chunk CRCs and structure
    with Image.open(io.BytesIO(data)) as image:
        assert not {k for k in image.info if k not in ("dpi",)}  # nothing about the file or its maker
        np.testing.assert_array_equal(np.asarray(image), pixels)


def test_png_bytes_refuses_other_shapes():
    with pytest.raises(ValueError, match="expected a grey"):
        render.png_bytes(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="expected a grey"):
        render.png_bytes(np.zeros((4, 4, 3, 1), np.uint8))


@pytest.mark.parametrize("opacity", [0.0, 0.35, 0.6, 1.0])
@pytest.mark.parametrize("threshold", [0.0, 0.3])
def test_a_heat_layer_blended_as_a_browser_does_is_the_overlay(opacity, threshold):
    """What the pages send (the grey picture, the map as an RGBA layer, the opacity as a number) is what
    ``overlay`` computes in one picture, to within one grey level (alpha has 256 steps)."""
    rng = np.random.default_rng(3)
    image, saliency = rng.random((40, 30), dtype=np.float32), rng.random((40, 30), dtype=np.float32)
    layered = render.composite(image, [(render.heat_rgba(saliency, colormap="Jet", threshold=threshold), opacity)])
    expected = render.overlay(image, saliency, opacity=opacity, colormap="Jet", threshold=threshold)
    assert np.abs(layered.astype(int) - expected.astype(int)).max() <= 1


def test_an_outline_layer_is_the_drawn_outline():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:25] = True
    rgb = np.random.default_rng(4).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    layered = render.composite(rgb, [(render.outline_rgba(mask, colour=(0, 255, 0), thickness=2), 1.0)])
    np.testing.assert_array_equal(layered, render.draw_outline(rgb, mask, colour=(0, 255, 0), thickness=2))


def test_overlay_matches_its_formula():
    rng = np.random.default_rng(2)
    image, saliency = rng.random((40, 30), dtype=np.float32), rng.random((40, 30), dtype=np.float32)
    grey = np.repeat(image[..., None] * 255.0, 3, axis=-1)
    colour = render.colormap_lut("Turbo")[(saliency * 255).astype(np.int32)].astype(np.float32)
    weight = 0.6 * np.where(saliency >= 0.3, saliency, 0.0)[..., None]
    expected = np.clip(grey * (1 - weight) + colour * weight, 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(render.overlay(image, saliency, opacity=0.6, threshold=0.3), expected)


def test_overlay_refuses_a_map_of_another_shape():
    with pytest.raises(ValueError, match="differ in shape"):
        render.overlay(np.zeros((4, 5)), np.zeros((5, 4)))


def test_colour_bar_runs_from_high_at_the_top_to_low_at_the_bottom():
    lut = render.colormap_lut("Viridis")
    bar = render.colour_bar("Viridis", height=256, width=3)
    assert bar.shape == (256, 3, 3)
    np.testing.assert_array_equal(bar[0, 0], lut[255])
    np.testing.assert_array_equal(bar[-1, 0], lut[0])


def test_outline_lies_on_the_mask_border():
    mask = np.zeros((20, 30), bool)
    mask[5:15, 10:25] = True
    border = render.outline(mask, thickness=1)
    assert border.sum() == 2 * (10 + 15) - 4
    assert not (border & ~mask).any()  # on the mask's own pixels, never outside
    drawn = render.draw_outline(np.zeros((20, 30, 3), np.uint8), mask, colour=(0, 255, 0), thickness=1)
    assert (drawn[border] == (0, 255, 0)).all() and not drawn[~border].any()


def test_display_image_windows_inverts_and_keeps_geometry():
    frame = np.array([[0.0, 50.0], [100.0, 200.0]], np.float32)
    shown = render.display_image(frame, (50.0, 100.0), True)
    np.testing.assert_allclose(shown, [[1.0, 0.5], [0.0, 0.0]])
    rgb = render.display_rgb(frame, (50.0, 100.0), False)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8 and rgb[1, 0, 0] == 255


def test_downsample_averages_whole_blocks_and_keeps_the_aspect_ratio():
    image = np.random.default_rng(3).random((1955, 1841)).astype(np.float32)
    small = render.downsample(image, 1024)
    assert render.display_step(image.shape, 1024) == 2 and small.shape == (978, 921)  # ceil(1955 / 2), ceil(1841 / 2)
    np.testing.assert_allclose(small[10, 20], image[20:22, 40:42].mean(), rtol=1e-6)  # each pixel: its 2 x 2 block
    np.testing.assert_allclose(small[-1, -1], image[-1, -1], rtol=1e-6)  # the odd last row and column padded
    assert render.downsample(image[:100, :80], 1024) is not None and render.downsample(image[:100, :80], 1024).shape == (100, 80)
    rgb = (np.random.default_rng(4).random((600, 300, 3)) * 255).astype(np.uint8)
    assert render.downsample(rgb, 256).shape == (200, 100, 3) and render.downsample(rgb, 256).dtype == np.uint8


def test_display_pixels_shrinks_before_windowing():
    frame = np.arange(64 * 32, dtype=np.float32).reshape(64, 32)
    shown = render.display_pixels(render.downsample(frame, 16), (1000.0, 2000.0), False)
    assert shown.shape == (16, 8) and 0 <= shown.min() and shown.max() <= 1
