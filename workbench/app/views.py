"""The app's pages and its entry: each page is a :class:`View` (its script in ``pages/``,
title, icon, the sentence its home-page card says), :data:`VIEWS` is the navigation's
order, :func:`run_app` is what ``app.py`` runs and :func:`enter_page` is called first on
every page."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import streamlit as st

from workbench.app import models


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
        "A transformer trained to regress in context: "
        "do LTV, FV and TV carry the task past its training length?",
    ),
    View(
        "pages/adaptive.py",
        "Adaptive vectors",
        ":material/tune:",
        "ATV one query at a time: its vectors per layer, the task they look like, "
        "and what they do to the answer.",
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
    models.model_picker()
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
