"""Every method side by side on the same held-out queries, and the benchmark tables.

:func:`compare_methods` evaluates zero-shot, k-shot ICL and each given fit on the same
queries, timing each and measuring its peak memory. The all-methods benchmark
(``analyses/scripts/bench_methods.py``) saves one row per (task, method) with the columns
of the three answer metrics (their summary names, ``workbench.scoring.ANSWER_METRICS``;
older tables' ``first`` / ``prefix`` / ``exact`` are read as those), tokens (prompt tokens
per query), s_per_query and fit_s;
:func:`from_summary` turns a comparison computed in the app into the same columns.

* :func:`read_benchmark`, :func:`benchmark_files`: the saved tables and their templates;
* :func:`task_view`: one task's rows (or the mean over tasks) in :func:`method_order`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from workbench.experiments.evaluation import evaluate, summarize
from workbench.experiments.measure import Measure
from workbench.methods import METHODS, Method
from workbench.model.loading import LoadedModel
from workbench.progress import Progress
from workbench.scoring import METRICS, current_columns
from workbench.tasks.task import Task

RESULTS = Path(__file__).resolve().parents[2] / "analyses" / "results"
MEAN = "mean over tasks"
REQUIRED = {"task", "method", "first_token_acc", "exact_match", "s_per_query", "tokens"}
BASELINES = ["zero-shot", "ICL"]
MEMORY = ("fit_peak_mib", "eval_peak_mib")  # peak memory of the fit and of the evaluation (MiB)


def compare_methods(
    model: LoadedModel,
    task: Task,
    fits: Mapping[str, Method],
    *,
    template: str,
    shots: int = 10,
    limit: int | None = None,
    split: str = "test",
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zero-shot, ``shots``-shot ICL and every fit in ``fits`` (label -> fit) on the same
    queries. Returns (per-query rows, one summary row per method with seconds_per_query,
    prompt_tokens and the evaluation's peak memory ``eval_peak_mib``). ``progress(label, done,
    total, running metrics)`` counts each method's queries (:mod:`workbench.progress`)."""
    runs: list[tuple[str, dict]] = [("zero-shot", {"shots": 0}), (f"{shots}-shot ICL", {"shots": shots})]
    for label, fit in fits.items():
        runs.append((label, {"intervention": fit.intervention(task.name)}))
    frames, peaks = [], {}
    for label, kwargs in runs:
        with Measure(model.device) as measure:
            frames.append(
                evaluate(
                    model, task, template=template, split=split, limit=limit, seed=seed, method=label,
                    progress=progress, **kwargs,
                )
            )
        peaks[label] = measure.peak_mib
    per_query = pd.concat(frames, ignore_index=True)
    summary = summarize(per_query)
    summary["eval_peak_mib"] = summary["method"].map(peaks)
    return per_query, summary


# ----------------------------------------------------------------------------- benchmark tables


def family(method: str) -> str:
    """'10-shot ICL' -> 'ICL'; other labels as they are."""
    return "ICL" if method.endswith("ICL") else method


def method_order(methods) -> list[str]:
    """Methods in the order zero-shot, ICL, then the registry's, then any others."""
    methods = list(dict.fromkeys(methods))
    rank = {name: i for i, name in enumerate([*BASELINES, *METHODS])}
    return sorted(methods, key=lambda m: (rank.get(family(m), len(rank)), m))


def read_benchmark(path) -> pd.DataFrame:
    """A saved benchmark table (``methods_<model>_<template>.csv``), checked for its columns."""
    frame = current_columns(pd.read_csv(path))
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
    """:func:`compare_methods`' summary in the benchmark's columns."""
    frame = summary.rename(columns={"seconds_per_query": "s_per_query", "prompt_tokens": "tokens"})
    frame["fit_s"] = frame["method"].map(fit_seconds or {}).astype(float)
    return frame


def task_view(table: pd.DataFrame, task: str = MEAN) -> pd.DataFrame:
    """One task's rows, or the mean over tasks (``MEAN``; only tasks where every method
    ran), one row per method in :func:`method_order`."""
    if task == MEAN:
        base = table[~table["method"].str.contains(" | ", regex=False)]  # subset rows may be missing
        counts = base.groupby("task")["method"].nunique()
        complete = counts[counts == counts.max()].index
        rows = table[table["task"].isin(complete)]
        numeric = [c for c in (*METRICS, "tokens", "s_per_query", "fit_s", *MEMORY) if c in rows]
        view = rows.groupby("method", sort=False)[numeric].mean().reset_index()
        view.insert(0, "task", f"{MEAN} ({len(complete)})")
    else:
        view = table[table["task"] == task]
        if view.empty:
            raise ValueError(f"No rows for task {task!r}.")
    order = method_order(view["method"])
    return view.set_index("method").loc[order].reset_index()
