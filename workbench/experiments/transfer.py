"""Do the heads one method selects for task A also carry task B? (docs/methods.md, "SITE",
transfer matrix; across methods too.)

Cell (A, B): task B evaluated zero-shot with B's own task embedding t_B mixed in at the
heads selected for A: the edit ``mix_heads(selection_A, t_B)`` of SITE's injection. The
selection comes from any head map (a :class:`Source`):

* a map that is itself a head selection (SITE's alpha_A) as it is (the source label is the
  task name, as in the paper);
* the top-k heads of any method's relevance map as a 0/1 selection (SITE alpha, the FV
  indirect effect, LTV's |theta|; label ``"A · FV top-10"``), so the heads of one method
  can be tried with another method's injection, on its own task or on another.

The diagonal (B, B) is plain SITE on B, every cell's reference: ``relative`` = first-token
accuracy of (A, B) / that of (B, B). Next to it, how alike the two head maps are: cosine
of alpha_A and alpha_B, and the Jaccard index of their head sets {alpha > 0.5}.

* :func:`head_selection`: a :class:`Source` from a method's fit;
* :func:`transfer_cell`: one cell's per-query outcomes (``workbench.evaluation`` rows).
* :func:`transfer_per_query` -> :func:`summarize_transfer` = :func:`transfer_matrix`:
  the long table, one row per (source, target); :func:`method_transfer_summary` averages
  it per source method, same task against other tasks.
* :func:`map_similarity`, :func:`cluster_order`, :func:`matrix_order`: similarity of maps,
  and an order that puts similar tasks next to each other (average-linkage clustering).

Figures of all this are in ``analyses/figures/transfer.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from workbench.experiments.evaluation import evaluate, side_by_side
from workbench.experiments.head_maps import SELECTED, as_map
from workbench.interventions import Intervention, mix_heads
from workbench.methods import Method
from workbench.methods.selection import top_k_mask
from workbench.model.loading import LoadedModel
from workbench.progress import Progress
from workbench.tasks.task import Task

ALPHA_KIND = "SITE alpha"
TRANSFER_VALUES = {
    "relative": "relative to own alpha (first token)",
    "first_token_acc": "first-token accuracy",
    "prefix_match": "prefix match",
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
OPTIONAL_COLUMNS = ["prefix_match"]  # tables computed before the third metric lack it


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


def head_selection(fit: Method, k: int | None = None) -> Source:
    """A :class:`Source` from a fitted method: its map as it is when ``k`` is None (only for a
    map that is a head selection, SITE's alpha), else the top-k heads of its relevance map
    as 0/1."""
    if k is None:
        if fit.head_map_info is None or not fit.head_map_info.is_selection:
            raise ValueError(f"A {fit.name} map is not a head selection: give k to take its top-k heads.")
        return Source(fit.label, fit.name, fit.head_map())
    if k < 1:
        raise ValueError("k must be at least 1.")
    return Source(fit.label, fit.name, top_k_mask(fit.relevance(), k).float(), int(k))


def embedding_of(fit: Method, task: str) -> torch.Tensor:
    """Task ``task``'s embedding t (L, H, d_head) in a fit that keeps one per task (SITE)."""
    embeddings = getattr(fit, "embeddings", None)
    if embeddings is None:
        raise ValueError(f"A {fit.name} fit keeps no task embedding to inject.")
    if task not in embeddings:
        raise KeyError(
            f"This {fit.name} fit has no embedding for task {task!r}; it has {', '.join(embeddings)}."
        )
    return embeddings[task]


# ----------------------------------------------------------------------------- evaluation


def transfer_cell(
    model: LoadedModel,
    task_b: Task,
    source_a: Source | Method,
    fit_b: Method,
    *,
    limit: int | None = None,
    split: str = "test",
    batch_size: int = 16,
    source: str | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Per-query outcomes of task B with ``mix_heads(selection_A, t_B)``, prompted and split as
    B was fitted (B's template and seed): ``evaluate`` rows (``task`` is B, ``target`` the
    expected answer) plus columns source (``source``, default the Source's label),
    source_method, source_task and k. A fitted method as ``source_a`` means its selection map."""
    if not isinstance(source_a, Source):
        source_a = head_selection(source_a)
    source = source or source_a.label
    embedding = embedding_of(fit_b, task_b.name)  # (L, H, d_head)
    selection = source_a.selection.to(embedding.device)  # (L, H)
    if selection.shape != embedding.shape[:2]:
        raise ValueError(
            f"The heads of {source} have shape {tuple(selection.shape)} but {task_b.name}'s embedding "
            f"is {tuple(embedding.shape)}: fitted on different models."
        )
    injection = Intervention(f"SITE heads of {source}", (mix_heads(selection, embedding),))
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
    fits: Mapping[str, Method],
    *,
    sources: Sequence[str | Source] | None = None,
    limit: int | None = None,
    split: str = "test",
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Every cell's per-query outcomes, one long frame: for each target B in ``tasks``, each
    source in ``sources`` (a task name: its fit's selection map from ``fits``; or a :class:`Source`;
    default: the tasks' own alphas). B's own alpha is always included, as every cell's
    reference. ``progress("source -> target", cells done, cells, {})`` after each cell
    (:mod:`workbench.progress`)."""
    sources = list(sources) if sources is not None else [t.name for t in tasks]
    named = [s for s in sources if isinstance(s, str)]
    missing = [name for name in {*named, *(t.name for t in tasks)} if name not in fits]
    if missing:
        raise KeyError(f"No SITE fit for {', '.join(sorted(missing))}.")
    resolved = {s.label: s for s in (head_selection(fits[s]) if isinstance(s, str) else s for s in sources)}
    cells = [(label, task) for task in tasks for label in dict.fromkeys([task.name, *resolved])]  # own first
    frames = []
    for done, (label, task) in enumerate(cells, start=1):
        source = resolved.get(label) or head_selection(fits[label])
        frames.append(transfer_cell(model, task, source, fits[task.name], limit=limit, split=split))
        if progress:
            progress(f"{label} -> {task.name}", done, len(cells), {})
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
            **({"prefix_match": ("prefix_match", "mean")} if "prefix_match" in per_query else {}),
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
    return frame[COLUMNS + [c for c in OPTIONAL_COLUMNS if c in frame]]


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
    fits: Mapping[str, Method],
    *,
    limit: int | None = None,
    split: str = "test",
    progress: Progress | None = None,
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


def matrix_order(matrix: pd.DataFrame, similarity: pd.DataFrame | None = None) -> list[str]:
    """The order of a long matrix's rows and columns: the tasks clustered by ``similarity``
    (task x task, e.g. the cosine of :func:`map_similarity`; None keeps their order), then
    the top-k sources grouped by method, each group in the tasks' order."""
    frame = _with_source_columns(matrix)
    top_k = frame["k"].notna() & (frame["source"] != frame["source_task"])
    names = list(dict.fromkeys([*frame.loc[~top_k, "source"], *frame["target"]]))  # the tasks
    order = cluster_order(similarity) if similarity is not None else names
    order = [n for n in order if n in names] + [n for n in names if n not in order]
    position = {name: i for i, name in enumerate(order)}
    labelled = frame[top_k].drop_duplicates("source")  # top-k sources: by method, then task order
    method_of = dict(zip(labelled["source"], labelled["source_method"].astype(str)))
    task_of = dict(zip(labelled["source"], labelled["source_task"]))
    return order + sorted(method_of, key=lambda s: (method_of[s], position.get(task_of[s], len(position))))


def cell_queries(
    model: LoadedModel,
    task_b: Task,
    source_a: Source | Method,
    fit_b: Method,
    *,
    limit: int | None = None,
    label: str | None = None,
) -> pd.DataFrame:
    """One cell's per-query rows beside the target's own: task B with the heads of ``source_a``
    (labelled ``label``) and with B's own selection map (labelled B), in one frame."""
    own = transfer_cell(model, task_b, fit_b, fit_b, limit=limit, source=task_b.name)
    if label == task_b.name:
        return own
    return pd.concat(
        [transfer_cell(model, task_b, source_a, fit_b, limit=limit, source=label), own], ignore_index=True
    )


def cell_table(rows: pd.DataFrame, target: str) -> pd.DataFrame:
    """:func:`cell_queries` rows side by side per query: "heads of A" beside "own alpha"."""
    own_last = rows.sort_values("source", key=lambda s: s == target, kind="stable")
    labels = own_last["source"].map(lambda a: "own alpha" if a == target else f"heads of {a}")
    return side_by_side(own_last.assign(method=labels))
