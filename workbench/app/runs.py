"""Fitted runs: the bundled store (read-only, shipped in results/runs) and the user's, each
listed once per change of the store (a run saved here or from the CLI shows at the next
page run), damaged runs skipped and named in the sidebar; the newest fit of a method per
task, and a stored run loaded as its fitted method (cached: runs never change)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app.text import text
from workbench.model.loading import LoadedModel

RUN_STORES = {"bundled": "bundled_store", "user": "user_store"}  # label -> workbench.store.runs factory
RUN_COLUMNS = ["id", "method", "model", "tasks", "created", "metrics", "store"]


def run_store(label: str):
    """The ``bundled`` (read-only, shipped in results/runs) or ``user`` run store."""
    import workbench.store.runs

    return getattr(workbench.store.runs, RUN_STORES[label])()


def _store_stamp(store) -> tuple:
    """What changes when the runs a store lists change: its SQLite index, or (a read-only
    store, listed from its folders) the run folders' metadata files."""
    if not store.read_only:
        index = store.root / "index.sqlite"
        if not index.exists():  # a new store: its first listing creates the index
            return ("index", 0, 0)
        stat = index.stat()
        return ("index", stat.st_mtime_ns, stat.st_size)
    metas = [path.stat().st_mtime_ns for path in store.root.glob("*/meta.json")]
    return ("folders", len(metas), max(metas, default=0))


def _valid_run_row(row) -> bool:
    return (
        isinstance(row.id, str)
        and bool(row.id)
        and isinstance(row.method, str)
        and isinstance(row.model, str)
        and isinstance(row.tasks, list)
        and bool(row.tasks)
        and all(isinstance(t, str) for t in row.tasks)
        and isinstance(row.created, str)
        and isinstance(row.metrics, dict)
    )


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_store(label: str, root: str, stamp: tuple) -> tuple[pd.DataFrame, list[str]]:
    """Every run a store lists (``root`` and ``stamp`` key the cache: a new run, here or from
    the CLI, changes the stamp), and why any were skipped. Never raises: a damaged store or
    run becomes a problem to show. Cached as a resource, shared and not copied: read-only."""
    try:
        frame = run_store(label).list()
    except Exception as err:  # one unreadable file must not take a page down
        return pd.DataFrame(columns=RUN_COLUMNS), [f"The {label} run store ({root}) could not be read: {err}"]
    valid = [_valid_run_row(row) for row in frame.itertuples()]
    problems = [
        f"Skipped a damaged run in the {label} store: {row.id if isinstance(row.id, str) else '(no id)'}"
        for row, ok in zip(frame.itertuples(), valid)
        if not ok
    ]
    frame = frame[pd.Series(valid, index=frame.index, dtype=bool)].reset_index(drop=True)
    frame["store"] = label
    return frame[RUN_COLUMNS], problems


def store_runs(label: str) -> tuple[pd.DataFrame, list[str]]:
    """All runs of one store (columns :data:`RUN_COLUMNS`), read once per change of the
    store, and the problems met reading it."""
    try:
        store = run_store(label)
        stamp = _store_stamp(store)
    except Exception as err:
        return pd.DataFrame(columns=RUN_COLUMNS), [f"The {label} run store could not be opened: {err}"]
    return _read_store(label, str(store.root), stamp)


def all_runs() -> pd.DataFrame:
    """The runs of both stores (columns :data:`RUN_COLUMNS`), bundled first."""
    frames = [store_runs(label)[0] for label in RUN_STORES]
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)


def show_store_problems() -> None:
    """A warning in the sidebar for each store or run that could not be read (skipped)."""
    for label in RUN_STORES:
        for problem in store_runs(label)[1]:
            st.sidebar.warning(text(problem), icon=":material/warning:")


def method_runs(method: str, model_name: str) -> pd.DataFrame:
    """Every run of ``method`` for ``model_name`` in both stores, of one task or several,
    newest first (columns :data:`RUN_COLUMNS`)."""
    listed = all_runs()
    listed = listed[(listed["method"].str.lower() == method.lower()) & (listed["model"] == model_name)]
    return listed.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


FIT_COLUMNS = ["task", "id", "store", "created", "metrics", "n_tasks", "seen"]


def fitted_runs(method: str, model_name: str, several_tasks: bool = False) -> pd.DataFrame:
    """The newest run of ``method`` per task for ``model_name``, from both stores (a user's
    run wins over a bundled one of the same age): columns task, id, store, created, metrics
    (that task's entry of the run's metrics, or {}), n_tasks (how many tasks the run was
    fitted on), seen (False: a task the run holds out).

    By default only runs of one task count. With ``several_tasks`` a run fitted on several
    tasks at once (ATV's mixture, a task-agnostic SITE) counts for each of them, and for
    each task it holds out and was scored on, as unseen (the tasks its metrics score that
    it was not fitted on: the schema allows those only for its meta's ``held_out``). Per
    task, a run fitted on it wins over one that holds it out, then the newest."""
    listed = all_runs()
    listed = listed[(listed["method"].str.lower() == method.lower()) & (listed["model"] == model_name)]
    rows = []
    for run in listed.itertuples():
        if len(run.tasks) > 1 and not several_tasks:
            continue
        served = [(task, True) for task in run.tasks]
        if several_tasks:
            served += [(task, False) for task in run.metrics if task not in run.tasks]
        for task, seen in served:
            scores = run.metrics.get(task)
            if not isinstance(scores, dict):
                scores = run.metrics if len(run.tasks) == 1 and seen else {}
            rows.append((task, run.id, run.store, run.created, scores, len(run.tasks), seen))
    if not rows:
        return pd.DataFrame(columns=FIT_COLUMNS)
    table = pd.DataFrame(rows, columns=FIT_COLUMNS).sort_values(["seen", "created"], kind="stable")
    return table.drop_duplicates("task", keep="last").sort_values("task").reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=256)
def _fit_from_store(root: str, label: str, run_id: str, model_name: str, _model: LoadedModel):
    from workbench.store.codec import from_run
    from workbench.store.runs import RunError

    try:
        return from_run(run_store(label).load(run_id), _model)
    except RunError:
        raise
    except Exception as err:  # a truncated tensors file, a meta.json of the wrong shape, ...
        raise RunError(f"Run {run_id} in the {label} store is damaged: {type(err).__name__}: {err}") from None


def stored_fit(label: str, run_id: str, model: LoadedModel):
    """A stored run of any method as its fitted method on ``model``'s device (cached: runs
    never change). Raises ``workbench.store.runs.RunError`` when the run is unreadable or
    fits another model shape."""
    return _fit_from_store(str(run_store(label).root), label, run_id, model.name, model)


def task_fits(
    task: str, model: LoadedModel, methods, several_tasks: bool = False
) -> tuple[dict, dict, list[str]]:
    """The newest stored fit of each of ``methods`` for one task: (method -> fit,
    method -> its row of :func:`fitted_runs`, methods whose run does not load, with why).
    ``several_tasks``: runs fitted on several tasks count too (see :func:`fitted_runs`)."""
    from workbench.store.runs import RunError

    fits, rows, problems = {}, {}, []
    for method in methods:
        candidates = fitted_runs(method, model.name, several_tasks)
        candidates = candidates[candidates["task"] == task]
        if candidates.empty:
            continue
        row = candidates.iloc[0]
        try:
            fits[method] = stored_fit(row["store"], row["id"], model)
            rows[method] = row
        except RunError as err:
            problems.append(f"{method} run {row['id']} ({row['store']} store): {err}")
    return fits, rows, problems
