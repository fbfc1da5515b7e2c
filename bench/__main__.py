"""``python -m bench``: the speed benchmarks, as ratios measured side by side.

Prints a Markdown table and writes ``bench/results.json``. Every figure divides two things
measured in the same run (see :mod:`bench.common`); none is a pass/fail test.

    python -m bench                                   # all ten, committed chest model
    python -m bench --only explain large              # a subset
    python -m bench --model /tmp/some_run --quick     # fewer repetitions, for development
    python -m bench --only viewer                     # only the viewer in real Chromium (7; 16 sessions)
    python -m bench --only viewer --viewer-sessions 4 --out /tmp/viewer.json   # reduced; keeps results.json

Numbered as in BENCHMARKS.md: 1 explain, 2 training, 3 predict, 4 startup, 5 large, 6 scaling, 7 viewer,
8 onednn (TensorFlow's oneDNN kernels off against on), 9 epochs (train's input iterator four ways: a new one each
epoch and one endless one, each with tf.data's autotuning and without), 10 recalibration (batch-norm recalibration's
peak memory, batches sized by pixels against by the model's layer outputs; about 14 GB at its peak).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench.common import REPO, machine, table, versions  # noqa: E402

BENCHES = ("explain", "training", "predict", "startup", "large", "scaling", "viewer", "onednn", "epochs",
           "recalibration")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n", 1)[0],
                                     epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "assets" / "models" / "chest_xray"),
                        help="model folder (default: the committed chest model)")
    parser.add_argument("--only", nargs="+", choices=BENCHES, default=list(BENCHES))
    parser.add_argument("--repeats", type=int, default=9, help="timed repetitions per figure (median)")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--train-epochs", type=int, default=4, help="epochs per side; epoch 1 includes tracing")
    parser.add_argument("--epoch-epochs", type=int, default=10,
                        help="epochs per fit for 9 epochs (train's input iterator, four ways)")
    parser.add_argument("--predict-images", type=int, default=600)
    parser.add_argument("--launches", type=int, default=3, help="dashboard launches (median)")
    parser.add_argument("--sessions", type=int, default=4, help="extra browser sessions for the memory figure")
    parser.add_argument("--viewer-sessions", type=int, default=16,
                        help="browser sessions at once for the viewer (0: none; any error box on them is a failure)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, images and launches")
    parser.add_argument("--out", default=str(REPO / "bench" / "results.json"))
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.train_images, args.predict_images, args.launches = 3, 200, 200, 1

    from core.model import load_model

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    loaded = load_model(args.model)
    started = machine()
    log(f"model {args.model}; {started['cores']} cores; load average {started['load_average']}; "
        f"training processes running: {started['training_processes']}")
    rows, details = [], {}
    for name in args.only:
        log(f"[{name}]")
        t0 = time.perf_counter()
        if name == "explain":
            from bench import explain_latency
            new, info = explain_latency.run(loaded, repeats=args.repeats, log=log)
        elif name == "training":
            from bench import training_input
            new, info = training_input.run(loaded, n_images=args.train_images, epochs=args.train_epochs, log=log)
        elif name == "predict":
            from bench import batch_predict
            new, info = batch_predict.run(loaded, args.model, n_images=args.predict_images, repeats=args.repeats,
                                          log=log)
        elif name == "startup":
            from bench import startup
            new, info = startup.run(args.model, launches=args.launches, sessions=args.sessions, log=log)
        elif name == "viewer":
            from bench import viewer
            new, info = viewer.run(args.model, repeats=max(5, args.repeats // 2 + 1), sessions=args.viewer_sessions,
                                   log=log)
        elif name == "scaling":
            from bench import scaling
            new, info = scaling.run(loaded, args.model, n_images=args.predict_images, train_images=args.train_images // 2,
                                    rounds=max(2, args.repeats // 3), log=log)
        elif name == "epochs":
            from bench import epoch_iterator
            new, info = epoch_iterator.run(loaded, n_images=args.train_images, epochs=args.epoch_epochs,
                                           rounds=1 if args.quick else 3, log=log)
        elif name == "recalibration":
            from bench import recalibration
            new, info = recalibration.run(n_images=128 if args.quick else 256, log=log)
        elif name == "onednn":
            from bench import onednn
            new, info = onednn.run(args.model, repeats=max(3, args.repeats // 2), rounds=1 if args.quick else 2,
                                   log=log)
        else:
            from bench import large_inputs
            new, info = large_inputs.run(loaded, repeats=args.repeats, log=log)
        rows += new
        details[name] = info | {"bench_seconds": round(time.perf_counter() - t0, 1)}

    finished = machine()
    result = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": args.model,
        "model_sha256": loaded.info.get("sha256"),
        "machine": started | {"load_average_end": finished["load_average"],
                              "training_processes_end": finished["training_processes"]},
        "versions": versions(),
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",)},
        "rows": [row.to_dict() for row in rows],
        "details": details,
    }
    Path(args.out).write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    print(table(rows))
    print(f"\n{started['date_utc']}, {started['cores']} CPU cores, no GPU, load average "
          f"{started['load_average'][0]} -> {finished['load_average'][0]}; written to {args.out}")
    return 0


def _plain(value):
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    raise SystemExit(main())
