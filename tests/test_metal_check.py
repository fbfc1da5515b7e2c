"""scripts/metal_check.py on the committed fracture model and real FracAtlas validation films."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def film(data_dir):
    from core.io import load_scan
    from core.robustness import display_grey

    path = data_dir / "fracatlas" / "images" / "not_fractured" / "IMG0000049.jpg"
    return display_grey(load_scan(path.read_bytes(), path.name))


def test_the_plate_lies_on_the_limb_whole_and_its_controls_where_they_say(film):
    import metal_check

    limb, bone, angle, field = metal_check.placement(film)
    assert limb[int(bone[0]), int(bone[1])] and field is not None and not limb[int(field[0]), int(field[1])]
    out = metal_check.versions(film)
    assert list(out) == list(metal_check.VERSIONS) and np.array_equal(out["as scanned"], film)
    on_limb = np.abs(out["plate on the limb"] - film) > 0.05
    assert on_limb.sum() > 0.002 * film.size and on_limb[limb].sum() > 0.6 * on_limb.sum()
    assert out["plate on the limb"][on_limb].max() == pytest.approx(1.0)  # metal-white
    assert np.median(out["plate on the limb"][on_limb]) > np.percentile(film, 99)
    rows, columns = np.nonzero(on_limb)  # the whole plate on the film: nothing drawn on its outer rows or columns
    assert rows.min() > 0 and columns.min() > 0 and rows.max() < film.shape[0] - 1 and columns.max() < film.shape[1] - 1
    shape_only = np.abs(out["plate's shape at the limb's grey"] - film) > 1e-6
    level = float(np.median(film[limb]))
    assert np.abs(out["plate's shape at the limb's grey"][shape_only & on_limb] - level).mean() < \
        np.abs(out["plate on the limb"][shape_only & on_limb] - level).mean()
    off = np.abs(out["plate on the open field"] - film) > 1e-6
    assert off.sum() > 0 and not off[limb].any()  # on the open field, never on the limb


@pytest.mark.slow
def test_the_command_scores_every_version_and_the_real_metal_with_the_models_own_decision(data_dir):
    import metal_check
    from core import data as data_mod
    from core.model import load_model

    folder = str(ROOT / "assets" / "models" / "fracture")
    images = data_dir / "fracatlas" / "images"
    result = metal_check.metal_check(folder, images, limit=4)
    assert list(result["rows"]) == list(metal_check.VERSIONS)
    for name, row in result["rows"].items():
        assert 0 <= row["called_fractured"] <= 1 and 0 <= row["median_p"] <= 1 and 0 <= row["auc_against_fractures"] <= 1
        assert row["n"] == 4 or (name == "plate on the open field" and row["n"] <= 4)
    assert result["rows"]["as scanned"]["mean_change"][0] == 0
    loaded = load_model(folder)
    split = json.loads((Path(folder) / "split.json").read_text())["validation"]
    keys = [k for k in split if k.startswith("not_fractured/")][:4]
    p = loaded.predict(np.stack([data_mod.prepare_image(images / k, loaded.pipeline) for k in keys]))[:, 1]
    assert result["rows"]["as scanned"]["called_fractured"] == pytest.approx(np.mean(p >= loaded.threshold))
    assert result["fractures"] == sum(k.startswith("fractured/") for k in split)
    # The validation split's real films with metal (the index's hardware column), each with its own answer.
    assert {m["film"] for m in result["real_metal"]} == {"not_fractured/IMG0000201.jpg", "not_fractured/IMG0000202.jpg",
                                                         "fractured/IMG0002904.jpg", "fractured/IMG0004150.jpg",
                                                         "fractured/IMG0004232.jpg"}
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "metal_check.py"), folder, "--data", str(images),
                          "--limit", "2"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "| `" + folder + "` | plate on the limb | 2 |" in out.stdout and "Real metal in" in out.stdout
