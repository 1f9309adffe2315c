"""Training: a fresh batch of functions every step, AdamW, warmup then cosine decay.

    lr(s) = lr * s / warmup                                       for s <= warmup
    lr(s) = lr * (f + (1 - f) * (1 + cos(pi * p)) / 2),  p = (s - warmup) / (steps - warmup)

with f = ``final_lr_fraction``. Weight decay applies to the weight matrices only (not to
biases, LayerNorms or the positional embedding). Gradients are clipped to norm
``grad_clip``. Batches come from one ``torch.Generator`` seeded with ``seed``.

An optional curriculum (Garg et al.'s) starts on easier tasks: stage j = (s - 1) //
curriculum_every trains on min(d, dims_start + j) active input dimensions (the others
zero) and min(n, points_start + 2j) points, then on the full family.

Checkpoints (every ``checkpoint_every`` steps and at the end) live in the output folder:

    checkpoint-{step}.safetensors   model weights, AdamW moments, the batch generator's state
    checkpoint-{step}.json          configs, step, loss history, elapsed time

each written to a temporary file first and moved into place with ``os.replace``; the JSON
goes last, so a checkpoint counts only when both files exist. The last two are kept.
``resume=True`` restarts from the newest complete checkpoint and replays exactly what an
uninterrupted run would do. Nothing is unpickled: tensors are safetensors, the rest JSON.

The finished model is saved as ``model.safetensors`` (weights only) + ``config.json``.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from workbench.regression.families import FamilyConfig, generator, sample_batch
from workbench.regression.model import ModelConfig, RegressionTransformer

CHECKPOINT_PREFIX = "checkpoint-"
KEEP_CHECKPOINTS = 2


@dataclass
class TrainConfig:
    steps: int = 10_000
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 500
    final_lr_fraction: float = 0.1  # the cosine ends at lr * final_lr_fraction
    weight_decay: float = 0.01  # AdamW, weight matrices only
    grad_clip: float = 1.0
    seed: int = 0
    log_every: int = 100  # steps per loss-history entry (the mean loss over them)
    checkpoint_every: int = 1000  # a multiple of log_every
    curriculum_every: int = 0  # steps per curriculum stage; 0: the full family from the start
    curriculum_dims_start: int = 1  # active input dimensions of stage 0, then +1 per stage
    curriculum_points_start: int = 3  # points of stage 0, then +2 per stage

    def __post_init__(self) -> None:
        if self.checkpoint_every % self.log_every:
            raise ValueError("checkpoint_every must be a multiple of log_every")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: RegressionTransformer
    step: int
    history: list[dict]  # {"step", "loss", "lr"} every log_every steps
    elapsed_s: float  # training time summed over resumed runs
    resumed_from: int | None  # the checkpoint step this run started from


def learning_rate(step: int, config: TrainConfig) -> float:
    """The learning rate of step ``step`` (1-based): linear warmup, then cosine decay."""
    if step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return config.lr * (config.final_lr_fraction + (1 - config.final_lr_fraction) * cosine)


def family_at(step: int, family: FamilyConfig, config: TrainConfig) -> FamilyConfig:
    """The family that step ``step`` (1-based) trains on: ``family`` itself, or a curriculum stage."""
    if not config.curriculum_every:
        return family
    stage = (step - 1) // config.curriculum_every
    dims = min(family.n_dims, config.curriculum_dims_start + stage)
    points = min(family.n_points, config.curriculum_points_start + 2 * stage)
    return replace(family, active_dims=dims, n_points=points)


def make_optimizer(model: RegressionTransformer, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the weight matrices only."""
    params = list(model.named_parameters())
    decayed = [p for name, p in params if p.dim() >= 2 and name != "pos_embed"]
    plain = [p for name, p in params if p.dim() < 2 or name == "pos_embed"]
    groups = [
        {"params": decayed, "weight_decay": config.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr)


def train(
    model_config: ModelConfig,
    family: FamilyConfig,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_at: int | None = None,
) -> TrainResult:
    """Train a model on ``family`` and save it under ``out_dir``.

    ``resume``: continue from the newest complete checkpoint there (a fresh start if none).
    ``stop_at``: stop after that step without saving, as an interruption would (for tests).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if family.n_points > model_config.n_positions:
        raise ValueError(f"family.n_points {family.n_points} > model n_positions {model_config.n_positions}")
    with torch.random.fork_rng(devices=[]):  # weights follow the seed; the global RNG is left as it was
        torch.manual_seed(config.seed)
        model = RegressionTransformer(model_config)
    optimizer = make_optimizer(model, config)
    gen = generator(config.seed)
    meta = {"model": model_config.as_dict(), "family": family.as_dict(), "train": config.as_dict()}

    start, history, elapsed, resumed_from = 0, [], 0.0, None
    latest = latest_checkpoint(out_dir)
    if latest is not None and not resume:
        raise FileExistsError(f"{out_dir} holds checkpoints; resume, or choose another folder")
    if latest is not None:
        saved = load_checkpoint(latest, model, optimizer, gen)
        _check_same_run(saved, meta, latest)
        start, history, elapsed = saved["step"], saved["history"], saved["elapsed_s"]
        resumed_from = start

    model.train()
    window: list[float] = []
    began = time.perf_counter()
    bar = tqdm(
        range(start + 1, config.steps + 1),
        initial=start,
        total=config.steps,
        disable=not progress,
        mininterval=5.0,
        desc=f"train {family.family}",
    )
    for step in bar:
        lr = learning_rate(step, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        xs, ys = sample_batch(family_at(step, family, config), config.batch_size, gen)  # (B, n, d), (B, n)
        loss = model.loss(xs, ys)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        window.append(loss.item())

        if step % config.log_every == 0:
            history.append({"step": step, "loss": sum(window) / len(window), "lr": lr})
            window = []
            bar.set_postfix(loss=f"{history[-1]['loss']:.4f}", lr=f"{lr:.2e}")
        if stop_at is not None and step >= stop_at:
            break
        if step % config.checkpoint_every == 0 or step == config.steps:
            run_time = elapsed + time.perf_counter() - began
            save_checkpoint(
                out_dir, step, model, optimizer, gen, {**meta, "history": history, "elapsed_s": run_time}
            )
    bar.close()

    step = min(stop_at, config.steps) if stop_at is not None else config.steps
    elapsed += time.perf_counter() - began
    if step == config.steps:
        save_model(out_dir, model, {**meta, "step": step, "history": history, "elapsed_s": elapsed})
    model.eval()
    return TrainResult(model, step, history, elapsed, resumed_from)


def _check_same_run(saved: dict, meta: dict, path: Path) -> None:
    for key in ("model", "family", "train"):
        if saved[key] != meta[key]:
            raise ValueError(
                f"{path} was saved with a different {key} config:\n{saved[key]}\nnot\n{meta[key]}"
            )


# ----------------------------------------------------------------------------- files


def atomic_write(path: Path, write) -> None:
    """Call ``write(temporary_path)``, then move the file into place in one step."""
    temporary = path.with_name(f".{path.name}.tmp")
    write(temporary)
    os.replace(temporary, path)


def atomic_write_json(path: Path, payload: dict) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(payload, indent=1)))


def save_checkpoint(
    out_dir: Path,
    step: int,
    model: RegressionTransformer,
    optimizer: torch.optim.Optimizer,
    gen: torch.Generator,
    meta: dict,
) -> Path:
    """Write checkpoint-{step}.safetensors, then .json; drop all but the newest KEEP_CHECKPOINTS."""
    tensors = {f"model.{name}": t.detach().contiguous() for name, t in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        tensors.update({f"optim.{index}.{key}": t.contiguous() for key, t in state.items()})
    tensors["rng"] = gen.get_state()  # (5056,) uint8
    stem = out_dir / f"{CHECKPOINT_PREFIX}{step:07d}"
    atomic_write(
        stem.with_suffix(".safetensors"), lambda p: save_file(tensors, p, metadata={"step": str(step)})
    )
    atomic_write_json(stem.with_suffix(".json"), {**meta, "step": step})
    for old in _complete_checkpoints(out_dir)[:-KEEP_CHECKPOINTS]:
        old.with_suffix(".safetensors").unlink()
        old.with_suffix(".json").unlink()
    return stem


def _complete_checkpoints(out_dir: Path) -> list[Path]:
    """Checkpoint stems (no suffix) with both files present, oldest first."""
    stems = sorted(p.with_suffix("") for p in out_dir.glob(f"{CHECKPOINT_PREFIX}*.json"))
    return [s for s in stems if s.with_suffix(".safetensors").exists()]


def latest_checkpoint(out_dir: str | Path) -> Path | None:
    complete = _complete_checkpoints(Path(out_dir))
    return complete[-1] if complete else None


def load_checkpoint(
    stem: Path, model: RegressionTransformer, optimizer: torch.optim.Optimizer, gen: torch.Generator
) -> dict:
    """Restore model, optimizer and generator in place; return the checkpoint's JSON."""
    meta = json.loads(stem.with_suffix(".json").read_text())
    tensors = load_file(stem.with_suffix(".safetensors"))
    with safe_open(stem.with_suffix(".safetensors"), "pt") as f:
        if int(f.metadata()["step"]) != meta["step"]:
            raise ValueError(f"{stem}: the weights and the JSON name different steps")
    model.load_state_dict({k.removeprefix("model."): t for k, t in tensors.items() if k.startswith("model.")})
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = t
    optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    gen.set_state(tensors["rng"])
    return meta


def save_model(out_dir: str | Path, model: RegressionTransformer, meta: dict) -> None:
    """The finished model: model.safetensors (weights) + config.json (configs, history)."""
    out_dir = Path(out_dir)
    weights = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    atomic_write(out_dir / "model.safetensors", lambda p: save_file(weights, p))
    atomic_write_json(out_dir / "config.json", meta)


def load_model(folder: str | Path) -> tuple[RegressionTransformer, dict]:
    """A saved model (eval mode) and its config.json."""
    folder = Path(folder)
    meta = json.loads((folder / "config.json").read_text())
    model = RegressionTransformer(ModelConfig(**meta["model"]))
    model.load_state_dict(load_file(folder / "model.safetensors"))
    return model.eval(), meta
