"""Figures of per-head maps (data in, Plotly figure out; the maps' computations are in
:mod:`workbench.experiments.head_maps`).

Any (L, H) map works: SITE's head selection alpha, a function vector's indirect effects or
LTV's weights (signed: pass ``symmetric=True``).

* :func:`head_map_figure`: layer x head heatmap, every cell clickable (the app reads a click
  from the selection event: the cell's ``customdata`` is [layer, head, value]);
* :func:`head_maps_figure`: several maps side by side, each map's top-k heads marked;
* :func:`layer_profile_figure`: per layer, the mean alpha and the number of heads above 0.5;
* :func:`head_across_tasks_figure`: one head's value in every task's map;
* :func:`fit_history_figure`: train / valid loss of a fit by step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from analyses.figures.grid import add_click_targets, outline
from workbench.experiments.head_maps import SELECTED, as_map
from workbench.methods.selection import top_heads

SEQUENTIAL = "Viridis"
DIVERGING = "RdBu_r"


# ----------------------------------------------------------------------------- head maps


def head_map_figure(
    values: torch.Tensor | np.ndarray,
    title: str | None = None,
    zmin: float | None = 0.0,
    zmax: float | None = 1.0,
    colorscale: str | None = None,
    *,
    symmetric: bool = False,
    value_label: str = "alpha",
    selected: tuple[int, int] | None = None,
    clickable: bool = True,
    height: int | None = None,
) -> go.Figure:
    """Layer (y, layer 0 at the top) x head (x) heatmap of a (L, H) map.

    ``zmin`` / ``zmax`` None: the data's range. ``symmetric``: a signed map, coloured on a
    diverging scale centred at 0, range +-max|value| (or +-max(|zmin|, |zmax|) when a range
    other than the default (0, 1) is given).
    ``selected`` (layer, head) is outlined. Hover (and a click's ``customdata``) gives
    [layer, head, value]."""
    z = as_map(values)
    n_layers, n_heads = z.shape
    zmin, zmax = _color_range(z, symmetric, zmin, zmax)
    colorscale = colorscale or (DIVERGING if symmetric else SEQUENTIAL)
    layers, heads = list(range(n_layers)), list(range(n_heads))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=heads,
            y=layers,
            zmin=zmin,
            zmax=zmax,
            zmid=0.0 if symmetric else None,
            colorscale=colorscale,
            colorbar=dict(title=dict(text=value_label), thickness=14),
            xgap=1,
            ygap=1,
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{value_label} %{{z:.3f}}<extra></extra>",
        )
    )
    if clickable:
        cells = np.stack([*np.meshgrid(layers, heads, indexing="ij"), z], axis=-1)  # (L, H, 3)
        add_click_targets(
            fig,
            heads,
            layers,
            cells,
            f"layer %{{customdata[0]}}, head %{{customdata[1]}}<br>{value_label} %{{customdata[2]:.3f}}"
            "<extra></extra>",
            name="head",
        )
    if selected is not None:
        layer, head = selected
        if 0 <= layer < n_layers and 0 <= head < n_heads:
            outline(fig, head, layer)
    fig.update_layout(
        title=title,
        xaxis=dict(
            title="head",
            tickmode="linear",
            dtick=1 if n_heads <= 32 else None,
            range=[-0.5, n_heads - 0.5],
            showgrid=False,
            zeroline=False,
        ),
        yaxis=dict(
            title="layer",
            autorange=False,
            range=[n_layers - 0.5, -0.5],
            dtick=1 if n_layers <= 40 else None,
            showgrid=False,
            zeroline=False,
        ),
        height=height or _map_height(n_layers),
        margin=dict(t=60 if title else 40, b=40, l=60, r=20),
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def _color_range(z: np.ndarray, symmetric: bool, zmin: float | None, zmax: float | None) -> tuple:
    """The colour range of a map. ``symmetric``: +-max(|zmin|, |zmax|), or +-max|value| when
    no range other than the default (0, 1) is given. Otherwise (zmin, zmax), the data's
    minimum / maximum where one is None."""
    finite = z[np.isfinite(z)]
    if symmetric:
        given = [abs(v) for v in (zmin, zmax) if v is not None] if (zmin, zmax) != (0.0, 1.0) else []
        bound = max(given) if given else (float(np.abs(finite).max()) if finite.size else 0.0)
        return -(bound or 1.0), bound or 1.0
    zmin = float(finite.min()) if zmin is None and finite.size else zmin
    zmax = float(finite.max()) if zmax is None and finite.size else zmax
    return zmin, zmax


def _map_height(n_layers: int) -> int:
    """Figure height for a map with ``n_layers`` rows (shared so side-by-side figures align)."""
    return max(320, min(900, 100 + 20 * n_layers))


def layer_profile_figure(
    alpha: torch.Tensor | np.ndarray, title: str | None = None, height: int | None = None
) -> go.Figure:
    """Per layer (rows, layer 0 at the top, as in :func:`head_map_figure` so the two align side
    by side): the mean alpha (left panel, 0 to 1) and the number of heads with alpha > 0.5
    (right panel)."""
    a = as_map(alpha)
    n_layers, n_heads = a.shape
    layers = list(range(n_layers))
    count, mean = (a > SELECTED).sum(axis=1), a.mean(axis=1)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.1)
    fig.add_trace(
        go.Bar(
            x=mean,
            y=layers,
            orientation="h",
            name="mean alpha",
            marker_color="#4C78A8",
            hovertemplate="layer %{y}: mean alpha %{x:.3f}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Bar(
            x=count,
            y=layers,
            orientation="h",
            name=f"heads with alpha > {SELECTED}",
            marker_color="#F58518",
            hovertemplate=f"layer %{{y}}: %{{x}} of {n_heads} heads with alpha > {SELECTED}<extra></extra>",
        ),
        row=1,
        col=2,
    )
    fig.update_xaxes(title_text="mean alpha", range=[0, 1.0], tickvals=[0, 0.5, 1], row=1, col=1)
    fig.update_xaxes(
        title_text=f"heads > {SELECTED}", range=[0, n_heads], dtick=max(1, n_heads // 3), row=1, col=2
    )
    fig.update_yaxes(
        autorange=False,
        range=[n_layers - 0.5, -0.5],
        dtick=1 if n_layers <= 40 else None,
        title_text="layer",
        row=1,
        col=1,
    )
    fig.update_layout(
        title=title,
        showlegend=False,
        bargap=0.15,
        height=height or _map_height(n_layers),
        margin=dict(t=40, b=40, l=60, r=20),
    )
    return fig


# ----------------------------------------------------------------------------- one head, many tasks


def head_across_tasks_figure(
    frame: pd.DataFrame, layer: int, head: int, value_label: str = "alpha", highlight: str | None = None
) -> go.Figure:
    """Bars of :func:`head_across_tasks`: the head's value per task, its rank as the label;
    ``highlight`` (a task) gets a darker bar."""
    colors = ["#d62728" if task == highlight else "#4C78A8" for task in frame["task"]]
    fig = go.Figure(
        go.Bar(
            x=frame["task"],
            y=frame["value"],
            marker_color=colors,
            text=[f"#{r}" for r in frame["rank"]],
            textposition="outside",
            customdata=np.stack([frame["rank"], frame["n_heads"]], axis=-1) if len(frame) else None,
            hovertemplate=f"%{{x}}<br>{value_label} %{{y:.3f}}<br>"
            "rank %{customdata[0]} of %{customdata[1]}<extra></extra>",
        )
    )
    fig.add_hline(y=SELECTED, line_dash="dot", line_color="#777")
    top = float(frame["value"].max()) if len(frame) else 1.0
    fig.update_layout(
        title=f"Layer {layer}, head {head}: {value_label} in each task (label: rank in that task)",
        yaxis=dict(
            title=value_label,
            range=[min(0.0, float(frame["value"].min()) if len(frame) else 0.0), max(1.0, top) * 1.12],
        ),
        xaxis=dict(title=None, tickangle=-40),
        margin=dict(t=50, b=40, l=60, r=20),
        height=380,
    )
    return fig


def fit_history_figure(history: pd.DataFrame, best_step: int | None = None) -> go.Figure:
    """Train loss per step and valid loss at each check (``SiteFit.history``)."""
    fig = go.Figure()
    if "train_loss" in history:
        fig.add_trace(
            go.Scatter(
                x=history["step"],
                y=history["train_loss"],
                name="train loss (batch)",
                mode="lines",
                line=dict(color="#9ecae9"),
            )
        )
    if "valid_loss" in history:
        valid = history.dropna(subset=["valid_loss"])
        fig.add_trace(
            go.Scatter(
                x=valid["step"],
                y=valid["valid_loss"],
                name="valid loss",
                mode="lines+markers",
                line=dict(color="#F58518"),
            )
        )
    if best_step is not None:
        fig.add_vline(
            x=best_step,
            line_dash="dash",
            line_color="#555",
            annotation_text=f"best step {best_step}",
            annotation_position="top right",
        )
    fig.update_layout(
        xaxis=dict(title="step"),
        yaxis=dict(title="first-token cross-entropy"),
        height=300,
        margin=dict(t=30, b=40, l=60, r=20),
        legend=dict(yanchor="top", y=0.98, xanchor="right", x=0.98, bgcolor="rgba(255,255,255,0.6)"),
    )
    return fig


# ----------------------------------------------------------------------------- maps of several methods


class Panel(NamedTuple):
    """One map of :func:`head_maps_figure`."""

    values: torch.Tensor | np.ndarray  # (L, H)
    label: str  # what a value is: "alpha", "theta", ...
    signed: bool = False  # both signs: a diverging scale centred at 0
    relevance: torch.Tensor | np.ndarray | None = None  # ranks the top-k heads (default: values)


def head_maps_figure(
    maps: Mapping[str, Panel], top_k: int | None = None, title: str | None = None
) -> go.Figure:
    """Several (L, H) maps side by side, one panel each (name -> :class:`Panel`). Each panel has
    its own colour range with its colour bar below it; with ``top_k``, a white dot marks each
    panel's top-k heads by relevance."""
    names = list(maps)
    fig = make_subplots(rows=1, cols=max(1, len(names)), subplot_titles=names, horizontal_spacing=0.06)
    n_layers = 1
    for i, name in enumerate(names, start=1):
        values, label, signed, ranking = maps[name]
        z = as_map(values)
        n_layers, n_heads = z.shape
        zmin, zmax = _color_range(z, signed, *((0.0, 1.0) if label == "alpha" else (None, None)))
        domain = fig.layout[f"xaxis{'' if i == 1 else i}"].domain
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=list(range(n_heads)),
                y=list(range(n_layers)),
                zmin=zmin,
                zmax=zmax,
                zmid=0.0 if signed else None,
                colorscale=DIVERGING if signed else SEQUENTIAL,
                xgap=1,
                ygap=1,
                colorbar=dict(
                    title=dict(text=label, side="top"),
                    orientation="h",
                    x=(domain[0] + domain[1]) / 2,
                    xanchor="center",
                    len=domain[1] - domain[0],
                    y=-0.11,
                    yanchor="top",
                    thickness=10,
                ),
                hovertemplate=f"layer %{{y}}, head %{{x}}<br>{label} %{{z:.4f}}<extra>{name}</extra>",
            ),
            row=1,
            col=i,
        )
        if top_k:
            cells = top_heads(torch.as_tensor(as_map(z if ranking is None else ranking)), top_k)
            fig.add_trace(
                go.Scatter(
                    x=[h for _, h in cells],
                    y=[lay for lay, _ in cells],
                    mode="markers",
                    marker=dict(color="white", size=6, line=dict(color="black", width=1)),
                    hovertemplate=f"top-{top_k} head: layer %{{y}}, head %{{x}}<extra>{name}</extra>",
                    showlegend=False,
                ),
                row=1,
                col=i,
            )
        fig.update_xaxes(
            title_text="head",
            dtick=1 if n_heads <= 16 else None,
            showgrid=False,
            zeroline=False,
            range=[-0.5, n_heads - 0.5],
            row=1,
            col=i,
        )
        fig.update_yaxes(
            autorange=False,
            range=[n_layers - 0.5, -0.5],
            showgrid=False,
            zeroline=False,
            title_text="layer" if i == 1 else None,
            row=1,
            col=i,
        )
    fig.update_layout(
        title=title,
        height=_map_height(n_layers) + 80,
        margin=dict(t=70 if title else 40, b=130, l=60, r=20),
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig
