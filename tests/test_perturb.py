"""core.perturb: each degradation on known inputs, strengths scaled to the image size, the training mix."""

from __future__ import annotations

import numpy as np
import pytest

from core import perturb


@pytest.fixture
def ramp() -> np.ndarray:
    return np.tile(np.linspace(0, 1, 224, dtype=np.float32), (224, 1))


def test_every_degradation_keeps_shape_dtype_and_range(ramp):
    for name, strength in perturb.EVALUATION:
        out = perturb.apply(ramp, name, strength)
        assert out.shape == ramp.shape and out.dtype == np.float32, name
        assert 0.0 <= out.min() and out.max() <= 1.0, name


def test_neutral_strengths_change_nothing(ramp):
    assert np.array_equal(perturb.blur(ramp, sigma=0), ramp)
    assert np.allclose(perturb.gamma(ramp, gamma=1.0), ramp)
    assert np.allclose(perturb.contrast(ramp, factor=1.0), ramp, atol=1e-6)
    assert np.allclose(perturb.crop_scale(ramp, keep=1.0), ramp, atol=1e-5)
    assert np.allclose(perturb.jpeg(ramp, quality=95), ramp, atol=0.02)


def test_blur_sigma_refers_to_a_224_px_side():
    """The same film at 112 px and 224 px, blurred with sigma 4, loses the same share of its detail."""
    rng = np.random.default_rng(0)
    fine = rng.random((224, 224)).astype(np.float32)
    from core.preprocess import resize_to

    coarse = resize_to(fine, (112, 112))
    blurred_fine = perturb.blur(fine, sigma=4)
    blurred_coarse = perturb.blur(coarse, sigma=4)
    # Blurring commutes with the resize when sigma scales with the side: the results agree.
    assert np.abs(resize_to(blurred_fine, (112, 112)) - blurred_coarse).mean() < 0.01


def test_strong_blur_and_sharpening_move_the_detail_the_right_way():
    rng = np.random.default_rng(1)
    image = rng.random((128, 128)).astype(np.float32)
    detail = lambda x: np.abs(np.diff(x, axis=1)).mean()  # noqa: E731
    assert detail(perturb.blur(image, sigma=4)) < 0.2 * detail(image)
    smooth = perturb.blur(image, sigma=2)
    assert detail(perturb.sharpen(smooth, amount=1.0)) > 1.3 * detail(smooth)


def test_gamma_contrast_noise_crop(ramp):
    assert perturb.gamma(ramp, gamma=0.5)[0, 112] > ramp[0, 112]  # gamma below 1 brightens
    assert np.ptp(perturb.contrast(ramp, factor=0.5)) == pytest.approx(0.5, abs=0.01)
    noisy = perturb.noise(ramp, std=0.05, seed=3)
    assert np.std(noisy - ramp) == pytest.approx(0.05, rel=0.2)
    assert np.array_equal(noisy, perturb.noise(ramp, std=0.05, seed=3))  # seeded
    zoomed = perturb.crop_scale(ramp, keep=0.5)
    assert zoomed[0, 0] == pytest.approx(0.25, abs=0.02) and zoomed[0, -1] == pytest.approx(0.75, abs=0.02)
    shrunk = perturb.crop_scale(ramp, keep=2.0)
    assert shrunk[0, 0] == pytest.approx(0.0, abs=0.01) and shrunk[100, 56:168].std() > 0.1


def test_training_mix_degrades_some_images_and_is_seeded():
    rng = np.random.default_rng(0)
    images = rng.random((40, 32, 32, 1)).astype(np.float32) * 2 - 1  # standardised like the model's input
    first = perturb.degrade_batch(images, np.random.default_rng(5), mean=0.5, std=0.25)
    again = perturb.degrade_batch(images, np.random.default_rng(5), mean=0.5, std=0.25)
    assert first.shape == images.shape and first.dtype == np.float32
    assert np.array_equal(first, again)
    changed = np.abs(first - np.clip(images, -2, 2)).reshape(40, -1).max(axis=1) > 1e-3
    assert 10 < changed.sum() < 40  # most images get something, a few none
    assert first.min() >= -2.0 - 1e-6 and first.max() <= 2.0 + 1e-6  # still inside [0, 1] once un-standardised


def test_labels_name_the_strength():
    assert perturb.label("blur", 4.0) == "blur sigma=4 px at 224"
    assert perturb.label("jpeg", 30) == "jpeg quality=30"


@pytest.fixture(scope="module")
def limb_film(data_dir) -> np.ndarray:
    """A real not-fractured FracAtlas film as the pipeline shows it: grey in [0, 1]."""
    from core.io import load_scan
    from core.robustness import display_grey

    path = data_dir / "fracatlas" / "images" / "not_fractured" / "IMG0000049.jpg"
    return display_grey(load_scan(path.read_bytes(), path.name))


def test_an_implant_is_a_white_plate_on_the_limb_drawn_from_its_seed(limb_film):
    from core.preprocess import body_region

    out = perturb.implant(limb_film, length=0.35, seed=4)
    assert out.shape == limb_film.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    changed = np.abs(out - limb_film) > 0.05
    assert changed.sum() > 0.002 * limb_film.size  # a plate, not a speck
    assert np.median(out[changed]) > np.percentile(limb_film, 99)  # brighter than nearly all of the film: metal
    limb = body_region(limb_film, margin=0.05)
    assert changed[limb].sum() > 0.6 * changed.sum()  # on the limb (its screws may reach past the skin)
    assert np.array_equal(out, perturb.implant(limb_film, length=0.35, seed=4))
    assert not np.array_equal(out, perturb.implant(limb_film, length=0.35, seed=5))
    assert changed.sum() < (np.abs(perturb.implant(limb_film, length=0.6, seed=4) - limb_film) > 0.05).sum()


def test_a_patchwork_breaks_the_texture_along_cell_edges_and_keeps_the_film_elsewhere(limb_film):
    """Cells of a grid from a blurred or sharpened copy: the film is unchanged outside them, the image keeps its
    shape, range and type, and the same seed draws the same patchwork."""
    out = perturb.patchwork(limb_film, share=0.4, seed=2)
    assert out.shape == limb_film.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert np.array_equal(out, perturb.patchwork(limb_film, share=0.4, seed=2))
    changed = np.abs(out - limb_film) > 1e-6
    assert 0.05 < changed.mean() < 0.8  # some cells, not the whole film
    assert np.array_equal(perturb.patchwork(limb_film, share=0.0, seed=2), limb_film)
    kinds = set()
    for seed in range(12):  # blurred cells lower the local detail, sharpened cells raise it
        patched = perturb.patchwork(limb_film, share=0.5, seed=seed)
        detail = np.abs(np.diff(patched, axis=1)).mean()
        kinds.add(bool(detail > np.abs(np.diff(limb_film, axis=1)).mean()) if (patched != limb_film).any() else None)
    assert {True, False} <= kinds


def test_a_cast_is_a_faint_sleeve_round_the_limb_brighter_at_its_edges_drawn_from_its_seed(limb_film):
    """Plaster adds a little grey over the sleeve and more along its outer edges, reaches beyond the skin but not
    across the open field, leaves the rest of the film alone, and the same seed draws the same cast."""
    from core.preprocess import body_region

    out = perturb.cast(limb_film, length=0.5, seed=3)
    assert out.shape == limb_film.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    assert np.array_equal(out, perturb.cast(limb_film, length=0.5, seed=3))
    added = out - limb_film
    assert added.min() >= -1e-6  # plaster only adds
    changed = added > 0.02
    assert 0.01 * limb_film.size < changed.sum() < 0.6 * limb_film.size
    limb = body_region(limb_film, margin=0.0)
    assert changed[~limb].any()  # beyond the skin
    assert changed[~body_region(limb_film, margin=0.1)].sum() < 0.01 * changed.sum()  # not out on the open field
    assert np.percentile(added[changed], 95) > 2 * np.median(added[changed])  # brighter edges than the sleeve
    shorter = (perturb.cast(limb_film, length=0.2, seed=3) - limb_film) > 0.02
    assert shorter.sum() < changed.sum()


@pytest.mark.parametrize("name, values", [("implant", [0.2, 0.15, 0.45]), ("patchwork", [0.25, 0.1, 0.5]),
                                          ("cast", [0.3, 0.25, 0.7])])
def test_the_implant_patchwork_and_cast_are_opt_in(name, values):
    """No task draws them unless asked (``train --implant P``, ``--patchwork P`` and ``--cast P`` add them to the
    run's recipe: tests/test_train.py)."""
    import json
    from pathlib import Path

    assert name not in [n for n, *_ in perturb.TRAINING]
    assert perturb.training_recipe({name: values})[-1] == (name, *values)
    tasks = Path(__file__).resolve().parents[1] / "assets" / "tasks"
    recipes = {p.stem: perturb.recipe_for(json.loads(p.read_text())) for p in tasks.glob("*.json")}
    assert recipes and all(name not in [n for n, *_ in recipe] for recipe in recipes.values())


def test_the_training_mix_draws_implants_on_a_share_of_the_films(limb_film):
    from core.preprocess import resize_to

    film = resize_to(limb_film, (64, 64))
    batch = np.repeat(((film - 0.5) / 0.25)[None, ..., None], 20, axis=0).astype(np.float32)
    out = perturb.degrade_batch(batch, np.random.default_rng(0), mean=0.5, std=0.25,
                                recipe=(("implant", 0.5, 0.2, 0.4),))
    plated = (out - batch).reshape(20, -1).max(axis=1) > 0.5
    assert 4 <= plated.sum() <= 16  # about half, each with its own plate
    assert len({out[i].tobytes() for i in np.flatnonzero(plated)}) == plated.sum()


@pytest.fixture(scope="module")
def intact_films(data_dir) -> list[np.ndarray]:
    """Ten real not-fractured FracAtlas films at the fracture model's 224 px, grey in [0, 1] (hands, legs, hips)."""
    from core.io import load_scan
    from core.preprocess import resize
    from core.robustness import display_grey

    folder = data_dir / "fracatlas" / "images" / "not_fractured"
    paths = sorted(folder.glob("*.jpg"))[::150][:10]
    return [resize(display_grey(load_scan(p.read_bytes(), p.name)), size=224) for p in paths]


def test_a_fracture_line_is_a_thin_lucent_gap_across_a_bone_drawn_from_its_seed(intact_films):
    """On real intact films a line is drawn on nearly every one: a few hundred pixels at most, with a clear lucent
    gap (a displaced step also moves a bone edge a pixel or two), on the body part, the rest of the film untouched,
    and the same seed draws the same line."""
    from core.preprocess import body_region

    drawn = 0
    for k, film in enumerate(intact_films):
        out, ok = perturb.fracture_line(film, seed=k)
        assert out.shape == film.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
        if not ok:
            assert np.array_equal(out, film)
            continue
        drawn += 1
        changed = np.abs(out - film) > 0.02
        assert 5 <= changed.sum() <= 0.015 * film.size  # a thin line, not a patch
        assert (film - out).max() > 0.05  # a lucent gap (a displaced step may also move a bone edge either way)
        assert changed[body_region(film, margin=0.02)].sum() >= 0.95 * changed.sum()  # on the limb
        assert np.array_equal(out, perturb.fracture_line(film, seed=k)[0])
    assert drawn >= 8
    assert not perturb.fracture_line(np.zeros((224, 224), np.float32), seed=0)[1]  # no bone, nothing drawn


def test_synthetic_positives_draw_on_films_without_the_finding_and_relabel_only_those_drawn(intact_films):
    """The batch function behind ``train --synthetic-fractures``: on model tensors (standardised), the films of the
    other class get a line and the finding's label; films already labelled with it are left as they are."""
    from core.data import synthetic_positives

    mean, std = 0.5, 0.25
    batch = np.stack([(f - mean) / std for f in intact_films[:4]])[..., None].astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[[0, 0, 0, 1]]
    out, relabelled = synthetic_positives(batch, labels, np.random.default_rng(0), 1.0, draw=perturb.fracture_line,
                                          positive=1, mean=mean, std=std)
    assert out.shape == batch.shape and relabelled.shape == labels.shape
    for i in range(3):
        changed = not np.allclose(out[i], batch[i])
        assert changed == bool(relabelled[i, 1] == 1)  # relabelled exactly when a line was drawn
    assert relabelled[:3, 1].sum() >= 2
    assert np.array_equal(out[3], batch[3]) and relabelled[3].tolist() == [0, 1]
    untouched, same = synthetic_positives(batch, labels, np.random.default_rng(0), 0.0, draw=perturb.fracture_line,
                                          positive=1, mean=mean, std=std)
    assert np.array_equal(untouched, batch) and np.array_equal(same, labels)
