"""The Keras model module: a small Functional CNN, and self-describing model folders.

A model folder holds ``model.keras`` and ``model.json`` (class names, input size,
preprocessing parameters, dataset fingerprint, library versions, validation metrics and the
SHA-256 of the model file). Loading checks that hash and uses Keras ``safe_mode``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import weakref
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from core.calibration import OutlierCheck, scale
from core.preprocess import Pipeline
from core.saliency import Explainer, conv_layer_names

#: Name of the last convolution: the layer Grad-CAM-family methods explain by default.
LAST_CONV = "last_conv"
#: Name of the 1 x 1 convolution giving one score map per class in ``classmap`` models.
CLASS_MAPS = "class_maps"
#: The middle-stage layer the outlier check reads beside the classifier's features: the small CNN's
#: ``conv2b_relu`` (1/4 scale), or the end of the pretrained backbone's third stage (1/8 scale, 40 channels).
MIDDLE_LAYERS = ("conv2b_relu", "block4_add")
MODEL_FILE = "model.keras"
INFO_FILE = "model.json"


class ModelError(RuntimeError):
    """A model folder that cannot be used; ``str(err)`` is one sentence for the user."""


#: How the last convolution's maps become one feature vector: ``avg`` (global average, the default)
#: or ``avg+max`` (average and maximum side by side: a class score can then rest on one strong local
#: response, as in weakly supervised localisation, Oquab et al., CVPR 2015), or ``classmap``: a 1 x 1
#: convolution turns the last convolution into one score map per class and each class's score is the
#: mean of its map's maximum and its average (multiple-instance pooling, as in WILDCAT, Durand et al.,
#: CVPR 2017), so the decision rests on named places in the image and Grad-CAM on the last
#: convolution is exactly that class map (its weights are the 1 x 1 kernel, the same at every place);
#: ``classmap-max``: the same class maps, each class scored by its map's maximum alone (Oquab et al.'s
#: max-pooled score maps), so every class must put its evidence in one place.
POOLINGS = ("avg", "avg+max", "classmap", "classmap-max")

#: Side in input pixels of the square a last-convolution cell sees in ``build_model(..., local=True)``:
#: the stem and the two 3 x 3 stages with their poolings (3, 7, 11, 13, 21, 29, 33).
LOCAL_FIELD = 33

#: Side in input pixels of the square a last-convolution cell sees in ``build_model(..., fine=True)``:
#: without the second pooling the three 3 x 3 convolutions at 1/4 scale add 8 px each (29 + 3 x 8).
FINE_FIELD = 53


def build_model(input_size: int, n_classes: int, *, width: int = 32, dropout: float = 0.3,
                name: str = "cnn", pooling: str = "avg", local: bool = False, no_finding: int | None = None,
                fine: bool = False):
    """A Functional CNN, not nested and not Sequential, so tf-keras-vis can rewrite it.

    A stride-2 stem and two pooled stages bring the image to 1/8 scale, where three more
    convolutions end in the one named :data:`LAST_CONV` (16 x 16 for a 128 input): a map
    fine enough for Grad-CAM to place a hot spot on the anatomy once upsampled to the scan.
    Each of its cells sees an 81 px square of the input. With ``local`` those three are 1 x 1
    convolutions and a cell sees only a :data:`LOCAL_FIELD` px square (a bag of local features,
    as in BagNet, Brendel & Bethge, ICLR 2019): whatever the class rests on must lie in patches
    of that size, where the map then shows it, not in the layout of the whole slice. ``no_finding`` (a class
    index) builds the evidence head of :func:`pooled_head`. ``fine`` leaves out the second pooling, so the
    last three convolutions run at 1/4 scale: a 32 x 32 last convolution for a 128 input, each cell seeing a
    :data:`FINE_FIELD` px square, at about 2.3 times the multiply-adds.

    >>> build_model(64, 2).output_shape
    (None, 2)
    """
    import keras
    from keras import layers

    def conv(x, filters, stride=1, label=None, kernel=3):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False, name=label)(x)
        x = layers.BatchNormalization(name=f"{label}_bn" if label else None)(x)
        return layers.Activation("relu", name=f"{label}_relu" if label else None)(x)

    inputs = keras.Input((input_size, input_size, 1), name="image")
    x = conv(inputs, width // 2, stride=2, label="stem")
    for stage, filters in enumerate((width, width * 2), start=1):
        x = conv(x, filters, label=f"conv{stage}a")
        x = conv(x, filters, label=f"conv{stage}b")
        if not (fine and stage == 2):
            x = layers.MaxPooling2D(name=f"pool{stage}")(x)
    kernel = 1 if local else 3
    x = conv(x, width * 4, label="conv3a", kernel=kernel)
    x = conv(x, width * 4, label="conv3b", kernel=kernel)
    x = layers.Conv2D(width * 4, kernel, padding="same", activation="relu", name=LAST_CONV)(x)
    return keras.Model(inputs, pooled_head(x, n_classes, pooling=pooling, dropout=dropout, no_finding=no_finding),
                       name=name)


def pooled_head(features, n_classes: int, *, pooling: str, dropout: float, no_finding: int | None = None):
    """The classifier on a last convolution's maps (one of :data:`POOLINGS`): global average (``gap``) or
    average and maximum side by side (``pooled``), dropout, softmax ``predictions``; or, for ``classmap``,
    dropout, the 1 x 1 :data:`CLASS_MAPS` convolution and each map's maximum and average averaged into
    its class score (``classmap-max``: its maximum alone). The names are those the outlier check looks for.

    ``no_finding`` (the index of a class that is the absence of any finding, e.g. ``notumor``) makes every other
    class's score a sum of evidence: one ``evidence_{i}`` Dense unit per class, non-negative weights on the
    (non-negative) pooled features and no bias, so a class scores above zero only where its features fire; the
    no-finding class's score is a learned constant (``no_finding``, a Dense unit whose weights are held at zero).
    A slice with nothing to show then reads as no finding, and no class can be the one left over when the
    others' evidence is missing (issue 12: with the interior of every outlined slice filled in, the softmax
    default called all of them glioma)."""
    import keras
    from keras import layers

    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if no_finding is not None:
        if pooling.startswith("classmap") or not 0 <= no_finding < n_classes or n_classes < 2:
            raise ValueError("The evidence head needs --pooling avg or avg+max and a no-finding class among the "
                             "model's classes.")
        pooled = layers.GlobalAveragePooling2D(name="gap")(features)
        if pooling == "avg+max":
            pooled = layers.Concatenate(name="pooled")([pooled, layers.GlobalMaxPooling2D(name="gmp")(features)])
        pooled = layers.Dropout(dropout, name="dropout")(pooled)
        scores = [layers.Dense(1, use_bias=False, kernel_constraint=keras.constraints.NonNeg(),
                               kernel_initializer=keras.initializers.RandomUniform(0.0, 0.05), name=f"evidence_{i}")(pooled)
                  if i != no_finding else
                  layers.Dense(1, kernel_initializer="zeros", kernel_constraint=keras.constraints.MaxNorm(0.0),
                               name="no_finding")(pooled)
                  for i in range(n_classes)]
        return layers.Activation("softmax", name="predictions")(layers.Concatenate(name="class_scores")(scores))
    if pooling.startswith("classmap"):
        maps = layers.Conv2D(n_classes, 1, name=CLASS_MAPS)(layers.Dropout(dropout, name="dropout")(features))
        if pooling == "classmap-max":
            return layers.Activation("softmax", name="predictions")(layers.GlobalMaxPooling2D(name="class_max")(maps))
        scores = layers.Average(name="class_scores")(
            [layers.GlobalMaxPooling2D(name="class_max")(maps), layers.GlobalAveragePooling2D(name="class_mean")(maps)])
        return layers.Activation("softmax", name="predictions")(scores)
    pooled = layers.GlobalAveragePooling2D(name="gap")(features)
    if pooling == "avg+max":
        pooled = layers.Concatenate(name="pooled")([pooled, layers.GlobalMaxPooling2D(name="gmp")(features)])
    return layers.Dense(n_classes, activation="softmax", name="predictions")(
        layers.Dropout(dropout, name="dropout")(pooled))


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions() -> dict:
    import keras
    import tensorflow as tf

    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
    for module in ("pydicom", "skimage", "numpy", "tf_keras_vis"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001
            pass
    return versions


_EXPLAINERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # Keras model -> {map score: Explainer}
_EXPLAINERS_LOCK = threading.Lock()


@dataclass
class LoadedModel:
    """A Keras model with what it needs for inference: its folder's facts, pipeline and calibration.

    ``info`` is the folder's ``model.json``. Probabilities are calibrated when a temperature is
    saved; a single-output sigmoid model gives two columns, P(class 0) and P(class 1).
    """

    model: object
    info: dict
    path: Path
    pipeline: Pipeline = field(init=False)

    def __post_init__(self):
        self.pipeline = Pipeline.from_dict(self.info["preprocessing"])

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def task(self) -> str:
        return self.info.get("task", self.path.name)

    @property
    def title(self) -> str:
        return str(self.info.get("title") or self.task)

    @property
    def threshold(self) -> float:
        """Decision threshold on the positive (last) class for a binary model."""
        return float(self.info.get("threshold", 0.5))

    @property
    def temperature(self) -> float:
        return float(self.info.get("temperature", 1.0))

    @property
    def class_prior(self) -> np.ndarray | None:
        """The training split's class shares when the model was trained with class weights and calibrated
        to undo them (``model.json``'s ``class_prior``, :func:`core.calibration.scale`); else None."""
        prior = self.info.get("class_prior")
        return None if prior is None else np.asarray(prior, np.float64)

    @property
    def output(self) -> str:
        """``"sigmoid"`` (one output, P(last class)) or ``"softmax"``: ``model.json``'s ``output``, else the output's width."""
        return str(self.info.get("output") or ("sigmoid" if self.model.output_shape[-1] == 1 else "softmax"))

    @property
    def imported(self) -> bool:
        """Whether the model was imported from a user's Keras file (:mod:`core.importer`), not trained here."""
        return bool(self.info.get("imported"))

    @property
    def last_conv(self) -> str | None:
        """The convolution CAM methods explain by default (None: the model has none)."""
        layers = self.explainable_layers
        return self.info.get("last_conv") if self.info.get("last_conv") in layers else (layers[-1] if layers else None)

    @cached_property
    def explainable_layers(self) -> list[str]:
        """The convolutions CAM methods can explain, input side first."""
        return conv_layer_names(self.model)

    @property
    def map_score(self) -> str:
        """What its gradient maps explain (:data:`core.saliency.SCORES`): ``model.json``'s ``map_score``, else
        the class logit."""
        return str(self.info.get("map_score") or "logit")

    def with_map_score(self, score: str) -> "LoadedModel":
        """The same model (the Keras model shared, not copied) with its maps explaining ``score``."""
        from dataclasses import replace

        from core.saliency import check_score

        return replace(self, info={**self.info, "map_score": check_score(score)})

    @property
    def explainer(self) -> Explainer:
        """The compiled saliency paths of this model for its :attr:`map_score`, built on first use and kept with
        the Keras model: copies made by :meth:`with_map_score` share them."""
        with _EXPLAINERS_LOCK:
            per_score = _EXPLAINERS.setdefault(self.model, {})
            if self.map_score not in per_score:
                per_score[self.map_score] = Explainer(self.model, score=self.map_score)
            return per_score[self.map_score]

    def predict(self, tensors: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (batch, n_classes), calibrated if a temperature is saved."""
        return self.predict_with_distance(tensors)[0]

    def uncalibrated(self, tensors: np.ndarray) -> np.ndarray:
        """The model's own probabilities, before temperature scaling (what calibration is fitted on)."""
        return _two_columns(self._forward(tensors)[0])

    def predict_with_distance(self, tensors: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities and each input's outlier distance (None when no check is fitted), from one pass."""
        outputs = self._forward(tensors)
        probabilities = scale(_two_columns(outputs[0]), self.temperature, self.class_prior)
        if self._outlier is None:
            return probabilities, None
        return probabilities, self._outlier[1].distance(outputs[1])

    @property
    def outlier_threshold(self) -> float | None:
        """The distance above which an input is unlike the training images (None when not fitted)."""
        return None if self._outlier is None else self._outlier[1].threshold

    @cached_property
    def _forward(self):
        """The model compiled once (``tf.function``): probabilities, and the outlier check's
        features when it is fitted. An eager Keras call of this small CNN costs several times
        its arithmetic in per-layer overhead (BENCHMARKS.md)."""
        import keras
        import tensorflow as tf

        outputs = [self.model.output] + ([self._outlier[0].output] if self._outlier is not None else [])
        both = keras.Model(self.model.input, outputs)  # shares the layers; nothing is modified
        compiled = tf.function(lambda x: both(x, training=False), reduce_retracing=True)
        # A one-output Model returns a bare tensor, not a list of one: iterating it would walk the batch.
        return lambda x: [np.asarray(t) for t in tf.nest.flatten(compiled(np.asarray(x, np.float32)))]

    @cached_property
    def _outlier(self):
        """(feature model, check) when ``ood.npz`` was fitted by ``python -m core calibrate``."""
        ood = self.info.get("ood")
        if not ood or not (self.path / ood["file"]).is_file():
            return None
        if sha256_file(self.path / ood["file"]) != ood["sha256"]:
            raise ModelError(f"The outlier statistics in {self.path} do not match their SHA-256 in {INFO_FILE}.")
        layers = ood.get("features", "gap")
        return pooled_features(self.model, [layers] if isinstance(layers, str) else list(layers)), \
            OutlierCheck.load(self.path / ood["file"])

    def decide(self, probabilities: np.ndarray) -> int:
        """Index of the predicted class; binary models use :attr:`threshold`."""
        if len(probabilities) == 2:
            return int(probabilities[1] >= self.threshold)
        return int(np.argmax(probabilities))


def feature_layer(model) -> str:
    """The layer whose output the outlier check reads: the pooled features feeding the classifier head
    (``gap``, or ``pooled`` with average and max pooling, in the models built here; the last convolution,
    averaged over space by :func:`pooled_features`, in ``classmap`` models, whose head reads class scores
    rather than features; the input of the last Dense layer in any other)."""
    names = [layer.name for layer in model.layers]
    for name in ("pooled", "gap"):
        if name in names:
            return name
    if CLASS_MAPS in names and LAST_CONV in names:
        return LAST_CONV
    dense = [layer for layer in model.layers if type(layer).__name__ == "Dense"]
    if not dense:
        return model.layers[-2].name
    inbound = dense[-1]._inbound_nodes[0].input_tensors if dense[-1]._inbound_nodes else None
    source = getattr(inbound[0] if isinstance(inbound, (list, tuple)) else inbound, "_keras_history", None)
    return source[0].name if source else model.layers[-2].name


def outlier_layers(model) -> list[str]:
    """The layers whose pooled outputs the outlier check reads: the classifier's own features
    (:func:`feature_layer`) and, in the models built here, a middle stage (:data:`MIDDLE_LAYERS`).

    The classifier's features are made to ignore what does not tell its classes apart; a model
    trained to ignore blur and contrast then finds some brain MRIs close to its chest films (19 of
    240 passed). The middle stage still describes texture and intensity: with it, every one of those
    240 MRIs is refused, and 1% of validation films as before (Lee et al., *A simple unified framework
    for detecting out-of-distribution samples and adversarial attacks*, NeurIPS 2018, combine layers
    the same way).
    """
    names = [layer.name for layer in model.layers]
    layers = [feature_layer(model)]
    middle = [name for name in MIDDLE_LAYERS if name in names]
    if middle and layers[0] in ("gap", "pooled", LAST_CONV):
        layers.append(middle[0])
    return layers


def pooled_features(model, layers: list[str]):
    """A Keras model from the classifier's input to ``layers``' outputs, each averaged over space when it
    is a feature map, side by side; it shares the classifier's layers and changes none."""
    import keras

    outputs = []
    for name in layers:
        out = model.get_layer(name).output
        outputs.append(keras.ops.mean(out, axis=(1, 2)) if len(out.shape) == 4 else out)
    return keras.Model(model.input, outputs[0] if len(outputs) == 1 else keras.ops.concatenate(outputs, axis=-1))


def _two_columns(outputs: np.ndarray) -> np.ndarray:
    """A sigmoid model's single column P(class 1) as the two columns (P(class 0), P(class 1))."""
    outputs = np.asarray(outputs, np.float64)
    return np.concatenate([1.0 - outputs, outputs], axis=1) if outputs.shape[1] == 1 else outputs


def save_model(model, folder: str | Path, info: dict) -> Path:
    """Write ``model.keras`` and ``model.json`` (with the model file's SHA-256)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _inference_copy(model).save(folder / MODEL_FILE)
    info = dict(info)
    info["sha256"] = sha256_file(folder / MODEL_FILE)
    info.setdefault("versions", library_versions())
    info.setdefault("last_conv", LAST_CONV)
    write_info(folder, info)
    return folder


def _inference_copy(model):
    """The same architecture and weights without optimizer state: a third of the file size."""
    import keras

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    return clone


def read_info(folder: str | Path) -> dict:
    path = Path(folder) / INFO_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{folder} is not a model folder: it has no {INFO_FILE}.") from None
    except json.JSONDecodeError:
        raise ModelError(f"The model description {path} is not valid JSON.") from None


def load_model(folder: str | Path) -> LoadedModel:
    """Load a model folder after checking the model file against its recorded SHA-256."""
    import keras

    folder = Path(folder)
    info = read_info(folder)
    for key in ("class_names", "preprocessing", "sha256"):
        if key not in info:
            raise ModelError(f"The model description in {folder} lacks '{key}'.")
    model_path = folder / MODEL_FILE
    if not model_path.is_file():
        raise ModelError(f"{folder} has no {MODEL_FILE}.")
    if sha256_file(model_path) != info["sha256"]:
        raise ModelError(f"The model file in {folder} does not match the SHA-256 in its {INFO_FILE}; "
                         "it may be damaged or replaced, so it is refused.")
    try:
        model = keras.models.load_model(model_path, safe_mode=True, compile=False)
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"The model file in {folder} cannot be loaded ({type(exc).__name__}).") from None
    pipeline = Pipeline.from_dict(info["preprocessing"])
    takes = tuple(model.inputs[0].shape[1:])
    prepared = (int(pipeline.input_size), int(pipeline.input_size), int(pipeline.channels))
    if len(takes) != 3 or any(t is not None and t != p for t, p in zip(takes, prepared)):
        raise ModelError(f"The model in {folder} takes inputs of shape {takes} but its {INFO_FILE} prepares "
                         f"{prepared}; correct its preprocessing (input_size, channels) or import the model again.")
    return LoadedModel(model=model, info=info, path=folder)


def write_info(folder: str | Path, info: dict) -> None:
    """Write a model folder's ``model.json``."""
    (Path(folder) / INFO_FILE).write_text(json.dumps(info, indent=2, default=json_default) + "\n")


def json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
