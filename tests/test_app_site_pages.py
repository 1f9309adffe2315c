"""The Head relevance and Head transfer pages through ``streamlit.testing.v1.AppTest`` on
tiny-llama, with a temporary user run store holding two tiny SITE fits."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from app_pages import (
    ROOT,
    TIMEOUT,
    figure_array,
    no_exception,
    open_page,
    private_stores,
    shown,
    wait_for_fits,
)
from app_pages import charts as page_charts
from streamlit.testing.v1 import AppTest

from workbench.methods.site import SiteConfig, SoftInjection
from workbench.scoring import METRICS
from workbench.store.codec import to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task

TINY = SiteConfig(steps=4, n_prompts=4, shots=2, eval_every=2, batch_size=8)
FITTED = ("antonym", "uppercase")


@pytest.fixture(scope="module")
def filled_store(tiny_llama, tmp_path_factory) -> Path:
    """A store with a tiny SITE run per task in FITTED (copied per test: some tests add runs)."""
    root = tmp_path_factory.mktemp("site_runs")
    store = RunStore(root)
    for name in FITTED:
        fit = SoftInjection.fit(tiny_llama, load_task(name), TINY)
        metrics = {name: {"test_first_token_acc": 0.25, "test_exact_match": 0.0, "n_test": 4}}
        store.save(to_run(fit, tiny_llama, load_task(name), metrics=metrics))
    return root


@pytest.fixture
def runs_dir(filled_store, tmp_path, monkeypatch) -> Path:
    return private_stores(monkeypatch, tmp_path, filled_store)


# ----------------------------------------------------------------------------- head relevance


def test_head_relevance_shows_alpha_map_of_fitted_task(runs_dir):
    at = open_page("head_relevance", task="uppercase")
    no_exception(at)
    assert not at.error
    assert at.selectbox(key="hr_task").value == "uppercase"
    charts = page_charts(at)
    heatmap = charts[0]["data"][0]
    assert heatmap["type"] == "heatmap" and figure_array(heatmap["z"]).shape == (
        3,
        4,
    )  # tiny-llama: 3 layers x 4 heads
    labels = [m.label for m in at.metric]
    assert labels[: len(METRICS)] == list(METRICS.values()) and "heads > 0.5" in labels
    assert at.metric[0].value == "25%"
    assert "user" in at.caption[0].value or any("user" in c.value for c in at.caption)
    assert {b.label for b in at.download_button} >= {"Chart (HTML)", "alpha (CSV)"}
    # the head across tasks: one bar per fitted task
    across = next(c for c in charts if "Layer" in c["layout"].get("title", {}).get("text", ""))
    assert sorted(across["data"][0]["x"]) == sorted(FITTED)
    assert at.query_params["task"] == "uppercase"
    assert {"layer", "head"} <= set(at.query_params)


def test_head_relevance_head_from_url_and_inputs(runs_dir):
    at = open_page("head_relevance", task="antonym", layer="2", head="1")
    no_exception(at)
    assert (at.number_input(key="hr_layer").value, at.number_input(key="hr_head").value) == (2, 1)
    at.number_input(key="hr_layer").set_value(0).run()
    no_exception(at)
    assert at.query_params["layer"] == "0"
    title = page_charts(at)[-1]["layout"]["title"]["text"]
    assert title.startswith("Layer 0, head 1")
    shape = page_charts(at)[0]["layout"]["shapes"][0]  # the selected head's outline
    assert (shape["x0"] + shape["x1"]) / 2 == 1 and (shape["y0"] + shape["y1"]) / 2 == 0


def test_head_relevance_fit_now(runs_dir):
    at = open_page("head_relevance", task="lowercase")
    no_exception(at)
    assert at.info and "No usable SITE run for **lowercase**" in shown(at.info[0].value)
    assert not at.get("plotly_chart")
    for key, value in {
        "hr_fit_steps": 3,
        "hr_fit_n_prompts": 3,
        "hr_fit_shots": 1,
        "hr_fit_batch_size": 8,
        "hr_fit_eval_every": 2,
        "hr_fit_eval_limit": 2,
    }.items():
        at.number_input(key=key).set_value(value)
    next(b for b in at.button if b.label == "Fit SITE now").click().run()
    no_exception(at)
    assert not at.error
    assert any("SITE on lowercase (tiny-llama)" in shown(m.value) for m in at.markdown)  # the job, live
    wait_for_fits(at)
    no_exception(at)
    runs = RunStore(runs_dir).list(method="SITE", task="lowercase")
    assert len(runs) == 1 and runs["metrics"][0]["lowercase"]["n_test"] == 2
    assert at.selectbox(key="hr_task").value == "lowercase"
    assert page_charts(at)[0]["data"][0]["type"] == "heatmap"  # the new run is shown
    assert not any(b.label == "Fit SITE now" for b in at.button)


@pytest.fixture
def empty_stores(tmp_path, monkeypatch) -> None:
    private_stores(monkeypatch, tmp_path)


def test_head_relevance_without_any_run(empty_stores):
    at = open_page("head_relevance")
    no_exception(at)
    assert at.info and "No usable SITE run" in at.info[0].value
    assert any(b.label == "Fit SITE now" for b in at.button)


# ----------------------------------------------------------------------------- transfer


def test_transfer_page_computes_two_by_two_matrix(runs_dir):
    at = open_page("transfer")
    no_exception(at)
    assert sorted(at.multiselect(key="tr_tasks").value) == sorted(FITTED)
    assert not at.get("plotly_chart")  # nothing computed yet
    at.number_input(key="tr_limit").set_value(2)
    next(b for b in at.button if b.label == "Compute transfer matrix").click().run()
    no_exception(at)
    assert not at.error
    stored = at.session_state["transfer_results"]
    matrix = stored["matrix"]
    assert len(matrix) == 4 and set(matrix["n"]) == {2}
    assert len(stored["per_query"]) == 8
    charts = page_charts(at)
    transfer = charts[0]["data"][0]
    assert transfer["type"] == "heatmap" and figure_array(transfer["z"]).shape == (2, 2)
    assert charts[1]["data"][0]["type"] == "heatmap"  # alpha similarity
    # the selected cell's queries, with its own alpha beside
    source, target = at.selectbox(key="tr_source").value, at.selectbox(key="tr_target").value
    table = at.dataframe[-1].value
    assert len(table) == 2 and "prediction" in " ".join(table.columns)
    if source != target:
        assert any(c.startswith("own alpha") for c in table.columns)
    at.radio(key="tr_value").set_value("exact_match").run()
    no_exception(at)
    assert at.query_params["value"] == "exact_match"
    at.selectbox(key="tr_source").set_value(target).run()  # a diagonal cell
    no_exception(at)
    assert len(at.dataframe[-1].value) == 2
    at.number_input(key="tr_limit").set_value(3).run()
    assert any("changed" in i.value for i in at.info)


def test_transfer_page_shows_bundled_matrix(runs_dir, tmp_path):
    rows = [
        {
            "model": "tiny-llama",
            "source": a,
            "target": b,
            "n": 2,
            "limit": 2,
            "first_token_acc": acc,
            "exact_match": acc / 2,
        }
        for (a, b), acc in {
            ("antonym", "antonym"): 0.5,
            ("antonym", "uppercase"): 0.0,
            ("uppercase", "antonym"): 0.25,
            ("uppercase", "uppercase"): 1.0,
        }.items()
    ]
    (tmp_path / "bundled").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "bundled" / "site_transfer.csv", index=False)
    at = open_page("transfer")
    no_exception(at)
    at.radio(key="tr_matrix").set_value("Bundled matrix").run()
    no_exception(at)
    assert "transfer_results" not in at.session_state  # nothing was computed
    transfer = page_charts(at)[0]["data"][0]
    assert transfer["type"] == "heatmap" and figure_array(transfer["z"]).shape == (2, 2)
    at.selectbox(key="tr_source").set_value("uppercase")
    at.selectbox(key="tr_target").set_value("antonym").run()
    assert [m.value for m in at.metric][-1] == "0.50"  # relative = 0.25 / 0.5
    button = next(b for b in at.button if b.label.startswith("Evaluate this cell"))
    button.click().run()  # the runs are in the store: the cell's queries can be evaluated
    no_exception(at)
    table = at.dataframe[-1].value
    assert len(table) == 2 and {"heads of uppercase: prediction", "own alpha: prediction"} <= set(
        table.columns
    )
    assert list(table.columns).index("heads of uppercase: prediction") < list(table.columns).index(
        "own alpha: prediction"
    )


def test_transfer_page_needs_two_runs(empty_stores):
    at = open_page("transfer")
    no_exception(at)
    assert at.info and "at least two tasks" in at.info[0].value


def test_entry_app_lists_the_site_pages(runs_dir):
    at = AppTest.from_file(ROOT / "app.py", default_timeout=TIMEOUT)
    at.query_params.update({"model": "tiny-llama"})
    at.run()
    at.switch_page("pages/head_relevance.py").run()
    no_exception(at)
    assert at.title[0].value == "Head relevance"
    at.switch_page("pages/transfer.py").run()
    no_exception(at)
    assert at.title[0].value == "Head transfer"
