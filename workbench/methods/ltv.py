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

from dataclasses import dataclass

import torch

from workbench.interventions import Deferred, Intervention, When, add_to_residual
from workbench.methods.activations import PromptsConfig, embedding_prompts, task_embedding
from workbench.methods.base import HeadMap, Method, saved
from workbench.methods.queries import query_batches, summed_loss
from workbench.methods.settings import setting
from workbench.methods.training import LearnedConfig, Trace, learn
from workbench.model.loading import LoadedModel


@dataclass(kw_only=True)
class LtvConfig(PromptsConfig, LearnedConfig):
    init_std: float = setting(0.01, "theta ~ N(0, init_std^2)", minimum=0)


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
    tiny_settings = dict(shots=2, n_prompts=4, steps=3, eval_every=1, batch_size=8)

    theta: torch.Tensor  # (L, H) at the best step
    embedding: torch.Tensor = saved(aliases=("activations",))  # (L, H, d_head): a[l,h]
    trace: Trace
    embedding_seconds: float = 0.0

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> LearnableTaskVector:
        setup = cls.begin(model, tasks, config)
        config, template, rng, pairs = setup.config, setup.template, setup.rng, setup.selection

        # step 1
        embedding = task_embedding(model, embedding_prompts(pairs.fit, template, config))  # (L, H, d_head)
        projected = model.heads.project(embedding)  # (L, H, d_model), fixed during the fit
        embedding_seconds = setup.seconds()
        train = query_batches(model, template, pairs.fit, config.batch_size, rng, config.loss)
        select = query_batches(model, template, pairs.select, 64, objective=config.loss)

        # step 2
        shape = model.heads.shape
        theta = (config.init_std * torch.randn(shape.n_layers, shape.n_heads, generator=setup.generator))
        theta = theta.to(model.device).requires_grad_(True)  # (L, H)

        # step 3
        def intervention() -> Intervention:
            return Intervention("LTV", (add_to_residual(layer_vectors(theta, projected), when=setup.when),))

        # step 4
        def train_loss() -> torch.Tensor:
            batch = train[rng.integers(len(train))]
            return summed_loss(model, batch, intervention()) / len(batch)

        def valid_loss() -> float:
            return sum(
                summed_loss(model, batch, intervention()).item() for batch in select
            ) / len(pairs.select)

        best, trace = learn(theta, train_loss, valid_loss, config, progress)
        return cls(
            tasks=[setup.task.name],
            config=config,
            theta=best,
            embedding=embedding,
            trace=trace,
            embedding_seconds=embedding_seconds,
            fit_seconds=setup.seconds(),
        )

    def vectors(self, model: LoadedModel) -> torch.Tensor:
        """v: (L, d_model) on the model's device."""
        projected = model.heads.project(self.embedding.to(model.device))  # (L, H, d_model)
        return layer_vectors(self.theta.to(model.device), projected)

    def per_layer_vectors(self, model: LoadedModel) -> torch.Tensor:
        """v[l] = sum_h theta[l,h] W_O[l,h] a[l,h], the vector added after layer l."""
        return self.vectors(model).float()

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
