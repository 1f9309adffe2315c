"""Mean activations over k-shot prompts: what the methods read from in-context examples.

All of them average one activation at the last token of the same M k-shot prompts, built
from a task's fitting pairs by :func:`workbench.tasks.prompts.train_prompts`:

* :func:`task_embedding` (SITE's t, FV's and LTV's a): the per-head outputs z[l, h]
  before the output projection, (L, H, d_head);
* :func:`task_residuals` (TV's candidates): the residual stream after every block,
  (L, d_model).
"""

from __future__ import annotations

import torch

from workbench.model import inference
from workbench.model.loading import LoadedModel


@torch.no_grad()
def mean_activations(model: LoadedModel, prompts: list[str], component: str, batch_size: int = 16) -> torch.Tensor:
    """Mean over ``prompts`` of one activation at the last token: ``"head"``, the per-head
    outputs z[l, h], (L, H, d_head); ``"resid"``, the residual after each block, (L, d_model)."""
    capture = {"head": model.heads.capture_z, "resid": model.heads.capture_resid}[component]
    return inference.mean_last_token(model, prompts, capture, batch_size)


def task_embedding(model: LoadedModel, prompts: list[str], batch_size: int = 16) -> torch.Tensor:
    """t[l,h] = mean of z[l,h] at the last token of the k-shot prompts: (L, H, d_head)."""
    return mean_activations(model, prompts, "head", batch_size)


def task_residuals(model: LoadedModel, prompts: list[str], batch_size: int = 16) -> torch.Tensor:
    """r[l] = mean residual after block l at the last token of the k-shot prompts: (L, d_model)."""
    return mean_activations(model, prompts, "resid", batch_size)
