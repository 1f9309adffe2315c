"""Do the heads one method selects for task A also carry task B? (METHODS.md, "SITE",
transfer matrix; across methods too.)

Cell (A, B): task B evaluated zero-shot with B's own task embedding t_B injected at the
heads selected for A, ``SoftInjection(selection_A, t_B)``. The selection comes from any
head map (a :class:`Source`):

* SITE's alpha_A as it is (the source label is the task name, as in the paper);
* the top-k heads of a map as a 0/1 selection: SITE alpha, the FV indirect effect or
  LTV's |theta| (label ``"A · FV top-10"``), so the heads of one method can be tried with
  another method's injection, on its own task or on another.

The diagonal (B, B) is plain SITE on B, every cell's reference: ``relative`` = first-token
accuracy of (A, B) / that of (B, B). Next to it, how alike the two head maps are: cosine
of alpha_A and alpha_B, and the Jaccard index of their head sets {alpha > 0.5}.

* :func:`head_selection`: a :class:`Source` from a method's fit;
* :func:`transfer_cell`: one cell's per-query outcomes (``workbench.evaluation`` rows).
* :func:`transfer_per_query` -> :func:`summarize_transfer` = :func:`transfer_matrix`:
  the long table, one row per (source, target); :func:`method_transfer_summary` averages
  it per source method, same task against other tasks.
* :func:`map_similarity`, :func:`cluster_order`: similarity of maps, and an order that
  puts similar tasks next to each other (average-linkage clustering in numpy).
* :func:`transfer_figure`, :func:`similarity_figure`, :func:`transfer_vs_similarity_figure`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from analyses.head_relevance import SELECTED, _outline, add_click_targets, as_map
from workbench.evaluation import evaluate
from workbench.function_vector import top_k_mask
from workbench.methods import get_method, relevance
from workbench.models import LoadedModel
from workbench.site import SiteFit, SoftInjection
from workbench.tasks import Task

ALPHA_KIND = "SITE alpha"
CellProgress = Callable[[int, int, str, str], None]  # (cells done, cells, source, target)
TRANSFER_VALUES = {
    "relative": "relative to own alpha (first token)",
    "first_token_acc": "first-token accuracy",
    "exact_match": "exact match",
    "relative_exact_match": "relative to own alpha (exact match)",
}
COLUMNS = [
    "source",
    "target",
    "source_method",
    "source_task",
    "k",
    "n",
    "first_token_acc",
    "exact_match",
    "own_first_token_acc",
    "own_exact_match",
    "relative",
    "relative_exact_match",
]


class Source(NamedTuple):
    """Where a cell's heads come from: ``selection`` (L, H) in [0, 1] from ``method``'s map
    of ``task``; ``k`` None for SITE's alpha as it is, else the top-k heads as 0/1."""

    task: str
    method: str
    selection: torch.Tensor
    k: int | None = None

    @property
    def label(self) -> str:
        return self.task if self.k is None else f"{self.task} · {self.method} top-{self.k}"


def head_selection(method: str, fit, k: int | None = None) -> Source:
    """A :class:`Source` from a fit of ``method`` ("SITE", "FV", "LTV"): SITE's alpha when
    ``k`` is None, else the top-k heads of the method's relevance map, as 0/1."""
    task = fit.task if hasattr(fit, "task") else "+".join(fit.tasks)
    if k is None:
        if method != "SITE":
            raise ValueError(f"A {method} map is not a head selection: give k to take its top-k heads.")
        return Source(task, "SITE", fit.alpha.detach())
    if k < 1:
        raise ValueError("k must be at least 1.")
    values = relevance(method, get_method(method).head_map(fit))
    return Source(task, method, top_k_mask(values, k).float(), int(k))


# ----------------------------------------------------------------------------- evaluation


def transfer_cell(
    model: LoadedModel,
    task_b: Task,
    source_a: Source | SiteFit,
    fit_b: SiteFit,
    *,
    limit: int | None = None,
    split: str = "test",
    batch_size: int = 16,
    source: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """Per-query outcomes of task B with ``SoftInjection(selection_A, t_B)``, prompted and split
    as B was fitted (B's template and seed): ``evaluate`` rows (``task`` is B, ``target`` the
    expected answer) plus columns source (``source``, default the Source's label),
    source_method, source_task and k. A SiteFit as ``source_a`` means its alpha."""
    if isinstance(source_a, SiteFit):
        source_a = head_selection("SITE", source_a)
    source = source or source_a.label
    embedding = fit_b.intervention(task_b.name).embedding  # raises a clear KeyError if B is missing
    selection = source_a.selection.to(embedding.device)
    if selection.shape != embedding.shape[:2]:
        raise ValueError(
            f"The heads of {source} have shape {tuple(selection.shape)} but {task_b.name}'s embedding "
            f"is {tuple(embedding.shape)}: fitted on different models."
        )
    injection = SoftInjection(selection, embedding, name=f"SITE heads of {source}")
    frame = evaluate(
        model,
        task_b,
        template=fit_b.config.template,
        split=split,
        limit=limit,
        intervention=injection,
        seed=fit_b.config.seed,
        batch_size=batch_size,
        progress=progress,
    )
    frame.insert(0, "source", source)
    frame.insert(1, "source_method", source_a.method)
    frame.insert(2, "source_task", source_a.task)
    frame.insert(3, "k", source_a.k)
    return frame


def transfer_per_query(
    model: LoadedModel,
    tasks: Sequence[Task],
    fits: Mapping[str, SiteFit],
    *,
    sources: Sequence[str | Source] | None = None,
    limit: int | None = None,
    split: str = "test",
    progress: CellProgress | None = None,
) -> pd.DataFrame:
    """Every cell's per-query outcomes, one long frame: for each target B in ``tasks``, each
    source in ``sources`` (a task name: its SITE alpha from ``fits``; or a :class:`Source`;
    default: the tasks' own alphas). B's own alpha is always included, as every cell's
    reference. ``progress`` is called after each cell."""
    sources = list(sources) if sources is not None else [t.name for t in tasks]
    named = [s for s in sources if isinstance(s, str)]
    missing = [name for name in {*named, *(t.name for t in tasks)} if name not in fits]
    if missing:
        raise KeyError(f"No SITE fit for {', '.join(sorted(missing))}.")
    resolved = {
        s.label: s for s in (head_selection("SITE", fits[s]) if isinstance(s, str) else s for s in sources)
    }
    cells = [(label, task) for task in tasks for label in dict.fromkeys([task.name, *resolved])]  # own first
    frames = []
    for done, (label, task) in enumerate(cells, start=1):
        source = resolved.get(label) or head_selection("SITE", fits[label])
        frames.append(transfer_cell(model, task, source, fits[task.name], limit=limit, split=split))
        if progress:
            progress(done, len(cells), label, task.name)
    return pd.concat(frames, ignore_index=True)


def _ratio(numerator: pd.Series, denominator: pd.Series) -> pd.Series:
    """numerator / denominator, NaN where the denominator is 0 or missing."""
    denominator = denominator.astype(float)
    return numerator.astype(float) / denominator.where(denominator > 0)


def summarize_transfer(per_query: pd.DataFrame) -> pd.DataFrame:
    """The long matrix from :func:`transfer_per_query` rows (source A, task B): one row per
    (source, target), with n, first_token_acc, exact_match, the target's own (diagonal)
    accuracies and the relative ones (NaN where the own accuracy is 0 or the diagonal is missing)."""
    per_query = _with_source_columns(per_query)
    grouped = per_query.rename(columns={"task": "target_task"}).groupby(["source", "target_task"], sort=False)
    frame = (
        grouped.agg(
            source_method=("source_method", "first"),
            source_task=("source_task", "first"),
            k=("k", "first"),
            n=("exact_match", "size"),
            first_token_acc=("first_token_correct", "mean"),
            exact_match=("exact_match", "mean"),
        )
        .reset_index()
        .rename(columns={"target_task": "target"})
    )
    own = frame[frame["source"] == frame["target"]].set_index("target")
    frame["own_first_token_acc"] = frame["target"].map(own["first_token_acc"])
    frame["own_exact_match"] = frame["target"].map(own["exact_match"])
    frame["relative"] = _ratio(frame["first_token_acc"], frame["own_first_token_acc"])
    frame["relative_exact_match"] = _ratio(frame["exact_match"], frame["own_exact_match"])
    return frame[COLUMNS]


def _with_source_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Tables from before sources had a method: source_method SITE, source_task the source."""
    frame = frame.copy()
    if "source_method" not in frame.columns:
        frame["source_method"] = "SITE"
    if "source_task" not in frame.columns:
        frame["source_task"] = frame["source"]
    if "k" not in frame.columns:
        frame["k"] = np.nan
    return frame


def source_kinds(frame: pd.DataFrame) -> pd.Series:
    """Each row's source head map: "SITE alpha", or "<method> top-<k>"."""
    frame = _with_source_columns(frame)
    k = pd.to_numeric(frame["k"], errors="coerce")
    return pd.Series(
        [ALPHA_KIND if pd.isna(n) else f"{m} top-{int(n)}" for m, n in zip(frame["source_method"], k)],
        index=frame.index,
    )


def method_transfer_summary(frame: pd.DataFrame, value: str = "relative") -> pd.DataFrame:
    """Mean ``value`` per source head map (source_method, k): on the source's own task
    (``same_task``: task B with the heads another method found for B) and on the other tasks
    (``other_tasks``), with the number of cells that have a value (NaN: none). SITE's own
    alpha on its own task is the reference (relative 1) and is left out of ``same_task``."""
    frame = _with_source_columns(frame)
    kinds = source_kinds(frame)
    same = frame["source_task"] == frame["target"]
    rows = []
    for kind, group in frame.groupby(kinds, sort=False):
        own = same[group.index] & (kind != ALPHA_KIND)
        other = ~same[group.index]
        rows.append(
            {
                "heads": kind,
                "same_task": group.loc[own, value].mean(),
                "n_same": int(group.loc[own, value].notna().sum()),
                "other_tasks": group.loc[other, value].mean(),
                "n_other": int(group.loc[other, value].notna().sum()),
            }
        )
    return pd.DataFrame(rows, columns=["heads", "same_task", "n_same", "other_tasks", "n_other"])


def transfer_matrix(
    model: LoadedModel,
    tasks: Sequence[Task],
    fits: Mapping[str, SiteFit],
    *,
    limit: int | None = None,
    split: str = "test",
    progress: CellProgress | None = None,
) -> pd.DataFrame:
    """Long format, one row per (source A, target B): columns source, target, n,
    first_token_acc, exact_match, own_first_token_acc, own_exact_match, relative,
    relative_exact_match. For the per-query rows, call :func:`transfer_per_query` and
    :func:`summarize_transfer` yourself."""
    return summarize_transfer(
        transfer_per_query(model, tasks, fits, limit=limit, split=split, progress=progress)
    )


def with_similarity(
    frame: pd.DataFrame, maps: Mapping[str, torch.Tensor | np.ndarray], threshold: float = SELECTED
) -> pd.DataFrame:
    """``frame`` (source, target rows) plus alpha_cosine and alpha_jaccard of the two maps."""
    names = sorted({*frame["source"], *frame["target"]} & set(maps))
    cosine, jaccard = map_similarity({n: maps[n] for n in names}, threshold)
    frame = frame.copy()
    pairs = list(zip(frame["source"], frame["target"]))
    frame["alpha_cosine"] = [cosine.at[a, b] if a in names and b in names else np.nan for a, b in pairs]
    frame["alpha_jaccard"] = [jaccard.at[a, b] if a in names and b in names else np.nan for a, b in pairs]
    return frame


def read_transfer_csv(path, model: str | None = None) -> pd.DataFrame:
    """A saved transfer matrix (long format of :func:`transfer_matrix`, maybe with ``limit`` and
    ``model`` columns). Missing own / relative columns are derived from the diagonal; with
    ``model`` and a ``model`` column, only that model's rows."""
    frame = pd.read_csv(path)
    missing = {"source", "target", "first_token_acc"} - set(frame.columns)
    if missing:
        raise ValueError(f"{path} is not a transfer matrix: no column {', '.join(sorted(missing))}.")
    if model is not None and "model" in frame.columns:
        frame = frame[frame["model"] == model].reset_index(drop=True)
    frame = _with_source_columns(frame)
    own = frame[frame["source"] == frame["target"]].set_index("target")
    for metric in ("first_token_acc", "exact_match"):
        if metric not in frame.columns:
            continue
        if f"own_{metric}" not in frame.columns:
            frame[f"own_{metric}"] = frame["target"].map(own[metric])
        relative = "relative" if metric == "first_token_acc" else "relative_exact_match"
        if relative not in frame.columns:
            frame[relative] = _ratio(frame[metric], frame[f"own_{metric}"])
    return frame


# ----------------------------------------------------------------------------- similarity


def map_similarity(
    maps: Mapping[str, torch.Tensor | np.ndarray], threshold: float = SELECTED
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(cosine, Jaccard) task x task frames. Cosine of the flattened maps (NaN with an all-zero
    map); Jaccard of the head sets {value > threshold} (1 for two empty sets: identical)."""
    names = list(maps)
    flat = np.stack([as_map(maps[n]).ravel() for n in names]) if names else np.zeros((0, 0))
    if len({row.size for row in flat}) > 1:
        raise ValueError("The maps have different shapes: fitted on different models?")
    norms = np.linalg.norm(flat, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (flat @ flat.T) / np.outer(norms, norms)
    cosine[np.outer(norms, norms) == 0] = np.nan
    sets = (flat > threshold).astype(np.float64)
    inter = sets @ sets.T
    union = sets.sum(1)[:, None] + sets.sum(1)[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        jaccard = np.where(union > 0, inter / np.where(union > 0, union, 1), 1.0)
    return (
        pd.DataFrame(np.clip(cosine, -1, 1), index=names, columns=names),
        pd.DataFrame(jaccard, index=names, columns=names),
    )


def cluster_order(similarity: pd.DataFrame) -> list[str]:
    """Leaf order of average-linkage agglomerative clustering on 1 - similarity (NaN counts
    as 0 similarity). Deterministic: ties merge the earliest pair; each merge joins the two
    orders at their most similar ends."""
    names = list(similarity.index)
    if len(names) <= 2:
        return names
    sim = similarity.loc[names, names].to_numpy(dtype=np.float64)
    sim = np.where(np.isfinite(sim), sim, 0.0)
    sim = (sim + sim.T) / 2
    distance = 1.0 - sim
    clusters: list[list[int]] = [[i] for i in range(len(names))]
    while len(clusters) > 1:
        best = None
        for i in range(len(clusters)):
            for j in range(i + 1, len(clusters)):
                d = distance[np.ix_(clusters[i], clusters[j])].mean()
                if best is None or d < best[0] - 1e-12:
                    best = (d, i, j)
        _, i, j = best
        left, right = clusters[i], clusters[j]
        candidates = [left + right, left + right[::-1], left[::-1] + right, left[::-1] + right[::-1]]
        joined = max(candidates, key=lambda order: sim[order[len(left) - 1], order[len(left)]])
        clusters = [c for k, c in enumerate(clusters) if k not in (i, j)]
        clusters.insert(i, joined)
    return [names[k] for k in clusters[0]]


# ----------------------------------------------------------------------------- figures


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
        _outline(fig, targets.index(selected[1]), sources.index(selected[0]))
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
