"""The :class:`Scan` every source of images ends in, and :class:`ScanError`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ScanError(ValueError):
    """A file that cannot be used as a scan; ``str(err)`` is one sentence for the user."""


@dataclass(frozen=True)
class Scan:
    """One image or series of frames in native units, with how to display it.

    Attributes
    ----------
    frames : ndarray, float32, shape (n_frames, rows, cols) or (n_frames, rows, cols, 3)
        Pixel values in native units: Hounsfield units for CT after the modality LUT,
        stored values otherwise. Colour images keep three channels.
    window : (centre, width)
        Default display window, from the DICOM header when it has one.
    voi : VOI or None
        The DICOM header's own VOI transform (window with its VOI LUT Function, or a VOI LUT
        Sequence) when the file has one; the header-default display and the model input use it.
    invert : bool
        True for MONOCHROME1, where low values are white on a reading station.
    spacing : (row_mm, col_mm) or None
        Physical size of one pixel, when the file states a usable one.
    header : dict
        De-identified summary (modality, size, spacing, manufacturer, ...).
    hidden : tuple of str
        Keywords of identifying attributes present in the file and withheld.
    identifiers : dict
        Values of those attributes, filled only when ``load_scan(keep_identifiers=True)``.
    warnings : tuple of str
        One-sentence notes about what loading had to do (e.g. replaced NaN values).
    """

    frames: np.ndarray
    window: tuple[float, float]
    invert: bool = False
    spacing: tuple[float, float] | None = None
    kind: str = "image"
    units: str = ""
    name: str | None = None
    header: dict = field(default_factory=dict)
    hidden: tuple[str, ...] = ()
    identifiers: dict = field(default_factory=dict, repr=False)
    warnings: tuple[str, ...] = ()
    voi: object | None = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of one frame."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def is_color(self) -> bool:
        return self.frames.ndim == 4

    @property
    def default_frame(self) -> int:
        """The middle frame, the usual starting point for a multi-frame series."""
        return self.n_frames // 2

    @property
    def modality(self) -> str:
        return str(self.header.get("Modality", ""))

    @property
    def body_part(self) -> str:
        return str(self.header.get("BodyPartExamined", ""))

    def frame(self, index: int | None = None) -> np.ndarray:
        """One frame in native units; ``None`` gives the middle one."""
        i = self.default_frame if index is None else int(index)
        if not 0 <= i < self.n_frames:
            raise ScanError(f"Frame {i} does not exist; this scan has {self.n_frames} frame(s).")
        return self.frames[i]
