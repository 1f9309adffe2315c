"""How long each app page takes to render, through ``streamlit.testing.v1.AppTest`` (the
page run by ``app.py`` as a link opens it, no browser), on the embedded model and the
bundled runs, with an empty user run store.

For each page: its first run in this process (loads the model, fills the caches), then
``--repeats`` runs in new sessions (a new visitor, caches warm) and reruns of one session
(a widget change). Prints a markdown table of seconds (median of the repeats)::

    .venv/bin/python analyses/scripts/time_app_pages.py [--repeats 5] [--model NAME]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGES = {  # page -> query of the view timed
    "home": {},
    "evaluate": {"task": "antonym"},
    "compare": {"task": "antonym"},
    "head_relevance": {"task": "antonym"},
    "transfer": {"matrix": "bundled"},
    "regression": {"family": "linear", "shift": "beyond"},
    "fit": {"method": "SITE", "task": "antonym"},
}


def open_page(page: str, query: dict, model: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=600)
    at.query_params.update({"model": model, **query})
    if page != "home":
        at.switch_page(f"pages/{page}.py")
    return at


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pages", nargs="*", default=list(PAGES))
    args = parser.parse_args()
    os.environ["WORKBENCH_RUNS"] = tempfile.mkdtemp(prefix="time-app-runs-")  # no user runs

    rows = []
    for page in args.pages:
        if not (ROOT / "pages" / f"{page}.py").is_file():
            continue
        at = open_page(page, PAGES.get(page, {}), args.model)
        first = timed(at.run)
        assert not at.exception, [e.value for e in at.exception]
        fresh = [timed(open_page(page, PAGES.get(page, {}), args.model).run) for _ in range(args.repeats)]
        rerun = [timed(at.run) for _ in range(args.repeats)]
        rows.append((page, first, statistics.median(fresh), statistics.median(rerun)))
        print(
            f"{page}: first {first:.2f} s, new session {rows[-1][2]:.3f} s, rerun {rows[-1][3]:.3f} s",
            flush=True,
        )

    print(f"\nApp page render times (s), {args.model}, AppTest through app.py, median of {args.repeats}:\n")
    print("| page | first run (loads the model, fills caches) | new session | rerun |")
    print("|---|---|---|---|")
    for page, first, fresh, rerun in rows:
        print(f"| {page} | {first:.2f} | {fresh:.3f} | {rerun:.3f} |")


if __name__ == "__main__":
    main()
