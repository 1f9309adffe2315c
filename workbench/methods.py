"""The fitted methods side by side: one registry entry per method, and one comparison loop.

Each method lives in its own module (``site``, ``task_vector``, ``function_vector``,
``ltv``) with the same shape: a config dataclass, ``fit_*``, a fit object whose
``intervention()`` hooks a zero-shot query, and ``to_run`` / ``from_run`` for the run
store. :data:`METHODS` names those pieces once, so the CLI, the benchmark scripts and the
app fit, load and compare any method the same way.

Head maps. SITE, FV and LTV each leave one value per attention head, (L, H):

* SITE: alpha[l,h] in [0, 1], how much of the head's output the task embedding replaces;
* FV: the average indirect effect of patching the head's mean output (signed);
* LTV: theta[l,h], the head's weight in the learned vector (signed).

:func:`relevance` turns a map into "how much does this head matter" for ranking: alpha and
the indirect effect as they are, |theta| for LTV (a large negative weight matters as much
as a large positive one). TV acts on the residual stream of one layer: it has no head map.

:func:`compare_methods` evaluates zero-shot, k-shot ICL and each given fit on the same
queries, timing each, and returns the per-query rows (``workbench.evaluation``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pandas as pd
import torch

from workbench import function_vector, ltv, site, task_vector
from workbench.evaluation import evaluate, summarize
from workbench.measure import Measure
from workbench.models import LoadedModel
from workbench.tasks import Task


@dataclass(frozen=True)
class Method:
    name: str
    title: str
    module: ModuleType  # has to_run(fit, model, metrics) and from_run(run, model)
    fit: Callable  # fit(model, task, config, progress=None) -> fit object
    config: type  # the config dataclass; every one has ``template`` and ``seed``
    map_of: Callable[[Any], torch.Tensor] | None = None  # fit -> (L, H) head map
    map_label: str = ""
    signed: bool = False  # the map has both signs (coloured on a diverging scale)

    def intervention(self, fit, task: str):
        """The fit's intervention for ``task`` (SITE fits may hold several tasks)."""
        return fit.intervention(task) if self.name == "SITE" else fit.intervention()

    def head_map(self, fit) -> torch.Tensor:
        if self.map_of is None:
            raise ValueError(f"{self.name} has no per-head map (it acts on the residual stream).")
        return self.map_of(fit).detach().float().cpu()


METHODS: dict[str, Method] = {
    "TV": Method("TV", "Task vector", task_vector, task_vector.fit_task_vector, task_vector.TaskVectorConfig),
    "FV": Method(
        "FV",
        "Function vector",
        function_vector,
        function_vector.fit_function_vector,
        function_vector.FunctionVectorConfig,
        map_of=lambda fit: fit.effects,
        map_label="indirect effect",
        signed=True,
    ),
    "LTV": Method(
        "LTV",
        "Learnable task vector",
        ltv,
        ltv.fit_ltv,
        ltv.LtvConfig,
        map_of=lambda fit: fit.theta,
        map_label="theta",
        signed=True,
    ),
    "SITE": Method(
        "SITE",
        "Soft injection (SITE)",
        site,
        site.fit_site,
        site.SiteConfig,
        map_of=lambda fit: fit.alpha,
        map_label="alpha",
    ),
}
HEAD_MAP_METHODS = [name for name, method in METHODS.items() if method.map_of is not None]


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"Unknown method {name!r}; known: {', '.join(METHODS)}.") from None


def fit_method(model: LoadedModel, task: Task, name: str, config=None, progress=None):
    """Fit one method on one task with its config (default: the method's defaults)."""
    method = get_method(name)
    return method.fit(model, task, config or method.config(), progress=progress)


def load_fit(run, model: LoadedModel | None = None):
    """A stored run (any method) as its fit object, checked against ``model``."""
    return get_method(run.method).module.from_run(run, model)


def relevance(method: str, head_map: torch.Tensor) -> torch.Tensor:
    """How much each head matters, for ranking heads: |theta| for LTV, the map otherwise."""
    return head_map.abs() if method == "LTV" else head_map


def read_progress(*report) -> tuple[str, int, int]:
    """Any method's progress report as (stage, done, total): SITE and LTV report (step, total,
    record), TV (done, total), FV (stage, done, total)."""
    if report and isinstance(report[0], str):
        return report[0], int(report[1]), int(report[2])
    return "", int(report[0]), int(report[1])


def fit_score_save(
    model: LoadedModel,
    tasks: Task | list[Task],
    name: str,
    config,
    store,
    *,
    eval_limit: int | None = None,
    score: bool = True,
    progress=None,
) -> tuple[Any, str, dict]:
    """Fit method ``name``, score each task's test split with the fit, save it to ``store``.

    Several tasks make one task-agnostic fit (SITE only). Returns (fit, run id, metrics by
    task); the metrics are stored with the run. ``progress`` is the method's own callback."""
    method = get_method(name)
    tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
    if len(tasks) != 1 and name != "SITE":
        raise ValueError(f"{name} is fitted per task; only SITE fits one map for several tasks.")
    fit = method.fit(model, tasks if name == "SITE" else tasks[0], config, progress=progress)
    metrics = {}
    for task in tasks if score else []:
        frame = evaluate(
            model,
            task,
            template=config.template,
            intervention=method.intervention(fit, task.name),
            limit=eval_limit,
            seed=config.seed,
        )
        row = summarize(frame).iloc[0]
        metrics[task.name] = {
            "test_first_token_acc": float(row.first_token_acc),
            "test_exact_match": float(row.exact_match),
            "n_test": int(row.n),
        }
    sizes = {t.name: {k: len(v) for k, v in vars(t.split(config.seed)).items()} for t in tasks}
    run_id = store.save(method.module.to_run(fit, model, metrics=metrics, split_sizes=sizes))
    return fit, run_id, metrics


# ----------------------------------------------------------------------------- comparison

Progress = Callable[[str, int, int], None]  # (method, done, total)


def compare_methods(
    model: LoadedModel,
    task: Task,
    fits: Mapping[str, Any],
    *,
    template: str,
    shots: int = 10,
    limit: int | None = None,
    split: str = "test",
    seed: int = 0,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Zero-shot, ``shots``-shot ICL and every fit in ``fits`` (method name -> fit) on the same
    queries. Returns (per-query rows, one summary row per method with seconds_per_query,
    prompt_tokens and the evaluation's peak memory ``eval_peak_mib``)."""
    runs: list[tuple[str, dict]] = [("zero-shot", {"shots": 0}), (f"{shots}-shot ICL", {"shots": shots})]
    for name, fit in fits.items():
        runs.append((name, {"intervention": get_method(name).intervention(fit, task.name)}))
    frames, peaks = [], {}
    for label, kwargs in runs:
        report = (lambda done, total, label=label: progress(label, done, total)) if progress else None
        with Measure(model.device) as measure:
            frames.append(
                evaluate(
                    model,
                    task,
                    template=template,
                    split=split,
                    limit=limit,
                    seed=seed,
                    method=label,
                    progress=report,
                    **kwargs,
                )
            )
        peaks[label] = measure.peak_mib
    per_query = pd.concat(frames, ignore_index=True)
    summary = summarize(per_query)
    summary["eval_peak_mib"] = summary["method"].map(peaks)
    return per_query, summary
