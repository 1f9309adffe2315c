"""Function Vector (Todd et al. 2023; docs/methods.md, "FV").

1. Mean head outputs a[l,h]: the mean of z[l,h] (before W_O) at the last token of M k-shot
   train prompts (the task embedding, :func:`workbench.methods.activations.task_embedding`).
                                                                        (L, H, d_head)
2. Average indirect effect of each head: N k-shot prompts whose demonstration labels are
   shuffled (the query's own answer stays the target); put a[l,h] into that ONE head at the
   last token and measure the gain in the probability of the answer's first token:
       AIE[l,h] = mean_prompts P(y | z[l,h] := a[l,h]) - P(y)           (L, H)
   This map is FV's head map.
3. FV = sum over the top-k heads by AIE of W_O[l,h] a[l,h]               (d_model,)
4. Intervention: FV is ADDED to the residual after one layer, at the last token of the
   zero-shot query. Every layer is tried on the valid split (about L/3 wins ties).

Steps 2 and 4 only change the last token, so each prompt's prefix is run once and cached:
a head's effect costs one token per shuffled prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from workbench import scoring
from workbench.interventions import Intervention, When, add_to_residual, replace_head
from workbench.methods.activations import task_embedding
from workbench.methods.base import HeadMap, Method, MethodConfig
from workbench.methods.selection import best_layer, layer_sweep, top_heads, top_k_mask
from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import get_template, train_prompts
from workbench.tasks.task import Task


@dataclass(kw_only=True)
class FunctionVectorConfig(MethodConfig):
    shots: int = 10  # demonstrations per prompt, for the means and the shuffled prompts
    n_prompts: int = 50  # M: prompts averaged into a[l,h]
    n_shuffled: int = 25  # N: shuffled-label prompts averaged into the indirect effect
    top_k: int = 10  # heads summed into the vector (clipped to L * H)
    layer: int | None = None  # None: the best layer of the valid sweep
    batch_size: int = 16


# ----------------------------------------------------------------------------- step 2


def shuffled_label_prompts(
    task: Task, template=None, shots: int = 10, n_prompts: int = 25, seed: int = 0
) -> tuple[list[str], list[str]]:
    """k-shot train prompts whose demonstrations carry shuffled labels, and the true answers."""
    train = task.split(seed).train
    order = np.random.default_rng(seed + 2).permutation(len(train))
    shuffled = [(x, train[j][1]) for (x, _), j in zip(train, order)]  # each input gets another pair's label
    return train_prompts(task, template, shots, n_prompts, seed, demo_pool=shuffled)


@torch.no_grad()
def indirect_effects(
    model: LoadedModel,
    prompts: list[str],
    answers: list[str],
    activations: torch.Tensor,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """AIE[l,h]: mean gain in P(answer's first token) when a[l,h] is put into head (l, h): (L, H)."""
    shape = model.heads.shape
    activations = activations.to(model.device)
    effects = torch.zeros(shape.n_layers, shape.n_heads, device=model.device)
    starts = range(0, len(prompts), batch_size)
    total, done = len(starts) * shape.n_layers * shape.n_heads, 0
    for start in starts:
        cached = inference.cache_prefixes(model, prompts[start : start + batch_size])
        targets = scoring.first_token_targets(model, answers[start : start + batch_size])  # (B,)
        unpatched = scoring.answer_probability(inference.cached_last_logits(model, cached), targets)  # (B,)
        for layer in range(shape.n_layers):
            for head in range(shape.n_heads):
                patch = replace_head(layer, head, activations[layer, head])
                logits = inference.cached_last_logits(model, cached, patch.hooks(model, "prompt"))
                effects[layer, head] += (scoring.answer_probability(logits, targets) - unpatched).sum()
                done += 1
                if progress:
                    progress(done, total)
    return effects / len(prompts)


# ----------------------------------------------------------------------------- step 3


def function_vector(
    model: LoadedModel, activations: torch.Tensor, effects: torch.Tensor, top_k: int
) -> torch.Tensor:
    """FV = sum over the top-k heads of W_O[l,h] a[l,h]: (d_model,)."""
    projected = model.heads.project(activations.to(model.device))  # (L, H, d_model)
    return projected[top_k_mask(effects, top_k).to(projected.device)].sum(0)


# ----------------------------------------------------------------------------- the method


@dataclass(kw_only=True, eq=False)
class FunctionVector(Method):
    name = "FV"
    title = "Function vector"
    Config = FunctionVectorConfig
    head_map_info = HeadMap("indirect effect", signed=True)

    activations: torch.Tensor  # (L, H, d_head): a[l,h]
    effects: torch.Tensor  # (L, H): average indirect effect, the head map
    top_k: int
    vector: torch.Tensor  # (d_model,)
    layer: int  # chosen on valid (or fixed by the config)
    sweep: pd.DataFrame  # layer, first_token_acc, loss (valid split)
    effect_seconds: float = 0.0
    zero_shot_valid: dict = field(default_factory=dict)

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> "FunctionVector":
        (task,) = cls._tasks(tasks)
        config = cls._config(config)
        template = get_template(config.template)
        shape = model.heads.shape

        def stage(name: str):
            return (lambda done, total: progress(name, done, total, {})) if progress else None

        t0 = time.perf_counter()
        # step 1
        activations = task_embedding(
            model, task, template, config.shots, config.n_prompts, config.seed, config.batch_size
        )  # (L, H, d_head)
        # step 2
        prompts, answers = shuffled_label_prompts(task, template, config.shots, config.n_shuffled, config.seed)
        effects = indirect_effects(
            model, prompts, answers, activations, config.batch_size, stage("indirect effect")
        )  # (L, H)
        effect_seconds = time.perf_counter() - t0
        # step 3
        top_k = min(config.top_k, shape.n_layers * shape.n_heads)
        vector = function_vector(model, activations, effects, top_k)  # (d_model,)

        # step 4
        def intervention_at(layer: int) -> Intervention:
            return Intervention("FV", (add_to_residual(vector[None], (layer,)),))

        sweep, zero_shot = layer_sweep(
            model, task, intervention_at, template, config.seed, progress=stage("layer sweep")
        )
        layer = config.layer if config.layer is not None else best_layer(sweep, prefer=shape.n_layers // 3)
        return cls(
            tasks=[task.name],
            config=config,
            activations=activations,
            effects=effects,
            top_k=top_k,
            vector=vector,
            layer=layer,
            sweep=sweep,
            effect_seconds=effect_seconds,
            zero_shot_valid=zero_shot,
            fit_seconds=time.perf_counter() - t0,
        )

    @property
    def heads(self) -> list[tuple[int, int]]:
        """The top-k heads summed into the vector, largest effect first."""
        return top_heads(self.effects, self.top_k)

    def intervention(self, task: str | None = None, when: When = When.LAST) -> Intervention:
        self._task(task)
        return Intervention(self.name, (add_to_residual(self.vector[None], (self.layer,), when),))

    def _head_values(self) -> torch.Tensor:
        return self.effects

    def summary(self) -> dict:
        return {**super().summary(), "layer": self.layer}

    # ------------------------------------------------------------------ run codec

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"activations": self.activations, "effects": self.effects, "vector": self.vector}

    def record(self) -> dict:
        return {
            "top_k": self.top_k,
            "heads": self.heads,
            "layer": self.layer,
            "sweep": self.sweep.to_dict(orient="list"),
            "zero_shot_valid": self.zero_shot_valid,
            "effect_seconds": self.effect_seconds,
        }

    @classmethod
    def restore(cls, tensors, record, **common) -> "FunctionVector":
        return cls(
            **common,
            activations=tensors["activations"],
            effects=tensors["effects"],
            vector=tensors["vector"],
            top_k=int(record["top_k"]),
            layer=int(record["layer"]),
            sweep=pd.DataFrame(record.get("sweep", {})),
            zero_shot_valid=record.get("zero_shot_valid", {}),
            effect_seconds=float(record.get("effect_seconds", 0.0)),
        )
