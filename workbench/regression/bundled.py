"""The regression results shipped with the project, so the app and tests need not train.

results/regression/<family>/   model.safetensors + config.json  the trained model (train_regression.py)
                               metrics.json                     its error-vs-k curves next to the baselines
                               task_vectors.safetensors + .json LTV / FV / TV fits (bench_regression.py)
analyses/results/              regression_task_vectors.csv      every row at one length per shift
                               regression_curves.csv            every row against the prompt length
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from workbench.regression.families import FAMILIES
from workbench.regression.model import LoadedRegressor
from workbench.regression.task_vectors import FITS_STEM, Fits, load_fits
from workbench.regression.training import load_model

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "results" / "regression"
RESULTS = ROOT / "analyses" / "results"
TABLE, CURVES = "regression_task_vectors.csv", "regression_curves.csv"


def families(folder: Path | None = None) -> list[str]:
    """The families with a trained model in ``folder``, in :data:`FAMILIES` order."""
    folder = folder or MODELS
    return [name for name in FAMILIES if (folder / name / "model.safetensors").exists()]


def model(family: str, folder: Path | None = None) -> tuple[LoadedRegressor, dict]:
    """The trained model of ``family`` (frozen) and its config.json."""
    module, meta = load_model((folder or MODELS) / family)
    return LoadedRegressor(module), meta


def config(family: str, folder: Path | None = None) -> dict:
    """config.json: the model, family and training configs, the loss history, the time."""
    return json.loads(((folder or MODELS) / family / "config.json").read_text())


def training_curves(family: str, folder: Path | None = None) -> pd.DataFrame:
    """metrics.json's curves: family, estimator, k, mean, lo, hi, n_sequences, noise_std."""
    return pd.DataFrame(metrics(family, folder)["curves"])


def metrics(family: str, folder: Path | None = None) -> dict:
    """metrics.json as train_regression.py wrote it."""
    return json.loads(((folder or MODELS) / family / "metrics.json").read_text())


def has_fits(family: str, folder: Path | None = None) -> bool:
    return ((folder or MODELS) / family / f"{FITS_STEM}.json").exists()


def fits(family: str, folder: Path | None = None) -> Fits:
    return load_fits((folder or MODELS) / family)


def task_vector_table(folder: Path | None = None) -> pd.DataFrame:
    """family, shift, n_points, k, method, mean, lo, hi, n_sequences, vs_plain, vs_least_squares,
    minus_least_squares."""
    return pd.read_csv((folder or RESULTS) / TABLE)


def task_vector_curves(folder: Path | None = None) -> pd.DataFrame:
    """The same columns as :func:`task_vector_table`, at every measured length."""
    return pd.read_csv((folder or RESULTS) / CURVES)
