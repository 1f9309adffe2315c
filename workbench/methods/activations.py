"""Mean activations over k-shot prompts: what the methods read from in-context examples.

All of them average one activation at the last token of the same M k-shot prompts, built
from a task's fitting pairs by :func:`workbench.tasks.prompts.train_prompts`:

* :func:`task_embedding` (SITE's t, FV's and LTV's a): the per-head outputs z[l, h]
  before the output projection, (L, H, d_head);
* :func:`task_residuals` (TV's candidates): the residual stream after every block,
  (L, d_model).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.methods.base import MethodConfig
from workbench.methods.settings import setting
from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import PromptTemplate, train_prompts
from workbench.tasks.task import Pair


@dataclass(kw_only=True)
class PromptsConfig(MethodConfig):
    """The settings of every method that averages activations over k-shot prompts."""

    shots: int = setting(10, "k: demonstrations per k-shot prompt that builds the task embedding",
                         minimum=1)
    n_prompts: int = setting(50, "M: k-shot prompts averaged into the task embedding", minimum=1,
                             flag="--prompts")


def embedding_prompts(pool: list[Pair], template: PromptTemplate, config: PromptsConfig) -> list[str]:
    """The M k-shot prompts, drawn from the fitting ``pool``, whose activations are averaged."""
    prompts, _ = train_prompts(pool, template, config.shots, config.n_prompts, config.seed)
    return prompts


@torch.no_grad()
def mean_activations(
    model: LoadedModel, prompts: list[str], component: str, batch_size: int = 16
) -> torch.Tensor:
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
