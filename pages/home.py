"""Home: what the workbench is, the loaded model and its head shape, the runs in the two
stores per method, and a card for each view (``views.VIEWS``) that opens it.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from workbench.app import models, runs, views
from workbench.app.text import text
from workbench.methods import METHODS

CARDS_PER_ROW = 3

views.enter_page()
st.title("Task Vector Workbench")
st.markdown(
    "How does a language model carry a task from a few examples in its prompt into its activations? "
    "The workbench fits task-vector methods (the table below lists them) on tasks of input/output "
    "pairs and scores them against zero-shot and few-shot prompting on the same held-out queries. "
    "Every fit is saved as a run, so the views below compare the methods, map the attention heads "
    "that carry a task, and test whether one task's heads serve another."
)
model = models.current_model()
shape = model.heads.shape

model_col, runs_col = st.columns([5, 7], gap="large")
with model_col:
    st.subheader("Model")
    st.markdown(f"**{text(model.name)}**")
    cols = st.columns(4)
    cols[0].metric("layers", shape.n_layers)
    cols[1].metric("heads / layer", shape.n_heads)
    cols[2].metric("KV heads", shape.n_kv_heads, help="Key/value heads per layer (grouped-query attention).")
    cols[3].metric("d_model", shape.d_model)
    st.caption(
        f"Weights from {model.source} on {model.device}, loaded in {model.load_seconds:.1f} s. "
        "Pick another model in the sidebar; the choice travels in every link (`?model=`)."
    )
with runs_col:
    st.subheader("Fitted runs")
    listed = runs.all_runs()
    here = listed[listed["model"] == model.name]
    counts = here.groupby(["method", "store"]).size().unstack(fill_value=0)
    table = pd.DataFrame(
        {
            "method": list(METHODS),
            "name": [method.title for method in METHODS.values()],
            **{
                label: [int(counts.at[name, label]) if name in counts.index and label in counts else 0
                        for name in METHODS]
                for label in runs.RUN_STORES
            },
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        column_config={
            "bundled": st.column_config.NumberColumn("bundled runs", help="Shipped in results/runs."),
            "user": st.column_config.NumberColumn("your runs", help="Fitted here or with the CLI."),
        },
    )
    others = len(listed) - len(here)
    st.caption(
        f"Runs for {text(model.name)}, per method and store"
        + (f"; {others} more for other models." if others else ".")
    )

st.subheader("Views")
for start in range(0, len(views.VIEWS), CARDS_PER_ROW):
    row = views.VIEWS[start : start + CARDS_PER_ROW]
    for column, view in zip(st.columns(CARDS_PER_ROW), row):
        with column.container(border=True, height="stretch"):
            st.page_link(view.script, label=f"**{view.title}**", icon=view.icon)
            st.caption(view.summary)
