"""Fits in the background, as the pages show them: the form of a method's settings
(:func:`config_form`, built from their declarations), :func:`start_fit` (queued on the
server's one :class:`~workbench.app.jobs.FitJobs`) and the live panel of the jobs."""

from __future__ import annotations

import math
from collections.abc import Container

import streamlit as st

from workbench.app.jobs import FitJob, FitJobs, FitRequest
from workbench.app.runs import run_store
from workbench.app.tasks import get_task
from workbench.app.text import text
from workbench.methods import MethodConfig
from workbench.scoring import METRICS
from workbench.tasks.prompts import TEMPLATES


def config_form(method: str, key: str, columns: int = 4, n_layers: int | None = None) -> MethodConfig | None:
    """A widget per setting of ``method``'s Config, laid out in ``columns``, each built from
    the setting's declaration (:func:`workbench.methods.settings.fields`): its default, its
    help as the tooltip, its lower bound, a select box for its choices (the template: the
    named templates, or the default), a checkbox for a flag, an empty number for a setting
    that may be None (the placeholder says what None means). Returns the config, checked
    (``config.check(n_layers)``); a value out of its bounds is shown as an error naming the
    setting, and the form returns None: no fit should start."""
    from workbench.methods import get_method
    from workbench.methods.settings import fields

    config_class = get_method(method).Config
    values = {}
    labels = {}
    cells = st.columns(columns)
    for i, field in enumerate(fields(config_class)):
        labels[field.name] = label = field.name.replace("_", " ")
        with cells[i % columns]:
            values[field.name] = _setting_widget(field, label, f"{key}_{field.name}")
    try:
        config = config_class(**values)
        config.check(n_layers, names=labels)
    except ValueError as err:
        st.error(f"{text(method)} setting: {text(err)} Change it to start a fit.", icon=":material/error:")
        return None
    return config


def _setting_widget(field, label: str, key: str):
    """The widget of one setting (a :class:`workbench.methods.settings.Field`); its value."""
    spec, default, kind = field.spec, field.default, field.kind
    if field.name == "template":
        options = list(dict.fromkeys([default, *TEMPLATES]))
        return st.selectbox(label, options, key=key, help=spec.help)
    if kind is bool:
        return st.checkbox(label, value=bool(default), key=key, help=spec.help)
    if spec.choices:
        options = list(dict.fromkeys([*spec.choices, *([] if default is None else [default])]))
        return st.selectbox(
            label, options, index=options.index(default) if default in options else 0, key=key, help=spec.help
        )
    if kind is int:
        lowest = None
        if spec.minimum is not None:
            lowest = math.ceil(spec.minimum)
        if spec.above is not None:
            lowest = max(lowest if lowest is not None else -math.inf, math.floor(spec.above) + 1)
        return st.number_input(
            label,
            value=None if default is None else int(default),
            min_value=lowest,
            step=1,
            key=key,
            help=spec.help,
            placeholder=spec.none if spec.none is not None else None,
        )
    if kind is float:
        bounds = [b for b in (spec.minimum, spec.above) if b is not None]
        return st.number_input(
            label,
            value=None if default is None else float(default),
            min_value=float(max(bounds)) if bounds else None,
            format="%g",
            key=key,
            help=spec.help,
            placeholder=spec.none if spec.none is not None else None,
        )
    return st.text_input(label, value="" if default is None else str(default), key=key, help=spec.help)


@st.cache_resource(show_spinner=False)
def fit_jobs() -> FitJobs:
    """The server's one fit queue, shared by every session."""
    return FitJobs()


def start_fit(
    method: str, task_names: list[str], config: MethodConfig, model_name: str, eval_limit: int
) -> FitJob:
    """Queue a fit of ``method`` on the named tasks (built-in or uploaded this session); it
    runs in its own process and saves to the user's run store. Raises ``TaskFileError``, or
    ValueError for a setting out of its bounds (``config.check()``)."""
    config.check()
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
            job
            for job in fit_jobs().jobs()
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
                "Stop",
                key=f"stop_{job.id}",
                icon=":material/stop:",
                on_click=fit_jobs().stop,
                args=(job.id,),
                disabled=job.stop_requested,
            )
        numbers = ", ".join(
            f"{name.replace('_', ' ')} {value:.4g}" for name, value in job.record.items() if name != "step"
        )
        if job.state == "running":
            steps = f" {job.done} / {job.total}" if job.total else ""
            st.progress(job.fraction, text=text(f"{job.stage}{steps}" + (f": {numbers}" if numbers else "")))
        details = [f"{job.seconds:.0f} s"] if job.started else ["waiting for the fits before it"]
        if job.peak_mib:
            details.append(f"peak memory {job.peak_mib:,.0f} MiB")
        if job.state == "done":
            scored = "; ".join(
                f"{task}: "
                + ", ".join(
                    f"{METRICS.get(k.removeprefix('test_'), k)} {v:.0%}"
                    for k, v in m.items()
                    if k.startswith("test_")
                )
                for task, m in job.metrics.items()
            )
            details.append(
                f"run {text(job.run_id)} saved to your store" + (f"; {text(scored)}" if scored else "")
            )
        elif job.state == "failed":
            details.append(text(job.error))
        elif job.state == "stopped":
            details.append("nothing saved")
        st.caption(" · ".join(details))
