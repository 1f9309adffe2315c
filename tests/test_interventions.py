"""The intervention vocabulary (workbench/interventions.py) on the tiny models: each op, each
'where', each 'when', and its phases during generation."""

import pytest
import torch

from workbench.interventions import (
    Deferred,
    Edit,
    Intervention,
    When,
    Where,
    add_to_residual,
    mix_heads,
    replace_head,
    replace_residual,
)
from workbench.model import inference

PROMPTS = ["abc -> cba\nxyz ->", "hello ->", "q"]


def _run(model, *interventions, capture=()):
    hooks = [hook for i in interventions for hook in i.hooks(model)]
    inference.run_hooks_only(model, PROMPTS, [*hooks, *capture])


def _mix(alpha, target, when=When.LAST):
    return Intervention("mix", (mix_heads(alpha, target, when),))


# ----------------------------------------------------------------------------- mix (moved from test_heads)


def test_mix_with_alpha_zero_changes_nothing(tiny_model):
    shape = tiny_model.heads.shape
    alpha = torch.zeros(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    plain = inference.last_logits(tiny_model, PROMPTS)
    mixed = inference.last_logits(tiny_model, PROMPTS, _mix(alpha, target).hooks(tiny_model))
    assert torch.allclose(plain, mixed, atol=1e-5)


def test_mix_with_alpha_one_replaces_last_token_heads(tiny_model):
    shape = tiny_model.heads.shape
    alpha = torch.ones(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    # the capture hook is registered after the mix hook on the same point, so it sees z'
    store = {}
    _run(tiny_model, _mix(alpha, target), capture=tiny_model.heads.capture_z(store))
    for layer in range(shape.n_layers):
        assert torch.allclose(store[layer], target[layer].expand_as(store[layer]), atol=1e-6)
    plain = inference.last_logits(tiny_model, PROMPTS)
    mixed = inference.last_logits(tiny_model, PROMPTS, _mix(alpha, target).hooks(tiny_model))
    assert not torch.allclose(plain, mixed, atol=1e-3)


def test_mix_is_a_weighted_average_per_head(tiny_llama):
    shape = tiny_llama.heads.shape
    alpha = torch.rand(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    before, after = {}, {}
    # layer 0's z before the edit is the same with or without it (the edit is on z itself)
    _run(tiny_llama, capture=tiny_llama.heads.capture_z(before, layers=[0]))
    _run(tiny_llama, _mix(alpha, target), capture=tiny_llama.heads.capture_z(after, layers=[0]))
    expected = (1 - alpha[0][:, None]) * before[0] + alpha[0][:, None] * target[0]
    assert torch.allclose(after[0], expected, atol=1e-5)


def test_mix_touches_only_the_last_position(tiny_llama):
    shape = tiny_llama.heads.shape
    alpha = torch.ones(shape.n_layers, shape.n_heads)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    before, after = {}, {}
    _run(tiny_llama, capture=tiny_llama.heads.capture_z(before, pos=-2))
    _run(tiny_llama, _mix(alpha, target), capture=tiny_llama.heads.capture_z(after, pos=-2))
    assert torch.allclose(before[0], after[0], atol=1e-6)  # layer 0 at pos -2 sees no change


def test_mix_is_differentiable_in_alpha(tiny_llama):
    shape = tiny_llama.heads.shape
    beta = torch.zeros(shape.n_layers, shape.n_heads, requires_grad=True)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    logits = inference.last_logits(tiny_llama, PROMPTS, _mix(torch.sigmoid(beta), target).hooks(tiny_llama))
    logits.logsumexp(-1).sum().backward()
    assert beta.grad is not None and beta.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- residual and single heads


def test_residual_add_and_replace(tiny_model):
    d_model = tiny_model.heads.shape.d_model
    plain = inference.last_logits(tiny_model, PROMPTS)
    zero = Intervention("zero", (add_to_residual(torch.zeros(1, d_model), (1,)),))
    assert torch.allclose(
        plain, inference.last_logits(tiny_model, PROMPTS, zero.hooks(tiny_model)), atol=1e-6
    )
    vector = torch.randn(d_model)
    store = {}
    _run(tiny_model, Intervention("tv", (replace_residual(1, vector),)),
         capture=tiny_model.heads.capture_resid(store, layers=[1]))
    assert torch.allclose(store[1], vector.expand(len(PROMPTS), -1))
    added = {}
    _run(tiny_model, Intervention("add", (add_to_residual(vector[None], (1,)),)),
         capture=tiny_model.heads.capture_resid(added, layers=[1]))
    before = {}
    _run(tiny_model, capture=tiny_model.heads.capture_resid(before, layers=[1]))
    assert torch.allclose(added[1] - before[1], vector.expand(len(PROMPTS), -1), atol=1e-5)


def test_replace_head_changes_that_head_only(tiny_model):
    shape = tiny_model.heads.shape
    value = torch.randn(shape.d_head)
    before, after = {}, {}
    _run(tiny_model, capture=tiny_model.heads.capture_z(before))
    patch = Intervention("patch", (replace_head(1, 2, value),))
    assert len(patch.hooks(tiny_model)) == 1  # only the patched layer is hooked
    _run(tiny_model, patch, capture=tiny_model.heads.capture_z(after))
    assert torch.allclose(after[1][:, 2], value.expand(len(PROMPTS), -1))
    others = [h for h in range(shape.n_heads) if h != 2]
    assert torch.equal(after[1][:, others], before[1][:, others]) and torch.equal(after[0], before[0])


def test_per_query_values_reach_their_own_query(tiny_model):
    d_model = tiny_model.heads.shape.d_model
    vectors = torch.randn(len(PROMPTS), 1, d_model)  # (B, one layer, d_model)
    before, after = {}, {}
    _run(tiny_model, capture=tiny_model.heads.capture_resid(before, layers=[2]))
    _run(tiny_model, Intervention("atv", (add_to_residual(vectors, (2,), per_query=True),)),
         capture=tiny_model.heads.capture_resid(after, layers=[2]))
    assert torch.allclose(after[2] - before[2], vectors[:, 0], atol=1e-5)


# ----------------------------------------------------------------------------- when


def test_every_position_edits_the_whole_prompt(tiny_llama):
    d_model = tiny_llama.heads.shape.d_model
    vector = torch.randn(d_model)
    edit = add_to_residual(vector[None], (0,), when=When.ALL)
    intervention = Intervention("all", (edit,))
    assert (
        not intervention.last_token_only
        and Intervention("last", (add_to_residual(vector[None], (0,)),)).last_token_only
    )
    for pos in (-1, -2):
        before, after = {}, {}
        _run(tiny_llama, capture=tiny_llama.heads.capture_resid(before, pos=pos, layers=[0]))
        _run(tiny_llama, intervention, capture=tiny_llama.heads.capture_resid(after, pos=pos, layers=[0]))
        assert torch.allclose(after[0] - before[0], vector.expand(len(PROMPTS), -1), atol=1e-5)


def test_decode_phase_hooks_only_for_edits_that_last(tiny_llama):
    vector = torch.zeros(1, tiny_llama.heads.shape.d_model)
    edit = add_to_residual(vector, (0,))
    assert edit.hooks(tiny_llama, "decode") == [] and len(edit.hooks(tiny_llama, "prompt")) == 1
    for when in (When.GENERATED, When.ALL):
        moved = Intervention("x", (edit,)).at(when)
        assert moved.edits[0].when is when and len(moved.hooks(tiny_llama, "decode")) == 1


def test_injecting_at_generated_tokens_changes_the_continuation(tiny_llama):
    """Prompt-only injection leaves the decoding steps as they were; injecting at every
    generated token as well changes what follows the first token."""
    torch.manual_seed(0)
    shape = tiny_llama.heads.shape
    vectors = 4.0 * torch.randn(shape.n_layers, shape.d_model)
    last = Intervention("v", (add_to_residual(vectors),))
    prompt_only = inference.generate(tiny_llama, PROMPTS, last, max_new_tokens=6, stop="\x00never")
    every = inference.generate(
        tiny_llama, PROMPTS, last.at(When.GENERATED), max_new_tokens=6, stop="\x00never"
    )
    # the first token comes from the (same) intervened prompt pass
    assert torch.equal(prompt_only.new_tokens[:, 0], every.new_tokens[:, 0])
    assert not torch.equal(prompt_only.new_tokens[:, 1:], every.new_tokens[:, 1:])
    # prompt-only: each decoding step is the plain model's forward on the intervened prefix
    for i, prompt in enumerate(PROMPTS):
        tokens = tiny_llama.bridge.to_tokens(prompt)
        with torch.no_grad():
            first = tiny_llama.bridge.run_with_hooks(tokens, fwd_hooks=last.hooks(tiny_llama))[0, -1].argmax()
        assert int(first) == int(prompt_only.new_tokens[i, 0])
    steps = prompt_only.new_tokens
    tokens = torch.cat([inference.encode(tiny_llama, PROMPTS).tokens, steps[:, :1]], dim=1)
    mask = torch.cat(
        [inference.encode(tiny_llama, PROMPTS).attention_mask, torch.ones_like(steps[:, :1])], dim=1
    )
    hooks = [(name, _at_prompt_only(fn, tokens.shape[1] - 1)) for name, fn in last.hooks(tiny_llama)]
    with torch.no_grad():
        logits = tiny_llama.bridge.run_with_hooks(tokens, attention_mask=mask, fwd_hooks=hooks)
    assert torch.equal(logits[:, -1].argmax(-1), steps[:, 1])


def _at_prompt_only(fn, prompt_length: int):
    """Apply a last-token edit to the prompt's last position inside a longer sequence."""

    def hook(x, hook):
        edited = fn(x[:, :prompt_length], hook)
        return torch.cat([edited, x[:, prompt_length:]], dim=1)

    return hook


# ----------------------------------------------------------------------------- data checks


def test_edits_check_their_shapes_and_ops():
    with pytest.raises(ValueError, match="holds 2 layers but the edit names 1"):
        Edit(Where("resid", (0,)), "add", torch.zeros(2, 4))
    with pytest.raises(ValueError, match="needs a weight"):
        Edit(Where("head", (0,)), "mix", torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="Unknown op"):
        Edit(Where("resid", (0,)), "scale", torch.zeros(1, 4))
    with pytest.raises(ValueError, match="Only the 'head' component"):
        Where("resid", (0,), heads=(1,))
    with pytest.raises(ValueError, match="Unknown 'when'"):
        When.parse("sometimes")


def test_an_edit_outside_the_model_is_a_clear_error(tiny_llama):
    edit = add_to_residual(torch.zeros(1, tiny_llama.heads.shape.d_model), (7,))
    with pytest.raises(ValueError, match="Layer 7 is outside the model's 3 layers"):
        edit.hooks(tiny_llama, "prompt")


def test_a_deferred_intervention_builds_its_edits_per_batch(tiny_llama):
    d_model = tiny_llama.heads.shape.d_model
    seen = []

    def build(model, prompts, when):
        seen.append((len(prompts), when))
        return (add_to_residual(torch.ones(len(prompts), 1, d_model), (0,), when=when, per_query=True),)

    deferred = Deferred(name="per-query", build=build, needs_prompts=True)
    with pytest.raises(ValueError, match="per query"):
        deferred.hooks(tiny_llama)
    made = deferred.at("generated").for_prompts(tiny_llama, PROMPTS)
    assert seen == [(3, When.GENERATED)] and made.edits[0].when is When.GENERATED
    assert not Deferred(name="x", build=build, when=When.ALL).last_token_only
