"""Evaluation shared by every method: prompts in, per-query outcomes out.

A method is evaluated as (prompts, intervention): zero-shot and k-shot ICL are plain
prompts with no intervention; the vector methods pass zero-shot prompts plus an
:class:`workbench.interventions.Intervention`. Metrics (:mod:`workbench.scoring`,
docs/methods.md):

* first-token accuracy: the argmax at the last prompt token is the answer's first token;
* exact match: greedy decoding, first line of the output, normalised (stripped, spaces
  collapsed, lowercased unless the task is case-sensitive) equals the normalised answer.

Every row records the method, template, shots and the prompt's token count, so any
table built from these frames says how it was made.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pandas as pd

from workbench import scoring
from workbench.interventions import Intervention
from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.scoring import normalise
from workbench.tasks.prompts import PromptTemplate, answer_text, build_prompts, get_template
from workbench.tasks.task import Task

Progress = Callable[[int, int], None]
PER_QUERY_VALUES = {"prediction": "prediction", "exact_match": "exact", "first_token_correct": "first token"}


def evaluate(
    model: LoadedModel,
    task: Task,
    *,
    shots: int = 0,
    template: str | PromptTemplate | None = None,
    split: str = "test",
    limit: int | None = None,
    intervention: Intervention | None = None,
    method: str | None = None,
    batch_size: int = 16,
    seed: int = 0,
    max_new_tokens: int | None = None,
    progress: Progress | None = None,
) -> pd.DataFrame:
    """Evaluate one method on one task; one row per query."""
    template = get_template(template)
    splits = task.split(seed)
    items = splits[split][:limit] if limit else splits[split]
    if not items:
        raise ValueError(f"Task {task.name!r} has no {split} items to evaluate.")
    queries = [x for x, _ in items]
    prompts = build_prompts(template, queries, splits.train, shots, seed=seed)
    method = method or (intervention.name if intervention else ("zero-shot" if shots == 0 else f"{shots}-shot ICL"))
    if max_new_tokens is None:
        longest = max(scoring.answer_token_count(model, answer_text(y)) for _, y in items)
        max_new_tokens = min(longest + 2, 24)

    rows = []
    for start in range(0, len(items), batch_size):
        chunk = slice(start, start + batch_size)
        batch_prompts = prompts[chunk]
        t0 = time.perf_counter()
        active = intervention.for_prompts(model, batch_prompts) if intervention else None
        gen = inference.generate(model, batch_prompts, active, max_new_tokens=max_new_tokens)
        seconds = (time.perf_counter() - t0) / len(batch_prompts)
        predicted_first = gen.first_logits.argmax(-1).tolist()
        for i, (x, y) in enumerate(items[chunk]):
            target_first = scoring.answer_first_token(model, answer_text(y))
            prediction = normalise(gen.texts[i], task.case_sensitive)
            rows.append(
                {
                    "task": task.name,
                    "method": method,
                    "template": template.name,
                    "shots": shots,
                    "input": x,
                    "target": y,
                    "prediction": prediction,
                    "exact_match": scoring.exact_match(prediction, y, task.case_sensitive),
                    "first_token_target": model.tokenizer.decode([target_first]),
                    "first_token_pred": model.tokenizer.decode([predicted_first[i]]),
                    "first_token_correct": predicted_first[i] == target_first,
                    "prompt_tokens": gen.prompt_tokens[i],
                    "seconds": seconds,
                    "prompt": batch_prompts[i],
                }
            )
        if progress:
            progress(min(start + batch_size, len(items)), len(items))
    return pd.DataFrame(rows)


def majority_baseline(task: Task, split: str = "test", seed: int = 0, limit: int | None = None) -> float:
    """Exact-match accuracy of always answering the most common train output
    (on the same items :func:`evaluate` scores for these arguments)."""
    splits = task.split(seed)
    label, _ = Counter(normalise(y, task.case_sensitive) for _, y in splits.train).most_common(1)[0]
    items = splits[split][:limit] if limit else splits[split]
    return sum(normalise(y, task.case_sensitive) == label for _, y in items) / len(items)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method): accuracies, prompt tokens and time per query."""
    keys = [k for k in ("model", "task", "method", "template", "shots") if k in results.columns]
    grouped = results.groupby(keys, sort=False)
    table = grouped.agg(
        n=("exact_match", "size"),
        first_token_acc=("first_token_correct", "mean"),
        exact_match=("exact_match", "mean"),
        prompt_tokens=("prompt_tokens", "mean"),
        seconds_per_query=("seconds", "mean"),
    )
    return table.reset_index()


def side_by_side(results: pd.DataFrame) -> pd.DataFrame:
    """Per-query rows with each method's prediction, exact match and first-token correctness
    in adjacent columns (``"<method>: prediction"``, ``": exact"``, ``": first token"``).
    The ``task`` column is kept only when the results hold several tasks."""
    keys = ["task", "input", "target"]
    table = results[keys].drop_duplicates().reset_index(drop=True)
    for method, rows in results.groupby("method", sort=False):
        renamed = {column: f"{method}: {label}" for column, label in PER_QUERY_VALUES.items()}
        part = rows[keys + list(PER_QUERY_VALUES)].rename(columns=renamed)
        table = table.merge(part, on=keys, how="left")
    if table["task"].nunique() <= 1:
        table = table.drop(columns="task")
    return table
