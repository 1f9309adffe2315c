"""Foundation benchmark: model load (cold GGUF vs cached), forward time, and zero-shot vs
10-shot ICL accuracy on every built-in task.

    python analyses/scripts/bench_foundation.py                       # everything, embedded model
    python analyses/scripts/bench_foundation.py --templates arrow     # one template
    python analyses/scripts/bench_foundation.py --skip-load --tasks antonym country_capital

Prints markdown tables; writes the per-task summary and per-query outcomes as CSV under
analyses/results/. Figures are measured in this run, on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from workbench import atomic
from workbench.experiments.comparison import RESULTS
from workbench.experiments.evaluation import evaluate, majority_baseline, summarize
from workbench.model import inference
from workbench.model.loading import DEFAULT_MODEL, load_model
from workbench.tasks.files import list_tasks, load_task
from workbench.tasks.prompts import build_prompts, get_template

_LOAD_PROBE = """
import json, resource, time
t = time.perf_counter()
from workbench.model.loading import load_model
m = load_model({model!r}, device="cpu")
print(json.dumps({{"seconds": time.perf_counter() - t, "source": m.source,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""


def measure_loads(model: str) -> pd.DataFrame:
    """Cold (empty cache: dequantize the GGUF and write the cache) then cached, each in a fresh process."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "WORKBENCH_CACHE": cache}
        for label in ("cold", "cached"):
            out = subprocess.run(
                [sys.executable, "-c", _LOAD_PROBE.format(model=model)],
                env=env, capture_output=True, text=True, check=True,
            )
            rows.append({"load": label, **json.loads(out.stdout.strip().splitlines()[-1])})
    return pd.DataFrame(rows)


def measure_forward(model, task_name: str, template, batch: int = 16, repeats: int = 3) -> pd.DataFrame:
    splits = load_task(task_name).split(0)
    queries = [x for x, _ in splits.test[:batch]]
    rows = []
    for shots in (0, 10):
        prompts = build_prompts(template, queries, splits.train, shots)
        tokens = inference.encode(model, prompts).tokens.shape[1]
        for what, run in (
            ("first-token forward", lambda prompts=prompts: inference.last_logits(model, prompts)),
            (
                "greedy, 4 new tokens",
                lambda prompts=prompts: inference.generate(model, prompts, max_new_tokens=4, stop="\0"),
            ),
        ):
            run()  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                with inference.torch.no_grad():
                    run()
                times.append(time.perf_counter() - t)
            rows.append({"shots": shots, "what": what, "batch": len(prompts), "padded_tokens": tokens,
                         "seconds_per_batch": statistics.median(times)})
    frame = pd.DataFrame(rows)
    zero = frame[frame.shots == 0].set_index("what")["seconds_per_batch"]
    frame["x_zero_shot"] = frame.apply(lambda r: r.seconds_per_batch / zero[r.what], axis=1)
    return frame


def accuracy_table(
    model, tasks: list[str], template, shots: int, limit: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    summaries, frames = [], []
    for name in tqdm(tasks, desc=f"ICL accuracy ({template.name})", unit="task"):
        task = load_task(name)
        per_task = [evaluate(model, task, shots=k, template=template, limit=limit) for k in (0, shots)]
        frames.extend(per_task)
        table = summarize(pd.concat(per_task))
        wide = table.pivot_table(index="task", columns="shots", values=["first_token_acc", "exact_match"])
        summaries.append({
            "task": name,
            "n_test": int(table.n.iloc[0]),
            "majority": majority_baseline(task),
            "zero_shot_first_token": wide[("first_token_acc", 0)].iloc[0],
            "zero_shot_exact": wide[("exact_match", 0)].iloc[0],
            f"{shots}_shot_first_token": wide[("first_token_acc", shots)].iloc[0],
            f"{shots}_shot_exact": wide[("exact_match", shots)].iloc[0],
        })
    table = pd.DataFrame(summaries)
    mean = table.drop(columns=["task"]).mean(numeric_only=True).to_dict()
    table = pd.concat([table, pd.DataFrame([{"task": "MEAN", **mean}])], ignore_index=True)
    return table, pd.concat(frames, ignore_index=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--templates", nargs="+", default=["arrow", "qa"])
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every built-in task")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="test items per task (default: all)")
    parser.add_argument("--skip-load", action="store_true", help="skip the cold/cached load measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    if not args.skip_load:
        print("## Model load (fresh process each; cold = dequantize GGUF + write cache)\n")
        print(measure_loads(args.model).to_markdown(index=False, floatfmt=".2f"), "\n", flush=True)

    model = load_model(args.model)
    print(f"model: {args.model} on {model.device}; {model.heads.shape}\n")
    print("## Forward time, batch of 16 (antonym test queries), median of 3\n")
    print(
        measure_forward(model, "antonym", get_template(args.templates[0])).to_markdown(
            index=False, floatfmt=".3f"
        ),
        "\n",
        flush=True,
    )

    tasks = args.tasks or list_tasks()
    for name in args.templates:
        template = get_template(name)
        table, per_query = accuracy_table(model, tasks, template, args.shots, args.limit)
        print(f"## Zero-shot vs {args.shots}-shot ICL on the test split, template {template.describe()}\n")
        print(table.to_markdown(index=False, floatfmt=".2f"), "\n", flush=True)
        stem = f"foundation_{args.model.replace('/', '--')}_{template.name}"
        atomic.write_text(args.out / f"{stem}.csv", table.to_csv(index=False))
        atomic.write_text(
            args.out / f"{stem}_per_query.csv", per_query.drop(columns=["prompt"]).to_csv(index=False)
        )


if __name__ == "__main__":
    main()
