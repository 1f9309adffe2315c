"""Streamlit helpers shared by the app's pages: the model picker, cached loaders, URL state
and figure export. Pages stay thin: widgets -> ``workbench`` -> ``analyses`` figures.

The view lives in the URL (``?model=...&task=...``): :func:`seed_from_query` gives a
widget its first value from the URL, :func:`share_in_url` writes the current values back.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import tempfile
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from workbench.model.loading import DEFAULT_MODEL, LoadedModel, ModelLoadError, available_models, load_model
from workbench.tasks.files import MAX_FILE_BYTES, TaskFileError, load_task
from workbench.tasks.task import Task

OTHER_MODEL = "other"
MODEL_NOTES = {
    DEFAULT_MODEL: "smollm2-135m-instruct (default)",
    "tiny-llama": "tiny-llama (random, tests)",
    "tiny-gpt2": "tiny-gpt2 (random, tests)",
    OTHER_MODEL: "Other: local folder or HF name",
}
UPLOAD_LIMIT_MB = MAX_FILE_BYTES // 2**20


# ----------------------------------------------------------------------------- URL state


def seed_from_query(
    key: str, default: Any, cast: Callable[[str], Any] = str, valid: Container | None = None,
    param: str | None = None,
) -> None:
    """Give the widget with ``key`` its first value from ``?key=...`` (or ``?param=...``; else
    ``default``), once per session; a value that does not cast or is not in ``valid`` falls
    back to default."""
    if key in st.session_state:
        return
    value = default
    raw = st.query_params.get(param or key)
    if raw is not None:
        try:
            value = cast(raw)
        except ValueError:
            value = default
    if valid is not None and value not in valid:
        value = default
    st.session_state[key] = value


def share_in_url(**values: Any) -> None:
    """Write the view into the URL so it can be shared; ``None`` removes a parameter."""
    for key, value in values.items():
        if value is None:
            st.query_params.pop(key, None)
        else:
            st.query_params[key] = str(value)


def clicked_cell(event) -> list | None:
    """The ``customdata`` of the first clicked cell in a Plotly selection event
    (``st.session_state[key]`` of a chart with ``on_select``), or None."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or ():
        data = point.get("customdata")
        if data:
            return list(data)
    return None


# ----------------------------------------------------------------------------- models


def model_picker() -> str:
    """The sidebar model picker shared by every page, kept in ``?model=``. Returns the name."""
    choices = available_models()
    if "model_choice" not in st.session_state:
        requested = st.query_params.get("model") or DEFAULT_MODEL
        st.session_state.model_choice = requested if requested in choices else OTHER_MODEL
        if requested not in choices:
            st.session_state.model_path = requested
    with st.sidebar:
        choice = st.selectbox(
            "Model", [*choices, OTHER_MODEL], key="model_choice", format_func=MODEL_NOTES.get
        )
        name = choice
        if choice == OTHER_MODEL:
            name = st.text_input(
                "Model directory or Hugging Face name",
                key="model_path",
                help="A local folder with config and weights, or a name already in the local "
                "Hugging Face cache (there is no hub access at run time).",
            ).strip()
    if not name:
        st.info("Type a local model directory or a Hugging Face model name in the sidebar.")
        st.stop()
    share_in_url(model=name)
    return name


def current_model_name() -> str:
    return st.query_params.get("model") or DEFAULT_MODEL


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_model(name: str) -> LoadedModel:
    return load_model(name)


def get_model(name: str) -> LoadedModel:
    """The model, loaded once per server process; a load error is shown and stops the page."""
    try:
        with st.spinner(f"Loading model {name} (the embedded model takes ~15 s the first time) ..."):
            return _load_model(name)
    except ModelLoadError as err:
        st.error(str(err), icon=":material/error:")
        st.stop()


def current_model() -> LoadedModel:
    """The model picked in the sidebar (or ``?model=``), with its shape shown in the sidebar."""
    model = get_model(current_model_name())
    shape = model.heads.shape
    st.sidebar.caption(
        f"**{model.name}** ({model.source}, {model.device}): {shape.n_layers} layers x "
        f"{shape.n_heads} heads ({shape.n_kv_heads} key/value), d_model {shape.d_model}"
    )
    return model


# ----------------------------------------------------------------------------- tasks


@st.cache_data(show_spinner=False)
def get_task(name: str) -> Task:
    """A built-in task by name (raises ``TaskFileError`` for an unknown one)."""
    return load_task(name)


@st.cache_data(show_spinner=False, max_entries=16)
def task_from_upload(file_name: str, data: bytes) -> Task:
    """A user's uploaded JSON / CSV task file, validated by ``workbench.tasks``.

    Raises ``TaskFileError`` with the uploaded file's name (not the temp path) in it."""
    name = Path(file_name).name or "uploaded.json"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            task = load_task(path)
        except TaskFileError as err:
            raise TaskFileError(str(err).replace(str(path), name)) from None
    return dataclasses.replace(task, path="")  # the temp file is gone


# ----------------------------------------------------------------------------- export


def export_buttons(
    stem: str, figure: go.Figure | None = None, tables: dict[str, pd.DataFrame] | None = None
) -> None:
    """One row of download buttons: the figure as standalone HTML (always) and as PNG / SVG
    when kaleido and a Chromium are installed (otherwise a note says so), each table as CSV.
    ``tables`` maps a button label to a frame; its file is ``<stem>_<label slug>.csv``."""
    chromium = shutil.which("chromium") or shutil.which("google-chrome")
    image_export = importlib.util.find_spec("kaleido") is not None and chromium is not None
    with st.container(horizontal=True):
        if figure is not None:
            st.download_button(
                "Chart (HTML)",
                data=lambda: figure.to_html(include_plotlyjs=True, full_html=True),
                file_name=f"{stem}.html",
                mime="text/html",
                on_click="ignore",
                icon=":material/download:",
                help="A standalone HTML file with plotly.js inside: opens offline in any browser.",
            )
            for fmt in ("png", "svg") if image_export else ():
                st.download_button(
                    f"Chart ({fmt.upper()})",
                    data=lambda fmt=fmt: figure.to_image(format=fmt, scale=2),
                    file_name=f"{stem}.{fmt}",
                    on_click="ignore",
                    icon=":material/image:",
                )
        for label, frame in (tables or {}).items():
            slug = "_".join(label.lower().split())
            st.download_button(
                f"{label} (CSV)",
                data=frame.to_csv(index=False),
                file_name=f"{stem}_{slug}.csv",
                mime="text/csv",
                on_click="ignore",
                icon=":material/download:",
            )
    if figure is not None and not image_export:
        st.caption(
            "PNG / SVG export needs `kaleido` and a Chromium browser, and this install lacks one "
            "of them: use the HTML file, or the camera button in the chart's toolbar."
        )


# ----------------------------------------------------------------------------- fitted runs

RUN_STORES = {"bundled": "bundled_store", "user": "user_store"}  # label -> workbench.store.runs factory


def run_store(label: str):
    """The ``bundled`` (read-only, shipped in results/runs) or ``user`` run store."""
    from workbench.store import runs

    return getattr(runs, RUN_STORES[label])()


def fitted_runs(method: str, model_name: str) -> pd.DataFrame:
    """The newest single-task run of ``method`` per task for ``model_name``, from both stores
    (a user's run wins over a bundled one of the same age): columns task, id, store, created,
    metrics (that task's entry of the run's metrics, or {})."""
    columns = ["task", "id", "store", "created", "metrics"]
    frames = []
    for label in RUN_STORES:
        try:
            runs = run_store(label).list(method=method, model=model_name)
        except Exception as err:  # an unreadable store must not take the page down
            st.warning(f"Could not read the {label} run store: {err}", icon=":material/warning:")
            continue
        runs = runs[runs["tasks"].map(len) == 1]
        if runs.empty:
            continue
        task = runs["tasks"].map(lambda ts: ts[0])
        metrics = [m[t] if isinstance(m.get(t), dict) else m for m, t in zip(runs["metrics"], task)]
        columns_here = {"task": task, "id": runs["id"], "store": label, "created": runs["created"]}
        frames.append(pd.DataFrame({**columns_here, "metrics": metrics}))
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True).sort_values("created", kind="stable")
    return table.drop_duplicates("task", keep="last").sort_values("task").reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=256)
def _fit_from_store(root: str, label: str, run_id: str, model_name: str, _model: LoadedModel):
    from workbench.store.codec import from_run

    return from_run(run_store(label).load(run_id), _model)


def stored_fit(label: str, run_id: str, model: LoadedModel):
    """A stored run of any method as its fitted method on ``model``'s device (cached: runs
    never change). Raises ``workbench.store.runs.RunError`` when the run is unreadable or
    fits another model shape."""
    return _fit_from_store(str(run_store(label).root), label, run_id, model.name, model)


def task_fits(task: str, model: LoadedModel, methods) -> tuple[dict, dict, list[str]]:
    """The newest stored fit of each of ``methods`` for one task: (method -> fit,
    method -> its row of :func:`fitted_runs`, methods whose run does not load, with why)."""
    from workbench.store.runs import RunError

    fits, rows, problems = {}, {}, []
    for method in methods:
        runs = fitted_runs(method, model.name)
        runs = runs[runs["task"] == task]
        if runs.empty:
            continue
        row = runs.iloc[0]
        try:
            fits[method] = stored_fit(row["store"], row["id"], model)
            rows[method] = row
        except RunError as err:
            problems.append(f"{method}: {err}")
    return fits, rows, problems
