"""Benchmark 6 (issue 18): throughput with 1 and 2 workers, for training steps and for predict.

- Training steps: worker processes started the way a cluster starts them, each with its own
  ``TF_CONFIG`` on loopback ports free at the time (``core.multiworker.loopback_tf_configs``), each
  training the committed chest model's network (same input size and width) with the training
  augmentation, on the same prepared chest radiographs, 32 images per replica per step. Three sides,
  run in turn, round after round: one process without any strategy (the default path), one
  ``MultiWorkerMirroredStrategy`` worker, two of them. A side's rate is images per second over its
  timed steps, after untimed steps that trace the step; process start-up and data preparation are
  outside it. Scaling efficiency = rate with 2 workers / (2 x rate with 1).
- Predict: the same N chest files through ``core.predict.predict_files`` in this process (what
  ``python -m core predict`` runs), and through ``core.distributed.predict_archive`` on local Dask
  clusters of 1 and of 2 worker processes (one thread each), started before timing, in turn. Each
  side's rate is taken between its 64th record and its last, so loading the model on the workers and
  the first batch are outside it, as in benchmark 3.

On a machine with 2 cores, 2 workers share the cores 1 worker already uses: they cannot scale, and the
figures say by how much they do not. The rows are context for a cluster, with no target.

Run as ``python -m bench --only scaling``; ``python -m bench.scaling --worker ...`` is one training
worker (started by the benchmark, not by hand).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, Row, python_env
from bench.training_input import DATA

PER_REPLICA_BATCH = 32
WARMUP_STEPS = 4
TIMED_STEPS = 12
FIRST_RECORDS = 64  # predict rates start at this record


def run(loaded, model_dir: str, *, n_images: int, train_images: int, rounds: int, log=print) -> tuple[list[Row], dict]:
    size = int(loaded.pipeline.input_size)
    width = next((int(layer.filters) for layer in loaded.model.layers if layer.name == "conv1a"), 32)
    uptime = [_uptime()]
    training = {"plain": [], "1 worker": [], "2 workers": []}
    for r in range(rounds):  # one of each side per round, so a change of load hits all three
        for side, workers in (("plain", 0), ("1 worker", 1), ("2 workers", 2)):
            rate = _train_side(workers, size=size, width=width, n_images=train_images)
            training[side].append(rate)
            log(f"  training round {r + 1}, {side}: {rate:.1f} img/s")
    uptime.append(_uptime())
    predict, first_record = _predict_sides(loaded, model_dir, n_images=n_images, rounds=rounds, log=log)
    uptime.append(_uptime())

    rate = {k: statistics.median(v) for k, v in training.items()}
    speed = {k: statistics.median(v) for k, v in predict.items()}
    details = {"cores": os.cpu_count(), "uptime": uptime, "per_replica_batch": PER_REPLICA_BATCH,
               "timed_steps": TIMED_STEPS, "warmup_steps": WARMUP_STEPS, "train_images": train_images,
               "input_size": size, "width": width, "training_images_per_second": training,
               "predict_images": n_images, "predict_images_per_second": predict,
               "predict_seconds_to_first_record": first_record}
    note = f"{os.cpu_count()} cores shared by both workers"
    rows = [
        Row("6 scaling", "training steps, 2 workers (MultiWorkerMirroredStrategy) vs 1, images/s",
            rate["2 workers"], "img/s", rate["1 worker"], "1 worker", "", note=note, extra=details),
        Row("6 scaling", "training steps, scaling efficiency with 2 workers: rate / (2 x 1-worker rate)",
            rate["2 workers"], "img/s", 2 * rate["1 worker"], "2 x 1 worker", "", note=note),
        Row("6 scaling", "training steps, 1 worker (strategy, collectives) vs one process without a strategy",
            rate["1 worker"], "img/s", rate["plain"], "no strategy", ""),
        Row("6 scaling", f"predict, Dask with 1 worker vs in process, {n_images} files", speed["dask 1 worker"], "img/s",
            speed["in process"], "in process", ""),
        Row("6 scaling", f"predict, Dask with 2 workers vs in process, {n_images} files", speed["dask 2 workers"],
            "img/s", speed["in process"], "in process", ""),
        Row("6 scaling", "predict, scaling efficiency with 2 Dask workers: rate / (2 x 1-worker rate)",
            speed["dask 2 workers"], "img/s", 2 * speed["dask 1 worker"], "2 x 1 worker", "", note=note),
    ]
    return rows, details


# ----------------------------------------------------------------------------- training

def _train_side(workers: int, *, size: int, width: int, n_images: int) -> float:
    """Images per second of one side: ``workers`` MultiWorkerMirroredStrategy processes (0: one process,
    no strategy), from the chief's timed steps."""
    from core.multiworker import loopback_tf_configs

    configs = loopback_tf_configs(workers) if workers else [None]
    command = [sys.executable, "-m", "bench.scaling", "--worker", "--input-size", str(size), "--width", str(width),
               "--images", str(n_images)]
    processes = []
    for config in configs:
        env = python_env()
        env.pop("TF_CONFIG", None)
        if config is not None:
            env["TF_CONFIG"] = json.dumps(config)
        processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=1800)
        if process.returncode != 0:
            raise RuntimeError(f"training worker failed ({process.returncode}): {stderr[-800:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results[0]["images_per_second"]  # the chief's; every worker takes the same steps


def _worker(args) -> None:
    """One training worker: prints {"images_per_second", "replicas", "step_seconds"} as its last line."""
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    from core import multiworker

    strategy = multiworker.make_strategy("multiworker") if os.environ.get("TF_CONFIG") else None
    import contextlib

    import keras

    from core import data as data_mod
    from core.model import build_model
    from core.preprocess import Pipeline

    replicas = multiworker.replica_count(strategy) if strategy else 1
    batch = multiworker.global_batch_size(PER_REPLICA_BATCH, replicas)
    names = ["NORMAL", "PNEUMONIA"]
    items = list(data_mod.list_dataset(DATA, class_names=names, limit_per_class=args.images // 2).items)
    pipeline = Pipeline(input_size=args.input_size)
    x, y = data_mod.prepare_arrays(items, pipeline)
    augment = data_mod.augmentation(flip=False, value_range=pipeline.value_range)
    times = []

    class Steps(keras.callbacks.Callback):
        def on_train_batch_end(self, batch_index, logs=None):
            times.append(time.perf_counter())

    with strategy.scope() if strategy else contextlib.nullcontext():
        keras.utils.set_random_seed(0)
        ds = data_mod.make_tf_dataset(x, y, len(names), batch_size=batch, training=True, augment=augment).repeat()
        ds = multiworker.shard_input(ds) if strategy else ds
        model = build_model(args.input_size, len(names), width=args.width)
        model.compile(optimizer=keras.optimizers.Adam(multiworker.scaled_learning_rate(1e-3, replicas)),
                      loss="categorical_crossentropy")
        model.fit(ds, steps_per_epoch=WARMUP_STEPS + TIMED_STEPS, epochs=1, callbacks=[Steps()], verbose=0)
    steps = [b - a for a, b in zip(times[WARMUP_STEPS - 1:], times[WARMUP_STEPS:])]
    print(json.dumps({"images_per_second": batch * len(steps) / sum(steps), "replicas": replicas,
                      "step_seconds": steps}), flush=True)


# ----------------------------------------------------------------------------- predict

def _predict_sides(loaded, model_dir: str, *, n_images: int, rounds: int, log=print):
    from core import data as data_mod
    from core.distributed import cluster_client, predict_archive
    from core.predict import predict_files

    dataset = data_mod.list_dataset(DATA, class_names=["NORMAL", "PNEUMONIA"], limit_per_class=n_images // 2)
    paths = [str(item.path) for item in dataset.items][:n_images]
    rates = {"in process": [], "dask 1 worker": [], "dask 2 workers": []}
    first = {k: [] for k in rates}

    def timed(records) -> tuple[float, float]:
        """(images/s from record FIRST_RECORDS to the last, seconds to the first record)."""
        start = time.perf_counter()
        stamps = [time.perf_counter() for _ in records]
        k = min(FIRST_RECORDS, len(stamps) - 1)
        return (len(stamps) - 1 - k) / (stamps[-1] - stamps[k]), stamps[0] - start

    with cluster_client("local:1") as one, cluster_client("local:2") as two, \
            tempfile.TemporaryDirectory() as folder:
        def archive(client, n):
            out = Path(folder) / f"run{n}.jsonl"  # a new file each time: an existing one would be resumed
            start = time.perf_counter()
            stamps = []
            predict_archive(paths, model_dir, out, client=client, on_record=lambda _: stamps.append(time.perf_counter()))
            k = min(FIRST_RECORDS, len(stamps) - 1)
            return (len(stamps) - 1 - k) / (stamps[-1] - stamps[k]), stamps[0] - start

        list(predict_files(paths[:64], loaded))  # warm: the compiled forward pass
        archive(one, "warm1"), archive(two, "warm2")  # warm: worker start-up, imports
        for r in range(rounds):
            for side, fn in (("in process", lambda: timed(predict_files(paths, loaded))),
                             ("dask 1 worker", lambda: archive(one, f"{r}-1")),
                             ("dask 2 workers", lambda: archive(two, f"{r}-2"))):
                rate, to_first = fn()
                rates[side].append(rate)
                first[side].append(to_first)
                log(f"  predict round {r + 1}, {side}: {rate:.0f} img/s ({to_first:.1f} s to the first record)")
    return rates, first


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.scaling")
    parser.add_argument("--worker", action="store_true", required=True)
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--images", type=int, default=256)
    _worker(parser.parse_args())
