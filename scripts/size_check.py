"""Does a model rank better when it reads its validation films larger than it was trained on? (issue 14)

"FixRes" (Touvron et al., NeurIPS 2019): a network trained on random crops sees objects larger in training than at
test, and gains from a larger test input. This check rebuilds a model folder's network at each ``--sizes`` side with
its trained weights (every layer before the global pooling is a convolution, so the weights fit any side the network
can take), sets the pipeline's resize to the same side, and scores the model's own validation split at each: the AUC
of the last class (one against the rest, averaged over the classes, for more than two) and the accuracy of the
network's own outputs. Nothing is saved; the model folder is read only.

    python scripts/size_check.py assets/models/fracture [--sizes 224,256,288,320,384] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data import validation_keys  # noqa: E402
from core.io import load_scan  # noqa: E402
from core.model import _two_columns, load_model  # noqa: E402
from core.robustness import display_grey, tensor_of_grey  # noqa: E402


def at_size(model, side: int):
    """The same network, with the same weights, taking ``side`` x ``side`` inputs."""
    import keras

    config = json.loads(json.dumps(model.get_config()))
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            shape = layer["config"]["batch_shape"]
            layer["config"]["batch_shape"] = [shape[0], side, side, shape[3]]
    network = keras.Model.from_config(config)
    network.set_weights(model.get_weights())
    return network


def scores(probabilities: np.ndarray, labels: np.ndarray) -> dict:
    """AUC (binary: the last class; more classes: one against the rest, macro) and accuracy of argmax.

    >>> scores(np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]), np.array([0, 1, 0]))
    {'auc': 0.5, 'accuracy': 0.667}
    """
    from sklearn.metrics import roc_auc_score

    if probabilities.shape[1] == 2:
        auc = roc_auc_score(labels == 1, probabilities[:, 1])
    else:
        auc = roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")
    return {"auc": round(float(auc), 4), "accuracy": round(float(np.mean(probabilities.argmax(1) == labels)), 3)}


def size_check(folder: str, images: Path, sizes: list[int], limit: int | None = None) -> dict:
    loaded = load_model(folder)
    keys = validation_keys(folder)
    if limit:  # the first films of each class, so a short run still has both
        keys = [key for name in loaded.class_names
                for key in [k for k in keys if k.startswith(f"{name}/")][:limit]]
    labels = np.array([loaded.class_names.index(k.split("/", 1)[0]) for k in keys])
    greys = [display_grey(load_scan((images / k).read_bytes(), Path(k).name)) for k in keys]
    rows = {}
    for side in sizes:
        try:
            network = at_size(loaded.model, side)
        except ValueError as err:
            rows[side] = {"error": f"The network cannot take {side} px inputs ({str(err).splitlines()[0]})."}
            continue
        pipeline = dataclasses.replace(loaded.pipeline, input_size=side)
        tensors = np.stack([tensor_of_grey(pipeline, grey) for grey in greys])
        outputs = np.asarray(network.predict(tensors, batch_size=16, verbose=0))
        rows[side] = scores(_two_columns(outputs), labels)
    return {"model": folder, "trained_at": int(loaded.pipeline.input_size), "films": len(keys), "sizes": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--data", help="the model's image folder (default: its params.json 'data')")
    parser.add_argument("--sizes", default="224,256,288,320,384", help="comma-separated input sides in pixels")
    parser.add_argument("--limit", type=int, help="at most this many validation films of each class")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        if min(sizes) < 32:
            raise ValueError
    except ValueError:
        print(f"--sizes must be whole numbers of pixels of at least 32, comma-separated, not {args.sizes!r}.",
              file=sys.stderr)
        return 2
    data = args.data or json.loads((Path(args.model) / "params.json").read_text())["data"]
    result = size_check(args.model, Path(data), sizes, args.limit)
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['model']}: {result['films']} validation films, trained at {result['trained_at']} px")
    for side, row in result["sizes"].items():
        print(f"  {side} px: " + (row["error"] if "error" in row else f"AUC {row['auc']:.3f}, accuracy "
                                                                       f"{row['accuracy']:.3f}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
