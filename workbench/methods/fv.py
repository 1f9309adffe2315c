"""Function Vector (Todd et al. 2023; docs/methods.md, "FV").

0. As Todd et al. do: k-shot prompts from the fitting pool are kept only where k-shot ICL
   answers them correctly (first-token score); each keeps a twin whose demonstration labels
   are shuffled among the pool (same inputs and order, the query's own answer unchanged).
1. Mean head outputs a[l,h]: the mean of z[l,h] (before W_O) at the last token of the first
   M correct prompts (the task embedding).                              (L, H, d_head)
2. Average indirect effect of each head, on the shuffled twins of the first N correct
   prompts: put a[l,h] into that ONE head at the last token and measure the gain in the
   probability of the answer's first token (teacher-forced through any leading space):
       AIE[l,h] = mean_prompts P(y | z[l,h] := a[l,h]) - P(y)           (L, H)
   This map is FV's head map.
3. FV = sum over the top-k heads by AIE of W_O[l,h] a[l,h]               (d_model,)
4. Intervention: FV is ADDED to the residual after one layer, at the last token of the
   zero-shot query (and every generated token with ``when="generated"``). Every layer is
   tried on the selection queries (about L/3 wins ties).

Steps 0, 2 and 4 only score the last prompt token and the answer after it, so each prompt's
prefix is run once and cached: a head's effect costs a token or two per shuffled prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from workbench.interventions import Intervention, When, add_to_residual, replace_head
from workbench.methods.activations import PromptsConfig, task_embedding
from workbench.methods.base import HeadMap, Method, saved
from workbench.methods.queries import answer_probability, hits, prompt_batches
from workbench.methods.selection import best_layer, layer_sweep, top_heads, top_k_mask
from workbench.methods.settings import setting
from workbench.model.loading import LoadedModel
from workbench.progress import Progress
from workbench.tasks.prompts import PromptTemplate, train_prompts
from workbench.tasks.task import Pair


@dataclass(kw_only=True)
class FvConfig(PromptsConfig):
    n_shuffled: int = setting(25, "N: shuffled-label prompts averaged into the indirect effect", minimum=1)
    candidates: int = setting(200, "k-shot prompts tried for the ones ICL answers correctly", minimum=1)
    top_k: int = setting(10, "heads summed into the vector (clipped to L * H)", minimum=1)
    layer: int | None = setting(None, "the layer the vector is added after", minimum=0, layer=True,
                                none="the best layer of the selection sweep")
    batch_size: int = setting(16, "prompts per forward pass", minimum=1)


# ----------------------------------------------------------------------------- steps 0 and 2


def shuffled_labels(pool: list[Pair], seed: int = 0) -> list[Pair]:
    """The pool with its labels permuted: each input carries another pair's answer."""
    order = np.random.default_rng(seed + 2).permutation(len(pool))
    return [(x, pool[j][1]) for (x, _), j in zip(pool, order)]


@dataclass
class IclPrompts:
    clean: list[str]  # k-shot prompts k-shot ICL answers correctly
    shuffled: list[str]  # their twins with shuffled demonstration labels
    answers: list[str]
    candidates: int  # prompts tried
    fallback: bool  # no prompt was answered correctly: every candidate was kept


def icl_correct_prompts(
    model: LoadedModel, pool: list[Pair], template: PromptTemplate, shots: int, candidates: int, seed: int,
    batch_size: int = 16,
) -> IclPrompts:
    """Candidate k-shot prompts from ``pool`` that k-shot ICL answers correctly (first-token
    score), with their shuffled-label twins (same query picks and demonstration order)."""
    clean, answers = train_prompts(pool, template, shots, candidates, seed)
    shuffled, _ = train_prompts(
        pool, template, shots, candidates, seed, demo_pool=shuffled_labels(pool, seed)
    )
    right = [bool(h) for batch in prompt_batches(model, clean, answers, template.separator, batch_size)
             for h in hits(model, batch)]
    keep = [i for i, ok in enumerate(right) if ok] or list(range(len(clean)))
    return IclPrompts([clean[i] for i in keep], [shuffled[i] for i in keep], [answers[i] for i in keep],
                      len(clean), not any(right))


@torch.no_grad()
def indirect_effects(
    model: LoadedModel,
    prompts: list[str],
    answers: list[str],
    activations: torch.Tensor,
    separator: str = "\n",
    batch_size: int = 16,
    progress: Progress | None = None,
) -> torch.Tensor:
    """AIE[l,h]: mean gain in P(answer's first token) when a[l,h] is put into head (l, h): (L, H)."""
    shape = model.heads.shape
    activations = activations.to(model.device)
    effects = torch.zeros(shape.n_layers, shape.n_heads, device=model.device)
    batches = prompt_batches(model, prompts, answers, separator, batch_size)
    total, done = len(batches) * shape.n_layers * shape.n_heads, 0
    for batch in batches:
        unpatched = answer_probability(model, batch)  # (B,)
        for layer in range(shape.n_layers):
            for head in range(shape.n_heads):
                patch = Intervention("patch", (replace_head(layer, head, activations[layer, head]),))
                effects[layer, head] += (answer_probability(model, batch, patch) - unpatched).sum()
                done += 1
                if progress:
                    progress("indirect effect", done, total, {})
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
    Config = FvConfig
    head_map_info = HeadMap("indirect effect", signed=True)
    tiny_settings = dict(shots=2, n_prompts=4, n_shuffled=4, top_k=3)

    embedding: torch.Tensor = saved(aliases=("activations",))  # (L, H, d_head): a[l,h]
    effects: torch.Tensor  # (L, H): average indirect effect, the head map
    top_k: int
    vector: torch.Tensor  # (d_model,)
    layer: int  # chosen on the selection split (or fixed by the config)
    layer_sweep: pd.DataFrame = saved(aliases=("sweep",))  # layer, first_token_acc, loss (selection split)
    effect_seconds: float = 0.0
    zero_shot_valid: dict = field(default_factory=dict)
    icl_prompts: dict = field(default_factory=dict)  # candidates tried, correct ones used

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None) -> FunctionVector:
        setup = cls.begin(model, tasks, config)
        config, template, pairs = setup.config, setup.template, setup.selection
        shape = model.heads.shape

        # step 0
        icl = icl_correct_prompts(
            model, pairs.fit, template, config.shots, config.candidates, config.seed, config.batch_size
        )
        # step 1
        embedding = task_embedding(model, icl.clean[: config.n_prompts], config.batch_size)  # (L, H, d_head)
        # step 2
        n = config.n_shuffled
        effects = indirect_effects(
            model, icl.shuffled[:n], icl.answers[:n], embedding, template.separator, config.batch_size,
            progress,
        )  # (L, H)
        effect_seconds = setup.seconds()
        # step 3
        top_k = min(config.top_k, shape.n_layers * shape.n_heads)
        vector = function_vector(model, embedding, effects, top_k)  # (d_model,)

        # step 4
        def intervention_at(layer: int) -> Intervention:
            return Intervention("FV", (add_to_residual(vector[None], (layer,), setup.when),))

        sweep, zero_shot = layer_sweep(
            model, pairs.select, intervention_at, template, progress=progress
        )
        layer = config.layer if config.layer is not None else best_layer(sweep, prefer=shape.n_layers // 3)
        return cls(
            tasks=[setup.task.name],
            config=config,
            embedding=embedding,
            effects=effects,
            top_k=top_k,
            vector=vector,
            layer=layer,
            layer_sweep=sweep,
            effect_seconds=effect_seconds,
            zero_shot_valid=zero_shot,
            icl_prompts={"candidates": icl.candidates, "correct": 0 if icl.fallback else len(icl.clean),
                         "means": min(config.n_prompts, len(icl.clean)), "effects": min(n, len(icl.shuffled)),
                         "fallback_to_all": icl.fallback},
            fit_seconds=setup.seconds(),
        )

    @property
    def heads(self) -> list[tuple[int, int]]:
        """The top-k heads summed into the vector, largest effect first."""
        return top_heads(self.effects, self.top_k)

    def intervention(self, task: str | None = None, when: When | str | None = None) -> Intervention:
        self._task(task)
        return Intervention(self.name, (add_to_residual(self.vector[None], (self.layer,), self._when(when)),))

    def per_layer_vectors(self, model: LoadedModel) -> torch.Tensor:
        """Its one vector at the layer it is added after; NaN at the others."""
        shape = model.heads.shape
        out = torch.full((shape.n_layers, shape.d_model), float("nan"), device=model.device)
        out[self.layer] = self.vector.to(model.device).float()
        return out

    def _head_values(self) -> torch.Tensor:
        return self.effects

    def summary(self) -> dict:
        return {**super().summary(), "layer": self.layer}

    def record_extra(self) -> dict:
        return {"heads": self.heads}
