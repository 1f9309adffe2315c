import torch

from workbench import inference

PROMPTS = ["abc -> cba\nxyz ->", "hello ->", "q"]


def _capture(model, hooks_extra=()):
    store = {}
    inference.run_hooks_only(model, PROMPTS, [*hooks_extra, *model.heads.capture_z(store)])
    return store


def test_per_head_projection_rebuilds_attention_output(tiny_model):
    # sum_h z[l,h] W_O[l,h] (+ bias) is exactly what the output projection writes.
    heads = tiny_model.heads
    z_store, out_store = {}, {}
    layer = 1
    out_hook = (f"blocks.{layer}.attn.o.hook_out", lambda x, hook: out_store.setdefault("o", x[:, -1]) is None or x)
    inference.run_hooks_only(tiny_model, PROMPTS, [*heads.capture_z(z_store), out_hook])
    z = torch.stack([z_store[l] for l in range(heads.shape.n_layers)], dim=1)  # (B, L, H, d_head)
    per_head = heads.project(z)[:, layer]  # (B, H, d_model)
    bias = heads.b_O[layer]
    assert torch.allclose(per_head.sum(1) + bias, out_store["o"], atol=1e-5)


def test_capture_has_one_slot_per_query_head(tiny_model):
    store = _capture(tiny_model)
    shape = tiny_model.heads.shape
    assert sorted(store) == list(range(shape.n_layers))
    assert store[0].shape == (len(PROMPTS), shape.n_heads, shape.d_head)


def test_mix_with_alpha_zero_changes_nothing(tiny_model):
    shape = tiny_model.heads.shape
    alpha = torch.zeros(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    plain = inference.last_logits(tiny_model, PROMPTS)
    mixed = inference.last_logits(tiny_model, PROMPTS, tiny_model.heads.mix_z(alpha, target))
    assert torch.allclose(plain, mixed, atol=1e-5)


def test_mix_with_alpha_one_replaces_last_token_heads(tiny_model):
    shape = tiny_model.heads.shape
    alpha = torch.ones(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    # the capture hook is registered after the mix hook on the same point, so it sees z'
    store = _capture(tiny_model, tiny_model.heads.mix_z(alpha, target))
    for layer in range(shape.n_layers):
        assert torch.allclose(store[layer], target[layer].expand_as(store[layer]), atol=1e-6)
    plain = inference.last_logits(tiny_model, PROMPTS)
    mixed = inference.last_logits(tiny_model, PROMPTS, tiny_model.heads.mix_z(alpha, target))
    assert not torch.allclose(plain, mixed, atol=1e-3)


def test_mix_touches_only_the_last_position(tiny_llama):
    shape = tiny_llama.heads.shape
    alpha = torch.ones(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    before, after = {}, {}
    inference.run_hooks_only(tiny_llama, PROMPTS, tiny_llama.heads.capture_z(before, pos=-2))
    inference.run_hooks_only(
        tiny_llama, PROMPTS, [*tiny_llama.heads.mix_z(alpha, target), *tiny_llama.heads.capture_z(after, pos=-2)]
    )
    assert torch.allclose(before[0], after[0], atol=1e-6)  # layer 0 at pos -2 sees no change


def test_mix_is_differentiable_in_alpha(tiny_llama):
    shape = tiny_llama.heads.shape
    beta = torch.zeros(shape.n_layers, shape.n_heads, requires_grad=True)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    logits = inference.last_logits(tiny_llama, PROMPTS, tiny_llama.heads.mix_z(torch.sigmoid(beta), target))
    logits.logsumexp(-1).sum().backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0


def test_residual_add_and_replace(tiny_model):
    d_model = tiny_model.heads.shape.d_model
    plain = inference.last_logits(tiny_model, PROMPTS)
    zero = inference.last_logits(tiny_model, PROMPTS, tiny_model.heads.add_resid({1: torch.zeros(d_model)}))
    assert torch.allclose(plain, zero, atol=1e-6)
    vector = torch.randn(d_model)
    store = {}
    inference.run_hooks_only(
        tiny_model, PROMPTS, [*tiny_model.heads.replace_resid(1, vector), *tiny_model.heads.capture_resid(store, layers=[1])]
    )
    assert torch.allclose(store[1], vector.expand(len(PROMPTS), -1))
