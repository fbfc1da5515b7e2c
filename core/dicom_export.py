"""The DICOM results of one explained scan: model + scan + method -> the objects for the PACS.

:func:`results_for_scan` is the one path from a scan to its DICOM results, for the Explain page's
downloads and for ``python -m core predict --dicom-out / --stow`` alike: it predicts (or takes the
prediction the caller has), explains with the chosen method, draws the overlay as the dashboard
shows it with the legend strip of :func:`core.report.legend_strip` (model, class, probability,
method, layer, date, disclaimer, colour bar) and hands everything to
:func:`core.dicom_results.results_for_pacs`:

- a DICOM source (the bytes the scan was loaded from, or their header) gets a Comprehensive SR,
  the map as a Parametric Map (when the image states its position in the patient) and as a
  Segmentation, and a Secondary Capture of the overlay, all in the source's study with its
  patient module: what goes back to the PACS;
- a PNG or JPEG gets the same in a new study with an anonymous patient, its own pixels first as
  a Secondary Capture for the results to refer to;
- with ``salt``, de-identified copies instead (:func:`core.dicom_results.deidentified`): what a
  page offers for download unless the person asks otherwise.

:func:`trust_scores` turns :mod:`core.trust` results into the SR's trust keys, computing those the
caller does not pass. :func:`write_results` writes objects as Part 10 files named by what they
are. Nothing here logs; only :func:`write_results` writes, and only where it is told.

Example
-------
>>> from core.io import load_scan                                                  # doctest: +SKIP
>>> from core.model import load_model                                              # doctest: +SKIP
>>> loaded, data = load_model("assets/models/chest_xray"), open("scan.dcm", "rb").read()  # doctest: +SKIP
>>> objects, facts = results_for_scan(loaded, load_scan(data), data, method="gradcam++")  # doctest: +SKIP
>>> [file_name(ds) for ds in objects]                                              # doctest: +SKIP
['report-sr.dcm', 'salient-region-seg.dcm', 'overlay-sc.dcm']
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from core.dicom_results import (DicomResultError, ExplanationFacts, deidentified, file_name, read_source,
                                results_for_pacs, to_bytes)

#: How the Secondary Capture draws the map: the dashboard's defaults (core.render.overlay).
DEFAULT_COLORMAP = "Turbo"
DEFAULT_OPACITY = 0.5


class ScanResults(NamedTuple):
    """What :func:`results_for_scan` made: the DICOM objects and the facts they record."""

    objects: list
    facts: ExplanationFacts


def model_version(info: Mapping) -> str:
    """The version a model folder states (``version``), else when it was made (``created``), else
    the start of its SHA-256: what the SR records as the model's version.

    >>> model_version({"created": "2026-11-24T03:18:09Z", "sha256": "ab" * 32})
    '2026-11-24T03:18:09Z'
    >>> model_version({"sha256": "ab" * 32})
    'sha256:abababababab'
    """
    return str(info.get("version") or info.get("created") or f"sha256:{str(info.get('sha256', ''))[:12]}")


def facts_for(loaded, probabilities: Sequence[float], explanation, *, trust: Mapping | None = None,
              frame_index: int | None = None) -> ExplanationFacts:
    """The facts of one prediction and its map, from the model folder's own record.

    Parameters
    ----------
    loaded : core.model.LoadedModel
    probabilities : sequence of float
        Calibrated probabilities (``loaded.predict``), one per class.
    explanation : core.saliency.Explanation
        Its method, layer and class are recorded.
    trust : mapping, optional
        Trust scores keyed as :data:`core.dicom_results.TRUST_CODES` (see :func:`trust_scores`).
    frame_index : int or None
        The explained frame of a multi-frame source file (None for a single-frame one).

    Returns
    -------
    core.dicom_results.ExplanationFacts
    """
    from core.saliency import METHODS, method_label

    probabilities = [float(p) for p in np.asarray(probabilities, np.float64).ravel()]
    names = loaded.class_names
    return ExplanationFacts(
        model_title=loaded.title, model_version=model_version(loaded.info),
        model_sha256=str(loaded.info.get("sha256", "")), class_names=tuple(names),
        probabilities=tuple(probabilities), predicted_index=loaded.decide(np.asarray(probabilities)),
        method=explanation.method, layer=explanation.layer,
        method_name=method_label(explanation.method, loaded.map_score) if explanation.method in METHODS else "",
        threshold=loaded.threshold if len(names) == 2 else None, temperature=loaded.temperature,
        trust=dict(trust or {}), frame_index=frame_index, explained_index=int(explanation.class_index))


def trust_scores(loaded, tensor: np.ndarray, explanation, *, faithfulness_result=None, uncertainty_result=None,
                 sanity_result=None, uncertainty: bool = True) -> dict:
    """Trust scores of one map under the SR's keys; what is not passed is computed (but the sanity check).

    Parameters
    ----------
    loaded : core.model.LoadedModel
    tensor : ndarray (1, S, S, C)
        The model input the map explains.
    explanation : core.saliency.Explanation
    faithfulness_result, uncertainty_result, sanity_result : optional
        :mod:`core.trust` results the caller already has (the Explain page's trust panel). The
        deletion / insertion curves (a few batched forward passes) and, with ``uncertainty``, the
        test-time augmentation are computed when missing; the sanity check (seconds) only recorded
        when given.
    uncertainty : bool
        Compute the test-time augmentation when no ``uncertainty_result`` is given.

    Returns
    -------
    dict
        ``deletion_auc``, ``insertion_auc``, ``deletion_ratio``, ``insertion_ratio``,
        ``average_drop``, ``informative``; ``probability_mean``, ``probability_low``,
        ``probability_high``, ``probability_std``, ``crosses_threshold``, ``hotspot_spread``;
        ``sanity_spearman``, ``sanity_ssim``, ``sanity_passes`` when a sanity check is given.

    Examples
    --------
    >>> scores = trust_scores(loaded, tensor, explanation)  # doctest: +SKIP
    >>> sorted(scores)[:2]  # doctest: +SKIP
    ['average_drop', 'crosses_threshold']
    """
    from core.trust import model_faithfulness, test_time_augmentation

    names = loaded.class_names
    target = int(explanation.class_index)
    faith = faithfulness_result or model_faithfulness(loaded, tensor, explanation.raw, target)
    scores = {key: (bool(value) if isinstance(value, (bool, np.bool_)) else float(value))
              for key, value in faith.summary().items()}
    threshold = loaded.threshold if len(names) == 2 else None
    tta = uncertainty_result
    if tta is None and uncertainty:
        positive = 1 if len(names) == 2 else target  # as the trust panel and the report read it
        tta = test_time_augmentation(loaded, tensor, positive, threshold=threshold, layer=explanation.layer)
    if tta is not None:
        scores |= {"probability_mean": float(tta.mean), "probability_low": float(tta.low),
                   "probability_high": float(tta.high), "probability_std": float(tta.std),
                   "crosses_threshold": bool(tta.crosses_threshold), "hotspot_spread": float(tta.hotspot_spread)}
    if sanity_result is not None and sanity_result.spearman:
        scores |= {"sanity_spearman": float(sanity_result.spearman[-1]), "sanity_ssim": float(sanity_result.ssim[-1]),
                   "sanity_passes": bool(sanity_result.passes)}
    return scores


def results_for_scan(loaded, scan, source, *, method: str = "gradcam", frame: int | None = None,
                     class_index: int | None = None, layer: str | None = None, trust: Mapping | None = None,
                     compute_trust: bool = False, tensor: np.ndarray | None = None,
                     probabilities: Sequence[float] | None = None, explanation=None,
                     colormap: str = DEFAULT_COLORMAP, opacity: float = DEFAULT_OPACITY,
                     created: datetime | str | None = None, salt: str | bytes | None = None) -> ScanResults:
    """The DICOM results of one scan: SR, saliency map(s) and overlay capture.

    Parameters
    ----------
    loaded : core.model.LoadedModel
    scan : core.io.Scan
        The scan as loaded (a series' stacked scan too: then ``source`` is the file of the slice
        in view and ``frame`` that slice's index).
    source : bytes, pydicom.Dataset or None
        The bytes ``scan`` was loaded from, or the header of its DICOM file
        (:func:`core.dicom_results.read_source`). Bytes of a PNG or JPEG, or None: the results go
        into a new study with an anonymous patient, the image itself first.
    method : str
        Explanation method, a key of :data:`core.saliency.METHODS` (ignored when ``explanation``
        is given).
    frame : int or None
        Frame (or slice) explained; None: the middle one, as everywhere.
    class_index : int or None
        Class the map explains; None: the predicted class.
    layer : str or None
        Convolution a CAM method explains; None: the model's default.
    trust : mapping, optional
        Trust scores to record (:func:`trust_scores`), e.g. those the Explain page computed.
    compute_trust : bool
        Without ``trust``: compute faithfulness and the test-time augmentation here.
    tensor, probabilities, explanation : optional
        What the caller already computed for this scan and frame (model input, calibrated
        probabilities, :class:`core.saliency.Explanation`), so nothing is computed twice.
    colormap, opacity : str, float
        How the overlay is drawn (:func:`core.render.overlay`).
    created : datetime or str, optional
        Date printed in the legend strip (default: now).
    salt : str or bytes, optional
        A per-session secret: de-identified copies for download instead of the PACS objects.

    Returns
    -------
    ScanResults
        ``objects``: list of pydicom datasets, [source capture (non-DICOM only), SR, Parametric
        Map (images with a position in the patient), Segmentation, overlay capture];
        ``facts``: what the SR records (probabilities, classes, method, layer, trust scores).

    Raises
    ------
    DicomResultError
        One sentence: a header that is not this scan's or breaks the standard (never quoting its
        values), an unknown method or class, a frame that the source does not have.

    Examples
    --------
    >>> objects, facts = results_for_scan(loaded, scan, data, method="gradcam")  # doctest: +SKIP
    >>> st.download_button("DICOM", to_zip(results_for_scan(loaded, scan, data, salt=secret).objects),
    ...                    "xai-results.zip")  # doctest: +SKIP
    """
    from pydicom import Dataset

    from core.io import ScanError
    from core.render import colormap_lut, display_image, overlay
    from core.report import legend_strip
    from core.saliency import METHODS, explain

    if explanation is None and method not in METHODS:
        raise DicomResultError(f"{method!r} is not an explanation method; choose one of {', '.join(METHODS)}.")
    header = source if isinstance(source, Dataset) or source is None else read_source(source)
    if header is not None and (int(header.Rows), int(header.Columns)) != tuple(scan.shape):
        raise DicomResultError(f"The DICOM header describes a {header.Rows} x {header.Columns} image but the scan is "
                               f"{scan.shape[0]} x {scan.shape[1]}; pass the file the scan was loaded from.")
    index = scan.default_frame if frame is None else int(frame)
    try:
        pixels = scan.frame(index)
    except ScanError as err:
        raise DicomResultError(str(err)) from None
    n_source_frames = int(header.get("NumberOfFrames") or 1) if header is not None else 1
    if n_source_frames > 1 and n_source_frames != scan.n_frames:
        raise DicomResultError(f"The DICOM header has {n_source_frames} frames but the scan {scan.n_frames}; pass "
                               "the file the scan was loaded from.")

    names = loaded.class_names
    if tensor is None:
        tensor = loaded.pipeline.scan_tensor(scan, index)
    if probabilities is None:
        probabilities = loaded.predict(tensor)[0]
    probabilities = np.asarray(probabilities, np.float64).ravel()
    if explanation is None:
        target = loaded.decide(probabilities) if class_index is None else int(class_index)
        if not 0 <= target < len(names):
            raise DicomResultError(f"Class index {target} does not exist; the model has {len(names)} classes.")
        try:
            explanation = explain(loaded, tensor, scan.shape, method=method, class_index=target, layer=layer)
        except ValueError as err:  # a layer the model does not have, a CAM method without a convolution
            raise DicomResultError(str(err).rstrip(".") + ".") from None
    if trust is None and compute_trust:
        trust = trust_scores(loaded, tensor, explanation)

    facts = facts_for(loaded, probabilities, explanation, trust=trust,
                      frame_index=index if n_source_frames > 1 else None)
    background = display_image(pixels, scan.window, scan.invert, voi=scan.voi)
    picture = overlay(background, explanation.on_scan, opacity=opacity, colormap=colormap)
    explained = int(explanation.class_index)
    captured = legend_strip(picture, model=loaded.title, class_name=names[explained],
                            probability=float(probabilities[explained]), method=facts.method_name,
                            layer=explanation.layer, date=created or datetime.now().astimezone(),
                            colormap_lut=colormap_lut(colormap))
    try:
        if salt is not None and header is not None:
            # Built from the de-identified header, the copies never hold a value of the patient's, and a
            # header value out of the standard's form (a malformed date or name) is gone before highdicom
            # checks it; the second pass gives the new objects' own dates and UIDs the same treatment.
            header = deidentified([header], salt=salt)[0]
        objects = results_for_pacs(header, facts, explanation.on_scan, captured,
                                   image=None if header is not None else pixels)
        if salt is not None:
            objects = deidentified(objects, salt=salt)
    except DicomResultError:
        raise
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        # highdicom and pydicom refuse a header value out of the standard's form and quote it: never shown.
        raise DicomResultError(MALFORMED_SOURCE) from None
    return ScanResults(objects, facts)


#: Why a source whose header breaks the standard gets no results (its values are never quoted).
MALFORMED_SOURCE = ("This file's DICOM header holds values that do not follow the standard (such as a date, name or "
                    "UID in the wrong form), so no DICOM results can be made from it; the prediction and the maps "
                    "are not affected.")


def write_results(objects: Sequence, folder: str | Path, stem: str) -> list[Path]:
    """Write objects as Part 10 files ``<folder>/<stem>_<what>.dcm`` (e.g. ``scan_report-sr.dcm``).

    Parameters
    ----------
    objects : sequence of pydicom.Dataset
    folder : str or Path
        Created when missing.
    stem : str
        What the files of this input start with (the input's file name without its suffix).

    Returns
    -------
    list of Path
        The files written, in the order of ``objects``.

    Examples
    --------
    >>> write_results(objects, "results", "CT_small")  # doctest: +SKIP
    [PosixPath('results/CT_small_report-sr.dcm'), ...]
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, seen = [], {}
    for ds in objects:
        name = f"{stem}_{file_name(ds)}"
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = name.replace(".dcm", f"-{seen[name]}.dcm")
        path = folder / name
        path.write_bytes(to_bytes(ds))
        written.append(path)
    return written
