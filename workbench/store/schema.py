"""The run-metadata schema: what every run's ``meta.json`` holds, checked on load.

Version 2 (every method writes the same fields)::

    schema        1
    id, method    the run id, the registry name ("SITE", "TV", ...)
    created       local time of the save, ISO 8601
    model         {"model": name, "n_layers", "n_heads", "n_kv_heads", "d_head", "d_model"}
    tasks         [task names]
    task_sources  {task: {"path": file it was read from ("" if none), "sha256": content hash
                  ("" only in runs upgraded from version 0 whose task could not be found)}}
    split_sizes   {task: {"train": n, "valid": n, "test": n, ...}}: the task's split, and since
                  the selection sets (fit_pool, selection, selection_from_train) the pool a
                  method fits on and the items that choose its step or layer
    config        the method's config (template, seed and its own settings)
    template      the template's name and literal text (PromptTemplate.describe())
    fit           {"seconds": fit time, ...the method's own record: layer, curves, trace}
    metrics       {task: {"test_first_token_acc", "test_exact_match", "n_test", ...}}; {} if unscored
    versions      {"workbench", "torch", "transformers", "transformer_lens", "python"}
    spec          the fit spec (workbench.spec.FitSpec.to_dict): method, model, tasks with
                  their paths and hashes, every setting, bos, device; fitting it again makes
                  this run again
    spec_hash     the spec's identity (workbench.spec.spec_hash): 16 hex digits
    sweep         optional: the id of the sweep that made the run

Older runs are upgraded by :func:`upgrade`: version 1 (no spec) gets the spec its fields
name (bos from the recorded prompt start, device unknown); runs saved before the schema had
a version (version 0: no ``schema`` key, the fit record spread over the top level, metrics
under other names, often no split sizes) need the task's data to recover split sizes and
content hashes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from numbers import Number
from pathlib import Path

from workbench.scoring import ANSWER_METRICS
from workbench.spec import spec_hash
from workbench.tasks.files import DATA_DIR
from workbench.tasks.task import SPLITS, Task

SCHEMA_VERSION = 2
MODEL_FIELDS = ("n_layers", "n_heads", "n_kv_heads", "d_head", "d_model")
FIRST_TOKEN, PREFIX, EXACT = ANSWER_METRICS
TEST_METRICS = (FIRST_TOKEN.run_key, EXACT.run_key, "n_test")  # prefix match joined later:
# its run key is written by every scored run since, and checked where present
_CORE = ("id", "method", "created", "model", "tasks", "versions")
_COMMON = (
    *_CORE, "schema", "task_sources", "split_sizes", "config", "template", "fit", "metrics", "spec",
    "spec_hash",
)

TaskLookup = Callable[[str], "Task | None"]


class SchemaError(ValueError):
    """A run's metadata does not follow the schema; the message names the run and the field."""


def validate(meta: dict) -> dict:
    """Raise :class:`SchemaError` unless ``meta`` follows the current schema version; returns it."""
    where = f"Run {meta.get('id', '(no id)')!r}" if isinstance(meta, dict) else "Run"
    if not isinstance(meta, dict):
        raise SchemaError(f"{where}: meta.json is not a JSON object.")
    if meta.get("schema") != SCHEMA_VERSION:
        raise SchemaError(f"{where}: schema version {meta.get('schema')!r}, expected {SCHEMA_VERSION}.")
    missing = [key for key in _COMMON if key not in meta]
    if missing:
        raise SchemaError(f"{where}: meta.json lacks {', '.join(missing)}.")

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise SchemaError(f"{where}: {what}.")

    need(isinstance(meta["id"], str) and bool(meta["id"]), "'id' must be a non-empty string")
    need(isinstance(meta["method"], str) and bool(meta["method"]), "'method' must be a non-empty string")
    need(isinstance(meta["created"], str) and bool(re.match(r"\d{4}-\d\d-\d\dT", meta["created"])),
         "'created' must be an ISO time")
    model = meta["model"]
    need(isinstance(model, dict) and isinstance(model.get("model"), str), "'model' must name the model")
    for key in MODEL_FIELDS:
        need(isinstance(model.get(key), int) and model[key] > 0, f"'model.{key}' must be a positive integer")
    tasks = meta["tasks"]
    need(isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks),
         "'tasks' must be a non-empty list of names")
    for task in tasks:
        sizes = meta["split_sizes"].get(task) if isinstance(meta["split_sizes"], dict) else None
        need(isinstance(sizes, dict) and all(isinstance(sizes.get(s), int) and sizes[s] >= 0 for s in SPLITS),
             f"'split_sizes' lacks train / valid / test counts for task {task!r}")
        source = meta["task_sources"].get(task) if isinstance(meta["task_sources"], dict) else None
        need(isinstance(source, dict) and isinstance(source.get("path"), str)
             and bool(re.fullmatch(r"([0-9a-f]{64})?", str(source.get("sha256", "-")))),
             f"'task_sources' lacks the path and sha256 of task {task!r}")
    config = meta["config"]
    need(isinstance(config, dict) and "template" in config and "seed" in config,
         "'config' must be an object with template and seed")
    need(isinstance(meta["template"], str), "'template' must be a string")
    # optional: older runs lack it
    need(isinstance(meta.get("prompt_start", ""), str), "'prompt_start' must be a string")
    need(isinstance(meta["fit"], dict) and isinstance(meta["fit"].get("seconds"), Number),
         "'fit' must be an object with the fit's seconds")
    held_out = meta.get("held_out", [])  # optional: tasks a mixture fit kept out, scored as unseen
    need(isinstance(held_out, list) and all(isinstance(t, str) and t and t not in tasks for t in held_out),
         "'held_out' must be a list of task names the run was not fitted on")
    metrics = meta["metrics"]
    need(isinstance(metrics, dict), "'metrics' must be an object")
    for task, scores in metrics.items():
        need(task in tasks or task in held_out,
             f"'metrics' has task {task!r}, which the run was not fitted on (nor holds out)")
        need(isinstance(scores, dict) and all(k in scores for k in TEST_METRICS),
             f"'metrics.{task}' lacks {', '.join(TEST_METRICS)}")
        for key in (m.run_key for m in ANSWER_METRICS):
            if key in scores:
                need(isinstance(scores[key], Number) and 0 <= scores[key] <= 1,
                     f"'metrics.{task}.{key}' must be in [0, 1]")
        need(isinstance(scores["n_test"], int) and scores["n_test"] >= 1,
             f"'metrics.{task}.n_test' must be >= 1")
    need(isinstance(meta["versions"], dict), "'versions' must be an object")
    spec = meta["spec"]
    need(isinstance(spec, dict) and spec.get("method") == meta["method"]
         and isinstance(spec.get("tasks"), list)
         and [t.get("name") for t in spec["tasks"] if isinstance(t, dict)] == tasks
         and isinstance(spec.get("settings"), dict) and isinstance(spec.get("model"), str)
         and isinstance(spec.get("bos"), bool),
         "'spec' must name the run's method, model, tasks (in order), settings and bos")
    need(meta["spec_hash"] == spec_hash(spec), "'spec_hash' does not match its spec")
    need(isinstance(meta.get("sweep", ""), str), "'sweep' must be a sweep id")
    return meta


def _filled_settings(method: str, config: dict) -> dict:
    """A run's config with the settings added since filled in with their defaults (the values
    its fit used), where the method is known and the config fits it; else as recorded."""
    from workbench.methods import get_method

    try:
        return get_method(method).Config(**config).as_dict()
    except (TypeError, ValueError):
        return dict(config)


def task_source(task: Task) -> dict:
    """{"path", "sha256"} of a task, as ``task_sources`` records it (a built-in task's path
    relative to the repository, so bundled runs name no machine's folders)."""
    path = Path(task.path) if task.path else None
    root = DATA_DIR.parents[1]
    if path is not None and path.is_absolute() and path.is_relative_to(root):
        path = path.relative_to(root)
    return {"path": "" if path is None else str(path), "sha256": task.content_hash}


def upgrade(meta: dict, lookup: TaskLookup) -> dict:
    """An older ``meta.json`` in the current schema version (a new dict; a current one is
    returned as is).

    ``lookup(name)`` gives the task a run was fitted on (or None); split sizes and content
    hashes are recovered from it. Raises :class:`SchemaError` when they cannot be."""
    if meta.get("schema") == SCHEMA_VERSION:
        return meta
    if "schema" in meta and meta["schema"] not in (1,):
        raise SchemaError(f"Run {meta.get('id')!r}: unknown schema version {meta['schema']!r}.")
    where = f"Run {meta.get('id', '(no id)')!r}"
    missing = [key for key in _CORE if key not in meta]
    if missing:
        raise SchemaError(f"{where}: meta.json lacks {', '.join(missing)}.")
    version = meta.get("schema", 0)
    try:
        if version == 0:
            meta = _upgrade_version_0(meta, lookup, where)
        return _upgrade_version_1(meta, version)
    except SchemaError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # fields of the wrong type
        raise SchemaError(f"{where}: its version-{version} metadata cannot be upgraded "
                          f"({type(err).__name__}: {err}).") from None


def _upgrade_version_1(meta: dict, version: int) -> dict:
    """Version 1 in version 2: the spec its fields name (:func:`with_spec`)."""
    new = with_spec(meta)
    new["schema"] = SCHEMA_VERSION
    new.setdefault("migrated_from", version)
    return new


def with_spec(meta: dict) -> dict:
    """``meta`` with the spec its other fields name, and its hash (:func:`spec_of`)."""
    spec = spec_of(meta)
    return {**meta, "spec": spec, "spec_hash": spec_hash(spec)}


def spec_of(meta: dict) -> dict:
    """The fit spec a run's other fields name: method, model, tasks (paths and hashes),
    config, and bos from the recorded prompt start (runs older than it had the BOS, then the
    default); where the fit ran is not known."""
    sources = meta["task_sources"]
    spec = {
        "version": 1,
        "method": meta["method"],
        "model": meta["model"]["model"],
        "tasks": [{"name": t, "path": sources.get(t, {}).get("path", ""),
                   "sha256": sources.get(t, {}).get("sha256", ""),
                   "keep_first_duplicates": False} for t in meta["tasks"]],
        "settings": _filled_settings(meta["method"], meta["config"]),
        "bos": meta.get("prompt_start", None) != "",
        "device": None,
    }
    return spec


def _upgrade_version_0(meta: dict, lookup: TaskLookup, where: str) -> dict:
    tasks = meta["tasks"]
    if not (isinstance(tasks, list) and tasks and all(isinstance(t, str) and t for t in tasks)):
        raise SchemaError(f"{where}: 'tasks' must be a non-empty list of names.")
    old = dict(meta)
    new = {key: old.pop(key) for key in _CORE}
    seed = int(old.get("config", {}).get("seed", 0))
    sizes = old.pop("split_sizes", None) or {}
    sources = {}
    for name in new["tasks"]:
        task = lookup(name)
        if name not in sizes:
            if task is None:
                raise SchemaError(
                    f"{where} predates run schema {SCHEMA_VERSION} and its task {name!r} cannot be found, so "
                    "its split sizes cannot be recovered: fit it again."
                )
            sizes[name] = task.split_sizes(seed)
        sources[name] = task_source(task) if task is not None else {"path": "", "sha256": ""}
    metrics = old.pop("metrics", None) or {}
    if metrics and not all(isinstance(v, dict) for v in metrics.values()):
        metrics = {new["tasks"][0]: metrics}  # a flat score dict of a one-task run
    new.update(
        schema=1,
        migrated_from=0,
        task_sources=sources,
        split_sizes=sizes,
        config=old.pop("config", {}),
        template=old.pop("template", ""),
        metrics={task: _upgrade_scores(scores, sizes.get(task, {})) for task, scores in metrics.items()},
    )
    new["fit"] = {"seconds": float(old.pop("fit_seconds", 0.0)), **old}  # what is left is the method's record
    return new


def _upgrade_scores(scores: dict, sizes: dict) -> dict:
    """Version-0 scores: the benchmark's "first" / "exact" columns (on the whole test split)
    become the test metrics; its bookkeeping columns are dropped."""
    scores = dict(scores)
    for metric in ANSWER_METRICS:
        for alias in metric.aliases:
            if metric.run_key not in scores and alias in scores:
                scores[metric.run_key] = scores.pop(alias)
    if "n_test" not in scores:
        scores["n_test"] = scores.pop("n", None) or sizes.get("test")
    for key in ("task", "method", "note", "fit_s", "n", *(a for m in ANSWER_METRICS for a in m.aliases)):
        scores.pop(key, None)
    return scores
