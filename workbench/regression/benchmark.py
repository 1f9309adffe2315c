"""The task-vector benchmark on function regression: each method next to the plain model
and the classical baselines, at one prompt length per shift, and against the prompt length.

Rows ("methods"): ``plain`` (the model on the whole prompt), ``truncated`` (the model on
the source prompt: the query and the n_train - 1 examples before it), LTV, FV, TV
(:mod:`workbench.regression.task_vectors`), and every estimator of
:data:`workbench.regression.baselines.BASELINES` on the whole prompt.

Shifts: test-time conditions. The vectors are fitted once, on the base family (noise-free
y, x ~ N(0, I)), at lengths beyond training; each shift then changes the prompts:

    none               the base family at the training length (k = n_train - 1 examples)
    beyond             the base family at a length beyond training
    noisy_y            y + N(0, sigma^2), beyond training
    skewed_x           x ~ N(0, Sigma), the fixed skewed covariance, beyond training
    orthogonal_query   the query orthogonal to every example: defined for k < d only, so it
                       is measured at k = d - 1, inside the training length

The metric is the squared error / d of the query's prediction over N held-out prompts
(mean and a normal 95% band, mean +- 1.96 std / sqrt(N)). ``vs_plain`` and
``vs_least_squares`` divide a row's mean by those rows' means on the same prompts, and
``minus_least_squares`` is the gap (noise-free least squares is exact once k >= d, error
~1e-14, where only the gap means something). The rows "LTV - FV", "LTV - TV" and
"LTV - truncated" hold per-prompt differences: their band says whether a gap is real.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import pandas as pd
import torch

from workbench.regression.baselines import BASELINES
from workbench.regression.families import Batch, FamilyConfig, generator, sample_batch
from workbench.regression.model import LoadedRegressor
from workbench.regression.task_vectors import PLAIN, TRUNCATED, Fits, query_errors

Z_95 = 1.96
LEAST_SQUARES = "least_squares"
RELATIVE = ["vs_plain", "vs_least_squares", "minus_least_squares"]
PAIRED_WITH_LTV = ("FV", "TV", TRUNCATED)
EXACT = 1e-6  # a least-squares error below this is exact up to rounding: ratios to it mean nothing


@dataclass(frozen=True)
class Shift:
    name: str
    label: str
    length: str  # "train" (k = n_train - 1), "beyond", or "below_d" (k = d - 1)
    noise: bool = False  # y + N(0, sigma^2)
    skewed: bool = False
    orthogonal_query: bool = False


SHIFTS: dict[str, Shift] = {
    shift.name: shift
    for shift in (
        Shift("none", "training length", "train"),
        Shift("beyond", "beyond the training length", "beyond"),
        Shift("noisy_y", "noisy y, beyond training", "beyond", noise=True),
        Shift("skewed_x", "skewed covariance of x, beyond training", "beyond", skewed=True),
        Shift("orthogonal_query", "orthogonal query (k = d - 1)", "below_d", orthogonal_query=True),
    )
}


@dataclass
class BenchConfig:
    n_train: int  # the model's training length (points, query included)
    beyond_points: int  # the length beyond training that the table reports (points, query included)
    noise_std: float = 0.5  # noisy_y's sigma
    n_sequences: int = 2048  # held-out prompts per (shift, length)
    batch_size: int = 512
    seed: int = 2_000_003  # held-out prompts: apart from training, fits and the curves of curves.py

    def as_dict(self) -> dict:
        return asdict(self)


def shift_points(shift: Shift, config: BenchConfig, n_dims: int) -> int:
    """Points per prompt (query included) at which a shift is measured."""
    return {"train": config.n_train, "beyond": config.beyond_points, "below_d": n_dims}[shift.length]


def shifted_family(base: FamilyConfig, shift: Shift, n_points: int, noise_std: float) -> FamilyConfig:
    """``base`` under ``shift``, with ``n_points`` points per prompt."""
    return replace(
        base,
        n_points=n_points,
        noise_std=noise_std if shift.noise else base.noise_std,
        skewed=shift.skewed or base.skewed,
        orthogonal_query=shift.orthogonal_query,
        active_dims=None,
    )


def held_out(family: FamilyConfig, config: BenchConfig) -> list[Batch]:
    """N prompts of ``family``; the seed depends on the length, so each length has its own."""
    gen = generator(config.seed + 1009 * family.n_points)
    sizes = [config.batch_size] * (config.n_sequences // config.batch_size)
    sizes += [config.n_sequences % config.batch_size] if config.n_sequences % config.batch_size else []
    return [sample_batch(family, size, gen) for size in sizes]


# ----------------------------------------------------------------------------- one length


@torch.no_grad()
def errors_at(
    model: LoadedRegressor,
    fits: Fits | None,
    batches: list[Batch],
    n_train: int,
    baselines: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Squared error / d at the query of ``batches``, (N,) per row: the model's rows and every
    baseline. ``baselines``: their predictions (N,) at these queries, if already known."""
    errors = query_errors(model, batches, fits, n_train)
    ys = torch.cat([batch.ys[:, -1] for batch in batches])  # (N,)
    d = batches[0].xs.shape[-1]
    baselines = baselines or {
        name: torch.cat([estimator(*batch)[:, -1] for batch in batches])
        for name, estimator in BASELINES.items()
    }
    for name, predictions in baselines.items():
        errors[name] = (predictions - ys).pow(2) / d
    if fits is not None:  # per-prompt differences: their band says whether LTV's lead is real
        for other in PAIRED_WITH_LTV:
            errors[paired("LTV", other)] = errors["LTV"] - errors[other]
    return errors


def paired(method: str, other: str) -> str:
    """The row of the per-prompt difference ``method`` - ``other`` (same prompts)."""
    return f"{method} - {other}"


def summarise(errors: dict[str, torch.Tensor]) -> pd.DataFrame:
    """One row per method: mean, 95% band, and the mean relative to plain and to least squares."""
    rows = []
    for name, values in errors.items():
        mean = values.mean().item()
        half = Z_95 * values.std().item() / len(values) ** 0.5
        rows.append(
            {"method": name, "mean": mean, "lo": mean - half, "hi": mean + half, "n_sequences": len(values)}
        )
    frame = pd.DataFrame(rows)
    means = frame.set_index("method")["mean"]
    frame["vs_plain"] = frame["mean"] / means[PLAIN]
    frame["vs_least_squares"] = frame["mean"] / means[LEAST_SQUARES]
    frame["minus_least_squares"] = frame["mean"] - means[LEAST_SQUARES]
    return frame


def shift_table(
    model: LoadedRegressor, fits: Fits | None, base: FamilyConfig, config: BenchConfig, shifts=None
) -> pd.DataFrame:
    """family, shift, n_points, k, method, mean, lo, hi, n_sequences, and :data:`RELATIVE`."""
    frames = []
    for shift in shifts or SHIFTS.values():
        n_points = shift_points(shift, config, base.n_dims)
        family = shifted_family(base, shift, n_points, config.noise_std)
        errors = errors_at(model, fits, held_out(family, config), config.n_train)
        frames.append(_at_length(errors, base, shift, n_points))
    columns = ["family", "shift", "n_points", "k", "method", "mean", "lo", "hi", "n_sequences"]
    return pd.concat(frames, ignore_index=True)[[*columns, *RELATIVE]]


# ----------------------------------------------------------------------------- against the length


def length_curves(
    model: LoadedRegressor,
    fits: Fits | None,
    base: FamilyConfig,
    config: BenchConfig,
    lengths: list[int],
    shifts=None,
) -> pd.DataFrame:
    """The same rows at every prompt length in ``lengths`` (points, query included), per shift.

    The prompts of length n are the first n points of N prompts of the longest length, so the
    baselines (whose prediction k reads only the first k examples) are solved once per shift.
    orthogonal_query is measured where it is defined (points <= d), on prompts of each length
    (its query is the last point, which a prefix does not keep)."""
    frames = []
    for shift in shifts or SHIFTS.values():
        if shift.orthogonal_query:
            for n_points in [n for n in lengths if n <= base.n_dims]:
                batches = held_out(shifted_family(base, shift, n_points, config.noise_std), config)
                frames.append(
                    _at_length(errors_at(model, fits, batches, config.n_train), base, shift, n_points)
                )
            continue
        longest = held_out(shifted_family(base, shift, max(lengths), config.noise_std), config)
        every_prefix = {  # (N, n_max): prediction k of every baseline
            name: torch.cat([estimator(*batch) for batch in longest]) for name, estimator in BASELINES.items()
        }
        for n_points in lengths:
            batches = [Batch(xs[:, :n_points], ys[:, :n_points]) for xs, ys in longest]
            baselines = {name: predictions[:, n_points - 1] for name, predictions in every_prefix.items()}
            errors = errors_at(model, fits, batches, config.n_train, baselines)
            frames.append(_at_length(errors, base, shift, n_points))
    columns = ["family", "shift", "n_points", "k", "method", "mean", "lo", "hi", "n_sequences"]
    return pd.concat(frames, ignore_index=True)[[*columns, *RELATIVE]]


def _at_length(
    errors: dict[str, torch.Tensor], base: FamilyConfig, shift: Shift, n_points: int
) -> pd.DataFrame:
    return summarise(errors).assign(family=base.family, shift=shift.name, n_points=n_points, k=n_points - 1)
