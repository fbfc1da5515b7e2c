"""Benchmark 3: ``python -m core predict`` over a folder of images against the ceiling.

- CLI: the command as a user types it, on N chest radiographs, ``--json``. It prints its
  results a batch at a time; the rate is taken between its first output line and its last,
  so the process start-up (Python, TensorFlow, loading the model) and the first batch are
  outside it. The start-up is reported on its own (the whole run for a single image).
- ceiling: ``model.predict`` on the same images already decoded and preprocessed in memory,
  batches of 64 (the issue's ceiling); and, stricter, the model alone: a compiled forward
  pass over the same in-memory batches with nothing else around it.
- one at a time: the previous CLI's loop in this process (read, decode, preprocess, then
  one eager model call and one eager outlier-feature call per image), the "before".
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import REPO, Row, median_time, python_env
from bench.training_input import DATA
from core.predict import BATCH as PREDICT_BATCH


def run(loaded, model_dir: str, *, n_images: int, repeats: int, log=print) -> tuple[list[Row], dict]:
    from core import data as data_mod
    from core.io import load_scan

    dataset = data_mod.list_dataset(DATA, class_names=["NORMAL", "PNEUMONIA"], limit_per_class=n_images // 2)
    paths = [str(item.path) for item in dataset.items][:n_images]
    n = len(paths)

    def cli(files) -> tuple[float, float, float]:
        """(total seconds, time of the first output line, time of the last), from the launch."""
        with tempfile.TemporaryFile("w+") as errors:
            start = time.perf_counter()
            process = subprocess.Popen([sys.executable, "-m", "core", "predict", "--model", model_dir, "--json",
                                        *files], cwd=REPO, env=python_env(), stdout=subprocess.PIPE, stderr=errors,
                                       text=True)
            arrivals = [time.perf_counter() - start for _ in process.stdout]
            process.wait()
            total = time.perf_counter() - start
            if process.returncode != 0 or len(arrivals) != len(files):
                errors.seek(0)
                raise RuntimeError(f"predict failed ({process.returncode}): {errors.read()[-500:]}")
        return total, arrivals[0], arrivals[-1]

    x, _ = data_mod.prepare_arrays(list(dataset.items)[:n], loaded.pipeline)

    def ceiling_run() -> float:
        start = time.perf_counter()
        loaded.model.predict(x, batch_size=64, verbose=0)
        return time.perf_counter() - start

    import tensorflow as tf

    forward = tf.function(lambda t: loaded.model(t, training=False), reduce_retracing=True)

    def compiled_run() -> float:  # the model alone: compiled forward passes, batches of 64, nothing else
        start = time.perf_counter()
        for i in range(0, n, 64):
            forward(x[i:i + 64]).numpy()
        return time.perf_counter() - start

    ceiling_run()  # warm-up: builds Keras's predict function
    compiled_run()
    runs = max(3, repeats // 3)
    startups, rates, ceilings, compiled = [], [], [], []
    first_batch = min(PREDICT_BATCH, n)
    for _ in range(runs):  # alternate, so all three see the same machine load
        startups.append(cli(paths[:1])[0])
        _, first, last = cli(paths)
        # Results are printed a batch at a time: the batches after the first are timed between
        # the first line and the last, with the process start-up and the first batch outside.
        rates.append((n - first_batch) / max(last - first, 1e-9))
        ceilings.append(n / ceiling_run())
        compiled.append(n / compiled_run())
    startup, cli_rate, ceiling_rate, compiled_rate = (statistics.median(v)
                                                      for v in (startups, rates, ceilings, compiled))

    outlier = loaded._outlier  # (feature model, check) when the model has an outlier check

    def one_at_a_time():  # the previous CLI: eager Keras calls, one image each, features in a second call
        for path in paths[:64]:
            scan = load_scan(open(path, "rb").read(), path)
            tensor = loaded.pipeline.scan_tensor(scan)
            loaded.model(tensor, training=False).numpy()
            if outlier is not None:
                outlier[0](tensor, training=False).numpy()

    single = median_time(one_at_a_time, repeats=3, warmup=1)
    single_rate = 64 / single
    log(f"  CLI: {', '.join(f'{r:.0f}' for r in rates)} img/s after its first batch; start-up with 1 image "
        f"{startup:.1f} s; model.predict {', '.join(f'{r:.0f}' for r in ceilings)} img/s; compiled forward "
        f"{', '.join(f'{r:.0f}' for r in compiled)} img/s; one at a time "
        f"{single_rate:.0f} img/s")
    details = {"images": n, "cli_images_per_second": rates, "startup_seconds": startups,
               "ceiling_images_per_second": ceilings, "compiled_forward_images_per_second": compiled,
               "one_at_a_time_images_per_second": single_rate}
    return [
        Row("3 batch predict", f"python -m core predict, {n} images (start-up excluded)", cli_rate, "img/s",
            ceiling_rate, "model.predict in memory", ">= 0.7", extra=details),
        Row("3 batch predict", "the same against the model alone (compiled forward, batches of 64, in memory)",
            cli_rate, "img/s", compiled_rate, "compiled forward", "",
            note="model.predict adds per-batch overhead; this is the stricter limit"),
        Row("3 batch predict", "CLI process start-up (Python, TensorFlow, model), 1 image", startup, "s",
            None, "", "", note="excluded from the rate above"),
        Row("3 batch predict", "previous one-image-per-call loop (in process)", single_rate, "img/s",
            ceiling_rate, "model.predict in memory", ""),
    ], details

