"""The Compare methods page, the methods' maps on the Head relevance page and transfer from
FV / LTV heads on the Head transfer page, through ``streamlit.testing.v1.AppTest`` on
tiny-llama with a temporary user run store holding tiny fits of every method."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from app_pages import charts, no_exception, open_page, private_stores
from streamlit.testing.v1 import AppTest

import workbench.experiments.comparison
from workbench.methods import METHODS
from workbench.store.codec import to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task


@pytest.fixture(scope="module")
def every_method_store(tiny_llama, tmp_path_factory) -> Path:
    """antonym: a run of every method; uppercase: SITE and FV only."""
    root = tmp_path_factory.mktemp("method_runs")
    store = RunStore(root)
    for task, methods in (("antonym", list(METHODS)), ("uppercase", ["SITE", "FV"])):
        for name in methods:
            fit = METHODS[name].fit(
                tiny_llama, load_task(task), METHODS[name].Config(**METHODS[name].tiny_settings)
            )
            store.save(to_run(fit, tiny_llama, load_task(task)))
    return root


@pytest.fixture
def stores(every_method_store, tmp_path, monkeypatch) -> Path:
    private_stores(monkeypatch, tmp_path, every_method_store)
    monkeypatch.setattr(workbench.experiments.comparison, "RESULTS", tmp_path / "results")
    (tmp_path / "results").mkdir()
    return tmp_path


def _ok(at: AppTest) -> None:
    no_exception(at)
    assert not at.error, [e.value for e in at.error]


# ----------------------------------------------------------------------------- compare


def test_compare_page_shows_a_saved_benchmark_per_task_and_the_mean(stores):
    rows = [
        {
            "task": task,
            "method": method,
            "first": acc,
            "exact": acc / 2,
            "s_per_query": 0.01,
            "tokens": 90 if "ICL" in method else 9,
            "fit_s": 1.0,
        }
        for task in ("antonym", "uppercase")
        for method, acc in (("zero-shot", 0.0), ("10-shot ICL", 0.5), ("FV", 0.25), ("SITE", 0.75))
    ]
    pd.DataFrame(rows).to_csv(stores / "results" / "methods_tiny-llama_qa.csv", index=False)
    at = open_page("compare")
    _ok(at)
    assert at.radio(key="cmp_source").value == "Saved benchmark"
    bars = [trace for trace in charts(at)[0]["data"] if trace["type"] == "bar"]
    assert len(bars) == 4 and bars[0]["x"] == ["zero-shot", "10-shot ICL", "FV", "SITE"]
    # an older CSV's "first" is read as first_token_acc; the mean of two equal tasks
    assert at.dataframe[0].value["first_token_acc"].tolist() == [0.0, 0.5, 0.25, 0.75]
    at.selectbox(key="cmp_task").set_value("uppercase").run()
    _ok(at)
    assert at.query_params["task"] == "uppercase" and len(at.dataframe[0].value) == 4


def test_compare_page_computes_all_methods_from_stored_fits(stores):
    at = open_page("compare", source="Compute here", task="antonym")
    _ok(at)
    assert not at.info  # every method has a fit for antonym
    at.number_input(key="cmp_limit").set_value(2)
    methods = ["zero-shot", "10-shot ICL", *METHODS]  # every registered method has a fit
    next(b for b in at.button if b.label.startswith(f"Compare {len(methods)} methods")).click().run()
    _ok(at)
    table = at.session_state["compare_results"]["table"]
    assert list(table["method"]) == methods
    assert (table["n"] == 2).all() and table["fit_s"].iloc[2:].notna().all()
    assert len(at.session_state["compare_results"]["per_query"]) == 2 * len(methods)


def test_compare_page_fits_the_missing_methods(stores):
    at = open_page("compare", source="Compute here", task="uppercase")
    _ok(at)
    assert at.info and "TV, LTV" in at.info[0].value
    assert any(b.label.startswith("Compare 4 methods") for b in at.button)


# ----------------------------------------------------------------------------- head relevance


def test_head_relevance_shows_the_three_maps_and_their_agreement(stores):
    at = open_page("head_relevance", task="antonym", k="3")
    _ok(at)
    maps = next(c for c in charts(at) if sum(t["type"] == "heatmap" for t in c["data"]) == 3)
    dots = [t for t in maps["data"] if t["type"] == "scatter"]
    assert len(dots) == 3 and all(len(t["x"]) == 3 for t in dots)
    agreement = next(d.value for d in at.dataframe if "spearman" in d.value.columns)
    assert list(zip(agreement["a"], agreement["b"])) == [("SITE", "FV"), ("SITE", "LTV"), ("FV", "LTV")]
    assert agreement["spearman"].between(-1, 1).all() and (agreement["k"] == 3).all()


def test_head_relevance_asks_for_runs_when_a_task_has_only_site(stores, tmp_path):
    for run in RunStore(stores / "runs").list(method="FV").itertuples():
        RunStore(stores / "runs").delete(run.id)
    at = open_page("head_relevance", task="uppercase")
    _ok(at)
    assert any("missing: FV, LTV" in i.value for i in at.info)


# ----------------------------------------------------------------------------- transfer


def test_transfer_page_uses_fv_heads_as_a_source(stores):
    at = open_page("transfer")
    _ok(at)
    at.number_input(key="tr_limit").set_value(2)
    at.multiselect(key="tr_maps").set_value(["SITE alpha", "FV top-k"])
    at.number_input(key="tr_top_k").set_value(3)
    next(b for b in at.button if b.label == "Compute transfer matrix").click().run()
    _ok(at)
    matrix = at.session_state["transfer_results"]["matrix"]
    assert {"antonym · FV top-3", "uppercase · FV top-3"} <= set(matrix["source"])
    assert len(matrix) == 2 * 4 and set(matrix.loc[matrix["source_method"] == "FV", "k"]) == {3}
    summary = next(d.value for d in at.dataframe if "same_task" in d.value.columns)
    assert list(summary["heads"]) == ["SITE alpha", "FV top-3"]
    at.multiselect(key="tr_shown").set_value(["SITE alpha", "FV top-3"]).run()
    _ok(at)
    assert len(charts(at)[0]["data"][0]["y"]) == 4  # rows: two alphas, two FV head sets
