"""Head maps and the SITE transfer matrix (workbench/experiments/head_maps.py and transfer.py,
their figures in analyses/figures/): synthetic maps with known answers, and tiny-llama fits
for the transfer cells."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import torch

from analyses.figures.head_maps import (
    fit_history_figure,
    head_across_tasks_figure,
    head_map_figure,
    layer_profile_figure,
)
from analyses.figures.transfer import similarity_figure, transfer_figure, transfer_vs_similarity_figure
from workbench.app.urls import clicked_cell
from workbench.experiments.evaluation import evaluate
from workbench.experiments.head_maps import alpha_summary, head_across_tasks
from workbench.experiments.transfer import (
    cell_queries,
    cell_table,
    cluster_order,
    map_similarity,
    matrix_order,
    read_transfer_csv,
    summarize_transfer,
    transfer_cell,
    transfer_matrix,
    transfer_per_query,
    with_similarity,
)
from workbench.methods.site import SiteConfig, SoftInjection
from workbench.tasks.files import load_task

TINY = SiteConfig(steps=4, n_prompts=4, shots=2, eval_every=2, batch_size=8)
TASKS = ("antonym", "uppercase")


@pytest.fixture(scope="module")
def tasks():
    return {name: load_task(name) for name in TASKS}


@pytest.fixture(scope="module")
def fits(tiny_llama, tasks):
    return {name: SoftInjection.fit(tiny_llama, task, TINY) for name, task in tasks.items()}


# ----------------------------------------------------------------------------- head maps


def test_head_map_figure_shape_hover_and_click_targets():
    alpha = torch.tensor([[0.0, 0.2, 0.95], [0.5, 1.0, 0.05]])  # (L=2, H=3)
    fig = head_map_figure(alpha, title="t", selected=(1, 2))
    heatmap, targets = fig.data
    assert heatmap.type == "heatmap" and np.allclose(np.asarray(heatmap.z), alpha.numpy())
    assert list(heatmap.x) == [0, 1, 2] and list(heatmap.y) == [0, 1]
    assert (heatmap.zmin, heatmap.zmax) == (0.0, 1.0)
    assert targets.type == "scatter" and len(targets.x) == 6  # one click target per head
    layer, head, value = targets.customdata[5]  # row-major: layer 1, head 2
    assert (layer, head) == (1, 2) and value == pytest.approx(0.05)
    assert "layer" in targets.hovertemplate and "head" in targets.hovertemplate
    assert fig.layout.yaxis.range[0] > fig.layout.yaxis.range[1]  # layer 0 on top
    assert len(fig.layout.shapes) == 1  # the selected head's outline
    assert "<html>" in fig.to_html(include_plotlyjs="cdn", full_html=True)


def test_head_map_figure_signed_map_is_symmetric():
    values = np.array([[-2.0, 0.5], [1.0, 0.0]])
    fig = head_map_figure(values, symmetric=True, value_label="indirect effect", clickable=False)
    assert len(fig.data) == 1
    assert (fig.data[0].zmin, fig.data[0].zmax, fig.data[0].zmid) == (-2.0, 2.0, 0.0)
    fig = head_map_figure(values, zmin=None, zmax=None)
    assert (fig.data[0].zmin, fig.data[0].zmax) == (-2.0, 1.0)
    with pytest.raises(ValueError, match="layers, heads"):
        head_map_figure(np.zeros(3))


def test_clicked_cell_reads_streamlit_selection():
    event = {"selection": {"points": [{"x": 2, "y": 1, "customdata": [1, 2, 0.3]}], "point_indices": [5]}}
    assert clicked_cell(event) == [1, 2, 0.3]
    assert clicked_cell({"selection": {"points": []}}) is None
    assert clicked_cell(None) is None


def test_alpha_summary_counts():
    alpha = torch.tensor([[0.01, 0.05, 0.5], [0.95, 0.99, 0.6]])
    s = alpha_summary(alpha)
    assert s["n_heads"] == 6
    assert s["frac_below"] == pytest.approx(2 / 6) and s["frac_above"] == pytest.approx(2 / 6)
    assert s["frac_between"] == pytest.approx(2 / 6)
    assert s["mean"] == pytest.approx(float(alpha.mean()))
    assert s["n_selected"] == 3  # 0.95, 0.99, 0.6 (0.5 is not above 0.5)


def test_layer_profile_figure():
    alpha = np.array([[0.9, 0.8, 0.1], [0.0, 0.0, 0.6]])
    fig = layer_profile_figure(alpha)
    mean, count = fig.data
    assert mean.orientation == count.orientation == "h" and list(mean.y) == [0, 1]
    assert np.allclose(mean.x, [0.6, 0.2])
    assert list(count.x) == [2, 1]
    assert fig.layout.height == head_map_figure(alpha).layout.height  # rows align with the head map


def test_head_across_tasks_value_and_rank():
    maps = {
        "a": np.array([[0.9, 0.1], [0.2, 0.3]]),  # head (0, 0) is the highest: rank 1
        "b": np.array([[0.4, 0.8], [0.7, 0.6]]),  # 0.4 is the lowest of 4: rank 4
        "c": torch.tensor([[0.5, 0.5], [0.9, 0.1]]),  # tie with (0, 1): best rank 2
    }
    frame = head_across_tasks(maps, 0, 0)
    assert list(frame["task"]) == ["a", "c", "b"]  # by value
    assert dict(zip(frame["task"], frame["rank"])) == {"a": 1, "b": 4, "c": 2}
    assert dict(zip(frame["task"], frame["selected"])) == {"a": True, "b": False, "c": False}
    fig = head_across_tasks_figure(frame, 0, 0, highlight="b")
    assert list(fig.data[0].x) == ["a", "c", "b"] and list(fig.data[0].text) == ["#1", "#2", "#4"]
    with pytest.raises(ValueError, match="outside"):
        head_across_tasks(maps, 5, 0)


def test_fit_history_figure():
    history = pd.DataFrame(
        {"step": [0, 1, 2], "train_loss": [math.nan, 2.0, 1.5], "valid_loss": [3.0, math.nan, 2.5]}
    )
    fig = fit_history_figure(history, best_step=2)
    assert [t.name for t in fig.data] == ["train loss (batch)", "valid loss"]
    assert list(fig.data[1].x) == [0, 2]


# ----------------------------------------------------------------------------- similarity and clustering


def test_map_similarity_known_answers():
    base = np.array([[0.9, 0.0], [0.8, 0.1]])
    maps = {
        "same1": base,
        "same2": torch.tensor(base),
        "disjoint": np.array([[0.0, 0.9], [0.2, 0.7]]),
        "empty": np.zeros((2, 2)),
    }
    cosine, jaccard = map_similarity(maps)
    assert list(cosine.index) == list(maps) == list(jaccard.columns)
    assert cosine.at["same1", "same2"] == pytest.approx(1.0)
    assert jaccard.at["same1", "same2"] == 1.0
    assert jaccard.at["same1", "disjoint"] == 0.0
    assert math.isnan(cosine.at["same1", "empty"])  # an all-zero map has no direction
    assert jaccard.at["empty", "empty"] == 1.0 and jaccard.at["same1", "empty"] == 0.0
    assert np.allclose(cosine.to_numpy(), cosine.to_numpy().T, equal_nan=True)
    _, loose = map_similarity(maps, threshold=0.05)
    assert loose.at["same1", "disjoint"] == pytest.approx(2 / 4)  # {00, 10, 11} vs {01, 10, 11}


def test_jaccard_partial_overlap():
    a = np.array([[1.0, 1.0, 0.0, 0.0]])
    b = np.array([[0.0, 1.0, 1.0, 0.0]])
    _, jaccard = map_similarity({"a": a, "b": b})
    assert jaccard.at["a", "b"] == pytest.approx(1 / 3)


def test_cluster_order_puts_near_identical_maps_together():
    rng = np.random.default_rng(0)
    x = rng.random((4, 3))
    y = rng.random((4, 3))
    maps = {
        "x": x,
        "y": y,
        "x_again": x + 0.01 * rng.random((4, 3)),
        "z": rng.random((4, 3)),
        "y_again": y + 0.01,
    }
    cosine, _ = map_similarity(maps)
    order = cluster_order(cosine)
    assert sorted(order) == sorted(maps)
    assert abs(order.index("x") - order.index("x_again")) == 1
    assert abs(order.index("y") - order.index("y_again")) == 1
    assert cluster_order(cosine) == order  # deterministic
    assert cluster_order(cosine.iloc[:2, :2]) == ["x", "y"]


def test_cluster_order_block_structure():
    sim = pd.DataFrame(
        [[1.0, 0.1, 0.9, 0.1], [0.1, 1.0, 0.1, 0.8], [0.9, 0.1, 1.0, 0.2], [0.1, 0.8, 0.2, 1.0]],
        index=list("abcd"),
        columns=list("abcd"),
    )
    order = cluster_order(sim)
    assert {frozenset(order[:2]), frozenset(order[2:])} == {frozenset("ac"), frozenset("bd")}


# ----------------------------------------------------------------------------- transfer


def test_transfer_cell_on_the_diagonal_is_plain_site(tiny_llama, tasks, fits):
    fit = fits["antonym"]
    cell = transfer_cell(tiny_llama, tasks["antonym"], fit, fit, limit=4)
    plain = evaluate(
        tiny_llama,
        tasks["antonym"],
        template=fit.config.template,
        intervention=fit.intervention("antonym"),
        limit=4,
    )
    assert list(cell["source"].unique()) == ["antonym"] and list(cell["task"].unique()) == ["antonym"]
    pd.testing.assert_series_equal(cell["prediction"], plain["prediction"])
    pd.testing.assert_series_equal(cell["first_token_correct"], plain["first_token_correct"])


def test_transfer_cell_uses_source_alpha_and_target_embedding(tiny_llama, tasks, fits):
    cell = transfer_cell(tiny_llama, tasks["uppercase"], fits["antonym"], fits["uppercase"], limit=3)
    assert len(cell) == 3 and set(cell["task"]) == {"uppercase"}
    assert cell["method"].iloc[0] == "SITE heads of antonym"
    with pytest.raises(KeyError, match="no embedding"):
        transfer_cell(tiny_llama, tasks["uppercase"], fits["antonym"], fits["antonym"], limit=3)


def test_transfer_matrix_long_format(tiny_llama, tasks, fits):
    calls = []
    per_query = transfer_per_query(
        tiny_llama,
        list(tasks.values()),
        fits,
        limit=2,
        progress=lambda cell, done, total, record: calls.append((cell, done, total)),
    )
    assert len(per_query) == 4 * 2 and [c[1:] for c in calls] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    names = list(tasks)
    assert {c[0] for c in calls} == {f"{a} -> {b}" for a in names for b in names}
    frame = summarize_transfer(per_query)
    assert {"source", "target", "first_token_acc", "exact_match", "own_first_token_acc", "relative"} <= set(
        frame
    )
    assert len(frame) == 4 and set(zip(frame["source"], frame["target"])) == {
        (a, b) for a in TASKS for b in TASKS
    }
    diagonal = frame[frame["source"] == frame["target"]]
    assert (diagonal["first_token_acc"] == diagonal["own_first_token_acc"]).all()
    for _, row in frame.iterrows():
        if row["own_first_token_acc"] > 0:
            assert row["relative"] == pytest.approx(row["first_token_acc"] / row["own_first_token_acc"])
        else:
            assert math.isnan(row["relative"])
    again = transfer_matrix(tiny_llama, list(tasks.values()), fits, limit=2)
    pd.testing.assert_frame_equal(again, frame)
    with pytest.raises(KeyError, match="No SITE fit"):
        transfer_matrix(tiny_llama, list(tasks.values()), {"antonym": fits["antonym"]}, limit=2)


def _synthetic_matrix() -> pd.DataFrame:
    rows = []
    acc = {("a", "a"): 0.8, ("a", "b"): 0.2, ("b", "a"): 0.4, ("b", "b"): 0.0}
    for (s, t), v in acc.items():
        rows.append({"source": s, "target": t, "n": 10, "first_token_acc": v, "exact_match": v / 2})
    return pd.DataFrame(rows)


def test_summarize_transfer_is_nan_safe():
    per_query = pd.DataFrame(
        {
            "source": ["a", "a", "b", "b", "a", "b"],
            "task": ["a", "a", "a", "a", "b", "b"],
            "first_token_correct": [True, False, True, True, True, False],
            "exact_match": [True, False, False, True, False, False],
        }
    )
    frame = summarize_transfer(per_query).set_index(["source", "target"])
    assert frame.at[("b", "a"), "relative"] == pytest.approx(1.0 / 0.5)
    assert math.isnan(frame.at[("a", "b"), "relative"])  # b's own accuracy is 0


def test_transfer_figure_and_csv(tmp_path):
    frame = _synthetic_matrix()
    frame.to_csv(tmp_path / "m.csv", index=False)
    read = read_transfer_csv(tmp_path / "m.csv")
    assert read.set_index(["source", "target"]).at[("b", "a"), "relative"] == pytest.approx(0.5)
    assert math.isnan(read.set_index(["source", "target"]).at[("a", "b"), "relative"])
    fig = transfer_figure(read, value="relative", order=["b", "a"], selected=("a", "b"))
    heatmap, targets = fig.data
    assert list(heatmap.y) == ["b", "a"] and list(heatmap.x) == ["b", "a"]
    assert heatmap.z[0][1] == pytest.approx(0.5)  # source b, target a
    assert targets.customdata[1][:2] == ["b", "a"]
    assert fig.layout.yaxis.autorange == "reversed" and len(fig.layout.shapes) == 1
    fig = transfer_figure(read, value="first_token_acc")
    assert fig.data[0].text[0][0] == "80%"
    with pytest.raises(ValueError, match="not a transfer matrix"):
        pd.DataFrame({"x": [1]}).to_csv(tmp_path / "bad.csv", index=False)
        read_transfer_csv(tmp_path / "bad.csv")


def test_similarity_figures():
    maps = {"a": np.array([[0.9, 0.1]]), "b": np.array([[0.8, 0.2]]), "c": np.array([[0.0, 1.0]])}
    cosine, jaccard = map_similarity(maps)
    fig = similarity_figure(jaccard, order=["c", "a", "b"])
    assert list(fig.data[0].x) == ["c", "a", "b"]
    assert isinstance(fig, go.Figure)
    frame = with_similarity(
        pd.DataFrame({"source": ["a", "a", "c"], "target": ["b", "a", "a"], "relative": [1.0, 1.0, 0.0]}),
        maps,
    )
    assert frame["alpha_jaccard"].tolist() == [1.0, 1.0, 0.0]
    fig = transfer_vs_similarity_figure(frame)
    assert len(fig.data[0].x) == 2  # off-diagonal cells only


def test_matrix_order_clusters_tasks_then_groups_top_k_sources_by_method():
    rows = [("a", "a"), ("b", "b"), ("c", "c"), ("a", "c"), ("c", "a")]
    rows += [("b · FV top-3", "a"), ("a · FV top-3", "a"), ("a · LTV top-3", "b")]
    frame = pd.DataFrame(rows, columns=["source", "target"])
    frame["source_method"] = [
        ("FV" if "FV" in s else "LTV" if "LTV" in s else "SITE") for s in frame["source"]
    ]
    frame["source_task"] = frame["source"].str.split(" · ").str[0]
    frame["k"] = [3 if " · " in s else np.nan for s in frame["source"]]
    similarity = pd.DataFrame([[1, 0, 0.9], [0, 1, 0], [0.9, 0, 1]], index=list("abc"), columns=list("abc"))
    order = matrix_order(frame, similarity)
    assert order[:3] in (["a", "c", "b"], ["b", "a", "c"], ["c", "a", "b"], ["b", "c", "a"])  # a next to c
    assert order[3:] == sorted(order[3:], key=lambda s: ("FV" not in s, order.index(s.split(" · ")[0])))
    assert order[3:5] == [f"{t} · FV top-3" for t in order[:3] if t in "ab"]
    assert order[-1] == "a · LTV top-3"
    assert matrix_order(frame)[:3] == ["a", "b", "c"]  # no similarity: as they come


def test_cell_queries_put_the_heads_of_a_beside_the_targets_own(tiny_llama, tasks, fits):
    rows = cell_queries(tiny_llama, tasks["uppercase"], fits["antonym"], fits["uppercase"], limit=3,
                        label="antonym")
    assert list(rows["source"]) == ["antonym"] * 3 + ["uppercase"] * 3
    plain = transfer_cell(tiny_llama, tasks["uppercase"], fits["antonym"], fits["uppercase"], limit=3)
    assert list(rows["prediction"][:3]) == list(plain["prediction"])
    table = cell_table(rows, "uppercase")
    assert len(table) == 3
    assert [c for c in table.columns if c.endswith(": prediction")] == ["heads of antonym: prediction",
                                                                         "own alpha: prediction"]
    diagonal = cell_queries(tiny_llama, tasks["uppercase"], fits["uppercase"], fits["uppercase"], limit=3,
                            label="uppercase")
    assert list(diagonal["source"]) == ["uppercase"] * 3
