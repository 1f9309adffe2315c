"""Error against the number of in-context examples, for the model and the baselines.

For each estimator and each k = 0, ..., n - 1 (examples before the query):

    error_k = (prediction_k - y_{k+1})^2 / d

over N held-out sequences, summarised as the mean and a normal-approximation 95%
confidence band, mean +- 1.96 std / sqrt(N). Every estimator reads the same sequences,
drawn from a seed kept apart from the training seeds. Dividing by d puts the error of
predicting 0 near 1 for linear and relu_net (Var(y) = d).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import pandas as pd
import torch

from workbench.regression.baselines import BASELINES, Estimator
from workbench.regression.families import Batch, FamilyConfig, generator, sample_batch
from workbench.regression.model import RegressionTransformer

Z_95 = 1.96
MODEL_NAME = "transformer"


@dataclass
class CurveConfig:
    n_sequences: int = 2560  # N held-out sequences per family
    batch_size: int = 256
    seed: int = 1_000_003  # held-out data: far from any training seed

    def as_dict(self) -> dict:
        return asdict(self)


def model_estimator(model: RegressionTransformer) -> Estimator:
    """The model as an estimator: no gradients, eval mode."""

    @torch.no_grad()
    def predict(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        model.eval()
        return model(xs, ys)  # (B, n)

    return predict


def held_out_batches(family: FamilyConfig, config: CurveConfig) -> list[Batch]:
    """The evaluation sequences, as batches of ``config.batch_size``."""
    gen = generator(config.seed)
    sizes = [config.batch_size] * (config.n_sequences // config.batch_size)
    if config.n_sequences % config.batch_size:
        sizes.append(config.n_sequences % config.batch_size)
    return [sample_batch(family, size, gen) for size in sizes]


def squared_errors(estimator: Estimator, batches: list[Batch]) -> torch.Tensor:
    """(N, n): (prediction - y)^2 / d for every sequence and every k."""
    errors = []
    for xs, ys in batches:
        errors.append((estimator(xs, ys) - ys).pow(2) / xs.shape[-1])  # (B, n)
    return torch.cat(errors)


def summarise(errors: torch.Tensor, family: str, estimator: str) -> pd.DataFrame:
    """One row per k: family, estimator, k, mean, lo, hi (95% band), n_sequences."""
    mean = errors.mean(0)  # (n,)
    half_width = Z_95 * errors.std(0) / errors.shape[0] ** 0.5  # (n,)
    return pd.DataFrame(
        {
            "family": family,
            "estimator": estimator,
            "k": range(errors.shape[1]),
            "mean": mean.tolist(),
            "lo": (mean - half_width).tolist(),
            "hi": (mean + half_width).tolist(),
            "n_sequences": errors.shape[0],
        }
    )


def error_curves(
    family: FamilyConfig,
    estimators: dict[str, Estimator],
    config: CurveConfig | None = None,
) -> pd.DataFrame:
    """Error-vs-k curves of every estimator on the same held-out sequences."""
    batches = held_out_batches(family, config or CurveConfig())
    frames = [summarise(squared_errors(fn, batches), family.family, name) for name, fn in estimators.items()]
    return pd.concat(frames, ignore_index=True)


def model_and_baselines(
    model: RegressionTransformer, family: FamilyConfig, config: CurveConfig | None = None
) -> pd.DataFrame:
    """The model's curve next to every baseline's (``baselines.BASELINES``)."""
    return error_curves(family, {MODEL_NAME: model_estimator(model), **BASELINES}, config)


def ratio_to(curves: pd.DataFrame, estimator: str, reference: str = "least_squares") -> pd.DataFrame:
    """Per family and k: both mean errors, their ratio and their gap (estimator - reference).

    Noise-free least squares is exact from k = d on (error ~1e-14, rounding only), so there
    the ratio is meaningless and the gap is the number to read.
    """
    wide = curves.pivot_table(index=["family", "k"], columns="estimator", values="mean")
    out = wide[[estimator, reference]].copy()
    out["ratio"] = out[estimator] / out[reference]
    out["gap"] = out[estimator] - out[reference]
    return out.reset_index()


def wide_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean error with k down the rows and one column per estimator (for printing)."""
    return curves.pivot_table(index=["family", "k"], columns="estimator", values="mean", sort=False)
