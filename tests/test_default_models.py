"""The committed default models are right for the right reasons (issue 12), on real images.

The chest model of 2026-11 called any featureless film pneumonia: a constant grey image, and a normal
child's film after a blur (12 of 20 normal films at sigma 4 px). These tests hold the committed model
to the targets on real validation films it never trained on: blurred normal films stay NORMAL, and a
blurred-away or constant film is never called pneumonia with confidence without the outlier check
refusing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import CHEST
from core.model import load_model
from core.perturb import blur
from core.robustness import display_grey, tensor_of_grey
from page_support import DEFAULT_MODELS

CHEST_MODEL = DEFAULT_MODELS / "chest_xray"


@pytest.fixture(scope="module")
def chest():
    if not (CHEST_MODEL / "model.keras").is_file():
        pytest.skip("the default chest model is missing")
    return load_model(CHEST_MODEL)


@pytest.fixture(scope="module")
def normal_validation_films(chest) -> list[np.ndarray]:
    """20 NORMAL films of the model's own validation split (never trained on), grey in [0, 1]."""
    if not CHEST.is_dir():
        pytest.skip("shared data not found")
    from core.io import load_scan

    names = [n for n in json.loads((CHEST_MODEL / "split.json").read_text())["validation"] if n.startswith("NORMAL/")]
    chosen = [names[i] for i in np.random.default_rng(0).choice(len(names), 20, replace=False)]
    return [display_grey(load_scan((CHEST / n).read_bytes(), Path(n).name)) for n in chosen]


def calls(chest, greys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """P(PNEUMONIA) and whether the outlier check flags each image."""
    x = np.stack([tensor_of_grey(chest.pipeline, g) for g in greys])
    p, distance = chest.predict_with_distance(x)
    flagged = np.zeros(len(x), bool) if distance is None else distance > chest.outlier_threshold
    return p[:, 1], flagged


def test_the_threshold_was_chosen_on_validation_and_is_stated(chest):
    assert 0.0 < chest.threshold < 1.0
    assert "share of the training split" in chest.info["threshold_rule"]
    counts = chest.info["dataset"]["counts"]  # the training split's share is close to the whole set's
    assert abs(chest.threshold - counts["PNEUMONIA"] / sum(counts.values())) < 0.02


@pytest.mark.parametrize("sigma", [2.0, 4.0])
def test_mildly_blurred_normal_films_stay_normal(chest, normal_validation_films, sigma):
    sharp, _ = calls(chest, normal_validation_films)
    blurred, _ = calls(chest, [blur(g, sigma=sigma) for g in normal_validation_films])
    normal = (blurred < chest.threshold).sum()
    assert normal >= 18, f"{20 - normal} of 20 normal films called pneumonia at sigma {sigma} (sharp: " \
                         f"{(sharp >= chest.threshold).sum()})"


@pytest.mark.parametrize("what", ["grey", "black", "white", "blur 16 px", "blur 32 px"])
def test_a_featureless_film_is_not_called_pneumonia_with_confidence(chest, normal_validation_films, what):
    film = normal_validation_films[0]
    image = {"grey": np.full_like(film, 0.5), "black": np.zeros_like(film), "white": np.ones_like(film),
             "blur 16 px": blur(film, sigma=16), "blur 32 px": blur(film, sigma=32)}[what]
    p, flagged = calls(chest, [image])
    assert p[0] <= 0.5 or flagged[0], f"{what}: P(PNEUMONIA) {p[0]:.3f} and the outlier check does not flag it"
