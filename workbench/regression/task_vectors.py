"""Task vectors on the regression transformer: LTV, FV and TV in the LTV paper's setting,
written in the method core's vocabulary (docs/methods.md, "Function regression").

Setting. The model was trained on prompts of ``n_train`` points (the query included); a
longer prompt reaches positions it never saw. Every prompt of n points has a *source*:
the same function's query with the n_train - 1 examples just before it, a prompt of
training length that the model reads well:

    source = (xs[:, -m:], ys[:, -m:]),  m = min(n, n_train)         (B, m, d), (B, m)

One forward pass of the source gives, at its query (position -1), for every prompt b:

    a[b,l,h] = z[l,h]                 head outputs before W_O            (B, L, H, d_head)
    p[b,l,h] = a[b,l,h] @ W_O[l,h]    each head's write into the residual (B, L, H, d_model)
    r[b,l]   = resid_post[l]          the residual after block l          (B, L, d_model)

Each method edits only the query token of the long prompt (the vocabulary's "last token",
one value per prompt), so every earlier prediction is unchanged:

LTV   v[b,l] = sum_h theta[l,h] p[b,l,h], ADDED after every block l. theta (L, H) is fitted
      by Adam on the Huber error of the query's prediction, on prompts longer than the
      training length, model frozen (the shared fit loop, methods.training.fit_parameter).
FV    AIE[l,h] = mean over prompts of the drop in squared error at the query when a[b,l,h]
      is put into head (l,h) of the source prompt with its example ys shuffled (the context
      no longer shows the function; the query keeps its true y). fv[b] = sum over the top-k
      heads of p[b,l,h], ADDED after the chosen layers (the best of each single layer and
      the middle layers, on valid prompts).
TV    r[b,l] REPLACES the residual after block l (the best layer on valid prompts). The last
      block is left out: replacing there copies the source's prediction, which is the
      ``truncated`` reference below.

References without a vector: ``plain`` (the model on the whole long prompt) and
``truncated`` (the model on the source prompt alone).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import NamedTuple, Protocol

import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from workbench import atomic
from workbench.interventions import Edit, Intervention, Where, add_to_residual
from workbench.methods.ltv import layer_vectors
from workbench.methods.selection import top_heads, top_k_mask
from workbench.methods.training import Trace, fit_parameter
from workbench.model.heads import Hook
from workbench.regression.families import Batch, FamilyConfig, generator, sample_batch
from workbench.regression.model import LoadedRegressor

PLAIN, TRUNCATED = "plain", "truncated"
REGRESSION_METHODS = ("LTV", "FV", "TV")


@dataclass
class RegressionVectorConfig:
    n_train: int  # points per training prompt, query included (the model's training length)
    fit_points: tuple[int, int]  # LTV's fit prompts: lengths drawn uniformly from [lo, hi]
    seed: int = 0
    # LTV
    init_std: float = 0.01  # theta ~ N(0, init_std^2)
    steps: int = 300
    lr: float = 0.05  # Adam; cosine-decayed to lr / 10 by the fit loop
    batch_size: int = 128
    huber_delta: float = 1.0
    eval_every: int = 20
    patience: int = 6
    # FV
    top_k: int | None = None  # None: 36% of the heads (the reference: 35 of 96)
    n_effect_prompts: int = 512  # shuffled-y prompts averaged into AIE
    # FV and TV layer choice, LTV's best step
    n_valid: int = 512  # valid prompts, spread over the fit lengths

    def as_dict(self) -> dict:
        return asdict(self)


def default_config(model: LoadedRegressor, n_train: int, **overrides) -> RegressionVectorConfig:
    """Fit prompts from one point past the training length to the model's longest."""
    return RegressionVectorConfig(
        n_train=n_train, fit_points=(n_train + 1, model.cfg.n_positions), **overrides
    )


# ----------------------------------------------------------------------------- the source prompt


class Sources(NamedTuple):
    """What the methods read from each prompt's source, at its query."""

    z: torch.Tensor  # (B, L, H, d_head): a[b,l,h]
    resid: torch.Tensor  # (B, L, d_model): r[b,l]


def source_prompt(xs: torch.Tensor, ys: torch.Tensor, n_train: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The query with the n_train - 1 examples before it: (B, m, d), (B, m), m = min(n, n_train)."""
    return xs[:, -n_train:], ys[:, -n_train:]


@torch.no_grad()
def read_sources(model: LoadedRegressor, xs: torch.Tensor, ys: torch.Tensor, n_train: int) -> Sources:
    """a[b,l,h] and r[b,l] at the query of each prompt's source."""
    z_store: dict[int, torch.Tensor] = {}
    resid_store: dict[int, torch.Tensor] = {}
    hooks = [*model.heads.capture_z(z_store), *model.heads.capture_resid(resid_store)]
    model.predict(*source_prompt(xs, ys, n_train), hooks)
    layers = range(model.heads.shape.n_layers)
    z = torch.stack([z_store[layer] for layer in layers], dim=1)  # (B, L, H, d_head)
    resid = torch.stack([resid_store[layer] for layer in layers], dim=1)  # (B, L, d_model)
    return Sources(z, resid)


def query_prediction(model: LoadedRegressor, xs: torch.Tensor, ys: torch.Tensor, hooks=()) -> torch.Tensor:
    """The prediction at the query: (B,)."""
    return model.predict(xs, ys, hooks)[:, -1]


def query_error(model: LoadedRegressor, batch: Batch, hooks=()) -> torch.Tensor:
    """(prediction - y)^2 / d at the query of every prompt: (B,)."""
    xs, ys = batch
    return (query_prediction(model, xs, ys, hooks) - ys[:, -1].to(model.device)).pow(2) / xs.shape[-1]


# ----------------------------------------------------------------------------- the three methods


class FittedVector(Protocol):
    name: str

    def intervention(self, model: LoadedRegressor, sources: Sources) -> Intervention:
        """The edit of one batch of long prompts, from their sources."""


def ltv_intervention(model: LoadedRegressor, theta: torch.Tensor, sources: Sources) -> Intervention:
    """v[b,l] = sum_h theta[l,h] p[b,l,h] added after every block at the query."""
    projected = model.heads.project(sources.z)  # (B, L, H, d_model)
    vectors = layer_vectors(theta, projected)  # (B, L, d_model)
    return Intervention("LTV", (add_to_residual(vectors, per_query=True),))


def fv_intervention(
    model: LoadedRegressor, selected: torch.Tensor, layers: tuple[int, ...], sources: Sources
) -> Intervention:
    """fv[b] = sum over the selected heads of p[b,l,h], added after each of ``layers``."""
    projected = model.heads.project(sources.z)  # (B, L, H, d_model)
    fv = projected[:, selected].sum(1)  # (B, d_model): selected (L, H) bool
    vectors = fv[:, None].expand(-1, len(layers), -1)  # (B, n_layers, d_model)
    return Intervention("FV", (add_to_residual(vectors, layers, per_query=True),))


def tv_intervention(layer: int, sources: Sources) -> Intervention:
    """r[b,l] replaces the residual after block ``layer`` at the query."""
    value = sources.resid[:, layer : layer + 1]  # (B, 1, d_model)
    return Intervention("TV", (Edit(Where("resid", (layer,)), "replace", value, per_query=True),))


@dataclass(eq=False)
class LtvFit:
    theta: torch.Tensor  # (L, H) at the best valid check
    trace: Trace
    fit_seconds: float = 0.0
    name: str = "LTV"

    def intervention(self, model: LoadedRegressor, sources: Sources) -> Intervention:
        return ltv_intervention(model, self.theta.to(model.device), sources)


@dataclass(eq=False)
class FvFit:
    effects: torch.Tensor  # (L, H): AIE, the head map
    top_k: int
    layers: tuple[int, ...]  # where fv is added
    sweep: pd.DataFrame  # layers, valid_error: every candidate tried
    fit_seconds: float = 0.0
    name: str = "FV"

    @property
    def heads(self) -> list[tuple[int, int]]:
        return top_heads(self.effects, self.top_k)

    def intervention(self, model: LoadedRegressor, sources: Sources) -> Intervention:
        return fv_intervention(model, top_k_mask(self.effects, self.top_k), self.layers, sources)


@dataclass(eq=False)
class TvFit:
    layer: int
    sweep: pd.DataFrame  # layer, valid_error
    fit_seconds: float = 0.0
    name: str = "TV"

    def intervention(self, model: LoadedRegressor, sources: Sources) -> Intervention:
        return tv_intervention(self.layer, sources)


# ----------------------------------------------------------------------------- prompts for the fits


def long_batches(family: FamilyConfig, lengths: list[int], batch_size: int, seed: int) -> list[Batch]:
    """One batch of ``family`` per length (its n_points replaced), from one seeded generator."""
    gen = generator(seed)
    return [sample_batch(replace(family, n_points=n), batch_size, gen) for n in lengths]


def spread(lo: int, hi: int, count: int = 4) -> list[int]:
    """``count`` lengths spread evenly over [lo, hi]."""
    return sorted({round(lo + (hi - lo) * i / max(1, count - 1)) for i in range(count)})


def valid_batches(family: FamilyConfig, config: RegressionVectorConfig) -> list[Batch]:
    lengths = spread(*config.fit_points)
    return long_batches(family, lengths, config.n_valid // len(lengths), config.seed + 20_000)


def mean_error(
    model: LoadedRegressor, fitted: FittedVector | None, batches: list[Batch], n_train: int
) -> float:
    """Mean squared error / d at the query over ``batches``, with ``fitted``'s edit (None: plain)."""
    errors = []
    with torch.no_grad():
        for batch in batches:
            hooks = []
            if fitted is not None:
                hooks = fitted.intervention(model, read_sources(model, *batch, n_train)).hooks(model)
            errors.append(query_error(model, batch, hooks))
    return torch.cat(errors).mean().item()


# ----------------------------------------------------------------------------- LTV: fit theta


def fit_ltv(
    model: LoadedRegressor, family: FamilyConfig, config: RegressionVectorConfig, progress=None
) -> LtvFit:
    """theta (L, H) by the shared fit loop: Huber error of the query prediction on prompts of
    lengths drawn from ``config.fit_points``, a fresh batch every step; the best valid check
    (squared error / d on fixed long prompts) is kept."""
    t0 = time.perf_counter()
    shape = model.heads.shape
    gen = generator(config.seed + 10_000)  # the fit prompts
    theta = config.init_std * torch.randn(shape.n_layers, shape.n_heads, generator=generator(config.seed))
    theta = theta.to(model.device).requires_grad_(True)  # (L, H)
    valid = [(batch, read_sources(model, *batch, config.n_train)) for batch in valid_batches(family, config)]
    lo, hi = config.fit_points

    def hooks(sources: Sources) -> list[Hook]:
        return ltv_intervention(model, theta, sources).hooks(model)

    def train_loss() -> torch.Tensor:
        n = int(torch.randint(lo, hi + 1, (1,), generator=gen))
        xs, ys = sample_batch(replace(family, n_points=n), config.batch_size, gen)
        prediction = query_prediction(model, xs, ys, hooks(read_sources(model, xs, ys, config.n_train)))
        return F.huber_loss(prediction, ys[:, -1].to(model.device), delta=config.huber_delta)

    def valid_loss() -> float:
        errors = [query_error(model, batch, hooks(sources)) for batch, sources in valid]
        return torch.cat(errors).mean().item()

    best, trace = fit_parameter(
        theta,
        train_loss,
        valid_loss,
        steps=config.steps,
        lr=config.lr,
        eval_every=config.eval_every,
        patience=config.patience,
        progress=progress,
    )
    return LtvFit(best.cpu(), trace, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- FV: indirect effects


def shuffle_examples(ys: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The example ys permuted within each prompt; the query's y stays: (B, n)."""
    batch, n = ys.shape
    order = torch.rand(batch, n - 1, generator=gen).argsort(dim=-1)  # (B, n - 1)
    return torch.cat([ys[:, :-1].gather(1, order), ys[:, -1:]], dim=1)


@torch.no_grad()
def indirect_effects(
    model: LoadedRegressor, batch: Batch, n_train: int, gen: torch.Generator
) -> torch.Tensor:
    """AIE[l,h]: the mean drop in squared error / d at the query of the shuffled source prompt
    when a[b,l,h] (from the clean source) is put into head (l, h): (L, H)."""
    xs, ys = source_prompt(*batch, n_train)
    clean = read_sources(model, xs, ys, n_train)
    shuffled = Batch(xs, shuffle_examples(ys, gen))
    unpatched = query_error(model, shuffled)  # (B,)
    shape = model.heads.shape
    effects = torch.zeros(shape.n_layers, shape.n_heads)
    for layer in range(shape.n_layers):
        for head in range(shape.n_heads):
            value = clean.z[:, layer : layer + 1, head : head + 1]  # (B, 1, 1, d_head)
            patch = Edit(Where("head", (layer,), (head,)), "replace", value, per_query=True)
            effects[layer, head] = (
                unpatched - query_error(model, shuffled, patch.hooks(model, "prompt"))
            ).mean()
    return effects


def fv_layer_candidates(n_layers: int) -> list[tuple[int, ...]]:
    """Every single layer, and the middle layers (about a quarter of them on each side of L/2)."""
    middle = tuple(range(max(0, n_layers // 4), max(1, n_layers - n_layers // 4)))
    candidates = [(layer,) for layer in range(n_layers)]
    return candidates + ([middle] if middle not in candidates else [])


def fit_fv(model: LoadedRegressor, family: FamilyConfig, config: RegressionVectorConfig) -> FvFit:
    t0 = time.perf_counter()
    shape = model.heads.shape
    effect_prompts = sample_batch(
        replace(family, n_points=config.n_train), config.n_effect_prompts, generator(config.seed + 30_000)
    )
    effects = indirect_effects(model, effect_prompts, config.n_train, generator(config.seed + 30_001))
    top_k = config.top_k or max(1, round(0.36 * shape.n_layers * shape.n_heads))
    valid = valid_batches(family, config)
    rows = []
    for layers in fv_layer_candidates(shape.n_layers):
        candidate = FvFit(effects, top_k, layers, pd.DataFrame())
        rows.append({"layers": layers, "valid_error": mean_error(model, candidate, valid, config.n_train)})
    sweep = pd.DataFrame(rows)
    layers = tuple(sweep.loc[sweep["valid_error"].idxmin(), "layers"])
    return FvFit(effects, top_k, layers, sweep, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- TV: the layer


def fit_tv(model: LoadedRegressor, family: FamilyConfig, config: RegressionVectorConfig) -> TvFit:
    t0 = time.perf_counter()
    valid = valid_batches(family, config)
    rows = [
        {
            "layer": layer,
            "valid_error": mean_error(model, TvFit(layer, pd.DataFrame()), valid, config.n_train),
        }
        for layer in range(model.heads.shape.n_layers - 1)  # after the last block: the truncated prompt
    ]
    sweep = pd.DataFrame(rows)
    return TvFit(int(sweep.loc[sweep["valid_error"].idxmin(), "layer"]), sweep, time.perf_counter() - t0)


# ----------------------------------------------------------------------------- all three


@dataclass
class Fits:
    config: RegressionVectorConfig
    ltv: LtvFit
    fv: FvFit
    tv: TvFit
    seconds: dict = field(default_factory=dict)

    def methods(self) -> list[FittedVector]:
        return [self.ltv, self.fv, self.tv]


FITS_STEM = "task_vectors"  # <folder>/task_vectors.safetensors (theta, AIE) + .json (the rest)


def save_fits(folder: str | Path, fits: Fits) -> None:
    """theta and AIE as safetensors, the rest as JSON; each written atomically, JSON last."""
    folder = Path(folder)
    tensors = {"ltv.theta": fits.ltv.theta.contiguous(), "fv.effects": fits.fv.effects.contiguous()}
    atomic.write_bytes(folder / f"{FITS_STEM}.safetensors", save(tensors))
    record = {
        "config": fits.config.as_dict(),
        "seconds": fits.seconds,
        "ltv": fits.ltv.trace.record(),
        "fv": {
            "top_k": fits.fv.top_k,
            "layers": list(fits.fv.layers),
            "heads": fits.fv.heads,
            "sweep": fits.fv.sweep.assign(layers=fits.fv.sweep["layers"].map(list)).to_dict(orient="list"),
        },
        "tv": {"layer": fits.tv.layer, "sweep": fits.tv.sweep.to_dict(orient="list")},
    }
    atomic.write_text(folder / f"{FITS_STEM}.json", json.dumps(record, indent=1))


def load_fits(folder: str | Path) -> Fits:
    """The fits :func:`save_fits` wrote to ``folder``."""
    folder = Path(folder)
    tensors = load((folder / f"{FITS_STEM}.safetensors").read_bytes())
    record = json.loads((folder / f"{FITS_STEM}.json").read_text())
    config = record["config"]
    config = RegressionVectorConfig(**{**config, "fit_points": tuple(config["fit_points"])})
    seconds = record["seconds"]
    fv_sweep = pd.DataFrame(record["fv"]["sweep"])
    fv_sweep["layers"] = fv_sweep["layers"].map(tuple)
    return Fits(
        config,
        LtvFit(tensors["ltv.theta"], Trace.from_record(record["ltv"]), seconds["LTV"]),
        FvFit(
            tensors["fv.effects"],
            record["fv"]["top_k"],
            tuple(record["fv"]["layers"]),
            fv_sweep,
            seconds["FV"],
        ),
        TvFit(record["tv"]["layer"], pd.DataFrame(record["tv"]["sweep"]), seconds["TV"]),
        seconds,
    )


def fit_all(
    model: LoadedRegressor, family: FamilyConfig, config: RegressionVectorConfig, progress=None
) -> Fits:
    """LTV, FV and TV on the base family (noise-free, isotropic x), each timed."""
    ltv = fit_ltv(model, family, config, progress)
    fv = fit_fv(model, family, config)
    tv = fit_tv(model, family, config)
    seconds = {"LTV": ltv.fit_seconds, "FV": fv.fit_seconds, "TV": tv.fit_seconds}
    return Fits(config, ltv, fv, tv, seconds)


# ----------------------------------------------------------------------------- evaluation


@torch.no_grad()
def query_errors(
    model: LoadedRegressor, batches: list[Batch], fits: Fits | None, n_train: int
) -> dict[str, torch.Tensor]:
    """Squared error / d at the query of every prompt, (N,) per row: plain, truncated and,
    with ``fits``, each method."""
    out: dict[str, list[torch.Tensor]] = {PLAIN: [], TRUNCATED: []}
    for batch in batches:
        out[PLAIN].append(query_error(model, batch))
        out[TRUNCATED].append(query_error(model, Batch(*source_prompt(*batch, n_train))))
        if fits is None:
            continue
        sources = read_sources(model, *batch, n_train)
        for method in fits.methods():
            out.setdefault(method.name, []).append(
                query_error(model, batch, method.intervention(model, sources).hooks(model))
            )
    return {name: torch.cat(errors).cpu() for name, errors in out.items()}
