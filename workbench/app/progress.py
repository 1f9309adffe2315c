"""A ``st.progress`` bar as a :mod:`workbench.progress` callback, for every page's long work."""

from __future__ import annotations

from collections.abc import Mapping

import streamlit as st

from workbench.progress import Progress


def progress_bar(unit: str, text: str = "starting") -> Progress:
    """A new bar on the page; the callback shows ``stage: done / total unit``."""
    bar = st.progress(0.0, text=text)

    def report(stage: str, done: int, total: int, _record: Mapping[str, float]) -> None:
        bar.progress(min(done / max(total, 1), 1.0), text=f"{stage}: {done} / {total} {unit}")

    return report
