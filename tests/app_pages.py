"""Helpers the app-page tests share: open a page on tiny-llama with ``AppTest``, check it
ran cleanly, read its Plotly figures."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 180  # seconds per script run: the first one loads tiny-llama on CPU


def open_page(name: str, **query) -> AppTest:
    """Run ``pages/<name>.py`` once with ``?model=tiny-llama`` and the given query."""
    at = AppTest.from_file(ROOT / "pages" / f"{name}.py", default_timeout=TIMEOUT)
    at.query_params.update({"model": "tiny-llama", **query})
    return at.run()


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
