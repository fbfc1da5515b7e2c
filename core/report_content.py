"""What a report of one case shows, computed: :func:`content_for` fills a :class:`core.report.ReportContent`.

The Explain page's report button and ``python -m core report`` call the same function, so a PDF
made from the command line and one made from the page say the same things in the same words:

- the scan as displayed (its window and inversion) and the chosen method's overlay on the scan's
  own geometry, with the colour map;
- the calibrated probabilities with the decision threshold, the calibration in one sentence and
  the outlier check's sentence when the scan is unlike the training images;
- the other methods side by side (same class, same layer);
- the trust scores with one sentence each: faithfulness (deletion / insertion), uncertainty
  (test-time augmentation) and, when asked for (it is slower), the sanity check;
- scores against an expert outline when one is given, beside the centre baseline;
- the model card summary (data source, intended use, limits), the running library versions, the
  model file's SHA-256 and the date.

Patient identifiers are copied in only with ``include_identifiers=True`` and only those the scan
was loaded with (``load_scan(..., keep_identifiers=True)``); by default a report names no one.
Nothing here reads or writes a file.

Example
-------
>>> from core.model import load_model                                          # doctest: +SKIP
>>> from core.report import report_pdf                                         # doctest: +SKIP
>>> content = content_for(load_model("assets/models/chest_xray"), scan, method="gradcam++")  # doctest: +SKIP
>>> pdf_bytes = report_pdf(content)                                            # doctest: +SKIP
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import numpy as np

from core.report import ReportContent, ReportError
from core.trust import BASELINES

#: Methods drawn side by side when the caller does not choose (every method the model supports).
DEFAULT_OPACITY = 0.6
DEFAULT_COLORMAP = "Turbo"


def window_text(scan, window: tuple[float, float] | None = None, invert: bool | None = None) -> str:
    """How the scan was windowed for display, in one phrase.

    >>> class Jpeg:
    ...     kind, window, invert, units, header = "image", (127.5, 255.0), False, "", {}
    >>> window_text(Jpeg())
    "window centre 127.5, width 255 (the file's full 8-bit range)"
    """
    header_window = tuple(float(v) for v in scan.window)
    shown = header_window if window is None else tuple(float(v) for v in window)
    unit = f" {scan.units}" if getattr(scan, "units", "") else ""
    text = f"window centre {shown[0]:g}, width {shown[1]:g}{unit}"
    if shown != header_window:
        text += " (chosen by the user)"
    elif scan.kind == "dicom" and "WindowCenter" in (scan.header or {}):
        text += " (from the DICOM header)"
    elif scan.kind == "dicom":
        text += " (the stored values' full range; the header states no window)"
    elif shown == (127.5, 255.0):
        text += " (the file's full 8-bit range)"
    else:
        text += " (the file's full range)"
    if (scan.invert if invert is None else invert):
        text += ", inverted (MONOCHROME1: bone white)" if scan.invert else ", inverted by the user"
    return text


def _plain(text: str) -> str:
    """Markdown emphasis removed (model.json citations use ``*title*``)."""
    return re.sub(r"(?<!\w)[*_]{1,2}([^*_]+)[*_]{1,2}(?!\w)", r"\1", str(text or "")).strip()


def probability_note(loaded) -> str:
    """One sentence on how the model's probabilities were calibrated ('' when they were not): the training split's
    class shares restored when the model was trained with class weights (``class_prior``), then temperature
    scaling."""
    prior, scaled = loaded.class_prior is not None, loaded.temperature != 1.0
    if not (prior or scaled):
        return ""
    calibration = loaded.info.get("calibration") or {}
    ece = calibration.get("ece_after")
    steps = (["put back on the training split's class shares (the model was trained with class weights)"] if prior
             else []) + ([f"calibrated by temperature scaling (T = {loaded.temperature:.2f}) on the model's "
                          "validation split"] if scaled else [])
    return ("Probabilities " + ", then ".join(steps)
            + (f"; expected calibration error {ece:.3f} after." if ece is not None else "."))


_WITHOUT_DETAIL = {"blurred": "the fully blurred image", "reference": "its mean training image"}


def faithfulness_row(result, class_name: str) -> tuple[str, str, str]:
    """(label, value, reading) of a :class:`core.trust.Faithfulness` result."""
    if not result.informative:
        return ("Faithfulness", "not measurable on this scan (deletion test)",
                f"The model gives even {_WITHOUT_DETAIL.get(result.baseline, 'the baseline image')} "
                f"{result.baseline_probability:.0%} {class_name} "
                f"(the intact scan {result.full_probability:.0%}), so removing pixels cannot lower the score, "
                "whatever the map.")
    better = result.deletion_ratio > 1.1 and result.insertion_ratio > 1.1
    return ("Faithfulness",
            f"deletion AUC {result.deletion_auc:.3f} ({result.deletion_ratio:.2f}x the random order's; above 1 is better), "
            f"insertion AUC {result.insertion_auc:.3f} ({result.insertion_ratio:.2f}x random), "
            f"average drop {result.average_drop:.1f}%",
            f"Removing the map's hottest pixels first (they take the values of "
            f"{BASELINES.get(result.baseline, 'a baseline')}) lowers the probability "
            + ("faster than random orders do: the map points at what the model uses." if better else
               "about as fast as random orders do: the map is not clearly better than chance."))


def uncertainty_row(result, class_name: str, threshold: float | None) -> tuple[str, str, str]:
    """(label, value, reading) of a :class:`core.trust.Uncertainty` result."""
    value = (f"P({class_name}) {result.mean:.1%}, 90% interval {result.low:.1%} – {result.high:.1%} over "
             f"{len(result.probabilities) or 16} shifted copies; hot spot moves {100 * result.hotspot_spread:.1f}% "
             "of the side")
    if threshold is None:
        reading = ("Small shifts and contrast changes within the training augmentation's range; a narrow "
                   "interval means they barely change the answer.")
    elif result.crosses_threshold:
        reading = (f"The interval crosses the decision threshold {threshold:.2f}: small shifts and contrast "
                   "changes of the image flip the prediction.")
    else:
        reading = (f"The whole interval stays on one side of the decision threshold {threshold:.2f}: small "
                   "shifts and contrast changes of the image do not flip the prediction.")
    return ("Uncertainty", value, reading)


def sanity_row(result, method_name: str) -> tuple[str, str, str]:
    """(label, value, reading) of a :class:`core.trust.SanityCheck` result, or of one not run (None)."""
    from core.trust import SANITY_LIMIT

    if result is None:
        return ("Sanity check", "not run for this report",
                "Model randomisation: it re-initialises the model's layers and checks that the map changes; it "
                "takes longer, so it runs only when asked for.")
    rho = result.spearman[-1]
    shown = f"{rho:.4f}" if abs(abs(rho) - SANITY_LIMIT) < 0.005 else f"{rho:.2f}"  # never "0.50, below 0.5"
    if result.passes:
        return ("Sanity check", f"passes: ρ {shown} with every layer randomised",
                f"The {method_name} map changes when the model is destroyed (rank correlation below "
                f"{SANITY_LIMIT}), so it depends on what the model learned.")
    return ("Sanity check", f"fails: ρ {shown} with every layer randomised",
            f"The {method_name} map stays similar when the model is destroyed, so it mostly shows the image's "
            "structure, not the model's reasons.")


def outline_rows(on_scan: np.ndarray, mask: np.ndarray, spacing) -> tuple:
    """Rows scoring a map (on the scan's geometry) against an expert outline, beside the centre baseline."""
    from core.localisation import METRICS, centre_prior, localisation_scores, pointing_tolerance

    mask = np.asarray(mask, bool)
    if mask.shape != on_scan.shape:
        raise ReportError(f"The outline ({mask.shape[1]} x {mask.shape[0]}) must have the scan's size "
                          f"({on_scan.shape[1]} x {on_scan.shape[0]} pixels).")
    if not mask.any():
        raise ReportError("The outline is empty; give the expert's mask or no outline.")
    scores = localisation_scores(on_scan, mask, spacing=spacing)
    baseline = localisation_scores(centre_prior(mask.shape, spacing=spacing), mask, spacing=spacing)
    tolerance = pointing_tolerance(mask.shape, spacing=spacing).describe()
    rows = []
    for key, label in (("pointing_game", "Pointing game"), ("energy", "Energy inside the outline"),
                       ("rank_accuracy", "Rank accuracy"), ("auroc", "Pixel AUROC")):
        value = scores[key]
        shown = ("hit" if value == 1 else "miss" if value == 0 else f"{value:.2f}") if key == "pointing_game" \
            else f"{value:.2f}"
        reading = METRICS[key] + (" " + tolerance if key == "pointing_game" else "")
        rows.append((label, f"{shown} (centre baseline {baseline[key]:.2f})", reading))
    return tuple(rows)


def ablation_row(loaded, scan, mask: np.ndarray, target: int, frame: int | None = None) -> tuple:
    """The row saying whether the prediction needs the outlined finding (:func:`core.evaluation.outline_ablation`)."""
    from core.evaluation import outline_ablation

    result = outline_ablation(loaded, scan, np.asarray(mask, bool), target, frame=frame)
    name = loaded.class_names[target]
    control = "" if result["p_control"] is None else f"; a region of the same shape elsewhere: {result['p_control']:.2f}"
    return ("Without the finding", f"P({name}) {result['p_intact']:.2f} as scanned, {result['p_outline']:.2f} with "
            f"the outline filled in{control}",
            "The outlined region filled in from the tissue around it, and as a control a region of the same shape "
            "filled elsewhere: a fall no larger than the control's means the prediction does not need the finding, "
            "whatever the map shows.")


def card_summary(info: Mapping) -> dict:
    """The model card summary a report prints: data source with citation, intended use, limits."""
    from core.card import source_text

    return {"data_source": _plain(source_text(dict(info))), "intended_use": _plain(info.get("intended_use") or ""),
            "limits": tuple(_plain(limit) for limit in info.get("limits") or ())}


def running_versions() -> dict:
    """The libraries that made the report, with their versions."""
    from core.model import library_versions

    versions = library_versions()
    try:
        import fpdf

        versions["fpdf2"] = fpdf.__version__
    except ImportError:  # the PNG report needs no PDF library
        pass
    return versions


def content_for(loaded, scan, *, method: str = "gradcam", frame: int | None = None, class_index: int | None = None,
                layer: str | None = None, window: tuple[float, float] | None = None, invert: bool | None = None,
                colormap: str = DEFAULT_COLORMAP, opacity: float = DEFAULT_OPACITY,
                methods: Sequence[str] | None = None, sanity: bool = False, true_label: str | None = None,
                mask: np.ndarray | None = None, include_identifiers: bool = False,
                maps: Mapping | None = None, faithfulness_result=None, uncertainty_result=None,
                sanity_result=None, created: datetime | None = None,
                progress: Callable[[float, str], None] | None = None) -> ReportContent:
    """Everything a report of this case shows, computed with the project's own functions.

    Parameters
    ----------
    loaded : core.model.LoadedModel
    scan : core.io.Scan
    method : str
        The main method (a key of :data:`core.saliency.METHODS`), drawn large and framed among the others.
    frame : int or None
        Frame of a multi-frame scan (None: the middle one).
    class_index : int or None
        The class the maps explain (None: the predicted class).
    layer : str or None
        The convolution the CAM methods explain (None: the model's default).
    window, invert : display window (centre, width) and inversion; None: the scan's own (header) ones.
    colormap, opacity : how the overlays are drawn (:func:`core.render.overlay`).
    methods : sequence of str or None
        The methods side by side (None: every method the model supports).
    sanity : bool
        Run the sanity check (model randomisation; several seconds) when no ``sanity_result`` is given.
    true_label : str or None
        The known label of a sample or teaching case.
    mask : bool ndarray (rows, cols) or None
        An expert outline on the scan's geometry: adds the outline scores.
    include_identifiers : bool
        Copy the scan's identifiers in (only those it was loaded with); False names no one.
    maps : mapping method -> core.saliency.Explanation, or None
        Maps the caller already computed for this class and layer (the Explain page's); others are computed.
    faithfulness_result, uncertainty_result, sanity_result :
        Results the caller already has (:mod:`core.trust`); computed (sanity only with ``sanity``) when None.
    created : datetime or None
        When the explanation was made (None: now, local time with its zone).
    progress : callable(fraction, text) or None
        Told what is being computed, for a progress bar.

    Returns
    -------
    core.report.ReportContent

    Example
    -------
    >>> content = content_for(loaded, scan, method="gradcam", sanity=True)   # doctest: +SKIP
    >>> content.trust[0][0]                                                   # doctest: +SKIP
    'Faithfulness (deletion / insertion)'
    """
    from core.predict import out_of_range_sentence, predict_tensors
    from core.render import colormap_lut, display_image, overlay
    from core.runs import read_localisation, record_sentence
    from core.saliency import CAM_METHODS, DESCRIPTIONS, METHODS, explain, method_label
    from core.trust import model_faithfulness, sanity_check, test_time_augmentation

    tell = progress or (lambda fraction, text: None)
    if method not in METHODS:
        raise ReportError(f"{method!r} is not a method; choose one of {', '.join(METHODS)}.")
    layers = loaded.explainable_layers
    usable = [m for m in METHODS if layers or m not in CAM_METHODS]
    if method not in usable:
        raise ReportError(f"{METHODS[method]} needs a convolution layer and this model has none; use SmoothGrad.")
    side_by_side = [m for m in (usable if methods is None else methods) if m in usable]
    if method not in side_by_side:
        side_by_side.insert(0, method)
    names = loaded.class_names

    tell(0.0, "Predicting…")
    tensor = loaded.pipeline.scan_tensor(scan, frame)
    prediction = predict_tensors(loaded, tensor)[0]
    target = prediction.predicted if class_index is None else int(class_index)
    if not 0 <= target < len(names):
        raise ReportError(f"The class index {target} is not one of the model's {len(names)} classes.")
    layer = layer or loaded.last_conv

    background = display_image(scan.frame(frame), window or scan.window, scan.invert if invert is None else invert,
                               voi=scan.voi if window is None else None)
    known = dict(maps or {})
    pictures, main = [], None
    for i, key in enumerate(side_by_side):
        tell(0.1 + 0.5 * i / len(side_by_side), f"Computing {METHODS[key]}…")
        result = known.get(key) or explain(loaded, tensor, scan.shape, method=key, class_index=target,
                                           layer=layer if key in CAM_METHODS else None)
        picture = overlay(background, result.on_scan, opacity=opacity, colormap=colormap)
        pictures.append((method_label(key, loaded.map_score), picture, None))
        if key == method:
            main = (result, picture)
    result, main_picture = main

    threshold = loaded.threshold if len(names) == 2 else None
    tell(0.6, "Scoring the map (deletion and insertion)…")
    faith = faithfulness_result or model_faithfulness(loaded, tensor, result.raw, target)
    tell(0.7, "Predicting shifted and re-contrasted copies…")
    positive = 1 if len(names) == 2 else target
    tta = uncertainty_result or test_time_augmentation(loaded, tensor, positive, threshold=threshold, layer=layer)
    check = sanity_result
    if check is None and sanity:
        tell(0.8, "Randomising layers and recomputing the map (sanity check)…")
        check = sanity_check(loaded, tensor, method, target, result.layer, original=result.raw)
    trust = (faithfulness_row(faith, names[target]), uncertainty_row(tta, names[positive], threshold),
             sanity_row(check, METHODS[method]))
    outline = () if mask is None else (outline_rows(result.on_scan, mask, scan.spacing)
                                       + (ablation_row(loaded, scan, mask, target, frame),))

    notes = list(scan.warnings)
    outside = out_of_range_sentence(prediction, loaded.title)
    if outside:
        notes.append(outside)
    record = record_sentence(read_localisation(loaded.path)) if mask is None else None
    if record:  # with an outline, the report scores this very map against it instead
        notes.append(record[1].replace("`", ""))
    identifiers = dict(scan.identifiers) if include_identifiers else {}
    tell(0.95, "Laying out the report…")
    content = ReportContent(
        title=loaded.title, scan_image=background, window_text=window_text(scan, window, invert),
        overlay=main_picture, colormap_lut=colormap_lut(colormap), colormap_name=colormap,
        class_names=tuple(names), probabilities=tuple(float(p) for p in prediction.probabilities),
        predicted_index=prediction.predicted, method=method_label(method, loaded.map_score), layer=result.layer,
        model_sha256=str(loaded.info.get("sha256", "")), created=created or datetime.now().astimezone(),
        threshold=threshold, probability_note=probability_note(loaded), true_label=true_label,
        explained_index=target, method_note=DESCRIPTIONS[method], methods=tuple(pictures), trust=trust,
        outline_scores=outline, versions=running_versions(), notes=tuple(notes), spacing=scan.spacing,
        identifiers=identifiers, **card_summary(loaded.info))
    tell(1.0, "Report ready.")
    return content
