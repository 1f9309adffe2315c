"""Figures of the methods side by side (data in, Plotly figure out; the tables come from
:mod:`workbench.experiments.comparison`).

* :func:`comparison_figure`: bars of accuracy, tokens and time per method of one task view;
* :func:`accuracy_matrix_figure`: task x method heatmap of one accuracy;
* :func:`memory_figure`: peak memory of each method's fit and evaluation.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.experiments.comparison import family, method_order
from workbench.scoring import METRICS

PANELS = {  # column -> panel title
    "first_token_acc": METRICS["first_token_acc"],
    "exact_match": METRICS["exact_match"],
    "tokens": "prompt tokens per query",
    "s_per_query": "seconds per query",
}
COLORS = {
    "zero-shot": "#9D9D9D",
    "ICL": "#4C78A8",
    "TV": "#72B7B2",
    "FV": "#EECA3B",
    "LTV": "#F58518",
    "SITE": "#E45756",
}
OTHER_COLORS = ["#54A24B", "#B279A2", "#FF9DA6", "#9D755D", "#BAB0AC"]  # methods added later
MEMORY_PANELS = {"fit_peak_mib": "fit", "eval_peak_mib": "evaluation"}  # column -> bar label


def method_color(method: str) -> str:
    """A fixed colour per method family; a method without one gets a stable spare colour."""
    name = family(method)
    return COLORS.get(name) or OTHER_COLORS[sum(map(ord, name)) % len(OTHER_COLORS)]


def comparison_figure(view: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Four bar panels (first-token accuracy, exact match, prompt tokens, seconds per query),
    one bar per method of a :func:`task_view`."""
    fig = make_subplots(
        rows=1, cols=len(PANELS), subplot_titles=list(PANELS.values()), horizontal_spacing=0.07
    )
    methods = list(view["method"])
    colors = [method_color(m) for m in methods]
    for i, (column, label) in enumerate(PANELS.items(), start=1):
        values = view[column].astype(float)
        accuracy = column in METRICS
        fig.add_trace(
            go.Bar(
                x=methods,
                y=values,
                marker_color=colors,
                text=[("" if not np.isfinite(v) else f"{v:.0%}" if accuracy else f"{v:.3g}") for v in values],
                textposition="outside",
                hovertemplate=f"%{{x}}<br>{label} %{{y:.3f}}<extra></extra>",
                showlegend=False,
            ),
            row=1,
            col=i,
        )
        top = float(values.max()) if values.notna().any() else 1.0
        fig.update_yaxes(range=[0, 1.12] if accuracy else [0, top * 1.18 or 1.0], row=1, col=i)
        fig.update_xaxes(tickangle=-40, row=1, col=i)
    fig.update_layout(title=title, height=380, margin=dict(t=70 if title else 40, b=40, l=50, r=20))
    return fig


def accuracy_matrix_figure(table: pd.DataFrame, value: str = "first_token_acc") -> go.Figure:
    """Task (rows, by the best method's score) x method (columns) heatmap of ``value``."""
    wide = table.pivot_table(index="task", columns="method", values=value, aggfunc="mean")
    wide = wide[method_order(wide.columns)]
    wide = wide.loc[wide.max(axis=1).sort_values(ascending=False).index]
    z = wide.to_numpy(dtype=np.float64)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(wide.columns),
            y=list(wide.index),
            zmin=0.0,
            zmax=1.0,
            colorscale="Blues",
            text=[["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in z],
            texttemplate="%{text}",
            xgap=1,
            ygap=1,
            colorbar=dict(title=dict(text=PANELS.get(value, value)), thickness=14),
            hovertemplate=f"%{{y}}, %{{x}}<br>{PANELS.get(value, value)} %{{z:.3f}}<extra></extra>",
        )
    )
    fig.update_layout(
        yaxis=dict(autorange="reversed"),
        xaxis=dict(side="top"),
        height=max(320, min(1100, 120 + 24 * len(wide))),
        margin=dict(t=60, b=20, l=60, r=20),
    )
    return fig


def memory_figure(view: pd.DataFrame) -> go.Figure:
    """Peak memory (MiB above what was in use before) of each method's fit and evaluation,
    grouped bars per method of a :func:`task_view`; a missing value draws no bar."""
    methods = list(view["method"])
    fig = go.Figure()
    for column, label in MEMORY_PANELS.items():
        if column not in view.columns:
            continue
        values = view[column].astype(float)
        fig.add_trace(
            go.Bar(
                name=label,
                x=methods,
                y=values,
                marker_color=[method_color(m) for m in methods],
                marker_pattern_shape="/" if column == "fit_peak_mib" else "",
                text=["" if not np.isfinite(v) else f"{v:,.0f}" for v in values],
                textposition="outside",
                hovertemplate=f"%{{x}}<br>{label} peak %{{y:,.0f}} MiB<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="group",
        yaxis=dict(title="peak memory (MiB)", rangemode="tozero"),
        xaxis=dict(tickangle=-40),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, title="peak of"),
        height=340,
        margin=dict(t=40, b=40, l=60, r=20),
    )
    return fig
