"""Compare methods: zero-shot, k-shot ICL, TV, FV, LTV and SITE per task, side by side.

Two sources: the benchmark table saved by ``analyses/bench_methods.py`` (bundled for the
embedded model, so this page shows on a fresh machine), or a comparison computed here
from the stored fits of one task, a run fitted on several tasks at once counting for each
(methods without a fit can be fitted here first, but for ATV, which is meant for a mixture).
Widgets -> ``workbench.experiments`` -> ``analyses.figures.comparison``.
"""

from __future__ import annotations

import streamlit as st

from analyses.figures.comparison import accuracy_matrix_figure, comparison_figure, memory_figure
from workbench.app import export, fits, models, runs, tables, tasks, urls, views
from workbench.app.progress import progress_bar
from workbench.app.text import text
from workbench.experiments.comparison import (
    MEAN,
    MEMORY,
    benchmark_files,
    compare_methods,
    from_summary,
    task_view,
)
from workbench.methods import METHODS
from workbench.tasks.files import TaskFileError
from workbench.tasks.prompts import DEFAULT_TEMPLATE, TEMPLATES, get_template

SAVED, COMPUTED = "Saved benchmark", "Compute here"
RESULTS_KEY = "compare_results"
METRIC_COLUMNS = tables.benchmark_metric_columns()  # benchmark column -> label, from workbench.scoring
COLUMNS = {
    "method": st.column_config.TextColumn("method"),
    **{
        column: st.column_config.NumberColumn(label, format="%.2f")
        for column, label in METRIC_COLUMNS.items()
    },
    "tokens": st.column_config.NumberColumn("prompt tokens / query", format="%.1f"),
    "s_per_query": st.column_config.NumberColumn("s / query", format="%.4f"),
    "fit_s": st.column_config.NumberColumn("fit (s)", format="%.1f"),
    "fit_peak_mib": st.column_config.NumberColumn(
        "fit peak (MiB)", format="%.0f", help="Peak memory of the fit, above what was in use before it."
    ),
    "eval_peak_mib": st.column_config.NumberColumn(
        "eval peak (MiB)", format="%.0f", help="Peak memory while evaluating the test queries."
    ),
}

views.enter_page()
st.title("Compare methods")
st.caption(
    "Every method on the same held-out queries: zero-shot, k-shot in-context learning, and the "
    f"fitted methods ({', '.join(f'{m.title}' for m in METHODS.values())}), which all run the "
    "zero-shot prompt."
)
model = models.current_model()
saved = benchmark_files(model.name)
urls.seed_from_query("cmp_source", SAVED if saved else COMPUTED, valid=(SAVED, COMPUTED), param="source")
source = st.radio("Results", [SAVED, COMPUTED], horizontal=True, key="cmp_source")
urls.share_in_url(source=source)


def show(table, task: str, template: str, stem: str) -> None:
    """The table and bar chart of one task (or the mean), with export."""
    view = task_view(table, task)
    fig = comparison_figure(view, title=f"{task}: template {template}")
    st.plotly_chart(fig, key=f"cmp_bars_{stem}")
    columns = [c for c in COLUMNS if c in view.columns]
    st.dataframe(view[columns], hide_index=True, column_config=COLUMNS)
    export.export_buttons(f"{stem}_{task}", figure=fig, tables={"comparison": view})
    if any(c in view.columns and view[c].notna().any() for c in MEMORY):
        st.markdown("**Peak memory** of each method's fit and evaluation")
        memory = memory_figure(view)
        st.plotly_chart(memory, key=f"cmp_memory_{stem}")
        export.export_buttons(f"{stem}_{task}_memory", figure=memory)


# ----------------------------------------------------------------------------- saved benchmark

if source == SAVED:
    if not saved:
        st.info(
            f"No saved benchmark for {text(model.name)}. Run `python analyses/scripts/bench_methods.py "
            "--model <model>`, or compute one task here.",
            icon=":material/info:",
        )
        st.stop()
    template_col, task_col = st.columns([1, 3])
    urls.seed_from_query("cmp_template", next(iter(saved)), valid=saved, param="template")
    template = template_col.selectbox("Template of the benchmark", list(saved), key="cmp_template")
    urls.share_in_url(template=template)
    try:
        table = tables.benchmark_table(saved[template])
    except (OSError, ValueError) as err:
        st.error(text(err), icon=":material/error:")
        st.stop()
    task_options = [MEAN, *sorted(table["task"].unique())]
    urls.seed_from_query("cmp_task", MEAN, valid=task_options, param="task")
    task = task_col.selectbox("Task", task_options, key="cmp_task")
    urls.share_in_url(task=task)
    st.caption(
        f"`{saved[template].relative_to(saved[template].parents[2])}`: {table['task'].nunique()} tasks, "
        f"template {get_template(template).describe()}, test split. Times are from one run on the machine "
        "that made the table; a bundled SITE run's fit time is the one recorded in the run."
    )
    show(table, task, template, f"methods_{model.name}_{template}")
    with st.expander("All tasks at once", expanded=task == MEAN):
        urls.seed_from_query("cmp_value", next(iter(METRIC_COLUMNS)), valid=METRIC_COLUMNS, param="value")
        value = st.radio(
            "Value", list(METRIC_COLUMNS), format_func=METRIC_COLUMNS.get, horizontal=True, key="cmp_value"
        )
        urls.share_in_url(value=value)
        matrix = accuracy_matrix_figure(table, value)
        st.plotly_chart(matrix, key="cmp_matrix")
        export.export_buttons(
            f"methods_matrix_{model.name}_{template}_{value}",
            figure=matrix,
            tables={"benchmark": table},
        )
    st.stop()

# ----------------------------------------------------------------------------- computed here

urls.seed_from_query("cmp_template_here", DEFAULT_TEMPLATE, valid=TEMPLATES, param="template")
urls.seed_from_query("cmp_shots", 10, int, valid=range(1, 101), param="shots")
urls.seed_from_query("cmp_limit", 40, int, valid=range(1, 100_001), param="limit")
task_col, template_col, shots_col, limit_col = st.columns([4, 2, 1, 1], vertical_alignment="bottom")
with task_col:
    task_name = tasks.task_picker("cmp_task_here")
template = template_col.selectbox("Template", list(TEMPLATES), key="cmp_template_here")
shots = shots_col.number_input("ICL shots", 1, 100, key="cmp_shots")
limit = limit_col.number_input("Test queries", 1, 100_000, key="cmp_limit")
urls.share_in_url(template=template, shots=shots, limit=limit)
if task_name is None:
    st.stop()
try:
    task = tasks.get_task(task_name)
except TaskFileError as err:
    st.error(text(err), icon=":material/error:")
    st.stop()

stored, rows, problems = runs.task_fits(task_name, model, METHODS, several_tasks=True)
for problem in problems:
    st.warning(text(f"Skipped a run that does not load: {problem}"), icon=":material/warning:")
other_template = [m for m, fit in stored.items() if fit.config.template != template]
stored = {m: fit for m, fit in stored.items() if m not in other_template}
# A run fitted on several tasks at once serves each of them; one that holds this task out
# (an ATV mixture's held-out tasks) serves it as an unseen task, and says so.
labels = {m: m if rows[m]["seen"] else f"{m} (unseen)" for m in stored}
method_fits = {labels[m]: fit for m, fit in stored.items()}
missing = [m for m in METHODS if m not in stored]


def fit_note(method: str) -> str:
    row = rows[method]
    note = f"{method} {text(row['id'])} ({row['store']}"
    if not row["seen"]:
        note += f"; unseen: held out of its {row['n_tasks']} tasks"
    elif row["n_tasks"] > 1:
        note += f"; one run of {row['n_tasks']} tasks"
    return note + ")"


st.caption(
    "Stored fits: "
    + (", ".join(fit_note(m) for m in stored) or "none")
    + (f"; fitted with another template: {', '.join(other_template)}" if other_template else "")
    + "."
)

if missing:
    st.info(
        f"No {template} fit of {', '.join(missing)} for {text(task_name)} on {text(model.name)}.",
        icon=":material/info:",
    )
    quick = [m for m in missing if not METHODS[m].mixture]  # one-task fits with default settings
    if quick and st.button(
        f"Fit {', '.join(quick)} now (default settings, in the background, saved to your run store)",
        icon=":material/model_training:",
    ):
        for name in quick:
            fits.start_fit(name, [task_name], METHODS[name].Config(template=template), model.name, 0)
    for name in (m for m in missing if METHODS[m].mixture):
        defaults = METHODS[name].Config()
        cost = [
            f"{defaults.steps:,} steps" if hasattr(defaults, "steps") else "",
            f"up to {defaults.per_task} training queries of each task"
            if hasattr(defaults, "per_task")
            else "",
        ]
        cost = " on ".join(part for part in cost if part)
        st.caption(
            f"{name} is not fitted from here: it is meant for a mixture of tasks"
            + (f" (by default {cost})" if cost else "")
            + ", then serves any query. Fit it on the **Fit a method** page, with more tasks under "
            "*Fit together with*."
        )
    fits.fit_jobs_panel(model.name, methods=set(missing))

settings = {
    "model": model.name,
    "task": task_name,
    "template": template,
    "shots": int(shots),
    "limit": int(limit),
    "runs": {labels[m]: rows[m]["id"] for m in stored},
}
if st.button(
    f"Compare {2 + len(method_fits)} methods on {task_name}", type="primary", icon=":material/play_arrow:"
):
    with st.status("Evaluating ...", expanded=True) as status:
        per_query, summary = compare_methods(
            model,
            task,
            method_fits,
            template=template,
            shots=int(shots),
            limit=int(limit),
            progress=progress_bar("queries"),
        )
        status.update(label="Done", state="complete", expanded=False)
    fit_seconds = {label: fit.fit_seconds for label, fit in method_fits.items()}
    st.session_state[RESULTS_KEY] = {
        "settings": settings,
        "table": from_summary(summary, fit_seconds),
        "per_query": per_query,
    }

results = st.session_state.get(RESULTS_KEY)
if results and results["settings"] == settings:
    show(results["table"], task_name, template, f"methods_{model.name}_{template}_computed")
    with st.expander("Per query"):
        st.dataframe(results["per_query"].drop(columns=["prompt"], errors="ignore"), hide_index=True)
elif results:
    st.caption("The settings changed since the last comparison: press the button to compare again.")
