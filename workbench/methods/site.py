"""SITE: soft injection of task embeddings (docs/methods.md, "SITE").

1. Task embedding t[l,h]: the mean, over M k-shot prompts from the fitting pool, of each
   head's output z[l,h] (before W_O) at the last prompt token.          (L, H, d_head)
2. Soft head selection: beta[l,h], initialised 0; alpha = sigmoid(beta).  (L, H)
3. Injection at the last prompt token of a zero-shot query (and at every generated token
   with ``when="generated"``), every layer:
       z'[l,h] = (1 - alpha[l,h]) * z[l,h] + alpha[l,h] * t[l,h]
   and the layer's attention output is recomputed from z' through W_O (the edit sits on
   W_O's input, so the model does that itself).
4. Fit beta with Adam on the cross-entropy of the answer (``loss="first_token"``: its
   tokens up to the first that carries it; ``"answer"``: all of them and the end-of-answer
   token, teacher-forced) on zero-shot queries of the fitting pool, model frozen; keep the
   step with the lowest loss on the selection queries, stopping once it stops improving.

Nothing changes before the last prompt token, so every query's prefix is run once and
cached: a step costs the last prompt token and the answer tokens per query. One alpha can
serve several tasks (the task-agnostic variant): each task keeps its own embedding, and a
step draws a random task's mini-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.interventions import Intervention, When, mix_heads
from workbench.methods.activations import PromptsConfig, embedding_prompts, task_embedding
from workbench.methods.base import HeadMap, Method, saved
from workbench.methods.queries import QueryBatch, query_batches, summed_loss
from workbench.methods.settings import retuned
from workbench.methods.training import LearnedConfig, Trace, learn


@dataclass(kw_only=True)
class SiteConfig(PromptsConfig, LearnedConfig):
    lr: float = retuned(LearnedConfig, "lr", 0.2)


@dataclass
class _Stream:
    """One task's zero-shot queries, cached in fixed mini-batches, with its embedding."""

    embedding: torch.Tensor  # (L, H, d_head)
    train: list[QueryBatch]
    valid: list[QueryBatch]


@dataclass(kw_only=True, eq=False)
class SoftInjection(Method):
    name = "SITE"
    title = "Soft injection (SITE)"
    Config = SiteConfig
    head_map_info = HeadMap("alpha", is_selection=True)
    several_tasks = True
    tiny_settings = dict(shots=2, n_prompts=4, steps=3, eval_every=1, batch_size=8)

    beta: torch.Tensor  # (L, H) at the best step
    embeddings: dict[str, torch.Tensor] = saved(key="embedding")  # task -> (L, H, d_head)
    trace: Trace
    embedding_seconds: float = 0.0

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> SoftInjection:
        setup = cls.begin(model, tasks, config)
        config, template, rng = setup.config, setup.template, setup.rng

        # step 1, and the cached queries
        streams = {}
        for task in setup.tasks:
            pairs = setup.selections[task.name]
            streams[task.name] = _Stream(
                task_embedding(model, embedding_prompts(pairs.fit, template, config)),
                query_batches(model, template, pairs.fit, config.batch_size, rng, config.loss),
                query_batches(model, template, pairs.select, 64, objective=config.loss),
            )
        embedding_seconds = setup.seconds()

        # step 2
        shape = model.heads.shape
        beta = torch.zeros(shape.n_layers, shape.n_heads, device=model.device, requires_grad=True)  # (L, H)
        every_batch = [(name, i) for name, s in streams.items() for i in range(len(s.train))]

        # step 3
        def injection(alpha: torch.Tensor, stream: _Stream) -> Intervention:
            return Intervention("SITE", (mix_heads(alpha, stream.embedding, setup.when),))

        # step 4
        def train_loss() -> torch.Tensor:  # a random task's random mini-batch
            name, index = every_batch[rng.integers(len(every_batch))]
            stream = streams[name]
            batch = stream.train[index]
            return summed_loss(model, batch, injection(torch.sigmoid(beta), stream)) / len(batch)

        def valid_loss() -> float:  # mean over every task's selection queries
            alpha = torch.sigmoid(beta)
            total = sum(
                summed_loss(model, batch, injection(alpha, s)).item()
                for s in streams.values()
                for batch in s.valid
            )
            return total / sum(len(batch) for s in streams.values() for batch in s.valid)

        best, trace = learn(beta, train_loss, valid_loss, config, progress)
        return cls(
            tasks=[t.name for t in setup.tasks],
            config=config,
            beta=best,
            embeddings={name: s.embedding for name, s in streams.items()},
            trace=trace,
            embedding_seconds=embedding_seconds,
            fit_seconds=setup.seconds(),
        )

    @property
    def alpha(self) -> torch.Tensor:
        return torch.sigmoid(self.beta)  # (L, H)

    def intervention(self, task: str | None = None, when: When | str | None = None) -> Intervention:
        task = self._task(task)
        return Intervention(self.name, (mix_heads(self.alpha, self.embeddings[task], self._when(when)),))

    def _head_values(self) -> torch.Tensor:
        return self.alpha

    def summary(self) -> dict:
        alpha = self.alpha
        extreme = float(((alpha < 0.1) | (alpha > 0.9)).float().mean())
        return {**super().summary(), "best_step": self.trace.best_step,
                "valid_loss": round(self.trace.best_valid_loss, 4), "alpha_extreme": round(extreme, 3)}
