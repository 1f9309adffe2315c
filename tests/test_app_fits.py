"""Fits from the app (the Fit page, ``workbench.app.fits`` and ``workbench.app.jobs``), the
Fit form's settings, uploaded task files on every page that takes a task, and figure export,
through ``streamlit.testing.v1.AppTest`` on tiny-llama with private run stores."""

from __future__ import annotations

import time

import pandas as pd
import plotly.graph_objects as go
import pytest
from app_pages import no_exception, open_page, private_stores, shown, wait_for_fits

import workbench.app.tasks
from workbench.app import export, fits
from workbench.store.runs import RunStore

TINY_TV = {"fit_TV_shots": 2, "fit_TV_n_prompts": 4, "fit_eval_limit": 4}
ROWS = "\n".join(f"w{i},W{i}" for i in range(16))
GOOD_CSV = f"input,output\n{ROWS}\n".encode()


@pytest.fixture
def user_runs(tmp_path, monkeypatch):
    return private_stores(monkeypatch, tmp_path)


def _jobs(store) -> list:
    return [job for job in fits.fit_jobs().jobs() if job.request.store == str(store)]


def _wait_until(condition, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


# ----------------------------------------------------------------------------- the Fit page


def test_a_fit_runs_in_the_background_and_its_run_shows_on_every_page(user_runs):
    at = open_page("fit", method="TV", task="uppercase")
    no_exception(at)
    assert at.selectbox(key="fit_method").value == "TV" and at.selectbox(key="fit_task").value == "uppercase"
    for key, value in TINY_TV.items():
        at.number_input(key=key).set_value(value)
    at.button(key="fit_start").click().run()
    no_exception(at)
    assert any("TV on uppercase (tiny-llama)" in shown(m.value) for m in at.markdown)  # the job is listed
    wait_for_fits(at)
    no_exception(at)
    [job] = _jobs(user_runs)
    assert job.state == "done" and job.metrics["uppercase"]["n_test"] == 4 and job.peak_mib > 0
    assert any(f"run {job.run_id} saved" in shown(c.value) for c in at.caption)
    assert list(RunStore(user_runs).list()["id"]) == [job.run_id]

    home = open_page("home")  # the run counts on the home page, without a restart
    runs = next(d.value for d in home.dataframe if "user" in d.value.columns)
    assert runs.set_index("method").at["TV", "user"] == 1
    compare = open_page("compare", source="Compute here", task="uppercase")
    assert any(job.run_id in shown(c.value) for c in compare.caption)  # the comparison uses it


def test_a_running_fit_can_be_stopped_and_saves_nothing(user_runs):
    at = open_page("fit", method="SITE", task="antonym")
    settings = {
        "fit_SITE_shots": 1,
        "fit_SITE_n_prompts": 2,
        "fit_SITE_steps": 5000,
        "fit_SITE_batch_size": 4,
    }
    for key, value in settings.items():
        at.number_input(key=key).set_value(value)
    at.button(key="fit_start").click().run()
    _wait_until(lambda: _jobs(user_runs)[0].done > 0)  # fitting: step reports come in
    at.run()
    assert at.get("progress")  # live progress of the running fit
    stop = next(b for b in at.button if b.label == "Stop")
    stop.click().run()
    wait_for_fits(at, timeout=60)
    [job] = _jobs(user_runs)
    assert job.state == "stopped" and job.run_id is None and 0 < job.done < 5000
    assert RunStore(user_runs).list().empty
    assert any("nothing saved" in c.value for c in at.caption)


def test_a_running_fit_does_not_block_another_session(user_runs):
    fitting = open_page("fit", method="SITE", task="antonym")
    for key, value in {"fit_SITE_shots": 1, "fit_SITE_n_prompts": 2, "fit_SITE_steps": 5000}.items():
        fitting.number_input(key=key).set_value(value)
    fitting.button(key="fit_start").click().run()
    _wait_until(lambda: _jobs(user_runs)[0].done > 0)
    try:
        other = open_page("evaluate", task="antonym", shots="1", limit="2")  # another tab, meanwhile
        other.button[0].click().run()
        no_exception(other)
        assert len(other.session_state["evaluate_results"]["results"]) == 4
        assert _jobs(user_runs)[0].state == "running"  # it got its answer while the fit went on
    finally:
        fits.fit_jobs().stop(_jobs(user_runs)[0].id)
        wait_for_fits(fitting, timeout=60)


def test_the_fit_form_is_built_from_the_settings_declarations(user_runs):
    from workbench.methods import METHODS
    from workbench.methods.settings import fields

    at = open_page("fit", method="FV", task="antonym")
    no_exception(at)
    declared = {f.name: f for f in fields(METHODS["FV"].Config)}
    shots = at.number_input(key="fit_FV_shots")
    assert shots.value == declared["shots"].default and shots.min == 1
    assert shots.proto.help == declared["shots"].spec.help  # the declaration's help is the tooltip
    layer = at.number_input(key="fit_FV_layer")  # may be None: empty, the placeholder says what None means
    assert layer.value is None and layer.proto.placeholder == declared["layer"].spec.none
    assert at.selectbox(key="fit_FV_when").options == list(declared["when"].spec.choices)
    assert "arrow" in at.selectbox(key="fit_FV_template").options  # the named templates


def test_a_setting_out_of_its_bounds_is_named_and_starts_no_fit(user_runs):
    at = open_page("fit", method="SITE", task="antonym")
    at.number_input(key="fit_SITE_lr").set_value(0.0).run()  # lr is declared above=0
    no_exception(at)
    assert at.error and "lr must be > 0" in shown(at.error[0].value), [e.value for e in at.error]
    assert at.button(key="fit_start").disabled  # no fit can start (AppTest, like a browser, cannot click it)
    at.run()
    assert not _jobs(user_runs)  # nothing was queued
    at.number_input(key="fit_SITE_lr").set_value(0.1).run()
    assert not at.error and not at.button(key="fit_start").disabled


def test_a_layer_past_the_models_layers_is_named(user_runs):
    at = open_page("fit", method="FV", task="antonym")
    at.number_input(key="fit_FV_layer").set_value(99).run()  # tiny-llama has 3 layers
    no_exception(at)
    assert at.error and "layer must be below the model's 3 layers" in shown(at.error[0].value)
    assert at.button(key="fit_start").disabled and not _jobs(user_runs)


# ----------------------------------------------------------------------------- uploaded tasks

UPLOAD_PAGES = {  # page -> query that opens it on a task; the key of its task picker
    "evaluate": ({}, "task"),
    "compare": ({"source": "Compute here"}, "cmp_task_here"),
    "head_relevance": ({}, "hr_task"),
    "fit": ({}, "fit_task"),
}


def _upload(at, picker: str, name: str, content: bytes, mime: str = "text/csv"):
    at.radio(key=f"{picker}_source").set_value("Upload a file").run()
    at.file_uploader(key=f"{picker}_file").set_value((name, content, mime))
    return at.run()


@pytest.mark.parametrize("page", list(UPLOAD_PAGES))
def test_an_uploaded_task_is_used_like_a_built_in_one(page, user_runs):
    query, picker = UPLOAD_PAGES[page]
    at = _upload(open_page(page, **query), picker, "my pairs.csv", GOOD_CSV)
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    assert "my_pairs" in uploaded_tasks(at)
    assert "task" not in at.query_params  # a file is not part of a shareable link
    page_text = " ".join(shown(e.value) for e in [*at.markdown, *at.info, *at.caption, *at.subheader])
    page_text += " ".join(b.label for b in at.button)
    assert "my_pairs" in page_text


def uploaded_tasks(at) -> dict:
    return at.session_state["uploaded_tasks"]


@pytest.mark.parametrize("page", [*UPLOAD_PAGES, "transfer"])
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.json", b'{"input": "a", "output": "b"}', "expected a JSON list"),
        ("bad.json", b'[{"input": "a"}]', "missing field 'output'"),
        ("bad.csv", b"input,output\na,b\n", "a task needs at least 5"),
    ],
)
def test_a_bad_upload_gives_a_clear_message(page, name, content, message, user_runs, tmp_path, monkeypatch):
    if page == "transfer":  # its uploader sits in an expander, for tasks that have a SITE run
        at = open_page("transfer")
        at.file_uploader(key="tr_task_file").set_value((name, content, "text/plain"))
        at.run()
    else:
        query, picker = UPLOAD_PAGES[page]
        at = _upload(open_page(page, **query), picker, name, content, "text/plain")
    no_exception(at)
    assert at.error and message in shown(at.error[0].value), [e.value for e in at.error]
    assert name in shown(at.error[0].value) and "/tmp" not in shown(at.error[0].value)


def test_an_oversized_upload_is_refused(user_runs, monkeypatch):
    monkeypatch.setattr(workbench.app.tasks, "MAX_FILE_BYTES", 100)
    at = _upload(open_page("evaluate"), "task", "big.csv", GOOD_CSV)
    assert at.error and "over the 100-byte limit" in shown(at.error[0].value)


# ----------------------------------------------------------------------------- export


def test_image_export_buttons_say_why_without_a_browser(user_runs, tmp_path, monkeypatch):
    import workbench.experiments.comparison

    (tmp_path / "results").mkdir()
    monkeypatch.setattr(workbench.experiments.comparison, "RESULTS", tmp_path / "results")
    rows = [
        {"task": "antonym", "method": m, "first": 0.5, "exact": 0.5, "s_per_query": 0.1, "tokens": 9}
        for m in ("zero-shot", "SITE")
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "results" / "methods_tiny-llama_qa.csv", index=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    at = open_page("compare")
    no_exception(at)
    images = [b for b in at.download_button if b.label in ("PNG", "SVG", "PDF")]
    assert images and all(b.disabled for b in images)
    assert all("needs a Chromium browser" in b.help for b in images)
    assert any("needs a Chromium browser" in c.value for c in at.caption)
    assert any(b.label == "Chart (HTML)" and not b.disabled for b in at.download_button)
    assert any(b.label.endswith("(CSV)") and not b.disabled for b in at.download_button)


@pytest.mark.skipif(export.image_export_problem() is not None, reason="no Chromium or kaleido here")
@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg"), ("pdf", b"%PDF")])
def test_figures_export_as_images(fmt, magic):
    figure = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    assert export.figure_image(figure, fmt).lstrip()[: len(magic)] == magic
