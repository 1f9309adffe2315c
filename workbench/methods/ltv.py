"""LTV: learnable task vector (Saglam et al. 2025; docs/methods.md, "LTV").

1. Head activations a[l,h]: the mean of z[l,h] (before W_O) at the last token of M k-shot
   prompts from the fitting pool (the task embedding), projected through each head's own
   output block:
       p[l,h] = W_O[l,h] a[l,h]                                        (L, H, d_model)
2. Weights theta[l,h], unconstrained, initialised small and random. Per layer
       v[l] = sum_h theta[l,h] * p[l,h]                                (L, d_model)
3. Intervention: v[l] is ADDED to the residual output of every layer l at the last token
   of the zero-shot query (and at every generated token with ``when="generated"``).
4. Fit theta with Adam on the cross-entropy of the answer (``loss="first_token"``: its
   tokens up to the first that carries it; ``"answer"``: all of them and the end-of-answer
   token, teacher-forced) on zero-shot queries of the fitting pool, model frozen; keep the
   step with the lowest loss on the selection queries, stopping once it stops improving.

Nothing changes before the last prompt token, so every query's prefix is run once and
cached: a step costs the last prompt token and the answer tokens per query.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from workbench.interventions import Deferred, Intervention, When, add_to_residual
from workbench.methods.activations import task_embedding
from workbench.methods.base import HeadMap, Method, MethodConfig
from workbench.methods.queries import query_batches, summed_loss
from workbench.methods.selection import selection_split
from workbench.methods.training import Trace, fit_parameter
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import get_template, train_prompts


@dataclass(kw_only=True)
class LtvConfig(MethodConfig):
    shots: int = 10  # k: demonstrations per prompt that builds a[l,h]
    n_prompts: int = 50  # M: prompts averaged into a[l,h]
    init_std: float = 0.01  # theta ~ N(0, init_std^2)
    loss: str = "first_token"  # "first_token" (up to the token that carries the answer) or "answer" (+ its end)
    steps: int = 400  # at most: the fit stops once the selection loss stops improving
    lr: float = 0.05  # Adam; cosine-decayed to lr/10
    batch_size: int = 32
    eval_every: int = 10  # steps between valid-loss checks
    patience: int = 6  # stop after this many checks without a better valid loss


def layer_vectors(theta: torch.Tensor, projected: torch.Tensor) -> torch.Tensor:
    """v[l] = sum_h theta[l,h] p[l,h]: (L, H) x ([B,] L, H, d_model) -> ([B,] L, d_model).
    With a leading batch axis, one vector set per query (the regression benchmark's LTV)."""
    return torch.einsum("lh,...lhm->...lm", theta, projected)


@dataclass(kw_only=True, eq=False)
class LearnableTaskVector(Method):
    name = "LTV"
    title = "Learnable task vector"
    Config = LtvConfig
    head_map_info = HeadMap("theta", signed=True, by_magnitude=True)

    theta: torch.Tensor  # (L, H) at the best step
    activations: torch.Tensor  # (L, H, d_head): a[l,h]
    trace: Trace
    embedding_seconds: float = 0.0

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> "LearnableTaskVector":
        (task,) = cls._tasks(tasks)
        config = cls._config(config)
        template = get_template(config.template)
        when = When.parse(config.when)
        rng = np.random.default_rng(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        pairs = selection_split(task, config.seed)

        t0 = time.perf_counter()
        # step 1
        prompts, _ = train_prompts(pairs.fit, template, config.shots, config.n_prompts, config.seed)
        activations = task_embedding(model, prompts)  # (L, H, d_head)
        projected = model.heads.project(activations)  # (L, H, d_model), fixed during the fit
        embedding_seconds = time.perf_counter() - t0
        train = query_batches(model, template, pairs.fit, config.batch_size, rng, config.loss)
        select = query_batches(model, template, pairs.select, 64, objective=config.loss)

        # step 2
        shape = model.heads.shape
        theta = (config.init_std * torch.randn(shape.n_layers, shape.n_heads, generator=generator)).to(model.device)
        theta.requires_grad_(True)  # (L, H)

        # step 3
        def intervention() -> Intervention:
            return Intervention("LTV", (add_to_residual(layer_vectors(theta, projected), when=when),))

        # step 4
        def train_loss() -> torch.Tensor:
            batch = train[rng.integers(len(train))]
            return summed_loss(model, batch, intervention()) / len(batch)

        def valid_loss() -> float:
            return sum(summed_loss(model, batch, intervention()).item() for batch in select) / len(pairs.select)

        report = (lambda step, total, record: progress("fit", step, total, record)) if progress else None
        best, trace = fit_parameter(
            theta, train_loss, valid_loss, steps=config.steps, lr=config.lr, eval_every=config.eval_every,
            patience=config.patience, progress=report,
        )
        return cls(
            tasks=[task.name],
            config=config,
            theta=best,
            activations=activations,
            trace=trace,
            embedding_seconds=embedding_seconds,
            fit_seconds=time.perf_counter() - t0,
        )

    def vectors(self, model: LoadedModel) -> torch.Tensor:
        """v: (L, d_model) on the model's device."""
        projected = model.heads.project(self.activations.to(model.device))  # (L, H, d_model)
        return layer_vectors(self.theta.to(model.device), projected)

    def intervention(self, task: str | None = None, when: When | str | None = None) -> Intervention:
        self._task(task)
        when = self._when(when)

        def build(model: LoadedModel, prompts: list[str], when: When):
            return (add_to_residual(self.vectors(model), when=when),)

        return Deferred(name=self.name, build=build, when=when)

    def _head_values(self) -> torch.Tensor:
        return self.theta

    def summary(self) -> dict:
        return {**super().summary(), "best_step": self.trace.best_step,
                "valid_loss": round(self.trace.best_valid_loss, 4)}

    # ------------------------------------------------------------------ run codec

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"theta": self.theta, "activations": self.activations}

    def record(self) -> dict:
        return {**self.trace.record(), "embedding_seconds": self.embedding_seconds}

    @classmethod
    def restore(cls, tensors, record, **common) -> "LearnableTaskVector":
        return cls(
            **common,
            theta=tensors["theta"],
            activations=tensors["activations"],
            trace=Trace.from_record(record),
            embedding_seconds=float(record.get("embedding_seconds", 0.0)),
        )

