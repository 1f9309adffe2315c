"""Evaluate a grid of tasks x shots in one call: the loop the CLI and the app share.

:func:`evaluate_grid` runs :func:`workbench.experiments.evaluation.evaluate` once per (task, shots)
cell and returns every per-query row in one frame (with a ``model`` column), reporting
progress over the whole grid. :func:`summarize_grid` turns that frame into the summary
table with each task's majority-class baseline beside it.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from workbench.experiments.evaluation import evaluate, majority_baseline, summarize
from workbench.model.loading import LoadedModel
from workbench.progress import Progress, shifted
from workbench.tasks.files import resolve_tasks
from workbench.tasks.prompts import PromptTemplate, get_template
from workbench.tasks.task import Task


def check_grid(tasks: list[Task], shots_list: list[int], *, split: str = "test", seed: int = 0) -> None:
    """Fail fast, before any forward pass, on a grid that cannot run (ValueError)."""
    if not shots_list:
        raise ValueError("No shot counts given.")
    for shots in shots_list:
        if shots < 0:
            raise ValueError(f"shots must be >= 0, got {shots}.")
    for task in tasks:
        splits = task.split(seed)
        if not splits[split]:
            raise ValueError(f"Task {task.name!r} has no {split} items to evaluate.")
        most = max(shots_list)
        if most and len(splits.train) < most + 1:
            raise ValueError(
                f"Task {task.name!r} has {len(splits.train)} train pairs: too few for "
                f"{most}-shot prompts (need {most + 1})."
            )


def grid_size(
    tasks: list[Task], shots_list: list[int], *, split: str = "test", limit: int | None = None, seed: int = 0
) -> int:
    """Queries the grid will run in all (for a progress bar's total)."""
    per_task = [len(t.split(seed)[split][:limit] if limit else t.split(seed)[split]) for t in tasks]
    return sum(per_task) * len(shots_list)


def evaluate_grid(
    model: LoadedModel,
    tasks: Iterable[str | Task],
    shots_list: Iterable[int],
    *,
    template: str | PromptTemplate | None = None,
    split: str = "test",
    limit: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Per-query results for every (task, shots) cell, tasks outermost, in one frame.

    ``progress(cell, done, total, running metrics)`` counts queries over the whole grid
    (``cell`` reads "antonym 10-shot ICL"; :mod:`workbench.progress`). The frame has a leading
    ``model`` column.
    """
    template = get_template(template)
    tasks = resolve_tasks(tasks)
    shots_list = [int(s) for s in shots_list]
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}.")
    check_grid(tasks, shots_list, split=split, seed=seed)
    total = grid_size(tasks, shots_list, split=split, limit=limit, seed=seed)

    frames = []
    offset = 0
    for task in tasks:
        for shots in shots_list:
            frame = evaluate(
                model,
                task,
                shots=shots,
                template=template,
                split=split,
                limit=limit,
                batch_size=batch_size,
                seed=seed,
                progress=shifted(progress, offset, total, f"{task.name} "),
            )
            offset += len(frame)
            frames.append(frame)
    results = pd.concat(frames, ignore_index=True)
    results.insert(0, "model", model.name)
    return results


def summarize_grid(
    results: pd.DataFrame,
    tasks: Iterable[Task],
    *,
    split: str = "test",
    seed: int = 0,
    limit: int | None = None,
) -> pd.DataFrame:
    """:func:`workbench.experiments.evaluation.summarize` plus a ``majority_baseline`` column scored on
    the same items (same split, seed and limit)."""
    table = summarize(results)
    baselines = {t.name: majority_baseline(t, split=split, seed=seed, limit=limit) for t in tasks}
    table["majority_baseline"] = table["task"].map(baselines)
    return table
