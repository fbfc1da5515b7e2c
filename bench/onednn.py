"""Benchmark 8: TensorFlow's oneDNN kernels on and off, on this processor.

TensorFlow turns its oneDNN kernels on by itself only on processors with AVX-512; on an AVX2-only
processor they stay off unless ``TF_ENABLE_ONEDNN_OPTS=1`` asks for them. ``python -m core train``
asks for them unless the user set the variable (``core.cli.ONEDNN_COMMANDS``), and nothing else does.
This benchmark is the reason, measured: the same work in two fresh processes, one
with ``TF_ENABLE_ONEDNN_OPTS=0`` and one with ``=1``, launched alternately, each reporting median
seconds of

- a training step of the small CNN every default model uses (chest settings: 224 px, width 32),
  batch 32;
- a training step of the EfficientNet-Lite0 backbone (``train --backbone efficientnet-lite0``),
  224 px, batch 32;
- a forward pass of the committed model over 64 of its inputs;
- one Grad-CAM map of the committed model (the Explain page's first map).

The ratio is the time with oneDNN off over the time with it on: above 1, oneDNN is faster.
No target: it is the reason for the choice, and shows what a processor without AVX-512 gains or loses.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from bench.common import Row, python_env

CHILD = r"""
import json, sys
import numpy as np
from bench.common import median_time
from core.runtime import quiet_tensorflow
quiet_tensorflow()
import tensorflow as tf
from core.backbone import efficientnet_lite0
from core.model import build_model, load_model

model_dir, repeats = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)

def median(fn):
    return median_time(fn, repeats=repeats, warmup=2)

def train_step(model, size):
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    x = rng.random((32, size, size, 1), dtype=np.float32)
    y = rng.integers(0, 2, 32)
    return median(lambda: model.train_on_batch(x, y))

loaded = load_model(model_dir)
size = loaded.pipeline.input_size
x = rng.random((64, size, size, loaded.pipeline.channels), dtype=np.float32)
one = x[:1]
target = loaded.decide(loaded.predict(one)[0])
out = {
    "small_cnn_train_step": train_step(build_model(224, 2, width=32), 224),
    "backbone_train_step": train_step(efficientnet_lite0(224, 2), 224),
    "predict_64": median(lambda: loaded.model.predict(x, batch_size=64, verbose=0)),
    "gradcam": median(lambda: loaded.explainer.saliency(one, "gradcam", target, loaded.last_conv)),
}
print("RESULT " + json.dumps(out))
"""

LABELS = {
    "small_cnn_train_step": "training step, small CNN 224 px, batch 32",
    "backbone_train_step": "training step, EfficientNet-Lite0 224 px, batch 32",
    "predict_64": "forward pass of the committed model, 64 inputs",
    "gradcam": "one Grad-CAM map of the committed model",
}


def _child(model_dir: str, onednn: str, repeats: int) -> dict:
    env = python_env() | {"TF_ENABLE_ONEDNN_OPTS": onednn}
    done = subprocess.run([sys.executable, "-c", CHILD, model_dir, str(repeats)], env=env, capture_output=True,
                          text=True, check=True, timeout=3600)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def avx512() -> bool:
    try:
        return "avx512f" in open("/proc/cpuinfo").read()
    except OSError:
        return False


def run(model_dir: str, *, repeats: int, rounds: int = 2, log=print) -> tuple[list[Row], dict]:
    runs: dict[str, list[dict]] = {"0": [], "1": []}
    for i in range(rounds):
        for onednn in ("0", "1"):  # alternate, so both see the same machine load
            runs[onednn].append(_child(model_dir, onednn, repeats))
        log(f"  round {i + 1}: " + ", ".join(
            f"{key} off {runs['0'][-1][key]:.3f} s / on {runs['1'][-1][key]:.3f} s" for key in LABELS))
    rows = []
    for key, label in LABELS.items():
        off = statistics.median(r[key] for r in runs["0"])
        on = statistics.median(r[key] for r in runs["1"])
        rows.append(Row("8 onednn", f"{label}: oneDNN off, against on", off, "s", on, "oneDNN on",
                        note="ratio > 1: oneDNN faster"))
    return rows, {"avx512": avx512(), "runs": runs, "repeats": repeats, "rounds": rounds}
