"""Clickable cells on a heatmap, shared by the head-map and transfer figures.

Plotly heatmaps emit no selection events in Streamlit (streamlit/streamlit#8760), so a
clickable figure lays an invisible marker on each cell: a click selects that marker, and its
``customdata`` names the cell.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go


def add_click_targets(
    fig: go.Figure, x: Sequence, y: Sequence, customdata: np.ndarray, hovertemplate: str, name: str = "cell"
) -> None:
    """Lay one invisible marker on each cell (x[j], y[i]) of a heatmap so that a click selects
    it; ``customdata`` is (len(y), len(x), k). Hover comes from these markers too."""
    xs, ys = np.meshgrid(np.arange(len(x)), np.arange(len(y)))  # (rows, columns)
    fig.add_trace(
        go.Scatter(
            x=[x[j] for j in xs.ravel()],
            y=[y[i] for i in ys.ravel()],
            customdata=customdata.reshape(len(y) * len(x), -1).tolist(),
            mode="markers",
            marker=dict(symbol="square", size=12, opacity=0),
            selected=dict(marker=dict(opacity=0)),
            unselected=dict(marker=dict(opacity=0)),
            hovertemplate=hovertemplate,
            name=name,
            showlegend=False,
        )
    )
    fig.update_traces(hoverinfo="skip", hovertemplate=None, selector=dict(type="heatmap"))
    fig.update_layout(hovermode="closest", hoverdistance=-1, clickmode="event+select")


def outline(fig: go.Figure, x, y, color: str = "#d62728") -> None:
    """A box around the cell at category/index (x, y)."""
    fig.add_shape(
        type="rect",
        x0=x - 0.5,
        x1=x + 0.5,
        y0=y - 0.5,
        y1=y + 0.5,
        xref="x",
        yref="y",
        line=dict(color=color, width=3),
        fillcolor="rgba(0,0,0,0)",
    )
