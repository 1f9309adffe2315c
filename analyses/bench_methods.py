"""All methods side by side, per task: zero-shot, 10-shot ICL, TV, FV, LTV, SITE.

    python analyses/bench_methods.py --tasks antonym country_capital present_past
    python analyses/bench_methods.py --store results/runs      # also save the TV / FV / LTV fits
    python analyses/bench_methods.py --resume                  # go on after an interruption

Each method is fitted on the task's train split (SITE is taken from the bundled run when
one exists, else fitted), then every method is evaluated on the same test queries, in
one run: first-token accuracy, exact match, fit time, time per query, prompt tokens and
peak memory. A bundled SITE run is not refitted: its fit time is the one recorded in the
run (note "bundled"). Prints markdown and writes CSVs to analyses/results/; the CSVs are
rewritten after every task, so ``--resume`` skips the tasks already done.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402
from tqdm import tqdm  # noqa: E402

from workbench import site  # noqa: E402
from workbench.evaluation import majority_baseline  # noqa: E402
from workbench.measure import Measure  # noqa: E402
from workbench.methods import METHODS, compare_methods  # noqa: E402
from workbench.models import DEFAULT_MODEL, load_model  # noqa: E402
from workbench.prompts import DEFAULT_TEMPLATE, get_template  # noqa: E402
from workbench.runs import RunStore, bundled_store  # noqa: E402
from workbench.tasks import list_tasks, load_task  # noqa: E402


def site_fit(model, task, template: str):
    """SITE from the bundled run when one exists (fit time: the one recorded in it), else fitted."""
    run = bundled_store().latest("SITE", task.name, model.name)
    if run is not None and run.meta.get("config", {}).get("template") == template:
        meta = run.meta
        return site.from_run(run, model), meta.get("fit_seconds", float("nan")), float("nan"), "bundled"
    with Measure(model.device) as m:
        fit = site.fit_site(model, task, site.SiteConfig(template=template))
    return fit, m.seconds, m.peak_mib, "fitted"


def bench_task(model, task, template: str, shots: int, limit: int | None, methods: list[str], store):
    """Fit every method on the task (timed), then evaluate all of them on the same queries."""
    fits, fitting = {}, {}
    for name in methods:
        if name == "SITE":
            fits[name], seconds, peak, note = site_fit(model, task, template)
        else:
            method = METHODS[name]
            with Measure(model.device) as m:
                fits[name] = method.fit(model, task, method.config(template=template))
            seconds, peak, note = m.seconds, m.peak_mib, ""
        fitting[name] = {"fit_s": seconds, "fit_peak_mib": peak, "note": note}
    per_query, summary = compare_methods(model, task, fits, template=template, shots=shots, limit=limit)
    majority = majority_baseline(task, limit=limit)
    rows = [
        {
            "task": task.name,
            "method": s.method,
            "first": s.first_token_acc,
            "exact": s.exact_match,
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
        if store is not None and name != "SITE":
            row = next(r for r in rows if r["method"] == name)
            scores = {
                "test_first_token_acc": row["first"],
                "test_exact_match": row["exact"],
                "n_test": row["n"],
            }
            store.save(METHODS[name].module.to_run(fit, model, metrics={task.name: {**scores, **row}}))
    return rows, per_query


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every built-in task")
    parser.add_argument(
        "--methods", nargs="+", default=["TV", "FV", "LTV", "SITE"], choices=["TV", "FV", "LTV", "SITE"]
    )
    parser.add_argument("--template", default=DEFAULT_TEMPLATE)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--store", default=None, help="save the TV / FV / LTV fits into this run store")
    parser.add_argument("--out", type=Path, default=ROOT / "analyses" / "results")
    parser.add_argument("--resume", action="store_true", help="keep the tasks already in the output CSVs")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    store = RunStore(args.store) if args.store else None
    print(
        f"model {model.name} on {model.device}; template {get_template(args.template).describe()}\n",
        flush=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"methods_{args.model.replace('/', '--')}_{args.template}"
    paths = args.out / f"{stem}.csv", args.out / f"{stem}_per_query.csv"
    table, per_query = pd.DataFrame(), pd.DataFrame()
    if args.resume and all(path.exists() for path in paths):
        table, per_query = pd.read_csv(paths[0]), pd.read_csv(paths[1])
    done = set(table.get("task", []))
    for name in tqdm(
        [t for t in args.tasks or list_tasks() if t not in done], desc="methods benchmark", unit="task"
    ):
        task_rows, frame = bench_task(
            model, load_task(name), args.template, args.shots, args.limit, args.methods, store
        )
        table = pd.concat([table, pd.DataFrame(task_rows)], ignore_index=True)
        per_query = pd.concat([per_query, frame.drop(columns=["prompt"])], ignore_index=True)
        for frame_, path in zip((table, per_query), paths):  # after every task, atomically
            frame_.to_csv(path.with_suffix(".tmp"), index=False)
            path.with_suffix(".tmp").replace(path)
    order = list(dict.fromkeys(table["method"]))
    for value in ("first", "exact"):
        wide = table.pivot(index="task", columns="method", values=value)[order]
        wide.loc["MEAN"] = wide.mean()
        print(f"## {'First-token accuracy' if value == 'first' else 'Exact match'}, test split\n")
        print(wide.to_markdown(floatfmt=".2f"), "\n")
    means = table.groupby("method", sort=False)[
        ["first", "exact", "fit_s", "s_per_query", "tokens", "fit_peak_mib", "eval_peak_mib"]
    ].mean()
    print(
        "## Means over tasks: accuracy, fit time (s), time per query (s), prompt tokens, peak memory (MiB)\n"
    )
    print(means.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
