"""Function regression: a small transformer trained to regress in context (after Garg et
al. 2022), its error against the number of examples next to least squares and the other
baselines, and whether task vectors (LTV, FV, TV) carry the task past the training length
and under shifts of the data.

Everything comes from the shipped results (``workbench.regression.bundled``: the models
in results/regression, the benchmark's CSVs in analyses/results), so nothing trains here.
Widgets -> ``workbench.regression.bundled`` -> ``analyses.figures.regression``. The view
(family, shift) is in the URL.
"""

from __future__ import annotations

import streamlit as st

from analyses.figures.regression import error_curves_figure, ltv_weight_map_figure, shift_bars_figure
from workbench.app import export, urls, views
from workbench.regression import bundled
from workbench.regression.baselines import BASELINES
from workbench.regression.benchmark import SHIFTS
from workbench.regression.curves import MODEL_NAME
from workbench.regression.task_vectors import PLAIN, REGRESSION_METHODS, TRUNCATED

views.enter_page()

ROWS = [PLAIN, TRUNCATED, *REGRESSION_METHODS, *BASELINES]
DEFAULT_ROWS = [PLAIN, *REGRESSION_METHODS, "least_squares"]

st.title("Function regression")
st.caption(
    "A small GPT-style transformer reads x1, y1, ..., xq (x in R^d) and predicts y at every x, for a "
    "function drawn fresh for every prompt. Error is the squared error divided by d, with 95% bands. "
    "Task vectors are built from the head outputs (LTV, FV) or the residual (TV) at the query of a "
    "training-length prompt of the same function, and edit the query of a longer prompt."
)

available = bundled.families()
if not available:
    st.info(
        "No trained model in results/regression. Train one with "
        "`analyses/scripts/train_regression.py`, then run `analyses/scripts/bench_regression.py`.",
        icon=":material/info:",
    )
    st.stop()

urls.seed_from_query("reg_family", available[0], valid=available, param="family")
urls.seed_from_query("reg_shift", "beyond", valid=list(SHIFTS), param="shift")
family_col, shift_col = st.columns(2)
family = family_col.selectbox("Family", available, key="reg_family")
shift = shift_col.selectbox("Shift", list(SHIFTS), format_func=lambda s: SHIFTS[s].label, key="reg_shift")
urls.seed_list_from_query("reg_rows", DEFAULT_ROWS, valid=ROWS, param="rows")
rows = st.multiselect("Methods and baselines", ROWS, key="reg_rows")
urls.share_in_url(family=family, shift=shift, rows=",".join(rows) or None)
meta = bundled.metrics(family)
config = bundled.config(family)
n_train = config["family"]["n_points"]

# ----------------------------------------------------------------------------- the trained model

st.subheader("The trained model against the baselines")
shape = config["model"]
st.caption(
    f"{shape['n_layers']} layers x {shape['n_heads']} heads x d_model {shape['d_model']}, d = "
    f"{shape['n_dims']}, trained on {n_train} points for {meta['step']} steps "
    f"({meta['elapsed_s'] / 60:.0f} min). Curves on {meta['curve_config']['n_sequences']} held-out prompts."
)
training = bundled.training_curves(family)
noises = sorted(training["noise_std"].unique())
noise = (
    st.radio("Noise std of y (evaluation)", noises, horizontal=True, key="reg_noise")
    if len(noises) > 1
    else noises[0]
)
curves = training[training["noise_std"] == noise]
baselines = [r for r in rows if r in BASELINES]
log_y = st.toggle("Log scale", value=noise == 0, key="reg_log")
fig = error_curves_figure(curves, [MODEL_NAME, *baselines], title=f"{family}, noise std {noise}", log_y=log_y)
st.plotly_chart(fig, key="reg_training_curves")
export.export_buttons(f"regression_{family}_training_noise{noise}", figure=fig, tables={"curves": curves})

# ----------------------------------------------------------------------------- task vectors

st.subheader("Task vectors")
try:
    table, lengths = bundled.task_vector_table(), bundled.task_vector_curves()
except FileNotFoundError:
    st.info("No benchmark results yet: run `analyses/scripts/bench_regression.py`.", icon=":material/info:")
    st.stop()
table, lengths = table[table["family"] == family], lengths[lengths["family"] == family]
if table.empty:
    st.info(f"The benchmark has no rows for {family}.", icon=":material/info:")
    st.stop()
chosen = lengths[lengths["shift"] == shift]
shown = chosen[chosen["method"].isin(rows) & (chosen["mean"] > 1e-6)]["mean"]  # exact least squares aside
wide_range = not shown.empty and shown.max() > 100 * shown.min()  # e.g. least squares' peak at k = d
fig = error_curves_figure(
    chosen,
    rows,
    name_column="method",
    title=f"{family}: {SHIFTS[shift].label}",
    train_k=n_train - 1,
    log_y=st.toggle("Log scale ", value=wide_range, key="reg_log_tv"),
)
st.plotly_chart(fig, key="reg_tv_curves")
at_length = table[(table["shift"] == shift) & table["method"].isin(rows)]
st.dataframe(
    at_length[["k", "method", "mean", "lo", "hi", "vs_plain", "vs_least_squares", "minus_least_squares"]],
    hide_index=True,
    column_config={
        "mean": st.column_config.NumberColumn("error / d", format="%.4f"),
        "lo": st.column_config.NumberColumn("95% lo", format="%.4f"),
        "hi": st.column_config.NumberColumn("95% hi", format="%.4f"),
        "vs_plain": st.column_config.NumberColumn("x plain", format="%.3f"),
        "vs_least_squares": st.column_config.NumberColumn("x least squares", format="%.3g"),
        "minus_least_squares": st.column_config.NumberColumn("- least squares", format="%.4f"),
    },
)
export.export_buttons(
    f"regression_{family}_{shift}", figure=fig, tables={"curves": chosen, "table": at_length}
)
bars = shift_bars_figure(
    table, [r for r in rows if r in set(table["method"])], title="Every shift at its table length"
)
st.plotly_chart(bars, key="reg_shift_bars")

# ----------------------------------------------------------------------------- the LTV weights

st.subheader("LTV weights")
if not bundled.has_fits(family):
    st.info(f"No task-vector fits shipped for {family}.", icon=":material/info:")
    st.stop()
fits = bundled.fits(family)
map_col, note_col = st.columns([3, 2], gap="large")
map_col.plotly_chart(ltv_weight_map_figure(fits.ltv.theta, title=f"theta[l, h], {family}"), key="reg_theta")
heads = ", ".join(f"L{layer}H{head}" for layer, head in fits.fv.heads)
note_col.markdown(
    f"- **LTV**: theta fitted on prompts of {fits.config.fit_points[0]} to {fits.config.fit_points[1]} "
    f"points; best valid check at step {fits.ltv.trace.best_step}.\n"
    f"- **FV**: top {fits.fv.top_k} heads by indirect effect ({heads}), added after layers "
    f"{', '.join(map(str, fits.fv.layers))}.\n"
    f"- **TV**: the residual after layer {fits.tv.layer} replaced."
)
