"""Train ATV on a mixture of built-in tasks, then score it on the test split of the tasks it
saw and of the held-out ones it never saw.

    nice -n 19 .venv/bin/python analyses/scripts/train_atv.py --store results/runs   # the shipped ATV
    .venv/bin/python analyses/scripts/train_atv.py --minutes 5 --per-task 40          # a quick one
    .venv/bin/python analyses/scripts/train_atv.py --evaluate-only RUN_ID --store results/runs

The fit keeps a checkpoint (``--checkpoint``, default ``.atv_checkpoint/`` beside the store's
runs); run the same command again after an interruption and it resumes there. The finished
fit is saved as a run (safetensors + JSON: task lists, config, trace, per-task test metrics,
versions) in ``--store`` (default: the user's run store), and the per-task scores go to
``analyses/results/atv_<model>_<template>.csv``. When the methods benchmark CSV of the same
model and template exists (``bench_methods.py``), the script also prints ATV beside its rows,
on seen and on unseen tasks: the same test queries, so the numbers compare row by row.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from workbench import atomic
from workbench.experiments.comparison import RESULTS
from workbench.experiments.evaluation import evaluate, summarize
from workbench.experiments.measure import Measure
from workbench.methods import settings
from workbench.methods.atv import HELD_OUT, AdaptiveTaskVector, AtvConfig, lora_parameters
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.scoring import ANSWER_METRICS, METRICS, current_columns
from workbench.store.codec import from_run, to_run
from workbench.store.runs import RunStore, user_store
from workbench.tasks.files import list_tasks, load_task


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--unseen", nargs="+", default=list(HELD_OUT), help="held-out tasks (never trained on)"
    )
    parser.add_argument(
        "--seen", nargs="+", default=None, help="training tasks (default: every other built-in task)"
    )
    parser.add_argument("--store", default=None, help="save the run here (default: the user's run store)")
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="checkpoint folder (resumed if present)"
    )
    parser.add_argument("--checkpoint-every", type=int, default=100)
    parser.add_argument("--limit", type=int, default=None, help="test items per task to score (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--evaluate-only", metavar="RUN_ID", default=None, help="score a saved ATV run, no training"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-progress", action="store_true")
    settings.add_flags(parser.add_argument_group("ATV settings"), [("ATV", AtvConfig)])
    return parser.parse_args(argv)


def score(model, fit: AdaptiveTaskVector, tasks: list[str], unseen: set[str], template: str,
          limit: int | None, no_progress: bool = False) -> pd.DataFrame:
    """ATV and zero-shot on every task's test split, one summary row each (ATV's also with
    ``seen``); zero-shot rides along to check the queries match the methods benchmark's."""
    rows = []
    for name in tqdm(tasks, desc="ATV test scores", unit="task", file=sys.stderr, disable=no_progress):
        task = load_task(name)
        frames = [evaluate(model, task, template=template, limit=limit, method="zero-shot")]
        with Measure(model.device) as measure:
            frames.append(evaluate(model, task, template=template, limit=limit, method="ATV",
                                   intervention=fit.intervention(name)))
        summary = summarize(pd.concat(frames, ignore_index=True))
        summary["eval_peak_mib"] = [float("nan"), measure.peak_mib]
        summary["seen"] = name not in unseen
        rows.append(summary)
    return pd.concat(rows, ignore_index=True)


def beside_benchmark(scores: pd.DataFrame, benchmark: pd.DataFrame) -> pd.DataFrame:
    """Mean over seen and over unseen tasks of ATV and of every method of the benchmark
    (its plain rows, not "| ICL-correct"), on the tasks both have."""
    atv = scores[scores["method"] == "ATV"].rename(columns={"seconds_per_query": "s_per_query"})
    seen = dict(zip(atv["task"], atv["seen"]))
    benchmark = current_columns(benchmark)
    others = benchmark[benchmark["task"].isin(seen) & ~benchmark["method"].str.contains("|", regex=False)]
    table = pd.concat([others, atv[["task", "method", *METRICS, "s_per_query"]]], ignore_index=True)
    table["tasks"] = table["task"].map(lambda t: "seen" if seen[t] else "unseen")
    means = table.groupby(["tasks", "method"], sort=False)[[*METRICS, "s_per_query"]].mean()
    means["n_tasks"] = table.groupby(["tasks", "method"], sort=False)["task"].nunique()
    return means.reset_index()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    unseen = list(dict.fromkeys(args.unseen))
    seen = args.seen or [t for t in list_tasks() if t not in unseen]
    overlap = sorted(set(seen) & set(unseen))
    if overlap:
        raise SystemExit(f"error: {', '.join(overlap)} both seen and unseen")
    if args.threads:
        torch.set_num_threads(args.threads)
    store = RunStore(args.store) if args.store else user_store()
    model = load_model(args.model)

    if args.evaluate_only:
        run = store.load(args.evaluate_only)
        fit = from_run(run, model)
        seen, unseen = list(fit.tasks), list(run.meta.get("held_out", unseen))
    else:
        config = AtvConfig(**settings.given(args))
        try:
            config.check(model.heads.shape.n_layers, names=settings.flag_names(AtvConfig))
        except ValueError as err:
            raise SystemExit(f"error: {err}") from None
        checkpoint = args.checkpoint or store.root.parent / ".atv_checkpoint"
        tasks = [load_task(name) for name in seen]
        print(f"ATV on {model.name}: {len(seen)} seen tasks, {len(unseen)} unseen ({', '.join(unseen)}); "
              f"S {config.encoder}; checkpoint {checkpoint}", file=sys.stderr, flush=True)
        with tqdm(unit="step", file=sys.stderr, disable=args.no_progress, desc="ATV fit") as bar:
            def progress(stage, done, total, record):
                bar.total = total
                bar.update(done - bar.n)
                if record["valid_loss"] == record["valid_loss"]:  # not NaN: a selection check
                    bar.set_postfix(valid=f"{record['valid_loss']:.3f}")

            fit = AdaptiveTaskVector.fit(model, tasks, config, progress=progress, checkpoint=checkpoint,
                                         checkpoint_every=args.checkpoint_every)
        print(f"fitted in {fit.fit_seconds / 60:.1f} min (this process), best step {fit.trace.best_step}; "
              f"{fit.parameters():,} parameters (a LoRA of rank {config.rank or '-'} on q, v: "
              f"{lora_parameters(model, config.rank) if config.rank else '-'})", file=sys.stderr, flush=True)

    template = fit.config.template
    scores = score(model, fit, seen + unseen, set(unseen), template, args.limit, args.no_progress)
    stem = f"atv_{args.model.replace('/', '--')}_{template}"
    atomic.write_text(args.out / f"{stem}.csv", scores.to_csv(index=False))
    if not args.evaluate_only:
        atv_rows = scores[scores["method"] == "ATV"]
        metrics = {row.task: {**{m.run_key: getattr(row, m.summary) for m in ANSWER_METRICS},
                              "n_test": int(row.n), "seen": bool(row.seen),
                              "s_per_query": row.seconds_per_query}
                   for row in atv_rows.itertuples()}
        run = to_run(fit, model, [load_task(name) for name in seen], metrics=metrics)
        run.meta["held_out"] = unseen
        run_id = store.save(run)
        shutil.rmtree(checkpoint, ignore_errors=True)  # the run holds the fit now
        print(f"saved run {run_id} in {store.root}", file=sys.stderr)

    atv = scores[scores["method"] == "ATV"]
    for label, rows in (("seen", atv[atv["seen"]]), ("unseen", atv[~atv["seen"]])):
        print(f"\n## ATV on {label} tasks, test split, template {template}\n")
        print(rows[["task", "n", "first_token_acc", "prefix_match", "exact_match", "seconds_per_query"]]
              .to_markdown(index=False, floatfmt=".2f"))
    benchmark_csv = args.out / f"methods_{args.model.replace('/', '--')}_{template}.csv"
    if benchmark_csv.is_file():
        benchmark = current_columns(pd.read_csv(benchmark_csv))
        zero = scores[scores["method"] == "zero-shot"].set_index("task")["exact_match"]
        theirs = benchmark[benchmark["method"] == "zero-shot"].set_index("task")["exact_match"]
        differ = sorted(t for t in zero.index if t in theirs.index and abs(zero[t] - theirs[t]) > 1e-9)
        if differ:
            print(f"\nnote: zero-shot differs from {benchmark_csv.name} on {', '.join(differ)} "
                  "(other queries or another version); the comparison below mixes them")
        print(f"\n## ATV beside {benchmark_csv.name}: means over seen / unseen tasks, test split, "
              f"template {template}\n")
        print(beside_benchmark(scores, benchmark).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    main()
