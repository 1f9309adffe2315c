"""Zero-shot queries cached once and scored, teacher-forced, many times.

Fits and layer sweeps try many interventions that act from the last prompt token on. The
tokens before it cannot see them (attention is causal), so each query's prefix is run once
and kept as a KV cache (:class:`workbench.model.inference.CachedPrompts`). A fit step or a
sweep point then runs only the last prompt token and the answer tokens fed after it:

    column      0                  1        2        ...
    input       last prompt token  ans[0]   ans[1]   ...
    predicts    ans[0]             ans[1]   ans[2]   ...

Column 0 is the prompt's last token, so an edit "at the last prompt token" acts there and
"at every generated token" from there on (``prompt_end=0`` in the vocabulary). Two
objectives read these columns (``workbench.scoring``):

* ``"first_token"``: the answer's tokens up to its first token that carries it (one column
  for a word, two for SmolLM2's digits: a bare space, then the digit);
* ``"answer"``: every answer token and the end-of-answer token (a line break), so a fit also
  learns to stop.

A batch feeds only the answer tokens its objective needs.

An edit at every position ("all", ATV's option) changes the prefix too, so it cannot use the
cache: such batches (``cache=False``) keep the left-padded prompts and run them whole each
time, returning the same columns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench import scoring
from workbench.interventions import Intervention
from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import PromptTemplate

OBJECTIVES = ("first_token", "answer")


@dataclass
class QueryBatch:
    cached: inference.CachedPrompts | None  # the prompts' prefixes, run once (None: run whole every time)
    inputs: torch.Tensor  # (B, C): last prompt token, then teacher-forced answer tokens
    targets: torch.Tensor  # (B, C): the token each column predicts; -100 where none
    mask: torch.Tensor  # (B, C) 1 for real columns (the inputs' attention mask)
    prompts: inference.Batch | None = None  # without a cache: the left-padded prompts (B, P)

    def __len__(self) -> int:
        return len(self.targets)

    def logits(self, model: LoadedModel, intervention: Intervention | None = None) -> torch.Tensor:
        """(B, C, vocab) with the intervention acting from column 0 (differentiable)."""
        if self.cached is None:  # the whole prompt, then the answer columns: (B, P - 1 + C)
            end = self.prompts.tokens.shape[1] - 1  # the last prompt token's column
            tokens = torch.cat([self.prompts.tokens[:, :-1], self.inputs], dim=1)
            attention = torch.cat([self.prompts.attention_mask[:, :-1], self.mask], dim=1)
            hooks = intervention.hooks(model, "prompt", prompt_end=end) if intervention is not None else []
            logits = model.bridge.run_with_hooks(tokens, attention_mask=attention, fwd_hooks=hooks)
            return logits[:, end:]  # (B, C, vocab)
        hooks = intervention.hooks(model, "prompt", prompt_end=0) if intervention is not None else []
        if intervention is not None and not intervention.last_token_only:
            raise ValueError(
                "Cached queries score edits that start at the last prompt token, not 'all' positions."
            )
        return inference.cached_logits(model, self.cached, self.inputs, self.mask, hooks)


def query_batches(
    model: LoadedModel,
    template: PromptTemplate,
    pairs: list[tuple[str, str]],
    batch_size: int,
    rng: np.random.Generator | None = None,
    objective: str = "first_token",
) -> list[QueryBatch]:
    """Zero-shot queries of ``pairs`` in fixed mini-batches (shuffled by ``rng`` if given),
    with the answer columns ``objective`` reads."""
    order = rng.permutation(len(pairs)) if rng is not None else np.arange(len(pairs))
    chosen = [pairs[i] for i in order]
    prompts = [template.format_query(x) for x, _ in chosen]
    return prompt_batches(model, prompts, [y for _, y in chosen], template.separator, batch_size, objective)


def prompt_batches(
    model: LoadedModel,
    prompts: list[str],
    answers: list[str],
    separator: str,
    batch_size: int,
    objective: str = "first_token",
    cache: bool = True,
) -> list[QueryBatch]:
    """Any prompts (zero- or k-shot) with their answers, cached in mini-batches in order
    (``cache=False``: kept whole, for edits at every position)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"Unknown objective {objective!r}: use {', '.join(OBJECTIVES)}.")
    pad = model.tokenizer.pad_token_id
    batches = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        tokens = [
            scoring.answer_tokens(model.tokenizer, y, separator) for y in answers[start : start + batch_size]
        ]
        read = [a.first_ids if objective == "first_token" else a.ids for a in tokens]  # the tokens predicted
        width = max(len(r) for r in read)  # C
        cached = inference.cache_prefixes(model, chunk) if cache else None
        whole = None if cache else inference.encode(model, chunk)
        last = cached.last_tokens[:, 0] if cache else whole.tokens[:, -1]  # (B,)
        inputs = torch.full((len(chunk), width), pad, dtype=torch.long)
        targets = torch.full((len(chunk), width), -100, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for i, predicted in enumerate(read):
            inputs[i, 0] = last[i]
            inputs[i, 1 : len(predicted)] = torch.tensor(predicted[:-1])
            targets[i, : len(predicted)] = torch.tensor(predicted)
            mask[i, : len(predicted)] = 1
        device = model.device
        batches.append(QueryBatch(cached, inputs.to(device), targets.to(device), mask.to(device), whole))
    return batches


@torch.no_grad()
def hits(model: LoadedModel, batch: QueryBatch, intervention: Intervention | None = None) -> torch.Tensor:
    """(B,) bool: the argmax is the target in every scored column (greedy decoding would
    start with those tokens)."""
    logits = batch.logits(model, intervention)  # (B, C, vocab)
    return ((logits.argmax(-1) == batch.targets) | (batch.targets == -100)).all(dim=1)


def summed_loss(
    model: LoadedModel, batch: QueryBatch, intervention: Intervention | None = None
) -> torch.Tensor:
    """Cross-entropy summed over every scored column of one batch (differentiable)."""
    logits = batch.logits(model, intervention)  # (B, C, vocab)
    return scoring.first_token_ce(logits.flatten(0, 1), batch.targets.flatten(), reduction="sum")


@torch.no_grad()
def mean_loss(
    model: LoadedModel, batches: list[QueryBatch], intervention: Intervention | None = None
) -> float:
    """Summed cross-entropy per query, averaged over every query of ``batches``."""
    total = sum(summed_loss(model, batch, intervention).item() for batch in batches)
    return total / sum(len(batch) for batch in batches)


@torch.no_grad()
def accuracy_and_loss(
    model: LoadedModel, batches: list[QueryBatch], intervention: Intervention | None = None
) -> tuple[float, float]:
    """(accuracy, loss) over every query: a query is right when the argmax is its target in
    every scored column; its loss is the cross-entropy summed over them."""
    correct, loss, n = 0, 0.0, 0
    for batch in batches:
        logits = batch.logits(model, intervention).float()  # (B, C, vocab)
        scored = batch.targets != -100
        hits = (logits.argmax(-1) == batch.targets) | ~scored  # (B, C)
        correct += int(hits.all(dim=1).sum())
        loss += scoring.first_token_ce(logits.flatten(0, 1), batch.targets.flatten(), reduction="sum").item()
        n += len(batch)
    return correct / n, loss / n


@torch.no_grad()
def answer_probability(
    model: LoadedModel, batch: QueryBatch, intervention: Intervention | None = None
) -> torch.Tensor:
    """(B,) probability of each query's scored answer tokens (teacher-forced product)."""
    logits = batch.logits(model, intervention).float()  # (B, C, vocab)
    scored = batch.targets != -100
    probs = logits.softmax(-1).gather(2, batch.targets.clamp(min=0)[..., None])[..., 0]  # (B, C)
    return torch.where(scored, probs, torch.ones_like(probs)).prod(1)
