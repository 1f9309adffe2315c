"""Bundle a transfer matrix computed from the bundled runs (results/runs), so the app's
transfer page shows one on a fresh machine.

    python analyses/scripts/bundle_site_transfer.py                 # default task set, 20 queries per cell
    python analyses/scripts/bundle_site_transfer.py --tasks antonym synonym --limit 40 --top-k-maps

Sources: every task's SITE alpha, and (``--top-k-maps``, default SITE FV LTV) the top-k
heads of each task's SITE / FV / LTV map, all injected SITE-style into every target task.
Writes results/site_transfer.csv (long format of analyses.transfer.transfer_matrix, with
model, limit and the alpha-map similarities), prints the SITE matrix and the mean transfer
per source head map.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tqdm import tqdm

from workbench import atomic
from workbench.experiments.transfer import (
    head_selection,
    method_transfer_summary,
    summarize_transfer,
    transfer_per_query,
    with_similarity,
)
from workbench.methods import head_map_methods
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.store.codec import from_run
from workbench.store.runs import BUNDLED_RUNS, bundled_store
from workbench.tasks.files import load_task

TASKS = [
    "antonym",
    "synonym",
    "present_past",
    "present_gerund",
    "singular_plural",
    "verb_third_person",
    "country_capital",
    "country_continent",
    "capitalize",
    "uppercase",
    "first_letter",
    "last_letter",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--limit", type=int, default=20, help="test queries per cell")
    parser.add_argument(
        "--top-k-maps",
        nargs="*",
        default=head_map_methods(),
        choices=head_map_methods(),
        help="methods whose top-k heads are sources too (none: SITE alpha only)",
    )
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--out", type=Path, default=BUNDLED_RUNS.parent / "site_transfer.csv")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    store = bundled_store()

    def fit_of(method: str, name: str):
        run = store.latest(method, name, model.name)
        if run is None:
            raise SystemExit(
                f"error: no bundled {method} run for {name} on {model.name}: run "
                "analyses/scripts/bench_methods.py with --store results/runs"
            )
        return from_run(run, model)

    fits = {name: fit_of("SITE", name) for name in args.tasks}
    sources = [*args.tasks]
    for method in args.top_k_maps:
        for name in args.tasks:
            fit = fits[name] if method == "SITE" else fit_of(method, name)
            sources.append(head_selection(fit, args.top_k))
    tasks = [load_task(name) for name in args.tasks]
    with tqdm(total=len(tasks) * len(sources), desc="transfer cells", unit="cell") as bar:
        per_query = transfer_per_query(
            model,
            tasks,
            fits,
            sources=sources,
            limit=args.limit,
            progress=lambda _cell, done, *_: bar.update(done - bar.n),
        )
    frame = with_similarity(summarize_transfer(per_query), {name: fit.alpha for name, fit in fits.items()})
    frame.insert(0, "model", model.name)
    frame["limit"] = args.limit
    atomic.write_text(args.out, frame.to_csv(index=False))
    plain = frame[(frame["source_method"] == "SITE") & frame["k"].isna()]
    print(plain.pivot(index="source", columns="target", values="relative").round(2).to_markdown())
    print("\nMean relative transfer per source head map:\n")
    print(method_transfer_summary(frame).to_markdown(index=False, floatfmt=".2f"))
    print(f"\nwrote {len(frame)} cells to {args.out}")


if __name__ == "__main__":
    main()
