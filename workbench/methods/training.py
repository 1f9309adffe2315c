"""The fit loop of the methods that learn a few parameters on a frozen model (SITE's beta,
LTV's theta): Adam with a cosine learning rate decayed to lr/10, the valid loss checked
every few steps, early stop on patience, and the best-valid step kept.

The loss functions are the caller's: each draws its own mini-batch of prefix-cached
zero-shot queries (:mod:`workbench.methods.queries`), so a step runs one token per query.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch


@dataclass
class Trace:
    """How a fit went: the best-valid step and the loss curves."""

    best_step: int
    best_valid_loss: float
    history: pd.DataFrame  # step, train_loss, valid_loss, lr

    def record(self) -> dict:
        return {
            "best_step": self.best_step,
            "best_valid_loss": self.best_valid_loss,
            "history": self.history.to_dict(orient="list"),
        }

    @classmethod
    def from_record(cls, record: dict) -> "Trace":
        return cls(
            int(record["best_step"]), float(record["best_valid_loss"]), pd.DataFrame(record.get("history", {}))
        )


def fit_parameter(
    param: torch.Tensor | list[torch.Tensor],
    train_loss: Callable[[], torch.Tensor],
    valid_loss: Callable[[], float],
    *,
    steps: int,
    lr: float,
    eval_every: int,
    patience: int,
    progress: Callable[[int, int, dict], None] | None = None,
) -> tuple[torch.Tensor, Trace]:
    """Minimise ``train_loss()`` (one mini-batch's mean loss, drawn by the caller) over the
    leaf tensor ``param`` (or a list of them); returns the parameter(s) at the step with the
    lowest ``valid_loss()`` (detached copies) and the trace."""
    params = list(param) if isinstance(param, (list, tuple)) else [param]

    def snapshot():
        copies = [p.detach().clone() for p in params]
        return copies if isinstance(param, (list, tuple)) else copies[0]

    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    with torch.no_grad():
        best = (valid_loss(), 0, snapshot())
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
                best = (record["valid_loss"], step, snapshot())
                checks_without_gain = 0
            else:
                checks_without_gain += 1
        history.append(record)
        if progress:
            progress(step, steps, record)
        if checks_without_gain >= patience:
            break
    return best[2], Trace(best[1], best[0], pd.DataFrame(history))
