"""LTV: learnable task vector (Saglam et al. 2025; METHODS.md, "LTV").

1. Head activations a[l,h]: the mean of z[l,h] (before W_O) at the last token of M k-shot
   train prompts (:func:`workbench.site.task_embedding`), projected through each head's
   own output block: p[l,h] = W_O[l,h] a[l,h].                       (L, H, d_model)
2. Weights theta[l,h], unconstrained, initialised small and random. Per layer
       v[l] = sum_h theta[l,h] * p[l,h]                                (L, d_model)
3. Intervention: v[l] is ADDED to the residual output of every layer l at the last token
   of the zero-shot query.
4. Fit theta with Adam on the cross-entropy of the answer's first token on zero-shot train
   queries, model frozen; keep the step with the lowest valid loss.

As in SITE, only the last token changes, so every query's earlier tokens are run once and
kept as a KV cache: a step costs one token per query.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from workbench.fitting import (
    first_token_ce,
    fit_fields,
    fit_parameter,
    query_batches,
    trace_fields,
    trace_meta,
)
from workbench.heads import Hook
from workbench.models import LoadedModel
from workbench.prompts import DEFAULT_TEMPLATE, get_template
from workbench.site import task_embedding
from workbench.tasks import Task


@dataclass
class LtvConfig:
    template: str = DEFAULT_TEMPLATE
    shots: int = 10  # k: demonstrations per prompt that builds a[l,h]
    n_prompts: int = 50  # M: prompts averaged into a[l,h]
    init_std: float = 0.01  # theta ~ N(0, init_std^2)
    steps: int = 120
    lr: float = 0.05  # Adam; cosine-decayed to lr/10
    batch_size: int = 32
    eval_every: int = 10  # steps between valid-loss checks
    patience: int = 6  # stop after this many checks without a better valid loss
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- steps 2-3


def layer_vectors(theta: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """v[l] = sum_h theta[l,h] p[l,h]: (L, H) x (L, H, d_model) -> (L, d_model)."""
    return torch.einsum("lh,lhm->lm", theta, projected)


def add_to_every_layer(model: LoadedModel, vectors: torch.Tensor) -> list[Hook]:
    """Hooks adding vectors[l] (d_model,) to the residual after every layer l, last token."""
    return model.heads.add_resid({layer: vectors[layer] for layer in range(vectors.shape[0])}, pos=-1)


@dataclass
class LearnableTaskVector:
    """The fitted intervention: theta-weighted head outputs added after every layer."""

    theta: torch.Tensor  # (L, H)
    activations: torch.Tensor  # (L, H, d_head): a[l,h]
    name: str = "LTV"

    def vectors(self, model: LoadedModel) -> torch.Tensor:
        """(L, d_model)"""
        projected = model.heads.project(self.activations.to(model.device))  # (L, H, d_model)
        return layer_vectors(self.theta.to(model.device), projected)

    def hooks(self, model: LoadedModel, prompts: list[str] | None = None) -> list[Hook]:
        return add_to_every_layer(model, self.vectors(model))


# ----------------------------------------------------------------------------- step 4


@dataclass
class LtvFit:
    task: str
    theta: torch.Tensor  # (L, H) at the best step
    activations: torch.Tensor  # (L, H, d_head)
    config: LtvConfig
    history: pd.DataFrame  # step, train_loss, valid_loss, lr
    best_step: int
    best_valid_loss: float
    fit_seconds: float
    embedding_seconds: float
    meta: dict = field(default_factory=dict)

    def intervention(self) -> LearnableTaskVector:
        return LearnableTaskVector(self.theta, self.activations)


def fit_ltv(
    model: LoadedModel,
    task: Task,
    config: LtvConfig | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> LtvFit:
    """Fit theta (L, H) for one task; returns the best-valid step."""
    config = config or LtvConfig()
    template = get_template(config.template)
    rng = np.random.default_rng(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    splits = task.split(config.seed)

    t0 = time.perf_counter()
    activations = task_embedding(model, task, template, config.shots, config.n_prompts, config.seed)
    projected = model.heads.project(activations)  # (L, H, d_model), fixed during the fit
    embedding_seconds = time.perf_counter() - t0
    train = query_batches(model, template, splits.train, config.batch_size, rng)
    valid = query_batches(model, template, splits.valid, 64)

    shape = model.heads.shape
    theta = (config.init_std * torch.randn(shape.n_layers, shape.n_heads, generator=generator)).to(model.device)
    theta.requires_grad_(True)  # (L, H)

    def hooks() -> list[Hook]:
        return add_to_every_layer(model, layer_vectors(theta, projected))

    def train_loss() -> torch.Tensor:
        batch = train[rng.integers(len(train))]
        return first_token_ce(model, batch, hooks()) / len(batch[1])

    def valid_loss() -> float:
        return sum(first_token_ce(model, batch, hooks()).item() for batch in valid) / len(splits.valid)

    trace = fit_parameter(
        theta, train_loss, valid_loss, steps=config.steps, lr=config.lr, eval_every=config.eval_every,
        patience=config.patience, progress=progress,
    )
    return LtvFit(
        task=task.name,
        theta=trace.best,
        activations=activations,
        config=config,
        **fit_fields(trace, template, t0, embedding_seconds),
    )


# ----------------------------------------------------------------------------- saving


def to_run(fit: LtvFit, model: LoadedModel, metrics: dict | None = None, split_sizes: dict | None = None):
    """A :class:`workbench.runs.Run` ("LTV"): theta and the head activations."""
    from workbench.runs import Run

    tensors = {"theta": fit.theta, "activations": fit.activations}
    return Run("LTV", model.signature, [fit.task], tensors, trace_meta(fit, metrics, split_sizes))


def from_run(run, model: LoadedModel | None = None) -> LtvFit:
    """Rebuild a fit from a stored run; with ``model``, check the run fits it first."""
    if run.method != "LTV":
        raise ValueError(f"Run {run.id} is a {run.method} run, not LTV.")
    device = run.device_for(model)
    return LtvFit(
        task=run.tasks[0],
        theta=run.tensors["theta"].to(device),
        activations=run.tensors["activations"].to(device),
        config=LtvConfig(**run.meta.get("config", {})),
        **trace_fields(run),
    )
