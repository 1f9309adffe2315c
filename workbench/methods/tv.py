"""Task Vector (Hendel et al. 2023; docs/methods.md, "TV").

1. Candidates: for every layer l, the residual stream after block l at the last token,
   averaged over M k-shot prompts from the fitting pool (all layers from the same passes):
       tv[l] = mean_prompts resid_post[l][-1]                          (L, d_model)
2. Intervention: run the *zero-shot* query and REPLACE its residual after layer l, at the
   last token (and, with ``when="generated"``, at every generated token), with tv[l].
   Later layers (and the answer) then read the task only from it.
3. Layer choice: every layer is tried on the zero-shot selection queries; first-token
   accuracy (ties: cross-entropy) picks l. The per-layer curve is kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from workbench.interventions import Intervention, When, replace_residual
from workbench.methods.activations import PromptsConfig, embedding_prompts, task_residuals
from workbench.methods.base import Method, saved
from workbench.methods.selection import best_layer, layer_sweep
from workbench.methods.settings import setting
from workbench.model.loading import LoadedModel


@dataclass(kw_only=True)
class TvConfig(PromptsConfig):
    batch_size: int = setting(16, "prompts per forward pass", minimum=1)


@dataclass(kw_only=True, eq=False)
class TaskVector(Method):
    name = "TV"
    title = "Task vector"
    Config = TvConfig
    tiny_settings = dict(shots=2, n_prompts=4)

    vectors: torch.Tensor  # (L, d_model): one candidate per layer
    layer: int  # chosen on the selection split
    layer_sweep: pd.DataFrame = saved(aliases=("curve",))  # layer, first_token_acc, loss (selection split)
    zero_shot_valid: dict = field(default_factory=dict)  # selection scores without intervention

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> TaskVector:
        setup = cls.begin(model, tasks, config)
        config, pairs = setup.config, setup.selection

        # step 1
        prompts = embedding_prompts(pairs.fit, setup.template, config)
        vectors = task_residuals(model, prompts, config.batch_size)  # (L, d_model)

        # steps 2-3
        def intervention_at(layer: int) -> Intervention:
            return Intervention("TV", (replace_residual(layer, vectors[layer], setup.when),))

        sweep, zero_shot = layer_sweep(
            model, pairs.select, intervention_at, setup.template, progress=progress
        )
        return cls(
            tasks=[setup.task.name],
            config=config,
            vectors=vectors,
            layer=best_layer(sweep),
            layer_sweep=sweep,
            zero_shot_valid=zero_shot,
            fit_seconds=setup.seconds(),
        )

    @property
    def vector(self) -> torch.Tensor:
        return self.vectors[self.layer]  # (d_model,)

    def intervention(self, task: str | None = None, when: When | str | None = None) -> Intervention:
        self._task(task)
        return Intervention(self.name, (replace_residual(self.layer, self.vector, self._when(when)),))

    def per_layer_vectors(self, model: LoadedModel) -> torch.Tensor:
        """The mean k-shot residual after every layer (TV's candidates; it replaces the residual
        with the one at its chosen layer, so this is a state, not an added vector)."""
        return self.vectors.to(model.device).float()

    def summary(self) -> dict:
        return {**super().summary(), "layer": self.layer}
