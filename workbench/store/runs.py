"""Saved runs: every fit's tensors (safetensors) and metadata (JSON), indexed in SQLite.

Layout of a store (a folder)::

    <run id>/tensors.safetensors
    <run id>/meta.json       the run metadata schema (workbench.store.schema): model and its
                             head shape, tasks and their sources, split sizes, config, fit
                             record, metrics, versions, time
    index.sqlite             one row per loadable run: id, method, model, tasks, created, metrics

The run folders are the truth; the index mirrors them. Saving writes a run into a hidden
temporary folder (flushed to disk) and renames it into place (:mod:`workbench.atomic`), and
only then indexes it. So a save that fails or is killed before the rename leaves nothing
under a run id (at worst a hidden ``.tmp-*`` folder, swept after an hour), and one that
fails after it leaves a whole run: :meth:`RunStore.list` reads the folders, lists every run
in them, and brings the index back in step (a run missing from it is added, a row whose
folder is gone is dropped). When the index cannot be written (locked past
:data:`LOCK_TIMEOUT_S`, or not a database) the run is still saved, and an
:class:`IndexWarning` says so. :meth:`RunStore.reindex` (``runs reindex``) rebuilds the
index from the folders in one transaction, skipping and naming what it cannot read.

A damaged run (unreadable or invalid ``meta.json``, truncated tensors, a folder renamed by
hand) is never fatal: :meth:`RunStore.list` shows it with ``status`` "damaged: why", and
:meth:`RunStore.load` raises :class:`RunError` saying why. Nothing is ever unpickled.
Metadata is validated against the schema on save and on load; runs saved before the schema
had a version are upgraded on load (:meth:`RunStore.migrate` rewrites them on disk).

A task is known by its content, not its name: every run records each task's source path
and content hash (``task_sources``). A run whose task carries a built-in task's name but
other content (a user's ``antonym.json``) is listed as ``antonym@<hash>``, so it is never
taken for the built-in task.

Fitted methods become runs and back through :mod:`workbench.store.codec`.

Two stores are used: the user's (``$WORKBENCH_RUNS``, default in the cache folder) and the
bundled one shipped in the repo (``results/runs``, read-only), so the app shows fitted
runs on a fresh machine.
"""

from __future__ import annotations

import functools
import json
import os
import platform
import re
import shutil
import sqlite3
import time
import uuid
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from workbench import atomic
from workbench.model.loading import LoadedModel, cache_dir
from workbench.store import schema
from workbench.tasks.files import DATA_DIR, TaskFileError, catalog, load_task
from workbench.tasks.task import Task

BUNDLED_RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"
LIST_COLUMNS = ["id", "method", "model", "tasks", "created", "metrics", "status"]
LOCK_TIMEOUT_S = 30.0  # how long a save waits for another process's write to the index
SWEEP_AFTER_S = 3600.0  # a temporary entry this old is a leftover of a killed write
_ID_PART_CHARS = 40  # of each task / model name in a run id (a folder name has at most 255 bytes)


class RunError(ValueError):
    """A run is missing, unreadable, or does not fit the model it is loaded into."""


@dataclass
class Run:
    method: str  # "SITE", "LTV", ...
    model: dict  # LoadedModel.signature: name and head shape
    tasks: list[str]
    tensors: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)  # the schema's other fields: config, fit, metrics, ...
    id: str = ""
    created: str = ""

    def device_for(self, model: LoadedModel | None) -> torch.device:
        """The model's device after checking the run fits it (RunError if not); CPU without one."""
        if model is None:
            return torch.device("cpu")
        self.check_fits(model)
        return model.device

    def check_fits(self, model: LoadedModel) -> None:
        """Raise RunError unless this run was fitted on a model of ``model``'s shape."""
        want, have = self.model, model.signature
        mismatched = [k for k in want if k != "model" and want.get(k) != have.get(k)]
        if mismatched:
            detail = ", ".join(f"{k} {want[k]} vs {have.get(k)}" for k in mismatched)
            raise RunError(
                f"Run {self.id or '(unsaved)'} was fitted on {want.get('model')} and does not fit "
                f"{have['model']}: {detail}. Fit it again on this model."
            )


def versions() -> dict:
    from workbench import __version__

    def installed(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "workbench": __version__, "torch": torch.__version__, "transformers": installed("transformers"),
        "transformer_lens": installed("transformer-lens"), "python": platform.python_version(),
    }


def builtin_task(name: str):
    """The built-in task ``name``, or None: how :func:`schema.upgrade` recovers split sizes."""
    if name not in catalog():
        return None
    try:
        return load_task(name)
    except TaskFileError:
        return None


class IndexWarning(UserWarning):
    """A run was saved, but the index could not be updated; it is listed from its folder."""


@dataclass
class StoreReport:
    """What :meth:`RunStore.reindex` / :meth:`RunStore.migrate` did: the runs done, and the
    folders skipped with why."""

    done: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


@dataclass
class _Entry:
    """A run folder as found on disk: its metadata (None if unreadable) and why it is
    damaged ("" when it loads)."""

    id: str
    meta: dict | None
    problem: str = ""
    raw: dict = field(default_factory=dict)  # the JSON object in meta.json, even if invalid
    written: int = 0  # when the tensors were written (ns): orders runs saved in the same second


class RunStore:
    def __init__(self, root: str | Path, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            self._sweep_temp()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}{', read-only' if self.read_only else ''})"

    # ------------------------------------------------------------------ writing

    def save(self, run: Run) -> str:
        """Write ``run`` (tensors, then metadata) and index it; returns its id. Validated
        first: invalid metadata is a RunError and writes nothing."""
        if self.read_only:
            raise RunError(f"{self} is read-only.")
        created = time.strftime("%Y-%m-%dT%H:%M:%S")
        run_id = _new_id(run)
        meta = {"schema": schema.SCHEMA_VERSION, "id": run_id, "method": run.method, "model": run.model,
                "tasks": run.tasks, "created": created, "versions": versions(), **run.meta}
        try:
            schema.validate(meta)
        except schema.SchemaError as err:
            raise RunError(f"Not saved: {err}") from None
        with atomic.folder(self.root / run_id) as tmp:  # whole under its id, or not there at all
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in run.tensors.items()},
                tmp / "tensors.safetensors",
            )
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        try:
            self._index([meta])
        except sqlite3.Error as err:  # the run is whole in its folder: list() shows it and indexes it
            warnings.warn(IndexWarning(
                f"Run {run_id} is saved, but the index {self._index_path} could not be updated ({err}); "
                "it is listed from its folder, and `runs reindex` brings the index up to date."
            ), stacklevel=2)
        run.id, run.created = run_id, created
        return run_id

    def delete(self, run_id: str) -> None:
        """Remove a run (a damaged one too): its folder is renamed away first, so a run is
        never seen half-deleted, then its index row goes."""
        if self.read_only:
            raise RunError(f"{self} is read-only.")
        atomic.remove_folder(self._folder(run_id))
        try:
            with self._db() as db:
                db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        except sqlite3.Error:
            pass  # the folder is gone: the next list() drops the row

    def export(self, run_id: str, dest: str | Path) -> Path:
        """Copy a run's folder (tensors + meta) to ``dest``/<run id>, atomically; returns that path."""
        target = Path(dest) / run_id
        source = self._folder(run_id)
        if target.exists():
            raise RunError(f"Not exported: {target} already exists.")
        with atomic.folder(target) as tmp:
            shutil.copytree(source, tmp, dirs_exist_ok=True)
        return target

    def reindex(self) -> StoreReport:
        """Rebuild the index from the run folders, in one transaction (a failure leaves the
        old index). Damaged runs are skipped, with why. An index file that is not a database
        is moved aside to ``index.sqlite.damaged-<time>`` and built anew."""
        if self.read_only:
            raise RunError(f"{self} is read-only: it has no index.")
        entries = self._scan()
        loadable = [e.meta for e in entries if not e.problem]
        try:
            self._index(loadable, replace_all=True)
        except sqlite3.OperationalError as err:  # locked, or the folder is not writable
            raise RunError(f"The index {self._index_path} could not be rebuilt: {err}.") from None
        except sqlite3.DatabaseError:  # not a database (overwritten, truncated): start a new one
            aside = self._index_path.with_name(f"index.sqlite.damaged-{time.strftime('%Y%m%d-%H%M%S')}")
            os.replace(self._index_path, aside)
            Path(f"{self._index_path}-journal").unlink(missing_ok=True)
            self._index(loadable, replace_all=True)
        return StoreReport([m["id"] for m in loadable], {e.id: e.problem for e in entries if e.problem})

    def migrate(self) -> StoreReport:
        """Rewrite every run's metadata saved before schema version 1 in that version (tensors
        untouched, each meta.json replaced atomically). Runs that cannot be upgraded are
        skipped, with why."""
        if self.read_only:
            raise RunError(f"{self} is read-only.")
        report = StoreReport()
        lookup = _cached(builtin_task)
        for folder in self._run_folders():
            raw = _raw_meta(folder)
            if isinstance(raw, dict) and raw.get("schema") == schema.SCHEMA_VERSION:
                continue
            try:
                new = _checked_meta(folder, raw, lookup)
            except RunError as err:
                report.skipped[folder.name] = str(err)
                continue
            atomic.write_text(folder / "meta.json", json.dumps(new, indent=1, default=str))
            report.done.append(new["id"])
            try:
                self._index([new])
            except sqlite3.Error:
                pass  # list() indexes it
        return report

    # ------------------------------------------------------------------ reading

    def list(
        self, method: str | None = None, task: str | Task | None = None, model: str | None = None
    ) -> pd.DataFrame:
        """Every run in the store's folders, oldest first: columns id, method, model, tasks,
        created, metrics, status ("ok", or "damaged: why": such a run does not load).

        ``tasks`` names each task by its identity: a built-in task's name only when the run's
        task has that task's content (else ``name@<hash>``). ``task`` filters by that name,
        or, given a :class:`Task`, by content hash whatever its name."""
        entries = self._scan()
        if not self.read_only:
            self._sync_index(entries)
        frame = pd.DataFrame([_row(e) for e in entries], columns=LIST_COLUMNS)  # oldest first (_scan)
        if method:
            frame = frame[frame["method"].str.lower() == method.lower()]
        if model:
            frame = frame[frame["model"] == model]
        if isinstance(task, Task):
            hashes = {e.id: _task_hashes(e.raw) for e in entries}
            frame = frame[frame["id"].map(lambda i: task.content_hash in hashes[i])]
        elif task:
            frame = frame[frame["tasks"].map(lambda ts: task in ts)]
        return frame.reset_index(drop=True)

    def load(self, run_id: str) -> Run:
        """The run ``run_id``; RunError if there is none, or it is damaged (saying why)."""
        folder = self._folder(run_id)
        meta = _checked_meta(folder, _raw_meta(folder), builtin_task, where=f" in {self.root}")
        try:
            tensors = load_file(folder / "tensors.safetensors")
        except (OSError, ValueError, SafetensorError) as err:
            raise RunError(
                f"Run {run_id} in {self.root} is damaged: tensors.safetensors is unreadable ({err})."
            ) from None
        core = {k: meta.pop(k) for k in ("id", "method", "model", "tasks", "created")}
        meta.pop("schema")
        return Run(core["method"], core["model"], core["tasks"], tensors, meta, core["id"], core["created"])

    def latest(self, method: str, task: str | Task, model: str) -> Run | None:
        """The newest loadable run of ``method`` fitted on exactly [task] for ``model`` (a
        built-in task's name matches only runs of that task's content; see :meth:`list`)."""
        runs = self.list(method=method, model=model, task=task)
        runs = runs[(runs["status"] == "ok") & (runs["tasks"].map(len) == 1)]
        return self.load(runs["id"].iloc[-1]) if len(runs) else None

    # ------------------------------------------------------------------ internals

    @property
    def _index_path(self) -> Path:
        return self.root / "index.sqlite"

    def _folder(self, run_id: str) -> Path:
        folder = self.root / run_id if _is_run_id(run_id) else None
        if folder is None or not folder.is_dir():
            raise RunError(f"No run {run_id!r} in {self.root}.")
        return folder

    def _run_folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if _is_run_id(p.name) and p.is_dir())

    def _scan(self) -> list[_Entry]:
        """Every run folder, read and checked (metadata against the schema, the tensors
        file's header against its size)."""
        lookup = _cached(builtin_task)
        entries = []
        for folder in self._run_folders():
            raw = _raw_meta(folder)
            try:
                written = (folder / "tensors.safetensors").stat().st_mtime_ns
            except OSError:
                written = 0
            try:
                meta = _checked_meta(folder, raw, lookup)
                _check_tensors(folder)
                entries.append(_Entry(folder.name, meta, raw=raw, written=written))
            except RunError as err:
                entries.append(
                    _Entry(folder.name, None, str(err), raw if isinstance(raw, dict) else {}, written)
                )
        return sorted(entries, key=lambda e: (_row(e)[4], e.written, e.id))

    def _sync_index(self, entries: list[_Entry]) -> None:
        """Bring the index in step with the folders (best effort: the listing comes from the
        folders whatever happens here)."""
        loadable = {e.id: e.meta for e in entries if not e.problem}
        try:
            with self._db(timeout=1.0) as db:
                db.execute(_CREATE)
                indexed = {row[0] for row in db.execute("SELECT id FROM runs")}
                scanned = {e.id for e in entries}  # a folder not scanned may be a save made since
                gone = [i for i in indexed - loadable.keys() if i in scanned or not (self.root / i).is_dir()]
                db.executemany("DELETE FROM runs WHERE id = ?", [(i,) for i in gone])
                db.executemany(_INSERT, [_index_row(loadable[i]) for i in sorted(loadable.keys() - indexed)])
        except sqlite3.Error:
            pass

    def _index(self, metas: list[dict], replace_all: bool = False) -> None:
        with self._db() as db:
            db.execute(_CREATE)
            if replace_all:
                db.execute("DELETE FROM runs")
            db.executemany(_INSERT, [_index_row(m) for m in metas])

    def _db(self, timeout: float | None = None) -> _Closing:
        return _Closing(
            sqlite3.connect(self._index_path, timeout=LOCK_TIMEOUT_S if timeout is None else timeout)
        )

    def _sweep_temp(self) -> None:
        """Remove leftovers of killed writes (``.tmp-*`` entries here and in run folders)
        older than :data:`SWEEP_AFTER_S`; younger ones may be a save running right now."""
        now = time.time()
        for tmp in [*self.root.glob(f"{atomic.TEMP_PREFIX}*"), *self.root.glob(f"*/{atomic.TEMP_PREFIX}*")]:
            try:
                if now - tmp.lstat().st_mtime <= SWEEP_AFTER_S:
                    continue
                if tmp.is_dir() and not tmp.is_symlink():
                    shutil.rmtree(tmp, ignore_errors=True)
                else:
                    tmp.unlink()
            except OSError:
                pass  # gone already (another process swept it), or not ours to remove


_CREATE = ("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, method TEXT, model TEXT, tasks TEXT, "
           "created TEXT, metrics TEXT)")
_INSERT = "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)"


def _index_row(meta: dict) -> tuple:
    return (meta["id"], meta["method"], meta["model"]["model"], json.dumps(meta["tasks"]), meta["created"],
            json.dumps(meta.get("metrics", {}), default=str))


def _new_id(run: Run) -> str:
    """<method>-<tasks>-<model>-<time>-<random>: readable, unique, and short enough for a
    folder name whatever the task files are called."""
    tasks = "+".join(map(_id_part, run.tasks)) if len(run.tasks) <= 3 else f"{len(run.tasks)}tasks"
    model = run.model.get("model", "") if isinstance(run.model, dict) else ""
    return (f"{_id_part(run.method).lower()}-{tasks}-{_id_part(str(model).split('/')[-1])}-"
            f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")


def _id_part(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", str(name))[:_ID_PART_CHARS].strip("._") or "_"


def _is_run_id(name: str) -> bool:
    return bool(name) and not name.startswith(".") and not re.search(r"[/\\\x00]", name)


def _raw_meta(folder: Path) -> object:
    """The JSON in a run's meta.json, or a RunError (not raised) saying why it is unreadable."""
    try:
        return json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return RunError("meta.json is missing")
    except (OSError, ValueError, RecursionError) as err:
        return RunError(f"meta.json is unreadable ({type(err).__name__}: {err})")


def _checked_meta(folder: Path, raw: object, lookup, where: str = "") -> dict:
    """A run folder's metadata, upgraded and validated; RunError saying why it is damaged."""

    def damaged(why: str) -> RunError:
        return RunError(f"Run {folder.name}{where} is damaged: {why}.")

    if isinstance(raw, RunError):
        raise damaged(str(raw))
    if not isinstance(raw, dict):
        raise damaged("meta.json is not a JSON object")
    try:
        meta = schema.validate(schema.upgrade(raw, lookup))
    except schema.SchemaError as err:
        raise damaged(re.sub(r"^Run '[^']*': ", "", str(err)).rstrip(".")) from None
    if meta["id"] != folder.name:
        raise damaged(f"its meta.json is for run {meta['id']!r}")
    return meta


def _check_tensors(folder: Path) -> None:
    """RunError unless the tensors file's header reads and covers the file exactly (a
    truncated or padded file fails; the data itself is not read)."""
    try:
        with safe_open(folder / "tensors.safetensors", "pt") as handle:
            handle.keys()
    except (OSError, ValueError, SafetensorError) as err:
        raise RunError(f"Run {folder.name} is damaged: tensors.safetensors is unreadable ({err}).") from None


def _row(entry: _Entry) -> tuple:
    """One row of :meth:`RunStore.list`: from the metadata, or for a damaged run whatever
    of its meta.json can be read."""
    if entry.meta is not None:
        m = entry.meta
        return (m["id"], m["method"], m["model"]["model"], _listed_tasks(m), m["created"], m["metrics"], "ok")
    raw = entry.raw

    def text(value: object) -> str:
        return value if isinstance(value, str) else ""

    model = raw.get("model")
    tasks = raw.get("tasks")
    tasks = [t for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []
    return (entry.id, text(raw.get("method")), text(model.get("model")) if isinstance(model, dict) else "",
            tasks, text(raw.get("created")), {}, f"damaged: {entry.problem.split(' is damaged: ', 1)[-1]}")


def _listed_tasks(meta: dict) -> list[str]:
    """The run's tasks by identity: ``name@<sha256[:8]>`` where a built-in task's name was
    given to other content."""
    names = []
    for name in meta["tasks"]:
        source = meta["task_sources"][name]
        builtin = _builtin_source(name)
        same = (
            builtin is None
            or source["path"] == builtin["path"]
            or source["sha256"] in ("", builtin["sha256"])
        )
        names.append(name if same else f"{name}@{source['sha256'][:8]}")
    return names


def _task_hashes(raw: dict) -> set[str]:
    sources = raw.get("task_sources")
    if not isinstance(sources, dict):
        return set()
    return {s.get("sha256") for s in sources.values() if isinstance(s, dict) and s.get("sha256")}


def _builtin_source(name: str) -> dict | None:
    """{"path", "sha256"} of the built-in task ``name``, or None (cached per file version)."""
    path = DATA_DIR / f"{name}.json"
    try:
        stamp = path.stat().st_mtime_ns
    except (OSError, ValueError):
        return None
    return _builtin_source_at(name, stamp)


@functools.lru_cache(maxsize=256)
def _builtin_source_at(name: str, stamp: int) -> dict | None:
    task = builtin_task(name)
    return schema.task_source(task) if task is not None else None


def _cached(lookup):
    """``lookup`` remembered per name, for one pass over a store."""
    return functools.lru_cache(maxsize=None)(lookup)


class _Closing:
    """sqlite3 connection as a context manager that commits *and* closes."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, kind, value, tb) -> None:
        try:
            if kind is None:
                self.db.commit()
            else:
                self.db.rollback()
        finally:
            self.db.close()


def user_store() -> RunStore:
    return RunStore(os.environ.get("WORKBENCH_RUNS") or cache_dir() / "runs")


def bundled_store() -> RunStore:
    return RunStore(BUNDLED_RUNS, read_only=True)
