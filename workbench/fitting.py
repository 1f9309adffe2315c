"""The fit loop shared by the methods that learn a few parameters on a frozen model
(SITE's beta, LTV's theta): Adam with a cosine learning rate decayed to lr/10, the valid
loss checked every few steps, early stop on patience, and the best-valid step kept.

Queries are zero-shot prompts whose tokens before the last are cached once
(:func:`query_batches`): the methods only intervene at the last token, so each step
runs one token per query.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
import torch

from workbench import inference
from workbench.models import LoadedModel
from workbench.prompts import PromptTemplate, answer_text

Batch = tuple[inference.CachedPrompts, torch.Tensor]  # cached zero-shot prompts, first-token targets (B,)


def query_batches(
    model: LoadedModel, template: PromptTemplate, pairs: list[tuple[str, str]], batch_size: int,
    rng: np.random.Generator | None = None,
) -> list[Batch]:
    """Zero-shot queries of ``pairs`` in fixed mini-batches (shuffled by ``rng`` if given)."""
    order = rng.permutation(len(pairs)) if rng is not None else np.arange(len(pairs))
    batches = []
    for start in range(0, len(pairs), batch_size):
        chunk = [pairs[i] for i in order[start : start + batch_size]]
        prompts = [template.format_query(x) for x, _ in chunk]
        targets = torch.tensor(
            [inference.answer_first_token(model, answer_text(y)) for _, y in chunk], device=model.device
        )
        batches.append((inference.cache_prefixes(model, prompts), targets))
    return batches


def first_token_ce(model: LoadedModel, batch: Batch, hooks) -> torch.Tensor:
    """Summed cross-entropy of the first answer token over a cached batch (differentiable)."""
    cached, targets = batch
    logits = inference.cached_last_logits(model, cached, hooks)  # (B, vocab)
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")


@dataclass
class FitTrace:
    best: torch.Tensor  # the parameter at the best-valid step (detached copy)
    best_step: int
    best_valid_loss: float
    history: pd.DataFrame  # step, train_loss, valid_loss, lr


def fit_parameter(
    param: torch.Tensor,
    train_loss: Callable[[], torch.Tensor],
    valid_loss: Callable[[], float],
    *,
    steps: int,
    lr: float,
    eval_every: int,
    patience: int,
    progress: Callable[[int, int, dict], None] | None = None,
) -> FitTrace:
    """Minimise ``train_loss()`` (one mini-batch's mean loss, drawn by the caller) over the
    leaf tensor ``param``; keep the step with the lowest ``valid_loss()``."""
    optimizer = torch.optim.Adam([param], lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    with torch.no_grad():
        best = (valid_loss(), 0, param.detach().clone())
    history = [{"step": 0, "train_loss": float("nan"), "valid_loss": best[0], "lr": lr}]
    checks_without_gain = 0
    for step in range(1, steps + 1):
        loss = train_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        record = {"step": step, "train_loss": loss.item(), "valid_loss": float("nan"), "lr": schedule.get_last_lr()[0]}
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                record["valid_loss"] = valid_loss()
            if record["valid_loss"] < best[0]:
                best = (record["valid_loss"], step, param.detach().clone())
                checks_without_gain = 0
            else:
                checks_without_gain += 1
        history.append(record)
        if progress:
            progress(step, steps, record)
        if checks_without_gain >= patience:
            break
    return FitTrace(best[2], best[1], best[0], pd.DataFrame(history))


def fit_fields(trace: FitTrace, template: PromptTemplate, started: float, embedding_seconds: float) -> dict:
    """The fit-trace keyword arguments of a fit just made (SiteFit, LtvFit); ``started`` is
    the ``time.perf_counter()`` at the start of the fit. :func:`trace_fields` is the same
    for a fit rebuilt from a stored run."""
    return {
        "history": trace.history,
        "best_step": trace.best_step,
        "best_valid_loss": trace.best_valid_loss,
        "fit_seconds": time.perf_counter() - started,
        "embedding_seconds": embedding_seconds,
        "meta": {"template": template.describe()},
    }


# ----------------------------------------------------------------------------- runs

_TRACE_FIELDS = ("best_step", "best_valid_loss", "fit_seconds", "embedding_seconds")


def trace_meta(fit, metrics: dict | None = None, split_sizes: dict | None = None) -> dict:
    """Run metadata of a fitted method (SiteFit, LtvFit): config, template, fit trace, metrics."""
    return {
        "config": fit.config.as_dict(),
        "template": fit.meta.get("template", ""),
        **{name: getattr(fit, name) for name in _TRACE_FIELDS},
        "history": fit.history.to_dict(orient="list"),
        "split_sizes": split_sizes or {},
        "metrics": metrics or {},
    }


def trace_fields(run) -> dict:
    """The fit-trace keyword arguments of a fit rebuilt from a stored run (inverse of trace_meta)."""
    meta = run.meta
    return {
        "history": pd.DataFrame(meta.get("history", {})),
        "best_step": int(meta.get("best_step", 0)),
        "best_valid_loss": float(meta.get("best_valid_loss", float("nan"))),
        "fit_seconds": float(meta.get("fit_seconds", 0.0)),
        "embedding_seconds": float(meta.get("embedding_seconds", 0.0)),
        "meta": {"template": meta.get("template", ""), "run_id": run.id, "metrics": meta.get("metrics", {})},
    }
