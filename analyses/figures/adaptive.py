"""Figures of one query's adaptive task vectors (data in, Plotly figure out; the frames come
from :mod:`workbench.experiments.adaptive`).

* :func:`layer_norms_figure`: ||v[l]|| per layer;
* :func:`similarity_figure`: (task, reference) x layer heatmap of the cosine of v[l] to
  each reference vector; :func:`task_match_figure`: its mean over layers per task;
* :func:`logit_lens_figure`: layer x rank grid of v[l]'s top tokens through the unembedding;
* :func:`scale_figure`, :func:`ablation_figure`, :func:`swap_figure`: the answer and its
  target-token probability as lambda is scaled, as one layer's vector is removed at a time,
  and with another query's vectors. Each point's hover gives the prediction and the three
  answer metrics; its colour says whether the prediction is an exact match.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

DIVERGING = "RdBu_r"
RIGHT, WRONG, NEUTRAL = "#54A24B", "#E45756", "#4C78A8"
METRIC_HOVER = (
    "first token %{customdata[1]}, prefix %{customdata[2]}, exact %{customdata[3]}"
)


def _shown(token: str) -> str:
    """A token as text that shows its spaces and line breaks."""
    return token.replace(" ", "␣").replace("\n", "↵") or "∅"


def _colors(frame: pd.DataFrame) -> list[str]:
    if "exact_match" not in frame.columns:
        return [NEUTRAL] * len(frame)
    return [RIGHT if ok else WRONG for ok in frame["exact_match"]]


def _customdata(frame: pd.DataFrame) -> list[list]:
    """Per row: [prediction, first token, prefix, exact] (hover text)."""
    mark = {True: "yes", False: "no"}
    return [
        [_shown(str(row.prediction)), mark[bool(row.first_token_correct)], mark[bool(row.prefix_match)],
         mark[bool(row.exact_match)]]
        for row in frame.itertuples()
    ]  # fmt: skip


def _probability_layout(fig: go.Figure, title: str | None, x_title: str, height: int = 360) -> None:
    fig.update_layout(
        title=title,
        xaxis=dict(title=x_title),
        yaxis=dict(title="target-token probability", range=[0, 1.08]),
        height=height,
        margin=dict(t=60 if title else 30, b=40, l=60, r=20),
        showlegend=False,
    )


# ----------------------------------------------------------------------------- the vectors


def layer_norms_figure(norms: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Bars of ||v[l]|| (``norm``) per ``layer``."""
    fig = go.Figure(
        go.Bar(
            x=norms["layer"],
            y=norms["norm"],
            marker_color=NEUTRAL,
            hovertemplate="layer %{x}<br>||v|| %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis=dict(title="layer", dtick=1 if len(norms) <= 32 else None),
        yaxis=dict(title="||v[l]||", rangemode="tozero"),
        height=320,
        margin=dict(t=60 if title else 30, b=40, l=60, r=20),
    )
    return fig


def similarity_figure(similarity: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Heatmap of ``cosine`` with a row per (task, reference) and a column per layer, on a
    diverging scale from -1 to 1; a reference without a vector at a layer leaves it blank."""
    similarity = similarity.assign(row=similarity["task"] + " · " + similarity["reference"])
    rows = list(dict.fromkeys(similarity.sort_values(["task", "reference"], kind="stable")["row"]))
    matrix = similarity.pivot(index="row", columns="layer", values="cosine").reindex(rows)
    z = matrix.to_numpy(dtype=np.float64)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(matrix.columns),
            y=rows,
            zmin=-1.0,
            zmax=1.0,
            zmid=0.0,
            colorscale=DIVERGING,
            xgap=1,
            ygap=1,
            colorbar=dict(title=dict(text="cosine"), thickness=14),
            hovertemplate="%{y}<br>layer %{x}: cosine %{z:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=title,
        xaxis=dict(title="layer", showgrid=False, zeroline=False),
        yaxis=dict(autorange="reversed", showgrid=False, zeroline=False),
        height=max(300, min(900, 110 + 26 * len(rows))),
        margin=dict(t=60 if title else 30, b=40, l=60, r=20),
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


def task_match_figure(match: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Grouped bars of the mean cosine over layers (``cosine``) per ``task``, one colour per
    ``reference`` (a frame of ``task_match``)."""
    palette = ["#4C78A8", "#F58518", "#72B7B2", "#EECA3B", "#B279A2", "#9D755D"]
    fig = go.Figure()
    for i, (reference, rows) in enumerate(match.groupby("reference", sort=False)):
        fig.add_trace(
            go.Bar(
                name=reference,
                x=rows["task"],
                y=rows["cosine"],
                marker_color=palette[i % len(palette)],
                customdata=rows[["layers"]].to_numpy(),
                hovertemplate=f"%{{x}} · {reference}<br>mean cosine %{{y:.3f}} "
                "over %{customdata[0]} layer(s)"
                "<extra></extra>",
            )
        )
    fig.update_layout(
        title=title,
        barmode="group",
        yaxis=dict(title="mean cosine over layers", range=[-1, 1]),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0, title="cosine to"),
        height=340,
        margin=dict(t=90 if title else 50, b=40, l=60, r=20),
    )
    return fig


def logit_lens_figure(lens: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Layer (rows, layer 0 at the top) x rank grid: each cell names the token, coloured by
    its probability when v[l] is read out as the last residual state."""
    probs = lens.pivot(index="layer", columns="rank", values="prob")
    tokens = lens.pivot(index="layer", columns="rank", values="token").map(_shown)
    logits = lens.pivot(index="layer", columns="rank", values="logit")
    fig = go.Figure(
        go.Heatmap(
            z=probs.to_numpy(dtype=np.float64),
            x=[r + 1 for r in probs.columns],
            y=list(probs.index),
            text=tokens.to_numpy(),
            texttemplate="%{text}",
            textfont=dict(size=11),
            customdata=logits.to_numpy(dtype=np.float64),
            colorscale="Blues",
            zmin=0.0,
            xgap=1,
            ygap=1,
            colorbar=dict(title=dict(text="prob"), thickness=14),
            hovertemplate=(
                "layer %{y}, rank %{x}<br>%{text}<br>prob %{z:.4f}, logit %{customdata:.2f}<extra></extra>"
            ),
        )
    )
    fig.update_layout(
        title=title,
        xaxis=dict(title="rank", side="top", showgrid=False, zeroline=False, dtick=1),
        yaxis=dict(title="layer", autorange="reversed", showgrid=False, zeroline=False, dtick=1),
        height=max(320, min(1100, 110 + 24 * len(probs))),
        margin=dict(t=100 if title else 60, b=20, l=60, r=20),
        plot_bgcolor="rgba(0,0,0,0)",
    )
    return fig


# ----------------------------------------------------------------------------- answers under edits


def scale_figure(sweep: pd.DataFrame, current: float | None = None, title: str | None = None) -> go.Figure:
    """Target-token probability against lambda (``scale``), each point labelled with its
    prediction; a dashed line marks the lambda in use (``current``)."""
    fig = go.Figure(
        go.Scatter(
            x=sweep["scale"],
            y=sweep["target_prob"],
            mode="lines+markers+text",
            line=dict(color="#9D9D9D"),
            marker=dict(color=_colors(sweep), size=10),
            text=[_shown(str(p))[:18] for p in sweep["prediction"]],
            textposition="top center",
            customdata=_customdata(sweep),
            hovertemplate=(
                "lambda %{x:g}: %{customdata[0]}<br>P(target) %{y:.3f}<br>" + METRIC_HOVER + "<extra></extra>"
            ),
        )
    )
    if current is not None:
        fig.add_vline(
            x=current, line_dash="dash", line_color="#4C78A8", annotation_text=f"lambda {current:g}"
        )
    _probability_layout(fig, title, "lambda (scale of the vectors)")
    return fig


def ablation_figure(ablation: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Bars of the target-token probability with layer l's vector removed, one per layer,
    between a bar with every vector kept ("none" removed) and one with all removed; a
    dashed line at the first."""
    # "none" removed (every vector kept), "all" removed (plain model)
    ends = ablation["layer"].isna().to_numpy()
    x = [a if end else str(layer) for a, layer, end in zip(ablation["ablated"], ablation["layer"], ends)]
    fig = go.Figure(
        go.Bar(
            x=x,
            y=ablation["target_prob"],
            marker_color=_colors(ablation),
            marker_pattern_shape=["/" if end else "" for end in ends],
            customdata=_customdata(ablation),
            hovertemplate=(
                "%{x}: %{customdata[0]}<br>P(target) %{y:.3f}<br>" + METRIC_HOVER + "<extra></extra>"
            ),
        )
    )
    kept = ablation[ablation["ablated"] == "none"]
    if not kept.empty:
        fig.add_hline(y=float(kept["target_prob"].iloc[0]), line_dash="dash", line_color="#4C78A8")
    _probability_layout(fig, title, "layer whose vector is removed")
    fig.update_xaxes(type="category", tickangle=0 if len(x) <= 34 else -90)
    return fig


def swap_figure(swapped: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Bars of the target-token probability with no vectors, the query's own, and another
    query's, each labelled with its prediction."""
    fig = go.Figure(
        go.Bar(
            x=swapped["variant"],
            y=swapped["target_prob"],
            marker_color=_colors(swapped),
            text=[_shown(str(p))[:24] for p in swapped["prediction"]],
            textposition="outside",
            customdata=_customdata(swapped),
            hovertemplate=(
                "%{x}: %{customdata[0]}<br>P(target) %{y:.3f}<br>" + METRIC_HOVER + "<extra></extra>"
            ),
        )
    )
    _probability_layout(fig, title, "", height=340)
    return fig
