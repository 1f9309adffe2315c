"""The methods registry and protocol, the side-by-side comparison, head maps of several
methods and transfer from any head map (workbench/methods, workbench/experiments,
analyses/figures), on tiny-llama and synthetic maps."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from analyses.figures.comparison import comparison_figure
from analyses.figures.head_maps import Panel, head_maps_figure
from workbench.experiments.comparison import (
    MEAN,
    benchmark_files,
    compare_methods,
    from_summary,
    method_order,
    read_benchmark,
    task_view,
)
from workbench.experiments.evaluation import evaluate, summarize
from workbench.experiments.fitting import fit_score_save
from workbench.experiments.head_maps import compare_maps, maps_table, rank_correlation, top_k_overlap
from workbench.experiments.transfer import (
    Source,
    head_selection,
    method_transfer_summary,
    read_transfer_csv,
    summarize_transfer,
    transfer_per_query,
)
from workbench.methods import METHODS, Method, get_method, head_map_methods, settings
from workbench.methods.training import LearnedConfig
from workbench.store.codec import from_run, to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task


def tiny_config(name: str):
    """The smallest config that still runs every step: each method carries its own."""
    return METHODS[name].Config(**METHODS[name].tiny_settings)


def fit_method(model, task, name, config=None):
    return get_method(name).fit(model, task, config)


@pytest.fixture(scope="module")
def antonym():
    return load_task("antonym")


@pytest.fixture(scope="module")
def uppercase():
    return load_task("uppercase")


@pytest.fixture(scope="module")
def fits(tiny_llama, antonym):
    return {name: fit_method(tiny_llama, antonym, name, tiny_config(name)) for name in METHODS}


# ----------------------------------------------------------------------------- registry


def test_every_method_round_trips_through_the_run_store(tiny_llama, antonym, fits, tmp_path):
    store = RunStore(tmp_path)
    shape = tiny_llama.heads.shape
    for name, fit in fits.items():
        assert isinstance(fit, Method) and fit.name == name and fit.tasks == ["antonym"]
        run_id = store.save(to_run(fit, tiny_llama, antonym))
        loaded = from_run(store.load(run_id), tiny_llama)
        assert type(loaded) is type(fit)
        if name in head_map_methods():
            assert loaded.head_map().shape == (shape.n_layers, shape.n_heads)
            torch.testing.assert_close(loaded.head_map(), fit.head_map())
        else:
            with pytest.raises(ValueError, match="no per-head map"):
                loaded.head_map()
    mapped = [name for name, method in METHODS.items() if method.head_map_info is not None]
    assert sorted(head_map_methods()) == sorted(mapped)
    selection_first = [METHODS[name].head_map_info.is_selection for name in head_map_methods()]
    assert selection_first == sorted(selection_first, reverse=True)  # the selection map (SITE's alpha) first
    assert head_map_methods()[0] == "SITE"
    with pytest.raises(ValueError, match="Unknown method 'XYZ'"):
        get_method("XYZ")


def test_every_setting_is_declared_once_with_its_bounds_and_help_and_check_reads_them():
    for name, method in METHODS.items():
        declared = settings.fields(method.Config)  # raises for a field not declared with setting(...)
        assert all(f.spec.help for f in declared), name
        method.Config(**method.tiny_settings).check(n_layers=2)
        for f in declared:
            bad = []
            if f.spec.minimum is not None:
                bad.append(f.kind(f.spec.minimum) - 1)
            if f.spec.above is not None:
                bad.append(f.kind(f.spec.above))
            if f.kind is float:
                bad += [float("nan"), float("inf")]
            if f.kind in (int, float):
                bad.append("3")
            if f.spec.choices:
                bad.append("no-such-choice")
            for value in bad:
                with pytest.raises(ValueError, match=f.name):
                    method.Config(**{**method.tiny_settings, f.name: value}).check()
            if f.spec.layer:
                with pytest.raises(ValueError, match="below the model's 2 layers"):
                    method.Config(**{f.name: 2}).check(n_layers=2)


def test_relevance_is_magnitude_for_ltv_only(fits):
    theta = torch.tensor([[-2.0, 1.0]])
    ltv = dataclasses.replace(fits["LTV"], theta=theta)
    assert ltv.relevance().tolist() == [[2.0, 1.0]] and ltv.head_map().tolist() == [[-2.0, 1.0]]
    fv = dataclasses.replace(fits["FV"], effects=theta)
    assert fv.relevance().tolist() == [[-2.0, 1.0]]


def test_every_method_reports_progress_as_stage_done_total_record(tiny_llama, antonym):
    for name in METHODS:
        reports = []
        METHODS[name].fit(
            tiny_llama, antonym, tiny_config(name), progress=lambda *r, reports=reports: reports.append(r)
        )
        assert reports, name
        for stage, done, total, record in reports:
            assert isinstance(stage, str) and stage and 0 < done <= total and isinstance(record, dict)
        # early stop
        assert reports[-1][1] == reports[-1][2] or issubclass(METHODS[name].Config, LearnedConfig)


def test_every_method_summarises_its_fit(fits):
    for _name, fit in fits.items():
        summary = fit.summary()
        assert summary["fit_s"] >= 0
    assert {"layer"} <= set(fits["TV"].summary()) and {"layer"} <= set(fits["FV"].summary())
    assert {"best_step", "valid_loss"} <= set(fits["LTV"].summary())
    assert {"best_step", "valid_loss", "alpha_extreme"} <= set(fits["SITE"].summary())


def test_single_task_methods_refuse_several_tasks(tiny_llama, antonym, uppercase):
    for name, method in METHODS.items():
        if not method.several_tasks:
            with pytest.raises(ValueError, match="fitted per task; 2 tasks were given"):
                method.fit(tiny_llama, [antonym, uppercase], tiny_config(name))
    with pytest.raises(TypeError, match="takes a LtvConfig"):
        METHODS["LTV"].fit(tiny_llama, antonym, tiny_config("TV"))


def test_fit_score_save_scores_and_stores_any_method(tiny_llama, antonym, uppercase, tmp_path):
    store = RunStore(tmp_path)
    fit, run_id, metrics = fit_score_save(tiny_llama, antonym, "TV", tiny_config("TV"), store, eval_limit=3)
    run = store.load(run_id)
    assert run.method == "TV" and run.meta["metrics"]["antonym"]["n_test"] == 3
    assert (
        metrics["antonym"]["test_first_token_acc"] == run.meta["metrics"]["antonym"]["test_first_token_acc"]
    )
    with pytest.raises(ValueError, match="LTV is fitted per task"):
        fit_score_save(tiny_llama, [antonym, uppercase], "LTV", tiny_config("LTV"), store)


# ----------------------------------------------------------------------------- comparison


def test_compare_methods_scores_every_method_on_the_same_queries(tiny_llama, antonym, fits):
    chosen = {name: fits[name] for name in ("TV", "SITE")}
    reports = []
    per_query, summary = compare_methods(
        tiny_llama,
        antonym,
        chosen,
        template="qa",
        shots=2,
        limit=3,
        progress=lambda method, done, total, running: reports.append(method),
    )
    assert list(summary["method"]) == ["zero-shot", "2-shot ICL", "TV", "SITE"]
    assert (summary["n"] == 3).all() and "eval_peak_mib" in summary
    tokens = summary.set_index("method")["prompt_tokens"]
    assert tokens["2-shot ICL"] > tokens["zero-shot"] == tokens["TV"] == tokens["SITE"]
    assert set(reports) == set(summary["method"])
    targets = per_query.groupby("method", sort=False)["target"].apply(list)
    assert all(t == targets.iloc[0] for t in targets)
    plain = evaluate(tiny_llama, antonym, template="qa", limit=3, intervention=fits["TV"].intervention())
    assert list(per_query[per_query["method"] == "TV"]["prediction"]) == list(plain["prediction"])


def _benchmark() -> pd.DataFrame:
    rows = []
    for task, scale in (("a", 1.0), ("b", 0.5)):
        for method, first in (("zero-shot", 0.0), ("10-shot ICL", 0.6), ("SITE", 0.8), ("TV", 0.4)):
            rows.append(
                {
                    "task": task,
                    "method": method,
                    "first_token_acc": first * scale,
                    "exact_match": first * scale / 2,
                    "s_per_query": 0.1,
                    "tokens": 100 if "ICL" in method else 10,
                    "fit_s": 1.0,
                }
            )
    rows.append(
        {
            "task": "c",
            "method": "zero-shot",
            "first_token_acc": 1.0,
            "exact_match": 1.0,
            "s_per_query": 0.1,
            "tokens": 10,
            "fit_s": np.nan,
        }
    )  # an incomplete task: left out of the mean
    return pd.DataFrame(rows)


def test_task_view_orders_methods_and_averages_complete_tasks():
    table = _benchmark()
    view = task_view(table, "a")
    assert list(view["method"]) == ["zero-shot", "10-shot ICL", "TV", "SITE"]
    mean = task_view(table, MEAN)
    assert mean.set_index("method").loc["SITE", "first_token_acc"] == pytest.approx(0.6)
    assert mean.set_index("method").loc["zero-shot", "first_token_acc"] == 0.0  # task c left out
    assert mean["task"].iloc[0] == f"{MEAN} (2)"
    with pytest.raises(ValueError, match="No rows for task 'zzz'"):
        task_view(table, "zzz")
    assert method_order(["SITE", "LTV", "custom", "zero-shot", "5-shot ICL"]) == [
        "zero-shot",
        "5-shot ICL",
        "LTV",
        "SITE",
        "custom",
    ]


def test_comparison_figure_has_a_bar_per_method_in_four_panels():
    view = task_view(_benchmark(), "b")
    fig = comparison_figure(view)
    assert len(fig.data) == 4 and all(list(bar.x) == list(view["method"]) for bar in fig.data)
    assert (
        list(fig.data[0].y) == list(view["first_token_acc"]) and list(fig.data[2].y) == list(view["tokens"])
    )


def test_benchmark_files_and_reading(tmp_path):
    _benchmark().to_csv(tmp_path / "methods_m_qa.csv", index=False)
    _benchmark().to_csv(tmp_path / "methods_m_qa_5tasks.csv", index=False)
    _benchmark().to_csv(tmp_path / "methods_other_qa.csv", index=False)
    assert benchmark_files("m", tmp_path) == {"qa": tmp_path / "methods_m_qa.csv"}
    assert len(read_benchmark(tmp_path / "methods_m_qa.csv")) == 9
    # a table before the record
    old = _benchmark().rename(columns={"first_token_acc": "first", "exact_match": "exact"})
    old.to_csv(tmp_path / "methods_old_qa.csv", index=False)
    pd.testing.assert_frame_equal(read_benchmark(tmp_path / "methods_old_qa.csv"), _benchmark())
    pd.DataFrame({"task": ["a"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="not a methods benchmark table"):
        read_benchmark(tmp_path / "bad.csv")


def test_one_metric_record_names_every_column_and_run_key(tiny_llama, antonym, fits, tmp_path):
    from workbench.experiments.fitting import metrics_from_summary
    from workbench.scoring import ANSWER_METRICS, METRICS

    per_query = evaluate(tiny_llama, antonym, template="qa", limit=3, intervention=fits["TV"].intervention())
    summary = summarize(per_query)
    for metric in ANSWER_METRICS:
        assert metric.per_query in per_query and metric.summary in summary and metric.summary in METRICS
        assert summary[metric.summary].iloc[0] == per_query[metric.per_query].mean()
        assert metrics_from_summary(summary.iloc[0])[metric.run_key] == summary[metric.summary].iloc[0]


def test_from_summary_renames_and_adds_fit_time():
    summary = pd.DataFrame(
        {
            "method": ["zero-shot", "TV"],
            "first_token_acc": [0.1, 0.2],
            "exact_match": [0, 0.1],
            "seconds_per_query": [0.01, 0.02],
            "prompt_tokens": [5, 5],
        }
    )
    frame = from_summary(summary, {"TV": 3.0})
    assert frame["fit_s"].isna().tolist() == [True, False] and frame["fit_s"].iloc[1] == 3.0
    assert {"first_token_acc", "exact_match", "s_per_query", "tokens"} <= set(frame)


# ----------------------------------------------------------------------------- head maps


def test_rank_correlation_matches_pearson_of_pandas_ranks_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(6, 4)).astype(float)  # many ties
    b = a + rng.normal(0, 2, size=a.shape)
    expected = pd.Series(a.ravel()).rank().corr(pd.Series(b.ravel()).rank())  # Pearson of average ranks
    assert rank_correlation(a, b) == pytest.approx(expected)
    assert rank_correlation(a, a**3) == pytest.approx(1.0) and rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(np.ones((2, 2)), a[:2, :2]))
    with pytest.raises(ValueError, match="different shapes"):
        rank_correlation(a, a[:3])


def test_top_k_overlap_and_compare_maps():
    a = np.arange(12.0).reshape(3, 4)  # top-3: cells 11, 10, 9
    b = a.copy()
    b[2, 3] = -1.0  # cell 11 leaves b's top-3; 8 enters
    assert top_k_overlap(a, b, 3) == pytest.approx(2 / 3)
    assert top_k_overlap(a, -a, 3) == 0.0 and top_k_overlap(a, a, 100) == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        top_k_overlap(a, b, 0)
    table = compare_maps({"x": a, "y": b, "z": -a}, k=3)
    assert list(zip(table["a"], table["b"])) == [("x", "y"), ("x", "z"), ("y", "z")]
    assert table["chance_overlap"].iloc[0] == pytest.approx(3 / 12)
    assert table.set_index(["a", "b"]).loc[("x", "z"), "spearman"] == pytest.approx(-1.0)


def test_maps_table_is_long_and_exact():
    a = np.arange(6.0).reshape(2, 3)
    table = maps_table({"x": a, "y": -a}, "relevance")
    assert len(table) == 12 and list(table.columns) == ["map", "layer", "head", "relevance"]
    row = table[(table["map"] == "y") & (table["layer"] == 1) & (table["head"] == 2)]
    assert row["relevance"].item() == -5.0


def test_head_maps_figure_marks_each_maps_top_k_by_its_relevance():
    theta = torch.tensor([[-5.0, 1.0], [0.5, 2.0]])
    fig = head_maps_figure(
        {"SITE": Panel(torch.rand(2, 2), "alpha"), "LTV": Panel(theta, "theta", True, theta.abs())}, top_k=2
    )
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    dots = [t for t in fig.data if t.type == "scatter"]
    assert len(heatmaps) == 2 and len(dots) == 2
    assert heatmaps[1].zmid == 0 and heatmaps[1].zmin == -5.0
    assert sorted(zip(dots[1].y, dots[1].x)) == [(0, 0), (1, 1)]  # |-5| and 2, not 1


# ----------------------------------------------------------------------------- transfer from any map


def test_head_selection_from_each_method(fits):
    site = head_selection(fits["SITE"])
    assert site.label == "antonym" and site.k is None
    torch.testing.assert_close(site.selection, fits["SITE"].alpha)
    fv = head_selection(fits["FV"], k=3)
    assert fv.label == "antonym · FV top-3" and fv.selection.sum() == 3
    top = fits["FV"].effects.flatten().topk(3).indices
    assert set(fv.selection.flatten().nonzero().flatten().tolist()) == set(top.tolist())
    ltv = fits["LTV"]
    theta = ltv.theta.clone()
    theta[1, 2] = -100.0  # a large negative weight is the most relevant head
    ltv_source = head_selection(dataclasses.replace(ltv, theta=theta), k=1)
    assert ltv_source.selection[1, 2] == 1 and ltv_source.selection.sum() == 1
    with pytest.raises(ValueError, match="give k"):
        head_selection(fits["FV"])


def test_transfer_from_another_methods_heads(tiny_llama, antonym, uppercase, fits):
    site_up = fit_method(tiny_llama, uppercase, "SITE", tiny_config("SITE"))
    site_fits = {"antonym": fits["SITE"], "uppercase": site_up}
    fv = head_selection(fits["FV"], k=3)
    per_query = transfer_per_query(
        tiny_llama, [antonym, uppercase], site_fits, sources=["antonym", fv], limit=2
    )
    frame = summarize_transfer(per_query)
    cells = set(zip(frame["source"], frame["target"]))
    assert cells == {
        ("antonym", "antonym"),
        ("uppercase", "uppercase"),
        ("antonym", "uppercase"),
        ("antonym · FV top-3", "antonym"),
        ("antonym · FV top-3", "uppercase"),
    }
    row = frame.set_index(["source", "target"]).loc[("antonym · FV top-3", "uppercase")]
    assert row["source_method"] == "FV" and row["source_task"] == "antonym" and row["k"] == 3
    manual = Source("antonym", "FV", fv.selection, 3)
    again = transfer_per_query(tiny_llama, [uppercase], site_fits, sources=[manual], limit=2)
    assert list(again[again["source"] == manual.label]["prediction"]) == list(
        per_query[(per_query["source"] == manual.label) & (per_query["task"] == "uppercase")]["prediction"]
    )


def test_method_transfer_summary_separates_same_and_other_tasks(tmp_path):
    rows = [  # source, method, source task, k, target, relative
        ("a", "SITE", "a", None, "a", 1.0),
        ("b", "SITE", "b", None, "b", 1.0),
        ("a", "SITE", "a", None, "b", 0.4),
        ("b", "SITE", "b", None, "a", 0.2),
        ("a · FV top-3", "FV", "a", 3, "a", 0.9),
        ("a · FV top-3", "FV", "a", 3, "b", 0.1),
        ("b · FV top-3", "FV", "b", 3, "b", 0.7),
    ]
    frame = pd.DataFrame(rows, columns=["source", "source_method", "source_task", "k", "target", "relative"])
    summary = method_transfer_summary(frame).set_index("heads")
    assert np.isnan(summary.loc["SITE alpha", "same_task"]) and summary.loc["SITE alpha", "n_same"] == 0
    assert summary.loc["SITE alpha", "other_tasks"] == pytest.approx(0.3)
    assert summary.loc["FV top-3", "same_task"] == pytest.approx(0.8)
    assert summary.loc["FV top-3", "other_tasks"] == pytest.approx(0.1)
    # a table saved before sources had methods reads as SITE alpha throughout
    frame[["source", "target", "relative"]].assign(first_token_acc=frame["relative"]).to_csv(
        tmp_path / "old.csv", index=False
    )
    old = read_transfer_csv(tmp_path / "old.csv")
    assert set(old["source_method"]) == {"SITE"} and (old["source_task"] == old["source"]).all()
