"""One-click reports: the case in front of the user as a PDF handout, a PNG figure, a legend strip.

Everything starts from one plain record, :class:`ReportContent`, which the Explain page and
the command line both fill; nothing here computes a prediction or a map, and nothing reads
a file or writes one: images come in as arrays, reports go out as bytes.

- :func:`report_pdf` -- an A4 handout (fpdf2): title and disclaimer, the scan as displayed and
  its overlay side by side at the scan's aspect ratio with a colour bar and a mm scale bar,
  the probabilities with the decision threshold, the methods side by side, the trust scores
  with one sentence each, the model card summary; library versions, model SHA-256, date and
  page numbers in the footer.
- :func:`report_png` -- the same case as one 1920 x 1080 figure for a slide.
- :func:`legend_strip` -- an overlay with a strip below it saying what it is (model, class and
  probability, method and layer, date, "not a diagnostic device") and a small colour bar:
  the Explain page's PNG download.

Patient identifiers are printed only when the caller puts them in ``ReportContent.identifiers``
(the page does so only when the person revealed them and ticked a box); the legend strip
never carries any.

Text is set in DejaVu Sans (Debian ``fonts-dejavu-core``; its oblique is in ``fonts-dejavu-extra``,
both installed by ``scripts/setup.sh``) so names like "Grad-CAM++", "ρ" or "≥" print as they are;
without it the PDF falls back to fpdf2's core fonts with those characters spelled out in ASCII, and
the PNGs to Pillow's own font.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

DISCLAIMER = "Research and teaching tool — not a diagnostic device."
DISCLAIMER_DETAIL = ("Not validated for clinical use: not for diagnosis, triage or any clinical decision. "
                     "A saliency map shows what raised this model's class score, not where disease is.")

#: Print resolution of the embedded images: sharp on paper, a few hundred kB per image.
PRINT_DPI = 200

_FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"),
              Path("/usr/local/share/fonts/dejavu"))
_FONT_FILES = {"regular": "DejaVuSans.ttf", "bold": "DejaVuSans-Bold.ttf", "italic": "DejaVuSans-Oblique.ttf",
               "mono": "DejaVuSansMono.ttf"}
#: Spelled-out replacements for fpdf2's core (Latin-1) fonts when DejaVu is missing.
_ASCII = {"—": "-", "–": "-", "≥": ">=", "≤": "<=", "ρ": "rho", "×": "x", "…": "...", "’": "'", "‘": "'",
          "“": '"', "”": '"', "→": "->", "±": "+/-", "·": "-", "•": "-", "≈": "~", "−": "-"}


class ReportError(ValueError):
    """Content that cannot make a report; ``str(err)`` is one sentence for the user."""


# ----------------------------------------------------------------------------- the content record

@dataclass(frozen=True, eq=False)
class ReportContent:
    """Everything a report shows, already computed; the page and the CLI fill it.

    Attributes
    ----------
    title : str
        The model's title, e.g. "Chest X-ray: pneumonia vs normal".
    scan_image : ndarray
        The scan as displayed: grey float in [0, 1], shape (rows, cols), or RGB uint8 (rows, cols, 3).
    window_text : str
        How it was windowed, e.g. "window centre 40, width 400 HU (from the DICOM header)".
    overlay : ndarray, uint8, (rows, cols, 3)
        The main overlay, on the scan's geometry.
    colormap_lut, colormap_name : (256, 3) uint8 lookup table and its name
        The colour map of the overlay, drawn as a colour bar (0 = low to 1 = high saliency).
    class_names, probabilities : sequences of the same length
        Calibrated probability of each class.
    predicted_index : int
        Index of the predicted class.
    method, layer : str, str or None
        The explanation method's display name (e.g. "Grad-CAM++") and the explained layer.
    model_sha256 : str
        SHA-256 of the model file.
    created : datetime
        When the explanation was made.
    threshold : float or None
        Decision threshold on P(last class) for a binary model; None for arg-max.
    probability_note : str
        One sentence on how the probabilities were calibrated, when they were.
    true_label : str or None
        The known label of a sample or teaching case.
    explained_index : int or None
        The class the overlay explains; None means the predicted class.
    method_note : str
        One sentence on what the method computes.
    methods : sequence of (name, RGB uint8 overlay, score text or None)
        The methods side by side.
    trust : sequence of (label, value text, one-sentence reading)
        Faithfulness, sanity check, uncertainty...
    outline_scores : sequence of (label, value text, one-sentence reading)
        Scores against an expert outline, when the case has one.
    data_source, intended_use, limits : model card summary
        Data source with its citation, intended use, a few short limits.
    versions : dict
        Library name -> version.
    notes : sequence of str
        One-sentence warnings shown with the prediction (outside the model's range, ...).
    spacing : (row_mm, col_mm) or None
        Pixel spacing, for a mm scale bar and the aspect ratio of non-square pixels.
    disclaimer : str
        Printed in a box under the title.
    identifiers : dict
        Patient identifiers, printed ONLY when given (the person revealed them and asked).

    Examples
    --------
    >>> from datetime import datetime
    >>> lut = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    >>> content = ReportContent(title="Demo", scan_image=np.zeros((4, 6)), window_text="full range",
    ...     overlay=np.zeros((4, 6, 3), np.uint8), colormap_lut=lut, colormap_name="Grey",
    ...     class_names=("A", "B"), probabilities=(0.2, 0.8), predicted_index=1, method="Grad-CAM",
    ...     layer="last_conv", model_sha256="0" * 64, created=datetime(2026, 1, 1))
    >>> report_pdf(content)[:5]
    b'%PDF-'
    """

    title: str
    scan_image: np.ndarray
    window_text: str
    overlay: np.ndarray
    colormap_lut: np.ndarray
    colormap_name: str
    class_names: tuple
    probabilities: tuple
    predicted_index: int
    method: str
    layer: str | None
    model_sha256: str
    created: datetime
    threshold: float | None = None
    probability_note: str = ""
    true_label: str | None = None
    explained_index: int | None = None
    method_note: str = ""
    methods: tuple = ()
    trust: tuple = ()
    outline_scores: tuple = ()
    data_source: str = ""
    intended_use: str = ""
    limits: tuple = ()
    versions: dict = field(default_factory=dict)
    notes: tuple = ()
    spacing: tuple | None = None
    disclaimer: str = DISCLAIMER
    identifiers: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        scan = np.asarray(self.scan_image)
        if scan.ndim == 2 and scan.dtype == np.uint8:
            scan = scan.astype(np.float32) / 255.0
        if scan.ndim == 2:
            scan = np.clip(np.nan_to_num(scan.astype(np.float32)), 0.0, 1.0)
        elif not (scan.ndim == 3 and scan.shape[2] == 3 and scan.dtype == np.uint8):
            raise ReportError(f"The scan image must be grey values in [0, 1] (rows, cols) or RGB uint8 "
                              f"(rows, cols, 3), not an array of shape {scan.shape} and type {scan.dtype}.")
        if min(scan.shape[:2]) < 1:
            raise ReportError("The scan image is empty.")
        overlay = _rgb(self.overlay, "The overlay")
        if overlay.shape[:2] != scan.shape[:2]:
            raise ReportError(f"The overlay ({overlay.shape[0]} x {overlay.shape[1]}) must have the scan's "
                              f"geometry ({scan.shape[0]} x {scan.shape[1]} pixels).")
        lut = np.asarray(self.colormap_lut)
        if lut.shape != (256, 3) or lut.dtype != np.uint8:
            raise ReportError(f"The colour map must be a (256, 3) uint8 lookup table, not shape {lut.shape}.")
        names = tuple(str(n) for n in self.class_names)
        probs = tuple(float(p) for p in self.probabilities)
        if not names or len(names) != len(probs):
            raise ReportError(f"Give one probability per class ({len(names)} classes, {len(probs)} probabilities).")
        if not all(0.0 <= p <= 1.0 for p in probs):
            raise ReportError("Probabilities must lie between 0 and 1.")
        for label, index in (("predicted", self.predicted_index), ("explained", self.explained_index)):
            if index is not None and not 0 <= int(index) < len(names):
                raise ReportError(f"The {label} class index {index} is not one of the {len(names)} classes.")
        if self.threshold is not None and not 0.0 <= float(self.threshold) <= 1.0:
            raise ReportError(f"The decision threshold {self.threshold} must lie between 0 and 1.")
        if self.threshold is not None and len(names) != 2:
            raise ReportError("A decision threshold applies to a two-class model; give None for arg-max.")
        if self.spacing is not None and (len(self.spacing) != 2 or min(float(s) for s in self.spacing) <= 0):
            raise ReportError("Pixel spacing must be two positive numbers (row mm, column mm) or None.")
        methods = []
        for item in self.methods:
            name, picture, score = (tuple(item) + (None,))[:3]
            methods.append((str(name), _rgb(picture, f"The overlay of {name}"), None if score is None else str(score)))
        set_ = lambda key, value: object.__setattr__(self, key, value)  # noqa: E731 - frozen dataclass
        set_("scan_image", scan)
        set_("overlay", overlay)
        set_("colormap_lut", lut)
        set_("class_names", names)
        set_("probabilities", probs)
        set_("predicted_index", int(self.predicted_index))
        set_("methods", tuple(methods))
        set_("trust", _rows(self.trust, "trust score"))
        set_("outline_scores", _rows(self.outline_scores, "outline score"))
        set_("limits", tuple(str(s) for s in self.limits))
        set_("notes", tuple(str(s) for s in self.notes))
        set_("versions", {str(k): str(v) for k, v in dict(self.versions).items()})
        set_("identifiers", {str(k): str(v) for k, v in dict(self.identifiers or {}).items()})
        if self.spacing is not None:
            set_("spacing", (float(self.spacing[0]), float(self.spacing[1])))

    @property
    def explained(self) -> int:
        """Index of the class the overlay explains."""
        return self.predicted_index if self.explained_index is None else int(self.explained_index)

    @property
    def date_text(self) -> str:
        return _date_text(self.created)


def _rgb(picture, what: str) -> np.ndarray:
    picture = np.asarray(picture)
    if picture.ndim != 3 or picture.shape[2] != 3 or picture.dtype != np.uint8 or min(picture.shape[:2]) < 1:
        raise ReportError(f"{what} must be an RGB uint8 array (rows, cols, 3), not shape {picture.shape} "
                          f"and type {picture.dtype}.")
    return picture


def _rows(rows, what: str) -> tuple:
    out = []
    for row in rows:
        row = tuple(row)
        if len(row) != 3:
            raise ReportError(f"Each {what} must be (label, value, one-sentence reading), not {len(row)} items.")
        out.append(tuple("" if v is None else str(v) for v in row))
    return tuple(out)


def _date_text(value) -> str:
    if isinstance(value, datetime):
        text = value.strftime("%Y-%m-%d %H:%M")
        zone = value.strftime("%Z") if value.tzinfo else ""
        return f"{text} {zone}".strip()
    return str(value)


def _percent(p: float) -> str:
    return f"{100 * p:.1f}%"


# ----------------------------------------------------------------------------- geometry and pixels

def _display_aspect(shape: tuple[int, int], spacing) -> float:
    """Width / height of the scan as a reader sees it (non-square pixels stretched by their spacing)."""
    rows, cols = shape[:2]
    if spacing:
        return cols * spacing[1] / (rows * spacing[0])
    return cols / rows


def _fit(aspect: float, box_w: float, box_h: float) -> tuple[float, float]:
    """The largest (w, h) of this aspect ratio inside a box."""
    if box_w / box_h > aspect:
        return box_h * aspect, box_h
    return box_w, box_w / aspect


def _pil(image: np.ndarray):
    from PIL import Image

    if image.ndim == 2:
        return Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L")
    return Image.fromarray(image, mode="RGB")


def _resized(image: np.ndarray, width_px: int, height_px: int):
    """A PIL image at this pixel size: anti-aliased down, smooth up, untouched when close.

    The scan and its overlay go through the same call with the same size, so they stay
    pixel for pixel on top of each other.
    """
    from PIL import Image

    picture = _pil(image)
    width_px, height_px = max(1, int(round(width_px))), max(1, int(round(height_px)))
    if abs(picture.width - width_px) <= 1 and abs(picture.height - height_px) <= 1:
        return picture
    shrinking = width_px < picture.width
    return picture.resize((width_px, height_px), Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC)


def _print_pixels(width_mm: float, height_mm: float) -> tuple[int, int]:
    """Pixel size for printing at :data:`PRINT_DPI`: large scans shrink, small ones are interpolated."""
    return (max(1, round(width_mm / 25.4 * PRINT_DPI)), max(1, round(height_mm / 25.4 * PRINT_DPI)))


def _nice_length(width_mm: float) -> float:
    """A round physical length (mm) about a fifth to a third of the image width."""
    for length in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500):
        if length >= width_mm / 5:
            return float(length)
    return float(round(width_mm / 3))


def _font_paths() -> dict | None:
    for folder in _FONT_DIRS:
        paths = {style: folder / name for style, name in _FONT_FILES.items()}
        if all(p.exists() for p in paths.values()):
            return paths
    return None


def _ascii(text: str) -> str:
    return "".join(_ASCII.get(ch, ch) for ch in text)


# ----------------------------------------------------------------------------- PDF

MARGIN = 14.0
FOOTER_SPACE = 22.0
INK = (33, 37, 41)
MUTED = (96, 104, 112)
ACCENT = (31, 78, 121)
WARN_FILL, WARN_EDGE = (253, 236, 234), (192, 57, 43)
NOTE_FILL, NOTE_EDGE = (255, 244, 219), (204, 136, 0)


def _handout_class():
    from fpdf import FPDF

    class Handout(FPDF):
        def __init__(self, content: ReportContent):
            super().__init__(orientation="P", unit="mm", format="A4")
            self.content = content
            fonts = _font_paths()
            self.unicode = fonts is not None
            if fonts:
                self.add_font("body", "", str(fonts["regular"]))
                self.add_font("body", "B", str(fonts["bold"]))
                self.add_font("body", "I", str(fonts["italic"]))
                self.add_font("mono", "", str(fonts["mono"]))
                self.sans, self.mono = "body", "mono"
            else:
                self.sans, self.mono = "helvetica", "courier"
            self.set_margins(MARGIN, MARGIN, MARGIN)
            self.set_auto_page_break(True, margin=FOOTER_SPACE)
            self.c_margin = 0.8
            self.set_title(content.title)
            self.set_subject("Explanation report")
            self.set_creator("medxai core.report")
            if isinstance(content.created, datetime):
                self.set_creation_date(content.created)
            self.set_text_color(*INK)

        def normalize_text(self, text: str) -> str:
            return super().normalize_text(text if self.unicode else _ascii(text))

        def font(self, size: float, style: str = "", family: str | None = None, colour=INK):
            self.set_font(family or self.sans, style, size)
            self.set_text_color(*colour)

        def header(self):
            if self.page_no() == 1:
                return
            self.font(8, colour=MUTED)
            self.set_xy(MARGIN, 8)
            self.cell(self.epw / 2, 4, self.content.title)
            self.cell(self.epw / 2, 4, self.content.disclaimer, align="R")
            self.set_draw_color(200, 204, 208)
            self.set_line_width(0.2)
            self.line(MARGIN, 13, self.w - MARGIN, 13)
            self.set_y(17)

        def footer(self):
            c = self.content
            top = self.h - FOOTER_SPACE + 6
            self.set_draw_color(200, 204, 208)
            self.set_line_width(0.2)
            self.line(MARGIN, top, self.w - MARGIN, top)
            self.set_xy(MARGIN, top + 1.5)
            self.font(6.5, colour=MUTED)
            self.cell(24, 3.4, "Model SHA-256")
            self.font(6.5, family=self.mono, colour=MUTED)
            self.cell(self.epw - 24 - 22, 3.4, c.model_sha256)
            self.font(7, "B", colour=MUTED)
            self.cell(22, 3.4, f"Page {self.page_no()} of {{nb}}", align="R", new_x="LMARGIN", new_y="NEXT")
            self.font(6.5, colour=MUTED)
            versions = ", ".join(f"{k} {v}" for k, v in c.versions.items()) or "not recorded"
            self.multi_cell(self.epw, 3.2, f"Created {c.date_text}.  Libraries: {versions}.  {c.disclaimer}",
                            align="L", new_x="LMARGIN", new_y="NEXT")

        def heading(self, text: str, gap: float = 4.0, needs: float = 12.0):
            """A section title, moved to the next page with its section when less than ``needs`` mm follow."""
            if self.get_y() + gap + 8 + needs > self.page_break_trigger:
                self.add_page()
                gap = 0.0
            self.set_y(self.get_y() + gap)
            self.font(11.5, "B", colour=ACCENT)
            self.cell(self.epw, 6, text, new_x="LMARGIN", new_y="NEXT")
            self.set_draw_color(*ACCENT)
            self.set_line_width(0.3)
            self.line(MARGIN, self.get_y(), self.w - MARGIN, self.get_y())
            self.set_y(self.get_y() + 2)

        def paragraph(self, text: str, size: float = 9, style: str = "", colour=INK, height: float = 4.4):
            self.font(size, style, colour=colour)
            self.multi_cell(self.epw, height, text, align="L", new_x="LMARGIN", new_y="NEXT")

        def boxed(self, text: str, fill, edge, *, size: float = 9, bold_first: str = "", line_width=0.5):
            """Text in a coloured box across the page: the disclaimer, identifiers, warnings."""
            self.font(size)
            pad = 2.2
            body = f"{bold_first} {text}".strip() if bold_first else text
            lines = self.multi_cell(self.epw - 2 * pad, 4.6, body, dry_run=True, output="LINES")
            height = len(lines) * 4.6 + 2 * pad
            if self.get_y() + height > self.page_break_trigger:
                self.add_page()
            y = self.get_y()
            self.set_fill_color(*fill)
            self.set_draw_color(*edge)
            self.set_line_width(line_width)
            self.rect(MARGIN, y, self.epw, height, style="DF")
            # write() wraps at the page margins: move them inside the box while writing.
            self.set_left_margin(MARGIN + pad)
            self.set_right_margin(MARGIN + pad)
            self.set_xy(MARGIN + pad, y + pad)
            if bold_first:
                self.font(size, "B")
                self.write(4.6, bold_first + " ")
            self.font(size)
            self.write(4.6, text)
            self.set_left_margin(MARGIN)
            self.set_right_margin(MARGIN)
            self.set_xy(MARGIN, y + height)

    return Handout


def report_pdf(content: ReportContent) -> bytes:
    """The case as an A4 handout, in memory.

    Page 1: title, disclaimer box, identifiers (only when given), the scan as displayed and
    its overlay side by side with a colour bar and a mm scale bar, the probabilities with the
    threshold, the method. Page 2: the methods side by side, the trust scores and the
    expert-outline scores as tables with one sentence each, the model card summary. Every
    page's footer: model SHA-256, page number, date and library versions.

    Parameters
    ----------
    content : ReportContent

    Returns
    -------
    bytes
        The PDF file; nothing is written to disk.

    Examples
    --------
    >>> pdf = report_pdf(content)  # doctest: +SKIP
    >>> open("report.pdf", "wb").write(pdf)  # doctest: +SKIP
    """
    if not isinstance(content, ReportContent):
        raise ReportError("A report needs a ReportContent record.")
    pdf = _handout_class()(content)
    pdf.add_page()
    _pdf_title(pdf, content)
    _pdf_images(pdf, content)
    _pdf_prediction(pdf, content)
    _pdf_method(pdf, content)
    _pdf_methods(pdf, content)
    _pdf_scores(pdf, "How much to trust this map", content.trust)
    _pdf_scores(pdf, "Against the expert outline", content.outline_scores)
    _pdf_card(pdf, content)
    return bytes(pdf.output())


def _pdf_title(pdf, c: ReportContent) -> None:
    pdf.font(17, "B", colour=ACCENT)
    pdf.multi_cell(pdf.epw, 7.5, c.title, align="L", new_x="LMARGIN", new_y="NEXT")
    pdf.font(9, colour=MUTED)
    pdf.cell(pdf.epw / 2, 5, "Explanation report")
    pdf.cell(pdf.epw / 2, 5, c.date_text, align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_y(pdf.get_y() + 2)
    pdf.boxed(DISCLAIMER_DETAIL, WARN_FILL, WARN_EDGE, size=9.5, bold_first=c.disclaimer, line_width=0.6)
    if c.identifiers:
        pdf.set_y(pdf.get_y() + 2)
        shown = "; ".join(f"{k}: {v}" for k, v in c.identifiers.items())
        pdf.boxed(shown, NOTE_FILL, NOTE_EDGE, size=9,
                  bold_first="Patient identifiers, printed at the user's request. Handle this page as confidential.")


def _pdf_images(pdf, c: ReportContent) -> None:
    """The scan and the overlay side by side, same size and aspect, colour bar beside the overlay."""
    pdf.heading("The scan and what the model looked at")
    bar_w, bar_labels, gap = 4.0, 15.0, 5.0
    box_w = (pdf.epw - gap - 2.0 - bar_w - bar_labels) / 2
    room = pdf.page_break_trigger - pdf.get_y() - 75  # leave room for the probabilities below
    box_h = float(np.clip(room, 55.0, 105.0))
    aspect = _display_aspect(c.scan_image.shape, c.spacing)
    w, h = _fit(aspect, box_w, box_h)
    top = pdf.get_y() + 1
    px = _print_pixels(w, h)
    left_x = MARGIN + (box_w - w) / 2
    right_x = MARGIN + box_w + gap + (box_w - w) / 2
    pdf.image(_resized(c.scan_image, *px), x=left_x, y=top, w=w, h=h)
    pdf.image(_resized(c.overlay, *px), x=right_x, y=top, w=w, h=h)
    pdf.set_draw_color(150, 150, 150)
    pdf.set_line_width(0.15)
    pdf.rect(left_x, top, w, h)
    pdf.rect(right_x, top, w, h)
    _pdf_colour_bar(pdf, c, x=right_x + w + 2.0, y=top, height=h, width=bar_w)

    y = top + h + 1.5
    if c.spacing:
        y = _pdf_scale_bar(pdf, c, x=left_x, y=y, printed_w=w)
    captions_y = y
    pdf.set_xy(MARGIN, captions_y)
    pdf.font(8.5, "B")
    pdf.multi_cell(box_w, 4, "Scan as displayed", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.font(8, colour=MUTED)
    pdf.set_x(MARGIN)
    spacing = (f"; pixel spacing {c.spacing[0]:.3g} x {c.spacing[1]:.3g} mm" if c.spacing
               else "; pixel spacing unknown, no mm scale")
    pdf.multi_cell(box_w, 3.8, f"{c.window_text}{spacing}.", align="C", new_x="LMARGIN", new_y="NEXT")
    left_end = pdf.get_y()
    pdf.set_xy(MARGIN + box_w + gap, captions_y)
    pdf.font(8.5, "B")
    pdf.multi_cell(box_w, 4, f"{c.method} overlay", align="C", new_x="LEFT", new_y="NEXT")
    pdf.font(8, colour=MUTED)
    pdf.set_x(MARGIN + box_w + gap)
    pdf.multi_cell(box_w, 3.8, f"Explaining {c.class_names[c.explained]}"
                   + (f", layer {c.layer}" if c.layer else "") + f"; colour map {c.colormap_name}.",
                   align="C", new_x="LEFT", new_y="NEXT")
    pdf.set_xy(MARGIN, max(left_end, pdf.get_y()) + 1)


def _pdf_colour_bar(pdf, c: ReportContent, *, x: float, y: float, height: float, width: float) -> None:
    from PIL import Image

    column = c.colormap_lut[::-1][:, None, :]  # high saliency at the top
    bar = Image.fromarray(np.ascontiguousarray(np.repeat(column, 4, axis=1)), mode="RGB")
    pdf.image(bar, x=x, y=y, w=width, h=height)
    pdf.set_draw_color(120, 120, 120)
    pdf.set_line_width(0.15)
    pdf.rect(x, y, width, height)
    pdf.font(7, colour=INK)
    for value, label in ((1.0, "1 high"), (0.5, "0.5"), (0.0, "0 low")):
        ty = y + (1 - value) * height
        pdf.line(x + width, ty, x + width + 1.0, ty)
        pdf.set_xy(x + width + 1.3, ty - 1.6)
        pdf.cell(14, 3.2, label)
    pdf.font(6.5, colour=MUTED)
    with pdf.rotation(90, x + width + 9.5, y + height / 2):
        pdf.set_xy(x + width + 9.5 - height / 2, y + height / 2 - 1.6)
        pdf.cell(height, 3.2, "saliency", align="C")


def _pdf_scale_bar(pdf, c: ReportContent, *, x: float, y: float, printed_w: float) -> float:
    """A bar of a round number of mm under the scan; returns the y below it."""
    physical_w = c.scan_image.shape[1] * c.spacing[1]
    length = _nice_length(physical_w)
    bar = printed_w * length / physical_w
    pdf.set_fill_color(*INK)
    pdf.rect(x, y + 1.0, bar, 1.1, style="F")
    pdf.set_draw_color(*INK)
    pdf.set_line_width(0.25)
    pdf.line(x, y + 0.2, x, y + 2.9)
    pdf.line(x + bar, y + 0.2, x + bar, y + 2.9)
    pdf.font(7.5)
    pdf.set_xy(x + bar + 1.5, y)
    pdf.cell(20, 3.2, f"{length:g} mm")
    return y + 4.5


def _pdf_prediction(pdf, c: ReportContent) -> None:
    pdf.heading("Prediction", needs=6 * len(c.class_names) + 10)
    label_w, track_w, value_w = 42.0, 95.0, 18.0
    row_h = 5.6
    positive = len(c.class_names) - 1
    for i, (name, p) in enumerate(zip(c.class_names, c.probabilities)):
        if pdf.get_y() + row_h > pdf.page_break_trigger:
            pdf.add_page()
        y = pdf.get_y()
        chosen = i == c.predicted_index
        size = 9.0
        pdf.font(size, "B" if chosen else "")
        while size > 6 and pdf.get_string_width(name) > label_w - 3:  # a long class name: smaller, not overlapping
            size -= 0.5
            pdf.font(size, "B" if chosen else "")
        pdf.set_xy(MARGIN, y)
        pdf.cell(label_w - 2, row_h, name, align="R")
        track_x = MARGIN + label_w
        pdf.set_fill_color(233, 236, 239)
        pdf.rect(track_x, y + 1.2, track_w, row_h - 2.4, style="F")
        pdf.set_fill_color(*(ACCENT if chosen else (140, 160, 180)))
        if p > 0:
            pdf.rect(track_x, y + 1.2, track_w * p, row_h - 2.4, style="F")
        if c.threshold is not None and i == positive:
            tx = track_x + track_w * c.threshold
            pdf.set_draw_color(*WARN_EDGE)
            pdf.set_line_width(0.5)
            pdf.line(tx, y + 0.2, tx, y + row_h - 0.2)
        pdf.set_xy(track_x + track_w + 2, y)
        pdf.font(9, "B" if chosen else "")
        pdf.cell(value_w, row_h, _percent(p))
        if chosen:
            pdf.font(8, colour=ACCENT)
            pdf.cell(pdf.epw - label_w - track_w - value_w - 2, row_h, "predicted")
        pdf.set_xy(MARGIN, y + row_h)
    pdf.set_y(pdf.get_y() + 1.5)
    pdf.set_x(MARGIN + label_w)
    predicted = c.class_names[c.predicted_index]
    if c.threshold is not None:
        rule = (f"Decision: {c.class_names[positive]} when P({c.class_names[positive]}) ≥ {c.threshold:.2f} "
                f"(red line); here P = {c.probabilities[positive]:.3f}, so {predicted}.")
    else:
        rule = f"Decision: the most probable class, {predicted}."
    text = rule + (f" True label: {c.true_label}." if c.true_label else "")
    pdf.font(8.5)
    pdf.multi_cell(pdf.epw - label_w, 4.2, text, align="L", new_x="LMARGIN", new_y="NEXT")
    if c.probability_note:
        pdf.set_x(MARGIN + label_w)
        pdf.font(8, colour=MUTED)
        pdf.multi_cell(pdf.epw - label_w, 3.9, c.probability_note, align="L", new_x="LMARGIN", new_y="NEXT")
    for note in c.notes:
        pdf.set_y(pdf.get_y() + 1.5)
        pdf.boxed(note, NOTE_FILL, NOTE_EDGE, size=8.5, bold_first="Note:", line_width=0.4)


def _pdf_method(pdf, c: ReportContent) -> None:
    pdf.heading("The explanation", needs=15)
    where = f" on layer {c.layer}" if c.layer else ""
    p = c.probabilities[c.explained]
    pdf.paragraph(f"{c.method}{where}, explaining {c.class_names[c.explained]} (probability {_percent(p)}). "
                  + (c.method_note + " " if c.method_note else "")
                  + "Warm colours mark the pixels that raised this class's score most; the colour bar runs from "
                  "0 (low saliency) to 1 (the highest in this map). The map is scaled per image, so its colours "
                  "cannot be compared between scans.", size=8.8)


def _pdf_methods(pdf, c: ReportContent) -> None:
    if not c.methods:
        return
    per_row, gap = min(len(c.methods), 5), 3.0
    cell_w = (pdf.epw - gap * (per_row - 1)) / per_row
    aspect = _display_aspect(c.overlay.shape, c.spacing)
    w, h = _fit(aspect, cell_w, 48.0)
    pdf.heading("The methods side by side", needs=h + 24)
    framed = " The framed map is the one shown above." if any(m[0] == c.method for m in c.methods) else ""
    pdf.paragraph("The same scan, class and layer for every method. Maps that agree on a region are reassuring; "
                  "maps that disagree show how much the picture depends on the method." + framed,
                  size=8.5, colour=MUTED)
    for start in range(0, len(c.methods), per_row):
        row = c.methods[start:start + per_row]
        if pdf.get_y() + h + 16 > pdf.page_break_trigger:
            pdf.add_page()
        top = pdf.get_y() + 1.5
        bottom = top + h
        for j, (name, picture, score) in enumerate(row):
            x = MARGIN + j * (cell_w + gap)
            ix = x + (cell_w - w) / 2
            pdf.image(_resized(picture, *_print_pixels(w, h)), x=ix, y=top, w=w, h=h)
            main = name == c.method
            pdf.set_draw_color(*(ACCENT if main else (150, 150, 150)))
            pdf.set_line_width(0.6 if main else 0.15)
            pdf.rect(ix, top, w, h)
            pdf.set_xy(x, top + h + 1)
            pdf.font(8.5, "B", colour=ACCENT if main else INK)
            pdf.multi_cell(cell_w, 4, name, align="C", new_x="LEFT", new_y="NEXT")
            if score:
                pdf.set_x(x)
                pdf.font(7.5, colour=MUTED)
                pdf.multi_cell(cell_w, 3.4, score, align="C", new_x="LEFT", new_y="NEXT")
            bottom = max(bottom, pdf.get_y())
        pdf.set_xy(MARGIN, bottom + 2)


def _pdf_scores(pdf, title: str, rows: tuple) -> None:
    if not rows:
        return
    from fpdf.fonts import FontFace

    pdf.heading(title, needs=30)
    pdf.font(8.5)
    pdf.set_fill_color(255, 255, 255)  # the table fills its rows with the current colour
    pdf.set_draw_color(170, 176, 182)
    pdf.set_line_width(0.2)
    heading = FontFace(emphasis="BOLD", color=ACCENT, fill_color=(232, 238, 245))
    with pdf.table(col_widths=(19, 31, 50), text_align=("LEFT", "LEFT", "LEFT"), line_height=4.3,
                   padding=(1.2, 1.6), headings_style=heading, borders_layout="HORIZONTAL_LINES",
                   width=pdf.epw, v_align="TOP") as table:
        head = table.row()
        for text in ("Check", "Result", "How to read it"):
            head.cell(text)
        for label, value, reading in rows:
            row = table.row()
            row.cell(label, style=FontFace(emphasis="BOLD"))
            row.cell(value)
            row.cell(reading)
    pdf.set_y(pdf.get_y() + 1)


def _pdf_card(pdf, c: ReportContent) -> None:
    if not (c.data_source or c.intended_use or c.limits):
        return
    pdf.heading("The model (from its model card)", needs=25)
    for label, text in (("Data", c.data_source), ("Intended use", c.intended_use)):
        if text:
            pdf.font(8.8, "B")
            pdf.write(4.4, label + ": ")
            pdf.font(8.8)
            pdf.write(4.4, text)
            pdf.ln(4.4)
            pdf.set_y(pdf.get_y() + 1.2)
    if c.limits:
        pdf.font(8.8, "B")
        pdf.cell(pdf.epw, 4.6, "Limits", new_x="LMARGIN", new_y="NEXT")
        for limit in c.limits:
            pdf.font(8.8)
            y = pdf.get_y()
            pdf.set_xy(MARGIN + 1, y)
            pdf.cell(4, 4.4, "•")
            pdf.set_xy(MARGIN + 5, y)
            pdf.multi_cell(pdf.epw - 5, 4.4, limit, align="L", new_x="LMARGIN", new_y="NEXT")
            pdf.set_y(pdf.get_y() + 0.6)


# ----------------------------------------------------------------------------- PNG drawing (Pillow)

@lru_cache(maxsize=64)
def _pil_font(size: int, style: str = "regular"):
    from PIL import ImageFont

    fonts = _font_paths()
    if fonts:
        return ImageFont.truetype(str(fonts[style]), size)
    return ImageFont.load_default(size=size)


def _wrap(draw, text: str, font, width: float) -> list[str]:
    """Greedy word wrap to a pixel width; a word longer than the width is cut by characters."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            trial = f"{line} {word}".strip()
            if draw.textlength(trial, font=font) <= width or not line:
                line = trial
            else:
                lines.append(line)
                line = word
            while draw.textlength(line, font=font) > width and len(line) > 1:
                cut = len(line)
                while cut > 1 and draw.textlength(line[:cut], font=font) > width:
                    cut -= 1
                lines.append(line[:cut])
                line = line[cut:]
        lines.append(line)
    return lines


def _text_block(draw, xy, text: str, font, width: float, *, fill=INK, spacing: float = 1.25,
                max_y: float | None = None) -> float:
    """Draw wrapped text; returns the y below it. Text that would pass ``max_y`` ends in an ellipsis."""
    x, y = xy
    step = font.size * spacing
    lines = _wrap(draw, text, font, width)
    if max_y is not None:
        fits = max(1, int((max_y - y) // step))
        if len(lines) > fits:
            lines = lines[:fits]
            last = lines[-1]
            while last and draw.textlength(last + "…", font=font) > width:
                last = last[:-1]
            lines[-1] = last + "…"
    for line in lines:
        draw.text((x, y), line, font=font, fill=fill)
        y += step
    return y


def _colour_bar_image(lut: np.ndarray, length: int, thickness: int, *, vertical: bool):
    from PIL import Image

    if vertical:
        strip = np.repeat(lut[::-1][:, None, :], max(1, thickness), axis=1)
        return Image.fromarray(np.ascontiguousarray(strip), "RGB").resize((thickness, length), Image.Resampling.BILINEAR)
    strip = np.repeat(lut[None, :, :], max(1, thickness), axis=0)
    return Image.fromarray(np.ascontiguousarray(strip), "RGB").resize((length, thickness), Image.Resampling.BILINEAR)


SLIDE_W, SLIDE_H, SLIDE_PAD = 1920, 1080, 40
SLIDE_LEFT = 1250  # the images and methods; the right column holds the text


def report_png(content: ReportContent) -> bytes:
    """The case as one 1920 x 1080 PNG figure for a slide, in memory.

    Left: the scan and the overlay side by side (same size, the scan's aspect ratio) with a
    colour bar, and the methods in a row below. Right: the prediction with its threshold,
    the method and layer, the key trust scores. The disclaimer runs under the title; the
    date, model SHA-256 prefix and the main library versions along the bottom.

    Parameters
    ----------
    content : ReportContent

    Returns
    -------
    bytes
        A PNG file (no metadata chunks).
    """
    from PIL import Image, ImageDraw

    if not isinstance(content, ReportContent):
        raise ReportError("A report needs a ReportContent record.")
    canvas = Image.new("RGB", (SLIDE_W, SLIDE_H), "white")
    draw = ImageDraw.Draw(canvas)
    top = _slide_header(draw, content)
    below = _slide_images(canvas, draw, content, top)
    if content.methods:
        _slide_methods(canvas, draw, content, below + 24)
    _slide_side(draw, content, top)
    _slide_footer(draw, content)
    return _png(canvas)


def _slide_header(draw, c: ReportContent) -> int:
    """Title, date, disclaimer box (and the identifiers when given); returns the y below."""
    pad, width = SLIDE_PAD, SLIDE_W
    date_font = _pil_font(19)
    room = width - 2 * pad - draw.textlength(c.date_text, font=date_font) - 30
    size = 40
    while size > 26 and draw.textlength(c.title, font=_pil_font(size, "bold")) > room:
        size -= 2
    title = _wrap(draw, c.title, _pil_font(size, "bold"), room)[0]
    if title != c.title:
        while title and draw.textlength(title + "…", font=_pil_font(size, "bold")) > room:
            title = title[:-1]
        title += "…"
    draw.text((pad, 66), title, font=_pil_font(size, "bold"), fill=ACCENT, anchor="ls")
    draw.text((width - pad, 40), c.date_text, font=date_font, fill=MUTED, anchor="ra")
    y = 86
    draw.rectangle((pad, y, width - pad, y + 46), fill=WARN_FILL, outline=WARN_EDGE, width=3)
    draw.text((pad + 16, y + 23), c.disclaimer, font=_pil_font(24, "bold"), fill=WARN_EDGE, anchor="lm")
    y += 46
    if c.identifiers:
        shown = "Patient identifiers, at the user's request: " + "; ".join(f"{k}: {v}" for k, v in c.identifiers.items())
        draw.rectangle((pad, y + 8, width - pad, y + 46), fill=NOTE_FILL, outline=NOTE_EDGE, width=2)
        draw.text((pad + 16, y + 27), shown, font=_pil_font(20), fill=INK, anchor="lm")
        y += 46
    return y + 24


def _slide_images(canvas, draw, c: ReportContent, top: int) -> int:
    """Scan and overlay side by side with a colour bar and their captions; returns the y below."""
    pad, bar_w, bar_room, gap = SLIDE_PAD, 26, 86, 24
    small, bold = _pil_font(19), _pil_font(24, "bold")
    methods_room = 300 if c.methods else 0  # thumbnails about 200 px high
    box_w = (SLIDE_LEFT - pad - gap - bar_room) / 2
    box_h = SLIDE_H - top - 60 - 110 - methods_room
    w, h = (int(round(v)) for v in _fit(_display_aspect(c.scan_image.shape, c.spacing), box_w, box_h))
    xs = (pad + int((box_w - w) / 2), pad + int(box_w + gap + (box_w - w) / 2))
    canvas.paste(_resized(c.scan_image, w, h).convert("RGB"), (xs[0], top))
    canvas.paste(_resized(c.overlay, w, h), (xs[1], top))
    for x in xs:
        draw.rectangle((x - 1, top - 1, x + w, top + h), outline=(150, 150, 150))
    bx = xs[1] + w + 14
    canvas.paste(_colour_bar_image(c.colormap_lut, h, bar_w, vertical=True), (bx, top))
    draw.rectangle((bx - 1, top - 1, bx + bar_w, top + h), outline=(120, 120, 120))
    for value, label in ((1.0, "1 high"), (0.5, "0.5"), (0.0, "0 low")):
        ty = top + (1 - value) * (h - 1)
        draw.line((bx + bar_w, ty, bx + bar_w + 6, ty), fill=INK, width=2)
        draw.text((bx + bar_w + 9, ty), label, font=small, fill=INK, anchor="lm")
    y = top + h + 10
    if c.spacing:
        physical_w = c.scan_image.shape[1] * c.spacing[1]
        length = _nice_length(physical_w)
        bar = w * length / physical_w
        draw.rectangle((xs[0], y + 4, xs[0] + bar, y + 10), fill=INK)
        draw.text((xs[0] + bar + 10, y + 7), f"{length:g} mm", font=small, fill=INK, anchor="lm")
        y += 22
    bottom = y
    layer = f", layer {c.layer}" if c.layer else ""
    for x, head, text in ((xs[0], "Scan as displayed", c.window_text),
                          (xs[1], f"{c.method} overlay", f"explaining {c.class_names[c.explained]}{layer}")):
        draw.text((x + w / 2, y), head, font=bold, fill=INK, anchor="ma")
        lines = _wrap(draw, text, small, box_w)[:2]
        for k, line in enumerate(lines):
            draw.text((x + w / 2, y + 32 + 24 * k), line, font=small, fill=MUTED, anchor="ma")
        bottom = max(bottom, y + 32 + 24 * len(lines))
    return bottom


def _slide_methods(canvas, draw, c: ReportContent, top: int) -> None:
    pad, gap, small = SLIDE_PAD, 16, _pil_font(19)
    draw.text((pad, top), "Methods side by side", font=_pil_font(24, "bold"), fill=ACCENT)
    n = len(c.methods)
    cell = (SLIDE_LEFT - pad - gap * (n - 1)) / n
    tw, th = (int(v) for v in _fit(_display_aspect(c.overlay.shape, c.spacing), cell,
                                    max(40, min(300, SLIDE_H - 60 - top - 90))))
    for j, (name, picture, score) in enumerate(c.methods):
        x0 = int(pad + j * (cell + gap))
        ix = x0 + int((cell - tw) / 2)
        canvas.paste(_resized(picture, tw, th), (ix, top + 34))
        main = name == c.method
        draw.rectangle((ix - 2, top + 32, ix + tw + 1, top + 35 + th),
                       outline=ACCENT if main else (160, 160, 160), width=3 if main else 1)
        label = name if not score else f"{name}: {score}"
        for k, line in enumerate(_wrap(draw, label, small, cell)[:2]):
            draw.text((x0 + cell / 2, top + 40 + th + 22 * k), line, font=small,
                      fill=ACCENT if main else INK, anchor="ma")


def _slide_side(draw, c: ReportContent, top: int) -> None:
    """The right column: probabilities with the threshold, the method, the key scores."""
    body, small, bold, small_bold = _pil_font(24), _pil_font(19), _pil_font(24, "bold"), _pil_font(19, "bold")
    rx = SLIDE_LEFT + 30
    rw = SLIDE_W - rx - SLIDE_PAD
    bottom_limit = SLIDE_H - 70
    y = top
    draw.text((rx, y), "Prediction", font=bold, fill=ACCENT)
    y += 40
    label_w = min(230, max(draw.textlength(n, font=bold) for n in c.class_names) + 12)
    track_w = rw - label_w - 100
    positive = len(c.class_names) - 1
    for i, (name, p) in enumerate(zip(c.class_names, c.probabilities)):
        chosen = i == c.predicted_index
        font = bold if chosen else body
        shown = name
        while draw.textlength(shown, font=font) > label_w - 10 and len(shown) > 2:
            shown = shown[:-2] + "…"
        draw.text((rx + label_w - 10, y + 15), shown, font=font, fill=INK, anchor="rm")
        tx = rx + label_w
        draw.rectangle((tx, y + 4, tx + track_w, y + 26), fill=(233, 236, 239))
        if p > 0:
            draw.rectangle((tx, y + 4, tx + track_w * p, y + 26), fill=ACCENT if chosen else (140, 160, 180))
        if c.threshold is not None and i == positive:
            lx = tx + track_w * c.threshold
            draw.line((lx, y, lx, y + 30), fill=WARN_EDGE, width=3)
        draw.text((tx + track_w + 10, y + 15), _percent(p), font=font, fill=INK, anchor="lm")
        y += 38
    predicted = c.class_names[c.predicted_index]
    if c.threshold is not None:
        side = "≥" if c.probabilities[positive] >= c.threshold else "<"
        rule = f"Predicted {predicted}: P({c.class_names[positive]}) {side} threshold {c.threshold:.2f} (red line)."
    else:
        rule = f"Predicted {predicted} (most probable class)."
    if c.true_label:
        rule += f" True label: {c.true_label}."
    y = _text_block(draw, (rx, y + 4), rule, small, rw, max_y=bottom_limit) + 6
    for note in c.notes:
        y = _text_block(draw, (rx, y), "Note: " + note, small, rw, fill=NOTE_EDGE, max_y=bottom_limit) + 4
    y += 14
    if y + 80 > bottom_limit:
        return
    draw.text((rx, y), "Explanation", font=bold, fill=ACCENT)
    y += 38
    layer = f", layer {c.layer}" if c.layer else ""
    y = _text_block(draw, (rx, y), f"{c.method}{layer}, class {c.class_names[c.explained]}", body, rw,
                    max_y=bottom_limit) + 18
    scores = list(c.trust) + list(c.outline_scores)
    if not scores or y + 80 > bottom_limit:
        return
    draw.text((rx, y), "How much to trust this map", font=bold, fill=ACCENT)
    y += 38
    for label, value, _reading in scores:
        if y + 30 > bottom_limit:
            break
        draw.text((rx, y), label + ":", font=small_bold, fill=INK)
        value_x = rx + draw.textlength(label + ": ", font=small_bold)
        if value_x + 120 > rx + rw:  # a long label: the value goes on the next line
            y += 25
            value_x = rx + 16
        y = _text_block(draw, (value_x, y), value, small, rx + rw - value_x, max_y=bottom_limit) + 6


def _slide_footer(draw, c: ReportContent) -> None:
    pad, height = SLIDE_PAD, SLIDE_H
    versions = ", ".join(f"{k} {v}" for k, v in list(c.versions.items())[:5])
    draw.line((pad, height - 44, SLIDE_W - pad, height - 44), fill=(200, 204, 208), width=1)
    draw.text((pad, height - 34), f"Model SHA-256 {c.model_sha256[:16]}…   {versions}", font=_pil_font(16), fill=MUTED)
    draw.text((SLIDE_W - pad, height - 34), c.disclaimer, font=_pil_font(16, "bold"), fill=WARN_EDGE, anchor="ra")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


# ----------------------------------------------------------------------------- legend strip

def legend_strip(overlay_rgb: np.ndarray, *, model: str, class_name: str, probability: float, method: str,
                 layer: str | None, date, colormap_lut: np.ndarray) -> np.ndarray:
    """The overlay with a strip below it saying what it shows: for a PNG download.

    The overlay's pixels are kept as they are (rows ``[:rows]`` of the result equal the
    input); the strip below carries the model, the class and its probability, the method and
    layer, the date, "Research and teaching tool — not a diagnostic device", and a colour bar
    from 0 (low) to 1 (high saliency). Text wraps to the overlay's width, so the strip of a
    narrow overlay is taller. No patient identifier is ever part of it.

    Parameters
    ----------
    overlay_rgb : ndarray, uint8, (rows, cols, 3)
    model, class_name, method : str
    probability : float
        The probability of ``class_name``, in [0, 1].
    layer : str or None
    date : datetime or str
    colormap_lut : ndarray, uint8, (256, 3)

    Returns
    -------
    ndarray, uint8, (rows + strip, cols, 3)

    Examples
    --------
    >>> lut = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    >>> out = legend_strip(np.zeros((300, 400, 3), np.uint8), model="Chest X-ray", class_name="PNEUMONIA",
    ...                    probability=0.93, method="Grad-CAM", layer="last_conv", date="2026-01-01",
    ...                    colormap_lut=lut)
    >>> out.shape[0] > 300, out.shape[1]
    (True, 400)
    """
    from PIL import Image, ImageDraw

    overlay_rgb = _rgb(overlay_rgb, "The overlay")
    lut = np.asarray(colormap_lut)
    if lut.shape != (256, 3) or lut.dtype != np.uint8:
        raise ReportError(f"The colour map must be a (256, 3) uint8 lookup table, not shape {lut.shape}.")
    rows, cols = overlay_rgb.shape[:2]
    size = int(np.clip(cols / 48, 11, 26))
    font, bold = _pil_font(size), _pil_font(size, "bold")
    pad = max(4, size // 2)
    scratch = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = cols - 2 * pad
    where = f", layer {layer}" if layer else ""
    lines = [
        (bold, INK, f"{class_name} {_percent(float(probability))} · {model}"),
        (font, INK, f"{method}{where} · {_date_text(date)}"),
        (bold, WARN_EDGE, DISCLAIMER),
    ]
    wrapped = [(f, colour, line) for f, colour, text in lines for line in _wrap(scratch, text, f, text_w)]
    step = int(round(size * 1.3))
    bar_w = int(min(cols - 2 * pad, max(60, cols * 0.35)))
    bar_h = max(6, size // 2)
    labels_h = size + 2
    height = pad + len(wrapped) * step + pad // 2 + bar_h + labels_h + pad
    strip = Image.new("RGB", (cols, height), (250, 250, 250))
    draw = ImageDraw.Draw(strip)
    draw.line((0, 0, cols, 0), fill=(180, 180, 180))
    y = pad
    for f, colour, line in wrapped:
        draw.text((pad, y), line, font=f, fill=colour)
        y += step
    y += pad // 2
    strip.paste(_colour_bar_image(lut, bar_w, bar_h, vertical=False), (pad, y))
    draw.rectangle((pad - 1, y - 1, pad + bar_w, y + bar_h), outline=(120, 120, 120))
    small = _pil_font(max(10, size - 2))
    low, high = ("0 low", "1 high")
    if draw.textlength(low + high, font=small) + 8 > bar_w:
        low, high = "0", "1"
    draw.text((pad, y + bar_h + 2), low, font=small, fill=MUTED)
    draw.text((pad + bar_w, y + bar_h + 2), high, font=small, fill=MUTED, anchor="ra")
    middle = "saliency"
    if draw.textlength(middle + low + high, font=small) + 24 < bar_w:
        draw.text((pad + bar_w / 2, y + bar_h + 2), middle, font=small, fill=MUTED, anchor="ma")
    return np.concatenate([overlay_rgb, np.asarray(strip, np.uint8)], axis=0)
