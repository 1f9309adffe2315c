"""Evaluate: zero-shot vs k-shot in-context learning on one task.

Widgets -> ``workbench.experiments.grid.evaluate_grid`` -> ``analyses.figures.evaluation``. The view
(task, template, shots, split, limit, seed) is kept in the URL; results are kept in the
session so they survive reruns.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from analyses.figures.evaluation import accuracy_bar_chart
from workbench.app import export, models, tasks, urls, views
from workbench.app.progress import progress_bar
from workbench.app.text import text
from workbench.experiments.evaluation import majority_baseline, side_by_side
from workbench.experiments.grid import check_grid, evaluate_grid, summarize_grid
from workbench.scoring import METRICS
from workbench.tasks.files import TaskFileError
from workbench.tasks.prompts import DEFAULT_TEMPLATE, TEMPLATES, build_prompts, get_template

SPLITS = ("train", "valid", "test")
CUSTOM = "custom"
CUSTOM_EXAMPLE = r"Input: {x}\nOutput:"
RESULTS_KEY = "evaluate_results"

views.enter_page()
st.title("Evaluate")
st.caption(
    "Does the model do the task from examples alone? Zero-shot prompts against k-shot "
    "in-context learning (ICL): the baselines every task-vector method is measured against."
)
model = models.current_model()

# ----------------------------------------------------------------------------- settings

if "template" not in st.session_state:
    requested = st.query_params.get("template") or DEFAULT_TEMPLATE
    st.session_state.template = requested if requested in TEMPLATES else CUSTOM
    if requested not in TEMPLATES:
        st.session_state.template_custom = requested
urls.seed_from_query("shots", 10, int, valid=range(0, 101))
urls.seed_from_query("split", "test", valid=SPLITS)
urls.seed_from_query("limit", 40, int, valid=range(1, 100_001))
urls.seed_from_query("seed", 0, int, valid=range(0, 2**31))

task_col, template_col, numbers_col = st.columns([5, 4, 3], gap="large")
with task_col:
    task_name = tasks.task_picker("task")
with template_col:
    template_choice = st.selectbox("Prompt template", [*TEMPLATES, CUSTOM], key="template")
    if template_choice == CUSTOM:
        st.session_state.setdefault("template_custom", CUSTOM_EXAMPLE)
        template_spec = st.text_input(
            "Custom query format",
            key="template_custom",
            help=r"Contains {x}; write a line break as \n; a separator may follow a '|', "
            r"e.g. Q: {x}\nA:|\n\n (default separator: one line break).",
        )
    else:
        template_spec = template_choice
with numbers_col:
    left, right = st.columns(2)
    shots = left.number_input("Shots k", min_value=0, max_value=100, key="shots")
    split = right.selectbox("Split", SPLITS, key="split")
    limit = left.number_input("Limit (queries)", min_value=1, max_value=100_000, key="limit")
    seed = right.number_input("Seed", min_value=0, max_value=2**31 - 1, key="seed")

urls.share_in_url(
    template=template_spec,
    shots=shots,
    split=split,
    limit=limit,
    seed=seed,
)

# ----------------------------------------------------------------------------- task and prompts

if task_name is None:
    st.stop()
try:
    task = tasks.get_task(task_name)
    if not template_spec.strip():
        raise ValueError("Type a custom query format containing {x}, e.g. " + CUSTOM_EXAMPLE)
    template = get_template(template_spec)
    splits = task.split(seed)
    check_grid([task], [0, shots], split=split, seed=seed)
except (TaskFileError, ValueError) as err:
    st.error(text(err), icon=":material/error:")
    st.stop()

data_col, prompt_col = st.columns([5, 7], gap="large")
with data_col:
    st.subheader(f"Task: {text(task.name)}")
    sizes = st.columns(4)
    for column, name in zip(sizes, SPLITS):
        column.metric(name, len(splits[name]))
    sizes[3].metric(
        "majority",
        f"{majority_baseline(task, split=split, seed=seed):.0%}",
        help=f"Exact match of always answering the most common train output, on the whole {split} split.",
    )
    preview = pd.DataFrame(splits[split][:6], columns=["input", "output"])
    st.dataframe(preview, hide_index=True, width="stretch")
    st.caption(f"First {len(preview)} of {len(splits[split])} {split} items (seed {seed}).")
with prompt_col:
    query, answer = splits[split][0]
    examples = {"zero-shot": 0, f"{shots}-shot": shots} if shots else {"zero-shot": 0}
    for column, (label, k) in zip(st.columns(len(examples)), examples.items()):
        column.markdown(f"**{label} prompt**")
        prompt = build_prompts(template, [query], splits.train, k, seed=seed)[0]
        column.code(prompt, language=None, height=260)
    st.caption(
        f"The first {split} query as evaluated; expected answer `{answer}`. "
        f"Template {template.describe()}"
    )

# ----------------------------------------------------------------------------- run

settings = {
    "model": model.name,
    "task": task.name,
    "template": template.describe(),
    "shots": int(shots),
    "split": split,
    "limit": int(limit),
    "seed": int(seed),
}
if st.button("Run evaluation", type="primary", icon=":material/play_arrow:"):
    with st.status(f"Evaluating {task.name} on {model.name} ...", expanded=True) as status:
        try:
            results = evaluate_grid(
                model, [task], sorted({0, int(shots)}), template=template, split=split,
                limit=int(limit), seed=int(seed), progress=progress_bar("queries"),
            )
        except ValueError as err:
            status.update(label="Evaluation failed", state="error")
            st.error(text(err), icon=":material/error:")
            st.stop()
        done = f"Evaluated {task.name}: {len(results)} queries"
        status.update(label=done, state="complete", expanded=False)
    summary = summarize_grid(results, [task], split=split, seed=int(seed))
    st.session_state[RESULTS_KEY] = {"settings": settings, "results": results, "summary": summary}

# ----------------------------------------------------------------------------- results

stored = st.session_state.get(RESULTS_KEY)
if stored is None:
    st.stop()

st.subheader("Results")
used = stored["settings"]
if used != settings:
    st.info("The settings changed since this run: press **Run evaluation** to update.")
st.caption(
    f"Model {used['model']}, task {used['task']}, {used['split']} split (first {used['limit']} "
    f"queries, seed {used['seed']}). Template {used['template']}"
)
summary = stored["summary"]
st.dataframe(
    summary,
    hide_index=True,
    width="content",
    column_order=["method", "n", *METRICS, "majority_baseline", "prompt_tokens", "seconds_per_query"],
    column_config={
        **{name: st.column_config.NumberColumn(label, format="percent") for name, label in METRICS.items()},
        "majority_baseline": st.column_config.NumberColumn(
            "majority baseline", format="percent", help=f"Exact match on the whole {used['split']} split."
        ),
        "prompt_tokens": st.column_config.NumberColumn("prompt tokens", format="%.1f"),
        "seconds_per_query": st.column_config.NumberColumn("s / query", format="%.3f"),
    },
)

fig = accuracy_bar_chart(summary)
st.plotly_chart(fig, key="accuracy_chart")
queries = side_by_side(stored["results"])
export.export_buttons(
    f"evaluate_{used['task']}_{used['model']}_{used['shots']}shot",
    figure=fig,
    tables={"Per-query table": queries, "All results with prompts": stored["results"]},
)

st.markdown("**Per query**")
st.dataframe(queries, hide_index=True)
