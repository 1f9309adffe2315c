"""How alike are the SITE, FV and LTV head maps of the same task? Reads stored runs only.

    python analyses/scripts/head_map_agreement.py                    # bundled runs, embedded model, k = 10
    python analyses/scripts/head_map_agreement.py --k 20 --store ~/.cache/task-vector-workbench/runs

For every task with a run of each method that has a head map: Spearman rank correlation
over all heads and top-k overlap of the relevance maps (each method's own convention: alpha,
indirect effect, |theta|), then the mean, min and max over tasks per pair of methods, beside
the overlap two random head sets would have.
"""

from __future__ import annotations

import argparse

import pandas as pd

from workbench.experiments.head_maps import compare_maps
from workbench.methods import head_map_methods
from workbench.model.loading import DEFAULT_MODEL
from workbench.store.codec import from_run
from workbench.store.runs import RunStore, bundled_store
from workbench.tasks.files import list_tasks

MAPS = head_map_methods()


def agreement(store, model: str, tasks: list[str], k: int) -> pd.DataFrame:
    """One row per (task, pair of methods): spearman, top_k_overlap, k, chance_overlap."""
    frames = []
    for task in tasks:
        runs = {m: store.latest(m, task, model) for m in MAPS}
        if any(run is None for run in runs.values()):
            continue
        maps = {m: from_run(run).relevance() for m, run in runs.items()}
        frames.append(compare_maps(maps, k).assign(task=task))
    if not frames:
        raise SystemExit(f"error: no task has a run of each of {', '.join(MAPS)} for {model} in {store.root}")
    return pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every built-in task")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--store", default=None, help="a run store folder (default: the bundled runs)")
    args = parser.parse_args(argv)

    store = RunStore(args.store) if args.store else bundled_store()
    table = agreement(store, args.model, args.tasks or list_tasks(), args.k)
    summary = table.groupby(["a", "b"], sort=False).agg(
        tasks=("task", "size"),
        spearman_mean=("spearman", "mean"),
        spearman_min=("spearman", "min"),
        spearman_max=("spearman", "max"),
        overlap_mean=("top_k_overlap", "mean"),
        overlap_max=("top_k_overlap", "max"),
        chance=("chance_overlap", "mean"),
    )
    print(f"## Agreement of head maps, {args.model}, top-{args.k} overlap\n")
    print(summary.reset_index().to_markdown(index=False, floatfmt=".2f"))


if __name__ == "__main__":
    main()
