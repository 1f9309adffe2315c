"""The Adaptive vectors page (pages/adaptive.py) through ``streamlit.testing.v1.AppTest`` on
tiny-llama, with a temporary user store holding a tiny ATV run on two tasks and TV / LTV
runs of one of them."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_pages import charts, figure_array, no_exception, open_page, private_stores, shown

from workbench.methods import METHODS
from workbench.store.codec import to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task

ATV = dict(encoder="tiny-encoder", rank=4, per_task=16, steps=3, eval_every=1, batch_size=8, lr=5e-2)
OTHERS = {
    "TV": dict(shots=2, n_prompts=4),
    "LTV": dict(shots=2, n_prompts=4, steps=2, eval_every=1, batch_size=8),
}
TASKS = ("antonym", "uppercase")
CHARTS = 7  # norms, logit lens, task match, similarity, lambda, ablation, swap


@pytest.fixture(scope="module")
def atv_store(tiny_llama, tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("atv_runs")
    store = RunStore(root)
    tasks = [load_task(name) for name in TASKS]
    run_id = store.save(
        to_run(METHODS["ATV"].fit(tiny_llama, tasks, METHODS["ATV"].Config(**ATV)), tiny_llama, tasks)
    )
    for name, settings in OTHERS.items():
        fit = METHODS[name].fit(tiny_llama, tasks[0], METHODS[name].Config(**settings))
        store.save(to_run(fit, tiny_llama, tasks[0]))
    return root, run_id


@pytest.fixture
def run_id(atv_store, tmp_path, monkeypatch) -> str:
    root, run_id = atv_store
    private_stores(monkeypatch, tmp_path, root)
    return run_id


def _ok(at) -> None:
    no_exception(at)
    assert not at.error, [e.value for e in at.error]


def test_page_shows_a_query_of_a_task_with_every_figure(run_id):
    at = open_page("adaptive")
    _ok(at)
    assert at.selectbox(key="atv_run").value == run_id
    assert at.selectbox(key="atv_task").value == "antonym"
    query, answer = load_task("antonym").split(0).test[0]
    assert at.selectbox(key="atv_query").value == query
    answers = at.dataframe[0].value
    assert list(answers["variant"]) == ["zero-shot", "ATV"]
    assert {"first_token_correct", "prefix_match", "exact_match", "target_prob"} <= set(answers.columns)
    figures = charts(at)
    assert len(figures) == CHARTS
    assert len(figure_array(figures[0]["data"][0]["y"])) == 3  # one norm per tiny-llama layer
    rows = set(figures[3]["data"][0]["y"])
    assert {
        "antonym · ATV mean",
        "uppercase · ATV mean",
        "antonym · ATV mean, centred",
        "antonym · TV",
        "antonym · LTV",
    } <= rows and not any(r.startswith("uppercase · TV") for r in rows)
    assert dict(at.query_params) == {
        "model": "tiny-llama",
        "run": run_id,
        "task": "antonym",
        "query": query,
        "scale": "1",
        "swap": load_task("uppercase").split(0).test[0][0],
    }
    assert any(answer in shown(c.value) for c in at.caption)
    assert any("Chart (HTML)" == b.label for b in at.get("download_button"))


def test_page_reads_its_settings_from_the_url(run_id):
    query = load_task("uppercase").split(0).test[2][0]
    at = open_page("adaptive", run=run_id, task="uppercase", query=query, scale="0.5", swap="cat")
    _ok(at)
    assert at.selectbox(key="atv_task").value == "uppercase"
    assert at.selectbox(key="atv_query").value == query
    assert at.slider(key="atv_scale").value == 0.5
    assert at.text_input(key="atv_swap").value == "cat"
    figures = charts(at)
    assert 0.5 in list(figure_array(figures[4]["data"][0]["x"]))  # the lambda sweep holds the slider's value
    at.slider(key="atv_scale").set_value(2.0).run()
    _ok(at)
    assert at.query_params["scale"] == "2"
    at.selectbox(key="atv_task").set_value("antonym").run()  # another task: its first query
    _ok(at)
    assert at.selectbox(key="atv_query").value == load_task("antonym").split(0).test[0][0]


def test_a_typed_query_and_a_bad_url(run_id):
    at = open_page("adaptive", query="hello there", scale="99", run="no-such-run")
    _ok(at)
    assert at.selectbox(key="atv_task").value == "(a query of your own)"
    assert at.text_input(key="atv_typed").value == "hello there"
    assert at.slider(key="atv_scale").value == 1.0  # out of range: the fit's lambda
    assert at.selectbox(key="atv_run").value == run_id
    answers = at.dataframe[0].value
    assert list(answers.columns) == ["variant", "prediction"]
    assert "task" not in at.query_params and at.query_params["query"] == "hello there"


def test_page_without_an_atv_run_says_how_to_train_one(monkeypatch, tmp_path):
    private_stores(monkeypatch, tmp_path)
    at = open_page("adaptive")
    _ok(at)
    message = shown(at.info[0].value)
    assert "analyses/scripts/train_atv.py" in message and "--method ATV" in message
