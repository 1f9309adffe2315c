"""Helpers the app-page tests share: open a page on tiny-llama with ``AppTest``, check it
ran cleanly, read its Plotly figures."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # seconds per script run: the first one loads tiny-llama on CPU


def open_page(name: str, **query) -> AppTest:
    """Open ``/<name>?model=tiny-llama&...`` as a link would: ``app.py`` (navigation, model
    picker) running ``pages/<name>.py`` with the given query, once."""
    at = AppTest.from_file(ROOT / "app.py", default_timeout=TIMEOUT)
    at.query_params.update({"model": "tiny-llama", **query})
    return at.switch_page(f"pages/{name}.py").run()


def shown(markdown: str) -> str:
    """The text a Markdown body shows: its backslash escapes and zero-width spaces undone
    (``workbench.app.text`` escapes every special character of names and messages that come from
    a URL or a file, and breaks bare links)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u200b", "")


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def charts(at: AppTest) -> list[dict]:
    """Every Plotly chart on the page, as figure JSON."""
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def figure_array(value) -> np.ndarray:
    """A figure-JSON array: a list, or plotly's typed array {"dtype", "bdata", "shape"}."""
    if isinstance(value, dict) and "bdata" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        shape = value.get("shape")
        return array.reshape([int(n) for n in str(shape).split(",")] if shape else -1)
    return np.asarray(value)


def private_stores(monkeypatch, tmp_path: Path, runs: Path | None = None) -> Path:
    """Point the user run store at a copy of ``runs`` (or an empty folder) under ``tmp_path``,
    the cache there too, and the bundled store at an empty folder: no page sees the repo's
    runs. Returns the user store's folder."""
    import shutil

    import workbench.store.runs

    target = tmp_path / "runs"
    if runs is not None:
        shutil.copytree(runs, target)
    monkeypatch.setenv("WORKBENCH_RUNS", str(target))
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(workbench.store.runs, "BUNDLED_RUNS", tmp_path / "bundled" / "runs")
    return target


def wait_for_fits(at: AppTest, timeout: float = 240.0) -> AppTest:
    """Run the page again until the fits it queued (``workbench.app.fits.fit_jobs``) have finished;
    then once more, as the page's live panel does, so it shows their runs."""
    import time

    from workbench.app import fits

    deadline = time.time() + timeout
    while any(job.active for job in fits.fit_jobs().jobs()):
        assert time.time() < deadline, "fits still running"
        time.sleep(0.5)
    return at.run()
