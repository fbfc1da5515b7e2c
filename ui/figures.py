"""Figures the pages share: a zoomable image in its own geometry with a mm scale bar, probabilities."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go


def image_figure(image: np.ndarray, *, spacing: tuple[float, float] | None = None, height: int = 560,
                 title: str | None = None, max_side: int = 1024) -> go.Figure:
    """A zoomable image in its own geometry (square pixels or the stated spacing), with a mm scale bar.

    ``image`` is grey [0, 1] or RGB uint8. Large images are sent to the browser downsampled,
    drawn over the original pixel coordinates so axes and the scale bar stay exact.
    """
    rows, cols = image.shape[:2]
    step = max(1, int(np.ceil(max(rows, cols) / max_side)))
    shown = image[::step, ::step]
    if shown.ndim == 2:
        shown = np.repeat((np.clip(shown, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    # Non-square pixels: stretch the y axis so the picture keeps its physical aspect ratio.
    aspect = (spacing[0] / spacing[1]) if spacing else 1.0
    fig = go.Figure(go.Image(z=shown, x0=0, y0=0, dx=step, dy=step, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[0, cols], constrain="domain")
    fig.update_yaxes(visible=False, range=[rows, 0], scaleanchor="x", scaleratio=aspect, constrain="domain")
    if spacing:
        _scale_bar(fig, rows, cols, spacing)
    fig.update_layout(height=height, margin=dict(l=0, r=0, t=30 if title else 0, b=0), title=title,
                      dragmode="pan")
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
