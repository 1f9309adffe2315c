"""The Function regression page (pages/regression.py) through ``streamlit.testing.v1.AppTest``,
on results written by the two regression scripts for a tiny model in a temporary folder;
the scripts run end to end on the way."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from app_pages import charts, figure_array, no_exception, open_page
from scripts import load_script

from workbench.regression import bundled
from workbench.regression import task_vectors as tv


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> tuple[Path, Path]:
    """results/regression and analyses/results in miniature: one tiny linear model (d = 2,
    trained on 5 points, taking up to 8), its metrics, its task-vector fits and tables."""
    root = tmp_path_factory.mktemp("regression")
    models, results = root / "models", root / "results"
    load_script("train_regression").main(
        ["--family", "linear", "--d", "2", "--points", "5", "--positions", "8",
         "--layers", "2", "--heads", "2", "--d-model", "16", "--steps", "20", "--warmup", "2",
         "--log-every", "10", "--checkpoint-every", "20",
         "--eval-sequences", "64", "--eval-noise", "0.5", "--out", str(models / "linear")]
    )  # fmt: skip
    load_script("bench_regression").main(
        ["--models", str(models), "--out", str(results), "--sequences", "32", "--ltv-steps", "3",
         "--curve-step", "3"]
    )  # fmt: skip
    return models, results


def test_scripts_write_what_the_page_reads(shipped):
    models, results = shipped
    assert bundled.families(models) == ["linear"]
    metrics = bundled.metrics("linear", models)
    within = metrics["within_20_percent_of_least_squares_at_k_at_least_2d"]
    assert within["0.0"] is None and isinstance(within["0.5"], bool)  # noise-free least squares is exact
    assert metrics["check_k_at_least_2d"]["0.0"]["max_gap"] > 0
    table = bundled.task_vector_table(results)
    assert set(table["shift"]) == {"none", "beyond", "noisy_y", "skewed_x", "orthogonal_query"}
    assert set(table[table["shift"] == "beyond"]["k"]) == {7}  # the model's longest prompt: 8 points
    assert {"LTV", "FV", "TV", tv.PLAIN, tv.TRUNCATED, "least_squares"} <= set(table["method"])
    curves = bundled.task_vector_curves(results)
    assert set(curves[curves["shift"] == "beyond"]["n_points"]) == {2, 5, 8}  # every 3rd, d, n_train, longest
    fits = bundled.fits("linear", models)
    assert fits.ltv.theta.shape == (2, 2) and fits.config.fit_points == (6, 8)
    report = (results / "regression_task_vectors.md").read_text()
    assert report.startswith("## linear") and "| LTV vs FV" in report
    json.loads((models / "linear" / "task_vectors.json").read_text())


def test_evaluate_only_rewrites_the_same_metrics(shipped, tmp_path):
    models, _ = shipped
    before = bundled.metrics("linear", models)
    for name in ("model.safetensors", "config.json"):
        (tmp_path / name).write_bytes((models / "linear" / name).read_bytes())
    load_script("train_regression").main(
        ["--out", str(tmp_path), "--evaluate-only", "--eval-sequences", "64", "--eval-noise", "0.5"]
    )
    after = json.loads((tmp_path / "metrics.json").read_text())
    assert after["curves"] == before["curves"] and after["step"] == before["step"] == 20


@pytest.fixture
def page(shipped, monkeypatch):
    models, results = shipped
    monkeypatch.setattr(bundled, "MODELS", models)
    monkeypatch.setattr(bundled, "RESULTS", results)

    return lambda **query: open_page("regression", **query)


def test_page_shows_the_curves_the_table_and_the_ltv_map(page, shipped):
    at = page()
    no_exception(at)
    figures = charts(at)
    assert len(figures) == 4  # training curves, task-vector curves, bars per shift, theta map
    names = {trace.get("name") for trace in figures[0]["data"]}
    assert {"transformer", "least_squares"} <= names
    tv_names = {trace.get("name") for trace in figures[1]["data"]}
    assert {"plain", "LTV", "FV", "TV", "least_squares"} <= tv_names
    theta = figure_array(figures[3]["data"][0]["z"])
    assert theta.shape == (2, 2)
    assert figures[3]["data"][0]["zmid"] == 0
    table = at.dataframe[0].value
    assert set(table["method"]) == {"plain", "LTV", "FV", "TV", "least_squares"} and set(table["k"]) == {7}


def test_page_follows_the_url_and_the_shift_widget(page):
    at = page(shift="orthogonal_query")
    no_exception(at)
    assert at.selectbox(key="reg_shift").value == "orthogonal_query"
    assert set(at.dataframe[0].value["k"]) == {1}  # k = d - 1
    at.selectbox(key="reg_shift").set_value("noisy_y").run()
    no_exception(at)
    assert at.query_params["shift"] == "noisy_y" and set(at.dataframe[0].value["k"]) == {7}
    at.multiselect(key="reg_rows").set_value(["LTV", "truncated"]).run()
    no_exception(at)
    assert {trace.get("name") for trace in charts(at)[1]["data"]} - {None} == {"LTV", "truncated"}


def test_page_without_results_says_how_to_make_them(monkeypatch, tmp_path):
    monkeypatch.setattr(bundled, "MODELS", tmp_path)
    at = open_page("regression")
    no_exception(at)
    assert "train_regression.py" in at.info[0].value


def test_per_family_runs_combine_into_the_files_the_page_reads(shipped, tmp_path):
    models, results = shipped
    bench = load_script("bench_regression")
    bench.main(["--models", str(models), "--out", str(tmp_path), "--family", "linear", "--reuse-fits",
                "--sequences", "32", "--curve-step", "3"])  # fmt: skip
    assert (tmp_path / "regression_task_vectors_linear.csv").exists()
    assert not (tmp_path / "regression_task_vectors.csv").exists()
    bench.main(["--out", str(tmp_path), "--combine"])
    combined = bundled.task_vector_table(tmp_path)
    pd.testing.assert_frame_equal(combined, bundled.task_vector_table(results))  # reused fits: same numbers
    assert (tmp_path / "regression_task_vectors.md").read_text().count("## linear") == 1


def test_task_vector_curves_open_on_a_log_scale_when_a_row_spans_orders_of_magnitude():
    """The bundled ReLU-net results: least squares peaks near k = d (about 1e3 x the rest),
    which flattens every other row on a linear axis, so the chart opens on a log scale."""
    at = open_page("regression", family="relu_net", shift="beyond")
    no_exception(at)
    assert at.toggle(key="reg_log_tv").value is True
    assert charts(at)[1]["layout"]["yaxis"]["type"] == "log"
    narrow = open_page("regression", family="relu_net", shift="beyond", rows="plain,LTV")  # within 10x
    no_exception(narrow)
    assert narrow.toggle(key="reg_log_tv").value is False
