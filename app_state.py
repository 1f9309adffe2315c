"""Streamlit helpers shared by the app's pages: the views and their navigation, the model
picker, cached loaders, URL state and figure export. Pages stay thin: widgets ->
``workbench`` -> ``analyses`` figures.

The view lives in the URL (``?model=...&task=...``): :func:`seed_from_query` gives a
widget its first value from the URL, :func:`share_in_url` writes the current values back.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import ipaddress
import os
import re
import shutil
import tempfile
import typing
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app_jobs import FitJob, FitJobs, FitRequest
from workbench.methods import MethodConfig
from workbench.model.loading import DEFAULT_MODEL, LoadedModel, ModelLoadError, available_models, load_model
from workbench.scoring import METRICS
from workbench.tasks.files import MAX_FILE_BYTES, TaskFileError, catalog, load_task
from workbench.tasks.prompts import TEMPLATES
from workbench.tasks.task import Task

# ----------------------------------------------------------------------------- views


@dataclasses.dataclass(frozen=True)
class View:
    """One page of the app: its script in ``pages/``, its name in the navigation and the one
    sentence its card on the home page says about it. Its URL is ``/<script stem>``."""

    script: str
    title: str
    icon: str
    summary: str

    @property
    def url_path(self) -> str:
        return Path(self.script).stem


HOME = View(
    "pages/home.py",
    "Home",
    ":material/home:",
    "What the workbench is, the loaded model and runs, and where to go.",
)
VIEWS = [  # the navigation's order; the home page shows a card for each
    View(
        "pages/evaluate.py",
        "Evaluate",
        ":material/fact_check:",
        "Zero-shot against k-shot in-context learning on one task, query by query.",
    ),
    View(
        "pages/compare.py",
        "Compare methods",
        ":material/leaderboard:",
        "Every method on the same held-out queries: accuracy, prompt tokens, time and memory.",
    ),
    View(
        "pages/head_relevance.py",
        "Head relevance",
        ":material/grid_on:",
        "Which attention heads carry a task: SITE's alpha, the FV and LTV maps side by side.",
    ),
    View(
        "pages/transfer.py",
        "Head transfer",
        ":material/swap_horiz:",
        "Do one task's heads serve another? The task x task transfer matrix, cell by cell.",
    ),
    View(
        "pages/regression.py",
        "Function regression",
        ":material/show_chart:",
        "A transformer trained to regress in context: do LTV, FV and TV carry the task past its training length?",
    ),
    View(
        "pages/adaptive.py",
        "Adaptive vectors",
        ":material/tune:",
        "ATV one query at a time: its vectors per layer, the task they look like, and what they do to the answer.",
    ),
    View(
        "pages/fit.py",
        "Fit a method",
        ":material/model_training:",
        "Fit any method on any task in the background, watch it, stop it; runs land in your store.",
    ),
]


def run_app() -> None:
    """The app, as ``app.py`` runs it: page set-up, the navigation (home first, the default,
    then :data:`VIEWS`, in a bar at the top), the sidebar's model picker, then the page the
    URL names."""
    st.set_page_config(page_title="Task Vector Workbench", page_icon=":material/hub:", layout="wide")
    pages = [
        st.Page(view.script, title=view.title, icon=view.icon, default=view is HOME)
        for view in [HOME, *VIEWS]
    ]
    page = st.navigation(pages, position="top")
    model_picker()
    page.run()


def enter_page() -> None:
    """Called first on every page. With a ``pages/`` folder beside ``app.py``, Streamlit starts
    in its old folder mode until an entry script calls ``st.navigation``: on a freshly
    started server a direct link such as ``/head_relevance?task=antonym`` runs that page file
    alone (narrow layout, file names as navigation, no model picker). Here the page notices,
    turns folder mode off (what ``st.navigation`` does) and runs the whole app in its place,
    in this same script run (widget events included): page hashes come from the URL path, so
    the app opens the same page, with the same query."""
    from streamlit.runtime.pages_manager import PagesManager

    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        run_app()
        st.stop()  # the page ran inside the app; this folder-mode run of it ends here


# ----------------------------------------------------------------------------- constants

OTHER_MODEL = "other"
ALLOW_MODEL_PATHS = "WORKBENCH_ALLOW_MODEL_PATHS"  # env var: 1 lets a server reachable from elsewhere load local models
MODEL_NOTES = {
    DEFAULT_MODEL: "smollm2-135m-instruct (default)",
    "tiny-llama": "tiny-llama (random, tests)",
    "tiny-gpt2": "tiny-gpt2 (random, tests)",
    OTHER_MODEL: "Other: local folder or HF name",
}
UPLOAD_LIMIT_MB = MAX_FILE_BYTES // 2**20


# ----------------------------------------------------------------------------- text

_MARKDOWN_SYNTAX = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


# Where GFM would turn bare text into a link (https://..., www...., a@b.c): a zero-width space
# breaks the pattern; Streamlit finds such links after escapes are undone.
_AUTOLINK = re.compile(r"(?<=\\:)(?=//)|(?<=[Ww]{3})(?=\\\.)|(?<=@)")


def text(value: object) -> str:
    """``value`` as literal text in any element that renders Markdown (``st.error``,
    ``st.caption``, ...): every Markdown, HTML and directive character is escaped, and bare
    URLs and e-mail addresses are kept from turning into links. Anything that comes from a
    URL, a file or a run store goes through here, so a crafted link or file cannot put links,
    images or styled text into the app."""
    return _AUTOLINK.sub("\u200b", _MARKDOWN_SYNTAX.sub(r"\\\1", str(value)))


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
        except (ValueError, KeyError):
            value = default
    if valid is not None and value not in valid:
        value = default
    st.session_state[key] = value


def seed_list_from_query(key: str, default: list, valid: Container, param: str | None = None) -> None:
    """:func:`seed_from_query` for a multiselect: ``?param=a,b`` (the values in ``valid``;
    none of them: ``default``)."""
    if key in st.session_state:
        return
    raw = st.query_params.get(param or key) or ""
    st.session_state[key] = [value for value in raw.split(",") if value in valid] or list(default)


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


def model_paths_allowed() -> bool:
    """Whether this server loads models other than the built-in ones (a local folder or a name
    in the Hugging Face cache, typed in the sidebar or asked for by ``?model=``).

    Off on a server reachable from other machines, where anyone could make it load any local
    directory (an oracle of which folders exist, and a way to fill its memory). On when the
    server listens on the loopback interface only (``server.address`` 127.0.0.1 or
    localhost, the default in ``.streamlit/config.toml``), or when the environment variable
    ``WORKBENCH_ALLOW_MODEL_PATHS`` is 1 / true / yes (0 / false / no turns it off anywhere)."""
    setting = os.environ.get(ALLOW_MODEL_PATHS, "").strip().lower()
    if setting in ("1", "true", "yes"):
        return True
    if setting in ("0", "false", "no"):
        return False
    address = str(st.get_option("server.address") or "").strip("[]")
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # unset: Streamlit listens on every interface
        return False


def model_picker() -> str:
    """The sidebar model picker shared by every page, kept in ``?model=``. Returns the name."""
    builtin = available_models()
    paths_allowed = model_paths_allowed()
    choices = [*builtin, OTHER_MODEL] if paths_allowed else builtin
    if "model_choice" not in st.session_state:
        requested = st.query_params.get("model") or DEFAULT_MODEL
        if requested in builtin:
            st.session_state.model_choice = requested
        elif paths_allowed:
            st.session_state.model_choice = OTHER_MODEL
            st.session_state.model_path = requested
        else:
            st.session_state.model_choice = DEFAULT_MODEL
            st.warning(
                f"The link asks for the model {text(requested)}, but this server loads only its built-in "
                f"models: it is reachable from other machines. Showing {DEFAULT_MODEL} instead. (Set "
                f"{ALLOW_MODEL_PATHS}=1 where the server is started to allow local folders.)",
                icon=":material/block:",
            )
    with st.sidebar:
        choice = st.selectbox("Model", choices, key="model_choice", format_func=MODEL_NOTES.get)
        name = choice
        if choice == OTHER_MODEL:
            name = st.text_input(
                "Model directory or Hugging Face name",
                key="model_path",
                help="A local folder with config and weights, or a name already in the local "
                "Hugging Face cache (there is no hub access at run time).",
            ).strip()
        elif not paths_allowed:
            st.caption(f"Built-in models only: this server is reachable from other machines ({ALLOW_MODEL_PATHS}).")
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
    if name not in available_models() and not model_paths_allowed():
        st.error(f"This server loads only its built-in models, not {text(name)}.", icon=":material/block:")
        st.stop()
    try:
        with st.spinner(f"Loading model {text(name)} (the embedded model takes ~15 s the first time) ..."):
            return _load_model(name)
    except ModelLoadError as err:
        st.error(text(err), icon=":material/error:")
        st.stop()


def current_model() -> LoadedModel:
    """The model picked in the sidebar (or ``?model=``), with its shape shown in the sidebar,
    and a warning there for any run store or run that cannot be read."""
    model = get_model(current_model_name())
    shape = model.heads.shape
    st.sidebar.caption(
        f"**{text(model.name)}** ({model.source}, {model.device}): {shape.n_layers} layers x "
        f"{shape.n_heads} heads ({shape.n_kv_heads} key/value), d_model {shape.d_model}"
    )
    show_store_problems()
    return model


# ----------------------------------------------------------------------------- tasks

UPLOADED_TASKS = "uploaded_tasks"  # session state: name -> Task of each file uploaded this session
BUILT_IN, UPLOAD = "Built-in", "Upload a file"


@st.cache_data(show_spinner=False)
def builtin_tasks() -> dict[str, dict]:
    """The built-in task library: name -> description, category, case sensitivity."""
    return catalog()


@st.cache_data(show_spinner=False)
def _builtin_task(name: str) -> Task:
    return load_task(name)


def get_task(name: str) -> Task:
    """A task by name: one uploaded in this session, else a built-in one (raises
    ``TaskFileError`` for a name that is neither)."""
    uploaded = st.session_state.get(UPLOADED_TASKS, {})
    if name in uploaded:
        return uploaded[name]
    if name not in builtin_tasks():
        raise TaskFileError(
            f"No task {name!r} here: it is not built in, and no file of that name was uploaded in "
            "this session (upload it again)."
        )
    return _builtin_task(name)


def uploaded_tasks() -> dict[str, Task]:
    return dict(st.session_state.get(UPLOADED_TASKS, {}))


@st.cache_data(show_spinner=False, max_entries=16)
def task_from_upload(file_name: str, data: bytes) -> Task:
    """A user's uploaded JSON / CSV task file, validated by ``workbench.tasks`` (size, format,
    every record). Its name is the file's stem (``_uploaded`` added when a built-in task has
    that name). Raises ``TaskFileError`` naming the uploaded file (never a temp path)."""
    shown_name = Path(file_name).name
    stem, suffix = Path(shown_name).stem, Path(shown_name).suffix.lower()
    if suffix not in (".json", ".csv"):
        raise TaskFileError(f"{shown_name}: a task file is .json or .csv.")
    if len(data) > MAX_FILE_BYTES:
        raise TaskFileError(
            f"{shown_name}: {len(data):,} bytes is over the {MAX_FILE_BYTES:,}-byte limit for a task file."
        )
    safe_stem = re.sub(r"[^\w-]+", "_", stem).strip("_") or "uploaded"
    if safe_stem in catalog():
        safe_stem += "_uploaded"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{safe_stem}{suffix}"
        path.write_bytes(data)
        try:
            task = load_task(path)
        except TaskFileError as err:
            raise TaskFileError(str(err).replace(str(path), shown_name)) from None
    return dataclasses.replace(task, path="")  # the temp file is gone


def task_upload(key: str) -> Task | None:
    """A file uploader for a task file; a valid file becomes a task of this session (every
    page can then use it by name). A bad file shows why and stops the page. None until a
    file is uploaded."""
    upload = st.file_uploader(
        "Task file: a JSON list of {\"input\", \"output\"} records, or a CSV with input,output columns",
        type=["json", "csv"],
        max_upload_size=UPLOAD_LIMIT_MB,
        key=key,
        help=f"Up to {UPLOAD_LIMIT_MB} MB; every record is checked (fields, duplicates, line breaks, count).",
    )
    if upload is None:
        return None
    try:
        task = task_from_upload(upload.name, upload.getvalue())
    except TaskFileError as err:
        st.error(text(err), icon=":material/error:")
        st.stop()
    st.session_state.setdefault(UPLOADED_TASKS, {})[task.name] = task
    return task


def task_picker(key: str, *, names=(), default: str | None = None, param: str = "task") -> str | None:
    """Pick one task: a built-in one (or one of ``names``, e.g. tasks with runs; and the
    files uploaded this session) in a select box kept in ``?task=``, or a file to upload.
    Returns the task's name, or None while no file is uploaded; fetch its data with
    :func:`get_task`."""
    options = sorted({*builtin_tasks(), *names, *uploaded_tasks()})
    fallback = default if default in options else ("antonym" if "antonym" in options else options[0])
    seed_from_query(key, fallback, valid=options, param=param)
    source = st.radio("Task", [BUILT_IN, UPLOAD], horizontal=True, key=f"{key}_source")
    if source == UPLOAD:
        share_in_url(**{param: None})  # a file is not part of a shareable link
        task = task_upload(f"{key}_file")
        if task is None:
            st.info("Upload a JSON or CSV task file to use it here.", icon=":material/upload_file:")
        return None if task is None else task.name
    name = st.selectbox("Task", options, key=key, label_visibility="collapsed")
    share_in_url(**{param: name})
    info = builtin_tasks().get(name)
    if info:
        st.caption(
            f"{info.get('description', '')} ({info.get('category', '')}, "
            f"{'case-sensitive' if info.get('case_sensitive') else 'case-insensitive'})"
        )
    elif name in uploaded_tasks():
        st.caption(f"Uploaded in this session: {len(uploaded_tasks()[name])} pairs.")
    return name


# ----------------------------------------------------------------------------- export


IMAGE_FORMATS = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}
BROWSER_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")


def image_export_problem() -> str | None:
    """Why figures cannot be exported as PNG / SVG / PDF here, or None when they can:
    plotly renders images through kaleido, which drives a Chromium (Debian's ``chromium``;
    ``BROWSER_PATH`` names another)."""
    if importlib.util.find_spec("kaleido") is None:
        return "PNG, SVG and PDF export needs the Python package kaleido (make setup installs it)."
    browser = os.environ.get("BROWSER_PATH")
    if browser:
        return None if os.access(browser, os.X_OK) else f"PNG, SVG and PDF export: BROWSER_PATH={browser} is not a program."
    if not any(shutil.which(name) for name in BROWSER_NAMES):
        return (
            "PNG, SVG and PDF export needs a Chromium browser, and none is installed here "
            "(Debian / Ubuntu: apt-get install chromium). The HTML file has the same chart."
        )
    return None


def figure_image(figure: go.Figure, fmt: str) -> bytes:
    """``figure`` as PNG (twice the on-screen resolution), SVG or PDF bytes, through kaleido."""
    return figure.to_image(format=fmt, scale=2 if fmt == "png" else 1)


def export_buttons(
    stem: str, figure: go.Figure | None = None, tables: dict[str, pd.DataFrame] | None = None
) -> None:
    """One row of download buttons: the figure as standalone HTML (always) and as PNG / SVG /
    PDF (made when clicked, a few seconds each; disabled, saying why, where no Chromium or
    kaleido is installed), and each table as CSV. ``tables`` maps a button label to a frame;
    its file is ``<stem>_<label slug>.csv``."""
    stem = re.sub(r"[^\w.+-]+", "_", stem)
    problem = image_export_problem() if figure is not None else None
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
            for fmt, mime in IMAGE_FORMATS.items():
                st.download_button(
                    fmt.upper(),
                    data=lambda fmt=fmt: figure_image(figure, fmt),
                    file_name=f"{stem}.{fmt}",
                    mime=mime,
                    on_click="ignore",
                    icon=":material/image:",
                    disabled=problem is not None,
                    help=problem or f"The chart as {fmt.upper()}, drawn by kaleido in a headless Chromium.",
                )
        for label, frame in (tables or {}).items():
            slug = "_".join(label.lower().split())
            st.download_button(
                f"{label} (CSV)",
                data=lambda frame=frame: frame.to_csv(index=False),
                file_name=f"{stem}_{slug}.csv",
                mime="text/csv",
                on_click="ignore",
                icon=":material/download:",
            )
    if problem is not None:
        st.caption(problem)


@st.cache_data(show_spinner=False, max_entries=16)
def _benchmark_table(path: str, stamp: int) -> pd.DataFrame:
    from workbench.experiments.comparison import read_benchmark

    return read_benchmark(path)


def benchmark_table(path: Path) -> pd.DataFrame:
    """A saved methods benchmark table (``read_benchmark``), read again only when the file
    changes. Raises OSError / ValueError like ``read_benchmark``."""
    return _benchmark_table(str(path), Path(path).stat().st_mtime_ns)


@st.cache_data(show_spinner=False, max_entries=16)
def _transfer_table(path: str, stamp: int, model: str) -> pd.DataFrame:
    from workbench.experiments.transfer import read_transfer_csv

    return read_transfer_csv(path, model=model)


def transfer_table(path: Path, model: str) -> pd.DataFrame:
    """A saved transfer matrix's rows for ``model`` (``read_transfer_csv``), read again only
    when the file changes."""
    return _transfer_table(str(path), Path(path).stat().st_mtime_ns, model)


def benchmark_metric_columns() -> dict[str, str]:
    """The answer metrics (``workbench.scoring.METRICS``) under their column names in the
    methods benchmark tables (``comparison.from_summary`` renames them: first_token_acc ->
    first, ...): benchmark column -> label. A metric added to METRICS shows up here."""
    from workbench.experiments.comparison import from_summary

    renamed = from_summary(pd.DataFrame(columns=["method", *METRICS]))
    return dict(zip(list(renamed.columns)[1 : 1 + len(METRICS)], METRICS.values()))


# ----------------------------------------------------------------------------- fitted runs

RUN_STORES = {"bundled": "bundled_store", "user": "user_store"}  # label -> workbench.store.runs factory
RUN_COLUMNS = ["id", "method", "model", "tasks", "created", "metrics", "store"]


def run_store(label: str):
    """The ``bundled`` (read-only, shipped in results/runs) or ``user`` run store."""
    from workbench.store import runs

    return getattr(runs, RUN_STORES[label])()


def _store_stamp(store) -> tuple:
    """What changes when the runs a store lists change: its SQLite index, or (a read-only
    store, listed from its folders) the run folders' metadata files."""
    if not store.read_only:
        index = store.root / "index.sqlite"
        if not index.exists():  # a new store: its first listing creates the index
            return ("index", 0, 0)
        stat = index.stat()
        return ("index", stat.st_mtime_ns, stat.st_size)
    metas = [path.stat().st_mtime_ns for path in store.root.glob("*/meta.json")]
    return ("folders", len(metas), max(metas, default=0))


def _valid_run_row(row) -> bool:
    return (
        isinstance(row.id, str) and bool(row.id)
        and isinstance(row.method, str)
        and isinstance(row.model, str)
        and isinstance(row.tasks, list) and bool(row.tasks) and all(isinstance(t, str) for t in row.tasks)
        and isinstance(row.created, str)
        and isinstance(row.metrics, dict)
    )


@st.cache_resource(show_spinner=False, max_entries=8)
def _read_store(label: str, root: str, stamp: tuple) -> tuple[pd.DataFrame, list[str]]:
    """Every run a store lists (``root`` and ``stamp`` key the cache: a new run, here or from
    the CLI, changes the stamp), and why any were skipped. Never raises: a damaged store or
    run becomes a problem to show. Cached as a resource, shared and not copied: read-only."""
    try:
        frame = run_store(label).list()
    except Exception as err:  # one unreadable file must not take a page down
        return pd.DataFrame(columns=RUN_COLUMNS), [f"The {label} run store ({root}) could not be read: {err}"]
    valid = [_valid_run_row(row) for row in frame.itertuples()]
    problems = [
        f"Skipped a damaged run in the {label} store: {row.id if isinstance(row.id, str) else '(no id)'}"
        for row, ok in zip(frame.itertuples(), valid) if not ok
    ]
    frame = frame[pd.Series(valid, index=frame.index, dtype=bool)].reset_index(drop=True)
    frame["store"] = label
    return frame[RUN_COLUMNS], problems


def store_runs(label: str) -> tuple[pd.DataFrame, list[str]]:
    """All runs of one store (columns :data:`RUN_COLUMNS`), read once per change of the
    store, and the problems met reading it."""
    try:
        store = run_store(label)
        stamp = _store_stamp(store)
    except Exception as err:
        return pd.DataFrame(columns=RUN_COLUMNS), [f"The {label} run store could not be opened: {err}"]
    return _read_store(label, str(store.root), stamp)


def all_runs() -> pd.DataFrame:
    """The runs of both stores (columns :data:`RUN_COLUMNS`), bundled first."""
    frames = [store_runs(label)[0] for label in RUN_STORES]
    frames = [frame for frame in frames if not frame.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)


def show_store_problems() -> None:
    """A warning in the sidebar for each store or run that could not be read (skipped)."""
    for label in RUN_STORES:
        for problem in store_runs(label)[1]:
            st.sidebar.warning(text(problem), icon=":material/warning:")


def method_runs(method: str, model_name: str) -> pd.DataFrame:
    """Every run of ``method`` for ``model_name`` in both stores, of one task or several,
    newest first (columns :data:`RUN_COLUMNS`)."""
    runs = all_runs()
    runs = runs[(runs["method"].str.lower() == method.lower()) & (runs["model"] == model_name)]
    return runs.sort_values("created", ascending=False, kind="stable").reset_index(drop=True)


def fitted_runs(method: str, model_name: str) -> pd.DataFrame:
    """The newest single-task run of ``method`` per task for ``model_name``, from both stores
    (a user's run wins over a bundled one of the same age): columns task, id, store, created,
    metrics (that task's entry of the run's metrics, or {})."""
    columns = ["task", "id", "store", "created", "metrics"]
    runs = all_runs()
    runs = runs[
        (runs["method"].str.lower() == method.lower())
        & (runs["model"] == model_name)
        & (runs["tasks"].map(len) == 1)
    ]
    if runs.empty:
        return pd.DataFrame(columns=columns)
    task = runs["tasks"].map(lambda ts: ts[0])
    metrics = [m[t] if isinstance(m.get(t), dict) else m for m, t in zip(runs["metrics"], task)]
    table = pd.DataFrame(
        {"task": task, "id": runs["id"], "store": runs["store"], "created": runs["created"], "metrics": metrics}
    ).sort_values("created", kind="stable")
    return table.drop_duplicates("task", keep="last").sort_values("task").reset_index(drop=True)


@st.cache_resource(show_spinner=False, max_entries=256)
def _fit_from_store(root: str, label: str, run_id: str, model_name: str, _model: LoadedModel):
    from workbench.store.codec import from_run
    from workbench.store.runs import RunError

    try:
        return from_run(run_store(label).load(run_id), _model)
    except RunError:
        raise
    except Exception as err:  # a truncated tensors file, a meta.json of the wrong shape, ...
        raise RunError(f"Run {run_id} in the {label} store is damaged: {type(err).__name__}: {err}") from None


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
            problems.append(f"{method} run {row['id']} ({row['store']} store): {err}")
    return fits, rows, problems


# ----------------------------------------------------------------------------- fits in the background


def config_form(method: str, key: str, columns: int = 4) -> MethodConfig:
    """A widget per field of ``method``'s config dataclass (its defaults first), laid out in
    ``columns``; returns the config. Numbers that may be None (e.g. FV's layer) are left
    empty for "chosen by the method"; the template is picked from the named templates."""
    from workbench.methods import get_method

    config_class = get_method(method).Config
    defaults = config_class()
    hints = typing.get_type_hints(config_class)
    values = {}
    cells = st.columns(columns)
    for i, spec in enumerate(dataclasses.fields(config_class)):
        name, default, kind = spec.name, getattr(defaults, spec.name), hints[spec.name]
        label = name.replace("_", " ")
        widget_key = f"{key}_{name}"
        with cells[i % columns]:
            if name == "template":
                options = list(dict.fromkeys([default, *TEMPLATES]))
                values[name] = st.selectbox(label, options, key=widget_key)
            elif kind is bool:
                values[name] = st.checkbox(label, value=default, key=widget_key)
            elif kind in (int, int | None):
                values[name] = st.number_input(
                    label, value=default, min_value=0, step=1, key=widget_key,
                    placeholder="chosen by the fit" if default is None else None,
                )
            elif kind in (float, float | None):
                values[name] = st.number_input(label, value=default, min_value=0.0, format="%g", key=widget_key)
            else:
                values[name] = st.text_input(label, value=str(default), key=widget_key)
    return config_class(**{name: value for name, value in values.items()})


@st.cache_resource(show_spinner=False)
def fit_jobs() -> FitJobs:
    """The server's one fit queue, shared by every session."""
    return FitJobs()


def start_fit(method: str, task_names: list[str], config: MethodConfig, model_name: str, eval_limit: int) -> FitJob:
    """Queue a fit of ``method`` on the named tasks (built-in or uploaded this session); it
    runs in its own process and saves to the user's run store. Raises ``TaskFileError``."""
    tasks = tuple(get_task(name) for name in task_names)
    request = FitRequest(method, model_name, tasks, config, str(run_store("user").root), int(eval_limit))
    return fit_jobs().submit(request)


FIT_STATE_ICONS = {
    "queued": ":material/schedule:",
    "running": ":material/progress_activity:",
    "done": ":material/check_circle:",
    "failed": ":material/error:",
    "stopped": ":material/stop_circle:",
}
SEEN_ACTIVE = "fit_jobs_seen_active"  # session state: the jobs this session last saw active


def fit_jobs_panel(model_name: str | None = None, methods: Container[str] | None = None) -> None:
    """The fit jobs saving to this server's user store (optionally only one model's, or some
    methods'), live: refreshed every two seconds while one is queued or running, with a Stop
    button each. When a job this session saw running finishes, the whole page runs again,
    so its new run shows at once."""
    store = str(run_store("user").root)

    def shown_jobs() -> list[FitJob]:
        return [
            job for job in fit_jobs().jobs()
            if job.request.store == store
            and (model_name is None or job.request.model == model_name)
            and (methods is None or job.request.method in methods)
        ]

    active = any(job.active for job in shown_jobs())

    @st.fragment(run_every=2.0 if active else None)
    def panel() -> None:
        jobs = shown_jobs()
        now_active = {job.id for job in jobs if job.active}
        finished_since = set(st.session_state.get(SEEN_ACTIVE, ())) - now_active
        st.session_state[SEEN_ACTIVE] = now_active
        if finished_since:
            st.rerun()  # a run landed in the store: the whole page runs again and shows it
        for job in jobs:
            _draw_fit_job(job)

    panel()


def _draw_fit_job(job: FitJob) -> None:
    with st.container(border=True):
        head, button = st.columns([8, 1], vertical_alignment="center")
        head.markdown(f"**{text(job.request.label)}**: {job.state}", help=f"Job {job.id}")
        if job.active:
            button.button(
                "Stop", key=f"stop_{job.id}", icon=":material/stop:", on_click=fit_jobs().stop, args=(job.id,),
                disabled=job.stop_requested,
            )
        numbers = ", ".join(f"{name.replace('_', ' ')} {value:.4g}" for name, value in job.record.items() if name != "step")
        if job.state == "running":
            steps = f" {job.done} / {job.total}" if job.total else ""
            st.progress(job.fraction, text=text(f"{job.stage}{steps}" + (f": {numbers}" if numbers else "")))
        details = [f"{job.seconds:.0f} s"] if job.started else ["waiting for the fits before it"]
        if job.peak_mib:
            details.append(f"peak memory {job.peak_mib:,.0f} MiB")
        if job.state == "done":
            scored = "; ".join(
                f"{task}: " + ", ".join(f"{METRICS.get(k.removeprefix('test_'), k)} {v:.0%}" for k, v in m.items()
                                       if k.startswith("test_"))
                for task, m in job.metrics.items()
            )
            details.append(f"run {text(job.run_id)} saved to your store" + (f"; {text(scored)}" if scored else ""))
        elif job.state == "failed":
            details.append(text(job.error))
        elif job.state == "stopped":
            details.append("nothing saved")
        st.caption(" · ".join(details))
