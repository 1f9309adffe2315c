"""All methods side by side: zero-shot, k-shot ICL, TV, FV, LTV, SITE per task.

The table has one row per (task, method) with the columns of the benchmark script
(``analyses/bench_methods.py``): first, exact (accuracies on the test split), tokens
(prompt tokens per query), s_per_query, fit_s; a comparison computed in the app
(:func:`workbench.methods.compare_methods`) is turned into the same columns by
:func:`from_summary`.

* :func:`read_benchmark`, :func:`benchmark_files`: the saved tables and their templates;
* :func:`task_view`: one task's rows (or the mean over tasks) in method order;
* :func:`comparison_figure`: bars of accuracy, tokens and time per method;
* :func:`accuracy_matrix_figure`: task x method heatmap of one accuracy.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

RESULTS = Path(__file__).resolve().parent / "results"
MEAN = "mean over tasks"
REQUIRED = {"task", "method", "first", "exact", "s_per_query", "tokens"}
PANELS = {  # column -> panel title
    "first": "first-token accuracy",
    "exact": "exact match",
    "tokens": "prompt tokens per query",
    "s_per_query": "seconds per query",
}
ORDER = ["zero-shot", "ICL", "TV", "FV", "LTV", "SITE"]
COLORS = {
    "zero-shot": "#9D9D9D",
    "ICL": "#4C78A8",
    "TV": "#72B7B2",
    "FV": "#EECA3B",
    "LTV": "#F58518",
    "SITE": "#E45756",
}


def _family(method: str) -> str:
    """'10-shot ICL' -> 'ICL'; other labels as they are."""
    return "ICL" if method.endswith("ICL") else method


def method_order(methods) -> list[str]:
    """Methods in the order zero-shot, ICL, TV, FV, LTV, SITE, then any others."""
    methods = list(dict.fromkeys(methods))
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(methods, key=lambda m: (rank.get(_family(m), len(ORDER)), m))


def read_benchmark(path) -> pd.DataFrame:
    """A saved benchmark table (``methods_<model>_<template>.csv``), checked for its columns."""
    frame = pd.read_csv(path)
    missing = REQUIRED - set(frame.columns)
    if missing:
        raise ValueError(f"{path} is not a methods benchmark table: no column {', '.join(sorted(missing))}.")
    return frame


def benchmark_files(model: str, folder: Path | None = None) -> dict[str, Path]:
    """Saved benchmark tables for ``model`` in ``folder`` (default: analyses/results):
    template -> path (from the file names)."""
    folder = RESULTS if folder is None else folder
    stem = re.escape(f"methods_{model.replace('/', '--')}_")
    found = {}
    for path in sorted(folder.glob("methods_*.csv")):
        match = re.fullmatch(stem + r"(\w+?)(_\d+tasks)?\.csv", path.name)
        if match and not match.group(2):  # the full run, not a partial one
            found[match.group(1)] = path
    return found


def from_summary(summary: pd.DataFrame, fit_seconds: dict | None = None) -> pd.DataFrame:
    """:func:`workbench.methods.compare_methods`' summary in the benchmark's columns."""
    frame = summary.rename(
        columns={
            "first_token_acc": "first",
            "exact_match": "exact",
            "seconds_per_query": "s_per_query",
            "prompt_tokens": "tokens",
        }
    )
    frame["fit_s"] = frame["method"].map(fit_seconds or {}).astype(float)
    return frame


def task_view(table: pd.DataFrame, task: str = MEAN) -> pd.DataFrame:
    """One task's rows, or the mean over tasks (``MEAN``; only tasks where every method
    ran), one row per method in :func:`method_order`."""
    if task == MEAN:
        counts = table.groupby("task")["method"].nunique()
        complete = counts[counts == counts.max()].index
        rows = table[table["task"].isin(complete)]
        numeric = [c for c in ("first", "exact", "tokens", "s_per_query", "fit_s") if c in rows]
        view = rows.groupby("method", sort=False)[numeric].mean().reset_index()
        view.insert(0, "task", f"{MEAN} ({len(complete)})")
    else:
        view = table[table["task"] == task]
        if view.empty:
            raise ValueError(f"No rows for task {task!r}.")
    order = method_order(view["method"])
    return view.set_index("method").loc[order].reset_index()


def comparison_figure(view: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Four bar panels (first-token accuracy, exact match, prompt tokens, seconds per query),
    one bar per method of a :func:`task_view`."""
    fig = make_subplots(
        rows=1, cols=len(PANELS), subplot_titles=list(PANELS.values()), horizontal_spacing=0.07
    )
    methods = list(view["method"])
    colors = [COLORS.get(_family(m), "#888") for m in methods]
    for i, (column, label) in enumerate(PANELS.items(), start=1):
        values = view[column].astype(float)
        accuracy = column in ("first", "exact")
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


def accuracy_matrix_figure(table: pd.DataFrame, value: str = "first") -> go.Figure:
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
