"""Figures the pages share: a zoomable image in its own geometry with a mm scale bar, probabilities."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from core.render import png_bytes
from core.runs import Run, centre_prior


#: Longest side, in pixels, of a picture sent to the browser: enough for a screen, a quarter of a 2k radiograph.
DISPLAY_SIDE = 1024


@dataclass(frozen=True)
class Picture:
    """A picture encoded once for the browser: its PNG bytes and its (rows, cols)."""

    png: bytes
    shape: tuple[int, int]

    @classmethod
    def of(cls, image: np.ndarray) -> "Picture":
        """Grey [0, 1], RGB or RGBA uint8 (see :func:`core.render.png_bytes`)."""
        return cls(png_bytes(image), tuple(int(n) for n in image.shape[:2]))

    @property
    def source(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")


def figure_height(shape: tuple[int, int], spacing=None, *, width: int = 900, low: int = 300,
                  high: int = 720) -> int:
    """A figure height that fits the picture's aspect ratio in a column about ``width`` pixels wide,
    so a landscape image has no large empty band above and below it."""
    aspect = shape[0] * (spacing[0] / spacing[1] if spacing else 1.0) / shape[1]
    return int(min(high, max(low, width * aspect)))


def image_figure(picture: np.ndarray | Picture, full_shape: tuple[int, int], *,
                 spacing: tuple[float, float] | None = None, height: int | None = None, title: str | None = None,
                 colormap: str | None = None, bar_space: bool = False,
                 layers: tuple[tuple[Picture, float], ...] = ()) -> go.Figure:
    """A zoomable image drawn over the scan's own pixel coordinates, with a mm scale bar.

    ``picture`` is what the browser gets: grey [0, 1] or RGB uint8, at display size (see
    :func:`core.render.display_pixels`); ``full_shape`` is the scan's (rows, cols), so axes, zoom and
    the scale bar stay exact. The picture travels as a PNG (a data URI), a fraction of the size of a
    pixel array in JSON. With ``colormap`` a colour bar with its 0-1 saliency scale stands beside it, in a
    right margin; ``bar_space`` keeps the same margin without a bar, so a plain image beside an overlay is
    drawn at the same size.

    ``layers``: RGBA pictures of the picture's size drawn over it in turn, each with its opacity (a saliency
    map, :func:`core.render.heat_rgba`; an outline, :func:`core.render.outline_rgba`). The browser blends
    them, so a change of opacity sends a number, not a new picture; pass :class:`Picture` objects encoded
    once per scan and map, and nothing is encoded again.
    """
    rows, cols = int(full_shape[0]), int(full_shape[1])
    base = picture if isinstance(picture, Picture) else Picture.of(picture)
    step = -(-max(rows, cols) // max(base.shape))  # scan pixels per shown pixel (core.render.downsample)
    # Non-square pixels: stretch the y axis so the picture keeps its physical aspect ratio.
    aspect = (spacing[0] / spacing[1]) if spacing else 1.0
    fig = go.Figure(go.Image(source=base.source, x0=0, y0=0, dx=step, dy=step, hoverinfo="skip"))
    for layer, opacity in layers:
        if layer.shape != base.shape:
            raise ValueError(f"a layer of {layer.shape} over a picture of {base.shape}")
        fig.add_trace(go.Image(source=layer.source, x0=0, y0=0, dx=step, dy=step, opacity=float(opacity),
                               hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[0, cols], constrain="domain")
    fig.update_yaxes(visible=False, range=[rows, 0], scaleanchor="x", scaleratio=aspect, constrain="domain")
    if spacing:
        _scale_bar(fig, rows, cols, spacing)
    if colormap:
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False,
                                 marker=dict(colorscale=colormap, cmin=0, cmax=1, color=[0], showscale=True,
                                             colorbar=dict(title=dict(text="saliency", side="right"), thickness=14,
                                                           tickvals=[0, 0.5, 1], ticktext=["0 low", "0.5", "1 high"],
                                                           len=0.9, x=1.0, xanchor="left", xpad=6))))
    right = 80 if (colormap or bar_space) else 0
    fig.update_layout(height=height or figure_height((rows, cols), spacing), title=title, dragmode="pan",
                      margin=dict(l=0, r=right, t=30 if title else 0, b=0), plot_bgcolor="rgba(0,0,0,0)")
    return fig


def _scale_bar(fig: go.Figure, rows: int, cols: int, spacing: tuple[float, float]) -> None:
    width_mm = cols * spacing[1]
    nice = [1, 2, 5, 10, 20, 50, 100, 200, 500]
    length_mm = max([n for n in nice if n <= width_mm / 4] or [nice[0]])
    length_px = length_mm / spacing[1]
    x1, y = cols * 0.95, rows * 0.95
    fig.add_shape(type="line", x0=x1 - length_px, x1=x1, y0=y, y1=y, line=dict(color="yellow", width=4))
    fig.add_annotation(x=x1 - length_px / 2, y=y, text=f"{length_mm:g} mm", showarrow=False, yshift=14,
                       font=dict(color="yellow", size=13), bgcolor="rgba(0,0,0,0.6)")  # legible on bright tissue


def probability_chart(names, probs, predicted: int, threshold: float | None) -> go.Figure:
    colours = ["#e8744c" if i == predicted else "#4c9be8" for i in range(len(names))]
    fig = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=colours,
                           text=[f"{p:.1%}" for p in probs], textposition="auto"))
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="white",
                      annotation_text=f"threshold {threshold:.2f} for {names[1]}", annotation_position="top")
    fig.update_layout(height=80 + 45 * len(names), margin=dict(l=0, r=10, t=30, b=0),
                      xaxis=dict(range=[0, 1], tickformat=".0%", title="probability"), yaxis=dict(autorange="reversed"))
    return fig


def slice_strip(probabilities: np.ndarray, names: list[str], current: int, threshold: float | None,
                kind: str = "slice") -> go.Figure:
    """The model's probability of each class on every slice (or frame), the one in view marked."""
    n = len(probabilities)
    x = list(range(1, n + 1))
    fig = go.Figure()
    shown = [1] if len(names) == 2 else range(len(names))  # two classes: the positive one says it all
    for i in shown:
        fig.add_trace(go.Scatter(x=x, y=probabilities[:, i], mode="lines+markers", name=f"P({names[i]})"))
    if threshold is not None:
        fig.add_hline(y=threshold, line_dash="dash", line_color="grey",
                      annotation_text=f"threshold {threshold:.2f}", annotation_position="top left")
    fig.add_vline(x=current + 1, line_color="#e8744c", annotation_text=f"{kind} in view", annotation_position="top")
    fig.update_layout(height=220, margin=dict(l=0, r=10, t=20, b=0), legend=dict(orientation="h", y=-0.35),
                      xaxis=dict(title=kind, dtick=max(1, n // 20)), yaxis=dict(title="probability", range=[0, 1]))
    return fig


#: A chart's legend in one row under it, clear of the x-axis title.
LEGEND_BELOW = dict(orientation="h", yanchor="top", y=-0.3, x=0)

#: The other runs and the default model in :func:`evidence_figure`.
EVIDENCE_COLOURS = {False: "#4C9BE8", True: "#F28E2B"}


def evidence_figure(runs: list[Run], title: str | None = None) -> go.Figure | None:
    """Right answer against right place: validation AUC (binary) or accuracy across, Grad-CAM's pointing game on
    outlined images up, one dot per measured run (the default a star), the centre blob's score as a dotted line
    (:func:`core.runs.read_localisation`). None when no run was measured."""
    measured = [run for run in runs if run.localisation and run.finished]
    if not measured:
        return None
    binary = all(len(run.metrics.get("class_names", [])) == 2 for run in measured)
    score = "AUC" if binary else "accuracy"

    def x(run: Run):
        return run.metrics.get("auc") if binary else run.metrics.get("accuracy")

    fig = go.Figure()
    for default in (False, True):
        group = [run for run in measured if run.is_default == default and x(run) is not None]
        if not group:
            continue
        pointing = [run.localisation["pointing"] for run in group]
        fig.add_trace(go.Scatter(
            x=[x(run) for run in group], y=pointing, mode="markers", name="default model" if default else "other runs",
            marker=dict(symbol="star" if default else "circle", size=16 if default else 9,
                        color=EVIDENCE_COLOURS[default]),
            error_y=dict(type="data", symmetric=False,
                         array=[(run.localisation.get("high") or p) - p for run, p in zip(group, pointing)],
                         arrayminus=[p - (run.localisation.get("low") or p) for run, p in zip(group, pointing)],
                         thickness=1, width=0),
            customdata=[[run.run_id, run.localisation.get("n"), run.localisation.get("layer")] for run in group],
            hovertemplate=f"%{{customdata[0]}}<br>validation {score} %{{x:.3f}}<br>Grad-CAM peak on the lesion: "
                          "%{y:.2f} of %{customdata[1]} images (layer %{customdata[2]})<extra></extra>"))
    centre = centre_prior(measured)
    if centre is not None:
        fig.add_hline(y=centre, line=dict(color="grey", dash="dot"), annotation_text=f"centre blob {centre:.2f}",
                      annotation_position="top left")
    fig.update_layout(title=title or f"Validation {score} against Grad-CAM pointing", height=420,
                      margin=dict(l=10, r=10, t=40, b=10),
                      legend=LEGEND_BELOW)
    fig.update_xaxes(title=f"validation {score}")
    fig.update_yaxes(title="Grad-CAM pointing game", range=[0, 1])
    return fig
