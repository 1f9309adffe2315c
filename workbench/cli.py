"""Command line: ``python -m workbench {models,tasks,show-task,eval,fit,runs} ...``.

Thin by design: parse arguments, call the library, format the output. Expected failures
(unknown model or device, bad task file, bad template, shots or setting, a damaged run)
print one ``error: ...`` line to stderr and exit with status 2, found before the model
loads wherever they can be; warnings (a run saved while its index was locked) print one
``warning: ...`` line. No traceback reaches the user: an unexpected failure is one
``error: unexpected ...`` line too (``WORKBENCH_DEBUG=1`` shows its traceback).
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from workbench import atomic
from workbench.methods import METHODS
from workbench.progress import Progress
from workbench.tasks.prompts import DEFAULT_TEMPLATE

if TYPE_CHECKING:
    from tqdm import tqdm

FORMATS = ("table", "csv", "json")
MAX_NEW_TOKENS = 24  # the most tokens evaluation decodes per answer (experiments/evaluation.py)
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------- commands


def cmd_models(args: argparse.Namespace) -> int:
    from workbench.model.loading import DEFAULT_MODEL, TINY_MODELS, available_models

    notes = {DEFAULT_MODEL: "embedded SmolLM2-135M-Instruct (default; alias 'default')"}
    notes.update({name: "random weights, byte tokenizer: tests and smoke runs" for name in TINY_MODELS})
    width = max(len(n) for n in available_models())
    for name in available_models():
        print(f"{name:<{width}}  {notes.get(name, '')}".rstrip())
    print(
        "\nAny local model directory, or a Hugging Face model name already in the local "
        "Hugging Face cache, also works (there is no hub access at run time)."
    )
    return 0


def cmd_tasks(args: argparse.Namespace) -> int:
    from workbench.tasks.files import catalog, load_task

    rows = []
    for name, info in catalog().items():
        rows.append(
            {
                "task": name,
                "items": len(load_task(name)),
                "category": info.get("category", ""),
                "case_sensitive": bool(info.get("case_sensitive", False)),
                "description": info.get("description", ""),
            }
        )
    if not rows:
        print("No built-in tasks found: run `make data`.")
        return 0
    print(_text_table(rows))
    print(f"\n{len(rows)} built-in tasks. A JSON or CSV file of input/output pairs works too.")
    return 0


def cmd_show_task(args: argparse.Namespace) -> int:
    from workbench.tasks.files import resolve_tasks
    from workbench.tasks.prompts import build_prompts, get_template

    template = get_template(args.template)
    if args.shots < 0 or args.items < 0 or args.seed < 0:
        raise ValueError(
            f"--shots, --items and --seed must be >= 0, got {args.shots}, {args.items}, {args.seed}."
        )
    (task,) = resolve_tasks([args.task], args.keep_first_duplicates)  # named as eval and fit name it
    splits = task.split(args.seed)
    print(f"task:           {task.name}")
    if task.description:
        print(f"description:    {task.description}")
    print(f"category:       {task.category}")
    print(f"case_sensitive: {task.case_sensitive}")
    print(f"file:           {task.path}")
    if task.meta.get("duplicates_dropped"):
        print(
            f"duplicates:     {task.meta['duplicates_dropped']} records dropped "
            "(the first of each input kept)"
        )
    print(
        f"items:          {len(task)} (train {len(splits.train)}, valid {len(splits.valid)}, "
        f"test {len(splits.test)}; seed {args.seed})"
    )
    print("\nfirst items:")
    for x, y in task.pairs[: args.items]:
        print(f"  {x!r} -> {y!r}")
    x, y = splits.test[0]
    prompt = build_prompts(template, [x], splits.train, args.shots, seed=args.seed)[0]
    print(f"\nexample {args.shots}-shot prompt (template {template.describe()}), expected answer {y!r}:")
    print("-" * 60)
    print(prompt)
    print("-" * 60)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from workbench.experiments.grid import check_grid, evaluate_grid, grid_size, summarize_grid
    from workbench.model.loading import load_model
    from workbench.tasks.files import resolve_tasks
    from workbench.tasks.prompts import build_prompts, get_template

    fmt = _output_format(args.format, args.output)
    # Everything cheap is checked before the model loads.
    template = get_template(args.template)
    tasks = resolve_tasks(args.task, args.keep_first_duplicates)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}.")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}.")
    if args.seed < 0:
        raise ValueError(f"--seed must be >= 0, got {args.seed}.")
    check_grid(tasks, args.shots, split=args.split, seed=args.seed)
    _check_device(args.device)

    print(f"loading model {args.model} ...", file=sys.stderr, flush=True)
    model = load_model(args.model, device=args.device, prepend_bos=False if args.no_bos else None)
    for task in tasks:
        splits = task.split(args.seed)
        queries = [x for x, _ in splits[args.split][: args.limit]]
        prompts = build_prompts(template, queries, splits.train, max(args.shots), args.seed)
        _check_context(model, task, max(args.shots), prompts, generated=MAX_NEW_TOKENS)
    total = grid_size(tasks, args.shots, split=args.split, limit=args.limit, seed=args.seed)
    with tqdm(
        total=total, unit="query", file=sys.stderr, disable=args.no_progress, dynamic_ncols=True
    ) as bar:
        results = evaluate_grid(
            model,
            tasks,
            args.shots,
            template=template,
            split=args.split,
            limit=args.limit,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=_bar_progress(bar),
        )
    summary = summarize_grid(results, tasks, split=args.split, seed=args.seed, limit=args.limit)
    frame = results if args.per_query else summary
    note = (
        f"model {model.name} ({model.source}); split {args.split}; seed {args.seed}; "
        f"template {template.describe()}"
    )

    if args.output:
        atomic.write_text(Path(args.output), _render(frame, fmt))
        print(note)
        print(_render(summary, "table"), end="")
        print(
            f"wrote {len(frame)} {'per-query' if args.per_query else 'summary'} rows ({fmt}) to {args.output}"
        )
    elif fmt == "table":
        print(note)
        print(_render(frame, "table"), end="")
    else:  # machine-readable stdout: the note goes to stderr
        print(note, file=sys.stderr)
        sys.stdout.write(_render(frame, fmt))
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from workbench.experiments.fitting import fit_score_save
    from workbench.experiments.grid import check_grid
    from workbench.methods import get_method, settings
    from workbench.model.loading import load_model
    from workbench.spec import FitSpec
    from workbench.store.runs import RunStore, user_store
    from workbench.tasks.files import resolve_tasks
    from workbench.tasks.prompts import get_template, train_prompts

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, got {args.limit}.")
    given = settings.given(args)
    if args.spec:  # the whole fit comes from the file; flags may only say where and how to score
        clash = [
            name
            for name, value in (
                ("--task", args.task),
                ("--agnostic", args.agnostic),
                ("--no-bos", args.no_bos),
                ("--model", args.model),
            )
            if value
        ]
        clash += [settings.flag_names(get_method(args.method or "SITE").Config).get(k, k) for k in given]
        if clash:
            raise ValueError(f"--spec names the whole fit; drop {', '.join(clash)} (or edit the spec).")
        spec = FitSpec.from_file(args.spec)
        method, config, tasks = get_method(spec.method), spec.config(), spec.load_tasks()
        groups, model_name, bos, device = [tasks], spec.model, spec.bos, args.device or spec.device
    else:
        if not args.task:
            raise ValueError("fit needs --task (or --spec FILE).")
        method = get_method(args.method or "SITE")
        tasks = resolve_tasks(args.task, args.keep_first_duplicates)
        if args.agnostic and not method.several_tasks:
            raise ValueError(
                f"--agnostic is for methods that fit several tasks at once; {method.name} is fitted per task."
            )
        fields = set(method.Config.__dataclass_fields__)
        ignored = sorted(k for k in given if k not in fields)
        if ignored:
            raise ValueError(
                f"{method.name} has no setting {', '.join(ignored)} "
                f"(its settings: {', '.join(sorted(fields))})."
            )
        config = method.Config(**given)
        groups = [tasks] if args.agnostic else [[t] for t in tasks]
        model_name, bos, device = (
            args.model or "smollm2-135m-instruct",
            False if args.no_bos else None,
            args.device,
        )
    flags = settings.flag_names(method.Config)
    config.check(names=flags)
    template = get_template(config.template)
    shots = getattr(config, "shots", 0)
    check_grid(tasks, [shots], split="test", seed=config.seed)
    _check_device(device)
    store = RunStore(args.store) if args.store else user_store()
    print(f"loading model {model_name} ...", file=sys.stderr, flush=True)
    model = load_model(model_name, device=device, prepend_bos=bos)
    config.check(model.heads.shape.n_layers, names=flags)
    for task in tasks:
        prompts, _ = train_prompts(
            task.split(config.seed).train, template, shots, getattr(config, "n_prompts", 1), config.seed
        )
        _check_context(model, task, shots, prompts)
    rows = []
    for group in groups:
        label = "+".join(t.name for t in group) if len(group) <= 3 else f"{len(group)} tasks"
        with tqdm(
            unit="step", file=sys.stderr, disable=args.no_progress, desc=f"{method.name} {label}"
        ) as bar:
            fit, run_id, metrics = fit_score_save(
                model,
                group,
                method.name,
                config,
                store,
                eval_limit=args.limit,
                score=not args.no_eval,
                progress=_bar_progress(bar, f"{method.name} {label}: "),
            )
        for task in group:
            rows.append({"run": run_id, "task": task.name, **fit.summary(), **metrics.get(task.name, {})})
    print(f"model {model.name}; method {method.name}; template {template.describe()}; store {store.root}")
    print(_render(pd.DataFrame(rows), "table"), end="")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from workbench.store.runs import RunStore, bundled_store, user_store

    store = bundled_store() if args.bundled else (RunStore(args.store) if args.store else user_store())
    if args.action == "list":
        frame = store.list(method=args.method, task=args.task, model=args.model)
        if frame.empty:
            print(f"No runs in {store.root}.")
            return 0
        damaged = int((frame["status"] != "ok").sum())
        frame["tasks"] = frame["tasks"].map(lambda ts: ", ".join(ts) if len(ts) <= 3 else f"{len(ts)} tasks")
        frame["status"] = frame["status"].map(lambda s: s if len(s) <= 70 else s[:67] + "...")
        print(_render(frame.drop(columns=["metrics"]), "table"), end="")
        if damaged:
            print(f"\n{damaged} damaged run(s): `runs show ID` says why, `runs delete ID` removes one.")
    elif args.action == "show":
        run = store.load(_one_id(args))
        summary = {
            "id": run.id,
            "method": run.method,
            "model": run.model,
            "tasks": run.tasks,
            "created": run.created,
            "tensors": {k: list(v.shape) for k, v in run.tensors.items()},
            **run.meta,
            "fit": {k: v for k, v in run.meta["fit"].items() if k != "history"},
        }
        print(json.dumps(summary, indent=1, default=str))
    elif args.action == "spec":
        from workbench.spec import FitSpec

        spec = FitSpec.from_dict(store.load(_one_id(args)).meta["spec"], where=f"run {args.ids[0]}")
        print(
            spec.to_json() if args.format == "json" else spec.to_yaml(),
            end="\n" if args.format == "json" else "",
        )
    elif args.action == "delete":
        store.delete(_one_id(args))
        print(f"deleted {args.ids[0]}")
    elif args.action == "export":
        if len(args.ids) != 2:
            raise ValueError("usage: runs export RUN_ID DEST_FOLDER")
        print(f"exported to {store.export(args.ids[0], args.ids[1])}")
    elif args.action in ("reindex", "migrate"):
        if args.ids:
            raise ValueError(f"runs {args.action} takes no run id: it goes over the whole store.")
        if args.action == "reindex":
            report = store.reindex()
            print(f"indexed {len(report.done)} runs in {store.root}")
        else:
            report = store.migrate()
            print(
                f"rewrote the metadata of {len(report.done)} runs in {store.root} in the current schema"
                if report.done
                else f"every run in {store.root} is in the current schema"
                if not report.skipped
                else f"rewrote no runs in {store.root}"
            )
        for run_id, why in report.skipped.items():
            print(f"skipped {run_id}: {why}")
    return 0


def _check_context(model, task, shots: int, prompts: list[str], generated: int = 0) -> None:
    """Tokenize (no forward pass) the prompts a command is about to run: one over the model's
    context, or too close to it to decode ``generated`` more tokens, is an error now, not
    after the cheaper cells have run."""
    from workbench.model.inference import encode

    n_ctx = model.bridge.cfg.n_ctx
    for start in range(0, len(prompts), 64):
        try:
            longest = encode(model, prompts[start : start + 64]).tokens.shape[1]
            if longest + generated > n_ctx:
                raise ValueError(
                    f"A prompt has {longest} tokens, and with up to {generated} generated tokens "
                    "that is over the "
                    f"context of {n_ctx} tokens of {model.name}: use fewer shots or shorter inputs."
                )
        except ValueError as err:
            raise ValueError(f"task {task.name!r}, {shots}-shot prompts: {err}") from None


def _bar_progress(bar: tqdm, prefix: str = "") -> Progress:
    """A tqdm bar as a :mod:`workbench.progress` callback: the stage as its description, the
    record's numbers (losses, running accuracies) after it."""

    def progress(stage: str, done: int, total: int, record: Mapping[str, float]) -> None:
        bar.set_description(f"{prefix}{stage}", refresh=False)
        numbers = {
            k: f"{v:.3g}" for k, v in record.items() if isinstance(v, int | float) and math.isfinite(v)
        }
        bar.set_postfix(numbers, refresh=False)
        bar.total = total
        bar.update(done - bar.n)

    return progress


def _check_device(spec: str | None) -> None:
    """A --device the machine has (cpu, cuda[:N], mps), checked before the model loads."""
    import torch

    if spec is None:
        return
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"Unknown device {spec!r}: use cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"--device {spec}: CUDA is not available here (torch {torch.__version__}); use --device cpu."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s).")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {spec}: MPS is not available here; use --device cpu.")
    elif device.type != "cpu":
        raise ValueError(f"Unsupported device {spec!r}: use cpu, cuda, cuda:N or mps.")


def _one_id(args: argparse.Namespace) -> str:
    if len(args.ids) != 1:
        raise ValueError(f"runs {args.action} takes one run id.")
    return args.ids[0]


# ----------------------------------------------------------------------------- output


def _output_format(fmt: str | None, output: str | None) -> str:
    if fmt:
        return fmt
    if output:
        suffix = Path(output).suffix.lower().lstrip(".")
        if suffix in ("csv", "json"):
            return suffix
    return "table"


def _render(frame: pd.DataFrame, fmt: str) -> str:
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2, force_ascii=False) + "\n"
    shown = frame.drop(columns=["prompt"], errors="ignore")  # multi-line: unreadable in a table
    formatters = {}
    for col in shown.columns:
        if pd.api.types.is_float_dtype(shown[col]):
            digits = 4 if col.startswith("seconds") else (1 if col == "prompt_tokens" else 3)
            formatters[col] = lambda v, d=digits: f"{v:.{d}f}"
    return shown.to_string(index=False, formatters=formatters) + "\n"


def _text_table(rows: list[dict]) -> str:
    """Left-aligned columns, for text-heavy listings."""
    cols = list(rows[0])
    cells = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbench",
        description="Task Vector Workbench: models, tasks and k-shot evaluation from the command line.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("models", help="list loadable model names")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("tasks", help="list the built-in tasks")
    p.set_defaults(func=cmd_tasks)

    p = sub.add_parser("show-task", help="a task's splits, items and an example prompt")
    p.add_argument("task", metavar="NAME_OR_PATH", help="built-in task name, or a JSON / CSV file")
    p.add_argument(
        "--template", default=DEFAULT_TEMPLATE, help="arrow, qa, or a custom format containing {x}"
    )
    p.add_argument("--shots", type=int, default=3, help="demonstrations in the example prompt (default 3)")
    p.add_argument("--items", type=int, default=5, help="items to list (default 5)")
    p.add_argument(
        "--keep-first-duplicates", action="store_true", help="keep the first record of a repeated input"
    )
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_show_task)

    p = sub.add_parser("eval", help="zero-shot / k-shot accuracy over tasks x shots")
    p.add_argument(
        "--model", default="smollm2-135m-instruct", help="model name or local directory (see `models`)"
    )
    p.add_argument(
        "--task",
        action="extend",
        nargs="+",
        required=True,
        metavar="NAME_OR_PATH",
        help="built-in task, JSON / CSV file, or 'all'; repeatable",
    )
    p.add_argument(
        "--shots", type=int, nargs="+", default=[0, 10], help="one or more shot counts (default 0 10)"
    )
    p.add_argument(
        "--template", default=DEFAULT_TEMPLATE, help="arrow, qa, or a custom format containing {x}"
    )
    p.add_argument(
        "--no-bos",
        action="store_true",
        help="prompts start with their text, not the model's BOS token (recorded with the results)",
    )
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items of the split")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the demonstrations")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument(
        "--format", choices=FORMATS, default=None, help="default: from --output's extension, else table"
    )
    p.add_argument("--output", metavar="FILE", help="write the results here (atomically)")
    p.add_argument("--per-query", action="store_true", help="one row per query instead of the summary")
    p.add_argument(
        "--keep-first-duplicates", action="store_true", help="keep the first record of a repeated input"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "fit",
        aliases=["fit-site"],
        help=f"fit a method ({', '.join(METHODS)}) per task, score it on the test split, save runs "
        "(fit-site: --method SITE)",
        description="Fit a method per task (or one fit over several tasks with --agnostic), "
        "score it on the test "
        "split and save a run. Every method setting has a flag below, with its default per method; a setting "
        "of another method is an error. --spec FILE fits a saved or written fit spec instead (`runs spec ID` "
        "prints a run's).",
    )
    p.add_argument("--method", type=str.upper, default=None, choices=list(METHODS), help="default SITE")
    p.add_argument(
        "--spec",
        metavar="FILE",
        default=None,
        help="a fit spec (YAML or JSON: method, model, tasks, settings, bos, device): the fit it names",
    )
    p.add_argument(
        "--model", default=None, help="model name or local directory (default smollm2-135m-instruct)"
    )
    p.add_argument("--task", action="extend", nargs="+", default=None, metavar="NAME_OR_PATH")
    p.add_argument(
        "--agnostic",
        action="store_true",
        help="one fit shared by all the given tasks (methods that allow it: "
        f"{', '.join(n for n, m in METHODS.items() if m.several_tasks)})",
    )
    p.add_argument(
        "--no-bos",
        action="store_true",
        help="prompts start with their text, not the model's BOS token (recorded with the results)",
    )
    p.add_argument(
        "--keep-first-duplicates", action="store_true", help="keep the first record of a repeated input"
    )
    p.add_argument("--limit", type=int, default=None, help="test items to evaluate the fit on")
    p.add_argument("--no-eval", action="store_true", help="skip the test evaluation")
    p.add_argument("--store", default=None, help="run store folder (default: $WORKBENCH_RUNS or the cache)")
    p.add_argument(
        "--device", default=None, help="cpu, cuda, ... (default: the spec's, else cuda if available)"
    )
    p.add_argument("--no-progress", action="store_true")
    method_settings(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser(
        "runs", help="list / show / delete / export saved runs; rebuild the index; migrate old metadata"
    )
    p.add_argument(
        "action",
        choices=["list", "show", "spec", "delete", "export", "reindex", "migrate"],
        help="spec ID: the run's fit spec, as YAML (--format json: JSON); `fit --spec` fits it again",
    )
    p.add_argument("ids", nargs="*", metavar="RUN_ID [DEST]")
    p.add_argument("--store", default=None, help="run store folder (default: $WORKBENCH_RUNS or the cache)")
    p.add_argument("--bundled", action="store_true", help="the runs shipped with the repo (read-only)")
    p.add_argument("--method", default=None)
    p.add_argument("--task", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--format", choices=["yaml", "json"], default="yaml", help="runs spec: the output format")
    p.set_defaults(func=cmd_runs)
    return parser


def method_settings(parser: argparse.ArgumentParser) -> None:
    """A flag for every setting of every registered method (workbench.methods.settings)."""
    from workbench.methods import settings

    group = parser.add_argument_group(
        "method settings", "each method's own defaults are given; see docs/methods.md"
    )
    settings.add_flags(group, [(name, method.Config) for name, method in METHODS.items()])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from workbench.model.loading import ModelLoadError

    with warnings.catch_warnings():
        from workbench.store.runs import IndexWarning

        warnings.simplefilter("always", IndexWarning)
        warnings.showwarning = _show_warning
        try:
            return args.func(args)
        except (ModelLoadError, ValueError, OSError) as err:  # TaskFileError and RunError are ValueErrors
            return _error(str(err) or type(err).__name__)
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as err:  # a bug: still one line, with a way to see the traceback
            import os
            import traceback

            if os.environ.get("WORKBENCH_DEBUG"):
                traceback.print_exc()
            return _error(f"unexpected {type(err).__name__}: {err} (WORKBENCH_DEBUG=1 shows the traceback)")


def _error(message: str) -> int:
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    return EXIT_ERROR


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {' '.join(str(message).split())}", file=sys.stderr)
