"""The Streamlit app through ``streamlit.testing.v1.AppTest`` (no browser), on tiny-llama,
and the figure / table builders it shares with the CLI."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from app_pages import shown
from streamlit.testing.v1 import AppTest

from analyses.figures.evaluation import accuracy_bar_chart
from workbench.experiments.evaluation import side_by_side

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120  # seconds per script run: the first one loads tiny-llama on CPU


@pytest.fixture(autouse=True)
def _workbench_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))


def _app(**query) -> AppTest:
    at = AppTest.from_file(ROOT / "app.py", default_timeout=TIMEOUT)
    at.query_params.update({"model": "tiny-llama", **query})
    return at.run()


def _evaluate_page(**query) -> AppTest:
    at = AppTest.from_file(ROOT / "pages" / "evaluate.py", default_timeout=TIMEOUT)
    at.query_params.update({"model": "tiny-llama", "shots": "2", "limit": "4", **query})
    return at.run()


def _no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


# ----------------------------------------------------------------------------- entry app


def test_entry_app_runs_with_model_from_url():
    at = _app(shots="2", limit="4")
    _no_exception(at)
    assert not at.error
    assert at.sidebar.selectbox(key="model_choice").value == "tiny-llama"
    assert at.title[0].value == "Task Vector Workbench"  # the home page is the default
    assert at.query_params["model"] == "tiny-llama"
    at.switch_page("pages/evaluate.py").run()
    _no_exception(at)
    assert at.title[0].value == "Evaluate"
    assert at.query_params["shots"] == "2"  # the page writes its view back into the URL


def test_unknown_model_shows_error():
    at = _app(model="no-such-model-anywhere")
    _no_exception(at)
    assert at.sidebar.text_input(key="model_path").value == "no-such-model-anywhere"
    assert at.error and "Could not load model 'no-such-model-anywhere'" in shown(at.error[0].value)
    assert not at.button  # the page stopped before its widgets


def test_model_name_from_url_is_shown_as_text():
    crafted = (
        "[Log in here](https://evil.example) ![x](https://evil.example/x.png) :red[ALERT] <b>x</b> "
        "www.evil.example help@evil.example"
    )
    at = _app(model=crafted)
    _no_exception(at)
    body = at.error[0].value
    assert crafted in shown(body)  # the name is there, every character of it ...
    assert not re.search(r"(?<!\\)[][()<>!:]", body)  # ... but none of it is Markdown or HTML
    assert not re.search(r"://|www\\\.|@\w", body)  # ... nor a bare link


def test_local_models_are_off_on_a_server_reachable_from_elsewhere(monkeypatch):
    from workbench.app import models

    monkeypatch.setattr(models, "DEFAULT_MODEL", "tiny-llama")
    monkeypatch.setenv("WORKBENCH_ALLOW_MODEL_PATHS", "0")
    at = _app(model="/etc")
    _no_exception(at)
    assert at.warning and "loads only its built-in models" in shown(at.warning[0].value)
    assert at.sidebar.selectbox(key="model_choice").value == "tiny-llama"
    assert "other" not in at.sidebar.selectbox(key="model_choice").options
    assert at.query_params["model"] == "tiny-llama"
    assert not at.error


@pytest.mark.parametrize(
    ("address", "setting", "allowed"),
    [("127.0.0.1", "", True), ("localhost", "", True), ("::1", "", True), ("0.0.0.0", "", False),
     ("", "", False), ("0.0.0.0", "1", True), ("127.0.0.1", "0", False)],
)
def test_model_paths_allowed(monkeypatch, address, setting, allowed):
    import streamlit as st

    from workbench.app import models

    monkeypatch.setattr(st, "get_option", lambda key: address if key == "server.address" else None)
    monkeypatch.setenv("WORKBENCH_ALLOW_MODEL_PATHS", setting)
    assert models.model_paths_allowed() is allowed


# ----------------------------------------------------------------------------- evaluate page


def test_evaluate_page_renders_task_and_prompts():
    at = _evaluate_page(task="antonym", template="arrow")
    _no_exception(at)
    assert not at.error
    assert at.selectbox(key="task").value == "antonym"
    assert at.selectbox(key="template").value == "arrow"
    assert [m.label for m in at.metric][:3] == ["train", "valid", "test"]
    zero_shot, two_shot = (c.value for c in at.code)
    assert zero_shot.endswith("->") and zero_shot.count("\n") == 0
    assert two_shot.endswith(zero_shot) and two_shot.count("\n") == 2  # two demonstrations
    assert "arrow" in at.main.caption[-1].value  # the template is described under the prompts


def test_view_comes_from_url():
    at = _evaluate_page(task="uppercase", template="qa", shots="3", split="valid", seed="7")
    _no_exception(at)
    assert at.selectbox(key="task").value == "uppercase"
    assert at.selectbox(key="template").value == "qa"
    assert at.number_input(key="shots").value == 3
    assert at.selectbox(key="split").value == "valid"
    assert at.number_input(key="seed").value == 7
    assert at.code[1].value.count("Q: ") == 4  # three demonstrations and the query


def test_run_evaluation_shows_results_for_both_methods():
    at = _evaluate_page(task="antonym")
    at.button[0].click().run()
    _no_exception(at)
    assert not at.error
    stored = at.session_state["evaluate_results"]
    assert list(stored["summary"]["method"]) == ["zero-shot", "2-shot ICL"]
    assert len(stored["results"]) == 8  # 4 queries x 2 methods
    summary_table = at.dataframe[1].value  # [0] is the task preview
    assert list(summary_table["method"]) == ["zero-shot", "2-shot ICL"]
    per_query = at.dataframe[-1].value
    assert len(per_query) == 4
    assert {"zero-shot: prediction", "2-shot ICL: prediction", "2-shot ICL: exact"} <= set(per_query.columns)
    assert {b.label for b in at.download_button} >= {"Chart (HTML)", "Per-query table (CSV)"}

    at.run()  # a rerun (any widget change) keeps the results
    assert at.dataframe[-1].value.shape == per_query.shape
    assert not at.info  # the settings are still the ones evaluated
    at.number_input(key="shots").set_value(3).run()
    assert at.info and "settings changed" in at.info[0].value


def _upload(at: AppTest, name: str, content: bytes, mime: str = "application/json") -> AppTest:
    at.radio(key="task_source").set_value("Upload a file").run()
    assert at.info and "Upload" in at.info[0].value
    at.file_uploader(key="task_file").set_value((name, content, mime))
    return at.run()


def test_uploaded_task_file_is_used():
    rows = "\n".join(f"w{i},W{i}" for i in range(12))
    at = _upload(_evaluate_page(), "mine.csv", f"input,output\n{rows}\n".encode(), "text/csv")
    _no_exception(at)
    assert not at.error
    assert at.subheader[0].value == "Task: mine"
    assert "task" not in at.query_params  # an uploaded file is not part of a shareable URL


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"input": "a", "output": "b"}', "expected a JSON list"),
        (b'[{"input": "a"}]', "missing field 'output'"),
        (b"[1, 2", "invalid JSON"),
    ],
)
def test_invalid_uploaded_file_shows_error(content, message):
    at = _upload(_evaluate_page(), "bad.json", content)
    _no_exception(at)
    assert at.error and message in shown(at.error[0].value)
    assert "bad.json" in shown(at.error[0].value) and "/tmp" not in shown(at.error[0].value)


def test_invalid_template_and_shots_show_errors():
    at = _evaluate_page(template="no placeholder here")
    _no_exception(at)
    assert at.selectbox(key="template").value == "custom"
    assert at.error and "{x}" in shown(at.error[0].value)

    rows = "\n".join(f"w{i},W{i}" for i in range(8))
    at = _upload(_evaluate_page(), "small.csv", f"input,output\n{rows}\n".encode(), "text/csv")
    at.number_input(key="shots").set_value(10).run()
    _no_exception(at)
    assert at.error and "too few" in shown(at.error[0].value)


# ----------------------------------------------------------------------------- figures and tables


def _summary(tasks=("antonym",)) -> pd.DataFrame:
    rows = []
    for task in tasks:
        for method, ft, em in [("zero-shot", 0.1, 0.05), ("10-shot ICL", 0.6, 0.5)]:
            rows.append({"task": task, "method": method, "n": 20, "first_token_acc": ft, "exact_match": em,
                         "majority_baseline": 0.05})
    return pd.DataFrame(rows)


def test_accuracy_bar_chart_one_trace_per_metric_one_bar_per_method():
    fig = accuracy_bar_chart(_summary())
    assert isinstance(fig, go.Figure)
    bars = [t for t in fig.data if t.type == "bar"]
    assert [t.name for t in bars] == ["first-token accuracy", "exact match"]
    for trace in bars:
        assert list(trace.x) == ["zero-shot", "10-shot ICL"]
    assert list(bars[0].y) == [0.1, 0.6] and list(bars[1].y) == [0.05, 0.5]
    assert fig.layout.barmode == "group"
    assert any("majority baseline" in a.text for a in fig.layout.annotations)
    assert "<html>" in fig.to_html(include_plotlyjs="cdn", full_html=True)


def test_accuracy_bar_chart_shows_prefix_match_where_the_results_have_it():
    summary = _summary().assign(prefix_match=[0.07, 0.55])
    bars = [t for t in accuracy_bar_chart(summary).data if t.type == "bar"]
    assert [t.name for t in bars] == ["first-token accuracy", "prefix match", "exact match"]
    assert list(bars[1].y) == [0.07, 0.55]


def test_accuracy_bar_chart_several_tasks_and_no_baseline():
    fig = accuracy_bar_chart(_summary(("antonym", "uppercase")))
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 2 and len(bars[0].x) == 2  # (task, method) multi-category axis
    assert list(bars[0].x[0]) == ["antonym", "antonym", "uppercase", "uppercase"]
    assert [t.name for t in fig.data if t.type == "scatter"] == ["majority baseline (exact match)"]

    fig = accuracy_bar_chart(_summary().drop(columns=["majority_baseline"]))
    assert len(fig.data) == 2 and not fig.layout.annotations


def test_per_query_table_puts_methods_side_by_side():
    results = pd.DataFrame(
        {
            "task": ["t"] * 4,
            "method": ["zero-shot", "zero-shot", "2-shot ICL", "2-shot ICL"],
            "input": ["a", "b", "a", "b"],
            "target": ["A", "B", "A", "B"],
            "prediction": ["x", "b", "a", "b"],
            "exact_match": [False, True, True, True],
            "first_token_correct": [False, True, True, True],
            "prefix_match": [False, True, True, True],
        }
    )
    table = side_by_side(results)
    assert list(table.columns) == [
        "input", "target",
        "zero-shot: prediction", "zero-shot: first token", "zero-shot: prefix", "zero-shot: exact",
        "2-shot ICL: prediction", "2-shot ICL: first token", "2-shot ICL: prefix", "2-shot ICL: exact",
    ]
    older = side_by_side(results.drop(columns="prefix_match"))  # saved before prefix match existed
    assert "zero-shot: prefix" not in older.columns and "zero-shot: exact" in older.columns
    assert list(table["input"]) == ["a", "b"]
    assert list(table["2-shot ICL: exact"]) == [True, True]
