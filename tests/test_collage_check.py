"""scripts/collage_check.py on the committed fracture model and real FracAtlas validation films."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = str(ROOT / "assets" / "models" / "fracture")
sys.path.insert(0, str(ROOT / "scripts"))


def test_pairs_hold_validation_films_of_one_body_part_and_every_validation_fracture(data_dir):
    import collage_check
    from core.data import read_index

    images = data_dir / "fracatlas" / "images"
    both_intact, with_fracture = collage_check.pairs(FOLDER, images)
    index = read_index(images.parent / "index.csv")
    validation = set(json.loads((Path(FOLDER) / "split.json").read_text())["validation"])
    assert len(both_intact) > 100 and all(a != b for a, b in both_intact)
    for a, b in both_intact:
        assert {a, b} <= validation and a.startswith("not_fractured/") and b.startswith("not_fractured/")
        assert collage_check._part(index[a]) == collage_check._part(index[b])
    assert sorted(f for f, _ in with_fracture) == sorted(k for k in validation if k.startswith("fractured/"))
    assert all(n in validation and n.startswith("not_fractured/") for _, n in with_fracture)


def test_a_collage_keeps_each_views_proportions_and_draws_the_seam_only_when_asked(data_dir):
    import collage_check
    from core.io import load_scan
    from core.robustness import display_grey

    images = data_dir / "fracatlas" / "images"
    a, b = (display_grey(load_scan((images / k).read_bytes(), k))
            for k in ("not_fractured/IMG0000049.jpg", "fractured/IMG0002904.jpg"))
    plain, seamed = collage_check.collage(a, b, seam=False), collage_check.collage(a, b, seam=True)
    assert plain.shape == seamed.shape == a.shape
    rows, columns = a.shape
    half = (columns - round(collage_check.SEAM * columns)) // 2
    assert (seamed[:, half:columns - half] == 1.0).all() and (seamed[:, half:columns - half]).shape[1] >= 1
    assert not (plain == 1.0).all(axis=0).any()  # no white column without the seam
    # The left view is a strip of the first film at its own scale (rows kept, so its columns are not squeezed).
    view = collage_check._view(a, rows, columns // 2)
    np.testing.assert_array_equal(plain[:, :columns // 2], np.clip(view, 0, 1))
    assert view.shape == (rows, columns // 2)


@pytest.mark.slow
def test_the_command_scores_collages_against_the_films_alone_with_the_models_own_decision(data_dir):
    import collage_check
    from core import data as data_mod
    from core.model import load_model

    images = data_dir / "fracatlas" / "images"
    result = collage_check.collage_check(FOLDER, images, limit=3)
    assert len(result["rows"]) == 6 and all(row["n"] == 3 for row in result["rows"].values())
    loaded = load_model(FOLDER)
    fractures = [f for f, _ in collage_check.pairs(FOLDER, images)[1][:3]]
    p = loaded.predict(np.stack([data_mod.prepare_image(images / k, loaded.pipeline) for k in fractures]))[:, 1]
    alone = result["rows"]["a fractured film alone"]
    assert alone["called_fractured"] == pytest.approx(np.mean(p >= loaded.threshold))
    assert alone["median_p"] == pytest.approx(float(np.median(p)), abs=1e-3)
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "collage_check.py"), FOLDER, "--data", str(images),
                          "--limit", "2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| `" + FOLDER + "` | a fractured film beside a not-fractured one, white seam | 2 |" in out.stdout
