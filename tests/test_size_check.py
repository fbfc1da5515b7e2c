"""scripts/size_check.py on the committed fracture model and real FracAtlas validation films."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))


def test_at_the_trained_size_the_check_scores_what_the_model_itself_predicts_and_other_sizes_are_scored(data_dir):
    """At 224 px the rebuilt network is the model: its AUC and accuracy equal those of the loaded model's own
    uncalibrated probabilities on the same films; at 288 px the network really takes the larger input."""
    import size_check
    from core.io import load_scan
    from core.model import load_model
    from core.robustness import display_grey

    folder = str(ROOT / "assets" / "models" / "fracture")
    images = data_dir / "fracatlas" / "images"
    result = size_check.size_check(folder, images, [224, 288], limit=12)
    assert result["films"] == 24 and result["trained_at"] == 224

    loaded = load_model(folder)
    keys = [k for name in loaded.class_names
            for k in [k for k in size_check.validation_keys(folder) if k.startswith(f"{name}/")][:12]]
    tensors = np.stack([size_check.tensor_of_grey(loaded.pipeline, display_grey(
        load_scan((images / k).read_bytes(), Path(k).name))) for k in keys])
    labels = np.array([loaded.class_names.index(k.split("/", 1)[0]) for k in keys])
    assert result["sizes"][224] == size_check.scores(loaded.uncalibrated(tensors), labels)
    assert 0 <= result["sizes"][288]["auc"] <= 1
    assert size_check.at_size(loaded.model, 288).input_shape == (None, 288, 288, 1)


def test_a_size_that_is_not_a_number_of_pixels_is_one_sentence():
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "size_check.py"), "assets/models/fracture",
                          "--sizes", "224,big"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == ("--sizes must be whole numbers of pixels of at least 32, "
                                                          "comma-separated, not '224,big'.")
