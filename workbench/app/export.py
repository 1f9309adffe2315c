"""Downloads under a chart: the figure as standalone HTML (always) and as PNG / SVG / PDF
(through kaleido and a headless Chromium, where one is installed), tables as CSV."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

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
        return (
            None
            if os.access(browser, os.X_OK)
            else f"PNG, SVG and PDF export: BROWSER_PATH={browser} is not a program."
        )
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
