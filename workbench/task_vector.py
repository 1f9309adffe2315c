"""Task Vector (Hendel et al. 2023; METHODS.md, "Baselines").

1. Task vectors: for every layer l, the residual stream after block l
   (``hook_resid_post``) at the last token, averaged over M k-shot train prompts:
       tv[l] = mean_prompts resid_post[l][-1]                          (L, d_model)
   All layers come out of the same forward passes.
2. Intervention: run the *zero-shot* query and REPLACE its residual after layer l, at
   the last token, with tv[l]. Later layers (and the answer) then read the task only
   from that vector.
3. Layer choice: every layer is tried on the valid split; first-token accuracy (ties:
   first-token cross-entropy) picks l. The per-layer curve is kept.

The sweep only touches the last token, so each valid query's earlier tokens are run once
and kept as a KV cache (:class:`workbench.inference.CachedPrompts`): trying a layer
costs one token per query. :func:`layer_sweep` is that loop for any per-layer
intervention (the Function Vector sweep uses it too).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import pandas as pd
import torch

from workbench import inference
from workbench.fitting import query_batches
from workbench.heads import Hook
from workbench.models import LoadedModel
from workbench.prompts import DEFAULT_TEMPLATE, get_template, train_prompts
from workbench.tasks import Task

Progress = Callable[[int, int], None]


@dataclass
class TaskVectorConfig:
    template: str = DEFAULT_TEMPLATE
    shots: int = 10  # k: demonstrations per prompt that builds the vectors
    n_prompts: int = 50  # M: prompts averaged into each layer's vector
    batch_size: int = 16
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- step 1


@torch.no_grad()
def task_vectors(
    model: LoadedModel,
    task: Task,
    template=None,
    shots: int = 10,
    n_prompts: int = 50,
    seed: int = 0,
    batch_size: int = 16,
) -> torch.Tensor:
    """tv[l] = mean residual after layer l at the last token of M k-shot prompts: (L, d_model)."""
    prompts, _ = train_prompts(task, template, shots, n_prompts, seed)
    return inference.mean_last_token(model, prompts, model.heads.capture_resid, batch_size)  # (L, d_model)


# ----------------------------------------------------------------------------- step 2


@dataclass
class TaskVector:
    """The intervention: the zero-shot query's residual after ``layer`` becomes ``vector``."""

    vector: torch.Tensor  # (d_model,)
    layer: int
    name: str = "TV"

    def hooks(self, model: LoadedModel, prompts: list[str] | None = None) -> list[Hook]:
        return model.heads.replace_resid(self.layer, self.vector.to(model.device), pos=-1)


# ----------------------------------------------------------------------------- step 3


def first_token_scores(
    model: LoadedModel, batches: list[tuple[inference.CachedPrompts, torch.Tensor]], hooks: list[Hook] = ()
) -> tuple[float, float]:
    """(first-token accuracy, mean first-token cross-entropy) over prefix-cached queries."""
    correct, loss, n = 0, 0.0, 0
    with torch.no_grad():
        for cached, targets in batches:
            logits = inference.cached_last_logits(model, cached, hooks).float()  # (B, vocab)
            correct += int((logits.argmax(-1) == targets).sum())
            loss += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").item()
            n += len(targets)
    return correct / n, loss / n


def layer_sweep(
    model: LoadedModel,
    task: Task,
    hooks_at: Callable[[int], list[Hook]],
    template=None,
    seed: int = 0,
    split: str = "valid",
    layers: list[int] | None = None,
    progress: Progress | None = None,
) -> tuple[pd.DataFrame, dict]:
    """Score ``hooks_at(l)`` on the zero-shot ``split`` queries for every layer l.

    Returns the curve (layer, first_token_acc, loss: one row per layer) and the
    zero-shot scores without any intervention ({"first_token_acc", "loss"}).
    """
    template = get_template(template)
    pairs = task.split(seed)[split]
    batches = query_batches(model, template, pairs, 64)
    acc, loss = first_token_scores(model, batches)
    zero_shot = {"first_token_acc": acc, "loss": loss}
    layers = list(range(model.heads.shape.n_layers)) if layers is None else list(layers)
    rows = []
    for i, layer in enumerate(layers):
        acc, loss = first_token_scores(model, batches, hooks_at(layer))
        rows.append({"layer": layer, "first_token_acc": acc, "loss": loss})
        if progress:
            progress(i + 1, len(layers))
    return pd.DataFrame(rows), zero_shot


def best_layer(curve: pd.DataFrame, prefer: int = 0) -> int:
    """Highest accuracy; ties to the lower loss, then to the layer nearest ``prefer``."""
    ranked = curve.assign(distance=(curve["layer"] - prefer).abs())
    ranked = ranked.sort_values(
        ["first_token_acc", "loss", "distance"], ascending=[False, True, True], kind="stable"
    )
    return int(ranked["layer"].iloc[0])


def choose_layer(
    model: LoadedModel,
    task: Task,
    vectors: torch.Tensor,
    template=None,
    seed: int = 0,
    split: str = "valid",
    progress: Progress | None = None,
) -> tuple[int, pd.DataFrame, dict]:
    """Substitute tv[l] at each layer on the valid queries: (best layer, curve, zero-shot scores)."""
    curve, zero_shot = layer_sweep(
        model,
        task,
        lambda l: TaskVector(vectors[l], l).hooks(model),
        template,
        seed,
        split,
        progress=progress,
    )
    return best_layer(curve), curve, zero_shot


@dataclass
class TaskVectorFit:
    task: str
    vectors: torch.Tensor  # (L, d_model): one candidate per layer
    layer: int  # chosen on valid
    curve: pd.DataFrame  # layer, first_token_acc, loss (valid split)
    config: TaskVectorConfig
    fit_seconds: float
    meta: dict = field(default_factory=dict)  # template, zero_shot valid scores, run id, ...

    @property
    def vector(self) -> torch.Tensor:
        return self.vectors[self.layer]

    def intervention(self, layer: int | None = None) -> TaskVector:
        layer = self.layer if layer is None else layer
        return TaskVector(self.vectors[layer], layer)


def fit_task_vector(
    model: LoadedModel, task: Task, config: TaskVectorConfig | None = None, progress: Progress | None = None
) -> TaskVectorFit:
    """Task vectors for every layer, then the layer that carries the task best on valid."""
    config = config or TaskVectorConfig()
    template = get_template(config.template)
    t0 = time.perf_counter()
    vectors = task_vectors(
        model, task, template, config.shots, config.n_prompts, config.seed, config.batch_size
    )
    layer, curve, zero_shot = choose_layer(model, task, vectors, template, config.seed, progress=progress)
    return TaskVectorFit(
        task=task.name,
        vectors=vectors,
        layer=layer,
        curve=curve,
        config=config,
        fit_seconds=time.perf_counter() - t0,
        meta={"template": template.describe(), "zero_shot_valid": zero_shot},
    )


# ----------------------------------------------------------------------------- saving


def to_run(
    fit: TaskVectorFit, model: LoadedModel, metrics: dict | None = None, split_sizes: dict | None = None
):
    """A :class:`workbench.runs.Run` ("TV"): every layer's vector, the chosen layer and the curve."""
    from workbench.runs import Run

    meta = {
        "config": fit.config.as_dict(),
        "template": fit.meta.get("template", ""),
        "layer": fit.layer,
        "curve": fit.curve.to_dict(orient="list"),
        "zero_shot_valid": fit.meta.get("zero_shot_valid", {}),
        "fit_seconds": fit.fit_seconds,
        "split_sizes": split_sizes or {},
        "metrics": metrics or {},
    }
    return Run("TV", model.signature, [fit.task], {"vectors": fit.vectors}, meta)


def from_run(run, model: LoadedModel | None = None) -> TaskVectorFit:
    """Rebuild a fit from a stored run; with ``model``, check the run fits it first."""
    if run.method != "TV":
        raise ValueError(f"Run {run.id} is a {run.method} run, not TV.")
    device = run.device_for(model)
    meta = run.meta
    return TaskVectorFit(
        task=run.tasks[0],
        vectors=run.tensors["vectors"].to(device),
        layer=int(meta["layer"]),
        curve=pd.DataFrame(meta.get("curve", {})),
        config=TaskVectorConfig(**meta.get("config", {})),
        fit_seconds=float(meta.get("fit_seconds", 0.0)),
        meta={
            "template": meta.get("template", ""),
            "zero_shot_valid": meta.get("zero_shot_valid", {}),
            "run_id": run.id,
            "metrics": meta.get("metrics", {}),
        },
    )
