"""Saliency maps: the Grad-CAM family and SmoothGrad, on a model input tensor.

One implementation per method serves the product: :class:`Explainer`, built once per model,
runs tf-keras-vis's arithmetic through ``tf.function`` on a linearised clone of the model (its
softmax or sigmoid replaced by a linear output with tf-keras-vis's own ``ReplaceToLinear``, so the
shared model keeps its activation), with SmoothGrad's noisy copies and Score-CAM's masked inputs
each sent as one batch. :func:`reference_map` is tf-keras-vis itself (``clone=True``): the oracle
the fast path is tested against (``tests/test_saliency.py``) and the path for throw-away models
such as the sanity check's randomised copies, for which compiling would cost more than it saves.

Maps come back on the explained layer's own grid (CAM methods) or the input grid (SmoothGrad),
normalised to [0, 1]; :func:`to_geometry` maps them onto a scan's rows and columns.

Scores: a softmax model explains ``output[:, class]``; a single-output sigmoid model (binary) explains
its logit for class 1 and the negated logit for class 0.
"""

from __future__ import annotations

import contextlib
import io
import threading
import warnings
from dataclasses import dataclass

import numpy as np

from core.preprocess import resize_to

METHODS = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "scorecam": "Faster Score-CAM",
    "layercam": "LayerCAM",
    "smoothgrad": "SmoothGrad",
}
CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "layercam")

#: One sentence per method, for the dashboard and teaching.
DESCRIPTIONS = {
    "gradcam": "Weights each feature map of the chosen convolution by the mean gradient of the class "
               "score, keeping positive evidence (Selvaraju et al., 2017).",
    "gradcam++": "Like Grad-CAM but weights positive gradients pixel by pixel, which handles several "
                 "instances of a finding better (Chattopadhay et al., 2018).",
    "scorecam": "Masks the image with each of the strongest feature maps and weights them by how much "
                "the class score rises: no gradients (Wang et al., 2020; fast variant with max_N maps).",
    "layercam": "Multiplies each activation by its own positive gradient, giving finer maps, "
                "also from earlier layers (Jiang et al., 2021). On the last layer of a network that only "
                "averages it, the gradient is the same at every position and LayerCAM draws Grad-CAM++'s "
                "map; a head that pools the maximum beside the average makes them differ.",
    "smoothgrad": "Averages the input gradient over noisy copies of the image: pixel-level, sharp, but "
                  "not tied to a layer (Smilkov et al., 2017).",
}

SMOOTH_SAMPLES = 20
SMOOTH_NOISE = 0.2
SCORECAM_MAX_N = 16
_EPSILON = 1e-7  # keras.backend.epsilon(), the one tf-keras-vis's normalize uses


def conv_layer_names(model) -> list[str]:
    """Names of the 2-D convolution layers, input side first: the layers CAM methods can explain."""
    return [layer.name for layer in model.layers if type(layer).__name__ in
            ("Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose")]


def check_method(method: str, model) -> None:
    """Refuse an unknown method, or a CAM method for a model without a convolution."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method in CAM_METHODS and not conv_layer_names(model):
        raise ValueError(f"{METHODS[method]} needs a convolution layer and this model has none; use SmoothGrad.")


SCORES = ("logit", "log-odds")
"""What a gradient map explains, on the model's outputs with the softmax taken off (``ReplaceToLinear``):

- ``logit``: the class's own logit, Selvaraju et al.'s "score before the softmax" and tf-keras-vis's
  ``CategoricalScore``; the default;
- ``log-odds``: the class's log-odds against the others, ``z_c - log(sum of exp(z_j), j != c)``, the one number
  its softmax probability depends on (``p_c = sigmoid(log-odds)``): evidence that raises every logit alike
  cancels out. With two classes it is ``z_c - z_other``, a contrastive map (Prabhushankar et al., ICIP 2020).

A sigmoid output has one logit, already the log-odds of class 1 (and its negative class 0's), so both are the
same there. Score-CAM weighs by the probability ``p_c``, a function of the log-odds alone: both give one map.
"""


SCORE_LABELS = {"logit": "Class logit", "log-odds": "Class log-odds vs the others"}


def method_label(method: str, score: str = "logit") -> str:
    """A method's name as reports, legends and DICOM results state it: "Grad-CAM", or "Grad-CAM (log-odds)"
    when the map explains the class's log-odds (Score-CAM's map is the same either way).

    >>> method_label("gradcam", "log-odds"), method_label("scorecam", "log-odds")
    ('Grad-CAM (log-odds)', 'Faster Score-CAM')
    """
    name = METHODS[method]
    return f"{name} (log-odds)" if score == "log-odds" and method != "scorecam" else name


def _class_score(outputs, class_index, score: str = "logit"):
    """The score a map explains (see :data:`SCORES`): one column of the linearised outputs or the class's
    log-odds against the other columns; for a sigmoid output, its (signed) logit. ``class_index`` may be a
    tensor (the compiled paths)."""
    if outputs.shape[-1] == 1:
        return outputs[:, 0] if class_index == 1 else -outputs[:, 0]
    own = outputs[:, class_index]
    if score == "logit":
        return own
    import tensorflow as tf

    chosen = tf.one_hot(class_index, outputs.shape[-1], dtype=outputs.dtype)[None, :] > 0.5
    others = tf.where(chosen, tf.fill(tf.shape(outputs), tf.constant(-1e9, outputs.dtype)), outputs)
    return own - tf.reduce_logsumexp(others, axis=1)


def check_score(score: str) -> str:
    if score not in SCORES:
        raise ValueError(f"unknown map score {score!r}: choose one of {', '.join(SCORES)}")
    return score


def _linear_clone(model):
    """A copy of ``model`` whose output activation is linear (tf-keras-vis's ``ReplaceToLinear``)."""
    import keras
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return ReplaceToLinear()(clone) or clone


class Explainer:
    """The maps of one model, through compiled passes built once per explained layer.

    Thread-safe; holds the model and its linearised clone for as long as it lives, so it belongs
    to the object that owns the model (:class:`core.model.LoadedModel` keeps one per model and map score).
    ``score`` is what its gradient maps explain (:data:`SCORES`).
    """

    def __init__(self, model, score: str = "logit"):
        self.model = model
        self.score = check_score(score)  # what the gradient maps explain (:data:`SCORES`)
        self._lock = threading.Lock()
        self._linear = None
        self._paths: dict = {}

    def saliency(self, tensor: np.ndarray, method: str, class_index: int, layer: str | None = None) -> np.ndarray:
        """The map of one method for one input (1, S, S, C), normalised to [0, 1].

        ``layer`` is the convolution CAM methods explain (ignored by SmoothGrad).
        """
        check_method(method, self.model)
        x = np.asarray(tensor, np.float32)
        if method == "smoothgrad":
            result = self._smoothgrad(x, int(class_index))
        else:
            result = self._cam(method, x, int(class_index), layer or conv_layer_names(self.model)[-1])
        return np.nan_to_num(result.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)

    # -------------------------------------------------------------- compiled passes

    def _linear_model(self):
        with self._lock:
            if self._linear is None:
                self._linear = _linear_clone(self.model)
            return self._linear

    def _path(self, layer: str | None):
        """The compiled functions for one explained layer (``None``: the input gradient only)."""
        with self._lock:
            if layer in self._paths:
                return self._paths[layer]
        import tensorflow as tf
        from tf_keras_vis.utils.model_modifiers import ExtractIntermediateLayerForGradcam

        linear = self._linear_model()
        compile_ = lambda fn: tf.function(fn, reduce_retracing=True)  # noqa: E731
        if layer is None:
            def input_gradients(x, class_index):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    score = _class_score(linear(x, training=False), class_index, self.score)
                return tf.abs(tape.gradient(score, x))

            path = {"input_gradients": compile_(input_gradients)}
        else:
            # The layer is found exactly as tf-keras-vis finds it; the extraction models share weights.
            cam_model = ExtractIntermediateLayerForGradcam(layer, True)(linear)  # -> [scores, conv]
            conv_model = ExtractIntermediateLayerForGradcam(layer, True, False)(self.model)  # unmodified

            def cam_gradients(x, class_index):
                with tf.GradientTape(watch_accessed_variables=False) as tape:
                    tape.watch(x)
                    scores, conv = cam_model(x, training=False)
                    score = _class_score(scores, class_index, self.score)
                return score, conv, tape.gradient(score, conv)

            path = {"cam_gradients": compile_(cam_gradients),
                    "conv": compile_(lambda x: conv_model(x, training=False)),
                    "forward": compile_(lambda x: self.model(x, training=False))}
        with self._lock:
            return self._paths.setdefault(layer, path)

    def _cam(self, method: str, x: np.ndarray, class_index: int, layer: str) -> np.ndarray:
        import tensorflow as tf

        path = self._path(layer)
        if method == "scorecam":
            return self._scorecam(path, x, class_index)
        score, conv, grads = (t.numpy() for t in path["cam_gradients"](tf.constant(x), tf.constant(class_index)))
        if method == "gradcam":
            cam = np.sum(conv * grads.mean(axis=(1, 2), keepdims=True), axis=-1)
        elif method == "layercam":
            cam = np.sum(conv * np.maximum(grads, 0.0), axis=-1)
        else:  # gradcam++, the arithmetic of tf_keras_vis.gradcam_plus_plus but for its factor exp(score):
            # one positive number per input, it scales the whole map, which the normalisation undoes, but in
            # float32 it overflows (a NaN map) for a score above 88, and for a very negative score it shrinks
            # the map until the normaliser's epsilon drowns it, as an imported model's large logits or a
            # sigmoid model's other class give. So the factor is kept between 1 and exp(80), in float64.
            factor = np.exp(np.clip(np.asarray(score, np.float64), 0.0, 80.0))
            first = factor.reshape(-1, 1, 1, 1) * grads
            second = first * grads
            third = second * grads
            total = conv.sum(axis=(1, 2), keepdims=True)
            denominator = second * 2.0 + third * total
            alphas = second / (denominator + (second == 0.0))
            norm = alphas.sum(axis=(1, 2), keepdims=True)
            alphas = alphas / (norm + (norm == 0.0))
            weights = (np.maximum(first, 0.0) * alphas).sum(axis=(1, 2), keepdims=True)
            cam = np.sum(weights * conv, axis=-1)
        return _normalise(np.maximum(cam, 0.0))[0]

    def _smoothgrad(self, x: np.ndarray, class_index: int) -> np.ndarray:
        import tensorflow as tf

        # tf-keras-vis draws every sample's noise in one np.random.normal call of this shape;
        # drawing it the same way keeps the maps equal under the same seed.
        n = SMOOTH_SAMPLES
        copies = np.broadcast_to(x, (n,) + x.shape)
        axes = tuple(range(2, copies.ndim))
        spread = copies.max(axis=axes, keepdims=True) - copies.min(axis=axes, keepdims=True)
        noisy = copies + np.random.normal(0.0, SMOOTH_NOISE * spread, copies.shape).astype(np.float32)
        grads = self._path(None)["input_gradients"](noisy.reshape((-1,) + x.shape[1:]), tf.constant(class_index))
        grads = grads.numpy().reshape(copies.shape).mean(axis=0)  # (1, S, S, C)
        return _normalise(grads.max(axis=-1))[0]

    def _scorecam(self, path, x: np.ndarray, class_index: int) -> np.ndarray:
        # Faster Score-CAM as tf_keras_vis.scorecam computes it, with the masked inputs in one batch.
        import tensorflow as tf
        from scipy.ndimage import zoom

        conv = path["conv"](tf.constant(x))
        if SCORECAM_MAX_N < conv.shape[-1]:
            spread = tf.math.reduce_std(conv, axis=(1, 2), keepdims=True)
            _, top = tf.math.top_k(spread, SCORECAM_MAX_N)
            top, _ = tf.unique(tf.reshape(top, (-1,)))
            conv = tf.gather(conv, top, axis=-1)
        conv = conv.numpy()
        factors = (1,) + tuple(s / c for c, s in zip(conv.shape[1:-1], x.shape[1:-1])) + (1,)
        masks = zoom(conv, factors, order=1, mode="nearest")
        low = masks.min(axis=(1, 2), keepdims=True)
        high = masks.max(axis=(1, 2), keepdims=True)
        masks = (masks - low) / (high - low + _EPSILON)  # (1, S, S, channels)
        masked = x[0][np.newaxis] * np.moveaxis(masks[0], -1, 0)[..., np.newaxis]  # (channels, S, S, C)
        outputs = path["forward"](tf.constant(masked.astype(np.float32))).numpy()
        if outputs.shape[-1] == 1:  # a sigmoid output: the probability of the explained class
            weights = outputs[:, 0] if class_index == 1 else 1.0 - outputs[:, 0]
        else:
            weights = tf.nn.softmax(outputs).numpy()[:, class_index]  # tf-keras-vis re-applies softmax
        cam = np.sum(conv * np.asarray(weights, np.float32), axis=-1)
        return _normalise(np.maximum(cam, 0.0))[0]


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map of a batch scaled to [0, 1], as ``tf_keras_vis.utils.normalize`` does."""
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True)
    high = maps.max(axis=axes, keepdims=True)
    return ((maps - low) / (high - low + _EPSILON)).astype(np.float32)


def reference_map(model, tensor: np.ndarray, method: str, class_index: int, layer: str | None = None,
                  score_kind: str = "logit") -> np.ndarray:
    """The same map computed by tf-keras-vis itself (eager, one call per noise sample), not cached.

    Builds its visualizer with ``clone=True``: ``ReplaceToLinear`` must never rewrite the activation
    of a model other sessions use.
    """
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.saliency import Saliency
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

    check_method(method, model)
    cls = {"gradcam": Gradcam, "gradcam++": GradcamPlusPlus, "scorecam": Scorecam,
           "layercam": Layercam, "smoothgrad": Saliency}[method]
    # Score-CAM scores the model's own outputs; the gradient methods need linear scores.
    visualizer = cls(model, model_modifier=None if method == "scorecam" else ReplaceToLinear(), clone=True)
    index = int(class_index)
    # (For a sigmoid output, tf-keras-vis's Score-CAM weighs every mask alike: it re-applies softmax to
    # one value. The compiled path weighs them by the class probability instead.)
    # Score-CAM weighs its masks by the class probability, one map for either score (see SCORES).
    kind = "logit" if method == "scorecam" else check_score(score_kind)
    score = lambda out: _class_score(out, index, kind)  # noqa: E731
    x = np.asarray(tensor, np.float32)
    layer = (layer or conv_layer_names(model)[-1]) if method in CAM_METHODS else None
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        # Score-CAM's batched predict prints a Keras progress bar: keep stdout clean for the CLI.
        warnings.simplefilter("ignore", UserWarning)
        if method == "smoothgrad":
            result = visualizer(score, x, smooth_samples=SMOOTH_SAMPLES, smooth_noise=SMOOTH_NOISE)
        elif method == "scorecam":
            result = visualizer(score, x, penultimate_layer=layer, max_N=SCORECAM_MAX_N, expand_cam=False)
        else:
            result = visualizer(score, x, penultimate_layer=layer, expand_cam=False)
    result = np.asarray(result[0] if isinstance(result, list) else result, np.float32)[0]
    return np.nan_to_num(result, nan=0.0, posinf=0.0, neginf=0.0)


def to_geometry(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize a map to ``shape`` (rows, cols) with pixel-centre alignment (bilinear), in [0, 1].

    Because the model input is the whole scan squashed to a square, this one resize puts each
    cell of the map back over the part of the scan it was computed from. It is the pipeline's own
    resize (:func:`core.preprocess.resize_to`), run the other way.

    >>> to_geometry(np.eye(2, dtype=np.float32), (4, 6)).shape
    (4, 6)
    """
    return np.clip(resize_to(np.asarray(saliency, np.float32), shape), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Explanation:
    """One map: the method, class and layer it explains, on its own grid and on the scan's geometry."""

    method: str
    class_index: int
    layer: str | None
    raw: np.ndarray  # the map on the explained layer's grid (or the input grid)
    on_scan: np.ndarray  # the same map at the scan's rows x cols


def explain(loaded, tensor: np.ndarray, shape: tuple[int, int], *, method: str, class_index: int,
            layer: str | None = None) -> Explanation:
    """One method's map of a model input tensor, mapped to the scan's (rows, cols).

    ``loaded`` is a :class:`core.model.LoadedModel`; ``tensor`` the exact input it received (from its
    pipeline), so the map is of what the model saw: scan -> pipeline -> tensor -> map -> scan geometry.
    """
    layer = (layer or loaded.last_conv) if method in CAM_METHODS else None
    raw = loaded.explainer.saliency(tensor, method, class_index, layer)
    return Explanation(method, int(class_index), layer, raw, to_geometry(raw, shape))
