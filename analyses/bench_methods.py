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

from workbench import function_vector, ltv, site, task_vector  # noqa: E402
from workbench.evaluation import evaluate, majority_baseline, summarize  # noqa: E402
from workbench.measure import Measure  # noqa: E402
from workbench.models import DEFAULT_MODEL, load_model  # noqa: E402
from workbench.prompts import DEFAULT_TEMPLATE, get_template  # noqa: E402
from workbench.runs import RunStore, bundled_store  # noqa: E402
from workbench.tasks import list_tasks, load_task  # noqa: E402

# method -> (module, fit function, config class); each fit has .intervention() for its task
FITTED = {
    "TV": (task_vector, task_vector.fit_task_vector, task_vector.TaskVectorConfig),
    "FV": (function_vector, function_vector.fit_function_vector, function_vector.FunctionVectorConfig),
    "LTV": (ltv, ltv.fit_ltv, ltv.LtvConfig),
}


def site_fit(model, task, template: str):
    run = bundled_store().latest("SITE", task.name, model.name)
    if run is not None and run.meta.get("config", {}).get("template") == template:
        meta = run.meta
        return site.from_run(run, model), meta.get("fit_seconds", float("nan")), meta.get("fit_peak_mib", float("nan")), "bundled"
    with Measure(model.device) as m:
        fit = site.fit_site(model, task, site.SiteConfig(template=template))
    return fit, m.seconds, m.peak_mib, "fitted"


def bench_task(model, task, template: str, shots: int, limit: int | None, methods: list[str], store):
    rows, frames = [], []

    def run(method: str, fit_s: float = float("nan"), fit_mib: float = float("nan"), note: str = "", **kwargs):
        with Measure(model.device) as m:
            frame = evaluate(model, task, template=template, limit=limit, method=method, **kwargs)
        frames.append(frame)
        s = summarize(frame).iloc[0]
        rows.append({"task": task.name, "method": method, "first": s.first_token_acc, "exact": s.exact_match,
                     "fit_s": fit_s, "s_per_query": s.seconds_per_query, "tokens": s.prompt_tokens,
                     "fit_peak_mib": fit_mib, "eval_peak_mib": m.peak_mib, "note": note})

    run("zero-shot", shots=0)
    run(f"{shots}-shot ICL", shots=shots)
    for method in methods:
        if method == "SITE":
            fit, fit_s, fit_mib, note = site_fit(model, task, template)
            run("SITE", fit_s, fit_mib, note, intervention=fit.intervention(task.name))
            continue
        module, fit_fn, config_cls = FITTED[method]
        with Measure(model.device) as m:
            fit = fit_fn(model, task, config_cls(template=template))
        run(method, m.seconds, m.peak_mib, intervention=fit.intervention())
        if store is not None:
            store.save(module.to_run(fit, model, metrics={task.name: rows[-1]}))
    for row in rows:
        row["majority"] = majority_baseline(task, limit=limit)
    return rows, pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every built-in task")
    parser.add_argument("--methods", nargs="+", default=["TV", "FV", "LTV", "SITE"], choices=["TV", "FV", "LTV", "SITE"])
    parser.add_argument("--template", default=DEFAULT_TEMPLATE)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--store", default=None, help="save the TV / FV / LTV fits into this run store")
    parser.add_argument("--out", type=Path, default=ROOT / "analyses" / "results")
    parser.add_argument("--resume", action="store_true", help="keep the tasks already in the output CSVs")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    store = RunStore(args.store) if args.store else None
    print(f"model {model.name} on {model.device}; template {get_template(args.template).describe()}\n", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"methods_{args.model.replace('/', '--')}_{args.template}"
    paths = args.out / f"{stem}.csv", args.out / f"{stem}_per_query.csv"
    table, per_query = pd.DataFrame(), pd.DataFrame()
    if args.resume and all(path.exists() for path in paths):
        table, per_query = pd.read_csv(paths[0]), pd.read_csv(paths[1])
    done = set(table.get("task", []))
    for name in tqdm([t for t in args.tasks or list_tasks() if t not in done], desc="methods benchmark", unit="task"):
        task_rows, frame = bench_task(model, load_task(name), args.template, args.shots, args.limit, args.methods, store)
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
    means = table.groupby("method", sort=False)[["first", "exact", "fit_s", "s_per_query", "tokens", "fit_peak_mib", "eval_peak_mib"]].mean()
    print("## Means over tasks: accuracy, fit time (s), time per query (s), prompt tokens, peak memory (MiB)\n")
    print(means.to_markdown(floatfmt=".3f"))


if __name__ == "__main__":
    main()
