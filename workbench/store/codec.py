"""The one run codec: any fitted method to a :class:`workbench.store.runs.Run` and back.

A method gives its tensors (:meth:`Method.tensors`) and its own fit record
(:meth:`Method.record`); the codec adds what every run records (the schema in
:mod:`workbench.store.schema`, the fit spec of :mod:`workbench.spec` among it) and, on
load, finds the method in the registry, checks the run fits the model, and hands the
pieces to :meth:`Method.restore`.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.methods import Method, get_method
from workbench.methods.selection import selection_split
from workbench.model.loading import LoadedModel
from workbench.spec import FitSpec
from workbench.store.runs import Run, RunError
from workbench.store.schema import task_source
from workbench.tasks.prompts import get_template
from workbench.tasks.task import Task


def to_run(fit: Method, model: LoadedModel, tasks: Task | Sequence[Task], metrics: dict | None = None) -> Run:
    """A run of ``fit`` (fitted on ``tasks`` with ``model``), with test ``metrics`` per task."""
    tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
    if [t.name for t in tasks] != list(fit.tasks):
        raise ValueError(
            f"The {fit.name} fit is for {fit.tasks}, but tasks {[t.name for t in tasks]} were given."
        )
    meta = {
        "task_sources": {t.name: task_source(t) for t in tasks},
        "split_sizes": {
            t.name: {**t.split_sizes(fit.config.seed), **selection_split(t, fit.config.seed).sizes()}
            for t in tasks
        },
        "config": fit.config.as_dict(),
        "template": get_template(fit.config.template).describe(),
        "prompt_start": model.prompt_start,
        "fit": {"seconds": fit.fit_seconds, **fit.record()},
        "metrics": metrics or {},
    }
    spec = FitSpec.of_fit(fit, model, tasks)
    meta.update(spec=spec.to_dict(), spec_hash=spec.hash)
    return Run(fit.name, model.signature, list(fit.tasks), fit.tensors(), meta)


def from_run(run: Run, model: LoadedModel | None = None) -> Method:
    """The fitted method a run holds; with ``model``, checked to fit it and moved to its device."""
    try:
        method = get_method(run.method)
    except ValueError as err:
        raise RunError(f"Run {run.id}: {err}") from None
    device = run.device_for(model)
    try:
        config = method.Config(**run.meta["config"])
    except TypeError as err:
        raise RunError(f"Run {run.id}: its {run.method} config does not fit this version: {err}") from None
    record = dict(run.meta["fit"])
    seconds = float(record.pop("seconds"))
    provenance = {"run_id": run.id, "created": run.created, "template": run.meta["template"],
                  "prompt_start": run.meta.get("prompt_start"), "metrics": run.meta["metrics"]}
    try:
        return method.restore(
            {name: tensor.to(device) for name, tensor in run.tensors.items()},
            record,
            tasks=list(run.tasks),
            config=config,
            fit_seconds=seconds,
            meta=provenance,
        )
    except KeyError as err:
        raise RunError(f"Run {run.id}: its {run.method} tensors or record lack {err}.") from None
