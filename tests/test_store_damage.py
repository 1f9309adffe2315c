"""A damaged run store: what the store and the CLI do with every kind of damage found by the
hardening probes (a damaged run is listed as damaged, never fatal; ``runs reindex``; a
locked or lost index; temp folders swept; a task known by its content)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import workbench.store.runs as runs_module
from workbench import atomic, cli
from workbench.store import schema
from workbench.store.runs import LIST_COLUMNS, IndexWarning, Run, RunError, RunStore
from workbench.tasks.files import load_task
from workbench.tasks.task import Task

SHAPE = {"model": "m", "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "d_head": 1, "d_model": 2}


def make_run(task: str = "t", source: dict | None = None, method: str = "SITE") -> Run:
    """A run with schema-valid metadata and no model behind it."""
    meta = {
        "task_sources": {task: source or {"path": "", "sha256": "0" * 64}},
        "split_sizes": {task: {"train": 3, "valid": 1, "test": 1}},
        "config": {"template": "qa", "seed": 0},
        "template": "qa",
        "fit": {"seconds": 0.0},
        "metrics": {},
    }
    spec = schema.spec_of({**meta, "method": method, "model": {"model": "m"}, "tasks": [task]})
    meta.update(spec=spec, spec_hash=schema.spec_hash(spec))
    return Run(method, dict(SHAPE), [task], {"beta": torch.arange(4.0).view(2, 2)}, meta)


def _truncate(folder: Path) -> None:
    path = folder / "tensors.safetensors"
    path.write_bytes(path.read_bytes()[:60])


def _nested(folder: Path) -> None:
    (folder / "meta.json").write_text("[" * 100_000 + "]" * 100_000)


DAMAGE = {
    "truncated tensors": (_truncate, "tensors.safetensors is unreadable"),
    "padded tensors": (
        lambda f: (f / "tensors.safetensors").open("ab").write(b"xx"), "tensors.safetensors is unreadable"
    ),
    "no tensors": (lambda f: (f / "tensors.safetensors").unlink(), "tensors.safetensors is unreadable"),
    "meta {}": (lambda f: (f / "meta.json").write_text("{}"), "meta.json lacks id, method"),
    "meta not JSON": (lambda f: (f / "meta.json").write_text("{not json"), "meta.json is unreadable"),
    "meta a list": (lambda f: (f / "meta.json").write_text("[1, 2]"), "meta.json is not a JSON object"),
    "meta not UTF-8": (lambda f: (f / "meta.json").write_bytes(b'{"id": "\xff"}'), "meta.json is unreadable"),
    "meta nested deep": (_nested, "meta.json is unreadable"),
    "no meta": (lambda f: (f / "meta.json").unlink(), "meta.json is missing"),
    "meta of another run": (
        lambda f: (f / "meta.json").write_text(
            json.dumps({**json.loads((f / "meta.json").read_text()), "id": "other"})
        ),
        "its meta.json is for run 'other'",
    ),
    "version-0 meta, wrong types": (
        lambda f: (f / "meta.json").write_text(json.dumps(
            {"id": f.name, "method": "TV", "model": {}, "tasks": 5, "created": "x", "versions": {}})),
        "'tasks' must be a non-empty list of names",
    ),
    "version-0 meta, config a list": (
        lambda f: (f / "meta.json").write_text(json.dumps(
            {"id": f.name, "method": "TV", "model": {}, "tasks": ["antonym"], "created": "x", "versions": {},
             "config": [1]})),
        "cannot be upgraded (AttributeError",
    ),
    "metrics out of range": (
        lambda f: (f / "meta.json").write_text(json.dumps({
            **json.loads((f / "meta.json").read_text()),
            "metrics": {"bad": {"test_first_token_acc": 7, "test_exact_match": 0, "n_test": 1}},
        })),
        "'metrics.bad.test_first_token_acc' must be in [0, 1]",
    ),
}


@pytest.fixture
def store(tmp_path):
    return RunStore(tmp_path / "runs")


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_run_is_listed_as_damaged_and_does_not_load(store, kind):
    damage, why = DAMAGE[kind]
    good, bad = store.save(make_run("good")), store.save(make_run("bad"))
    damage(store.root / bad)
    listed = store.list().set_index("id")
    assert list(listed.reset_index().columns) == LIST_COLUMNS
    assert listed.loc[good, "status"] == "ok"
    assert listed.loc[bad, "status"].startswith("damaged: ") and why in listed.loc[bad, "status"]
    with pytest.raises(RunError, match=f"Run {bad} in .* is damaged: .*{re.escape(why[:20])}"):
        store.load(bad)
    assert store.load(good).tasks == ["good"]
    assert store.latest("SITE", "bad", "m") is None  # the newest *loadable* run
    report = store.reindex()
    assert report.done == [good] and why in report.skipped[bad]
    store.delete(bad)  # a damaged run can be removed
    assert list(store.list()["id"]) == [good]


def test_a_folder_that_is_not_a_run_is_listed_as_damaged(store):
    (store.root / "stray").mkdir()
    (store.root / "notes.txt").write_text("not a folder: ignored")
    row = store.list().iloc[0]
    assert (row["id"], row["status"]) == ("stray", "damaged: meta.json is missing.")


def test_one_bad_meta_does_not_hide_a_read_only_store(tmp_path):
    writable = RunStore(tmp_path / "runs")
    ids = [writable.save(make_run(f"t{i}")) for i in range(3)]
    (tmp_path / "runs" / ids[0] / "meta.json").write_text("{}")
    bundled = RunStore(tmp_path / "runs", read_only=True)
    frame = bundled.list()
    assert list(frame["id"]) == ids and list(frame["status"] == "ok") == [False, True, True]
    assert frame.loc[0, "tasks"] == [] and frame.loc[0, "method"] == ""  # what could not be read is blank


def test_the_bundled_runs_all_list_as_ok():
    frame = runs_module.bundled_store().list()
    assert len(frame) >= 4 * 31 and (frame["status"] == "ok").all()


# ----------------------------------------------------------------------------- the index


def _indexed(store: RunStore) -> set[str]:
    with sqlite3.connect(store.root / "index.sqlite") as db:
        return {row[0] for row in db.execute("SELECT id FROM runs")}


def test_a_deleted_index_is_rebuilt_from_the_folders(store):
    ids = {store.save(make_run(f"t{i}")) for i in range(3)}
    (store.root / "index.sqlite").unlink()
    assert set(store.list()["id"]) == ids  # listed from the folders ...
    assert _indexed(store) == ids  # ... and the index is back in step
    (store.root / "index.sqlite").unlink()
    assert set(RunStore(store.root).reindex().done) == ids and _indexed(store) == ids


def test_the_index_follows_runs_added_or_removed_by_hand(store, tmp_path):
    kept, moved = store.save(make_run("a")), store.save(make_run("b"))
    shutil.move(store.root / moved, tmp_path / moved)  # taken out by hand: its row goes
    assert list(store.list()["id"]) == [kept] and _indexed(store) == {kept}
    shutil.move(tmp_path / moved, store.root / moved)  # put back by hand: listed and indexed again
    assert set(store.list()["id"]) == {kept, moved} and _indexed(store) == {kept, moved}


def test_reindex_skips_what_it_cannot_read_and_keeps_the_rest(store):
    ids = [store.save(make_run(f"t{i}")) for i in range(3)]
    (store.root / ids[1] / "meta.json").write_text("not json")
    report = store.reindex()
    assert report.done == [ids[0], ids[2]] and list(report.skipped) == [ids[1]]
    assert _indexed(store) == {ids[0], ids[2]}


def test_an_index_that_is_not_a_database_is_moved_aside_by_reindex(store):
    run_id = store.save(make_run())
    (store.root / "index.sqlite").write_bytes(b"garbage" * 100)
    assert list(store.list()["id"]) == [run_id]  # the listing does not need the index
    with pytest.warns(IndexWarning, match="could not be updated"):
        second = store.save(make_run())  # saved all the same
    assert store.reindex().done == [run_id, second]
    assert _indexed(store) == {run_id, second} and list(store.root.glob("index.sqlite.damaged-*"))


@pytest.fixture
def locked_index(store, monkeypatch):
    """An exclusive lock on the index, held by another connection (another process's write)."""
    monkeypatch.setattr(runs_module, "LOCK_TIMEOUT_S", 0.5)
    store.save(make_run("before"))
    db = sqlite3.connect(store.root / "index.sqlite", isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    yield db
    db.execute("ROLLBACK")
    db.close()


def test_a_save_while_the_index_is_locked_keeps_the_run_and_lists_it(store, locked_index):
    with pytest.warns(
        IndexWarning, match="is saved, but the index .* could not be updated .*database is locked"
    ):
        run_id = store.save(make_run("during"))
    assert store.load(run_id).tasks == ["during"]
    assert run_id in set(store.list()["id"])  # listed while the lock is still held
    locked_index.execute("ROLLBACK")
    locked_index.execute("BEGIN")  # (the fixture rolls back again)
    store.list()
    assert run_id in _indexed(store)  # indexed once the lock is gone


def test_reindex_and_delete_with_a_locked_index(store, locked_index):
    run_id = store.list()["id"][0]
    with pytest.raises(RunError, match="could not be rebuilt: database is locked"):
        store.reindex()
    store.delete(run_id)  # the folder goes; the row goes on a later list()
    assert store.list().empty


def test_a_save_waits_for_a_short_lock(store, monkeypatch):
    db = sqlite3.connect(store.root / "index.sqlite", isolation_level=None, check_same_thread=False)
    db.execute("CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, method TEXT, model TEXT, tasks TEXT, "
               "created TEXT, metrics TEXT)")
    db.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.5, lambda: db.execute("ROLLBACK")).start()
    run_id = store.save(make_run())  # no warning: the lock was released within the timeout
    assert _indexed(store) == {run_id}
    db.close()


# ----------------------------------------------------------------------------- temp folders, ids


def test_temp_leftovers_older_than_an_hour_are_swept_when_the_store_opens(store):
    run_id = store.save(make_run())
    old = [store.root / f"{atomic.TEMP_PREFIX}run-abc", store.root / f"{atomic.TEMP_PREFIX}deleted-x",
           store.root / run_id / f"{atomic.TEMP_PREFIX}meta.json.123"]
    young = store.root / f"{atomic.TEMP_PREFIX}run-now"
    for path in old[:2] + [young]:
        path.mkdir()
        (path / "tensors.safetensors").write_bytes(b"half")
    old[2].write_text("half")
    hour_ago = time.time() - 3700
    for path in old:
        os.utime(path, (hour_ago, hour_ago))
    RunStore(store.root)
    assert not any(p.exists() for p in old) and young.exists()
    assert list(store.list()["id"]) == [run_id]  # temp folders are never runs


def test_a_task_file_with_a_very_long_name_saves(store):
    run_id = store.save(make_run("t" * 240))
    assert len(run_id) < 120 and store.load(run_id).tasks == ["t" * 240]


@pytest.mark.parametrize("run_id", ["", ".", "..", "../etc", ".tmp-x", "a/b", "a\\b", "x\x00y"])
def test_run_ids_that_are_not_runs(store, run_id):
    with pytest.raises(RunError, match="No run"):
        store.load(run_id)
    with pytest.raises(RunError, match="No run"):
        store.delete(run_id)


def test_export_refuses_to_overwrite(store, tmp_path):
    run_id = store.save(make_run())
    assert (store.export(run_id, tmp_path / "out") / "tensors.safetensors").is_file()
    with pytest.raises(RunError, match="already exists"):
        store.export(run_id, tmp_path / "out")


# ----------------------------------------------------------------------------- task identity


def test_a_user_task_with_a_built_in_name_is_not_the_built_in_task(store):
    antonym = load_task("antonym")
    mine = Task("antonym", [(f"u{i}", "v") for i in range(20)], path="/somewhere/antonym.json")
    builtin_run = store.save(make_run("antonym", schema.task_source(antonym)))
    user_run = store.save(make_run("antonym", schema.task_source(mine)))  # saved before names were told apart
    listed = store.list().set_index("id")["tasks"]
    assert listed[builtin_run] == ["antonym"] and listed[user_run] == [f"antonym@{mine.content_hash[:8]}"]
    assert store.latest("SITE", "antonym", "m").id == builtin_run
    assert list(store.list(task=mine)["id"]) == [user_run]  # by content hash, whatever the name
    assert list(store.list(task=antonym)["id"]) == [builtin_run]
    same = Task("antonym", antonym.pairs, path="/elsewhere/antonym.json")  # a copy of the built-in file
    copy_run = store.save(make_run("antonym", schema.task_source(same)))
    assert store.latest("SITE", "antonym", "m").id == copy_run


# ----------------------------------------------------------------------------- the CLI


def cli_run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def test_the_cli_on_a_damaged_store(store, capsys):
    ok, truncated, empty = (store.save(make_run(t)) for t in ("ok", "truncated", "empty"))
    _truncate(store.root / truncated)
    (store.root / empty / "meta.json").write_text("{}")
    (store.root / "index.sqlite").unlink()

    rc, out, err = cli_run(["runs", "list", "--store", store.root], capsys)
    assert rc == 0 and "status" in out.splitlines()[0]
    lines = {line.split()[0]: line for line in out.splitlines()[1:] if line.strip()}
    assert lines[ok].rstrip().endswith("ok")
    assert "damaged: tensors.safetensors is unreadable" in lines[truncated]
    assert "damaged: meta.json lacks id" in lines[empty]
    assert "2 damaged run(s)" in out

    for bad, why in ((truncated, "tensors.safetensors is unreadable"), (empty, "meta.json lacks id")):
        rc, out, err = cli_run(["runs", "show", bad, "--store", store.root], capsys)
        assert (
            rc == 2 and err.startswith(f"error: Run {bad} in ") and why in err and len(err.splitlines()) == 1
        )

    rc, out, err = cli_run(["runs", "reindex", "--store", store.root], capsys)
    assert rc == 0 and "indexed 1 runs" in out
    assert f"skipped {truncated}: " in out and f"skipped {empty}: " in out

    rc, out, err = cli_run(["runs", "delete", empty, "--store", store.root], capsys)
    assert rc == 0 and f"deleted {empty}" in out
    rc, out, err = cli_run(["runs", "show", ok, "--store", store.root], capsys)
    assert rc == 0 and json.loads(out)["tensors"] == {"beta": [2, 2]}


def test_the_cli_lists_a_damaged_bundled_store(tmp_path, capsys, monkeypatch):
    writable = RunStore(tmp_path / "bundled")
    ids = [writable.save(make_run(f"t{i}")) for i in range(2)]
    (tmp_path / "bundled" / ids[0] / "meta.json").write_text("{}")
    monkeypatch.setattr(runs_module, "BUNDLED_RUNS", tmp_path / "bundled")
    rc, out, err = cli_run(["runs", "list", "--bundled"], capsys)
    assert rc == 0 and ids[1] in out and "damaged: meta.json lacks id" in out
    rc, out, err = cli_run(["runs", "reindex", "--bundled"], capsys)
    assert rc == 2 and "read-only" in err


def test_the_cli_warns_when_a_save_cannot_be_indexed(store, locked_index, capsys, monkeypatch):
    """`fit` with the index locked past the timeout: the run is saved, listed, and the user told."""
    from workbench.experiments import fitting

    def fake_fit_score_save(model, group, name, config, st, **kwargs):
        return SimpleNamespace(summary=dict), st.save(make_run("during")), {}

    monkeypatch.setattr(fitting, "fit_score_save", fake_fit_score_save)
    monkeypatch.setattr("workbench.model.loading.load_model", lambda *a, **k: _TinyShape())
    monkeypatch.setattr(cli, "_check_context", lambda *a: None)
    rc = cli.main(["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym", "--no-eval",
                   "--store", str(store.root), "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == 0
    assert [line for line in err.splitlines() if line.startswith("warning: ")][0].startswith("warning: Run ")
    assert "could not be updated" in err and "Traceback" not in err
    assert len(store.list()) == 2


class _TinyShape:
    """Just enough of a LoadedModel for cmd_fit's checks."""

    name = "m"

    class heads:
        class shape:
            n_layers = 1


# ----------------------------------------------------------------------------- any meta.json at all

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
CORE_KEYS = ["schema", "id", "method", "model", "tasks", "created", "versions", "task_sources", "split_sizes",
             "config", "template", "fit", "metrics"]
metas = st.one_of(json_values, st.dictionaries(st.sampled_from(CORE_KEYS), json_values, max_size=13))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(meta=metas, drop_schema=st.booleans())
def test_any_meta_json_is_listed_and_loaded_or_refused_with_a_run_error(tmp_path_factory, meta, drop_schema):
    store = RunStore(tmp_path_factory.mktemp("runs"))
    run_id = store.save(make_run())
    if isinstance(meta, dict):
        meta = {**meta, "id": run_id} if meta.get("id") is None else meta
        if drop_schema:
            meta.pop("schema", None)  # a version-0 file: upgraded before it is checked
    (store.root / run_id / "meta.json").write_text(json.dumps(meta))
    status = store.list()["status"][0]
    try:
        store.load(run_id)
        assert status == "ok"
    except RunError as err:
        assert status.startswith("damaged: ") and str(err).startswith(f"Run {run_id} in ")
