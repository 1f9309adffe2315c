"""Task Vector (Hendel et al. 2023; docs/methods.md, "TV").

1. Candidates: for every layer l, the residual stream after block l at the last token,
   averaged over M k-shot train prompts (all layers from the same forward passes):
       tv[l] = mean_prompts resid_post[l][-1]                          (L, d_model)
2. Intervention: run the *zero-shot* query and REPLACE its residual after layer l, at the
   last token, with tv[l]. Later layers (and the answer) then read the task only from it.
3. Layer choice: every layer is tried on the zero-shot valid queries; first-token accuracy
   (ties: cross-entropy) picks l. The per-layer curve is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pandas as pd
import torch

from workbench.interventions import Intervention, When, replace_residual
from workbench.methods.activations import task_residuals
from workbench.methods.base import Method, MethodConfig
from workbench.methods.selection import best_layer, layer_sweep
from workbench.tasks.prompts import get_template


@dataclass(kw_only=True)
class TaskVectorConfig(MethodConfig):
    shots: int = 10  # k: demonstrations per prompt that builds the vectors
    n_prompts: int = 50  # M: prompts averaged into each layer's vector
    batch_size: int = 16


@dataclass(kw_only=True, eq=False)
class TaskVector(Method):
    name = "TV"
    title = "Task vector"
    Config = TaskVectorConfig

    vectors: torch.Tensor  # (L, d_model): one candidate per layer
    layer: int  # chosen on valid
    curve: pd.DataFrame  # layer, first_token_acc, loss (valid split)
    zero_shot_valid: dict = field(default_factory=dict)  # valid scores without intervention

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> "TaskVector":
        (task,) = cls._tasks(tasks)
        config = cls._config(config)
        template = get_template(config.template)
        t0 = time.perf_counter()

        # step 1
        vectors = task_residuals(
            model, task, template, config.shots, config.n_prompts, config.seed, config.batch_size
        )  # (L, d_model)

        # steps 2-3
        def intervention_at(layer: int) -> Intervention:
            return Intervention("TV", (replace_residual(layer, vectors[layer]),))

        report = (lambda done, total: progress("layer sweep", done, total, {})) if progress else None
        curve, zero_shot = layer_sweep(model, task, intervention_at, template, config.seed, progress=report)
        return cls(
            tasks=[task.name],
            config=config,
            vectors=vectors,
            layer=best_layer(curve),
            curve=curve,
            zero_shot_valid=zero_shot,
            fit_seconds=time.perf_counter() - t0,
        )

    @property
    def vector(self) -> torch.Tensor:
        return self.vectors[self.layer]  # (d_model,)

    def intervention(self, task: str | None = None, when: When = When.LAST) -> Intervention:
        self._task(task)
        return Intervention(self.name, (replace_residual(self.layer, self.vector, when),))

    def summary(self) -> dict:
        return {**super().summary(), "layer": self.layer}

    # ------------------------------------------------------------------ run codec

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"vectors": self.vectors}

    def record(self) -> dict:
        return {
            "layer": self.layer,
            "curve": self.curve.to_dict(orient="list"),
            "zero_shot_valid": self.zero_shot_valid,
        }

    @classmethod
    def restore(cls, tensors, record, **common) -> "TaskVector":
        return cls(
            **common,
            vectors=tensors["vectors"],
            layer=int(record["layer"]),
            curve=pd.DataFrame(record.get("curve", {})),
            zero_shot_valid=record.get("zero_shot_valid", {}),
        )
