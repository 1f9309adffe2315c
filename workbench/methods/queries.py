"""Zero-shot queries cached once and scored at their last token many times.

Fits and layer sweeps try many interventions that only act at the last prompt token. The
tokens before it cannot see that change (attention is causal), so each query's prefix is run
once and kept as a KV cache (:class:`workbench.model.inference.CachedPrompts`); a fit step or
a sweep point then runs one token per query. A :class:`QueryBatch` is such a cached
mini-batch with the answers' first-token targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workbench import scoring
from workbench.model import inference
from workbench.model.heads import Hook
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import PromptTemplate


@dataclass
class QueryBatch:
    cached: inference.CachedPrompts  # zero-shot prompts, prefix run once
    targets: torch.Tensor  # (B,) first-token ids of the answers

    def __len__(self) -> int:
        return len(self.targets)

    def logits(self, model: LoadedModel, hooks: list[Hook] = ()) -> torch.Tensor:
        """(B, vocab) at the last prompt token, running only that token (differentiable)."""
        return inference.cached_last_logits(model, self.cached, hooks)


def query_batches(
    model: LoadedModel,
    template: PromptTemplate,
    pairs: list[tuple[str, str]],
    batch_size: int,
    rng: np.random.Generator | None = None,
) -> list[QueryBatch]:
    """Zero-shot queries of ``pairs`` in fixed mini-batches (shuffled by ``rng`` if given)."""
    order = rng.permutation(len(pairs)) if rng is not None else np.arange(len(pairs))
    batches = []
    for start in range(0, len(pairs), batch_size):
        chunk = [pairs[i] for i in order[start : start + batch_size]]
        prompts = [template.format_query(x) for x, _ in chunk]
        targets = scoring.first_token_targets(model, [y for _, y in chunk])
        batches.append(QueryBatch(inference.cache_prefixes(model, prompts), targets))
    return batches


def summed_loss(model: LoadedModel, batch: QueryBatch, hooks: list[Hook] = ()) -> torch.Tensor:
    """Summed first-token cross-entropy over one cached batch (differentiable)."""
    return scoring.first_token_ce(batch.logits(model, hooks), batch.targets, reduction="sum")


@torch.no_grad()
def mean_loss(model: LoadedModel, batches: list[QueryBatch], hooks: list[Hook] = ()) -> float:
    """Mean first-token cross-entropy over every query of ``batches``."""
    total = sum(summed_loss(model, batch, hooks).item() for batch in batches)
    return total / sum(len(batch) for batch in batches)


@torch.no_grad()
def accuracy_and_loss(
    model: LoadedModel, batches: list[QueryBatch], hooks: list[Hook] = ()
) -> tuple[float, float]:
    """(first-token accuracy, mean first-token cross-entropy) over every query of ``batches``."""
    correct, loss, n = 0, 0.0, 0
    for batch in batches:
        logits = batch.logits(model, hooks).float()  # (B, vocab)
        correct += int(scoring.first_token_hits(logits, batch.targets).sum())
        loss += scoring.first_token_ce(logits, batch.targets, reduction="sum").item()
        n += len(batch)
    return correct / n, loss / n
