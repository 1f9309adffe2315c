"""Task vectors on function regression: LTV, FV and TV next to the plain model, the
truncated prompt and the classical baselines, for each trained family and shift.

    nice -n 19 .venv/bin/python analyses/scripts/bench_regression.py   # every family in results/regression
    nice -n 19 .venv/bin/python analyses/scripts/bench_regression.py --family linear --reuse-fits

For each family folder (model.safetensors + config.json, as train_regression.py writes
them): fit LTV, FV and TV on the base family beyond the training length (saved beside the
model as task_vectors.safetensors / .json; ``--reuse-fits`` loads them instead), then
measure every row at one length beyond training under each shift
(:mod:`workbench.regression.benchmark`), and every row against the prompt length.
Prints markdown tables with each step's cost, and writes (atomically) to analyses/results/:

    regression_task_vectors.csv   family, shift, n_points, k, method, mean, lo, hi, n_sequences,
                                  vs_plain, vs_least_squares, minus_least_squares
    regression_curves.csv         the same columns at every measured length
    regression_task_vectors.md    the printed tables
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from workbench import atomic
from workbench.regression import benchmark, bundled
from workbench.regression import task_vectors as tv
from workbench.regression.families import FAMILIES, FamilyConfig

TABLE_ROWS = [tv.PLAIN, tv.TRUNCATED, *tv.REGRESSION_METHODS, "least_squares", "lasso", "3-nn", "averaging"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--family", nargs="*", choices=FAMILIES, help="default: every family with a model")
    parser.add_argument(
        "--models", type=Path, default=bundled.MODELS, help="folder of <family>/ model folders"
    )
    parser.add_argument("--out", type=Path, default=bundled.RESULTS)
    parser.add_argument(
        "--beyond",
        type=int,
        default=None,
        help="points of the table's long prompts (default: the model's longest)",
    )
    parser.add_argument("--sequences", type=int, default=2048, help="held-out prompts per shift and length")
    parser.add_argument("--noise", type=float, default=0.5, help="noisy_y's noise std")
    parser.add_argument("--ltv-steps", type=int, default=300)
    parser.add_argument(
        "--curve-step", type=int, default=2, help="measure the curves at every this many lengths"
    )
    parser.add_argument("--reuse-fits", action="store_true", help="load task_vectors.* from the model folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--combine",
        action="store_true",
        help="no measuring: join the per-family files of earlier --family runs into the combined ones",
    )
    return parser.parse_args(argv)


VERDICT = "## Does LTV beat FV and TV?"


def markdown(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, floatfmt=".3f")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.combine:
        combine(args.out)
        return
    families = args.family or [f for f in FAMILIES if (args.models / f / "model.safetensors").exists()]
    tables, curves, sections = [], [], []
    for name in families:
        table, curve, section = bench_family(name, args)
        print(section, flush=True)
        tables.append(table)
        curves.append(curve)
        sections.append(section)
    suffix = "" if args.family is None else "_" + "_".join(families)
    write(
        args.out, suffix, pd.concat(tables, ignore_index=True), pd.concat(curves, ignore_index=True), sections
    )


def bench_family(name: str, args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Fit (or load) the three methods on one family's model, then its table and curves, and
    the markdown section that reports them with their cost."""
    folder = args.models / name
    model, meta = bundled.model(name, args.models)
    base = FamilyConfig(**{**meta["family"], "active_dims": None})
    n_train = base.n_points
    config = tv.default_config(model, n_train, seed=args.seed, steps=args.ltv_steps)

    t0 = time.perf_counter()
    if args.reuse_fits:
        fits = tv.load_fits(folder)
    else:
        fits = tv.fit_all(model, base, config)
        tv.save_fits(folder, fits)
    fit_seconds = time.perf_counter() - t0

    bench = benchmark.BenchConfig(
        n_train=n_train,
        beyond_points=args.beyond or model.cfg.n_positions,
        noise_std=args.noise,
        n_sequences=args.sequences,
    )
    t0 = time.perf_counter()
    table = benchmark.shift_table(model, fits, base, bench)
    table_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    lengths = list(range(2, model.cfg.n_positions + 1, args.curve_step))
    lengths = sorted({*lengths, base.n_dims, n_train, bench.beyond_points})
    curve = benchmark.length_curves(model, fits, base, bench, lengths)
    curve_seconds = time.perf_counter() - t0
    heads = ", ".join(f"L{layer}H{head}" for layer, head in fits.fv.heads)
    shape = meta["model"]
    title = (
        f"## {name}: {shape['n_layers']} layers x {shape['n_heads']} heads x d_model {shape['d_model']}, "
        f"d = {base.n_dims}, trained on {n_train} points (the model takes up to {model.cfg.n_positions})"
    )
    cost = (
        f"Fits ({'loaded' if args.reuse_fits else f'{fit_seconds:.0f} s'}): LTV best valid step "
        f"{fits.ltv.trace.best_step} of {fits.config.steps} ({fits.seconds['LTV']:.0f} s); FV top "
        f"{fits.fv.top_k} heads {heads}, added after layers {list(fits.fv.layers)} "
        f"({fits.seconds['FV']:.0f} s); TV layer {fits.tv.layer} ({fits.seconds['TV']:.0f} s). "
        f"Table {table_seconds:.0f} s, curves over {len(lengths)} lengths {curve_seconds:.0f} s; "
        f"{bench.n_sequences} prompts per shift and length, {args.threads} thread(s)."
    )
    legend = (
        "Squared error / d at the query (mean [95% band]); x plain and x least squares: the mean "
        "divided by theirs on the same prompts; - least squares: the gap ((exact): noise-free least "
        "squares, error ~1e-14, where only the gap means something)."
    )
    section = "\n".join([title, "", cost, "", legend, "", markdown(wide(table)), ""])
    return table, curve, section


def write(out: Path, suffix: str, table: pd.DataFrame, curve: pd.DataFrame, sections: list[str]) -> None:
    """The CSVs and the markdown report (the sections, then whether LTV beats FV and TV)."""
    table_name, curves_name = (f"{Path(name).stem}{suffix}.csv" for name in (bundled.TABLE, bundled.CURVES))
    atomic.write_text(out / table_name, table.to_csv(index=False))
    atomic.write_text(out / curves_name, curve.to_csv(index=False))
    closing = [VERDICT, "", markdown(verdict(table)), ""]
    print("\n".join(closing))
    atomic.write_text(out / f"{Path(bundled.TABLE).stem}{suffix}.md", "\n".join([*sections, *closing]))
    print(f"wrote {out / table_name}, {out / curves_name} and the .md")


def combine(out: Path) -> None:
    """Join the per-family files (``<name>_<family>.csv`` / ``.md``) into the combined ones."""
    stem, curves_stem = Path(bundled.TABLE).stem, Path(bundled.CURVES).stem
    found = [f for f in FAMILIES if (out / f"{stem}_{f}.csv").exists()]
    if not found:
        raise SystemExit(f"no per-family results ({stem}_<family>.csv) in {out}")
    table = pd.concat([pd.read_csv(out / f"{stem}_{f}.csv") for f in found], ignore_index=True)
    curve = pd.concat([pd.read_csv(out / f"{curves_stem}_{f}.csv") for f in found], ignore_index=True)
    sections = [(out / f"{stem}_{f}.md").read_text().split(VERDICT)[0].rstrip() + "\n" for f in found]
    write(out, "", table, curve, sections)


def wide(table: pd.DataFrame) -> pd.DataFrame:
    """One row per shift and method: k, mean [band], x plain, x least squares, - least squares."""
    rows = table[table["method"].isin(TABLE_ROWS)].copy()
    rows["order"] = rows["method"].map(TABLE_ROWS.index)
    rows = rows.sort_values(["shift", "order"], key=lambda s: s.map(_shift_order) if s.name == "shift" else s)
    rows["error/d"] = [
        f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in zip(rows["mean"], rows["lo"], rows["hi"])
    ]
    ls_error = rows["mean"] - rows["minus_least_squares"]
    rows["x least squares"] = [
        f"{r:.2f}" if e > benchmark.EXACT else "(exact)" for r, e in zip(rows["vs_least_squares"], ls_error)
    ]
    rows = rows.rename(columns={"vs_plain": "x plain", "minus_least_squares": "- least squares"})
    return rows[["shift", "k", "method", "error/d", "x plain", "x least squares", "- least squares"]]


def _shift_order(name: str) -> int:
    return list(benchmark.SHIFTS).index(name)


def verdict(table: pd.DataFrame) -> pd.DataFrame:
    """Per family and shift: the errors of the plain model, LTV, FV, TV and least squares, and
    LTV against FV and TV on the same prompts: "beats" / "loses" where the 95% band of the
    paired difference excludes 0, "ties" where it does not."""
    rows = []
    for (family, shift), group in table.groupby(["family", "shift"], sort=False):
        by = group.set_index("method")
        row = {"family": family, "shift": shift, "k": int(by["k"].iloc[0])}
        row |= {name: by.loc[key, "mean"] for name, key in VERDICT_ROWS.items()}
        for other in ("FV", "TV"):
            lo, hi = by.loc[benchmark.paired("LTV", other), ["lo", "hi"]]
            row[f"LTV vs {other}"] = "beats" if hi < 0 else "loses" if lo > 0 else "ties"
        rows.append(row)
    return pd.DataFrame(rows)


VERDICT_ROWS = {"plain": tv.PLAIN, "truncated": tv.TRUNCATED, "LTV": "LTV", "FV": "FV", "TV": "TV",
                "least squares": "least_squares"}  # fmt: skip


if __name__ == "__main__":
    main()
