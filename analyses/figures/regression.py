"""Figures of the function-regression benchmark (data in, Plotly figure out; the numbers
come from :mod:`workbench.regression.curves` and :mod:`workbench.regression.benchmark`).

* :func:`error_curves_figure`: squared error / d against the number of in-context
  examples k, one line with its 95% band per row (model, baselines, task-vector methods);
* :func:`shift_bars_figure`: the error of every row at one length, per shift, with bands;
* :func:`ltv_weight_map_figure`: LTV's theta as a layer x head map (signed, centred at 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from analyses.figures.head_maps import head_map_figure

COLORS = {  # one colour per row, shared by every figure of the benchmark
    "transformer": "#4C78A8",
    "plain": "#4C78A8",
    "truncated": "#9ECAE9",
    "LTV": "#F58518",
    "FV": "#EECA3B",
    "TV": "#72B7B2",
    "least_squares": "#333333",
    "lasso": "#B279A2",
    "3-nn": "#9D755D",
    "averaging": "#54A24B",
    "zero": "#BAB0AC",
}
DASHED = {"least_squares", "lasso", "3-nn", "averaging", "zero"}  # the classical baselines


def _color(name: str) -> str:
    return COLORS.get(name, "#E45756")


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def error_curves_figure(
    curves: pd.DataFrame,
    rows: Sequence[str] | None = None,
    *,
    name_column: str = "estimator",
    title: str | None = None,
    train_k: int | None = None,
    log_y: bool = False,
    floor: float = 1e-4,
) -> go.Figure:
    """Error / d against k: one line and a shaded 95% band (``lo``, ``hi``) per value of
    ``name_column`` (``rows`` picks and orders them; default: all). ``train_k``: a dotted line
    at the most examples seen in training. ``log_y``: a log axis, values clipped at ``floor``
    (noise-free least squares is exact, ~1e-14)."""
    rows = list(rows) if rows is not None else list(dict.fromkeys(curves[name_column]))
    fig = go.Figure()
    for name in rows:
        frame = curves[curves[name_column] == name].sort_values("k")
        if frame.empty:
            continue
        k, mean, lo, hi = (frame[c].to_numpy(dtype=float) for c in ("k", "mean", "lo", "hi"))
        if log_y:
            mean, lo, hi = (np.maximum(v, floor) for v in (mean, lo, hi))
        color = _color(name)
        fig.add_trace(
            go.Scatter(
                x=np.concatenate([k, k[::-1]]),
                y=np.concatenate([hi, lo[::-1]]),
                fill="toself",
                fillcolor=_rgba(color, 0.18),
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
                legendgroup=name,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=k,
                y=mean,
                mode="lines+markers",
                name=name,
                legendgroup=name,
                line=dict(color=color, width=2, dash="dash" if name in DASHED else "solid"),
                marker=dict(size=4),
                hovertemplate=f"{name}<br>k %{{x}}<br>error / d %{{y:.4f}}<extra></extra>",
            )
        )
    if train_k is not None:
        fig.add_vline(
            x=train_k,
            line_dash="dot",
            line_color="#777",
            annotation_text="training length",
            annotation_position="top left",
        )
    fig.update_layout(
        title=title,
        xaxis=dict(title="in-context examples k"),
        yaxis=dict(title="squared error / d", type="log" if log_y else "linear", rangemode="tozero"),
        height=420,
        margin=dict(t=60 if title else 30, b=40, l=60, r=20),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
    )
    return fig


def shift_bars_figure(table: pd.DataFrame, rows: Sequence[str], title: str | None = None) -> go.Figure:
    """Grouped bars: for each shift (x), the error / d of every row with its 95% band."""
    shifts = list(dict.fromkeys(table["shift"]))
    fig = go.Figure()
    for name in rows:
        frame = table[table["method"] == name].set_index("shift").reindex(shifts)
        mean = frame["mean"].to_numpy(dtype=float)
        fig.add_trace(
            go.Bar(
                x=shifts,
                y=mean,
                name=name,
                marker_color=_color(name),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=(frame["hi"] - frame["mean"]).to_numpy(dtype=float),
                    arrayminus=(frame["mean"] - frame["lo"]).to_numpy(dtype=float),
                ),
                customdata=frame["k"].to_numpy(),
                hovertemplate=f"{name}<br>%{{x}}, k %{{customdata}}<br>error / d %{{y:.4f}}<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        barmode="group",
        xaxis=dict(title=None),
        yaxis=dict(title="squared error / d"),
        height=400,
        margin=dict(t=60 if title else 30, b=40, l=60, r=20),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0),
    )
    return fig


def ltv_weight_map_figure(theta: torch.Tensor | np.ndarray, title: str | None = None) -> go.Figure:
    """LTV's theta[l, h] (L, H) on a diverging scale centred at 0, as the text tasks' head maps."""
    return head_map_figure(theta, title=title, symmetric=True, value_label="theta", clickable=False)
