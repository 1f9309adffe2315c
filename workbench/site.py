"""SITE: soft injection of task embeddings (METHODS.md, "SITE").

1. Task embedding t[l,h]: the mean, over M k-shot prompts from the train split, of each
   head's output z[l,h] (before W_O) at the last prompt token.
2. Soft head selection: beta[l,h], initialised 0; alpha = sigmoid(beta).
3. Injection at the last prompt token of a zero-shot query, every layer:
       z'[l,h] = (1 - alpha[l,h]) * z[l,h] + alpha[l,h] * t[l,h]
   and the layer's attention output is recomputed from z' through W_O (the hook sits
   on W_O's input, so the model does that itself).
4. Fit beta with Adam on the cross-entropy of the answer's first token on zero-shot train
   queries, model frozen; keep the step with the lowest valid loss.

The fit only changes the last token, so every query's earlier tokens are run once and
kept as a KV cache (:class:`workbench.inference.CachedPrompts`): a step costs one token
per query. One alpha can also be shared by several tasks (``fit_site`` with several
tasks: the task-agnostic variant), each task keeping its own embedding.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import pandas as pd
import torch

from workbench import inference
from workbench.fitting import (
    Batch,
    first_token_ce,
    fit_fields,
    fit_parameter,
    query_batches,
    trace_fields,
    trace_meta,
)
from workbench.models import LoadedModel
from workbench.prompts import DEFAULT_TEMPLATE, get_template, train_prompts
from workbench.tasks import Task


@dataclass
class SiteConfig:
    template: str = DEFAULT_TEMPLATE
    shots: int = 10  # k: demonstrations per prompt that builds the embedding
    n_prompts: int = 50  # M: prompts averaged into the embedding
    steps: int = 120
    lr: float = 0.2  # Adam; cosine-decayed to lr/10
    batch_size: int = 32
    eval_every: int = 10  # steps between valid-loss checks
    patience: int = 6  # stop after this many checks without a better valid loss
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- step 1


@torch.no_grad()
def task_embedding(
    model: LoadedModel, task: Task, template=None, shots: int = 10, n_prompts: int = 50, seed: int = 0,
    batch_size: int = 16,
) -> torch.Tensor:
    """t[l,h] = mean of z[l,h] at the last token of M k-shot train prompts: (L, H, d_head)."""
    prompts, _ = train_prompts(task, template, shots, n_prompts, seed)
    return inference.mean_last_token(model, prompts, model.heads.capture_z, batch_size)  # (L, H, d_head)


# ----------------------------------------------------------------------------- step 3


@dataclass
class SoftInjection:
    """The fitted intervention: mix each head's output with the task embedding."""

    alpha: torch.Tensor  # (L, H) in [0, 1]
    embedding: torch.Tensor  # (L, H, d_head)
    name: str = "SITE"

    def hooks(self, model: LoadedModel, prompts: list[str] | None = None):
        return model.heads.mix_z(self.alpha.to(model.device), self.embedding.to(model.device), pos=-1)


# ----------------------------------------------------------------------------- step 4


@dataclass
class SiteFit:
    tasks: list[str]
    beta: torch.Tensor  # (L, H) at the best step
    embeddings: dict[str, torch.Tensor]  # task -> (L, H, d_head)
    config: SiteConfig
    history: pd.DataFrame  # step, train_loss, valid_loss, lr
    best_step: int
    best_valid_loss: float
    fit_seconds: float
    embedding_seconds: float
    meta: dict = field(default_factory=dict)

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.beta)

    def intervention(self, task: str | None = None) -> SoftInjection:
        task = task or self.tasks[0]
        if task not in self.embeddings:
            raise KeyError(f"This SITE fit has no embedding for task {task!r}; it has {', '.join(self.embeddings)}.")
        return SoftInjection(self.alpha, self.embeddings[task])


@dataclass
class _Stream:
    """One task's zero-shot queries, cached in fixed mini-batches, with its embedding."""

    embedding: torch.Tensor  # (L, H, d_head)
    train: list[Batch]
    valid: list[Batch]


def fit_site(
    model: LoadedModel,
    tasks: Task | list[Task],
    config: SiteConfig | None = None,
    progress: Callable[[int, int, dict], None] | None = None,
) -> SiteFit:
    """Fit beta (one (L, H) map shared by all given tasks); returns the best-valid step."""
    config = config or SiteConfig()
    tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
    template = get_template(config.template)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)

    t0 = time.perf_counter()
    streams = {}
    for task in tasks:
        splits = task.split(config.seed)
        streams[task.name] = _Stream(
            task_embedding(model, task, template, config.shots, config.n_prompts, config.seed),
            query_batches(model, template, splits.train, config.batch_size, rng),
            query_batches(model, template, splits.valid, 64),
        )
    embedding_seconds = time.perf_counter() - t0

    shape = model.heads.shape
    beta = torch.zeros(shape.n_layers, shape.n_heads, device=model.device, requires_grad=True)  # (L, H)
    every_batch = [(name, i) for name, s in streams.items() for i in range(len(s.train))]

    def train_loss() -> torch.Tensor:  # a random task's random mini-batch
        name, index = every_batch[rng.integers(len(every_batch))]
        stream = streams[name]
        batch = stream.train[index]
        return first_token_ce(model, batch, model.heads.mix_z(torch.sigmoid(beta), stream.embedding)) / len(batch[1])

    def valid_loss() -> float:  # mean over every task's valid queries
        alpha = torch.sigmoid(beta)
        total = sum(
            first_token_ce(model, batch, model.heads.mix_z(alpha, s.embedding)).item()
            for s in streams.values() for batch in s.valid
        )
        return total / sum(len(batch[1]) for s in streams.values() for batch in s.valid)

    trace = fit_parameter(
        beta, train_loss, valid_loss, steps=config.steps, lr=config.lr, eval_every=config.eval_every,
        patience=config.patience, progress=progress,
    )
    return SiteFit(
        tasks=[t.name for t in tasks],
        beta=trace.best,
        embeddings={name: s.embedding for name, s in streams.items()},
        config=config,
        **fit_fields(trace, template, t0, embedding_seconds),
    )


# ----------------------------------------------------------------------------- saving


def to_run(fit: SiteFit, model: LoadedModel, metrics: dict | None = None, split_sizes: dict | None = None):
    """A :class:`workbench.runs.Run` for the store: beta and each task's embedding."""
    from workbench.runs import Run

    tensors = {"beta": fit.beta, **{f"embedding.{t}": e for t, e in fit.embeddings.items()}}
    return Run("SITE", model.signature, fit.tasks, tensors, trace_meta(fit, metrics, split_sizes))


def from_run(run, model: LoadedModel | None = None) -> SiteFit:
    """Rebuild a fit from a stored run; with ``model``, check the run fits it first."""
    if run.method != "SITE":
        raise ValueError(f"Run {run.id} is a {run.method} run, not SITE.")
    device = run.device_for(model)
    return SiteFit(
        tasks=list(run.tasks),
        beta=run.tensors["beta"].to(device),
        embeddings={t: run.tensors[f"embedding.{t}"].to(device) for t in run.tasks},
        config=SiteConfig(**run.meta.get("config", {})),
        **trace_fields(run),
    )
