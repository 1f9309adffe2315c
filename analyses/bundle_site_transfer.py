"""Bundle a SITE transfer matrix computed from the bundled runs (results/runs), so the
app's transfer page shows one on a fresh machine.

    python analyses/bundle_site_transfer.py                 # default task set, 20 queries per cell
    python analyses/bundle_site_transfer.py --tasks antonym synonym --limit 40

Writes results/site_transfer.csv (long format of analyses.transfer.transfer_matrix, with
model, limit and the alpha-map similarities) and prints the matrix.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tqdm import tqdm  # noqa: E402

from analyses.transfer import transfer_matrix, with_similarity  # noqa: E402
from workbench import site  # noqa: E402
from workbench.models import DEFAULT_MODEL, load_model  # noqa: E402
from workbench.runs import BUNDLED_RUNS, bundled_store  # noqa: E402
from workbench.tasks import load_task  # noqa: E402

TASKS = ["antonym", "synonym", "present_past", "present_gerund", "singular_plural", "verb_third_person",
         "country_capital", "country_continent", "capitalize", "uppercase", "first_letter", "last_letter"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--tasks", nargs="+", default=TASKS)
    parser.add_argument("--limit", type=int, default=20, help="test queries per cell")
    parser.add_argument("--out", type=Path, default=BUNDLED_RUNS.parent / "site_transfer.csv")
    args = parser.parse_args(argv)

    model = load_model(args.model)
    store = bundled_store()
    fits = {}
    for name in args.tasks:
        run = store.latest("SITE", name, model.name)
        if run is None:
            raise SystemExit(f"error: no bundled SITE run for {name} on {model.name}: run analyses/bench_site.py --store results/runs")
        fits[name] = site.from_run(run, model)
    tasks = [load_task(name) for name in args.tasks]
    with tqdm(total=len(tasks) ** 2, desc="transfer cells", unit="cell") as bar:
        frame = transfer_matrix(model, tasks, fits, limit=args.limit, progress=lambda done, *_: bar.update(done - bar.n))
    frame = with_similarity(frame, {name: fit.alpha for name, fit in fits.items()})
    frame.insert(0, "model", model.name)
    frame["limit"] = args.limit
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".csv.tmp")
    os.close(fd)
    frame.to_csv(tmp, index=False)
    os.replace(tmp, args.out)
    print(frame.pivot(index="source", columns="target", values="relative").round(2).to_markdown())
    print(f"\nwrote {len(frame)} cells to {args.out}")


if __name__ == "__main__":
    main()
