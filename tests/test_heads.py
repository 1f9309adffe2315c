import torch

from workbench.model import inference

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
    out_hook = (
        f"blocks.{layer}.attn.o.hook_out",
        lambda x, hook: out_store.setdefault("o", x[:, -1]) is None or x,
    )
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
