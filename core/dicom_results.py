"""Results as DICOM: a structured report, the saliency map and a capture of the overlay.

One explanation result becomes DICOM objects that a PACS stores and a viewer (OHIF, Weasis) opens
next to the scan, all built by ``highdicom``:

- :func:`structured_report`: a Comprehensive SR following TID 1500 (Measurement Report) with two
  measurement groups, both referencing the source image (and frame): the classification (model
  name, version and SHA-256, calibrated probability per class, threshold or arg-max rule,
  temperature, predicted class) and the explanation (method, layer, explained class, trust scores).
- :func:`saliency_parametric_map`: the map as float32 values in 0..1 (Parametric Map), pixel for
  pixel on the source's geometry (CT, MR and other images with a patient frame of reference).
- :func:`saliency_segmentation`: the map's top region (value >= a threshold) as a binary
  Segmentation; also possible for projection radiographs (CR, DX) and secondary captures, which
  have no frame of reference.
- :func:`overlay_secondary_capture`: the overlay the dashboard shows, colour bar and legend
  included, as an RGB Secondary Capture.

:func:`results_for_pacs` makes them all in the source's study with its patient module (what goes
back to the PACS); :func:`deidentified` makes copies for download with the patient anonymised,
dates removed and every UID replaced consistently. Nothing here writes to disk or logs.

Where no DICOM or SNOMED CT code exists, concepts use local codes of the private coding scheme
:data:`LOCAL_SCHEME` (``99MEDXAI``), listed in :data:`LOCAL_CODES` and :data:`TRUST_CODES`.

Projection radiographs: the Parametric Map IOD makes the Frame of Reference module mandatory and
highdicom 0.28.2 cannot build a parametric map from a source without one (it fails on its own
dimension index), while a Segmentation of a single frame without a frame of reference is valid
and highdicom supports it. So a CR, DX or secondary-capture source gets the Segmentation and the
overlay but no Parametric Map; no geometry is ever invented.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import hmac
import io
import logging
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import numpy as np

#: Coding scheme designator of this project's own codes (by DICOM convention a private scheme's
#: designator begins with "99").
LOCAL_SCHEME = "99MEDXAI"
#: Name written as the manufacturer of every object (and of the SR's device observer).
MANUFACTURER = "XAI imaging dashboard"
DISCLAIMER = "Research and teaching tool, not a diagnostic device."
#: Patient's Name of anonymous objects (family^given, the current PN form).
ANONYMOUS_NAME = "Anonymous^Patient"
#: Series numbers of the objects in the source's study (high, to sort after the scanner's series).
SERIES_NUMBERS = {"source": 9000, "sr": 9001, "pm": 9002, "seg": 9003, "sc": 9004}

#: Local codes: code value -> code meaning (meanings are at most 64 characters, as LO allows).
LOCAL_CODES = {
    "PREDICTED-CLASS": "Predicted class",
    "EXPLAINED-CLASS": "Class explained by the saliency map",
    "DECISION-RULE": "Decision rule",
    "THRESHOLD-RULE": "Positive class if its probability >= threshold",
    "ARGMAX-RULE": "Class with the highest probability (arg-max)",
    "TEMPERATURE": "Calibration temperature (temperature scaling)",
    "EXPL-METHOD": "Explanation method",
    "SALIENT-REGION": "Region of high saliency",
    "SALIENCY-TRUST": "Saliency map trust scores",
    "CLASSIFICATION": "Image classification by a neural network",
}

#: Trust scores the dashboard computes: key -> (code value, code meaning, UCUM unit). The keys are
#: those of ``core.trust`` (``Faithfulness.summary()``; the sanity check's last Spearman and SSIM
#: and ``passes``; ``Uncertainty`` as ``probability_*``, ``crosses_threshold``, ``hotspot_spread``)
#: and of ``core.localisation.localisation_scores``. Booleans are recorded as Yes/No (SNOMED CT);
#: unknown keys get a stable local code derived from their name.
TRUST_CODES = {
    "deletion_ratio": ("FAITH-DEL-RATIO", "Faithfulness: deletion ratio (random AUC / map AUC)", "{ratio}"),
    "insertion_ratio": ("FAITH-INS-RATIO", "Faithfulness: insertion ratio (map AUC / random AUC)", "{ratio}"),
    "deletion_auc": ("FAITH-DEL-AUC", "Faithfulness: deletion curve area", "1"),
    "insertion_auc": ("FAITH-INS-AUC", "Faithfulness: insertion curve area", "1"),
    "average_drop": ("AVERAGE-DROP", "Faithfulness: average drop in confidence", "%"),
    "informative": ("FAITH-INFORM", "Faithfulness curves are informative", "1"),
    "sanity_spearman": ("SANITY-RHO", "Sanity check: Spearman correlation after randomisation", "1"),
    "sanity_ssim": ("SANITY-SSIM", "Sanity check: SSIM after randomisation", "1"),
    "sanity_passes": ("SANITY-PASS", "Sanity check passed (map changes when randomised)", "1"),
    "probability_mean": ("UNC-MEAN", "Uncertainty: mean probability under augmentation", "1"),
    "probability_low": ("UNC-P05", "Uncertainty: 5th percentile of probability", "1"),
    "probability_high": ("UNC-P95", "Uncertainty: 95th percentile of probability", "1"),
    "probability_std": ("UNC-STD", "Uncertainty: standard deviation of probability", "1"),
    "crosses_threshold": ("UNC-CROSSES", "Uncertainty interval contains the threshold", "1"),
    "hotspot_spread": ("UNC-HOTSPOT", "Uncertainty: hot-spot spread (fraction of side)", "1"),
    "pointing_game": ("LOC-POINTING", "Localisation: pointing game (1 hit, 0 miss)", "1"),
    "energy": ("LOC-ENERGY", "Localisation: energy-based pointing game", "1"),
    "rank_accuracy": ("LOC-RANK-ACC", "Localisation: relevance rank accuracy", "1"),
    "auroc": ("LOC-AUROC", "Localisation: pixel AUROC against the mask", "1"),
}

_UNITS = {"1": "no units", "{ratio}": "ratio", "%": "Percent"}

#: The dashboard's explanation methods: key -> (display name, DCM code value, code meaning). DICOM
#: defines concepts for Grad-CAM (130403), class activation maps in general (130402) and saliency
#: (130404); any other method is recorded as a "Visual explanation" (130401).
_METHODS = {
    "gradcam": ("Grad-CAM", "130403", "Gradient-weighted class activation"),
    "gradcam++": ("Grad-CAM++", "130402", "Class activation"),
    "scorecam": ("Faster Score-CAM", "130402", "Class activation"),
    "layercam": ("LayerCAM", "130402", "Class activation"),
    "smoothgrad": ("SmoothGrad", "130404", "Saliency"),
}


def _method_key(method: str) -> str:
    key = method.lower().replace("-", "").replace(" ", "")
    for known, (display, _, _) in _METHODS.items():
        if key == display.lower().replace("-", "").replace(" ", ""):
            return known
    return key


class DicomResultError(ValueError):
    """Results that cannot be made into DICOM; ``str(err)`` is one sentence for the user."""


#: Libraries that log or warn about the datasets they copy: highdicom logs the source's SOP Instance
#: UID at INFO and dumps datasets at DEBUG, pydicom's value checks quote values (a malformed name).
_QUIET_LIBRARIES = ("highdicom", "pydicom", "pylibjpeg")


@contextlib.contextmanager
def _quiet():
    """Neither a warning nor a log record of these libraries while results are built: nothing a
    user uploads is shown or logged (:mod:`core.quiet`; per thread for logs).

    A logger's filter sees only its own records, so each existing logger of these libraries is
    silenced, after importing highdicom so that all of its modules' loggers exist.
    """
    import highdicom  # noqa: F401

    from core.quiet import quiet, silence

    silence([name for name in list(logging.root.manager.loggerDict) if name.split(".")[0] in _QUIET_LIBRARIES])
    with quiet():
        yield


def _quietly(function):
    """Run ``function`` inside :func:`_quiet`."""
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with _quiet():
            return function(*args, **kwargs)
    return wrapper


@dataclass(frozen=True)
class ExplanationFacts:
    """What the dashboard knows about one prediction and its explanation.

    Attributes
    ----------
    model_title, model_version, model_sha256 : str
        The model's name, its version or identifier, and the SHA-256 of its ``model.keras``.
    class_names : tuple of str
    probabilities : tuple of float
        Calibrated probability per class, in ``class_names`` order.
    predicted_index : int
        Index of the predicted class.
    method : str
        Explanation method: the dashboard's key ("gradcam", "gradcam++", "scorecam", "layercam",
        "smoothgrad") or its display name ("Grad-CAM").
    layer : str or None
        Explained layer (CAM methods); None for methods that use no layer (SmoothGrad).
    threshold : float or None
        Decision threshold on the probability of the positive (last) class of a binary model;
        None means the class with the highest probability (arg-max) is predicted.
    temperature : float
        Temperature of the calibration (1.0: none).
    trust : mapping of str to float or bool
        Named trust scores; the keys of :data:`TRUST_CODES` are recorded with their own codes.
    frame_index : int or None
        0-based frame of a multi-frame source that was explained; None for single-frame sources.
    explained_index : int or None
        Class the map explains; None means the predicted class.
    method_name : str
        Display name of the method; by default the dashboard's name for ``method`` ("Grad-CAM").

    Examples
    --------
    >>> facts = ExplanationFacts("Chest X-ray pneumonia", "2", "ab" * 32, ("normal", "pneumonia"),
    ...                          (0.2, 0.8), 1, "gradcam", layer="conv4", threshold=0.5)
    >>> facts.predicted_class
    'pneumonia'
    """

    model_title: str
    model_version: str
    model_sha256: str
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    predicted_index: int
    method: str
    layer: str | None = None
    threshold: float | None = None
    temperature: float = 1.0
    trust: Mapping[str, float | bool] = field(default_factory=dict)
    frame_index: int | None = None
    explained_index: int | None = None
    method_name: str = ""

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "class_names", tuple(str(c) for c in self.class_names))
        set_(self, "probabilities", tuple(float(p) for p in self.probabilities))
        set_(self, "trust", MappingProxyType(dict(self.trust)))
        set_(self, "model_sha256", str(self.model_sha256).lower())
        set_(self, "method_name", self.method_name or _METHODS.get(_method_key(self.method), (self.method,))[0])
        n = len(self.class_names)
        if n < 2 or len(self.probabilities) != n:
            raise DicomResultError(f"The result has {n} class name(s) and {len(self.probabilities)} "
                                   "probabilities; give one probability per class, at least two classes.")
        if not all(0.0 <= p <= 1.0 for p in self.probabilities):
            raise DicomResultError("A probability lies outside 0 to 1; pass the calibrated probabilities.")
        if not re.fullmatch(r"[0-9a-f]{64}", self.model_sha256):
            raise DicomResultError("The model SHA-256 must be 64 hexadecimal digits, as in the model's model.json.")
        for index in (self.predicted_index, self.explained_index):
            if index is not None and not 0 <= int(index) < n:
                raise DicomResultError(f"Class index {index} does not exist; the model has {n} classes.")
        if self.threshold is not None and not (n == 2 and 0.0 <= self.threshold <= 1.0):
            raise DicomResultError("A decision threshold applies only to a binary model and must lie in 0 to 1.")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise DicomResultError("The calibration temperature must be a positive number.")
        if not self.model_title.strip() or not self.model_version.strip():
            raise DicomResultError("The model needs a title and a version to be recorded in DICOM.")
        for key, value in self.trust.items():
            if not (value is None or isinstance(value, (bool, np.bool_, int, float, np.integer, np.floating))):
                raise DicomResultError(f"The trust score {key!r} must be a number or true/false.")

    @property
    def predicted_class(self) -> str:
        return self.class_names[self.predicted_index]

    @property
    def explained_class(self) -> str:
        return self.class_names[self._explained]

    @property
    def _explained(self) -> int:
        return int(self.predicted_index if self.explained_index is None else self.explained_index)

    @property
    def decision_rule(self) -> str:
        """The decision rule as one sentence."""
        if self.threshold is None:
            return "The class with the highest calibrated probability is predicted (arg-max)."
        return (f"{self.class_names[1]} is predicted when its calibrated probability is at least "
                f"{self.threshold:g}, otherwise {self.class_names[0]}.")


# ----------------------------------------------------------------------------- sources

@_quietly
def read_source(data: bytes) -> "Dataset | None":
    """The header of an uploaded DICOM file, without its pixels; None for a PNG, JPEG or TIFF.

    Parameters
    ----------
    data : bytes
        The uploaded file, as given to ``core.io.load_scan``.

    Returns
    -------
    pydicom.Dataset or None
        Everything before the pixel data: patient, study, series and geometry attributes.

    Examples
    --------
    >>> from pydicom.data import get_testdata_file
    >>> read_source(open(get_testdata_file("CT_small.dcm"), "rb").read()).Modality
    'CT'
    """
    import pydicom

    data = bytes(data)
    preamble = len(data) >= 132 and data[128:132] == b"DICM"
    if not preamble and data.startswith(_IMAGE_MAGIC):
        return None  # a forced read would turn an image's bytes into some element
    try:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=not preamble)
    except Exception:  # noqa: BLE001 - any unreadable header: not a DICOM source
        return None
    return ds if "SOPInstanceUID" in ds and "Rows" in ds else None


_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"BM",
                b"GIF87a", b"GIF89a")


@_quietly
def source_from_pixels(pixels: np.ndarray, *, series_number: int = SERIES_NUMBERS["source"]) -> "Dataset":
    """A Secondary Capture of a non-DICOM upload, in a new study with an anonymous patient.

    A PNG or JPEG has no DICOM header, so its results need an image to refer to: this one, sent
    to the PACS with them. Its orientation is unknown and left empty; it has no pixel spacing.

    Parameters
    ----------
    pixels : ndarray, shape (rows, cols) or (rows, cols, 3)
        The image as loaded (``Scan.frame()``): grey values 0..255 or 0..65535, or RGB 0..255.

    Returns
    -------
    highdicom.sc.SCImage
        The new source image; its patient is :data:`ANONYMOUS_NAME` with an ID made from the new
        study's UID.

    Examples
    --------
    >>> source = source_from_pixels(np.zeros((4, 4), np.float32))
    >>> source.Modality, str(source.PatientName)
    ('OT', 'Anonymous^Patient')
    """
    import highdicom as hd

    array, photometric, bits = _image_pixels(pixels)
    study_uid = hd.UID()
    image = hd.sc.SCImage(
        pixel_array=array, photometric_interpretation=photometric, bits_allocated=bits,
        coordinate_system="PATIENT", study_instance_uid=study_uid, series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, patient_id=_anonymous_id(study_uid), patient_name=ANONYMOUS_NAME,
        patient_birth_date="", patient_sex="", accession_number="", study_id="",
        referring_physician_name="", patient_orientation=("L", "F"),
        series_description="Uploaded image (not DICOM)",
    )
    # highdicom requires an orientation for a patient image; an upload's is unknown, and the
    # attribute is Type 2C, so it is emptied rather than invented.
    image.PatientOrientation = ""
    _copy_laterality(image, image)
    return image


def _image_pixels(pixels: np.ndarray) -> tuple[np.ndarray, str, int]:
    array = np.asarray(pixels)
    if array.ndim == 3 and array.shape[2] == 3:
        return np.clip(np.rint(array), 0, 255).astype(np.uint8), "RGB", 8
    if array.ndim != 2 or min(array.shape) < 1:
        raise DicomResultError("The image must be one grey or RGB frame to become a DICOM source.")
    array = np.nan_to_num(array.astype(np.float64))
    if array.min() < 0 or array.max() > 65535:  # a float TIFF: keep its contrast, not its units
        span = max(float(np.ptp(array)), 1e-12)
        array = (array - array.min()) / span * 65535.0
    if array.max() <= 255:
        return np.rint(array).astype(np.uint8), "MONOCHROME2", 8
    return np.rint(array).astype(np.uint16), "MONOCHROME2", 16


def _anonymous_id(seed: str) -> str:
    return "ANON-" + hashlib.sha256(str(seed).encode()).hexdigest()[:16].upper()


# ----------------------------------------------------------------------------- codes

def _local(value: str, meaning: str | None = None):
    import highdicom as hd

    return hd.sr.CodedConcept(value=value, scheme_designator=LOCAL_SCHEME,
                              meaning=(meaning or LOCAL_CODES[value])[:64])


def _class_code(facts: ExplanationFacts, index: int):
    """A local code per class: its name in capitals (at most 16 characters, as SH allows)."""
    slugs = [re.sub(r"[^A-Z0-9]+", "-", name.upper()).strip("-")[:16] or f"CLASS-{i}"
             for i, name in enumerate(facts.class_names)]
    value = slugs[index] if slugs.count(slugs[index]) == 1 else f"CLASS-{index}"
    return _local(value, facts.class_names[index])


def _unit(ucum: str):
    import highdicom as hd

    return hd.sr.CodedConcept(value=ucum, scheme_designator="UCUM", meaning=_UNITS[ucum])


def _trust_code(key: str) -> tuple:
    if key in TRUST_CODES:
        value, meaning, unit = TRUST_CODES[key]
    else:  # a score this module does not know yet still gets a stable code
        value = "T-" + hashlib.sha1(key.encode()).hexdigest()[:10].upper()
        meaning, unit = key.replace("_", " ").strip().capitalize(), "1"
    return _local(value, meaning), unit


def _method_code(facts: ExplanationFacts):
    import highdicom as hd

    _, value, meaning = _METHODS.get(_method_key(facts.method), (None, "130401", "Visual explanation"))
    return hd.sr.CodedConcept(value=value, scheme_designator="DCM", meaning=meaning)


# ----------------------------------------------------------------------------- structured report

@_quietly
def structured_report(source, facts: ExplanationFacts, *, series_number: int = SERIES_NUMBERS["sr"],
                      instance_number: int = 1) -> "Dataset":
    """A Comprehensive SR (TID 1500 Measurement Report) of the prediction and its explanation.

    Parameters
    ----------
    source : pydicom.Dataset
        Header of the explained image (:func:`read_source`, or :func:`source_from_pixels`).
    facts : ExplanationFacts
    series_number, instance_number : int

    Returns
    -------
    highdicom.sr.ComprehensiveSR
        In the source's study, with its patient module; the measurement groups reference the
        source's SOP Instance (and frame, for a multi-frame source).

    Examples
    --------
    >>> sr = structured_report(source, facts)  # doctest: +SKIP
    >>> sr.SOPClassUID.name  # doctest: +SKIP
    'Comprehensive SR Storage'
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    _check_source(source)
    frames = _referenced_frames(source, facts)

    def image():  # one item per group: a dataset shared by two places in the tree is edited twice
        return hd.sr.SourceImageForMeasurementGroup(
            referenced_sop_class_uid=source.SOPClassUID, referenced_sop_instance_uid=source.SOPInstanceUID,
            referenced_frame_numbers=frames)

    model = hd.sr.AlgorithmIdentification(
        name=facts.model_title, version=facts.model_version, manufacturer=MANUFACTURER,
        parameters=[DISCLAIMER, f"Model file SHA-256: {facts.model_sha256}",
                    f"Calibration temperature: {facts.temperature:g}", f"Decision rule: {facts.decision_rule}"])
    probabilities = [
        hd.sr.Measurement(name=_local(f"PROB-{i}", f"Calibrated probability of {name}"), value=p,
                          unit=codes.UCUM.NoUnits)
        for i, (name, p) in enumerate(zip(facts.class_names, facts.probabilities))
    ]
    rule = [hd.sr.Measurement(name=_local("TEMPERATURE"), value=facts.temperature, unit=codes.UCUM.NoUnits)]
    if facts.threshold is not None:
        rule.append(hd.sr.Measurement(name=codes.DCM.ThresholdValue, value=facts.threshold, unit=codes.UCUM.NoUnits))
    classification = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Image classification"),
        finding_type=_local("CLASSIFICATION"),
        algorithm_id=model,
        measurements=probabilities + rule,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(_local("PREDICTED-CLASS"), _class_code(facts, facts.predicted_index)),
            hd.sr.QualitativeEvaluation(_local("DECISION-RULE"),
                                        _local("ARGMAX-RULE" if facts.threshold is None else "THRESHOLD-RULE")),
        ],
        source_images=[image()],
    )

    measurements, evaluations = [], [
        hd.sr.QualitativeEvaluation(_local("EXPL-METHOD"), _method_code(facts)),
        hd.sr.QualitativeEvaluation(_local("EXPLAINED-CLASS"), _class_code(facts, facts._explained)),
    ]
    for key, value in facts.trust.items():
        name, unit = _trust_code(key)
        if isinstance(value, (bool, np.bool_)):
            evaluations.append(hd.sr.QualitativeEvaluation(name, codes.SCT.Yes if value else codes.SCT.No))
        elif value is not None and np.isfinite(float(value)):
            measurements.append(hd.sr.Measurement(name=name, value=float(value), unit=_unit(unit)))
    explainer = hd.sr.AlgorithmIdentification(
        name=facts.method_name, version=facts.model_version, manufacturer=MANUFACTURER,
        parameters=[DISCLAIMER, f"Explained layer: {facts.layer or 'none (input gradients)'}",
                    f"Explained class: {facts.explained_class}", f"Model file SHA-256: {facts.model_sha256}"])
    explanation = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Saliency explanation"),
        finding_type=_local("SALIENCY-TRUST"),
        algorithm_id=explainer,
        measurements=measurements or None,
        qualitative_evaluations=evaluations,
        source_images=[image()],
    )

    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(entropy_srcs=[facts.model_sha256]), name=facts.model_title[:64],
            manufacturer_name=MANUFACTURER, model_name=facts.model_version[:64]))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=[classification, explanation],
    )
    return hd.sr.ComprehensiveSR(
        evidence=[source], content=report[0], series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        is_complete=True, is_final=False, series_description="XAI result: not a diagnostic device",
    )


# ----------------------------------------------------------------------------- maps

@_quietly
def saliency_parametric_map(source, saliency: np.ndarray, facts: ExplanationFacts, *,
                            series_number: int = SERIES_NUMBERS["pm"], instance_number: int = 1) -> "Dataset":
    """The saliency map as a float32 Parametric Map on the source image's own geometry.

    Parameters
    ----------
    source : pydicom.Dataset
        Header of the explained image; it must have a patient frame of reference (CT, MR, PET...).
    saliency : ndarray, float, shape (rows, cols)
        The map in 0..1 on the source's rows and columns (of ``facts.frame_index`` if multi-frame).
    facts : ExplanationFacts

    Returns
    -------
    highdicom.pm.ParametricMap
        Real world value mapping 0..1 with identity slope, quantity: the method's DCM concept
        (e.g. 130403 "Gradient-weighted class activation"), unit "no units".

    Raises
    ------
    DicomResultError
        For a source that states no position in the patient (CR, DX, secondary capture) or a
        multi-frame source that states none for its frames.

    Examples
    --------
    >>> pm = saliency_parametric_map(ct_header, saliency, facts)  # doctest: +SKIP
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check_source(source)
    if _coordinate_system(source) is None:
        raise DicomResultError(_NO_FRAME_POSITIONS if _n_frames(source) > 1 else _NO_PATIENT_GEOMETRY)
    values = _checked_map(source, saliency)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="SALIENCY", value_range=(0.0, 1.0), slope=1.0, intercept=0.0,
        lut_explanation=f"{facts.method_name} saliency for {facts.explained_class}: 0 none, 1 highest"[:64],
        quantity_definition=_method_code(facts), unit=codes.UCUM.NoUnits)
    parametric_map = hd.pm.ParametricMap(
        source_images=[source], pixel_array=values[np.newaxis], series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer=MANUFACTURER, manufacturer_model_name=facts.model_title[:64],
        software_versions=facts.model_version[:64], device_serial_number=facts.model_sha256,
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        content_label="SALIENCY", content_description=DISCLAIMER,
        series_description=f"Saliency map ({facts.method_name})"[:64],
        **_frame_geometry(source, facts),
    )
    _copy_laterality(source, parametric_map)
    return parametric_map


@_quietly
def saliency_segmentation(source, saliency: np.ndarray, facts: ExplanationFacts, *, threshold: float = 0.5,
                          series_number: int = SERIES_NUMBERS["seg"], instance_number: int = 1) -> "Dataset":
    """The map's top region (saliency >= ``threshold``) as a binary Segmentation.

    Parameters
    ----------
    source : pydicom.Dataset
        Header of the explained image; projection radiographs without a frame of reference work.
    saliency : ndarray, float, shape (rows, cols)
        The map in 0..1 on the source's rows and columns.
    facts : ExplanationFacts
    threshold : float
        Pixels with at least this saliency form the segment.

    Returns
    -------
    highdicom.seg.Segmentation
        One segment "Region of high saliency" (local code), produced by an automatic algorithm
        identified by the method, the model and its SHA-256.

    Examples
    --------
    >>> seg = saliency_segmentation(cr_header, saliency, facts, threshold=0.6)  # doctest: +SKIP
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    _check_source(source)
    if not 0.0 < threshold <= 1.0:
        raise DicomResultError("The segmentation threshold must lie above 0 and at most 1.")
    if _coordinate_system(source) is None and _n_frames(source) > 1:
        raise DicomResultError(_NO_FRAME_POSITIONS)
    mask = _checked_map(source, saliency) >= threshold
    flat = _coordinate_system(source) is None
    algorithm = hd.AlgorithmIdentificationSequence(
        name=f"{facts.model_title} / {facts.method_name}"[:64], family=codes.DCM.ArtificialIntelligence,
        version=facts.model_version[:64], source=MANUFACTURER,
        parameters={"explained class": facts.explained_class, "layer": facts.layer or "none",
                    "threshold": f"{threshold:g}", "model SHA-256": facts.model_sha256})
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label=f"Saliency >= {threshold:g} ({facts.explained_class})"[:64],
        segmented_property_category=codes.SCT.SpatialAndRelationalConcept,
        segmented_property_type=_local("SALIENT-REGION"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm)
    segmentation = hd.seg.Segmentation(
        source_images=[_without_invalid_spacing(source)], pixel_array=mask[np.newaxis], segmentation_type="BINARY",
        segment_descriptions=[segment], series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=facts.model_title[:64], software_versions=facts.model_version[:64],
        device_serial_number=facts.model_sha256, omit_empty_frames=False,
        content_label="SALIENCY", content_description=DISCLAIMER,
        series_description=f"Salient region ({facts.method_name})"[:64],
        **_frame_geometry(source, facts),
    )
    if flat:
        # Without a frame of reference nothing else orients the frame (General Image, Type 2C);
        # the source's own statement is copied, or left empty when it has none.
        segmentation.PatientOrientation = list(_patient_orientation(source) or ()) or ""
    return segmentation


def _without_invalid_spacing(source):
    """The source header without a Pixel Spacing of zero (RG1_UNCI.dcm has 0\\0), which highdicom
    would copy into the segmentation's pixel measures; the source itself is not modified."""
    from pydicom import Dataset

    if "PixelSpacing" not in source or _positive(source.PixelSpacing):
        return source
    view = Dataset()  # a new dict: copy.copy(source) would share it, and the deletion with it
    for element in source:
        if element.keyword != "PixelSpacing":
            view.add(element)
    view.file_meta = getattr(source, "file_meta", Dataset())
    return view


def _positive(values) -> bool:
    try:
        return len(values) == 2 and all(float(v) > 0 for v in values)
    except (TypeError, ValueError):
        return False


_NO_PATIENT_GEOMETRY = ("This image states no position in the patient (a projection radiograph or a secondary "
                        "capture), so the map is stored as a segmentation and an overlay, not as a parametric map.")
_NO_FRAME_POSITIONS = ("This multi-frame image states no position for its frames, so the map cannot be placed on "
                       "one of them and is stored as an overlay only.")


def _check_source(source) -> None:
    from pydicom import Dataset

    if not isinstance(source, Dataset) or "SOPInstanceUID" not in source or "Rows" not in source:
        raise DicomResultError("The source must be the DICOM header of the explained image "
                               "(read_source or source_from_pixels).")


def _n_frames(source) -> int:
    return int(source.get("NumberOfFrames") or 1)


def _coordinate_system(source):
    from highdicom.spatial import get_image_coordinate_system

    return get_image_coordinate_system(source)


def _referenced_frames(source, facts: ExplanationFacts) -> list[int] | None:
    if _n_frames(source) == 1:
        return None
    index = 0 if facts.frame_index is None else int(facts.frame_index)
    if not 0 <= index < _n_frames(source):
        raise DicomResultError(f"Frame {index} does not exist; the source has {_n_frames(source)} frames.")
    return [index + 1]


def _checked_map(source, saliency: np.ndarray) -> np.ndarray:
    values = np.asarray(saliency, dtype=np.float32)
    shape = (int(source.Rows), int(source.Columns))
    if values.shape != shape:
        raise DicomResultError(f"The saliency map is {values.shape[0]} x {values.shape[1] if values.ndim > 1 else 1} "
                               f"pixels but the image is {shape[0]} x {shape[1]}; map it to the scan's geometry first.")
    if not np.isfinite(values).all() or values.min() < 0.0 or values.max() > 1.0:
        raise DicomResultError("The saliency map must hold finite values from 0 to 1.")
    return values


def _frame_geometry(source, facts: ExplanationFacts) -> dict:
    """Plane position, orientation and pixel measures of the explained frame of a multi-frame source.

    highdicom takes a single-frame source's geometry itself; for one frame out of many it needs
    that frame's plane position, and matches it to the source frame it references.
    """
    import highdicom as hd

    if _n_frames(source) == 1:
        return {}
    frame = _referenced_frames(source, facts)[0] - 1

    def item(keyword: str):
        for group, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
            sequence = source.get(group)
            if sequence is not None and len(sequence) > index and keyword in sequence[index]:
                return sequence[index].get(keyword)
        return None

    position, orientation, measures = (item(k) for k in ("PlanePositionSequence", "PlaneOrientationSequence",
                                                           "PixelMeasuresSequence"))
    if position is None or orientation is None or measures is None:
        raise DicomResultError(_NO_FRAME_POSITIONS)
    return {"plane_positions": [hd.PlanePositionSequence.from_sequence(position)],
            "plane_orientation": hd.PlaneOrientationSequence.from_sequence(orientation),
            "pixel_measures": hd.PixelMeasuresSequence.from_sequence(measures)}


def _copy_laterality(source, result) -> None:
    """General Series Laterality (Type 2C), which highdicom does not carry over to derived images.

    dciodvfy requires it in a Parametric Map and a Secondary Capture, whose frames state no
    laterality of their own (and refuses it in a Segmentation, whose segments may); empty means
    unknown, as in many CT and MR series.
    """
    value = source.get("Laterality") or source.get("ImageLaterality") or ""
    result.Laterality = value if value in ("R", "L") else ""


# ----------------------------------------------------------------------------- overlay

@_quietly
def overlay_secondary_capture(source, overlay_rgb: np.ndarray, facts: ExplanationFacts, *,
                              series_number: int = SERIES_NUMBERS["sc"], instance_number: int = 1) -> "Dataset":
    """The overlay as shown (map, colour bar, legend) as an RGB Secondary Capture in the source's study.

    Parameters
    ----------
    source : pydicom.Dataset
    overlay_rgb : ndarray, uint8, shape (rows, cols, 3)
        Any size; pixel spacing and orientation are copied only when it has the source's size.
    facts : ExplanationFacts

    Returns
    -------
    highdicom.sc.SCImage

    Examples
    --------
    >>> sc = overlay_secondary_capture(source, overlay, facts)  # doctest: +SKIP
    """
    import highdicom as hd

    _check_source(source)
    rgb = np.asarray(overlay_rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise DicomResultError("The overlay must be an RGB image of 8-bit values (rows x columns x 3).")
    same_grid = rgb.shape[:2] == (int(source.Rows), int(source.Columns))
    orientation = _patient_orientation(source) if same_grid else None
    capture = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source, pixel_array=np.ascontiguousarray(rgb), photometric_interpretation="RGB",
        bits_allocated=8, coordinate_system="PATIENT", series_instance_uid=hd.UID(),
        series_number=series_number, sop_instance_uid=hd.UID(), instance_number=instance_number,
        manufacturer=MANUFACTURER, pixel_spacing=_pixel_spacing(source) if same_grid else None,
        patient_orientation=orientation or ("L", "F"), transfer_syntax_uid="1.2.840.10008.1.2.1",
        series_description=f"Saliency overlay ({facts.method_name}): not diagnostic"[:64],
    )
    if orientation is None:  # unknown (and Type 2C): emptied rather than invented, see source_from_pixels
        capture.PatientOrientation = ""
    _copy_laterality(source, capture)
    capture.SourceImageSequence = [_source_reference(source, facts)]  # highdicom's SC has no such link
    return capture


def _source_reference(source, facts: ExplanationFacts):
    """An item of Source Image Sequence (General Image module): the explained image and frame."""
    from pydicom import Dataset

    item = Dataset()
    item.ReferencedSOPClassUID = source.SOPClassUID
    item.ReferencedSOPInstanceUID = source.SOPInstanceUID
    frames = _referenced_frames(source, facts)
    if frames:
        item.ReferencedFrameNumber = frames[0]
    return item


def _pixel_spacing(source) -> tuple[float, float] | None:
    """Pixel Spacing in mm of the source (patient plane), if it states a usable one.

    A radiograph's Imager Pixel Spacing is at the detector, magnified: it is not carried over
    as a patient-plane spacing.
    """
    measures = None
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        with contextlib.suppress(TypeError, IndexError, AttributeError, KeyError):
            measures = measures or source.get(group)[0].PixelMeasuresSequence[0]
    for holder in (source, measures):
        with contextlib.suppress(TypeError, ValueError, IndexError, AttributeError):
            row, col = (float(v) for v in holder.get("PixelSpacing"))
            if row > 0 and col > 0:
                return row, col
    return None


def _patient_orientation(source) -> tuple[str, str] | None:
    """(row direction, column direction) as patient orientation letters, from the header."""
    from highdicom.spatial import get_closest_patient_orientation

    stated = source.get("PatientOrientation")
    if stated is not None and len(stated) == 2 and all(str(v) for v in stated):
        return str(stated[0])[:1], str(stated[1])[:1]
    cosines = source.get("ImageOrientationPatient")
    if cosines is None:
        with contextlib.suppress(TypeError, IndexError, AttributeError):
            cosines = source.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    if cosines is None or len(cosines) != 6:
        return None
    row, col = np.array(cosines[:3], float), np.array(cosines[3:], float)
    try:
        # highdicom's affine columns: down the rows, along a row, normal
        down, across, _ = get_closest_patient_orientation(np.column_stack([col, row, np.cross(row, col)]))
    except ValueError:
        return None
    return across.value, down.value


# ----------------------------------------------------------------------------- together

@_quietly
def results_for_pacs(source, facts: ExplanationFacts, saliency: np.ndarray, overlay_rgb: np.ndarray, *,
                     image: np.ndarray | None = None, segmentation_threshold: float = 0.5) -> list:
    """Every result object as it would be stored in the PACS: in the source's study, with its patient.

    Parameters
    ----------
    source : pydicom.Dataset or None
        Header of the explained DICOM image; None for a PNG/JPEG upload, then ``image`` is required
        and becomes a Secondary Capture in a new study (first in the list).
    facts : ExplanationFacts
    saliency : ndarray, float, (rows, cols) in 0..1 on the source's grid
    overlay_rgb : ndarray, uint8, (rows, cols, 3)
    image : ndarray, optional
        The upload's pixels, for a non-DICOM source.
    segmentation_threshold : float

    Returns
    -------
    list of pydicom.Dataset
        [source capture (non-DICOM only), SR, Parametric Map, Segmentation, overlay capture]. The
        Parametric Map is left out for images that state no position in the patient, and both maps
        for a multi-frame image without frame positions; call the builders to get the sentence why.

    Examples
    --------
    >>> objects = results_for_pacs(read_source(data), facts, saliency, overlay)  # doctest: +SKIP
    """
    objects = []
    if source is None:
        if image is None:
            raise DicomResultError("A non-DICOM upload needs its pixels to make a DICOM image the results refer to.")
        source = source_from_pixels(image)
        objects.append(source)
    objects.append(structured_report(source, facts))
    for build in (saliency_parametric_map,
                  lambda s, m, f: saliency_segmentation(s, m, f, threshold=segmentation_threshold)):
        try:
            objects.append(build(source, saliency, facts))
        except DicomResultError as err:
            if str(err) not in (_NO_PATIENT_GEOMETRY, _NO_FRAME_POSITIONS):
                raise
    objects.append(overlay_secondary_capture(source, overlay_rgb, facts))
    return objects


# ----------------------------------------------------------------------------- de-identification

#: UI elements that name a class, a syntax or a scheme, not an instance: never replaced.
_CLASS_UID_KEYWORDS = frozenset({
    "SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID",
    "ImplementationClassUID", "CodingSchemeUID", "ContextUID", "MappingResourceUID",
    "ContextGroupExtensionCreatorUID", "ReferencedSOPClassUIDInFile", "ReferencedTransferSyntaxUIDInFile",
    "PrivateInformationCreatorUID", "RelatedGeneralSOPClassUID", "OriginalSpecializedSOPClassUID",
    "SOPClassesInStudy", "CreatorVersionUID",
})
#: Top-level attributes that must stay (Type 2) but lose their value.
_EMPTIED = frozenset({"PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "ReferringPhysicianName",
                      "StudyID", "AccessionNumber"})
#: Type 1 dates and times of the SR, Parametric Map and Segmentation IODs: a dummy value, not the real one.
_DUMMY_DATES = {"ContentDate": "19000101", "ContentTime": "000000"}
#: Identifying keywords whose values here are this module's own, not the patient's.
_OWN_TOP_LEVEL = frozenset({"SeriesDescription", "DeviceSerialNumber", "ContentSequence"})
_OWN_NESTED = frozenset({"ContentSequence", "TextValue"})
#: Further identifying attributes of the patient and study modules that highdicom may copy.
_ALSO_IDENTIFYING = frozenset({
    "ReferringPhysicianIdentificationSequence", "ConsultingPhysicianName", "PhysiciansOfRecordIdentificationSequence",
    "IssuerOfAccessionNumberSequence", "IssuerOfPatientIDQualifiersSequence", "AdmissionID", "ServiceEpisodeID",
    "ReferencedPatientSequence", "ReferencedStudySequence", "ReferencedPatientPhotoSequence", "PatientBreedDescription",
    "ResponsiblePersonRole", "OtherPatientNames", "PatientPrimaryLanguageCodeSequence", "StudyIDIssuer",
    "NameOfPhysiciansReadingStudy", "ReasonForTheRequestedProcedure", "ReasonForStudy", "MedicalAlerts",
    "SpecialNeeds", "PatientTransportArrangements", "PerformedProcedureStepStartDate",
})


@_quietly
def deidentified(datasets: Sequence, *, salt: str | bytes) -> list:
    """Copies for download: patient anonymised, dates removed, every UID replaced consistently.

    A UID is replaced by ``generate_uid(entropy_srcs=[salt, uid])``: the same original UID gives
    the same new one in every object of the call (and of any call with the same salt), so the
    objects still refer to each other and to the (equally de-identified) source; without the
    secret salt the originals cannot be recovered or linked. Dates and times are removed (the
    Type 1 content date and time get the dummy 19000101 000000), the patient becomes "Anonymous"
    with a pseudonymous ID (keyed by the salt), person names, institutions, devices of the source,
    descriptions and private attributes are removed (PS3.15 E.1 basic profile).

    Parameters
    ----------
    datasets : sequence of pydicom.Dataset
        Objects from :func:`results_for_pacs` (or the source itself).
    salt : str or bytes
        A per-session secret, e.g. ``secrets.token_hex(16)``; never store or show it.

    Returns
    -------
    list of pydicom.Dataset
        New objects; the inputs are not modified.

    Examples
    --------
    >>> objects = results_for_pacs(source, facts, saliency, overlay)  # doctest: +SKIP
    >>> downloads = deidentified(objects, salt=session_salt)  # doctest: +SKIP
    """
    import copy

    key = salt.encode() if isinstance(salt, str) else bytes(salt)
    if len(key) < 8:
        raise DicomResultError("The de-identification salt must be a secret of at least 8 characters.")
    out = []
    for original in datasets:
        ds = copy.deepcopy(original)
        patient_id = str(ds.get("PatientID") or "")
        visited: set[int] = set()
        _clean(ds, key, top=True, visited=visited)
        meta = getattr(ds, "file_meta", None)
        if meta is not None:
            _clean(meta, key, top=False, visited=visited)
        ds.PatientName = ANONYMOUS_NAME
        ds.PatientID = "ANON-" + hmac.new(key, patient_id.encode(), hashlib.sha256).hexdigest()[:16].upper()
        _mark_deidentified(ds)
        out.append(ds)
    return out


def _clean(ds, key: bytes, *, top: bool, visited: set[int]) -> None:
    from core.io import IDENTIFYING_KEYWORDS

    if id(ds) in visited:  # an item that appears twice in the tree (deepcopy keeps the sharing)
        return
    visited.add(id(ds))

    identifying = set(IDENTIFYING_KEYWORDS) | _ALSO_IDENTIFYING
    own = _OWN_TOP_LEVEL if top else _OWN_NESTED
    for element in list(ds):
        tag, keyword, vr = element.tag, element.keyword, element.VR
        if tag.is_private:
            del ds[tag]
        elif vr == "SQ":
            if keyword in identifying and keyword not in own:
                del ds[tag]
                continue
            for item in element.value:
                _clean(item, key, top=False, visited=visited)
        elif vr == "UI":
            if keyword not in _CLASS_UID_KEYWORDS and element.value:
                element.value = _replaced_uids(element.value, key)
        elif vr in ("DA", "TM", "DT"):
            if top and keyword in _DUMMY_DATES:
                element.value = _DUMMY_DATES[keyword]
            elif top and keyword in _EMPTIED:
                element.value = ""
            else:
                del ds[tag]
        elif keyword in identifying or vr == "PN" or keyword.startswith("ClinicalTrial"):
            if keyword in own:
                continue
            if top and keyword in _EMPTIED | {"PatientName", "PatientID"}:
                element.value = ""
            else:
                del ds[tag]


def _replaced_uids(value, key: bytes):
    from pydicom.multival import MultiValue
    from pydicom.uid import generate_uid

    def one(uid) -> str:
        uid = str(uid)
        if uid.startswith("1.2.840.10008."):  # a DICOM-defined UID (e.g. a well-known frame of reference)
            return uid
        return generate_uid(entropy_srcs=[key.hex(), uid])

    if isinstance(value, (list, MultiValue)):
        return [one(v) for v in value]
    return one(value)


def _mark_deidentified(ds) -> None:
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "PS3.15 E.1 basic profile; UIDs replaced; dates removed"
    ds.DeidentificationMethodCodeSequence = [CodedConcept.from_code(codes.DCM.BasicApplicationConfidentialityProfile)]
    ds.LongitudinalTemporalInformationModified = "MODIFIED"


# ----------------------------------------------------------------------------- bytes

@_quietly
def to_bytes(ds) -> bytes:
    """The object as a DICOM Part 10 file, in memory.

    Examples
    --------
    >>> to_bytes(sr)[128:132]  # doctest: +SKIP
    b'DICM'
    """
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


_FILE_NAMES = {"Comprehensive SR Storage": "report-sr", "Parametric Map Storage": "saliency-pm",
               "Segmentation Storage": "salient-region-seg", "Secondary Capture Image Storage": "overlay-sc"}


def file_name(ds) -> str:
    """A file name that says what the object is and names no patient, e.g. ``report-sr.dcm``.

    Examples
    --------
    >>> [file_name(ds) for ds in objects]  # doctest: +SKIP
    ['report-sr.dcm', 'saliency-pm.dcm', 'salient-region-seg.dcm', 'overlay-sc.dcm']
    """
    name = _FILE_NAMES.get(ds.SOPClassUID.name, "object")
    if ds.get("SeriesNumber") == SERIES_NUMBERS["source"]:
        name = "source-sc"
    return f"{name}.dcm"


def to_zip(datasets: Sequence) -> bytes:
    """The objects as one zip archive of Part 10 files named by :func:`file_name`, in memory.

    Examples
    --------
    >>> st.download_button("DICOM results", to_zip(downloads), "xai-results.zip")  # doctest: +SKIP
    """
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        seen: dict[str, int] = {}
        for ds in datasets:
            name = file_name(ds)
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = name.replace(".dcm", f"-{seen[name]}.dcm")
            archive.writestr(name, to_bytes(ds))
    return buffer.getvalue()
