"""Fit a method, score it on held-out queries, save it: what the CLI, the app and the
benchmark scripts do with every fit.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from workbench.experiments.evaluation import evaluate, summarize
from workbench.methods import Method, MethodConfig, Progress, get_method
from workbench.model.loading import LoadedModel
from workbench.scoring import ANSWER_METRICS
from workbench.store.codec import to_run
from workbench.store.runs import RunStore
from workbench.tasks.task import Task


def metrics_from_summary(summary_row) -> dict:
    """A run's test metrics for one task from a row of :func:`evaluate`'s summary."""
    return {**{m.run_key: float(getattr(summary_row, m.summary)) for m in ANSWER_METRICS},
            "n_test": int(summary_row.n), "when": summary_row.when}


def score_fit(
    model: LoadedModel, fit: Method, tasks: Sequence[Task], limit: int | None = None
) -> tuple[dict, pd.DataFrame]:
    """Each task's test split with the fit's intervention: (metrics by task, per-query rows)."""
    metrics, frames = {}, []
    for task in tasks:
        frame = evaluate(
            model, task, template=fit.config.template, intervention=fit.intervention(task.name), limit=limit,
            seed=fit.config.seed,
        )
        metrics[task.name] = metrics_from_summary(summarize(frame).iloc[0])
        frames.append(frame)
    return metrics, pd.concat(frames, ignore_index=True)


def fit_score_save(
    model: LoadedModel,
    tasks: Task | Sequence[Task],
    name: str,
    config: MethodConfig | None,
    store: RunStore,
    *,
    eval_limit: int | None = None,
    score: bool = True,
    progress: Progress | None = None,
) -> tuple[Method, str, dict]:
    """Fit method ``name`` on ``tasks`` (several only for a method that fits several at once),
    score each task's test split with the fit, and save the run with those metrics.
    Returns (fit, run id, metrics by task)."""
    method = get_method(name)
    tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
    (config or method.Config()).check(model.heads.shape.n_layers)  # before any work: no untrained runs
    fit = method.fit(model, tasks, config, progress=progress)
    metrics = score_fit(model, fit, tasks, eval_limit)[0] if score else {}
    run_id = store.save(to_run(fit, model, tasks, metrics))
    return fit, run_id, metrics
