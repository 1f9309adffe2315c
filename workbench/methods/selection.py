"""Choosing how a method acts, on held-out items: which items choose, sweeps over layers, and
the top-k heads of a per-head map.

* :func:`selection_split`: the items that pick a best step or layer. Small valid splits
  (6 to 36 items in the built-in tasks) make that choice noisy, so items move from the end
  of the train split until about :data:`MIN_SELECTION`, never more than half of it; what is
  left of train is the pool every method builds its vectors from and fits on.
* :func:`layer_sweep` scores an intervention placed at each layer in turn on the zero-shot
  selection queries (first-token accuracy and cross-entropy, on prefix-cached queries);
  :func:`best_layer` picks one from the curve.
* :func:`top_heads` / :func:`top_k_mask`: the k heads with the largest values of a (L, H) map.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch

from workbench.interventions import Intervention
from workbench.methods.queries import accuracy_and_loss, query_batches
from workbench.model.loading import LoadedModel
from workbench.progress import Progress
from workbench.tasks.prompts import get_template
from workbench.tasks.task import Pair, Task

VALID_BATCH = 64  # queries per cached batch when scoring a split
MIN_SELECTION = 50  # items that choose a best step or layer, where the task allows


@dataclass(frozen=True)
class Selection:
    fit: list[Pair]  # train pairs the method builds its vectors from and fits on
    select: list[Pair]  # valid pairs, plus train pairs moved here, that choose
    from_train: int  # how many of ``select`` came from the train split

    def sizes(self) -> dict[str, int]:
        """Recorded with every run beside the split sizes."""
        return {
            "fit_pool": len(self.fit), "selection": len(self.select), "selection_from_train": self.from_train
        }


def selection_split(task: Task, seed: int = 0, minimum: int = MIN_SELECTION) -> Selection:
    """Valid plus the last train items (of the seeded shuffle) up to ``minimum`` items, moving
    at most half of train; the test split is never touched."""
    splits = task.split(seed)
    moved = min(max(0, minimum - len(splits.valid)), len(splits.train) // 2)
    keep = len(splits.train) - moved
    return Selection(splits.train[:keep], splits.valid + splits.train[keep:], moved)


def layer_sweep(
    model: LoadedModel,
    pairs: list[Pair],
    intervention_at: Callable[[int], Intervention],
    template=None,
    layers: list[int] | None = None,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Score ``intervention_at(l)`` on the zero-shot queries of ``pairs`` for every layer l.

    Returns the curve (layer, first_token_acc, loss: one row per layer) and the zero-shot
    scores without any intervention ({"first_token_acc", "loss"}). ``progress`` reports stage
    "layer sweep" after each layer, with that layer's scores (:mod:`workbench.progress`).
    """
    template = get_template(template)
    batches = query_batches(model, template, pairs, VALID_BATCH)
    acc, loss = accuracy_and_loss(model, batches)
    zero_shot = {"first_token_acc": acc, "loss": loss}
    layers = list(range(model.heads.shape.n_layers)) if layers is None else list(layers)
    rows = []
    for i, layer in enumerate(layers):
        acc, loss = accuracy_and_loss(model, batches, intervention_at(layer))
        rows.append({"layer": layer, "first_token_acc": acc, "loss": loss})
        if progress:
            progress("layer sweep", i + 1, len(layers), {"first_token_acc": acc, "loss": loss})
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
