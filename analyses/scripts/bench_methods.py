"""All methods side by side, per task: zero-shot, 10-shot ICL and every registered method.

    python analyses/scripts/bench_methods.py --tasks antonym country_capital present_past
    python analyses/scripts/bench_methods.py --store results/runs     # also save every fit as a run
    python analyses/scripts/bench_methods.py --reuse-bundled SITE     # load SITE from results/runs
    python analyses/scripts/bench_methods.py --resume                 # go on after an interruption

Each method is fitted on the task's train split (or, with ``--reuse-bundled``, loaded from
the bundled run of the same template when there is one: its fit time is the one recorded
in the run, note "bundled"), then every method is evaluated on the same test queries, in
one run: the three answer metrics (first-token accuracy, prefix match, exact match), fit
time, time per query, prompt tokens and peak memory. Rows "<method> | ICL-correct" score a
method on the test items 10-shot ICL answers correctly (first token), as Todd et al. report
FV. ``--set LTV.loss=answer`` and the like change a method's settings. Prints markdown and
writes CSVs to analyses/results/; the CSVs are rewritten after every task, so ``--resume``
skips the tasks already done.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from workbench import atomic
from workbench.experiments.comparison import RESULTS, compare_methods
from workbench.experiments.evaluation import majority_baseline, summarize
from workbench.experiments.measure import Measure
from workbench.methods import METHODS, settings
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.scoring import ANSWER_METRICS, METRICS, current_columns
from workbench.store.codec import from_run, to_run
from workbench.store.runs import RunStore, bundled_store
from workbench.tasks.files import list_tasks, load_task
from workbench.tasks.prompts import DEFAULT_TEMPLATE, get_template


def bundled_fit(model, task, name: str, template: str):
    """The bundled run of method ``name`` for ``task`` with ``template``, as a fit, or None."""
    run = bundled_store().latest(name, task.name, model.name)
    if run is None or run.meta["config"].get("template") != template:
        return None
    return from_run(run, model)


def parse_settings(items: list[str]) -> dict[str, dict]:
    """["LTV.loss=answer", "SITE.when=generated"] -> {"LTV": {"loss": "answer"}, ...}: each value
    read as its setting's type and checked against its bounds (workbench.methods.settings)."""
    chosen: dict[str, dict] = {}
    for item in items:
        key, _, value = item.partition("=")
        name, _, field = key.partition(".")
        if name not in METHODS or not field or not value:
            raise SystemExit(
                f"error: --set {item!r}: use METHOD.setting=value with a method of {', '.join(METHODS)}"
            )
        try:
            chosen.setdefault(name, {})[field] = settings.parse(METHODS[name].Config, field, value)
            METHODS[name].Config(**chosen[name]).check()
        except ValueError as err:
            raise SystemExit(f"error: --set {item!r}: {err}") from None
    return chosen


def bench_task(model, task, template: str, shots: int, limit: int | None, methods: list[str], reuse: set[str],
               store, settings: dict | None = None):
    """Fit every method on the task (timed), then evaluate all of them on the same queries."""
    fits, fitting = {}, {}
    for name in methods:
        fit = bundled_fit(model, task, name, template) if name in reuse else None
        if fit is not None:
            fits[name], fitting[name] = fit, {
                "fit_s": fit.fit_seconds, "fit_peak_mib": float("nan"), "note": "bundled"
            }
            continue
        method = METHODS[name]
        with Measure(model.device) as m:
            fits[name] = method.fit(
                model, task, method.Config(template=template, **(settings or {}).get(name, {}))
            )
        fitting[name] = {"fit_s": m.seconds, "fit_peak_mib": m.peak_mib, "note": ""}
    per_query, summary = compare_methods(model, task, fits, template=template, shots=shots, limit=limit)
    summary = pd.concat([summary, icl_correct_rows(per_query, shots)], ignore_index=True)
    majority = majority_baseline(task, limit=limit)
    rows = [
        {
            "task": task.name,
            "method": s.method,
            **{m.summary: getattr(s, m.summary) for m in ANSWER_METRICS},
            "when": s.when,
            "fit_s": float("nan"),
            "s_per_query": s.seconds_per_query,
            "tokens": s.prompt_tokens,
            "n": s.n,
            "fit_peak_mib": float("nan"),
            "eval_peak_mib": s.eval_peak_mib,
            "note": "",
            **fitting.get(s.method, {}),
            "majority": majority,
        }
        for s in summary.itertuples()
    ]
    for name, fit in fits.items():
        if store is not None and fitting[name]["note"] != "bundled":
            row = next(r for r in rows if r["method"] == name)
            scores = {**{m.run_key: row[m.summary] for m in ANSWER_METRICS}, "n_test": int(row["n"]),
                      "when": row["when"], "s_per_query": row["s_per_query"], "prompt_tokens": row["tokens"],
                      "fit_peak_mib": row["fit_peak_mib"], "eval_peak_mib": row["eval_peak_mib"]}
            store.save(to_run(fit, model, task, metrics={task.name: scores}))
    return rows, per_query


def icl_correct_rows(per_query: pd.DataFrame, shots: int) -> pd.DataFrame:
    """Every fitted method again on the test items k-shot ICL answers correctly (first token):
    methods "<name> | ICL-correct"."""
    icl = per_query[per_query["method"] == f"{shots}-shot ICL"]
    correct = set(icl.loc[icl["first_token_correct"], "input"])
    baselines = {"zero-shot", f"{shots}-shot ICL"}
    subset = per_query[~per_query["method"].isin(baselines) & per_query["input"].isin(correct)]
    if subset.empty:
        return pd.DataFrame()
    summary = summarize(subset.assign(method=subset["method"] + " | ICL-correct"))
    summary["eval_peak_mib"] = float("nan")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every built-in task")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--reuse-bundled", nargs="*", default=[], choices=list(METHODS), metavar="METHOD",
                        help="load these methods from the bundled runs (same template) instead of fitting")
    parser.add_argument("--template", default=DEFAULT_TEMPLATE)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--store", default=None, help="save every fit into this run store")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--resume", action="store_true", help="keep the tasks already in the output CSVs")
    parser.add_argument("--set", nargs="*", default=[], metavar="METHOD.SETTING=VALUE",
                        help="change a method's setting, e.g. LTV.loss=answer SITE.when=generated")
    parser.add_argument("--suffix", default="", help="added to the output file names (e.g. _5tasks)")
    args = parser.parse_args(argv)
    chosen = parse_settings(args.set)

    model = load_model(args.model)
    store = RunStore(args.store) if args.store else None
    print(
        f"model {model.name} on {model.device}; template {get_template(args.template).describe()}\n",
        flush=True,
    )
    stem = f"methods_{args.model.replace('/', '--')}_{args.template}{args.suffix}"
    paths = args.out / f"{stem}.csv", args.out / f"{stem}_per_query.csv"
    table, per_query = pd.DataFrame(), pd.DataFrame()
    if args.resume and all(path.exists() for path in paths):
        table, per_query = current_columns(pd.read_csv(paths[0])), pd.read_csv(paths[1])
    done = set(table.get("task", []))
    for name in tqdm(
        [t for t in args.tasks or list_tasks() if t not in done], desc="methods benchmark", unit="task"
    ):
        task_rows, frame = bench_task(
            model, load_task(name), args.template, args.shots, args.limit, args.methods,
            set(args.reuse_bundled), store, chosen,
        )
        table = pd.concat([table, pd.DataFrame(task_rows)], ignore_index=True)
        per_query = pd.concat([per_query, frame.drop(columns=["prompt"])], ignore_index=True)
        for frame_, path in zip((table, per_query), paths):  # after every task
            atomic.write_text(path, frame_.to_csv(index=False))
    order = list(dict.fromkeys(table["method"]))
    for value, title in METRICS.items():
        wide = table.pivot(index="task", columns="method", values=value)[order]
        wide.loc["MEAN"] = wide.mean()
        print(f"## {title.capitalize()}, test split, template {args.template}\n")
        print(wide.rename(columns=_markdown_safe).to_markdown(floatfmt=".2f"), "\n")
    means = table.groupby("method", sort=False)[
        [*METRICS, "fit_s", "s_per_query", "tokens", "fit_peak_mib", "eval_peak_mib"]
    ].mean()
    print(
        "## Means over tasks: accuracy, fit time (s), time per query (s), prompt tokens, peak memory (MiB)\n"
    )
    print(means.rename(index=_markdown_safe).to_markdown(floatfmt=".3f"))


def _markdown_safe(name: str) -> str:
    """A row or column name inside a markdown table: "SITE | ICL-correct" keeps its pipe."""
    return str(name).replace("|", "\\|")


if __name__ == "__main__":
    main()
