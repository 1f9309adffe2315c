"""Head transfer: do the heads selected for task A also carry task B, and do the heads
another method found (FV's top heads, LTV's largest weights) carry the task as well?

Cell (A, B) evaluates task B zero-shot with B's embedding injected at A's heads (SITE's
alpha_A, or the top-k heads of A's SITE / FV / LTV map), relative to B's own alpha; beside
it, how similar the alpha maps are. Widgets -> ``workbench.experiments.transfer`` ->
``analyses.figures.transfer``. Results stay in the session; a bundled matrix
(results/site_transfer.csv) can be shown without computing.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analyses.figures.transfer import similarity_figure, transfer_figure, transfer_vs_similarity_figure
from workbench.app import export, models, runs, tables, tasks, urls, views
from workbench.app.progress import progress_bar
from workbench.app.text import text
from workbench.experiments.transfer import (
    ALPHA_KIND,
    TRANSFER_VALUES,
    cell_queries,
    cell_table,
    head_selection,
    map_similarity,
    matrix_order,
    method_transfer_summary,
    source_kinds,
    summarize_transfer,
    transfer_per_query,
    with_similarity,
)
from workbench.methods import head_map_methods
from workbench.model.loading import DEFAULT_MODEL
from workbench.scoring import METRICS
from workbench.store.runs import BUNDLED_RUNS, RunError
from workbench.tasks.files import TaskFileError

BUNDLED_TRANSFER = BUNDLED_RUNS.parent / "site_transfer.csv"
DEFAULT_TASKS = 6
RESULTS_KEY = "transfer_results"
COMPUTED, BUNDLED = "Computed here", "Bundled matrix"
MATRIX_PARAMS = {"computed": COMPUTED, "bundled": BUNDLED}  # ?matrix= -> radio label
SIMILARITIES = ["cosine", "Jaccard (heads > 0.5)"]
ALPHA = ALPHA_KIND
HEAD_MAPS = {ALPHA: None, **{f"{m} top-k": m for m in head_map_methods()}}  # label -> method

views.enter_page()
st.title("Head transfer")
st.caption(
    "Cell (A, B): task B, zero-shot, with B's own task embedding injected at the heads selected "
    "for task A: SITE's alpha_A, or the top-k heads of A's SITE, FV or LTV map. *relative* = its "
    "first-token accuracy over B's with its own alpha_B (the diagonal). SITE's claim: heads transfer "
    "between similar tasks, not dissimilar ones."
)
model = models.current_model()
site_runs = runs.fitted_runs("SITE", model.name)
with st.expander("A task of your own"):
    st.caption(
        "Tasks here need a SITE run and their data. A task you fitted from a file (on the Fit or Head "
        "relevance page) joins the matrix once its file is uploaded in this session."
    )
    tasks.task_upload("tr_task_file")
with_data = {*tasks.builtin_tasks(), *tasks.uploaded_tasks()}
site_runs = site_runs[site_runs["task"].isin(with_data)].reset_index(
    drop=True
)  # evaluation needs the task's data
run_of = {row.task: (row.store, row.id) for row in site_runs.itertuples()}

# A bundled matrix: its rows for this model, or, without a model column, the embedded model's.
bundled = None
if BUNDLED_TRANSFER.is_file():
    try:
        bundled = tables.transfer_table(BUNDLED_TRANSFER, model.name)
        if "model" not in bundled.columns and model.name != DEFAULT_MODEL:
            bundled = None
    except (OSError, ValueError) as err:
        st.warning(f"Could not read the bundled transfer matrix: {err}", icon=":material/warning:")
    if bundled is not None and bundled.empty:
        bundled = None

if len(site_runs) < 2 and bundled is None:
    st.info(
        f"The transfer matrix needs SITE runs on at least two tasks for {model.name}; "
        f"there {'is' if len(site_runs) == 1 else 'are'} {len(site_runs)}. "
        "Fit some on the **Head relevance** page.",
        icon=":material/info:",
    )
    st.stop()


def fit_of(task: str):
    store, run_id = run_of[task]
    return runs.stored_fit(store, run_id, model)


def source_of(method: str | None, task: str, k):
    """A cell's heads: the top-k of ``task``'s stored ``method`` map, or (no k) SITE's alpha
    of ``task``. Raises RunError when the run is missing or unreadable."""
    if pd.isna(k):
        return head_selection(fit_of(task))
    fits, _, problems = runs.task_fits(task, model, [method])
    if method not in fits:
        why = f" ({problems[0]})" if problems else ""
        raise RunError(f"No {method} run for {task} on {model.name}{why}.")
    return head_selection(fits[method], int(k))


# ----------------------------------------------------------------------------- settings

fitted_tasks = list(run_of)
urls.seed_list_from_query("tr_tasks", fitted_tasks[:DEFAULT_TASKS], valid=run_of, param="tasks")
urls.seed_from_query("tr_limit", 20, int, valid=range(1, 100_001), param="limit")
urls.seed_from_query("tr_value", "relative", valid=TRANSFER_VALUES, param="value")
urls.seed_list_from_query("tr_maps", [ALPHA], valid=HEAD_MAPS, param="maps")
urls.seed_from_query("tr_top_k", 10, int, valid=range(1, 10_001), param="k")

source_choice = COMPUTED
if bundled is not None:
    # A fresh machine has nothing computed yet: show the bundled matrix first.
    if RESULTS_KEY not in st.session_state:
        urls.seed_from_query("tr_matrix", BUNDLED, MATRIX_PARAMS.__getitem__, param="matrix")
    source_choice = st.radio(
        "Matrix",
        [COMPUTED, BUNDLED],
        horizontal=True,
        key="tr_matrix",
        help=f"{BUNDLED}: precomputed from the bundled runs ({BUNDLED_TRANSFER.name}); nothing is evaluated.",
    )
urls.share_in_url(matrix=next(code for code, label in MATRIX_PARAMS.items() if label == source_choice))

if source_choice == COMPUTED:
    tasks_col, limit_col, button_col = st.columns([6, 2, 3], vertical_alignment="bottom")
    chosen = tasks_col.multiselect(
        "Tasks (with a SITE run)",
        fitted_tasks,
        key="tr_tasks",
        help="Every ordered pair is one cell: n tasks cost n x n evaluations.",
    )
    limit = limit_col.number_input("Test queries per cell", 1, 100_000, key="tr_limit")
    maps_col, k_col, _ = st.columns([6, 2, 3], vertical_alignment="bottom")
    head_maps = maps_col.multiselect(
        "Heads of each source task",
        list(HEAD_MAPS),
        key="tr_maps",
        help="SITE alpha: the fitted alpha as it is. 'X top-k': the k most relevant heads of method X's "
        "map (SITE alpha, FV indirect effect, LTV |theta|) as a 0/1 selection. Each adds a row per task.",
    )
    top_k = k_col.number_input("k", 1, 10_000, key="tr_top_k")
    urls.share_in_url(tasks=",".join(chosen) or None, limit=limit, maps=",".join(head_maps) or None, k=top_k)
    settings = {
        "model": model.name,
        "tasks": list(chosen),
        "limit": int(limit),
        "runs": [run_of[t][1] for t in chosen],
        "maps": list(head_maps),
        "k": int(top_k),
    }
    compute = button_col.button(
        "Compute transfer matrix",
        type="primary",
        icon=":material/play_arrow:",
        disabled=len(chosen) < 2,
        help=None if len(chosen) >= 2 else "Pick two tasks or more.",
    )
    if compute:
        try:
            chosen_tasks = [tasks.get_task(t) for t in chosen]
            fits = {t: fit_of(t) for t in chosen}
            sources = [
                t if HEAD_MAPS[m] is None else source_of(HEAD_MAPS[m], t, int(top_k))
                for m in head_maps or [ALPHA]
                for t in chosen
            ]
        except (TaskFileError, RunError) as err:
            st.error(text(err), icon=":material/error:")
            st.stop()
        n_cells = len(chosen) * len({*chosen, *(s if isinstance(s, str) else s.label for s in sources)})
        with st.status(
            f"Transfer matrix: {n_cells} cells, {limit} queries each ...", expanded=True
        ) as status:
            try:
                per_query = transfer_per_query(
                    model,
                    chosen_tasks,
                    fits,
                    sources=sources,
                    limit=int(limit),
                    progress=progress_bar("cells", text="first cell"),
                )
            except (ValueError, KeyError) as err:
                status.update(label="Transfer matrix failed", state="error")
                st.error(text(err), icon=":material/error:")
                st.stop()
            status.update(label=f"Transfer matrix done: {n_cells} cells", state="complete", expanded=False)
        st.session_state[RESULTS_KEY] = {
            "settings": settings,
            "per_query": per_query,
            "matrix": summarize_transfer(per_query),
        }
    stored = st.session_state.get(RESULTS_KEY)
    if stored is None:
        st.stop()
    if stored["settings"] != settings:
        st.info(
            "The tasks or the limit changed since this matrix was computed: press **Compute** to update.",
            icon=":material/info:",
        )
    matrix, per_query, used = stored["matrix"], stored["per_query"], stored["settings"]
    note = f"{model.name}; {used['limit']} test queries per cell; computed in this session."
else:
    matrix, per_query = bundled, None
    limits = sorted(bundled["limit"].dropna().unique()) if "limit" in bundled.columns else []
    note = f"{model.name}; bundled matrix {BUNDLED_TRANSFER.name}" + (
        f", {', '.join(str(int(v)) for v in limits)} test queries per cell." if limits else "."
    )

# ----------------------------------------------------------------------------- matrix and similarity

kinds = source_kinds(matrix)
if kinds.nunique() > 1:
    with st.expander("Across methods: mean transfer per source head map", expanded=True):
        st.dataframe(
            method_transfer_summary(matrix),
            hide_index=True,
            column_config={
                "same_task": st.column_config.NumberColumn("own task (relative)", format="%.2f"),
                "other_tasks": st.column_config.NumberColumn("other tasks (relative)", format="%.2f"),
            },
        )
        st.caption(
            "Own task: task B with the heads another method found for B itself, relative to SITE's "
            "own alpha_B. Other tasks: heads of A on task B. 1 = as good as B's own alpha."
        )
    kind_options = sorted(kinds.unique(), key=lambda x: (x != ALPHA, x))
    urls.seed_list_from_query("tr_shown", [ALPHA] if ALPHA in kind_options else [], kind_options, "shown")
    shown = st.multiselect("Sources shown in the matrix", kind_options, key="tr_shown")
    urls.share_in_url(shown=",".join(shown) or None)
    matrix = matrix[kinds.isin(shown) | (matrix["source"] == matrix["target"])].reset_index(drop=True)

names = list(dict.fromkeys([*matrix["source"], *matrix["target"]]))
maps, unreadable = {}, []
for name in names:
    if name in run_of:
        try:
            maps[name] = fit_of(name).alpha
        except RunError as err:
            unreadable.append(str(err))
for problem in unreadable:
    st.warning(text(f"Skipped a SITE run that does not load: {problem}"), icon=":material/warning:")
cosine, jaccard = map_similarity(maps) if len(maps) >= 2 else (None, None)
order = matrix_order(matrix, cosine)
sources_list = list(dict.fromkeys(matrix["source"]))
targets_list = list(dict.fromkeys(matrix["target"]))
matrix = with_similarity(matrix, maps) if maps else matrix

value = st.radio(
    "Value", list(TRANSFER_VALUES), format_func=TRANSFER_VALUES.get, horizontal=True, key="tr_value"
)
urls.share_in_url(value=value)
urls.seed_from_query("tr_source", sources_list[0], valid=sources_list, param="source")
urls.seed_from_query(
    "tr_target", targets_list[min(1, len(targets_list) - 1)], valid=targets_list, param="target"
)
if st.session_state.tr_source not in sources_list:  # kept from another matrix
    st.session_state.tr_source = sources_list[0]
if st.session_state.tr_target not in targets_list:
    st.session_state.tr_target = targets_list[min(1, len(targets_list) - 1)]


def _select_clicked_cell() -> None:
    cell = urls.clicked_cell(st.session_state.get("tr_matrix_chart"))
    if cell:
        st.session_state.tr_source, st.session_state.tr_target = cell[0], cell[1]


matrix_col, similarity_col = st.columns([1, 1], gap="large")
with matrix_col:
    st.markdown("**Transfer** (click a cell for its queries)")
    fig = transfer_figure(
        matrix, value=value, order=order, selected=(st.session_state.tr_source, st.session_state.tr_target)
    )
    st.plotly_chart(fig, key="tr_matrix_chart", on_select=_select_clicked_cell, selection_mode="points")
    st.caption(note + " Rows and columns in clustered order of alpha similarity (cosine).")
    export.export_buttons(
        f"site_transfer_{value}_{model.name}",
        figure=fig,
        tables={"Transfer matrix": matrix},
    )
with similarity_col:
    if cosine is None:
        st.info("The alpha maps of these tasks are not available for this model: no similarity.")
    else:
        urls.seed_from_query("tr_similarity", SIMILARITIES[0], valid=SIMILARITIES, param="similarity")
        kind = st.radio("Similarity of alpha maps", SIMILARITIES, horizontal=True, key="tr_similarity")
        urls.share_in_url(similarity=kind)
        sim = cosine if kind == "cosine" else jaccard
        sim_fig = similarity_figure(sim, order=order, value_label=kind.split()[0])
        st.plotly_chart(sim_fig, key="tr_similarity_chart")
        export.export_buttons(
            f"site_alpha_{kind.split()[0].lower()}_{model.name}",
            figure=sim_fig,
            tables={"Similarity": sim.reset_index(names="task")},
        )

if "alpha_jaccard" in matrix.columns and matrix["alpha_jaccard"].notna().any():
    with st.expander("Transfer against alpha similarity"):
        similarity = st.radio(
            "x axis", ["alpha_jaccard", "alpha_cosine"], horizontal=True, key="tr_scatter_x"
        )
        scatter = transfer_vs_similarity_figure(matrix, value=value, similarity=similarity)
        st.plotly_chart(scatter, key="tr_scatter")
        export.export_buttons(f"site_transfer_vs_{similarity}_{value}_{model.name}", figure=scatter)

# ----------------------------------------------------------------------------- one cell

st.subheader("One cell, per query")
left, right, _ = st.columns([2, 2, 3])
source = left.selectbox("Source A (its heads)", sources_list, key="tr_source")
target = right.selectbox("Target B (task, embedding)", targets_list, key="tr_target")
urls.share_in_url(source=source, target=target)
row = matrix[(matrix["source"] == source) & (matrix["target"] == target)]
if not row.empty:
    r = row.iloc[0]
    shown_metrics = {name: label for name, label in METRICS.items() if name in r and pd.notna(r[name])}
    cols = st.columns(len(shown_metrics) + 2)
    for col, (name, label) in zip(cols, shown_metrics.items()):
        col.metric(label, f"{r[name]:.0%}")
    if "own_first_token_acc" in r and pd.notna(r["own_first_token_acc"]):
        cols[-2].metric("own alpha (first token)", f"{r['own_first_token_acc']:.0%}")
    if "relative" in r:
        cols[-1].metric("relative", "n/a" if pd.isna(r["relative"]) else f"{r['relative']:.2f}")

cell_rows = None
if per_query is not None:
    cell_rows = per_query[(per_query["task"] == target) & per_query["source"].isin([source, target])]
else:
    cache = st.session_state.setdefault("tr_bundled_cells", {})
    if (source, target) in cache:
        cell_rows = cache[(source, target)]
    elif not row.empty and row.iloc[0]["source_task"] in run_of and target in run_of:
        limit = int(matrix["limit"].max()) if "limit" in matrix.columns else 20
        r = row.iloc[0]
        if st.button(f"Evaluate this cell's queries ({limit} per head set)", icon=":material/play_arrow:"):
            with st.spinner(f"Evaluating {target} with the heads of {source} and with its own ..."):
                try:
                    task = tasks.get_task(target)
                    heads = source_of(r["source_method"], r["source_task"], r["k"])
                except (TaskFileError, RunError) as err:
                    st.error(text(err), icon=":material/error:")
                    st.stop()
                cell_rows = cache[(source, target)] = cell_queries(
                    model, task, heads, fit_of(target), limit=limit, label=source
                )
    else:
        st.info("This cell's runs are not in the run stores: its queries cannot be evaluated here.")

if cell_rows is not None and not cell_rows.empty:
    st.dataframe(cell_table(cell_rows, target), hide_index=True)
    st.caption(
        f"Task {target}: each query with {target}'s embedding at the heads of {source}"
        + (" and at its own heads." if source != target else ".")
    )
    export.export_buttons(
        f"site_transfer_cell_{source}_{target}",
        tables={"Cell queries": cell_rows.drop(columns=["prompt"], errors="ignore")},
    )
