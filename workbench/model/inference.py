"""Batched forward passes with hooks: last-token logits, greedy decoding, activation capture.

Prompts are left-padded, so position -1 is every prompt's last token. :func:`generate`
takes an :class:`workbench.interventions.Intervention` and asks it for the hooks of each
phase: the prompt pass, then every decoding step (where an edit that acts at the last
prompt token only adds none, and the generated tokens read the intervened prompt through
the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.interventions import Intervention
from workbench.model.heads import Hook
from workbench.model.loading import LoadedModel


@dataclass
class Batch:
    tokens: torch.Tensor  # (B, T) left-padded token ids
    attention_mask: torch.Tensor  # (B, T) 1 for real tokens
    lengths: list[int]  # real tokens per prompt


def encode(model: LoadedModel, prompts: list[str]) -> Batch:
    if not prompts:
        raise ValueError("No prompts to run.")
    from transformer_lens import utilities as utils

    bridge = model.bridge
    # truncate=False: the bridge would otherwise cut every prompt to n_ctx from the right,
    # dropping the query silently; an over-long prompt is an error instead.
    tokens = bridge.to_tokens(prompts, padding_side="left", truncate=False).to(model.device)
    if tokens.shape[1] > bridge.cfg.n_ctx:
        raise ValueError(
            f"A prompt has {tokens.shape[1]} tokens, over the context of {bridge.cfg.n_ctx} tokens of "
            f"{model.name}: use fewer shots or shorter inputs."
        )
    mask = utils.get_attention_mask(
        model.tokenizer, tokens, prepend_bos=bridge.cfg.default_prepend_bos, padding_side="left"
    ).to(model.device)
    return Batch(tokens, mask.long(), mask.sum(-1).tolist())


def last_logits(model: LoadedModel, prompts: list[str], hooks: list[Hook] = ()) -> torch.Tensor:
    """Logits at every prompt's last token, (B, vocab). Differentiable through the hooks."""
    batch = encode(model, prompts)
    logits = model.bridge.run_with_hooks(
        batch.tokens, attention_mask=batch.attention_mask, fwd_hooks=list(hooks)
    )
    return logits[:, -1]


def run_hooks_only(model: LoadedModel, prompts: list[str], hooks: list[Hook]) -> None:
    """A forward pass for the hooks' side effects (capturing activations)."""
    with torch.no_grad():
        last_logits(model, prompts, hooks)


@torch.no_grad()
def mean_last_token(model: LoadedModel, prompts: list[str], capture, batch_size: int = 16) -> torch.Tensor:
    """Mean over prompts of a per-layer activation at the last token, stacked over layers.

    ``capture`` is a :class:`workbench.model.heads.HeadAccess` reader (``capture_z`` ->
    (L, H, d_head), ``capture_resid`` -> (L, d_model)).
    """
    total = None
    for start in range(0, len(prompts), batch_size):
        store: dict[int, torch.Tensor] = {}
        run_hooks_only(model, prompts[start : start + batch_size], capture(store))
        summed = torch.stack([store[layer].sum(0) for layer in sorted(store)]).float()  # (L, ...)
        total = summed if total is None else total + summed
    return total / len(prompts)


@dataclass
class Generation:
    first_logits: torch.Tensor  # (B, vocab) at the last prompt token
    new_tokens: torch.Tensor  # (B, n_new)
    texts: list[str]  # decoded continuations (n_new tokens)
    prompt_tokens: list[int]  # real prompt tokens per query


@torch.no_grad()
def generate(
    model: LoadedModel,
    prompts: list[str],
    intervention: Intervention | None = None,
    max_new_tokens: int = 8,
    stop: str = "\n",
) -> Generation:
    """Greedy decoding with a KV cache, the intervention applied in each phase it acts in."""
    bridge = model.bridge
    batch = encode(model, prompts)
    prompt_hooks = intervention.hooks(model, "prompt") if intervention else []
    decode_hooks = intervention.hooks(model, "decode") if intervention else []
    logits, cache = bridge.run_with_hooks(
        batch.tokens, attention_mask=batch.attention_mask, fwd_hooks=prompt_hooks,
        return_type="logits_and_cache", use_cache=True,
    )
    first = logits[:, -1].float()
    mask = batch.attention_mask
    step = first.argmax(-1)  # (B,)
    generated = [step]
    done = _has_stop(model, step, stop)
    for _ in range(max_new_tokens - 1):
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        if decode_hooks:
            logits, cache = bridge.run_with_hooks(
                step[:, None], attention_mask=mask, past_key_values=cache, fwd_hooks=decode_hooks,
                return_type="logits_and_cache",
            )
        else:
            logits, cache = bridge(
                step[:, None], attention_mask=mask, past_key_values=cache, return_type="logits_and_cache"
            )
        step = logits[:, -1].argmax(-1)
        generated.append(step)
        done |= _has_stop(model, step, stop)
    new = torch.stack(generated, dim=1)
    texts = model.tokenizer.batch_decode(new.tolist(), skip_special_tokens=True)
    return Generation(first, new, texts, batch.lengths)


def _has_stop(model: LoadedModel, token_ids: torch.Tensor, stop: str) -> torch.Tensor:
    pieces = model.tokenizer.batch_decode(token_ids[:, None].tolist())
    eos = model.tokenizer.eos_token_id
    return torch.tensor(
        [stop in p or int(t) == eos for p, t in zip(pieces, token_ids.tolist())], device=token_ids.device
    )


@dataclass
class CachedPrompts:
    """Prompts whose tokens before the last one are run once and kept as a KV cache.

    Interventions at the last token cannot change the earlier positions (attention is
    causal), so a fit that only hooks the last token can re-run just that token at each
    step: one token per prompt instead of the whole prompt.
    """

    last_tokens: torch.Tensor  # (B, 1)
    attention_mask: torch.Tensor  # (B, T) over prefix + last token
    cache: object  # transformers DynamicCache over the prefix, (B, T - 1) positions
    prefix_len: int

    def __post_init__(self) -> None:
        self._prefix = [(layer.keys, layer.values) for layer in self.cache.layers]

    def __len__(self) -> int:
        return self.last_tokens.shape[0]

    def restore(self) -> None:
        """Put the prefix-only keys/values back after a forward pass appended to them."""
        for layer, (keys, values) in zip(self.cache.layers, self._prefix):
            layer.keys, layer.values = keys, values


@torch.no_grad()
def cache_prefixes(model: LoadedModel, prompts: list[str]) -> CachedPrompts:
    batch = encode(model, prompts)
    if batch.tokens.shape[1] < 2 or min(batch.lengths) < 2:
        raise ValueError("Prefix caching needs prompts of at least two tokens.")
    _, cache = model.bridge(
        batch.tokens[:, :-1], attention_mask=batch.attention_mask[:, :-1],
        return_type="logits_and_cache", use_cache=True,
    )
    return CachedPrompts(batch.tokens[:, -1:], batch.attention_mask, cache, batch.tokens.shape[1] - 1)


def cached_logits(
    model: LoadedModel,
    cached: CachedPrompts,
    inputs: torch.Tensor,
    mask: torch.Tensor,
    hooks: list[Hook] = (),
) -> torch.Tensor:
    """Logits (B, C, vocab) of ``inputs`` (B, C) run after the cached prefixes: column 0 is
    each prompt's last token, the others tokens fed after it (``mask`` (B, C): 1 for real
    ones). Differentiable through the hooks."""
    attention = torch.cat([cached.attention_mask[:, :-1], mask.to(cached.attention_mask.dtype)], dim=1)
    try:
        return model.bridge.run_with_hooks(
            inputs, attention_mask=attention, past_key_values=cached.cache, fwd_hooks=list(hooks)
        )
    finally:
        cached.restore()  # drop the new tokens' keys/values (and their autograd graph)


def cached_last_logits(model: LoadedModel, cached: CachedPrompts, hooks: list[Hook] = ()) -> torch.Tensor:
    """Logits at the last prompt token, (B, vocab), running only that token (differentiable)."""
    return cached_logits(model, cached, cached.last_tokens, cached.attention_mask[:, -1:], hooks)[:, -1]
