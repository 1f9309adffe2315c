"""Fit a method: any registered method on a built-in or uploaded task, in the background.

The fit runs in a process of its own (``workbench.app.jobs``), so this and every other
browser tab keep working; its progress shows live below, a Stop button ends it, and the run
lands in the user's run store, where every page finds it at its next run. Widgets ->
``workbench.app.fits`` (the settings form; the fit queue around
``workbench.experiments.fitting.fit_score_save``).
"""

from __future__ import annotations

import streamlit as st

from workbench.app import fits, models, tasks, urls, views
from workbench.app.text import text
from workbench.methods import METHODS
from workbench.tasks.files import TaskFileError

DEFAULT_METHOD = "SITE"
EVAL_LIMIT = 100  # test queries scored after a fit (0: none)

views.enter_page()
st.title("Fit a method")
st.caption(
    "Fits run on this server in a process of their own, one after another: start one, open other "
    "pages or tabs meanwhile, come back to watch it. Each finished fit is scored on the task's test "
    "split and saved to your run store (`runs list` in the CLI shows it too)."
)
model = models.current_model()

urls.seed_from_query("fit_method", DEFAULT_METHOD, valid=METHODS, param="method")
method_col, task_col = st.columns([2, 3], gap="large")
with method_col:
    method = st.selectbox(
        "Method", list(METHODS), key="fit_method", format_func=lambda name: f"{name}: {METHODS[name].title}"
    )
    urls.share_in_url(method=method)
    method_class = METHODS[method]
    if method_class.several_tasks:
        st.caption(f"{method} can fit one run on several tasks at once: add more below.")
with task_col:
    task_name = tasks.task_picker("fit_task")
    extra = []
    if method_class.several_tasks:
        extra = st.multiselect(
            "Fit together with",
            [name for name in sorted({*tasks.builtin_tasks(), *tasks.uploaded_tasks()}) if name != task_name],
            key="fit_more_tasks",
            help="One run for all these tasks (task-agnostic): leave empty for a run of one task.",
        )

with st.expander(f"{method} settings", expanded=True):
    config = fits.config_form(method, key=f"fit_{method}", n_layers=model.heads.shape.n_layers)
    eval_limit = st.number_input(
        "Test queries scored after the fit", 0, 100_000, EVAL_LIMIT, key="fit_eval_limit",
        help="0: no scoring (the run then has no accuracy).",
    )

task_names = [task_name, *extra] if task_name else []
if st.button(
    f"Fit {method} on {' + '.join(task_names) or '...'}",
    type="primary",
    icon=":material/model_training:",
    disabled=not task_names or config is None,
    key="fit_start",
) and config is not None:
    try:
        job = fits.start_fit(method, task_names, config, model.name, int(eval_limit))
    except (TaskFileError, ValueError) as err:
        st.error(text(err), icon=":material/error:")
    else:
        st.toast(f"Queued: {text(job.request.label)}", icon=":material/schedule:")

st.subheader("Fits on this server")
fits.fit_jobs_panel()
if not fits.fit_jobs().jobs():
    st.caption("None yet.")
