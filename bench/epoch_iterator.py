"""Benchmark 9: ``train``'s input iterator, four ways, side by side.

Keras opens a new iterator over a finite ``tf.data`` dataset at the start of every epoch. On this 2-core machine
the first batch of a new iterator now and then stalled for about as long as a whole epoch, with no CPU time spent
(2026-12-06: 2 of 14 epochs on synthetic arrays, the stall at step 0 every time). ``train`` first answered that by
repeating its training batches and fitting with ``steps_per_epoch`` (``core.data.make_tf_dataset(..., repeat=True)``),
so one iterator serves the whole run; that fit then often took 21-34 s to return after its last epoch. ``py-spy dump
--native`` during that pause showed the main thread in the iterator's destructor, waiting for tf.data's
autotuning thread to wake (``RootDataset::Iterator::~Iterator``); a new iterator each epoch pays the same wait
when the previous epoch's iterator goes away. ``make_tf_dataset`` now turns tf.data's autotuning off.

The sides train the same network (a fresh ``build_model``, same seed) on the same prepared chest images with the
same augmentation and degradations as ``train``, ``epochs`` epochs in one ``fit`` call each, with a validation
split read every epoch as ``train`` does: a new iterator each epoch with autotuning (Keras's own way), one endless
iterator with autotuning (``train`` before), one endless iterator without (``train`` now), and a new iterator each
epoch without autotuning (whether the endless iterator is still needed once autotuning is off). They alternate, round
after round, so a change in machine load hits each. Reported: the whole fit's wall time per side (median over
rounds), the median epoch, how many epochs took more than 1.5 times their side's median epoch ("stalled"), and
the seconds ``fit`` took to return after its last epoch ended. The garbage of the previous fit is collected
before each timed fit: left to the collector, a dropped iterator's wait went inside the next side's timing.
"""

from __future__ import annotations

import gc
import time

import numpy as np

from bench.common import REPO, Row
from bench.training_input import _width

DATA = REPO.parent / "shared" / "data" / "chest_xray" / "train"
STALL = 1.5  # an epoch this many times its side's median counts as stalled
KERAS = "new iterator each epoch, autotuning on"
BEFORE = "one endless iterator, autotuning on"
NOW = "one endless iterator, autotuning off"
FRESH = "new iterator each epoch, autotuning off"


def run(loaded, *, n_images: int, epochs: int, rounds: int, log=print) -> tuple[list[Row], dict]:
    import keras

    from core import data as data_mod
    from core.model import build_model
    from core.perturb import degrade_batch, recipe_for
    from core.preprocess import Pipeline
    from core.tasks import load_spec

    spec = load_spec("chest_xray")
    names = spec["class_names"]
    dataset = data_mod.list_dataset(DATA, class_names=names, limit_per_class=n_images // 2)
    items = list(dataset.items)[:n_images]
    size, batch = int(loaded.pipeline.input_size), 32
    pipeline = Pipeline(input_size=size)
    x, y = data_mod.prepare_arrays(items, pipeline)
    n_val = max(batch, len(x) // 8)
    order = np.random.default_rng(0).permutation(len(x))
    x_val, y_val, x, y = x[order[:n_val]], y[order[:n_val]], x[order[n_val:]], y[order[n_val:]]
    augment = data_mod.augmentation(flip=spec.get("flip", False), value_range=pipeline.value_range)
    rng = np.random.default_rng(1)
    recipe = recipe_for(spec, None)

    def degrade(images):
        return degrade_batch(images, rng, mean=pipeline.mean, std=pipeline.std, recipe=recipe)

    steps = int(np.ceil(len(x) / batch))

    class EpochTimes(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.t0)

        def on_train_end(self, logs=None):
            self.ended = time.perf_counter()

    def fit(endless: bool, autotune: bool) -> tuple[float, list[float], float]:
        keras.utils.set_random_seed(0)
        model = build_model(size, len(names), width=_width(loaded))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
        train_ds = data_mod.make_tf_dataset(x, y, len(names), batch_size=batch, training=True, augment=augment,
                                            degrade=degrade, repeat=endless, autotune=autotune)
        val_ds = data_mod.make_tf_dataset(x_val, y_val, len(names), batch_size=64, training=False, autotune=autotune)
        times = EpochTimes()
        gc.collect()  # the other side's iterators go now, not inside this side's timed fit
        t0 = time.perf_counter()
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, verbose=0, callbacks=[times],
                  **({"steps_per_epoch": steps} if endless else {}))
        done = time.perf_counter()
        return done - t0, times.seconds, done - times.ended

    sides = {KERAS: (False, True), BEFORE: (True, True), NOW: (True, False), FRESH: (False, False)}
    whole: dict[str, list[float]] = {name: [] for name in sides}
    per_epoch: dict[str, list[float]] = {name: [] for name in sides}
    returns: dict[str, list[float]] = {name: [] for name in sides}
    for r in range(rounds):
        for name, (endless, autotune) in sides.items():
            total, seconds, back = fit(endless, autotune)
            whole[name].append(total)
            per_epoch[name] += seconds[1:]  # epoch 1 traces the step
            returns[name].append(back)
            log(f"  round {r + 1}, {name}: {total:.1f} s (returned {back:.1f} s after its last epoch); epochs "
                + ", ".join(f"{s:.1f}" for s in seconds))
    stalled = {name: int(sum(s > STALL * np.median(v) for s in v)) for name, v in per_epoch.items()}
    median_whole = {name: float(np.median(v)) for name, v in whole.items()}
    median_epoch = {name: float(np.median(v)) for name, v in per_epoch.items()}
    details = {"images": len(x), "validation_images": n_val, "epochs": epochs, "rounds": rounds,
               "fit_seconds": whole, "epoch_seconds_after_first": per_epoch, "stalled_epochs": stalled,
               "seconds_to_return_after_last_epoch": returns, "stall_rule": f"> {STALL} x the side's median epoch"}
    later = len(per_epoch[NOW])
    stalls = "; ".join(f"{name}: {stalled[name]} of {later}" for name in sides)
    note = (f"stalled epochs (> {STALL} x median): {stalls}; fit returned after its last epoch in "
            + "; ".join(f"{name}: {max(returns[name]):.1f} s at most" for name in sides))
    whole_fit = f"whole fit, {epochs} epochs of {len(x)} images (median of {rounds}): {NOW}"
    rows = [Row("9 training epochs", whole_fit, median_whole[NOW], "s", median_whole[KERAS], KERAS, "",
                note=note, extra=details),
            Row("9 training epochs", whole_fit, median_whole[NOW], "s", median_whole[BEFORE], BEFORE, ""),
            Row("9 training epochs", whole_fit, median_whole[NOW], "s", median_whole[FRESH], FRESH, "")]
    rows += [Row("9 training epochs", f"median epoch after the first: {NOW}", median_epoch[NOW], "s",
                 median_epoch[other], other, "") for other in (KERAS, BEFORE, FRESH)]
    return rows, details

