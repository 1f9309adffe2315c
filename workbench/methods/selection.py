"""Choosing where a method acts: sweeps over layers scored on the valid split, and the top-k
heads of a per-head map.

* :func:`layer_sweep` scores an intervention placed at each layer in turn on the zero-shot
  valid queries (first-token accuracy and cross-entropy, on prefix-cached queries);
  :func:`best_layer` picks one from the curve.
* :func:`top_heads` / :func:`top_k_mask`: the k heads with the largest values of a (L, H) map.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from workbench.interventions import Intervention
from workbench.methods.queries import accuracy_and_loss, query_batches
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import get_template
from workbench.tasks.task import Task

VALID_BATCH = 64  # queries per cached batch when scoring a split


def layer_sweep(
    model: LoadedModel,
    task: Task,
    intervention_at: Callable[[int], Intervention],
    template=None,
    seed: int = 0,
    split: str = "valid",
    layers: list[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Score ``intervention_at(l)`` on the zero-shot ``split`` queries for every layer l.

    Returns the curve (layer, first_token_acc, loss: one row per layer) and the zero-shot
    scores without any intervention ({"first_token_acc", "loss"}).
    """
    template = get_template(template)
    batches = query_batches(model, template, task.split(seed)[split], VALID_BATCH)
    acc, loss = accuracy_and_loss(model, batches)
    zero_shot = {"first_token_acc": acc, "loss": loss}
    layers = list(range(model.heads.shape.n_layers)) if layers is None else list(layers)
    rows = []
    for i, layer in enumerate(layers):
        intervention = intervention_at(layer)
        if not intervention.last_token_only:
            raise ValueError("A layer sweep scores on cached prefixes: intervene at the last token only.")
        acc, loss = accuracy_and_loss(model, batches, intervention.hooks(model))
        rows.append({"layer": layer, "first_token_acc": acc, "loss": loss})
        if progress:
            progress(i + 1, len(layers))
    return pd.DataFrame(rows), zero_shot


def best_layer(curve: pd.DataFrame, prefer: int = 0) -> int:
    """Highest accuracy; ties to the lower loss, then to the layer nearest ``prefer``."""
    ranked = curve.assign(distance=(curve["layer"] - prefer).abs())
    ranked = ranked.sort_values(
        ["first_token_acc", "loss", "distance"], ascending=[False, True, True], kind="stable"
    )
    return int(ranked["layer"].iloc[0])


def top_heads(values: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The k (layer, head) pairs with the largest values of a (L, H) map, largest first."""
    n_heads = values.shape[1]
    flat = values.flatten().topk(min(k, values.numel())).indices.tolist()
    return [(i // n_heads, i % n_heads) for i in flat]


def top_k_mask(values: torch.Tensor, k: int) -> torch.Tensor:
    """(L, H) bool: True at the k heads of :func:`top_heads`."""
    selected = torch.zeros(values.shape, dtype=torch.bool, device=values.device)
    for layer, head in top_heads(values, k):
        selected[layer, head] = True
    return selected
