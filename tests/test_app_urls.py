"""Every view is a URL that reopens it: on each page, pick values in its widgets (model,
task, method, selection, the head or cell picked), read the URL the page wrote, open that URL
in a new session and find the same values. Through ``streamlit.testing.v1.AppTest`` on
tiny-llama, with tiny fits of every method in a temporary user store. (The end-to-end test
in a real browser opens such links on a freshly started server.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from app_pages import no_exception, open_page, private_stores
from streamlit.testing.v1 import AppTest

import workbench.experiments.comparison
from workbench.methods import METHODS
from workbench.store.codec import to_run
from workbench.store.runs import RunStore
from workbench.tasks.files import load_task

TASKS = ("antonym", "uppercase")


@pytest.fixture(scope="module")
def runs_of_every_method(tiny_llama, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("url_runs")
    store = RunStore(root)
    for task in TASKS:
        for method in METHODS.values():
            fit = method.fit(tiny_llama, load_task(task), method.Config(**method.tiny_settings))
            store.save(to_run(fit, tiny_llama, load_task(task)))
    return root


@pytest.fixture
def stores(runs_of_every_method, tmp_path, monkeypatch) -> Path:
    private_stores(monkeypatch, tmp_path, runs_of_every_method)
    (tmp_path / "results").mkdir()
    monkeypatch.setattr(workbench.experiments.comparison, "RESULTS", tmp_path / "results")
    rows = [
        {"task": task, "method": method, "first": 0.5, "exact": 0.25, "s_per_query": 0.01, "tokens": 9,
         "fit_s": 1.0, "fit_peak_mib": 10.0, "eval_peak_mib": 5.0}
        for task in TASKS
        for method in ("zero-shot", "10-shot ICL", "SITE")
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results" / "methods_tiny-llama_qa.csv", index=False)
    (tmp_path / "bundled").mkdir()
    cells = [
        {"model": "tiny-llama", "source": a, "target": b, "n": 2, "limit": 2, "first_token_acc": 0.5,
         "exact_match": 0.25}
        for a in TASKS
        for b in TASKS
    ]
    pd.DataFrame(cells).to_csv(tmp_path / "bundled" / "site_transfer.csv", index=False)
    return tmp_path


def widget(at: AppTest, key: str):
    """The widget with ``key``, whatever its kind."""
    for kind in ("selectbox", "number_input", "radio", "multiselect", "text_input", "checkbox", "slider"):
        try:
            return getattr(at, kind)(key=key)
        except KeyError:
            continue
    raise KeyError(key)


VIEWS = {  # page -> (its first query, the widget values picked there, in order)
    "home": ({}, {}),
    "evaluate": (
        {},
        {"task": "uppercase", "template": "arrow", "shots": 3, "split": "valid", "limit": 5, "seed": 7},
    ),
    "compare": ({}, {"cmp_task": "uppercase", "cmp_value": "exact_match"}),
    "compare computed": (
        {"source": "Compute here"},
        {"cmp_task_here": "uppercase", "cmp_template_here": "arrow", "cmp_shots": 3, "cmp_limit": 5},
    ),
    "head_relevance": ({}, {"hr_task": "uppercase", "hr_top_k": 3, "hr_layer": 2, "hr_head": 1}),
    "transfer": (
        {"matrix": "bundled"},
        {"tr_value": "exact_match", "tr_similarity": "Jaccard (heads > 0.5)", "tr_source": "uppercase",
         "tr_target": "antonym"},
    ),
    "transfer computed": (
        {"matrix": "computed"},
        {"tr_tasks": ["uppercase", "antonym"], "tr_limit": 3, "tr_maps": ["SITE alpha", "FV top-k"],
         "tr_top_k": 2},
    ),
    "regression": ({}, {"reg_shift": "noisy_y", "reg_rows": ["plain", "LTV", "least_squares"]}),
    "fit": ({}, {"fit_method": "TV", "fit_task": "uppercase"}),
    "adaptive": (
        {},
        {"atv_task": "uppercase", "atv_query": load_task("uppercase").split(0).test[1][0], "atv_scale": 0.5,
         "atv_swap": "cat"},
    ),
    "adaptive typed": ({}, {"atv_task": "(a query of your own)", "atv_typed": "hello", "atv_scale": 2.0}),
}


@pytest.mark.parametrize("view", list(VIEWS))
def test_a_view_reopens_from_its_url_in_a_new_session(view, stores):
    page = view.split()[0]
    query, picks = VIEWS[view]
    at = open_page(page, **query)
    no_exception(at)
    for key, value in picks.items():  # one at a time, as a user would
        widget(at, key).set_value(value).run()
        no_exception(at)
        assert not at.error, [e.value for e in at.error]
    url = dict(at.query_params)
    assert url["model"] == "tiny-llama"

    reopened = open_page(page, **url)  # a new session: only the URL carries the view
    no_exception(reopened)
    for key, value in picks.items():
        assert widget(reopened, key).value == value, key
    assert dict(reopened.query_params) == url
