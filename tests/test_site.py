import multiprocessing
import os

import pytest
import torch

from workbench import inference
from workbench.models import load_model
from workbench.runs import Run, RunError, RunStore
from workbench.site import SiteConfig, SoftInjection, fit_site, from_run, task_embedding, to_run
from workbench.tasks import Task

TINY = SiteConfig(template="qa", shots=2, n_prompts=6, steps=12, eval_every=3, batch_size=8, lr=0.3, patience=100)
PROMPTS = ["Q: ab\nA:", "Q: hello\nA:", "Q: x\nA:"]


def _task(name="toy", n=40, answer=lambda i: "z"):
    return Task(name, [(f"w{i:02d}", answer(i)) for i in range(n)])


def test_task_embedding_is_the_mean_last_token_head_output(tiny_llama):
    task = _task()
    emb = task_embedding(tiny_llama, task, "qa", shots=2, n_prompts=3, seed=0)
    shape = tiny_llama.heads.shape
    assert emb.shape == (shape.n_layers, shape.n_heads, shape.d_head)
    # Recompute by hand from the same prompts.
    import numpy as np

    from workbench.prompts import build_prompts, get_template

    train = task.split(0).train
    picks = np.random.default_rng(0).choice(len(train), size=3, replace=False)
    prompts = build_prompts(get_template("qa"), [train[i][0] for i in picks], train, 2, seed=1)
    store = {}
    inference.run_hooks_only(tiny_llama, prompts, tiny_llama.heads.capture_z(store))
    assert torch.allclose(emb[1], store[1].mean(0), atol=1e-5)


def test_alpha_near_zero_leaves_logits_unchanged(tiny_model):
    shape = tiny_model.heads.shape
    injection = SoftInjection(torch.sigmoid(torch.full((shape.n_layers, shape.n_heads), -30.0)),
                              torch.randn(shape.n_layers, shape.n_heads, shape.d_head))
    plain = inference.last_logits(tiny_model, PROMPTS)
    injected = inference.last_logits(tiny_model, PROMPTS, injection.hooks(tiny_model))
    assert torch.allclose(plain, injected, atol=1e-5)


def test_alpha_near_one_replaces_head_outputs_with_the_embedding(tiny_model):
    shape = tiny_model.heads.shape
    embedding = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    injection = SoftInjection(torch.sigmoid(torch.full((shape.n_layers, shape.n_heads), 30.0)), embedding)
    store = {}
    inference.run_hooks_only(tiny_model, PROMPTS, [*injection.hooks(tiny_model), *tiny_model.heads.capture_z(store)])
    for layer in range(shape.n_layers):
        assert torch.allclose(store[layer], embedding[layer].expand_as(store[layer]), atol=1e-5)


def test_gradients_reach_only_beta(tiny_llama):
    shape = tiny_llama.heads.shape
    beta = torch.zeros(shape.n_layers, shape.n_heads, requires_grad=True)
    embedding = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    cached = inference.cache_prefixes(tiny_llama, PROMPTS)
    logits = inference.cached_last_logits(tiny_llama, cached, tiny_llama.heads.mix_z(torch.sigmoid(beta), embedding))
    logits.logsumexp(-1).sum().backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0
    assert embedding.grad is None
    assert all(p.grad is None for p in tiny_llama.bridge.parameters())


def test_cached_prefix_logits_equal_the_full_forward(tiny_model):
    shape = tiny_model.heads.shape
    hooks = tiny_model.heads.mix_z(torch.rand(shape.n_layers, shape.n_heads), torch.randn(shape.n_layers, shape.n_heads, shape.d_head))
    full = inference.last_logits(tiny_model, PROMPTS, hooks)
    cached = inference.cache_prefixes(tiny_model, PROMPTS)
    for _ in range(2):  # the cache is restored after each pass
        assert torch.allclose(inference.cached_last_logits(tiny_model, cached, hooks), full, atol=1e-5)


def test_fit_lowers_the_valid_loss_on_a_synthetic_task(tiny_llama):
    fit = fit_site(tiny_llama, _task(), TINY)
    start = fit.history["valid_loss"].iloc[0]
    assert fit.best_valid_loss < start - 0.01
    assert fit.best_step > 0
    assert fit.alpha.shape == (3, 4) and not torch.allclose(fit.alpha, torch.full((3, 4), 0.5))


def test_task_agnostic_fit_shares_one_alpha_over_tasks(tiny_llama):
    tasks = [_task("a"), _task("b", answer=lambda i: "q")]
    fit = fit_site(tiny_llama, tasks, TINY)
    assert fit.tasks == ["a", "b"] and set(fit.embeddings) == {"a", "b"}
    assert not torch.allclose(fit.embeddings["a"], fit.embeddings["b"])
    with pytest.raises(KeyError, match="no embedding for task 'c'"):
        fit.intervention("c")


# ----------------------------------------------------------------------------- run store


@pytest.fixture(scope="module")
def small_fit(tiny_llama):
    return fit_site(tiny_llama, _task(), SiteConfig(template="qa", shots=2, n_prompts=4, steps=3, eval_every=1, batch_size=8))


def test_store_round_trip(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    run_id = store.save(to_run(small_fit, tiny_llama, metrics={"test_first_token_acc": 0.25}))
    listed = store.list(method="SITE", task="toy")
    assert list(listed["id"]) == [run_id] and listed["metrics"][0] == {"test_first_token_acc": 0.25}
    loaded = from_run(store.load(run_id), tiny_llama)
    assert torch.equal(loaded.beta, small_fit.beta)
    assert torch.equal(loaded.embeddings["toy"], small_fit.embeddings["toy"])
    assert loaded.config == small_fit.config and loaded.best_step == small_fit.best_step
    assert store.latest("SITE", "toy", "tiny-llama").id == run_id
    store.delete(run_id)
    assert store.list().empty and not (tmp_path / run_id).exists()


def test_loading_into_a_model_of_another_shape_is_a_clear_error(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    run_id = store.save(to_run(small_fit, tiny_llama))
    gpt2 = load_model("tiny-gpt2", device="cpu")  # same layers and heads, but 4 kv heads
    with pytest.raises(RunError, match=r"fitted on tiny-llama and does not fit tiny-gpt2: n_kv_heads 2 vs 4"):
        from_run(store.load(run_id), gpt2)


def test_a_write_interrupted_midway_leaves_no_run(tmp_path, tiny_llama, small_fit, monkeypatch):
    store = RunStore(tmp_path)
    kept = store.save(to_run(small_fit, tiny_llama))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped while writing the tensors

    monkeypatch.setattr("workbench.runs.save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        store.save(to_run(small_fit, tiny_llama))
    assert list(store.list()["id"]) == [kept]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [kept]  # no temp folder left behind
    assert from_run(store.load(kept)).best_step == small_fit.best_step


def test_the_index_can_be_rebuilt_from_the_run_folders(tmp_path, tiny_llama, small_fit):
    store = RunStore(tmp_path)
    ids = {store.save(to_run(small_fit, tiny_llama)) for _ in range(2)}
    (tmp_path / "index.sqlite").unlink()
    assert RunStore(tmp_path).reindex() == 2 and set(RunStore(tmp_path).list()["id"]) == ids


def _save_many(root: str, n: int) -> None:
    store = RunStore(root)
    for i in range(n):
        store.save(Run("SITE", {"model": "m", "n_layers": 1}, [f"t{os.getpid()}-{i}"], {"beta": torch.zeros(1, 2)}))


def test_concurrent_writers_do_not_corrupt_the_index(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_save_many, args=(str(tmp_path), 5)) for _ in range(3)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert all(w.exitcode == 0 for w in workers)
    store = RunStore(tmp_path)
    assert len(store.list()) == 15 and store.reindex() == 15


def test_unknown_run_id_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match="No run 'nope'"):
        RunStore(tmp_path).load("nope")
    with pytest.raises(RunError, match="No run"):
        RunStore(tmp_path).load("../etc")
