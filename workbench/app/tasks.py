"""Tasks: the built-in library (cached), files a user uploads (validated, then tasks of the
session every page can use by name), and the task picker most pages start with."""

from __future__ import annotations

import dataclasses
import re
import tempfile
from pathlib import Path

import streamlit as st

from workbench.app.text import text
from workbench.app.urls import seed_from_query, share_in_url
from workbench.tasks.files import MAX_FILE_BYTES, TaskFileError, catalog, load_task
from workbench.tasks.task import Task

UPLOAD_LIMIT_MB = MAX_FILE_BYTES // 2**20
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
