"""Prompts with and without the model's BOS token at their start (SmolLM2: the chat-role
token ``<|im_start|>``): zero-shot, k-shot ICL and fitted methods on a few tasks, valid and
test splits, all three answer metrics. The choice is made on valid (pooled over items).

    python analyses/scripts/bench_bos.py                    # zero-shot and 10-shot ICL
    python analyses/scripts/bench_bos.py --tasks antonym present_past --shots 0 5
    python analyses/scripts/bench_bos.py --methods SITE LTV # also fits each method per prompt start

A method is fitted once per task and prompt start (with its default settings) and scored on
both splits with the prompts of that start: the prompt start is part of what it learns.

Prints markdown (per task and split, then pooled per split) and writes
analyses/results/bos_<model>_<template>.csv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from workbench import atomic
from workbench.experiments.comparison import RESULTS
from workbench.experiments.evaluation import evaluate, summarize
from workbench.experiments.measure import Measure
from workbench.methods import METHODS
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.scoring import METRICS, current_columns
from workbench.tasks.files import load_task
from workbench.tasks.prompts import DEFAULT_TEMPLATE

TASKS = ["antonym", "country_capital", "present_past", "number_next", "english_french_number"]

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default=DEFAULT_MODEL)
parser.add_argument("--tasks", nargs="+", default=TASKS)
parser.add_argument("--shots", type=int, nargs="+", default=[0, 10])
parser.add_argument(
    "--methods", nargs="*", default=[], choices=list(METHODS), help="fitted methods to measure too"
)
parser.add_argument("--template", default=DEFAULT_TEMPLATE)
parser.add_argument("--limit", type=int, default=None, help="items per split (default: all)")
parser.add_argument("--out", type=Path, default=RESULTS)


def pooled(table: pd.DataFrame) -> pd.DataFrame:
    """Each metric over all items of all tasks (tasks weighted by their size)."""
    table = current_columns(table)
    weighted = table.assign(**{m: table[m] * table["n"] for m in METRICS})
    sums = weighted.groupby(["method", "bos"], sort=False)[[*METRICS, "n"]].sum()
    return sums[list(METRICS)].div(sums["n"], axis=0).join(sums["n"]).reset_index()


def main(argv: list[str] | None = None) -> None:
    args = parser.parse_args(argv)
    model = load_model(args.model)
    out = args.out / f"bos_{args.model.replace('/', '--')}_{args.template}.csv"
    rows = []
    for name in tqdm(args.tasks, desc="tasks"):
        task = load_task(name)
        for bos in (True, False):
            model.prepend_bos = bos
            fits, fit_seconds = {}, {}
            for method_name in args.methods:  # fitted under this prompt start
                method = METHODS[method_name]
                with Measure(model.device) as m:
                    fits[method_name] = method.fit(model, task, method.Config(template=args.template))
                fit_seconds[method_name] = m.seconds
            for split in ("valid", "test"):
                common = dict(template=args.template, split=split, limit=args.limit)
                frames = [evaluate(model, task, shots=k, **common) for k in args.shots]
                frames += [evaluate(model, task, intervention=fit.intervention(task.name), method=label,
                                    seed=fit.config.seed, **common) for label, fit in fits.items()]
                for row in summarize(pd.concat(frames)).itertuples():
                    rows.append({"task": name, "bos": bos, "prompt_start": model.prompt_start, "split": split,
                                 "n": row.n, "method": row.method,
                                 **{metric: getattr(row, metric) for metric in METRICS},
                                 **({"fit_s": fit_seconds[row.method]} if row.method in fit_seconds else {})})
        table = pd.DataFrame(rows)  # written after every task: a kill keeps what is done
        atomic.write_text(out, table.to_csv(index=False))
    print(f"## Per task (template {args.template}; {', '.join(f'{k} = {v}' for k, v in METRICS.items())})\n")
    print(table.to_markdown(index=False, floatfmt=".2f"))
    for split in ("valid", "test"):
        print(f"\n## {split} split, pooled over {table['task'].nunique()} tasks\n")
        print(pooled(table[table["split"] == split]).to_markdown(index=False, floatfmt=".3f"))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
