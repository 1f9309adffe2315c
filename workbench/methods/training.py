"""The fit loop of the methods that learn a few parameters on a frozen model (SITE's beta,
LTV's theta, ATV's map): their shared settings (:class:`LearnedConfig`), and :func:`learn`:
Adam with a cosine learning rate decayed to lr/10, the valid loss checked every few steps,
early stop on patience, and the best-valid step kept.

The loss functions are the caller's: each draws its own mini-batch of prefix-cached
zero-shot queries (:mod:`workbench.methods.queries`), so a step runs one token per query.

A long fit (ATV's, on a mixture of tasks) can keep a :class:`Checkpoint`: every few steps
the parameters, the best ones so far, Adam's moments, the learning-rate schedule, the
caller's batch generator and the loss history are written to a folder (safetensors + JSON,
each file atomically; the JSON, written last, names the tensor file, so a fit killed between
the two writes leaves the previous checkpoint whole). Run the same fit again with the same
checkpoint and it goes on from the last one saved, to the same result an uninterrupted fit gives.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from workbench import atomic
from workbench.methods.base import LOSSES, MethodConfig
from workbench.methods.settings import setting
from workbench.progress import Progress


@dataclass(kw_only=True)
class LearnedConfig(MethodConfig):
    """The settings of every method that learns parameters with :func:`learn`."""

    loss: str = setting("first_token", "cross-entropy on the answer's tokens up to the first that carries it "
                        "(first_token), or on all of them and the end of the answer (answer)", choices=LOSSES)
    steps: int = setting(400,
                         "optimiser steps at most: the fit stops once the selection loss stops improving",
                         minimum=1)
    lr: float = setting(0.05, "Adam learning rate, cosine-decayed to lr/10", above=0)
    batch_size: int = setting(32, "queries per training step", minimum=1)
    eval_every: int = setting(10, "steps between checks of the selection loss", minimum=1)
    patience: int = setting(6, "stop after this many checks without a better selection loss", minimum=1)


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
    def from_record(cls, record: dict) -> Trace:
        return cls(
            int(record["best_step"]),
            float(record["best_valid_loss"]),
            pd.DataFrame(record.get("history", {})),
        )


@dataclass
class Checkpoint:
    """A fit's state in ``folder`` (``state-<step>.safetensors`` + ``state.json``), saved every
    ``every`` steps and when the fit ends. ``fingerprint`` (settings, tasks, model: any JSON)
    must match to resume, so a changed fit never continues from another fit's state."""

    folder: Path
    every: int = 100
    fingerprint: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.fingerprint = json.loads(json.dumps(self.fingerprint))  # as it reads back

    @property
    def json_path(self) -> Path:
        return self.folder / "state.json"

    def save(self, tensors: dict[str, torch.Tensor], state: dict) -> None:
        step = str(state["step"])
        name = f"state-{int(step):07d}.safetensors"
        atomic.write_bytes(self.folder / name, save_tensors(
            {k: t.detach().contiguous().cpu() for k, t in tensors.items()}, metadata={"step": step}))
        atomic.write_text(
            self.json_path, json.dumps({"fingerprint": self.fingerprint, "tensors": name, **state})
        )
        for old in self.folder.glob("state-*.safetensors"):  # the JSON names the new one now
            if old.name != name:
                old.unlink(missing_ok=True)

    def load(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The saved tensors and state, or None when there is no checkpoint yet."""
        if not self.json_path.is_file():
            return None
        try:
            state = json.loads(self.json_path.read_text())
            raw = (self.folder / Path(str(state["tensors"])).name).read_bytes()
            tensors = load_tensors(raw)
        except Exception as error:  # OSError, JSON errors, safetensors.SafetensorError
            raise ValueError(f"The checkpoint in {self.folder} cannot be read ({error}); "
                             "delete the folder to start over.") from None
        if state.get("fingerprint") != self.fingerprint:
            raise ValueError(f"The checkpoint in {self.folder} belongs to another fit "
                             "(other settings, tasks or model); "
                             "delete it or choose another folder.")
        if _safetensors_step(raw) != str(state["step"]):
            raise ValueError(f"The checkpoint in {self.folder} is damaged "
                             "(its two files name different steps); "
                             "delete the folder to start over.")
        return tensors, state


def _safetensors_step(raw: bytes) -> str | None:
    """The "step" in a safetensors blob's header metadata."""
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]).get("__metadata__", {}).get("step")


def fit_parameter(
    param: torch.Tensor | list[torch.Tensor],
    train_loss: Callable[[], torch.Tensor],
    valid_loss: Callable[[], float],
    *,
    steps: int,
    lr: float,
    eval_every: int,
    patience: int,
    progress: Progress | None = None,
    checkpoint: Checkpoint | None = None,
    rng: np.random.Generator | None = None,
    lrs: list[float] | None = None,
) -> tuple[torch.Tensor, Trace]:
    """Minimise ``train_loss()`` (one mini-batch's mean loss, drawn by the caller) over the
    leaf tensor ``param`` (or a list of them); returns the parameter(s) at the step with the
    lowest ``valid_loss()`` (detached copies) and the trace. With a ``checkpoint`` the fit
    saves its state there and resumes from it; ``rng`` (the generator ``train_loss`` draws
    its batches from) is saved with it, so a resumed fit draws the same batches. ``lrs``
    gives each tensor of the list its own learning rate (default: ``lr`` for all)."""
    params = list(param) if isinstance(param, (list, tuple)) else [param]

    def snapshot():
        copies = [p.detach().clone() for p in params]
        return copies if isinstance(param, (list, tuple)) else copies[0]

    if lrs is not None and len(lrs) != len(params):
        raise ValueError(f"{len(lrs)} learning rates for {len(params)} parameters.")
    optimizer = torch.optim.Adam(
        [{"params": [p], "lr": r} for p, r in zip(params, lrs or [lr] * len(params))]
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is None:
        with torch.no_grad():
            best = (valid_loss(), 0, snapshot())
        history = [{"step": 0, "train_loss": float("nan"), "valid_loss": best[0], "lr": lr}]
        checks_without_gain, start, done = 0, 1, False
    else:
        best, history, checks_without_gain, start, done = _restore(saved, params, optimizer, schedule, rng)
        best = (best[0], best[1], best[2] if isinstance(param, (list, tuple)) else best[2][0])

    def save(step: int, done: bool) -> None:
        best_params = best[2] if isinstance(param, (list, tuple)) else [best[2]]
        tensors = {f"param.{i}": p for i, p in enumerate(params)}
        tensors.update({f"best.{i}": p for i, p in enumerate(best_params)})
        for index, state in optimizer.state_dict()["state"].items():
            tensors.update({f"adam.{index}.{key}": t for key, t in state.items()})
        checkpoint.save(tensors, {
            "step": step, "done": done, "best_step": best[1], "best_valid_loss": best[0], "history": history,
            "checks_without_gain": checks_without_gain, "lrs": [g["lr"] for g in optimizer.param_groups],
            "schedule": schedule.state_dict(), "rng": rng.bit_generator.state if rng is not None else None,
        })

    for step in range(start, 0 if done else steps + 1):
        loss = train_loss()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        record = {
            "step": step,
            "train_loss": loss.item(),
            "valid_loss": float("nan"),
            "lr": schedule.get_last_lr()[0],
        }
        if step % eval_every == 0 or step == steps:
            with torch.no_grad():
                record["valid_loss"] = valid_loss()
            if record["valid_loss"] < best[0]:
                best = (record["valid_loss"], step, snapshot())
                checks_without_gain = 0
            else:
                checks_without_gain += 1
        history.append(record)
        stop = checks_without_gain >= patience or step == steps
        if checkpoint is not None and (stop or step % checkpoint.every == 0):
            save(step, done=stop)
        if progress:
            progress("fit", step, steps, record)
        if stop:
            break
    return best[2], Trace(best[1], best[0], pd.DataFrame(history))


def learn(
    params: torch.Tensor | list[torch.Tensor],
    train_loss: Callable[[], torch.Tensor],
    valid_loss: Callable[[], float],
    config: LearnedConfig,
    progress: Progress | None = None,
    **options,
) -> tuple[torch.Tensor | list[torch.Tensor], Trace]:
    """The learned fit of SITE, LTV and ATV: :func:`fit_parameter` with the config's steps,
    learning rate, checks and patience, reporting each step as stage "fit"."""
    return fit_parameter(params, train_loss, valid_loss, steps=config.steps, lr=config.lr,
                         eval_every=config.eval_every, patience=config.patience, progress=progress, **options)


def _restore(saved, params, optimizer, schedule, rng):
    """Put a checkpoint's state back in place; returns (best, history, checks, next step, done)."""
    tensors, state = saved
    if sum(k.startswith("param.") for k in tensors) != len(params):
        raise ValueError("The checkpoint holds a different number of parameters than this fit.")
    with torch.no_grad():
        for i, p in enumerate(params):
            if tensors[f"param.{i}"].shape != p.shape:
                raise ValueError(f"The checkpoint's parameter {i} has shape "
                                 f"{tuple(tensors[f'param.{i}'].shape)}, "
                                 f"this fit's {tuple(p.shape)}.")
            p.copy_(tensors[f"param.{i}"])
    adam: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("adam."):
            _, index, name = key.split(".", 2)
            adam.setdefault(int(index), {})[name] = t.to(params[int(index)].device) if name != "step" else t
    optimizer.load_state_dict({"state": adam, "param_groups": optimizer.state_dict()["param_groups"]})
    for group, lr in zip(optimizer.param_groups, state["lrs"]):
        group["lr"] = lr
    schedule.load_state_dict(state["schedule"])
    if rng is not None and state["rng"] is not None:
        rng.bit_generator.state = state["rng"]
    best_params = [tensors[f"best.{i}"].to(p.device) for i, p in enumerate(params)]
    best = (float(state["best_valid_loss"]), int(state["best_step"]), best_params)
    return (
        best, state["history"], int(state["checks_without_gain"]), int(state["step"]) + 1, bool(state["done"])
    )
