"""Benchmark 10: the memory of batch-norm recalibration, batches sized by pixels only against by layer outputs too.

``train --recalibrate-bn`` recomputes batch-norm statistics with eager forward passes, and an eager pass keeps every
layer's output until it ends, so a batch costs its images times :func:`core.train.activation_bytes`. Batches were
sized by pixels alone (128 images at 224 px), which an EfficientNet-Lite2 run at 224 px could not afford: the machine
killed it at its first validation. Each side runs in a fresh child process on the same random images, and the
figure is the child's peak resident memory (``ru_maxrss``) after the model is built, so the two sides differ only
in the batch. The ratio is the sized batches' peak over the pixel rule's.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bench.common import REPO, Row

CHILD = """
import json, resource, sys, time
import numpy as np
from core.backbone import efficientnet_lite
from core.model import build_model
from core.train import recalibrate_batch_norm, recalibration_batch
kind, rule, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if kind == "small":
    model = build_model(224, 2, pooling="avg+max")
else:
    model = efficientnet_lite(224, 2, variant=kind, body_gate=True)
images = np.random.default_rng(0).random((n, 224, 224, 1), dtype=np.float32)
batch = recalibration_batch(images, model if rule == "sized" else None)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
recalibrate_batch_norm(model, images, batch_size=batch)
print(json.dumps({"batch": batch, "seconds": time.perf_counter() - start, "before_mb": before / 1024,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

#: The networks measured: the small CNN (whose batches must not change) and the backbone whose run was killed
#: first at 320 px. Lite2 is left out: its pixel-rule side would need past 24 GB, the failure itself.
KINDS = {"small": "the small CNN", "efficientnet-lite0": "EfficientNet-Lite0, gated"}


def child(kind: str, rule: str, n_images: int) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, rule, str(n_images)], cwd=REPO, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2",
                                                              "PATH": "/usr/bin:/bin"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(*, n_images: int = 256, log=print) -> tuple[list[Row], dict]:
    rows, details = [], {}
    for kind, title in KINDS.items():
        pixels, sized = child(kind, "pixels", n_images), child(kind, "sized", n_images)
        log(f"{title}: pixel rule {pixels}, sized by layer outputs {sized}")
        details[kind] = {"pixels": pixels, "sized": sized}
        rows.append(Row("recalibration", f"{title}: peak memory, batches of {sized['batch']} against "
                        f"{pixels['batch']}", sized["peak_mb"], "MB", pixels["peak_mb"], "the pixel rule's peak",
                        note=f"{sized['seconds']:.0f} s against {pixels['seconds']:.0f} s for {n_images} images"))
    return rows, details
