"""SITE benchmark: per task, zero-shot vs 10-shot ICL vs SITE on the test split.

    python analyses/scripts/bench_site.py                          # every built-in task
    python analyses/scripts/bench_site.py --tasks antonym present_past --limit 40
    python analyses/scripts/bench_site.py --store results/runs     # also (re)write the bundled runs

For each task it fits SITE (timing the fit and its peak memory), evaluates the three
methods on the same test queries (first-token accuracy and exact match, beside the
most-common-label baseline), and measures time per query and peak memory of ICL and of
injected zero-shot inference in the same run. Prints markdown; writes CSVs to
analyses/results/.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from workbench import atomic
from workbench.experiments.comparison import RESULTS
from workbench.experiments.evaluation import evaluate, majority_baseline, summarize
from workbench.experiments.measure import Measure
from workbench.methods.site import SiteConfig, SoftInjection
from workbench.model import inference
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.store.codec import to_run
from workbench.store.runs import RunStore, user_store
from workbench.tasks.files import list_tasks, load_task
from workbench.tasks.prompts import build_prompts, get_template


def forward_ratio(model, task, template, injection, shots: int, repeats: int = 3) -> float:
    """Median time of one injected zero-shot first-token forward over one k-shot forward (batch 16)."""
    splits = task.split(0)
    queries = [x for x, _ in splits.test[:16]]
    zero = build_prompts(template, queries, splits.train, 0)
    icl = build_prompts(template, queries, splits.train, shots)

    def timed(prompts, hooks):
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            with torch.no_grad():
                inference.last_logits(model, prompts, hooks)
            times.append(time.perf_counter() - start)
        return statistics.median(times[1:])

    return timed(zero, injection.hooks(model)) / timed(icl, [])


def bench_task(model, task, config: SiteConfig, shots: int, limit: int | None, store: RunStore | None):
    template = get_template(config.template)
    with Measure(model.device) as fit_m:
        fit = SoftInjection.fit(model, task, config)
    frames, measures = {}, {}
    for label, kwargs in (
        ("zero-shot", {"shots": 0}),
        (f"{shots}-shot ICL", {"shots": shots}),
        ("SITE", {"intervention": fit.intervention(task.name)}),
    ):
        with Measure(model.device) as m:
            frames[label] = evaluate(model, task, template=template, limit=limit, **kwargs)
        measures[label] = m
    table = summarize(pd.concat(frames.values())).set_index("method")
    icl, zero = table.loc[f"{shots}-shot ICL"], table.loc["zero-shot"]
    sited = table.loc["SITE"]
    alpha = fit.alpha
    row = {
        "task": task.name,
        "n_test": int(sited.n),
        "majority": majority_baseline(task, limit=limit),
        "zero_first": zero.first_token_acc, "zero_exact": zero.exact_match,
        "icl_first": icl.first_token_acc, "icl_exact": icl.exact_match,
        "site_first": sited.first_token_acc, "site_exact": sited.exact_match,
        "fit_s": fit_m.seconds, "best_step": fit.trace.best_step,
        "alpha_extreme": float(((alpha < 0.1) | (alpha > 0.9)).float().mean()),
        "icl_s_per_q": icl.seconds_per_query, "site_s_per_q": sited.seconds_per_query,
        "time_ratio": sited.seconds_per_query / icl.seconds_per_query,
        "fwd_ratio": forward_ratio(model, task, template, fit.intervention(task.name), shots),
        "icl_tokens": icl.prompt_tokens, "site_tokens": sited.prompt_tokens,
        "fit_peak_mib": fit_m.peak_mib, "icl_peak_mib": measures[f"{shots}-shot ICL"].peak_mib,
        "site_peak_mib": measures["SITE"].peak_mib,
    }
    if store is not None:
        metrics = {task.name: {
            "test_first_token_acc": row["site_first"], "test_exact_match": row["site_exact"],
            "n_test": row["n_test"],
            "icl_first_token_acc": row["icl_first"], "icl_exact_match": row["icl_exact"],
            "zero_shot_first_token_acc": row["zero_first"], "majority_baseline": row["majority"],
        }}
        row["run"] = store.save(to_run(fit, model, task, metrics=metrics))
    return row, pd.concat(frames.values(), ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every built-in task")
    parser.add_argument("--template", default=SiteConfig.template)
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--steps", type=int, default=SiteConfig.steps)
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--store", default=None, help="save each fit into this run store (e.g. results/runs)")
    parser.add_argument("--no-save", action="store_true", help="do not save the fits at all")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    model = load_model(args.model)
    config = SiteConfig(template=args.template, shots=args.shots, steps=args.steps)
    store = None if args.no_save else (RunStore(args.store) if args.store else user_store())
    print(f"model {model.name} on {model.device}; template {get_template(args.template).describe()}; "
          f"SITE {config.as_dict()}\n", flush=True)
    rows, frames = [], []
    for name in tqdm(args.tasks or list_tasks(), desc="SITE benchmark", unit="task"):
        row, per_query = bench_task(model, load_task(name), config, args.shots, args.limit, store)
        rows.append(row)
        frames.append(per_query)
        tqdm.write(f"{name}: zero {row['zero_first']:.2f}  "
                   f"ICL {row['icl_first']:.2f}/{row['icl_exact']:.2f}  "
                   f"SITE {row['site_first']:.2f}/{row['site_exact']:.2f}  fit {row['fit_s']:.0f}s")
    table = pd.DataFrame(rows)
    mean = table.drop(columns=[c for c in ("task", "run") if c in table]).mean(numeric_only=True).to_dict()
    table = pd.concat([table, pd.DataFrame([{"task": "MEAN", **mean}])], ignore_index=True)
    stem = f"site_{args.model.replace('/', '--')}_{config.template}"
    atomic.write_text(args.out / f"{stem}.csv", table.to_csv(index=False))
    atomic.write_text(
        args.out / f"{stem}_per_query.csv", pd.concat(frames).drop(columns=["prompt"]).to_csv(index=False)
    )
    shown = table.drop(columns=[c for c in ("run",) if c in table])
    print(
        "\n## Zero-shot vs 10-shot ICL vs SITE, test split "
        "(first = first-token accuracy, exact = exact match)\n"
    )
    print(shown.to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
