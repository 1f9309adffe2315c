"""The run store, the metadata schema and the codec (workbench/store/): round trips, atomic
writes, concurrent writers, the index, schema validation, the upgrade of version-0
metadata, and every bundled run against the schema."""

import dataclasses
import json
import multiprocessing
import os

import pytest
import torch

from workbench.methods.site import SiteConfig, SoftInjection
from workbench.model.loading import load_model
from workbench.store import schema
from workbench.store.codec import from_run, to_run
from workbench.store.runs import BUNDLED_RUNS, Run, RunError, RunStore, bundled_store
from workbench.tasks.files import load_task
from workbench.tasks.task import Task

SCORES = {"test_first_token_acc": 0.25, "test_exact_match": 0.5, "n_test": 4}


def _task(name="toy", n=40, answer=lambda i: "z"):
    return Task(name, [(f"w{i:02d}", answer(i)) for i in range(n)])


@pytest.fixture(scope="module")
def small_fit(tiny_llama):
    return SoftInjection.fit(
        tiny_llama,
        _task(),
        SiteConfig(template="qa", shots=2, n_prompts=4, steps=3, eval_every=1, batch_size=8),
    )


def test_store_round_trip(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    run_id = store.save(to_run(small_fit, tiny_llama, _task(), metrics={"toy": SCORES}))
    listed = store.list(method="SITE", task="toy")
    assert list(listed["id"]) == [run_id] and listed["metrics"][0] == {"toy": SCORES}
    loaded = from_run(store.load(run_id), tiny_llama)
    assert torch.equal(loaded.beta, small_fit.beta)
    assert torch.equal(loaded.embeddings["toy"], small_fit.embeddings["toy"])
    assert loaded.config == small_fit.config and loaded.trace.best_step == small_fit.trace.best_step
    assert store.latest("SITE", "toy", "tiny-llama").id == run_id
    store.delete(run_id)
    assert store.list().empty and not (tmp_path / run_id).exists()


def test_loading_into_a_model_of_another_shape_is_a_clear_error(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    run_id = store.save(to_run(small_fit, tiny_llama, _task()))
    gpt2 = load_model("tiny-gpt2", device="cpu")  # same layers and heads, but 4 kv heads
    with pytest.raises(RunError, match=r"fitted on tiny-llama and does not fit tiny-gpt2: n_kv_heads 2 vs 4"):
        from_run(store.load(run_id), gpt2)


def test_a_write_interrupted_midway_leaves_no_run(tmp_path, tiny_llama, small_fit, monkeypatch):
    store = RunStore(tmp_path)
    kept = store.save(to_run(small_fit, tiny_llama, _task()))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped while writing the tensors

    monkeypatch.setattr("workbench.store.runs.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(to_run(small_fit, tiny_llama, _task()))
    assert list(store.list()["id"]) == [kept]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [kept]  # no temp folder left behind
    assert from_run(store.load(kept)).trace.best_step == small_fit.trace.best_step


def test_the_index_can_be_rebuilt_from_the_run_folders(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    ids = {store.save(to_run(small_fit, tiny_llama, _task())) for _ in range(2)}
    (tmp_path / "index.sqlite").unlink()
    assert set(RunStore(tmp_path).reindex().done) == ids and set(RunStore(tmp_path).list()["id"]) == ids


def _minimal_run(task: str) -> Run:
    """A run with schema-valid metadata and no model behind it."""
    meta = {
        "task_sources": {task: {"path": "", "sha256": "0" * 64}},
        "split_sizes": {task: {"train": 3, "valid": 1, "test": 1}},
        "config": {"template": "qa", "seed": 0},
        "template": "qa",
        "fit": {"seconds": 0.0},
        "metrics": {},
    }
    spec = schema.spec_of({**meta, "method": "SITE", "model": {"model": "m"}, "tasks": [task]})
    meta.update(spec=spec, spec_hash=schema.spec_hash(spec))
    shape = {"model": "m", "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "d_head": 1, "d_model": 2}
    return Run("SITE", shape, [task], {"beta": torch.zeros(1, 2)}, meta)


def _save_many(root: str, n: int) -> None:
    store = RunStore(root)
    for i in range(n):
        store.save(_minimal_run(f"t{os.getpid()}-{i}"))


def test_concurrent_writers_do_not_corrupt_the_index(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_save_many, args=(str(tmp_path), 5)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    store = RunStore(tmp_path)
    assert len(store.list()) == 15 and len(store.reindex().done) == 15


def test_unknown_run_id_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="No run 'nope'"):
        RunStore(tmp_path).load("nope")
    with pytest.raises(RunError, match="No run"):
        RunStore(tmp_path).load("../etc")


# ----------------------------------------------------------------------------- schema


def test_every_run_saves_the_same_schema_fields(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    task = _task()
    run_id = store.save(to_run(small_fit, tiny_llama, task, metrics={"toy": SCORES}))
    meta = json.loads((tmp_path / run_id / "meta.json").read_text())
    assert meta["schema"] == schema.SCHEMA_VERSION
    assert meta["split_sizes"] == {"toy": {"train": 28, "valid": 4, "test": 8, "fit_pool": 14,
                                           "selection": 18, "selection_from_train": 14}}
    assert meta["task_sources"]["toy"]["sha256"] == task.content_hash
    assert meta["fit"]["seconds"] > 0 and meta["fit"]["best_step"] == small_fit.trace.best_step
    assert meta["template"].startswith("qa: ") and meta["config"]["template"] == "qa"
    assert meta["prompt_start"] == "<bos>"  # tiny-llama's BOS starts every prompt
    assert set(meta["versions"]) >= {"workbench", "torch", "transformers", "transformer_lens", "python"}
    assert meta["versions"]["transformer_lens"] != "?"
    assert meta["model"] == tiny_llama.signature


def test_invalid_metadata_is_refused_on_save_and_on_load(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    with pytest.raises(RunError, match=r"'metrics.toy' lacks test_first_token_acc"):
        store.save(to_run(small_fit, tiny_llama, _task(), metrics={"toy": {"first": 0.5}}))
    with pytest.raises(RunError, match="has task 'other', which the run was not fitted on"):
        store.save(to_run(small_fit, tiny_llama, _task(), metrics={"other": SCORES}))
    held_out = to_run(small_fit, tiny_llama, _task(), metrics={"other": SCORES})
    held_out.meta["held_out"] = ["toy"]  # a task the run was fitted on cannot be held out
    with pytest.raises(RunError, match="'held_out' must be a list of task names the run was not fitted on"):
        store.save(held_out)
    assert store.list().empty
    held_out.meta["held_out"] = ["other"]  # scores on a held-out (unseen) task are kept
    kept = store.load(store.save(held_out))
    assert kept.meta["metrics"]["other"] == SCORES and kept.meta["held_out"] == ["other"]
    store.delete(kept.id)
    assert store.list().empty and [p for p in tmp_path.iterdir() if p.is_dir()] == []
    run_id = store.save(to_run(small_fit, tiny_llama, _task()))
    meta_path = tmp_path / run_id / "meta.json"
    meta = json.loads(meta_path.read_text())
    original = json.loads(meta_path.read_text())
    del meta["split_sizes"]["toy"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(RunError, match=r"split_sizes' lacks train / valid / test counts for task 'toy'"):
        store.load(run_id)
    meta_path.write_text(json.dumps({**original, "prompt_start": None}))
    with pytest.raises(RunError, match="'prompt_start' must be a string"):
        store.load(run_id)
    meta_path.write_text(json.dumps({**meta, "schema": 7}))
    with pytest.raises(RunError, match="unknown schema version 7"):
        store.load(run_id)


def test_version_0_metadata_is_upgraded_on_load_and_migrated_on_disk(tmp_path, tiny_llama, small_fit):
    """A run written before the schema had a version (like the bundled runs were): the fit
    record at the top level, the benchmark's "first" / "exact" as metrics, no split sizes."""
    store = RunStore(tmp_path)
    # the tiny fit relabelled as a fit on the built-in antonym task, whose splits upgrade can recover
    fit = dataclasses.replace(
        small_fit, tasks=["antonym"], embeddings={"antonym": small_fit.embeddings["toy"]}
    )
    run_id = store.save(to_run(fit, tiny_llama, load_task("antonym")))
    folder = tmp_path / run_id
    new = json.loads((folder / "meta.json").read_text())
    old = {
        key: new[key]
        for key in ("id", "method", "model", "tasks", "created", "versions", "config", "template")
    }
    old.update({"fit_seconds": 1.5, **{k: v for k, v in new["fit"].items() if k != "seconds"},
                "split_sizes": {},
                "metrics": {"antonym": {"task": "antonym", "method": "SITE", "first": 0.75, "exact": 0.5,
                                        "fit_s": 1.5, "s_per_query": 0.03, "note": ""}}})
    (folder / "meta.json").write_text(json.dumps(old))
    tensors_before = (folder / "tensors.safetensors").read_bytes()

    run = store.load(run_id)  # upgraded in memory
    sizes = load_task("antonym").split_sizes(0)
    assert run.meta["split_sizes"] == {"antonym": sizes}
    assert run.meta["metrics"]["antonym"] == {"test_first_token_acc": 0.75, "test_exact_match": 0.5,
                                              "n_test": sizes["test"], "s_per_query": 0.03}
    assert run.meta["fit"]["seconds"] == 1.5 and run.meta["migrated_from"] == 0
    loaded = from_run(run, tiny_llama)
    assert torch.equal(loaded.beta, small_fit.beta) and loaded.trace.best_step == small_fit.trace.best_step

    assert store.migrate().done == [run_id] and store.migrate().done == []
    on_disk = json.loads((folder / "meta.json").read_text())
    assert schema.validate(on_disk)["schema"] == schema.SCHEMA_VERSION
    assert (folder / "tensors.safetensors").read_bytes() == tensors_before  # tensors untouched


def test_a_version_0_run_whose_task_is_gone_is_a_clear_error():
    meta = {"id": "old", "method": "TV", "model": {"model": "m"}, "tasks": ["my_file_task"],
            "created": "2026-01-01T00:00:00", "versions": {}, "config": {"template": "qa", "seed": 0},
            "layer": 3}
    with pytest.raises(schema.SchemaError, match="task 'my_file_task' cannot be found"):
        schema.upgrade(meta, lambda name: None)


def test_every_bundled_run_follows_the_schema_with_split_sizes_and_test_metrics():
    runs = bundled_store().list()
    assert len(runs) >= 4 * 31
    for run_id in runs["id"]:
        meta = json.loads((BUNDLED_RUNS / run_id / "meta.json").read_text())
        schema.validate(meta)  # on disk, not only after an in-memory upgrade
        for task in meta["tasks"]:
            sizes = meta["split_sizes"][task]
            splits = {k: sizes[k] for k in ("train", "valid", "test")}  # newer runs add the selection sizes
            assert splits == load_task(task).split_sizes(meta["config"]["seed"]), run_id
            scores = meta["metrics"][task]
            assert scores["n_test"] == sizes["test"], run_id
            assert 0 <= scores["test_first_token_acc"] <= 1 and 0 <= scores["test_exact_match"] <= 1
            assert meta["task_sources"][task] == schema.task_source(load_task(task)), run_id
