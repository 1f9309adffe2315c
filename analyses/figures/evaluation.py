"""Figures of evaluation results (``workbench.experiments.evaluation`` / ``.grid``): data in,
Plotly figure out.

* :func:`accuracy_bar_chart`: first-token accuracy and exact match per method, grouped bars,
  from a summary table (``evaluation.summarize`` or ``grid.summarize_grid``).
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from workbench.scoring import METRICS

METRIC_COLORS = {"first_token_acc": "#4C78A8", "exact_match": "#F58518"}


def accuracy_bar_chart(summary: pd.DataFrame, title: str | None = None) -> go.Figure:
    """Grouped bars: one trace per metric, one bar per method (per task and method when the
    summary holds several tasks). A ``majority_baseline`` column, if present, is drawn as a
    dashed line: the exact match of always answering the most common training output."""
    several_tasks = "task" in summary.columns and summary["task"].nunique() > 1
    methods = summary["method"].tolist()
    x = [summary["task"].tolist(), methods] if several_tasks else methods
    n = summary["n"].tolist() if "n" in summary.columns else [None] * len(summary)

    fig = go.Figure()
    for column, label in METRICS.items():
        if column not in summary.columns:  # results saved before the metric existed
            continue
        fig.add_trace(
            go.Bar(
                name=label,
                x=x,
                y=summary[column].tolist(),
                customdata=n,
                marker_color=METRIC_COLORS.get(column),  # a metric added later: plotly's next colour
                text=[f"{v:.0%}" for v in summary[column]],
                textposition="outside",
                hovertemplate=f"{label}: %{{y:.1%}}<br>queries: %{{customdata}}<extra>%{{x}}</extra>",
            )
        )

    if "majority_baseline" in summary.columns:
        if several_tasks:  # one marker per bar group, since each task has its own baseline
            fig.add_trace(
                go.Scatter(
                    name="majority baseline (exact match)",
                    x=x,
                    y=summary["majority_baseline"].tolist(),
                    mode="markers",
                    marker=dict(symbol="line-ew-open", size=40, line=dict(width=2, color="#555")),
                    hovertemplate="majority baseline: %{y:.1%}<extra>%{x}</extra>",
                )
            )
        else:
            baseline = float(summary["majority_baseline"].iloc[0])
            fig.add_hline(
                y=baseline,
                line_dash="dash",
                line_color="#555",
                annotation_text=f"majority baseline {baseline:.0%}",
                annotation_position="top left",
            )

    fig.update_layout(
        barmode="group",
        title=title,
        yaxis=dict(title="accuracy", tickformat=".0%", range=[0, 1.12]),
        xaxis=dict(title=None),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        margin=dict(t=60 if title else 40, b=40, l=60, r=20),
        height=380,
    )
    return fig

