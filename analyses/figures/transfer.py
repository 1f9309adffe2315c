"""Figures of the transfer matrix (data in, Plotly figure out; the matrix itself is computed
by :mod:`workbench.experiments.transfer`).

* :func:`transfer_figure`: source A x target B heatmap of one value, every cell clickable
  (a click's ``customdata`` is [source, target, value, n]);
* :func:`similarity_figure`: task x task heatmap of a map-similarity frame;
* :func:`transfer_vs_similarity_figure`: transfer against map similarity, off-diagonal cells.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analyses.figures.grid import add_click_targets, outline
from workbench.experiments.transfer import TRANSFER_VALUES


def _square(frame: pd.DataFrame, value: str, order: Sequence[str] | None) -> tuple[pd.DataFrame, list, list]:
    matrix = frame.pivot(index="source", columns="target", values=value)
    sources, targets = list(matrix.index), list(matrix.columns)
    if order is not None:
        sources = [t for t in order if t in sources] + [t for t in sources if t not in order]
        targets = [t for t in order if t in targets] + [t for t in targets if t not in order]
    return matrix.loc[sources, targets], sources, targets


def _matrix_layout(
    fig: go.Figure, n_rows: int, n_cols: int, title: str | None, x_title: str, y_title: str
) -> None:
    fig.update_layout(
        title=title,
        xaxis=dict(title=x_title, tickangle=-40, side="bottom", showgrid=False, zeroline=False),
        yaxis=dict(title=y_title, autorange="reversed", showgrid=False, zeroline=False),
        height=max(340, min(900, 160 + 34 * n_rows)),
        margin=dict(t=50 if title else 20, b=40, l=60, r=20),
        plot_bgcolor="rgba(0,0,0,0)",
    )


def transfer_figure(
    frame: pd.DataFrame,
    value: str = "relative",
    order: Sequence[str] | None = None,
    title: str | None = None,
    selected: tuple[str, str] | None = None,
    clickable: bool = True,
) -> go.Figure:
    """Heatmap of one column of the long transfer table: source A (y, whose alpha) x target B
    (x, whose task and embedding); cells labelled with the value. A click's ``customdata`` is
    [source, target, value, n]."""
    label = TRANSFER_VALUES.get(value, value)
    matrix, sources, targets = _square(frame, value, order)
    n = (
        frame.pivot(index="source", columns="target", values="n").reindex(index=sources, columns=targets)
        if "n" in frame
        else pd.DataFrame(np.nan, index=sources, columns=targets)
    )
    z = matrix.to_numpy(dtype=np.float64)
    finite = z[np.isfinite(z)]
    relative = value.startswith("relative")
    zmax = max(1.0, float(finite.max())) if relative and finite.size else 1.0
    text = [
        [("" if not np.isfinite(v) else f"{v:.2f}" if relative else f"{v:.0%}") for v in row] for row in z
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=targets,
            y=sources,
            zmin=0.0,
            zmax=zmax,
            colorscale="Blues" if not relative else "Viridis",
            text=text,
            texttemplate="%{text}",
            xgap=1,
            ygap=1,
            colorbar=dict(title=dict(text=value.replace("_", " ")), thickness=14),
        )
    )
    custom = np.empty((len(sources), len(targets), 4), dtype=object)
    for i, a in enumerate(sources):
        for j, b in enumerate(targets):
            v = z[i, j]
            custom[i, j] = [
                a,
                b,
                None if not np.isfinite(v) else float(v),
                None if pd.isna(n.iat[i, j]) else int(n.iat[i, j]),
            ]
    value_format = ":.3f" if relative else ":.1%"
    add_click_targets(
        fig,
        targets,
        sources,
        custom,
        f"heads of %{{customdata[0]}} -> task %{{customdata[1]}}<br>{label}: %{{customdata[2]{value_format}}}"
        "<br>queries: %{customdata[3]}<extra></extra>",
        name="cell",
    )
    if selected is not None and selected[0] in sources and selected[1] in targets:
        outline(fig, targets.index(selected[1]), sources.index(selected[0]))
    _matrix_layout(
        fig,
        len(sources),
        len(targets),
        title,
        "target task B (its embedding, evaluated)",
        "source A (its heads)",
    )
    return fig


def similarity_figure(
    sim: pd.DataFrame,
    order: Sequence[str] | None = None,
    title: str | None = None,
    value_label: str = "similarity",
) -> go.Figure:
    """Task x task heatmap of a similarity frame (e.g. from :func:`map_similarity`)."""
    names = list(sim.index)
    if order is not None:
        names = [t for t in order if t in names] + [t for t in names if t not in order]
    z = sim.loc[names, names].to_numpy(dtype=np.float64)
    finite = z[np.isfinite(z)]
    zmin = min(0.0, float(finite.min())) if finite.size else 0.0
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=names,
            y=names,
            zmin=zmin,
            zmax=1.0,
            colorscale="Viridis",
            xgap=1,
            ygap=1,
            text=[["" if not np.isfinite(v) else f"{v:.2f}" for v in row] for row in z],
            texttemplate="%{text}",
            colorbar=dict(title=dict(text=value_label), thickness=14),
            hovertemplate=f"%{{y}} vs %{{x}}<br>{value_label} %{{z:.3f}}<extra></extra>",
        )
    )
    _matrix_layout(fig, len(names), len(names), title, "task", "task")
    return fig


def transfer_vs_similarity_figure(
    frame: pd.DataFrame, value: str = "relative", similarity: str = "alpha_jaccard"
) -> go.Figure:
    """Off-diagonal cells of :func:`with_similarity`: transfer (y) against map similarity (x)."""
    cells = frame[frame["source"] != frame["target"]]
    label = TRANSFER_VALUES.get(value, value)
    fig = go.Figure(
        go.Scatter(
            x=cells[similarity],
            y=cells[value],
            mode="markers",
            marker=dict(size=9, color="#4C78A8", opacity=0.8),
            customdata=np.stack([cells["source"], cells["target"]], axis=-1) if len(cells) else None,
            hovertemplate="heads of %{customdata[0]} -> %{customdata[1]}<br>"
            f"{similarity.replace('_', ' ')} %{{x:.2f}}<br>{label} %{{y:.2f}}<extra></extra>",
        )
    )
    fig.update_layout(
        xaxis=dict(title=similarity.replace("_", " ") + " (source vs target alpha)"),
        yaxis=dict(title=label),
        height=340,
        margin=dict(t=30, b=40, l=60, r=20),
    )
    return fig
