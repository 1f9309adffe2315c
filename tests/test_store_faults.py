"""Fault tests of the run store: processes that fit and save runs are killed (SIGKILL) at
seeded random points, many times, and the store is checked after: no run that a process
reported saved is lost, no run is half-written, no run folder is left unlisted.

The fitting processes are forked from this one with the tiny model already loaded (a real
TV fit and a real save per cycle, about 0.1 s each), so many kills stay cheap; the slow
test does the same to the real ``python -m workbench fit``. Concurrent fits and a locked
index are checked the same way.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import workbench.store.runs as runs_module
from workbench import atomic
from workbench.methods.tv import TaskVector, TvConfig
from workbench.store.codec import from_run, to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task

SEED = 20261124
KILLS = 40
ROOT = Path(__file__).resolve().parent.parent
CONFIG = TvConfig(n_prompts=3, shots=1)


def fit_and_save_forever(root: str, conn, lock_timeout: float | None = None) -> None:
    """A forked child: fit TV on antonym and save it, again and again, saying what it does."""
    torch.set_num_threads(1)  # no OpenMP pool inherited across the fork
    if lock_timeout is not None:
        runs_module.LOCK_TIMEOUT_S = lock_timeout
    store, task = RunStore(root), load_task("antonym")
    conn.send(("ready", ""))
    while True:
        fit = TaskVector.fit(_MODEL, task, CONFIG)
        run = to_run(fit, _MODEL, task)
        conn.send(("saving", ""))
        start = time.monotonic()
        conn.send(("saved", store.save(run)))
        conn.send(("took", time.monotonic() - start))


_MODEL = None  # the parent's model, inherited by the forked children


@pytest.fixture(scope="module")
def model(tiny_llama):
    global _MODEL
    _MODEL = tiny_llama
    TaskVector.fit(tiny_llama, load_task("antonym"), CONFIG)  # warm up once, before any fork
    return tiny_llama


def start_child(root: Path, lock_timeout: float | None = None):
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=fit_and_save_forever, args=(str(root), child, lock_timeout), daemon=True)
    proc.start()
    assert parent.poll(60) and parent.recv()[0] == "ready", "the child did not start"
    return proc, parent


def drain(conn, saved: list[str], took: list[float] | None = None) -> str:
    """Read the child's messages (collecting the ids it saved and how long each save took);
    returns the last one's kind."""
    last = ""
    while conn.poll():
        try:
            last, value = conn.recv()
        except (EOFError, OSError):
            break
        if last == "saved":
            saved.append(value)
        elif last == "took" and took is not None:
            took.append(value)
    return last


def unfinished_saves(root: Path) -> set[str]:
    """What unfinished saves leave in the store: temporary folders (killed before the
    rename) and run folders the index lacks (killed between the rename and the index; not
    looked for while another process holds the index)."""
    if not root.exists():
        return set()
    temporary = {p.name for p in root.iterdir() if atomic.is_temporary(p)}
    folders = {p.name for p in root.iterdir() if p.is_dir() and not atomic.is_temporary(p)}
    try:
        with sqlite3.connect(root / "index.sqlite", timeout=0.1) as db:
            indexed = {row[0] for row in db.execute("SELECT id FROM runs")}
    except sqlite3.OperationalError:  # locked by the test, or not made yet
        indexed = folders
    return temporary | (folders - indexed)


def kill_at_random(
    root: Path, kills: int, rng: random.Random, lock_timeout: float | None = None
) -> tuple[list[str], int]:
    """Start a fitting child, kill it at a random point, ``kills`` times; returns the ids the
    children reported saved and how many kills fell inside a save. Half the kills fall
    anywhere in a fit-and-save cycle, half within a save (a delay up to the median time the
    saves so far took, so the kills land inside one however loaded the machine is)."""
    saved: list[str] = []
    inside, unfinished, took = 0, unfinished_saves(root), [0.03]
    for i in range(kills):
        proc, conn = start_child(root, lock_timeout)
        if i % 2:
            deadline = time.monotonic() + 30
            while drain(conn, saved, took) != "saving" and time.monotonic() < deadline:
                conn.poll(0.005)
            time.sleep(rng.uniform(0, sorted(took)[len(took) // 2]))
        else:
            time.sleep(rng.uniform(0, 0.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        drain(conn, saved, took)
        conn.close()
        now = unfinished_saves(root)  # before the next child tidies it away
        inside += bool(now - unfinished)
        unfinished = now
    return saved, inside


def check_store(root: Path, saved: list[str], model) -> dict:
    """Lost: reported saved but not loadable. Half-written: a folder under a run id that does
    not load. Unlisted: a run folder list() does not show. Also how many runs the index
    lacked before list() brought it in step."""
    folders = {p.name for p in root.iterdir() if p.is_dir() and not atomic.is_temporary(p)}
    with sqlite3.connect(root / "index.sqlite") as db:
        indexed_before = {row[0] for row in db.execute("SELECT id FROM runs")}
    store = RunStore(root)
    listed = store.list()
    loadable = set()
    for run_id in listed["id"]:
        try:
            from_run(store.load(run_id), model)
            loadable.add(run_id)
        except ValueError:
            pass
    with sqlite3.connect(root / "index.sqlite") as db:
        indexed_after = {row[0] for row in db.execute("SELECT id FROM runs")}
    return {
        "saved": len(saved),
        "runs": len(folders),
        "lost": len(set(saved) - loadable),
        "half_written": len(folders - loadable),
        "damaged_listed": int((listed["status"] != "ok").sum()),
        "unlisted": len(folders - set(listed["id"])),
        "not_indexed_at_kill": len(folders - indexed_before),
        "not_indexed_after_list": len(folders - indexed_after),
        "temp_leftovers": len([p for p in root.iterdir() if atomic.is_temporary(p)]),
    }


def test_killed_fits_and_saves_lose_no_run_and_leave_none_half_written(tmp_path, model):
    rng = random.Random(SEED)
    root = tmp_path / "runs"
    saved, inside = kill_at_random(root, KILLS, rng)
    result = check_store(root, saved, model)
    print(
        f"\n{KILLS} kills, {result['lost'] + result['half_written']} runs lost or half-written, "
        f"{result['unlisted']} unlisted ({inside} kills left a save unfinished); {result}"
    )
    assert result["saved"] > 0 and inside >= 5  # the kills did reach the saves
    assert result["lost"] == result["half_written"] == result["damaged_listed"] == result["unlisted"] == 0
    assert result["not_indexed_after_list"] == 0


def test_killed_saves_while_the_index_is_locked(tmp_path, model):
    """The index held by another process: saves keep their runs (not indexed), kills lose none."""
    rng = random.Random(SEED + 1)
    root = tmp_path / "runs"
    RunStore(root).save(
        to_run(TaskVector.fit(model, load_task("antonym"), CONFIG), model, load_task("antonym"))
    )
    lock = sqlite3.connect(root / "index.sqlite", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        saved, _ = kill_at_random(root, 6, rng, lock_timeout=0.05)
        listed = RunStore(root).list()  # the lock is still held
        assert set(saved) <= set(listed["id"]) and (listed["status"] == "ok").all()
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    result = check_store(root, saved, model)
    assert result["not_indexed_at_kill"] >= len(saved)  # none of them could be indexed ...
    assert (
        result["lost"]
        == result["half_written"]
        == result["unlisted"]
        == result["not_indexed_after_list"]
        == 0
    )


def test_concurrent_fits_all_land(tmp_path, model):
    root = tmp_path / "runs"
    children = [start_child(root) for _ in range(3)]
    time.sleep(3)
    saved: list[str] = []
    for _proc, conn in children:
        drain(conn, saved)
    for proc, conn in children:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(10)
        drain(conn, saved)
    result = check_store(root, saved, model)
    assert result["saved"] >= 3 and len(set(saved)) == len(saved)
    assert result["lost"] == result["half_written"] == result["unlisted"] == 0


@pytest.mark.slow
def test_killed_cli_fits(tmp_path, model):
    """The real entry point, `python -m workbench fit`, killed at seeded random times."""
    rng = random.Random(SEED + 2)
    root = tmp_path / "runs"
    env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path / "cache")}
    argv = [
        sys.executable,
        "-m",
        "workbench",
        "fit",
        "--method",
        "TV",
        "--model",
        "tiny-llama",
        "--task",
        "antonym",
        "--prompts",
        "3",
        "--shots",
        "1",
        "--no-eval",
        "--store",
        str(root),
        "--no-progress",
        "--device",
        "cpu",
    ]
    start = time.monotonic()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, timeout=300)
    whole = time.monotonic() - start
    saved = [p.name for p in root.iterdir() if p.is_dir() and not atomic.is_temporary(p)]
    for _ in range(4):
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        time.sleep(rng.uniform(0.6, 1.1) * whole)  # around the end of the fit, where the save is
        proc.kill()
        out, _ = proc.communicate()
        saved += [line.split()[0] for line in out.splitlines() if line.startswith("tv-")]
    result = check_store(root, saved, model)
    print(f"\n4 CLI kills: {result}")
    assert result["lost"] == result["half_written"] == result["unlisted"] == 0
