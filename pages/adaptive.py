"""Adaptive vectors: one ATV run, one query. The query's answer with and without its vectors,
the vectors per layer (norms, logit lens), which task they look like (cosine to each task's
mean ATV vector and to its TV / FV / LTV vectors), and the answer as lambda is scaled, as
one layer's vector is removed at a time, and with another query's vectors.

Widgets -> ``workbench.experiments.adaptive`` -> ``analyses.figures.adaptive``. The view
(run, task, query, lambda, swap query) is in the URL.
"""

from __future__ import annotations

import streamlit as st
import torch

from analyses.figures.adaptive import (
    ablation_figure,
    layer_norms_figure,
    logit_lens_figure,
    scale_figure,
    similarity_figure,
    swap_figure,
    task_match_figure,
)
from workbench.app import export, models, runs, tasks, urls, views
from workbench.app.text import text
from workbench.experiments import adaptive
from workbench.store.runs import RunError
from workbench.tasks.files import TaskFileError

TYPED = "(a query of your own)"
DEFAULT_QUERY = "hot"
MEAN_QUERIES = 50  # test queries averaged into each task's mean ATV vector
LENS_TOP_K = 8
TRAIN_HINT = (
    "Train one with `python analyses/scripts/train_atv.py`, or from the command line on a mixture of tasks: "
    "`python -m workbench fit --method ATV --task antonym present_past country_capital --agnostic` "
    "(without `--agnostic`, one run per task). The **Fit a method** page fits one too (method ATV, "
    "with more tasks under *Fit together with*)."
)
METRIC_COLUMNS = {
    "variant": st.column_config.TextColumn("vectors"),
    "prediction": st.column_config.TextColumn("answer"),
    "first_token_correct": st.column_config.CheckboxColumn("first token"),
    "prefix_match": st.column_config.CheckboxColumn("prefix"),
    "exact_match": st.column_config.CheckboxColumn("exact"),
    "target_prob": st.column_config.NumberColumn("P(target token)", format="%.4f"),
}


@st.cache_resource(show_spinner=False, max_entries=64)
def task_means(run_id: str, model_name: str, task_key: str, _model, _fit, _task) -> torch.Tensor:
    """A task's mean ATV vector (L, d_model) for a run, once per run and task content."""
    return adaptive.task_mean_vectors(_model, _fit, _task, limit=MEAN_QUERIES)


@st.cache_resource(show_spinner=False, max_entries=64)
def method_vectors(run_id: str, model_name: str, _model, _fit) -> torch.Tensor:
    """A TV / FV / LTV run's vector per layer (L, d_model), NaN where it has none."""
    return adaptive.reference_vectors(_fit, _model)


views.enter_page()
st.title("Adaptive vectors")
st.caption(
    "ATV writes every query its own vectors, one per layer, from a small model's reading of the query; "
    "lambda * v[l] is added to the residual after layer l at the last prompt token. Pick a run and a "
    "query to see what its vectors are and what they do."
)
model = models.current_model()
atv_runs = runs.method_runs("ATV", model.name)
if atv_runs.empty:
    st.info(f"No ATV run for {text(model.name)} yet. {TRAIN_HINT}", icon=":material/info:")
    st.stop()

# ----------------------------------------------------------------------------- run and query

ids = list(atv_runs["id"])
labels = {row.id: f"{row.id} ({row.store}; {', '.join(row.tasks)})" for row in atv_runs.itertuples()}
urls.seed_from_query("atv_run", ids[0], valid=ids, param="run")
run_id = st.selectbox("ATV run", ids, key="atv_run", format_func=labels.get)
store = atv_runs.loc[atv_runs["id"] == run_id, "store"].iloc[0]
try:
    fit = runs.stored_fit(store, run_id, model)
except RunError as err:
    st.error(text(err), icon=":material/error:")
    st.stop()
config = fit.config
st.caption(
    f"Tasks {', '.join(fit.tasks)}; S = {text(config.encoder)}, rank {config.rank or 'full'}, "
    f"fitted lambda {config.scale:g}, template {config.template}, acting at the "
    f"{'last prompt token' if config.when == 'last' else 'last prompt token and every generated token'}; "
    f"best step {fit.trace.best_step}, selection loss {fit.trace.best_valid_loss:.3f}, "
    f"{fit.n_train} training queries."
)

task_options = [
    TYPED,
    *fit.tasks,
    *sorted(t for t in {*tasks.builtin_tasks(), *tasks.uploaded_tasks()} if t not in fit.tasks),
]
typed_link = "task" not in st.query_params and "query" in st.query_params
urls.seed_from_query("atv_task", TYPED if typed_link else fit.tasks[0], valid=task_options, param="task")
task_col, query_col = st.columns([2, 3])
task_name = task_col.selectbox(
    "Query from",
    task_options,
    key="atv_task",
    help="A task's test queries (with their answers), or type one.",
)
task, answer = None, None
if task_name == TYPED:
    urls.seed_from_query("atv_typed", DEFAULT_QUERY, param="query")
    query = query_col.text_input(
        "Query", key="atv_typed", help="The input alone: the fit's template wraps it."
    )
    query = query.strip()
else:
    try:
        task = tasks.get_task(task_name)
    except TaskFileError as err:
        st.error(text(err), icon=":material/error:")
        st.stop()
    test = task.split(config.seed).test
    gold = dict(test)
    urls.seed_from_query("atv_query", test[0][0], valid=gold, param="query")
    if st.session_state.atv_query not in gold:  # another task was picked
        st.session_state.atv_query = test[0][0]
    query = query_col.selectbox("Query (test split)", list(gold), key="atv_query")
    answer = gold[query]

scale_col, swap_col = st.columns([2, 3])
top = max(3.0, 3.0 * config.scale)
urls.seed_from_query("atv_scale", float(config.scale), float, param="scale")
if not 0.0 <= st.session_state.atv_scale <= top:
    st.session_state.atv_scale = float(config.scale)
scale = scale_col.slider(
    "lambda",
    0.0,
    top,
    step=0.05,
    key="atv_scale",
    help=f"The scale of the vectors; the fit used {config.scale:g}.",
)
other_task = next((t for t in fit.tasks if t != task_name), fit.tasks[0])
try:
    default_swap = tasks.get_task(other_task).split(config.seed).test[0][0]
except TaskFileError:
    default_swap = DEFAULT_QUERY
urls.seed_from_query("atv_swap", default_swap, param="swap")
other = swap_col.text_input(
    "Swap with the vectors of",
    key="atv_swap",
    help="Another query (of another task, say): its vectors replace this query's.",
).strip()
urls.share_in_url(
    run=run_id,
    task=None if task is None else task_name,
    query=query or None,
    scale=f"{scale:g}",
    swap=other or None,
)
if not query:
    st.info("Type a query.", icon=":material/edit:")
    st.stop()
prompt = adaptive.query_prompt(fit, query)
case = (
    bool(task.case_sensitive) if task is not None else True
)  # a typed query follows the model's own answer, as written

# ----------------------------------------------------------------------------- computations

mean_tasks = [*fit.tasks, *([task_name] if task is not None and task_name not in fit.tasks else [])]
with st.status(f"Reading {text(query)} with run {text(run_id)} ...") as status:
    bar = st.progress(0.0, text="answers")
    steps = 6 + len(mean_tasks)
    try:
        answers = adaptive.answers(model, fit, query, answer, scale=scale, case_sensitive=case)
        reference = answer
        if reference is None:  # a typed query: follow the steered answer (or the plain one)
            reference = next((p for p in answers["prediction"][::-1] if p.strip()), None)
        bar.progress(1 / steps, text="vectors")
        vectors = adaptive.atv_vectors(model, fit, [query], scale)[0]  # (L, d_model)
        norms = adaptive.layer_norms(vectors)
        lens = adaptive.logit_lens(model, vectors, LENS_TOP_K)
        means = {}
        for i, name in enumerate(mean_tasks):
            bar.progress((2 + i) / steps, text=f"mean ATV vector of {name}")
            task_i = task if name == task_name and task is not None else tasks.get_task(name)
            means[name] = task_means(run_id, model.name, task_i.content_hash, model, fit, task_i)
        others, problems = {}, []
        for name in mean_tasks:
            fits_i, rows_i, problems_i = runs.task_fits(name, model, adaptive.reference_methods())
            problems += problems_i
            for method, fit_i in fits_i.items():
                others[(name, method)] = method_vectors(rows_i[method]["id"], model.name, model, fit_i)
        similarity = adaptive.similarity_to_tasks(vectors, means, others)
        match = adaptive.task_match(similarity)
        sweep = ablation = swapped = None
        if reference is not None:
            bar.progress((2 + len(mean_tasks)) / steps, text="lambda sweep")
            scales = sorted({*(s * config.scale for s in adaptive.DEFAULT_SCALES), scale})
            sweep = adaptive.scale_sweep(model, fit, query, scales, reference, case_sensitive=case)
            bar.progress((3 + len(mean_tasks)) / steps, text="layers ablated one at a time")
            ablation = adaptive.layer_ablation(model, fit, query, reference, scale=scale, case_sensitive=case)
            if other:
                bar.progress((4 + len(mean_tasks)) / steps, text="swapped vectors")
                swapped = adaptive.swap(model, fit, query, other, reference, scale=scale, case_sensitive=case)
    except (ValueError, TaskFileError) as err:
        status.update(label="Could not read this query", state="error", expanded=True)
        st.error(text(err), icon=":material/error:")
        st.stop()
    bar.progress(1.0, text="done")
    status.update(label=f"Read {text(query)} with run {text(run_id)}", state="complete")
for problem in problems:
    st.warning(text(f"Skipped a run that does not load: {problem}"), icon=":material/warning:")
stem = f"atv_{run_id}_{query}"

# ----------------------------------------------------------------------------- the answer

st.subheader("The answer with and without the vectors")
st.code(prompt, language=None)
shown = [c for c in METRIC_COLUMNS if c in answers.columns]
st.dataframe(answers[shown], hide_index=True, column_config=METRIC_COLUMNS)
if answer is not None:
    st.caption(
        f"Gold answer {text(answer)} ({task_name}, test split). Scored as every table "
        "scores answers: first-token accuracy, prefix match, exact match."
    )
elif reference is not None:
    st.caption(
        f"No gold answer for a typed query: below, the probabilities and marks follow the answer "
        f"{text(reference)} (the steered one, else the plain one)."
    )
export.export_buttons(f"{stem}_answers", tables={"answers": answers})

# ----------------------------------------------------------------------------- the vectors

st.subheader("The vectors, layer by layer")
fig = layer_norms_figure(norms, title=f"||v[l]|| at lambda {scale:g}")
st.plotly_chart(fig, key="atv_norms")
export.export_buttons(f"{stem}_norms", figure=fig, tables={"norms": norms})
fig = logit_lens_figure(
    lens, title=f"Logit lens: the top {LENS_TOP_K} tokens of v[l] through the final norm and unembedding"
)
st.plotly_chart(fig, key="atv_lens")
export.export_buttons(f"{stem}_logit_lens", figure=fig, tables={"logit lens": lens})

st.subheader("Which task does this query look like?")
st.caption(
    f"Cosine of each layer's v[l] to each task's mean ATV vector (over up to {MEAN_QUERIES} test queries), "
    "the same after the average of those means is taken out of both (centred), and to the task's stored "
    "TV (its mean k-shot residual at every layer, which it substitutes), FV (one vector, at its layer) "
    "and LTV (the vector it adds at every layer) where runs exist."
)
centred = match[match["reference"] == adaptive.CENTRED]
if not centred.empty:
    best = centred.iloc[0]
    st.markdown(f"Closest task after centring: **{text(best['task'])}** (mean cosine {best['cosine']:.2f}).")
fig = task_match_figure(match)
st.plotly_chart(fig, key="atv_match")
export.export_buttons(f"{stem}_task_match", figure=fig, tables={"task match": match})
fig = similarity_figure(similarity, title="Cosine of v[l] to each reference, layer by layer")
st.plotly_chart(fig, key="atv_similarity")
export.export_buttons(f"{stem}_similarity", figure=fig, tables={"similarity": similarity})

# ----------------------------------------------------------------------------- what they do

st.subheader("What the vectors do to the answer")
if reference is None:
    st.info(
        "Neither the steered nor the plain model gives an answer to follow for this query.",
        icon=":material/info:",
    )
    st.stop()
fig = scale_figure(sweep, current=scale, title="As lambda is scaled")
st.plotly_chart(fig, key="atv_scale_sweep")
export.export_buttons(f"{stem}_lambda", figure=fig, tables={"lambda sweep": sweep})
fig = ablation_figure(ablation, title=f"One layer's vector removed at a time (lambda {scale:g})")
st.plotly_chart(fig, key="atv_ablation")
export.export_buttons(f"{stem}_ablation", figure=fig, tables={"ablation": ablation})
if swapped is not None:
    fig = swap_figure(swapped, title=f"With the vectors of {other!r} instead of its own")
    st.plotly_chart(fig, key="atv_swap_chart")
    export.export_buttons(f"{stem}_swap", figure=fig, tables={"swap": swapped})
st.caption(
    f"Green: the answer is {text(reference)} exactly (exact match); red: it is not. Hover a point or "
    "bar for the answer and all three metrics."
)
