import pytest
import torch

from workbench.interventions import Intervention, mix_heads
from workbench.methods.activations import task_embedding
from workbench.methods.site import SiteConfig, SoftInjection
from workbench.model import inference
from workbench.tasks.task import Task

TINY = SiteConfig(
    template="qa", shots=2, n_prompts=6, steps=12, eval_every=3, batch_size=8, lr=0.3, patience=100
)
PROMPTS = ["Q: ab\nA:", "Q: hello\nA:", "Q: x\nA:"]


def _task(name="toy", n=40, answer=lambda i: "z"):
    return Task(name, [(f"w{i:02d}", answer(i)) for i in range(n)])


def _injection(alpha, embedding):
    return Intervention("SITE", (mix_heads(alpha, embedding),))


def test_task_embedding_is_the_mean_last_token_head_output(tiny_llama):
    import numpy as np

    from workbench.tasks.prompts import build_prompts, get_template, train_prompts

    task = _task()
    train = task.split(0).train
    prompts, _ = train_prompts(train, "qa", shots=2, n_prompts=3, seed=0)
    emb = task_embedding(tiny_llama, prompts)
    shape = tiny_llama.heads.shape
    assert emb.shape == (shape.n_layers, shape.n_heads, shape.d_head)
    # The prompts, rebuilt by hand: 3 train queries, 2 demonstrations each.
    picks = np.random.default_rng(0).choice(len(train), size=3, replace=False)
    assert prompts == build_prompts(get_template("qa"), [train[i][0] for i in picks], train, 2, seed=1)
    store = {}
    inference.run_hooks_only(tiny_llama, prompts, tiny_llama.heads.capture_z(store))
    assert torch.allclose(emb[1], store[1].mean(0), atol=1e-5)


def test_alpha_near_zero_leaves_logits_unchanged(tiny_model):
    shape = tiny_model.heads.shape
    injection = _injection(torch.sigmoid(torch.full((shape.n_layers, shape.n_heads), -30.0)),
                           torch.randn(shape.n_layers, shape.n_heads, shape.d_head))
    plain = inference.last_logits(tiny_model, PROMPTS)
    injected = inference.last_logits(tiny_model, PROMPTS, injection.hooks(tiny_model))
    assert torch.allclose(plain, injected, atol=1e-5)


def test_alpha_near_one_replaces_head_outputs_with_the_embedding(tiny_model):
    shape = tiny_model.heads.shape
    embedding = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    injection = _injection(torch.sigmoid(torch.full((shape.n_layers, shape.n_heads), 30.0)), embedding)
    store = {}
    inference.run_hooks_only(
        tiny_model, PROMPTS, [*injection.hooks(tiny_model), *tiny_model.heads.capture_z(store)]
    )
    for layer in range(shape.n_layers):
        assert torch.allclose(store[layer], embedding[layer].expand_as(store[layer]), atol=1e-5)


def test_gradients_reach_only_beta(tiny_llama):
    shape = tiny_llama.heads.shape
    beta = torch.zeros(shape.n_layers, shape.n_heads, requires_grad=True)
    embedding = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    cached = inference.cache_prefixes(tiny_llama, PROMPTS)
    logits = inference.cached_last_logits(
        tiny_llama, cached, _injection(torch.sigmoid(beta), embedding).hooks(tiny_llama)
    )
    logits.logsumexp(-1).sum().backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0
    assert embedding.grad is None
    assert all(p.grad is None for p in tiny_llama.bridge.parameters())


def test_cached_prefix_logits_equal_the_full_forward(tiny_model):
    shape = tiny_model.heads.shape
    hooks = _injection(torch.rand(shape.n_layers, shape.n_heads),
                       torch.randn(shape.n_layers, shape.n_heads, shape.d_head)).hooks(tiny_model)
    full = inference.last_logits(tiny_model, PROMPTS, hooks)
    cached = inference.cache_prefixes(tiny_model, PROMPTS)
    for _ in range(2):  # the cache is restored after each pass
        assert torch.allclose(inference.cached_last_logits(tiny_model, cached, hooks), full, atol=1e-5)


def test_fit_lowers_the_valid_loss_on_a_synthetic_task(tiny_llama):
    fit = SoftInjection.fit(tiny_llama, _task(), TINY)
    start = fit.trace.history["valid_loss"].iloc[0]
    assert fit.trace.best_valid_loss < start - 0.01
    assert fit.trace.best_step > 0
    assert fit.alpha.shape == (3, 4) and not torch.allclose(fit.alpha, torch.full((3, 4), 0.5))


def test_task_agnostic_fit_shares_one_alpha_over_tasks(tiny_llama):
    tasks = [_task("a"), _task("b", answer=lambda i: "q")]
    fit = SoftInjection.fit(tiny_llama, tasks, TINY)
    assert fit.tasks == ["a", "b"] and set(fit.embeddings) == {"a", "b"}
    assert not torch.allclose(fit.embeddings["a"], fit.embeddings["b"])
    with pytest.raises(KeyError, match="is for 'a', 'b', not 'c'"):
        fit.intervention("c")
