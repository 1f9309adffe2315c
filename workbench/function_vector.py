"""Function Vector (Todd et al. 2023; METHODS.md, "Baselines").

1. Mean head outputs a[l,h]: the mean of z[l,h] (before W_O) at the last token of M
   10-shot train prompts; the same quantity as SITE's task embedding, so it is
   :func:`workbench.site.task_embedding`.                              (L, H, d_head)
2. Average indirect effect of each head: build N prompts whose demonstration labels are
   shuffled (the query's own answer stays the target), patch a[l,h] into that ONE head
   at the last token and measure the gain in the probability of the answer's first token:
       AIE[l,h] = mean_prompts P(y | z[l,h] := a[l,h]) - P(y)           (L, H)
   This map is itself a head-relevance map.
3. FV = sum over the top-k heads by AIE of W_O[l,h] a[l,h]               (d_model,)
4. Intervention: FV is ADDED to the residual after one layer, at the last token of the
   zero-shot query. Every layer is tried on the valid split (about L/3 wins ties) and the
   sweep is kept.

Steps 2 and 4 only change the last token, so each prompt's earlier tokens are run once and
kept as a KV cache: a head's effect costs one token per shuffled prompt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch

from workbench import inference
from workbench.heads import Hook
from workbench.models import LoadedModel
from workbench.prompts import DEFAULT_TEMPLATE, answer_text, get_template, train_prompts
from workbench.site import task_embedding
from workbench.task_vector import best_layer, layer_sweep
from workbench.tasks import Task

StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class FunctionVectorConfig:
    template: str = DEFAULT_TEMPLATE
    shots: int = 10  # demonstrations per prompt, for the means and the shuffled prompts
    n_prompts: int = 50  # M: prompts averaged into a[l,h]
    n_shuffled: int = 25  # N: shuffled-label prompts averaged into the indirect effect
    top_k: int = 10  # heads summed into the vector (clipped to L * H)
    layer: int | None = None  # None: the best layer of the valid sweep
    batch_size: int = 16
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- step 2


def shuffled_label_prompts(
    task: Task, template=None, shots: int = 10, n_prompts: int = 25, seed: int = 0
) -> tuple[list[str], list[str]]:
    """k-shot train prompts whose demonstrations carry shuffled labels, and the true answers."""
    train = task.split(seed).train
    order = np.random.default_rng(seed + 2).permutation(len(train))
    shuffled = [(x, train[j][1]) for (x, _), j in zip(train, order)]  # each input gets another pair's label
    return train_prompts(task, template, shots, n_prompts, seed, demo_pool=shuffled)


def patch_head(model: LoadedModel, layer: int, head: int, value: torch.Tensor, pos: int = -1) -> list[Hook]:
    """Set head (layer, head)'s z at pos to value[layer, head]; every other head is untouched.

    value: (L, H, d_head). A one-hot mix, keeping only the patched layer's hook.
    """
    shape = model.heads.shape
    alpha = torch.zeros(shape.n_layers, shape.n_heads, device=value.device)
    alpha[layer, head] = 1.0
    name = model.heads.z_name(layer)
    return [hook for hook in model.heads.mix_z(alpha, value, pos=pos) if hook[0] == name]


@torch.no_grad()
def indirect_effects(
    model: LoadedModel,
    prompts: list[str],
    answers: list[str],
    activations: torch.Tensor,
    batch_size: int = 16,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """AIE[l,h]: mean gain in P(answer's first token) when a[l,h] is patched into head (l, h): (L, H)."""
    shape = model.heads.shape
    activations = activations.to(model.device)
    effects = torch.zeros(shape.n_layers, shape.n_heads, device=model.device)
    starts = range(0, len(prompts), batch_size)
    total, done = len(starts) * shape.n_layers * shape.n_heads, 0
    for start in starts:
        cached = inference.cache_prefixes(model, prompts[start : start + batch_size])
        targets = torch.tensor(
            [
                inference.answer_first_token(model, answer_text(y))
                for y in answers[start : start + batch_size]
            ],
            device=model.device,
        )
        unpatched = _answer_probability(model, cached, targets, [])  # (B,)
        for layer in range(shape.n_layers):
            for head in range(shape.n_heads):
                patched = _answer_probability(
                    model, cached, targets, patch_head(model, layer, head, activations)
                )
                effects[layer, head] += (patched - unpatched).sum()
                done += 1
                if progress:
                    progress(done, total)
    return effects / len(prompts)


def _answer_probability(model, cached, targets, hooks) -> torch.Tensor:
    """P(each query's answer token) at the last prompt token: (B,)."""
    probs = inference.cached_last_logits(model, cached, hooks).float().softmax(-1)  # (B, vocab)
    return probs.gather(1, targets[:, None])[:, 0]


# ----------------------------------------------------------------------------- step 3


def top_heads(effects: torch.Tensor, k: int) -> list[tuple[int, int]]:
    """The k (layer, head) pairs with the largest indirect effect, largest first."""
    n_heads = effects.shape[1]
    flat = effects.flatten().topk(min(k, effects.numel())).indices.tolist()
    return [(i // n_heads, i % n_heads) for i in flat]


def top_k_mask(effects: torch.Tensor, k: int) -> torch.Tensor:
    """(L, H) bool: True at the k heads of :func:`top_heads`."""
    selected = torch.zeros(effects.shape, dtype=torch.bool, device=effects.device)
    for layer, head in top_heads(effects, k):
        selected[layer, head] = True
    return selected


def function_vector(
    model: LoadedModel, activations: torch.Tensor, effects: torch.Tensor, top_k: int
) -> torch.Tensor:
    """FV = sum over the top-k heads of W_O[l,h] a[l,h]: (d_model,)."""
    projected = model.heads.project(activations.to(model.device))  # (L, H, d_model)
    return projected[top_k_mask(effects, top_k).to(projected.device)].sum(0)


# ----------------------------------------------------------------------------- step 4


@dataclass
class FunctionVector:
    """The intervention: add the vector to the residual after ``layer`` at the last token."""

    vector: torch.Tensor  # (d_model,)
    layer: int
    name: str = "FV"

    def hooks(self, model: LoadedModel, prompts: list[str] | None = None) -> list[Hook]:
        return model.heads.add_resid({self.layer: self.vector.to(model.device)}, pos=-1)


@dataclass
class FunctionVectorFit:
    task: str
    activations: torch.Tensor  # (L, H, d_head): a[l,h]
    effects: torch.Tensor  # (L, H): average indirect effect, the head-relevance map
    top_k: int
    vector: torch.Tensor  # (d_model,)
    layer: int  # chosen on valid (or fixed by the config)
    sweep: pd.DataFrame  # layer, first_token_acc, loss (valid split)
    config: FunctionVectorConfig
    fit_seconds: float
    effect_seconds: float
    meta: dict = field(default_factory=dict)

    @property
    def heads(self) -> list[tuple[int, int]]:
        return top_heads(self.effects, self.top_k)

    def intervention(self, layer: int | None = None) -> FunctionVector:
        return FunctionVector(self.vector, self.layer if layer is None else layer)


def fit_function_vector(
    model: LoadedModel,
    task: Task,
    config: FunctionVectorConfig | None = None,
    progress: StageProgress | None = None,
) -> FunctionVectorFit:
    """Means, indirect effects, the top-k vector, and the valid sweep over layers."""
    config = config or FunctionVectorConfig()
    template = get_template(config.template)
    shape = model.heads.shape
    stage = (
        (lambda name: lambda done, total: progress(name, done, total)) if progress else (lambda name: None)
    )

    t0 = time.perf_counter()
    activations = task_embedding(
        model, task, template, config.shots, config.n_prompts, config.seed, config.batch_size
    )
    prompts, answers = shuffled_label_prompts(task, template, config.shots, config.n_shuffled, config.seed)
    effects = indirect_effects(
        model, prompts, answers, activations, config.batch_size, stage("indirect effect")
    )
    effect_seconds = time.perf_counter() - t0

    top_k = min(config.top_k, shape.n_layers * shape.n_heads)
    vector = function_vector(model, activations, effects, top_k)
    sweep, zero_shot = layer_sweep(
        model,
        task,
        lambda l: FunctionVector(vector, l).hooks(model),
        template,
        config.seed,
        progress=stage("layer sweep"),
    )
    layer = config.layer if config.layer is not None else best_layer(sweep, prefer=shape.n_layers // 3)
    return FunctionVectorFit(
        task=task.name,
        activations=activations,
        effects=effects,
        top_k=top_k,
        vector=vector,
        layer=layer,
        sweep=sweep,
        config=config,
        fit_seconds=time.perf_counter() - t0,
        effect_seconds=effect_seconds,
        meta={"template": template.describe(), "zero_shot_valid": zero_shot},
    )


# ----------------------------------------------------------------------------- saving


def to_run(
    fit: FunctionVectorFit, model: LoadedModel, metrics: dict | None = None, split_sizes: dict | None = None
):
    """A :class:`workbench.runs.Run` ("FV"): means, indirect effects, the vector, k and layer."""
    from workbench.runs import Run

    tensors = {"activations": fit.activations, "effects": fit.effects, "vector": fit.vector}
    meta = {
        "config": fit.config.as_dict(),
        "template": fit.meta.get("template", ""),
        "top_k": fit.top_k,
        "heads": fit.heads,
        "layer": fit.layer,
        "sweep": fit.sweep.to_dict(orient="list"),
        "zero_shot_valid": fit.meta.get("zero_shot_valid", {}),
        "fit_seconds": fit.fit_seconds,
        "effect_seconds": fit.effect_seconds,
        "split_sizes": split_sizes or {},
        "metrics": metrics or {},
    }
    return Run("FV", model.signature, [fit.task], tensors, meta)


def from_run(run, model: LoadedModel | None = None) -> FunctionVectorFit:
    """Rebuild a fit from a stored run; with ``model``, check the run fits it first."""
    if run.method != "FV":
        raise ValueError(f"Run {run.id} is a {run.method} run, not FV.")
    device = run.device_for(model)
    meta = run.meta
    return FunctionVectorFit(
        task=run.tasks[0],
        activations=run.tensors["activations"].to(device),
        effects=run.tensors["effects"].to(device),
        top_k=int(meta["top_k"]),
        vector=run.tensors["vector"].to(device),
        layer=int(meta["layer"]),
        sweep=pd.DataFrame(meta.get("sweep", {})),
        config=FunctionVectorConfig(**meta.get("config", {})),
        fit_seconds=float(meta.get("fit_seconds", 0.0)),
        effect_seconds=float(meta.get("effect_seconds", 0.0)),
        meta={
            "template": meta.get("template", ""),
            "zero_shot_valid": meta.get("zero_shot_valid", {}),
            "run_id": run.id,
            "metrics": meta.get("metrics", {}),
        },
    )
