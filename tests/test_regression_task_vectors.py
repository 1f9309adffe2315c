"""Task vectors on the regression transformer (workbench/regression/task_vectors.py): the
source prompt, each method's edit, the fits on a tiny random model."""

import pandas as pd
import pytest
import torch

from workbench.regression import task_vectors as tv
from workbench.regression.families import Batch, FamilyConfig, generator, sample_batch
from workbench.regression.model import LoadedRegressor, ModelConfig, RegressionTransformer

CONFIG = ModelConfig(n_dims=3, n_positions=10, n_layers=2, n_heads=2, d_model=16)
N_TRAIN = 6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> LoadedRegressor:
    torch.manual_seed(0)
    return LoadedRegressor(RegressionTransformer(CONFIG))


def _long(n: int = 9, batch: int = 8, seed: int = 0) -> Batch:
    return sample_batch(FamilyConfig(n_dims=3, n_points=n), batch, generator(seed))


def _settings(**overrides) -> tv.RegressionVectorConfig:
    values = {"steps": 6, "batch_size": 16, "eval_every": 3, "n_valid": 32, "n_effect_prompts": 16}
    return tv.RegressionVectorConfig(n_train=N_TRAIN, fit_points=(N_TRAIN + 1, 10), **{**values, **overrides})


def test_source_is_the_query_with_the_last_training_length_examples():
    xs, ys = _long(n=9)
    sx, sy = tv.source_prompt(xs, ys, N_TRAIN)
    assert (
        sx.shape == (8, N_TRAIN, 3)
        and torch.equal(sx[:, -1], xs[:, -1])
        and torch.equal(sy, ys[:, -N_TRAIN:])
    )
    short = _long(n=4)
    assert torch.equal(tv.source_prompt(*short, N_TRAIN)[0], short.xs)  # shorter prompts are their own source


def test_sources_are_the_source_prompts_heads_and_residual(model):
    batch = _long()
    sources = tv.read_sources(model, *batch, N_TRAIN)
    assert sources.z.shape == (8, 2, 2, 8) and sources.resid.shape == (8, 2, 16)
    store = {}
    model.predict(*tv.source_prompt(*batch, N_TRAIN), model.heads.capture_resid(store))
    assert torch.equal(sources.resid[:, 1], store[1])


def test_ltv_with_zero_weights_leaves_predictions_unchanged(model):
    batch = _long()
    plain = model.predict(*batch)
    fit = tv.LtvFit(torch.zeros(2, 2), trace=None)
    edited = model.predict(
        *batch, fit.intervention(model, tv.read_sources(model, *batch, N_TRAIN)).hooks(model)
    )
    assert torch.equal(edited, plain)


@pytest.mark.parametrize("method", ["LTV", "FV", "TV"])
def test_each_method_changes_only_the_query_prediction(model, method):
    batch = _long()
    sources = tv.read_sources(model, *batch, N_TRAIN)
    fitted = {
        "LTV": tv.LtvFit(torch.ones(2, 2), trace=None),
        "FV": tv.FvFit(torch.randn(2, 2), top_k=2, layers=(0, 1), sweep=None),
        "TV": tv.TvFit(layer=0, sweep=None),
    }[method]
    plain = model.predict(*batch)
    edited = model.predict(*batch, fitted.intervention(model, sources).hooks(model))
    assert torch.equal(edited[:, :-1], plain[:, :-1])
    assert not torch.allclose(edited[:, -1], plain[:, -1], atol=1e-4)


def test_ltv_vector_is_the_weighted_sum_of_projected_head_outputs(model):
    batch = _long()
    sources = tv.read_sources(model, *batch, N_TRAIN)
    theta = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # head (0, 0) alone, after layer 0
    edit = tv.ltv_intervention(model, theta, sources).edits[0]
    expected = sources.z[:, 0, 0] @ model.heads.W_O[0, 0]  # (B, d_model)
    assert torch.allclose(edit.value[:, 0], expected, atol=1e-6) and (edit.value[:, 1] == 0).all()


def test_tv_at_the_last_block_copies_the_source_prediction(model):
    batch = _long()
    sources = tv.read_sources(model, *batch, N_TRAIN)
    last = model.heads.shape.n_layers - 1
    copied = tv.query_prediction(model, *batch, tv.tv_intervention(last, sources).hooks(model))
    assert torch.allclose(copied, tv.query_prediction(model, *tv.source_prompt(*batch, N_TRAIN)), atol=1e-5)


def test_shuffled_examples_keep_the_query_and_the_multiset():
    ys = torch.arange(24.0).reshape(3, 8)
    shuffled = tv.shuffle_examples(ys, generator(0))
    assert torch.equal(shuffled[:, -1], ys[:, -1])
    assert torch.equal(shuffled[:, :-1].sort(dim=-1).values, ys[:, :-1])
    assert not torch.equal(shuffled, ys)


def test_fits_run_and_are_consistent(model, tmp_path):
    family = FamilyConfig(n_dims=3, n_points=N_TRAIN)
    config = _settings()
    fits = tv.fit_all(model, family, config)
    assert fits.ltv.theta.shape == (2, 2) and fits.ltv.trace.best_step in range(7)
    assert fits.fv.effects.shape == (2, 2) and fits.fv.top_k == 1  # 36% of 4 heads
    assert fits.fv.layers in tv.fv_layer_candidates(2) and len(fits.fv.sweep) == len(
        tv.fv_layer_candidates(2)
    )
    assert fits.tv.layer == 0 and list(fits.tv.sweep["layer"]) == [0]  # the last block is left out
    valid = tv.valid_batches(family, config)
    best = fits.ltv.trace.best_valid_loss
    assert tv.mean_error(model, fits.ltv, valid, N_TRAIN) == pytest.approx(best, rel=1e-5)
    errors = tv.query_errors(model, [_long()], fits, N_TRAIN)
    assert set(errors) == {tv.PLAIN, tv.TRUNCATED, "LTV", "FV", "TV"} and all(
        e.shape == (8,) for e in errors.values()
    )
    tv.save_fits(tmp_path, fits)
    loaded = tv.load_fits(tmp_path)
    assert torch.equal(loaded.ltv.theta, fits.ltv.theta) and torch.equal(loaded.fv.effects, fits.fv.effects)
    assert (loaded.fv.layers, loaded.fv.top_k, loaded.tv.layer) == (
        fits.fv.layers,
        fits.fv.top_k,
        fits.tv.layer,
    )
    assert loaded.config == fits.config and loaded.ltv.trace.best_step == fits.ltv.trace.best_step
    again = tv.query_errors(model, [_long()], loaded, N_TRAIN)
    assert all(torch.equal(again[name], errors[name]) for name in errors)


# ----------------------------------------------------------------------------- the benchmark grid


def test_shift_table_and_curves(model):
    from workbench.regression import benchmark

    family = FamilyConfig(n_dims=3, n_points=N_TRAIN)
    fits = tv.fit_all(model, family, _settings(steps=2))
    config = benchmark.BenchConfig(n_train=N_TRAIN, beyond_points=9, n_sequences=40, batch_size=16)
    table = benchmark.shift_table(model, fits, family, config)
    assert set(table["shift"]) == set(benchmark.SHIFTS)
    pairs = {benchmark.paired("LTV", other) for other in benchmark.PAIRED_WITH_LTV}
    rows = {tv.PLAIN, tv.TRUNCATED, "LTV", "FV", "TV", *benchmark.BASELINES, *pairs}
    assert all(set(group["method"]) == rows for _, group in table.groupby("shift"))
    k = table.groupby("shift")["k"].first()
    assert (k["none"], k["beyond"], k["noisy_y"], k["orthogonal_query"]) == (N_TRAIN - 1, 8, 8, 2)
    assert (table["n_sequences"] == 40).all() and (table["lo"] <= table["mean"]).all()
    plain = table[table["method"] == tv.PLAIN]
    assert (plain["vs_plain"] == 1).all()
    by = table[table["shift"] == "skewed_x"].set_index("method")["mean"]
    assert by["LTV - TV"] == pytest.approx(by["LTV"] - by["TV"], abs=1e-6)  # a mean of differences
    beyond = table[table["shift"] == "beyond"].set_index("method")["mean"]
    assert beyond["least_squares"] < 1e-6  # noise-free, k = 8 > d
    noisy = table[table["shift"] == "noisy_y"].set_index("method")["mean"]
    assert noisy["least_squares"] > 0.01
    curves = benchmark.length_curves(model, fits, family, config, [2, 3, 9])
    assert set(curves[curves["shift"] == "orthogonal_query"]["n_points"]) == {2, 3}
    assert set(curves[curves["shift"] == "beyond"]["n_points"]) == {2, 3, 9}
    # the longest curve point is the table's beyond row: the same prompts, baselines from prefixes
    longest = curves[(curves["shift"] == "beyond") & (curves["n_points"] == 9)].set_index("method")["mean"]
    pd.testing.assert_series_equal(longest, beyond.loc[longest.index], rtol=1e-5)
