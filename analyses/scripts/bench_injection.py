"""What each injection option does to each metric: prompt-only versus every generated token,
first-token loss versus answer loss, on a few tasks.

    python analyses/scripts/bench_injection.py                       # 5 tasks, SITE and LTV, all options
    python analyses/scripts/bench_injection.py --tasks antonym --methods LTV TV

For every task, method and option (``when``: the last prompt token only / also every
generated token; ``loss``, for the methods that learn: the answer's first token / every
answer token and its end), the method is fitted and scored on the valid split (which the
defaults are chosen on) and the test split, with all three answer metrics. Methods that
learn nothing from a loss (TV, FV) are fitted once and scored with each ``when``. Prints
markdown (per task and the mean per option) and writes a CSV to analyses/results/.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from workbench import atomic
from workbench.experiments.comparison import RESULTS
from workbench.experiments.evaluation import evaluate, summarize
from workbench.experiments.measure import Measure
from workbench.methods import METHODS
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.scoring import METRICS
from workbench.tasks.files import load_task
from workbench.tasks.prompts import DEFAULT_TEMPLATE, get_template

TASKS = ["antonym", "country_capital", "present_past", "number_next", "english_french_number"]
WHENS = ["last", "generated"]
LOSSES = ["first_token", "answer"]


def options(name: str) -> list[dict]:
    """The settings to try for one method: loss x when where it fits a loss, else one fit."""
    if "loss" in METHODS[name].Config.__dataclass_fields__:
        return [{"loss": loss, "when": when} for loss, when in itertools.product(LOSSES, WHENS)]
    return [{}]


def bench_task(model, task, name: str, template: str, limit: int | None) -> list[dict]:
    rows = []
    for settings in options(name):
        method = METHODS[name]
        with Measure(model.device) as m:
            fit = method.fit(model, task, method.Config(template=template, **settings))
        for when in [settings["when"]] if "when" in settings else WHENS:
            for split in ("valid", "test"):
                frame = evaluate(model, task, template=template, split=split, limit=limit,
                                 intervention=fit.intervention(task.name, when=when), seed=fit.config.seed)
                row = summarize(frame).iloc[0]
                rows.append({
                    "task": task.name, "method": name, "loss": settings.get("loss", ""), "when": when,
                    "split": split, "n": int(row.n), **{k: getattr(row, k) for k in METRICS},
                    "fit_s": m.seconds,
                    **fit.summary(),
                })
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--methods", nargs="+", default=["SITE", "LTV"], choices=list(METHODS))
    parser.add_argument("--template", default=DEFAULT_TEMPLATE)
    parser.add_argument("--limit", type=int, default=None, help="items per split (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    model = load_model(args.model)
    print(
        f"model {model.name} on {model.device}; template {get_template(args.template).describe()}\n",
        flush=True,
    )
    rows = []
    cells = [(task, name) for task in args.tasks for name in args.methods]
    for task_name, name in tqdm(cells, desc="injection options", unit="fit set"):
        rows += bench_task(model, load_task(task_name), name, args.template, args.limit)
        table = pd.DataFrame(rows)
        atomic.write_text(args.out / f"injection_{args.model.replace('/', '--')}_{args.template}.csv",
                          table.to_csv(index=False))
    keys = ["method", "loss", "when"]
    for split in ("valid", "test"):
        part = table[table["split"] == split]
        print(f"## {split} split, template {args.template}: per task\n")
        print(part[["task", *keys, "n", *METRICS, "fit_s"]].to_markdown(index=False, floatfmt=".2f"))
        means = part.groupby(keys, sort=False)[[*METRICS, "fit_s"]].mean().reset_index()
        print(f"\n## {split} split: mean over {part['task'].nunique()} tasks per option\n")
        print(means.to_markdown(index=False, floatfmt=".3f"), "\n")


if __name__ == "__main__":
    main()
