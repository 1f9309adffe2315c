"""Saved runs: every fit's tensors (safetensors) and metadata (JSON), indexed in SQLite.

Layout of a store (a folder)::

    index.sqlite             one row per run: id, method, model, tasks, created, metrics
    <run id>/tensors.safetensors
    <run id>/meta.json       the run metadata schema (workbench.store.schema): model and its
                             head shape, tasks and their sources, split sizes, config, fit
                             record, metrics, versions, time

A run is written into a temporary folder and renamed into place (:mod:`workbench.atomic`),
then indexed, so a fit killed midway leaves no half-written run (at worst a hidden temp
folder, swept on the next open). SQLite serialises concurrent writers. The index can always
be rebuilt from the run folders (:meth:`RunStore.reindex`). Nothing is ever unpickled.
Metadata is validated against the schema on save and on load; runs saved before the schema
had a version are upgraded on load (:meth:`RunStore.migrate` rewrites them on disk).

Fitted methods become runs and back through :mod:`workbench.store.codec`.

Two stores are used: the user's (``$WORKBENCH_RUNS``, default in the cache folder) and the
bundled one shipped in the repo (``results/runs``, read-only), so the app shows fitted
runs on a fresh machine.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import time
import uuid
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from workbench import atomic
from workbench.model.loading import LoadedModel, cache_dir
from workbench.store import schema
from workbench.tasks.files import TaskFileError, catalog, load_task

BUNDLED_RUNS = Path(__file__).resolve().parents[2] / "results" / "runs"


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


class RunStore:
    def __init__(self, root: str | Path, read_only: bool = False) -> None:
        self.root = Path(root)
        self.read_only = read_only
        if not read_only:
            self.root.mkdir(parents=True, exist_ok=True)
            self._sweep_temp()
            with self._db() as db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, method TEXT, model TEXT, "
                    "tasks TEXT, created TEXT, metrics TEXT)"
                )

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r}{', read-only' if self.read_only else ''})"

    # ------------------------------------------------------------------ writing

    def save(self, run: Run) -> str:
        if self.read_only:
            raise RunError(f"{self} is read-only.")
        created = time.strftime("%Y-%m-%dT%H:%M:%S")
        tasks = "+".join(run.tasks) if len(run.tasks) <= 3 else f"{len(run.tasks)}tasks"
        run_id = f"{run.method.lower()}-{tasks}-{run.model['model'].split('/')[-1]}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        meta = {"schema": schema.SCHEMA_VERSION, "id": run_id, "method": run.method, "model": run.model,
                "tasks": run.tasks, "created": created, "versions": versions(), **run.meta}
        try:
            schema.validate(meta)
        except schema.SchemaError as err:
            raise RunError(f"Not saved: {err}") from None
        with atomic.folder(self.root / run_id) as tmp:
            save_file({k: v.detach().cpu().contiguous() for k, v in run.tensors.items()}, tmp / "tensors.safetensors")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str), encoding="utf-8")
        self._index(meta)
        run.id, run.created = run_id, created
        return run_id

    def delete(self, run_id: str) -> None:
        if self.read_only:
            raise RunError(f"{self} is read-only.")
        folder = self._folder(run_id)
        with self._db() as db:
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        atomic.remove_folder(folder)  # renamed first: never a half run under its own id

    def export(self, run_id: str, dest: str | Path) -> Path:
        """Copy a run's folder (tensors + meta) to ``dest``/<run id>; returns that path."""
        target = Path(dest) / run_id
        shutil.copytree(self._folder(run_id), target)
        return target

    def reindex(self) -> int:
        """Rebuild the index from the run folders; returns the number of runs."""
        with self._db() as db:
            db.execute("DELETE FROM runs")
        count = 0
        for meta_path in sorted(self.root.glob("*/meta.json")):
            if not atomic.is_temporary(meta_path.parent):
                self._index(json.loads(meta_path.read_text(encoding="utf-8")))
                count += 1
        return count

    def migrate(self) -> list[str]:
        """Rewrite every run's metadata saved before schema version 1 in that version (tensors
        untouched, each meta.json replaced atomically); returns the ids it rewrote."""
        if self.read_only:
            raise RunError(f"{self} is read-only.")
        done = []
        for meta_path in sorted(self.root.glob("*/meta.json")):
            if atomic.is_temporary(meta_path.parent):
                continue
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            if meta.get("schema") == schema.SCHEMA_VERSION:
                continue
            try:
                new = schema.validate(schema.upgrade(meta, builtin_task))
            except schema.SchemaError as err:
                raise RunError(str(err)) from None
            atomic.write_text(meta_path, json.dumps(new, indent=1, default=str))
            self._index(new)
            done.append(new["id"])
        return done

    # ------------------------------------------------------------------ reading

    def list(self, method: str | None = None, task: str | None = None, model: str | None = None) -> pd.DataFrame:
        columns = ["id", "method", "model", "tasks", "created", "metrics"]
        if self.read_only:  # a bundled store is plain folders: read their meta files
            metas = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(self.root.glob("*/meta.json"))]
            rows = [(m["id"], m["method"], m["model"]["model"], m["tasks"], m["created"], m.get("metrics", {}))
                    for m in metas if not m["id"].startswith(".")]
            frame = pd.DataFrame(rows, columns=columns).sort_values("created", kind="stable")
        else:
            with self._db() as db:
                rows = db.execute("SELECT id, method, model, tasks, created, metrics FROM runs ORDER BY created").fetchall()
            frame = pd.DataFrame(rows, columns=columns)
            frame["tasks"] = frame["tasks"].map(json.loads)
            frame["metrics"] = frame["metrics"].map(json.loads)
        if method:
            frame = frame[frame["method"].str.lower() == method.lower()]
        if model:
            frame = frame[frame["model"] == model]
        if task:
            frame = frame[frame["tasks"].map(lambda ts: task in ts)]
        return frame.reset_index(drop=True)

    def load(self, run_id: str) -> Run:
        folder = self._folder(run_id)
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            tensors = load_file(folder / "tensors.safetensors")
        except (OSError, ValueError) as err:
            raise RunError(f"Run {run_id} in {self.root} is unreadable: {err}") from None
        try:
            meta = schema.validate(schema.upgrade(meta, builtin_task))
        except schema.SchemaError as err:
            raise RunError(f"{err} (in {self.root})") from None
        core = {k: meta.pop(k) for k in ("id", "method", "model", "tasks", "created")}
        meta.pop("schema")
        return Run(core["method"], core["model"], core["tasks"], tensors, meta, core["id"], core["created"])

    def latest(self, method: str, task: str, model: str) -> Run | None:
        """The newest run of ``method`` fitted on exactly [task] for ``model``."""
        runs = self.list(method=method, model=model)
        runs = runs[runs["tasks"].map(lambda ts: ts == [task])]
        return self.load(runs["id"].iloc[-1]) if len(runs) else None

    # ------------------------------------------------------------------ internals

    def _folder(self, run_id: str) -> Path:
        folder = self.root / run_id
        if not run_id or "/" in run_id or atomic.is_temporary(run_id) or run_id.startswith(".") or not (folder / "meta.json").is_file():
            raise RunError(f"No run {run_id!r} in {self.root}.")
        return folder

    def _index(self, meta: dict) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?, ?, ?, ?, ?, ?)",
                (meta["id"], meta["method"], meta["model"]["model"], json.dumps(meta["tasks"]),
                 meta["created"], json.dumps(meta.get("metrics", {}), default=str)),
            )

    def _db(self) -> "_Closing":
        return _Closing(sqlite3.connect(self.root / "index.sqlite", timeout=30))

    def _sweep_temp(self) -> None:
        for tmp in self.root.glob(f"{atomic.TEMP_PREFIX}*"):
            if time.time() - tmp.stat().st_mtime > 3600:  # not a save that is running right now
                shutil.rmtree(tmp, ignore_errors=True)


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
