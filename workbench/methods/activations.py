"""Mean activations over k-shot prompts: what the methods read from in-context examples.

All of them average one activation at the last token of the same M k-shot prompts built
from the train split (:func:`workbench.tasks.prompts.train_prompts`):

* :func:`task_embedding` (SITE's t, FV's and LTV's a): the per-head outputs z[l, h]
  before the output projection, (L, H, d_head);
* :func:`task_residuals` (TV's candidates): the residual stream after every block,
  (L, d_model).
"""

from __future__ import annotations

import torch

from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import PromptTemplate, train_prompts
from workbench.tasks.task import Task


@torch.no_grad()
def mean_activations(
    model: LoadedModel,
    task: Task,
    component: str,
    template: str | PromptTemplate | None = None,
    shots: int = 10,
    n_prompts: int = 50,
    seed: int = 0,
    batch_size: int = 16,
) -> torch.Tensor:
    """Mean over M k-shot train prompts of one activation at the last token: ``"head"``, the
    per-head outputs z[l, h], (L, H, d_head); ``"resid"``, the residual after each block,
    (L, d_model)."""
    prompts, _ = train_prompts(task, template, shots, n_prompts, seed)
    capture = {"head": model.heads.capture_z, "resid": model.heads.capture_resid}[component]
    return inference.mean_last_token(model, prompts, capture, batch_size)


def task_embedding(model: LoadedModel, task: Task, *args, **kwargs) -> torch.Tensor:
    """t[l,h] = mean of z[l,h] at the last token of M k-shot train prompts: (L, H, d_head).
    Arguments after ``task`` as :func:`mean_activations`."""
    return mean_activations(model, task, "head", *args, **kwargs)


def task_residuals(model: LoadedModel, task: Task, *args, **kwargs) -> torch.Tensor:
    """r[l] = mean residual after block l at the last token of the same prompts: (L, d_model)."""
    return mean_activations(model, task, "resid", *args, **kwargs)
