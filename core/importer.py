"""Import a Keras 3 image classifier as a self-describing model folder, like the default models.

``import_model(data, class_names=..., out=...)`` takes the bytes of a ``.keras`` file and writes
``out/`` with ``model.keras`` (the model rebuilt as one flat Functional model), ``model.json`` (class
names, title, input shape and channels, the preprocessing pipeline's parameters, SHA-256, the last
convolution and the explainable layers, the output kind, ``imported: true``) and ``MODEL_CARD.md``
(what is and is not known about the model). ``python -m core import-model`` and the dashboard's
Models page both call it.

What is checked, each refusal being one sentence (:class:`ModelImportError`):

- the file is a Keras 3 ``.keras`` archive (not random bytes, not a legacy HDF5 ``.h5`` file);
- it has no ``Lambda`` layer and no custom (non-Keras) object: Keras ``safe_mode`` stays on, the
  configuration is read before anything is deserialised, and nothing from the file runs;
- one square image input of 1 or 3 channels, one output of class probabilities: a softmax over the
  classes, or a single sigmoid for a binary model (its output is P(last class)); a regression or
  multi-label output is refused;
- ``Sequential`` models and Functional models with nested sub-models are rebuilt as one flat Functional
  model (tf-keras-vis explains only those), and the rebuilt model must give the original's
  probabilities, within :data:`TOLERANCE`, on :data:`CHECK_INPUTS` random inputs in the pipeline's
  value range before anything is written; the written folder is loaded back and checked again.

The uploaded bytes are read in memory (Keras reads the archive from a ``BytesIO``); the only thing
written is the model folder the person asked for.

>>> parse_preprocess("signed")
(0.5, 0.5)
>>> parse_preprocess("mean=0.45,std=0.225")
(0.45, 0.225)
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from core.model import INFO_FILE, MODEL_FILE, ModelError, library_versions, load_model, save_model
from core.preprocess import Pipeline
from core.saliency import conv_layer_names

#: Largest ``.keras`` file imported (bytes).
MAX_MODEL_BYTES = 512 << 20
#: Largest difference in any probability allowed between the rebuilt model and the original.
TOLERANCE = 1e-5
#: Random inputs the rebuilt model is compared on.
CHECK_INPUTS = 8
#: Named input ranges: (mean, std) of the pipeline's last step ``(x - mean) / std`` on the [0, 1] image.
PREPROCESS = {
    "unit": (0.0, 1.0),
    "signed": (0.5, 0.5),
    "byte": (0.0, 1.0 / 255.0),
    "standard": (0.5, 0.25),
}
#: How each named range reads in a model card or a form.
PREPROCESS_TEXT = {
    "unit": "pixel values in [0, 1]",
    "signed": "pixel values in [-1, 1]",
    "byte": "pixel values 0 to 255",
    "standard": "(x - 0.5) / 0.25 of the [0, 1] image, as this project's own models",
}
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class ModelImportError(ValueError):
    """A model file or import choice that cannot be used; ``str(err)`` is one sentence for the user."""


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_model` wrote: the folder, its ``model.json``, and how the model was rebuilt."""

    folder: Path
    info: dict
    rebuilt_from: str  # "Sequential", "nested Functional" or "Functional"
    max_difference: float  # largest probability difference, rebuilt vs original, on the random inputs

    def summary(self) -> str:
        """One line for the command line and the page."""
        info = self.info
        shape = info["input_shape"]
        layer = (f"last convolution {info['last_conv']}" if info["last_conv"]
                 else "no convolution (SmoothGrad only)")
        return (f"Imported {info['title']}: {len(info['class_names'])} classes ({', '.join(info['class_names'])}), "
                f"input {shape[0]} x {shape[1]} x {shape[2]}, {info['output']} output, {layer}; "
                f"{self.rebuilt_from} rebuilt as a flat Functional model (largest difference "
                f"{self.max_difference:.1e} on {CHECK_INPUTS} random inputs, tolerance {TOLERANCE:.0e}); "
                f"written to {self.folder}.")


# ----------------------------------------------------------------------------- choices

def parse_preprocess(text: str) -> tuple[float, float]:
    """(mean, std) from a named input range (:data:`PREPROCESS`) or ``mean=M,std=S``."""
    text = str(text).strip().lower()
    if text in PREPROCESS:
        return PREPROCESS[text]
    try:
        values = dict(part.split("=", 1) for part in text.replace(" ", "").split(","))
        mean, std = float(values["mean"]), float(values["std"])
        if set(values) != {"mean", "std"} or not np.isfinite([mean, std]).all() or std == 0:
            raise ValueError
    except (ValueError, KeyError):
        raise ModelImportError(f"The preprocessing {text!r} is not known; use one of {', '.join(PREPROCESS)} "
                               "or mean=M,std=S (the model then receives (x - M) / S of the [0, 1] image).") from None
    return mean, std


def parse_classes(text) -> list[str]:
    """Class names from ``a,b,c`` (or a list), in the order of the model's outputs."""
    names = [str(n).strip() for n in (text.split(",") if isinstance(text, str) else text)]
    names = [n for n in names if n]
    if len(names) < 2:
        raise ModelImportError("Give at least two class names, comma-separated, in the order of the model's outputs "
                               "(for a single sigmoid output: the negative class, then the positive one).")
    if len(set(names)) != len(names):
        raise ModelImportError("The class names must all be different.")
    return names


# ----------------------------------------------------------------------------- reading the file

def _layer_configs(value):
    """Every serialised Keras object (a dict with ``class_name`` and ``config``) in a configuration."""
    if isinstance(value, dict):
        if "class_name" in value and "config" in value:
            yield value
        for child in value.values():
            yield from _layer_configs(child)
    elif isinstance(value, list):
        for child in value:
            yield from _layer_configs(child)


def _is_custom(obj: dict) -> bool:
    name = str(obj.get("class_name", ""))
    if name.startswith("__") or "module" not in obj:  # Keras's own markers (__keras_tensor__, __tuple__)
        return False
    return not str(obj.get("module") or "").startswith("keras")


def read_keras(data: bytes):
    """The Keras model in a ``.keras`` file's bytes, loaded in memory with ``safe_mode`` on.

    Raises :class:`ModelImportError` (one sentence) for anything else: random bytes, a legacy HDF5 file,
    an archive without a model configuration, a ``Lambda`` layer or a custom object, a file Keras
    cannot load.
    """
    data = bytes(data)
    if len(data) > MAX_MODEL_BYTES:
        raise ModelImportError(f"The model file is {len(data) / (1 << 20):,.0f} MB, more than the "
                               f"{MAX_MODEL_BYTES >> 20} MB imported here.")
    if data.startswith(_HDF5_MAGIC):
        raise ModelImportError("This is a legacy HDF5 (.h5) Keras file; load it where it was made and save it again "
                               "in the Keras 3 format with model.save('model.keras').")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if "config.json" not in archive.namelist():
                raise ModelImportError("This zip archive holds no Keras model (no config.json); save the model with "
                                       "model.save('model.keras') in Keras 3.")
            info = archive.getinfo("config.json")
            if info.file_size > 64 << 20:
                raise ModelImportError("The model's configuration is implausibly large, so the file was refused.")
            config = json.loads(archive.read("config.json"))
    except ModelImportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, RuntimeError):
        raise ModelImportError("This file is not a Keras 3 model (.keras) or it is damaged; save the model with "
                               "model.save('model.keras') and upload that file.") from None
    objects = list(_layer_configs(config))
    lambdas = [o for o in objects if o.get("class_name") == "Lambda"]
    if lambdas:
        raise ModelImportError("The model has a Lambda layer, whose Python code Keras safe_mode refuses to run; "
                               "replace it with built-in Keras layers (such as Rescaling instead of a Lambda that "
                               "scales) and save the model again.")
    custom = sorted({str(o.get("registered_name") or o.get("class_name")) for o in objects if _is_custom(o)})
    if custom:
        raise ModelImportError(f"The model uses custom objects ({', '.join(custom[:3])}) that are not part of Keras, "
                               "which safe_mode does not load; rebuild it from built-in Keras layers and save it "
                               "again.")
    from keras.src.saving import saving_lib  # keras.models.load_model takes a path; this reads the bytes in memory

    try:
        return saving_lib.load_model(io.BytesIO(data), safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure of Keras's loader is one sentence for the user
        raise ModelImportError(f"Keras cannot load this model ({type(exc).__name__}); save it again with "
                               "model.save('model.keras') in Keras 3.") from None


# ----------------------------------------------------------------------------- what the model takes and gives

def input_facts(model, input_size: int | None, channels: int | None) -> tuple[int, int]:
    """(side, channels) of the model's one square image input; one sentence when it has another kind."""
    try:
        inputs = list(model.inputs or [])
    except Exception:  # noqa: BLE001 - a Sequential saved before it was built has no inputs at all
        inputs = []
    if len(inputs) != 1:
        raise ModelImportError(f"The model takes {len(inputs) or 'no'} inputs; the dashboard gives a model one image, "
                               "so export a model with a single image input.")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ModelImportError(f"The model's input has shape {shape[1:]}, not (height, width, channels) of an image; "
                               "the dashboard explains 2-D image classifiers.")
    rows, cols, depth = shape[1:]
    if depth not in (1, 3):
        raise ModelImportError(f"The model takes {depth} channels; the dashboard gives 1 (grey) or 3 (the grey image "
                               "repeated, for an RGB model).")
    if channels is not None and int(channels) != depth:
        raise ModelImportError(f"The model takes {depth}-channel images, not {int(channels)}; choose {depth} channels "
                               "or leave the choice to the model.")
    if rows is not None and cols is not None and rows != cols:
        raise ModelImportError(f"The model takes {rows} x {cols} images; the dashboard prepares square ones, so "
                               "export a model with a square input.")
    fixed = rows if rows is not None else cols
    if fixed is not None and input_size is not None and int(input_size) != fixed:
        raise ModelImportError(f"The model takes {fixed} x {fixed} images, not {int(input_size)} x {int(input_size)}; "
                               f"give --input-size {fixed} or leave it out.")
    side = int(fixed if fixed is not None else input_size or 0)
    if not side:
        raise ModelImportError("The model accepts any image size; give the input size it was trained on.")
    if not 8 <= side <= 1024:
        raise ModelImportError(f"An input of {side} x {side} pixels is outside the 8 to 1024 the dashboard prepares.")
    return side, int(depth)


def _activation_name(layer) -> str | None:
    if type(layer).__name__ == "Softmax":
        return "softmax"
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else None


def output_kind(model, n_classes: int) -> str:
    """``"softmax"`` or ``"sigmoid"``: what the model's one output is; one sentence when it is not probabilities."""
    outputs = list(model.outputs)
    if len(outputs) != 1:
        raise ModelImportError(f"The model has {len(outputs)} outputs; the dashboard explains a classifier with one "
                               "output of class probabilities.")
    shape = tuple(outputs[0].shape)
    if len(shape) != 2 or shape[1] is None:
        raise ModelImportError(f"The model's output has shape {shape[1:]}, not one probability per class; the "
                               "dashboard explains image classifiers, not segmentation or detection models.")
    width = int(shape[1])
    activation = _activation_name(outputs[0]._keras_history[0])
    if activation not in ("softmax", "sigmoid"):
        raise ModelImportError(f"The model's last layer has a {activation or 'non-probability'} activation, so its "
                               "output is not a probability (a regression model's is not); the dashboard explains "
                               "classifiers ending in softmax, or in one sigmoid for two classes.")
    if activation == "sigmoid" and width != 1:
        raise ModelImportError(f"The model ends in {width} independent sigmoids (a multi-label model); the dashboard "
                               "explains one choice among classes: a softmax, or a single sigmoid for two classes.")
    if activation == "softmax" and width < 2:
        raise ModelImportError("The model's softmax has one output, which is always 1; export the layer before it "
                               "with a sigmoid, or a softmax over two classes.")
    expected = 2 if activation == "sigmoid" else width
    if n_classes != expected:
        what = "a single sigmoid output (two classes: negative, then positive)" if activation == "sigmoid" \
            else f"a softmax over {width} classes"
        raise ModelImportError(f"The model has {what}, but {n_classes} class names were given; give {expected}, in "
                               "the order of its outputs.")
    return activation


# ----------------------------------------------------------------------------- rebuilding

def flatten(model, input_shape: tuple[int, int, int]):
    """The same network as one flat Functional model (no sub-model used as a layer), with copied weights.

    Every layer is re-created from its configuration and called in the original graph's order;
    layers shared in the original stay shared. A name used twice (an outer layer and a sub-model's
    layer) gets a suffix. A ``Softmax`` layer becomes the equivalent ``Activation("softmax")``, whose
    activation tf-keras-vis can make linear. Inputs get the fixed square shape the pipeline gives.
    """
    import keras

    names: set[str] = set()
    clones: dict[int, object] = {}
    copies: list[tuple[object, object]] = []

    def unique(name: str) -> str:
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = f"{name}_{n}"
        names.add(candidate)
        return candidate

    def clone(layer):
        if id(layer) not in clones:
            config = layer.get_config()
            if type(layer).__name__ == "Softmax" and config.get("axis", -1) in (-1, [-1]):
                new = keras.layers.Activation("softmax", name=unique(layer.name))
            else:
                config["name"] = unique(layer.name)
                new = type(layer).from_config(config)
            clones[id(layer)] = new
            copies.append((new, layer))
        return clones[id(layer)]

    def call(op, *args, **kwargs):
        kwargs.pop("training", None)  # inference only: the rebuilt model is never trained
        if isinstance(op, keras.Sequential):
            x = args[0]
            for layer in op.layers:
                x = call(layer, x)
            return x
        if isinstance(op, keras.Model):
            if not hasattr(op, "_run_through_graph"):
                raise ModelImportError("The model is a subclassed Keras model, whose structure cannot be read; "
                                       "export it as a Sequential or Functional model.")
            return op._run_through_graph(args[0], operation_fn=lambda inner: partial(call, inner))
        if isinstance(op, keras.layers.InputLayer):
            return args[0]
        if isinstance(op, keras.layers.Layer):
            return clone(op)(*args, **kwargs)
        return op(*args, **kwargs)  # a keras.ops operation in the graph: no weights

    inputs = keras.Input(tuple(int(v) for v in input_shape), name="image")
    outputs = call(model, inputs)
    if isinstance(outputs, (list, tuple)):
        outputs = outputs[0]
    flat = keras.Model(inputs, outputs, name=model.name)
    for new, old in copies:
        new.set_weights(old.get_weights())
    return flat


def _kind(model) -> str:
    import keras

    if isinstance(model, keras.Sequential):
        return "Sequential"
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return "nested Functional" if nested else "Functional"


def compare(original, rebuilt, shape: tuple[int, int, int], value_range: tuple[float, float], *,
            n: int = CHECK_INPUTS, seed: int = 0) -> tuple[float, np.ndarray]:
    """(largest absolute difference, the rebuilt model's outputs) on ``n`` random inputs in ``value_range``."""
    rng = np.random.default_rng(seed)
    low, high = sorted(value_range)
    x = rng.uniform(low, high, (n,) + tuple(shape)).astype(np.float32)
    a = np.asarray(original(x, training=False), np.float64)
    b = np.asarray(rebuilt(x, training=False), np.float64)
    if a.shape != b.shape:
        return float("inf"), b
    return float(np.max(np.abs(a - b))), b


def _check_probabilities(outputs: np.ndarray, kind: str) -> None:
    ok = np.all(np.isfinite(outputs)) and outputs.min() >= -1e-6 and outputs.max() <= 1 + 1e-6
    if kind == "softmax":
        ok = ok and np.allclose(outputs.sum(axis=1), 1.0, atol=1e-4)
    if not ok:
        raise ModelImportError("The model's outputs on test inputs are not probabilities, so it was refused.")


# ----------------------------------------------------------------------------- the folder

def import_model(data: bytes, *, class_names, out: str | Path, input_size: int | None = None,
                 channels: int | None = None, preprocess: str = "unit", contrast: str | None = None,
                 title: str | None = None, file_name: str = "model.keras", seed: int = 0) -> ImportResult:
    """Check a ``.keras`` file's bytes, rebuild the model flat and write the model folder ``out``.

    Parameters
    ----------
    data : bytes
        The whole ``.keras`` file.
    class_names : str or list of str
        ``"a,b,c"`` in the order of the model's outputs; for a single sigmoid, negative then positive.
    out : path
        The model folder to write; it must not exist yet (or be empty).
    input_size : int, optional
        The square input's side; needed only when the model accepts any size.
    channels : int, optional
        1 or 3; when given it must be what the model takes (3: the grey scan is repeated on three channels).
    preprocess : str
        The input range the model was trained on: ``unit`` [0, 1], ``signed`` [-1, 1], ``byte`` 0-255,
        ``standard`` (this project's models) or ``mean=M,std=S``.
    contrast : {"clahe", None}
        Optional contrast step of the pipeline.
    title : str, optional
        How pages name the model (default: the file name's stem).
    file_name : str
        The name the file was given (recorded in the model card, never used as a path).

    Returns
    -------
    ImportResult

    Raises
    ------
    ModelImportError
        One sentence: what is wrong with the file or the choices, and what would work.

    Example: ``import_model(Path("net.keras").read_bytes(), class_names="normal,abnormal", out="my-models/net")``.
    """
    names = parse_classes(class_names)
    mean, std = parse_preprocess(preprocess)
    if contrast not in (None, "clahe"):
        raise ModelImportError("The contrast step is either clahe or none.")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelImportError(f"The folder {out} already exists and is not empty; choose a new folder for the model.")
    from core.runtime import quiet_tensorflow

    quiet_tensorflow()
    original = read_keras(data)
    side, depth = input_facts(original, input_size, channels)
    kind = output_kind(original, len(names))
    pipeline = Pipeline(input_size=side, contrast=contrast, mean=mean, std=std, channels=depth)
    shape = (side, side, depth)
    try:
        flat = flatten(original, shape)
    except ModelImportError:
        raise
    except Exception as exc:  # noqa: BLE001 - a graph the rebuild cannot follow
        raise ModelImportError(f"The model could not be rebuilt as one flat Functional model ({type(exc).__name__}); "
                               "export it as a Sequential or Functional model of built-in layers.") from None
    difference, outputs = compare(original, flat, shape, pipeline.value_range, seed=seed)
    if not difference <= TOLERANCE:
        raise ModelImportError(f"The rebuilt flat model differs from the original by {difference:.2g} on random "
                               f"inputs (more than {TOLERANCE:.0e}), so it was not imported.")
    _check_probabilities(outputs, kind)
    convolutions = conv_layer_names(flat)
    title = str(title or Path(file_name).stem or "Imported model").strip()
    from core.registry import slug
    from core.tasks import TASKS_DIR

    task = slug(title, "imported")
    if (TASKS_DIR / f"{task}.json").exists():  # never taken for a default task (samples route by task name)
        task = f"imported_{task}"
    info = {
        "task": task,
        "title": title,
        "imported": True,
        "class_names": names,
        "input_size": side,
        "input_shape": list(shape),
        "channels": depth,
        "preprocessing": pipeline.to_dict(),
        "output": kind,
        "threshold": 0.5,
        "last_conv": convolutions[-1] if convolutions else None,
        "explainable_layers": convolutions,
        "import": {
            "file_name": Path(str(file_name)).name,
            "file_sha256": hashlib.sha256(data).hexdigest(),
            "rebuilt_from": _kind(original),
            "max_difference": difference,
            "tolerance": TOLERANCE,
            "check_inputs": CHECK_INPUTS,
            "parameters": int(flat.count_params()),
            "layers": len(flat.layers),
            "preprocess": str(preprocess),
        },
        "versions": library_versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    created = not out.exists()
    try:
        save_model(flat, out, info)
        loaded = load_model(out)
        back, _ = compare(flat, loaded.model, shape, pipeline.value_range, seed=seed + 1)
        if not back <= TOLERANCE:
            raise ModelImportError("The model folder written does not give the model's outputs back, so it was "
                                   "removed.")
        (out / "MODEL_CARD.md").write_text(render_imported_card(loaded.info))
    except (ModelError, ModelImportError, OSError) as err:
        _remove(out, created)
        if isinstance(err, ModelImportError):
            raise
        raise ModelImportError(f"The model folder could not be written to {out} ({err}).") from None
    except BaseException:
        _remove(out, created)
        raise
    return ImportResult(out, loaded.info, info["import"]["rebuilt_from"], difference)


def _remove(folder: Path, created: bool) -> None:
    if created:
        shutil.rmtree(folder, ignore_errors=True)
    else:  # it was an empty folder: leave it empty
        for child in folder.iterdir() if folder.is_dir() else []:
            shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)


def render_imported_card(info: dict) -> str:
    """``MODEL_CARD.md`` of an imported model: what is known about it, and what is not."""
    names = info["class_names"]
    shape = info["input_shape"]
    record = info.get("import", {})
    pre = info["preprocessing"]
    named = next((k for k, v in PREPROCESS.items() if np.allclose(v, (pre["mean"], pre["std"]))), None)
    range_text = PREPROCESS_TEXT[named] if named else f"(x - {pre['mean']:g}) / {pre['std']:g} of the [0, 1] image"
    if info["output"] == "sigmoid":
        output = (f"one sigmoid giving P({names[1]}); the dashboard shows P({names[0]}) = 1 - P({names[1]}); "
                  f"decision threshold {info.get('threshold', 0.5)} on P({names[1]})")
    else:
        output = f"softmax over {len(names)} classes; decision by the most probable class" + (
            f" (threshold {info.get('threshold', 0.5)} on P({names[1]}))" if len(names) == 2 else "")
    layers = info.get("explainable_layers") or []
    lines = [
        f"# Model card: {info['title']}",
        "",
        "**Research and teaching tool — not a diagnostic device.** This model was imported from a Keras file; "
        "nothing about it has been validated here.",
        "",
        "## What is known",
        f"- Imported from `{record.get('file_name', 'model.keras')}` (SHA-256 of that file "
        f"`{record.get('file_sha256', '?')}`) on {info.get('created', '?')}, Keras {info.get('versions', {}).get('keras', '?')}.",
        f"- Architecture: {record.get('layers', '?')} layers, {record.get('parameters', 0):,} parameters. The "
        f"{record.get('rebuilt_from', 'model')} was rebuilt as one flat Functional model and gave the original's "
        f"probabilities to within {record.get('max_difference', 0):.1e} on {record.get('check_inputs', CHECK_INPUTS)} "
        f"random inputs (tolerance {record.get('tolerance', TOLERANCE):.0e}).",
        f"- Input {shape[0]} x {shape[1]} x {shape[2]}"
        + ("; the grey scan is repeated on the three channels." if shape[2] == 3 else " (grey)."),
        f"- Output: {output}.",
        f"- Classes, in the order of the outputs: {', '.join(names)}.",
        f"- Preprocessing (saved in `model.json`, applied to every scan): window to [0, 1], resize to "
        f"{shape[0]} x {shape[1]} without keeping the aspect ratio"
        + (", CLAHE" if pre.get("contrast") else "") + f", then {range_text}.",
        ("- Explainable layers (CAM methods): " + ", ".join(f"`{n}`" for n in layers)
         + f"; the last convolution `{info.get('last_conv')}` is explained by default." if layers
         else "- The model has no convolution layer, so only SmoothGrad (input gradients) can explain it."),
        f"- File `model.keras` (the rebuilt model), SHA-256 `{info['sha256']}`; loaded with Keras `safe_mode` "
        "after the hash check.",
        "",
        "## What is not known",
        "- The training data, its source and licence, and how it was split.",
        "- Validation metrics: this dashboard has not measured the model's accuracy on any data.",
        "- Calibration: the probabilities are the model's own, not calibrated, and there is no outlier check, "
        "so an image unlike the training images is not flagged.",
        "- Whether the class names, their order, the input range and the channels given at import match how the "
        "model was trained: a wrong choice gives wrong predictions without any error. Check it on images of known "
        "class first.",
        "- Its intended use and limits, as its authors would state them.",
        "- Saliency maps show what raised the class score in this model, not where disease is.",
        "",
    ]
    return "\n".join(lines)
