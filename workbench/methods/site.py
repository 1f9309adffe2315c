"""SITE: soft injection of task embeddings (docs/methods.md, "SITE").

1. Task embedding t[l,h]: the mean, over M k-shot prompts from the train split, of each
   head's output z[l,h] (before W_O) at the last prompt token.          (L, H, d_head)
2. Soft head selection: beta[l,h], initialised 0; alpha = sigmoid(beta).  (L, H)
3. Injection at the last prompt token of a zero-shot query, every layer:
       z'[l,h] = (1 - alpha[l,h]) * z[l,h] + alpha[l,h] * t[l,h]
   and the layer's attention output is recomputed from z' through W_O (the edit sits on
   W_O's input, so the model does that itself).
4. Fit beta with Adam on the cross-entropy of the answer's first token on zero-shot train
   queries, model frozen; keep the step with the lowest valid loss.

The fit only changes the last token, so every query's prefix is run once and cached: a step
costs one token per query. One alpha can serve several tasks (the task-agnostic variant):
each task keeps its own embedding, and a step draws a random task's mini-batch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from workbench.interventions import Intervention, When, mix_heads
from workbench.methods.activations import task_embedding
from workbench.methods.base import HeadMap, Method, MethodConfig
from workbench.methods.queries import QueryBatch, query_batches, summed_loss
from workbench.methods.training import Trace, fit_parameter
from workbench.tasks.prompts import get_template


@dataclass(kw_only=True)
class SiteConfig(MethodConfig):
    shots: int = 10  # k: demonstrations per prompt that builds the embedding
    n_prompts: int = 50  # M: prompts averaged into the embedding
    steps: int = 120
    lr: float = 0.2  # Adam; cosine-decayed to lr/10
    batch_size: int = 32
    eval_every: int = 10  # steps between valid-loss checks
    patience: int = 6  # stop after this many checks without a better valid loss


@dataclass
class _Stream:
    """One task's zero-shot queries, cached in fixed mini-batches, with its embedding."""

    embedding: torch.Tensor  # (L, H, d_head)
    train: list[QueryBatch]
    valid: list[QueryBatch]


@dataclass(kw_only=True, eq=False)
class Site(Method):
    name = "SITE"
    title = "Soft injection (SITE)"
    Config = SiteConfig
    head_map_info = HeadMap("alpha", is_selection=True)
    several_tasks = True

    beta: torch.Tensor  # (L, H) at the best step
    embeddings: dict[str, torch.Tensor]  # task -> (L, H, d_head)
    trace: Trace
    embedding_seconds: float = 0.0

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> "Site":
        tasks = cls._tasks(tasks)
        config = cls._config(config)
        template = get_template(config.template)
        rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)

        t0 = time.perf_counter()
        # step 1, and the cached queries
        streams = {}
        for task in tasks:
            splits = task.split(config.seed)
            streams[task.name] = _Stream(
                task_embedding(model, task, template, config.shots, config.n_prompts, config.seed),
                query_batches(model, template, splits.train, config.batch_size, rng),
                query_batches(model, template, splits.valid, 64),
            )
        embedding_seconds = time.perf_counter() - t0

        # step 2
        shape = model.heads.shape
        beta = torch.zeros(shape.n_layers, shape.n_heads, device=model.device, requires_grad=True)  # (L, H)
        every_batch = [(name, i) for name, s in streams.items() for i in range(len(s.train))]

        # step 3
        def hooks(alpha: torch.Tensor, stream: _Stream):
            return Intervention("SITE", (mix_heads(alpha, stream.embedding),)).hooks(model)

        # step 4
        def train_loss() -> torch.Tensor:  # a random task's random mini-batch
            name, index = every_batch[rng.integers(len(every_batch))]
            stream = streams[name]
            batch = stream.train[index]
            return summed_loss(model, batch, hooks(torch.sigmoid(beta), stream)) / len(batch)

        def valid_loss() -> float:  # mean over every task's valid queries
            alpha = torch.sigmoid(beta)
            total = sum(
                summed_loss(model, batch, hooks(alpha, s)).item() for s in streams.values() for batch in s.valid
            )
            return total / sum(len(batch) for s in streams.values() for batch in s.valid)

        report = (lambda step, total, record: progress("fit", step, total, record)) if progress else None
        best, trace = fit_parameter(
            beta, train_loss, valid_loss, steps=config.steps, lr=config.lr, eval_every=config.eval_every,
            patience=config.patience, progress=report,
        )
        return cls(
            tasks=[t.name for t in tasks],
            config=config,
            beta=best,
            embeddings={name: s.embedding for name, s in streams.items()},
            trace=trace,
            embedding_seconds=embedding_seconds,
            fit_seconds=time.perf_counter() - t0,
        )

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.beta)  # (L, H)

    def intervention(self, task: str | None = None, when: When = When.LAST) -> Intervention:
        task = self._task(task)
        return Intervention(self.name, (mix_heads(self.alpha, self.embeddings[task], when),))

    def _head_values(self) -> torch.Tensor:
        return self.alpha

    def summary(self) -> dict:
        alpha = self.alpha
        extreme = float(((alpha < 0.1) | (alpha > 0.9)).float().mean())
        return {**super().summary(), "best_step": self.trace.best_step,
                "valid_loss": round(self.trace.best_valid_loss, 4), "alpha_extreme": round(extreme, 3)}

    # ------------------------------------------------------------------ run codec

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"beta": self.beta, **{f"embedding.{t}": e for t, e in self.embeddings.items()}}

    def record(self) -> dict:
        return {**self.trace.record(), "embedding_seconds": self.embedding_seconds}

    @classmethod
    def restore(cls, tensors, record, **common) -> "Site":
        return cls(
            **common,
            beta=tensors["beta"],
            embeddings={t: tensors[f"embedding.{t}"] for t in common["tasks"]},
            trace=Trace.from_record(record),
            embedding_seconds=float(record.get("embedding_seconds", 0.0)),
        )
