"""Saved result tables the pages show: the methods benchmark (``analyses/scripts/
bench_methods.py``) and the transfer matrix, each read again only when its file changes."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

from workbench.scoring import METRICS


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
