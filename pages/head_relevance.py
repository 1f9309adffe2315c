"""Head relevance: which heads SITE selects for a task (alpha[l,h]), how SITE's map
compares with the FV indirect-effect and LTV weight maps of the same task, and how one
head is used across tasks.

Runs come from the bundled store (results/runs) and the user's store, newest per task;
a task without a run can be fitted here (saved to the user's store). Widgets ->
``workbench.experiments`` -> ``analyses.figures.head_maps``. The view (task, layer, head) is in the URL.
"""

from __future__ import annotations

import streamlit as st

from analyses.figures.head_maps import (
    Panel,
    fit_history_figure,
    head_across_tasks_figure,
    head_map_figure,
    head_maps_figure,
    layer_profile_figure,
)
from workbench.app import export, fits, models, runs, tasks, urls, views
from workbench.app.text import text
from workbench.experiments.head_maps import alpha_summary, compare_maps, head_across_tasks, maps_table
from workbench.methods import METHODS, MethodConfig, head_map_methods
from workbench.scoring import METRICS
from workbench.store.runs import RunError
from workbench.tasks.files import TaskFileError

MAP_METHODS = head_map_methods()
EVAL_LIMIT = 100  # test queries scored after a fit (0: none)

views.enter_page()
st.title("Head relevance")
st.caption(
    "SITE learns one soft selection weight alpha[l, h] in [0, 1] per attention head: how much "
    "of the head's output at the last token is replaced by the task embedding. Heads near 1 "
    "carry the task; the paper finds most alphas end near 0 or 1."
)
model = models.current_model()
shape = model.heads.shape

# ----------------------------------------------------------------------------- task and its run

site_runs = runs.fitted_runs("SITE", model.name)
fitted = dict(zip(site_runs["task"], site_runs.index))
default_task = site_runs["task"].iloc[0] if len(site_runs) else None

task_col, info_col = st.columns([4, 8], gap="large")
with task_col:
    # Plain names: Streamlit keeps showing a keyed selectbox's old label for the current value when
    # its labels change, so the fitted state goes in the caption instead of the option labels.
    task_name = tasks.task_picker("hr_task", names=fitted, default=default_task)
    st.caption(
        f"SITE runs for {text(model.name)}: {len(fitted)} tasks"
        + (f" ({text(', '.join(fitted))})." if 0 < len(fitted) <= 12 else ".")
    )
if task_name is None:
    st.stop()


def fit_settings(expanded: bool) -> tuple[MethodConfig | None, int]:
    """SITE's settings (defaults: its config; None while one is out of its bounds, shown as
    an error) and how many test queries to score after."""
    with st.expander("Fit settings", expanded=expanded):
        config = fits.config_form("SITE", key="hr_fit", n_layers=model.heads.shape.n_layers)
        eval_limit = st.number_input(
            "Test queries scored after the fit",
            0,
            100_000,
            EVAL_LIMIT,
            key="hr_fit_eval_limit",
            help="0: skip the evaluation (the run then has no accuracy).",
        )
    return config, int(eval_limit)


def fit_now(name: str, config: MethodConfig | None, eval_limit: int) -> None:
    """Queue a SITE fit of one task (built-in or uploaded); it runs in the background and its
    run lands in the user's store, where this page finds it. No settings (one out of its
    bounds): no fit."""
    if config is None:
        return
    try:
        job = fits.start_fit("SITE", [name], config, model.name, eval_limit)
    except (TaskFileError, ValueError) as err:
        st.error(text(err), icon=":material/error:")
        return
    st.toast(f"Queued: {text(job.request.label)}", icon=":material/schedule:")


fit = None
if task_name in fitted:
    run = site_runs.loc[fitted[task_name]]
    try:
        fit = runs.stored_fit(run["store"], run["id"], model)
    except RunError as err:
        st.warning(
            text(f"Skipped the newest SITE run of {task_name}, {run['id']} ({run['store']} store): {err}"),
            icon=":material/warning:",
        )
if fit is None:
    info_col.info(
        f"No usable SITE run for **{text(task_name)}** on {text(model.name)} yet. "
        "Fit one now (saved to your run store).",
        icon=":material/info:",
    )
    config, eval_limit = fit_settings(expanded=True)
    if st.button("Fit SITE now", type="primary", icon=":material/model_training:", disabled=config is None):
        fit_now(task_name, config, eval_limit)
    fits.fit_jobs_panel(model.name, methods={"SITE"})
    st.stop()

with info_col:
    st.caption(
        f"Run `{run['id']}` from the **{run['store']}** store, {run['created']}. "
        f"Template {fit.meta.get('template') or fit.config.template}; embedding from {fit.config.n_prompts} "
        f"{fit.config.shots}-shot prompts; best step {fit.trace.best_step} of {fit.config.steps} "
        f"(valid loss {fit.trace.best_valid_loss:.3f}); fitted in {fit.fit_seconds:.0f} s."
    )

summary = alpha_summary(fit.alpha)
metrics = run["metrics"] or {}
cols = st.columns(len(METRICS) + 4)
for col, (name, label) in zip(cols, METRICS.items()):
    value = metrics.get(f"test_{name}")
    col.metric(
        label,
        "n/a" if value is None else f"{value:.0%}",
        help=f"On {metrics.get('n_test', '?')} test queries: zero-shot prompt + fitted injection.",
    )
alpha_cols = cols[len(METRICS) :]
alpha_cols[0].metric("mean alpha", f"{summary['mean']:.2f}")
alpha_cols[1].metric(f"alpha < {summary['low']}", f"{summary['frac_below']:.0%}")
alpha_cols[2].metric(f"alpha > {summary['high']}", f"{summary['frac_above']:.0%}")
alpha_cols[3].metric(
    "heads > 0.5",
    summary["n_selected"],
    help=f"of {summary['n_heads']} heads; {summary['frac_between']:.0%} of all heads end between "
    f"{summary['low']} and {summary['high']}.",
)

# ----------------------------------------------------------------------------- the map

top = divmod(int(fit.alpha.argmax()), shape.n_heads)
urls.seed_from_query("hr_layer", top[0], int, valid=range(shape.n_layers), param="layer")
urls.seed_from_query("hr_head", top[1], int, valid=range(shape.n_heads), param="head")
for key, size in (("hr_layer", shape.n_layers), ("hr_head", shape.n_heads)):
    if not 0 <= int(st.session_state[key]) < size:  # kept from another model
        st.session_state[key] = 0


def _select_clicked_head() -> None:
    cell = urls.clicked_cell(st.session_state.get("hr_alpha_map"))
    if cell:
        st.session_state.hr_layer, st.session_state.hr_head = int(cell[0]), int(cell[1])


selected = (int(st.session_state.hr_layer), int(st.session_state.hr_head))
map_col, profile_col = st.columns([3, 2], gap="large")
with map_col:
    st.markdown("**alpha per head** (click a head to follow it across tasks)")
    alpha_fig = head_map_figure(fit.alpha, selected=selected)
    st.plotly_chart(alpha_fig, key="hr_alpha_map", on_select=_select_clicked_head, selection_mode="points")
with profile_col:
    st.markdown("**Per layer**")
    profile_fig = layer_profile_figure(fit.alpha)
    st.plotly_chart(profile_fig, key="hr_profile")
    export.export_buttons(f"site_alpha_layers_{task_name}_{model.name}", figure=profile_fig)
    with st.expander("Fit history"):
        history_fig = fit_history_figure(fit.trace.history, fit.trace.best_step)
        st.plotly_chart(history_fig, key="hr_history")
        export.export_buttons(
            f"site_fit_history_{task_name}_{model.name}",
            figure=history_fig,
            tables={"history": fit.trace.history},
        )

alpha_table = maps_table({task_name: fit.alpha}, "alpha").drop(columns="map")
stem = f"site_alpha_{task_name}_{model.name}"
export.export_buttons(stem, figure=alpha_fig, tables={"alpha": alpha_table})

# ----------------------------------------------------------------------------- the methods' maps

st.subheader(f"{', '.join(MAP_METHODS)} maps side by side")
map_fits, method_runs, problems = runs.task_fits(task_name, model, MAP_METHODS)
for problem in problems:
    st.warning(text(f"Skipped a run that does not load: {problem}"), icon=":material/warning:")
missing = [m for m in MAP_METHODS if m not in map_fits]
if len(map_fits) < 2:
    st.info(
        f"Comparing maps needs runs of two methods or more for **{task_name}** on {model.name}; "
        f"missing: {', '.join(missing)}. Fit them with `python -m workbench fit --method FV "
        f"--task {task_name}` (likewise LTV).",
        icon=":material/info:",
    )
else:
    urls.seed_from_query("hr_top_k", 10, int, valid=range(1, shape.n_layers * shape.n_heads + 1), param="k")
    k = st.number_input(
        "Top-k heads",
        1,
        shape.n_layers * shape.n_heads,
        key="hr_top_k",
        help="Dots mark each map's k most relevant heads; the table compares the top-k sets.",
    )
    urls.share_in_url(k=k)
    head_maps = {name: fit.head_map() for name, fit in map_fits.items()}
    relevant = {name: fit.relevance() for name, fit in map_fits.items()}
    panels = {
        f"{name}: {map_fits[name].head_map_info.label}": Panel(
            values, map_fits[name].head_map_info.label, map_fits[name].head_map_info.signed, relevant[name]
        )
        for name, values in head_maps.items()
    }
    maps_fig = head_maps_figure(panels, top_k=int(k))
    st.plotly_chart(maps_fig, key="hr_method_maps")
    agreement = compare_maps(relevant, int(k))
    st.dataframe(
        agreement,
        hide_index=True,
        column_config={
            "spearman": st.column_config.NumberColumn("Spearman rank corr.", format="%.2f"),
            "top_k_overlap": st.column_config.NumberColumn("top-k overlap", format="%.2f"),
            "chance_overlap": st.column_config.NumberColumn("chance overlap", format="%.2f"),
        },
    )
    conventions = ", ".join(
        f"{'|' + info.label + '|' if info.by_magnitude else info.label} ({name})"
        for name, info in ((n, METHODS[n].head_map_info) for n in MAP_METHODS)
    )
    st.caption(
        f"Relevance used for ranking: {conventions}. Spearman is "
        "over all heads; top-k overlap = shared heads / k, beside the overlap of two random sets. "
        + (f"No run for {', '.join(missing)}. " if missing else "")
        + "Runs: "
        + ", ".join(f"{m} `{row['id']}` ({row['store']})" for m, row in method_runs.items())
        + "."
    )
    export.export_buttons(
        f"head_maps_{task_name}_{model.name}",
        figure=maps_fig,
        tables={"relevance": maps_table(relevant, "relevance"), "agreement": agreement},
    )

# ----------------------------------------------------------------------------- one head across tasks

st.subheader("One head across tasks")
left, right, _ = st.columns([1, 1, 4])
layer = left.number_input("Layer", 0, shape.n_layers - 1, key="hr_layer")
head = right.number_input("Head", 0, shape.n_heads - 1, key="hr_head")
urls.share_in_url(layer=layer, head=head)

maps, unreadable = {}, []
for _, other in site_runs.iterrows():
    try:
        maps[other["task"]] = runs.stored_fit(other["store"], other["id"], model).alpha
    except RunError:
        unreadable.append(other["task"])
if unreadable:
    st.warning(
        text(f"Skipped runs that do not load on {model.name}: {', '.join(unreadable)}."),
        icon=":material/warning:",
    )
across = head_across_tasks(maps, int(layer), int(head))
across_fig = head_across_tasks_figure(across, int(layer), int(head), highlight=task_name)
st.plotly_chart(across_fig, key="hr_across")
st.caption(
    f"alpha of layer {layer}, head {head} in the {len(across)} tasks with a SITE run for {model.name}; "
    "the label is its rank among that task's heads (#1 = the highest alpha)."
)
export.export_buttons(
    f"site_head_L{layer}H{head}_{model.name}",
    figure=across_fig,
    tables={"head across tasks": across},
)

st.divider()
config, eval_limit = fit_settings(expanded=False)
if st.button(
    f"Fit SITE on {text(task_name)} again",
    icon=":material/model_training:",
    help="A new run in your store; the newest run of a task is the one shown.",
    disabled=config is None,
):
    fit_now(task_name, config, eval_limit)
fits.fit_jobs_panel(model.name, methods={"SITE"})
