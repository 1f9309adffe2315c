"""One query's adaptive task vectors (workbench/experiments/adaptive.py) on tiny models:
tiny-llama as the target, the tiny random BERT as S, a few training steps so the vectors
are not zero. The sweeps agree with each other and with the method's own intervention."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from analyses.figures import adaptive as figures
from workbench.experiments import adaptive
from workbench.experiments.evaluation import evaluate
from workbench.methods import METHODS
from workbench.methods.atv import AdaptiveTaskVector, AtvConfig
from workbench.methods.queries import answer_probability, prompt_batches
from workbench.tasks.files import load_task
from workbench.tasks.prompts import get_template
from workbench.tasks.task import Task, TaskSplits

TINY = {**AdaptiveTaskVector.tiny_settings, "steps": 4, "eval_every": 2, "lr": 5e-2}
QUERY, ANSWER = "hot", "cold"


@pytest.fixture(scope="module", autouse=True)
def one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tasks():
    return [load_task("antonym"), load_task("uppercase")]


@pytest.fixture(scope="module")
def fit(tiny_llama, tasks):
    return AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**TINY))


def _one_query(query: str, answer: str) -> Task:
    pairs = [(query, answer)]
    return Task("one", pairs, fixed_splits=TaskSplits(pairs, pairs, pairs))


def test_the_vectors_matter_here(tiny_llama, fit):
    v = adaptive.atv_vectors(tiny_llama, fit, [QUERY, "cat"])
    shape = tiny_llama.heads.shape
    assert v.shape == (2, shape.n_layers, shape.d_model) and v.abs().max() > 1e-3
    torch.testing.assert_close(
        adaptive.atv_vectors(tiny_llama, fit, [QUERY], 2.0)[0], 2 * v[0] / fit.config.scale
    )


def test_answers_match_the_methods_own_intervention(tiny_llama, fit):
    rows = adaptive.answers(tiny_llama, fit, QUERY, ANSWER)
    assert list(rows["variant"]) == ["zero-shot", "ATV"]
    assert {"first_token_correct", "prefix_match", "exact_match", "target_prob"} <= set(rows.columns)
    plain = evaluate(tiny_llama, _one_query(QUERY, ANSWER), template=fit.config.template)
    steered = evaluate(tiny_llama, _one_query(QUERY, ANSWER), template=fit.config.template,
                       intervention=fit.intervention())
    for i, reference in ((0, plain), (1, steered)):
        for column in ("prediction", "first_token_correct", "prefix_match", "exact_match"):
            assert rows[column].iloc[i] == reference[column].iloc[0], column
    typed = adaptive.answers(tiny_llama, fit, "a query with no answer")
    assert list(typed.columns) == ["variant", "prediction"] and len(typed) == 2


def test_scale_zero_is_the_unsteered_model(tiny_llama, fit):
    sweep = adaptive.scale_sweep(tiny_llama, fit, QUERY, [0.0, 1.0, 2.0], ANSWER)
    assert list(sweep["scale"]) == [0.0, 1.0, 2.0]
    template = get_template(fit.config.template)
    (batch,) = prompt_batches(tiny_llama, [template.format_query(QUERY)], [ANSWER], template.separator, 1)
    unsteered = answer_probability(tiny_llama, batch).item()
    assert sweep["target_prob"].iloc[0] == pytest.approx(unsteered, rel=1e-4, abs=1e-7)
    plain = evaluate(tiny_llama, _one_query(QUERY, ANSWER), template=fit.config.template)
    assert sweep["prediction"].iloc[0] == plain["prediction"].iloc[0]
    answers = adaptive.answers(tiny_llama, fit, QUERY, ANSWER)
    assert sweep["target_prob"].iloc[1] == pytest.approx(answers["target_prob"].iloc[1], rel=1e-4)
    assert sweep["target_prob"].iloc[1] != pytest.approx(unsteered, rel=1e-3)  # the vectors do something


def test_ablating_every_layer_is_scale_zero_and_none_is_the_full_vectors(tiny_llama, fit):
    n_layers = tiny_llama.heads.shape.n_layers
    ablation = adaptive.layer_ablation(tiny_llama, fit, QUERY, ANSWER)
    assert list(ablation["ablated"]) == ["none", *(f"layer {l}" for l in range(n_layers)), "all"]
    assert list(ablation["layer"].dropna()) == list(range(n_layers))
    sweep = adaptive.scale_sweep(tiny_llama, fit, QUERY, [0.0, fit.config.scale], ANSWER)
    for row, scale_row in (("all", 0), ("none", 1)):
        mine = ablation[ablation["ablated"] == row].iloc[0]
        assert mine["prediction"] == sweep["prediction"].iloc[scale_row]
        assert mine["target_prob"] == pytest.approx(sweep["target_prob"].iloc[scale_row], rel=1e-4, abs=1e-7)


def test_swapping_a_query_with_itself_changes_nothing(tiny_llama, fit):
    same = adaptive.swap(tiny_llama, fit, QUERY, QUERY, ANSWER)
    assert list(same["vectors_of"]) == ["none", QUERY, QUERY]
    assert same["prediction"].iloc[1] == same["prediction"].iloc[2]
    assert same["target_prob"].iloc[1] == pytest.approx(same["target_prob"].iloc[2], rel=1e-5)
    other = adaptive.swap(tiny_llama, fit, QUERY, "a very different query", ANSWER)
    assert other["target_prob"].iloc[1] == pytest.approx(same["target_prob"].iloc[1], rel=1e-5)
    typed = adaptive.swap(tiny_llama, fit, QUERY, "cat")
    assert list(typed.columns) == ["variant", "vectors_of", "prediction"]


def test_layer_norms_and_the_logit_lens(tiny_llama, fit):
    v = adaptive.atv_vectors(tiny_llama, fit, [QUERY])[0]
    norms = adaptive.layer_norms(v)
    torch.testing.assert_close(torch.tensor(norms["norm"].to_numpy()), torch.linalg.norm(v, dim=-1))
    lens = adaptive.logit_lens(tiny_llama, v, k=5)
    assert len(lens) == len(v) * 5 and list(lens["rank"].unique()) == list(range(5))
    logits = tiny_llama.bridge.unembed(tiny_llama.bridge.ln_final(v))  # (L, vocab)
    assert list(lens[lens["layer"] == 1]["token_id"]) == logits[1].topk(5).indices.tolist()
    assert (lens.groupby("layer")["prob"].sum() <= 1 + 1e-6).all()
    assert lens.groupby("layer")["logit"].apply(lambda x: x.is_monotonic_decreasing).all()


def test_a_task_mean_is_its_own_best_match(tiny_llama, fit, tasks):
    means = {task.name: adaptive.task_mean_vectors(tiny_llama, fit, task, limit=12) for task in tasks}
    n_layers = tiny_llama.heads.shape.n_layers
    first = means["antonym"]
    assert first.shape == (n_layers, tiny_llama.heads.shape.d_model)
    v = adaptive.atv_vectors(tiny_llama, fit, [x for x, _ in tasks[0].split(0).test[:12]], 1.0)
    torch.testing.assert_close(first, v.mean(0))
    own = adaptive.similarity_to_tasks(first, means)
    assert set(own["reference"]) == {adaptive.MEAN, adaptive.CENTRED}
    mine = own[own["task"] == "antonym"]
    assert len(mine) == 2 * n_layers and mine["cosine"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    match = adaptive.task_match(own)
    assert match[match["reference"] == adaptive.CENTRED]["task"].iloc[0] == "antonym"
    assert set(match["layers"]) == {n_layers}
    with pytest.raises(ValueError, match="two tasks"):
        adaptive.centred_task_similarity(first, {"antonym": first})


def test_tv_fv_and_ltv_vectors_per_layer(tiny_llama):
    task = load_task("antonym")
    shape = tiny_llama.heads.shape
    references = {}
    for name in adaptive.reference_methods():
        fit = METHODS[name].fit(tiny_llama, task, METHODS[name].Config(**METHODS[name].tiny_settings))
        vectors = adaptive.reference_vectors(fit, tiny_llama)
        assert vectors.shape == (shape.n_layers, shape.d_model)
        references[("antonym", name)] = vectors
        if name == "FV":
            assert torch.isnan(vectors).all(-1).sum() == shape.n_layers - 1
            torch.testing.assert_close(vectors[fit.layer], fit.vector.float())
        if name == "TV":
            torch.testing.assert_close(vectors, fit.vectors.float())
        if name == "LTV":
            torch.testing.assert_close(vectors, fit.vectors(tiny_llama).float())
    query = torch.randn(shape.n_layers, shape.d_model)
    similarity = adaptive.task_similarity(query, references)
    assert similarity.groupby("reference").size().to_dict() == {
        "TV": shape.n_layers, "FV": 1, "LTV": shape.n_layers
    }
    ltv = similarity[similarity["reference"] == "LTV"]["cosine"].to_numpy()
    expected = torch.nn.functional.cosine_similarity(query, references[("antonym", "LTV")], dim=-1).numpy()
    assert ltv == pytest.approx(expected, abs=1e-5)
    with pytest.raises(ValueError, match="No per-layer vectors"):
        adaptive.reference_vectors(
            AdaptiveTaskVector.fit(tiny_llama, task, AtvConfig(**{**TINY, "steps": 1})), tiny_llama
        )


def test_the_figures_draw_the_frames(tiny_llama, fit, tasks):
    v = adaptive.atv_vectors(tiny_llama, fit, [QUERY])[0]
    n_layers = len(v)
    assert list(figures.layer_norms_figure(adaptive.layer_norms(v)).data[0].y) == pytest.approx(
        torch.linalg.norm(v, dim=-1).tolist(), rel=1e-5
    )
    lens = figures.logit_lens_figure(adaptive.logit_lens(tiny_llama, v, k=4))
    assert lens.data[0].z.shape == (n_layers, 4)
    means = {task.name: adaptive.task_mean_vectors(tiny_llama, fit, task, limit=8) for task in tasks}
    similarity = adaptive.similarity_to_tasks(v, means)
    heat = figures.similarity_figure(similarity)
    assert heat.data[0].z.shape == (4, n_layers) and heat.data[0].zmid == 0
    # one trace per reference
    assert len(figures.task_match_figure(adaptive.task_match(similarity)).data) == 2
    sweep = adaptive.scale_sweep(tiny_llama, fit, QUERY, [0.0, 1.0], ANSWER)
    assert len(figures.scale_figure(sweep, current=1.0).data[0].x) == 2
    ablation = figures.ablation_figure(adaptive.layer_ablation(tiny_llama, fit, QUERY, ANSWER))
    assert list(ablation.data[0].x) == ["none", *map(str, range(n_layers)), "all"]
    assert len(ablation.layout.shapes) == 1
    swapped = figures.swap_figure(adaptive.swap(tiny_llama, fit, QUERY, "cat", ANSWER))
    assert len(swapped.data[0].x) == 3
    assert isinstance(adaptive.layer_norms(v), pd.DataFrame)
