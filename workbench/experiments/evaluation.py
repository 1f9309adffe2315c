"""Evaluation shared by every method: prompts in, per-query outcomes out.

A method is evaluated as (prompts, intervention): zero-shot and k-shot ICL are plain
prompts with no intervention; the vector methods pass zero-shot prompts plus an
:class:`workbench.interventions.Intervention`. Every query is decoded greedily up to the end
of its line and scored three ways (:mod:`workbench.scoring`, docs/methods.md):

* first-token accuracy: the output starts with the answer's tokens up to the first one
  that carries it (a bare space never counts);
* prefix match: the output starts with the answer, then a word boundary;
* exact match: the output's first line equals the answer.

Every row records the method, template, shots, when the intervention acts and the prompt's
token count, so any table built from these frames says how it was made.
"""

from __future__ import annotations

import time
from collections import Counter

import pandas as pd

from workbench import scoring
from workbench.interventions import Intervention
from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.progress import Progress
from workbench.scoring import ANSWER_METRICS, normalise
from workbench.tasks.prompts import PromptTemplate, build_prompts, get_template
from workbench.tasks.task import Task

PER_QUERY_VALUES = {
    "prediction": "prediction",
    **{m.per_query: m.short for m in ANSWER_METRICS},
}  # column -> header


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
    """Evaluate one method on one task; one row per query.

    ``progress(method, queries done, queries, running answer metrics)`` after each batch
    (:mod:`workbench.progress`)."""
    template = get_template(template)
    splits = task.split(seed)
    items = splits[split][:limit] if limit else splits[split]
    if not items:
        raise ValueError(f"Task {task.name!r} has no {split} items to evaluate.")
    queries = [x for x, _ in items]
    prompts = build_prompts(template, queries, splits.train, shots, seed=seed)
    method = method or (
        intervention.name if intervention else ("zero-shot" if shots == 0 else f"{shots}-shot ICL")
    )
    when = intervention.when_label if intervention else ""
    if max_new_tokens is None:
        longest = max(
            len(scoring.answer_tokens(model.tokenizer, y, template.separator).ids) for _, y in items
        )
        max_new_tokens = min(longest + 2, 32)

    rows = []
    for start in range(0, len(items), batch_size):
        chunk = slice(start, start + batch_size)
        batch_prompts = prompts[chunk]
        t0 = time.perf_counter()
        active = intervention.for_prompts(model, batch_prompts) if intervention else None
        gen = inference.generate(model, batch_prompts, active, max_new_tokens=max_new_tokens)
        seconds = (time.perf_counter() - t0) / len(batch_prompts)
        for i, (x, y) in enumerate(items[chunk]):
            answer = scoring.answer_tokens(model.tokenizer, y, template.separator)
            generated = gen.new_tokens[i].tolist()
            prediction = normalise(gen.texts[i], task.case_sensitive)
            rows.append(
                {
                    "task": task.name,
                    "method": method,
                    "template": template.name,
                    "prompt_start": model.prompt_start,
                    "shots": shots,
                    "when": when,
                    "input": x,
                    "target": y,
                    "prediction": prediction,
                    "first_token_correct": scoring.starts_with_answer(generated, answer),
                    "prefix_match": scoring.prefix_match(gen.texts[i], y, task.case_sensitive),
                    "exact_match": scoring.exact_match(prediction, y, task.case_sensitive),
                    "first_token_target": model.tokenizer.decode([answer.target]),
                    "first_token_pred": _first_carrying(model, generated),
                    "prompt_tokens": gen.prompt_tokens[i],
                    "seconds": seconds,
                    "prompt": batch_prompts[i],
                }
            )
        if progress:
            running = {m.summary: sum(bool(r[m.per_query]) for r in rows) / len(rows) for m in ANSWER_METRICS}
            progress(method, len(rows), len(items), running)
    return pd.DataFrame(rows)


def _first_carrying(model: LoadedModel, tokens: list[int]) -> str:
    """The first generated token that is not whitespace alone (what first-token accuracy reads)."""
    pieces = [model.tokenizer.decode([t]) for t in tokens]
    return next((piece for piece in pieces if piece.strip()), pieces[0] if pieces else "")


def majority_baseline(task: Task, split: str = "test", seed: int = 0, limit: int | None = None) -> float:
    """Exact-match accuracy of always answering the most common train output
    (on the same items :func:`evaluate` scores for these arguments)."""
    splits = task.split(seed)
    label, _ = Counter(normalise(y, task.case_sensitive) for _, y in splits.train).most_common(1)[0]
    items = splits[split][:limit] if limit else splits[split]
    return sum(normalise(y, task.case_sensitive) == label for _, y in items) / len(items)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per (task, method): accuracies, prompt tokens and time per query."""
    keys = [
        k
        for k in ("model", "task", "method", "template", "prompt_start", "shots", "when")
        if k in results.columns
    ]
    grouped = results.groupby(keys, sort=False)
    table = grouped.agg(
        n=("exact_match", "size"),
        **{m.summary: (m.per_query, "mean") for m in ANSWER_METRICS if m.per_query in results.columns},
        prompt_tokens=("prompt_tokens", "mean"),
        seconds_per_query=("seconds", "mean"),
    )
    return table.reset_index()


def side_by_side(results: pd.DataFrame) -> pd.DataFrame:
    """Per-query rows with each method's prediction and its answer metrics in adjacent
    columns (``"<method>: prediction"``, ``": first token"``, ``": prefix"``, ``": exact"``).
    The ``task`` column is kept only when the results hold several tasks."""
    keys = ["task", "input", "target"]
    table = results[keys].drop_duplicates().reset_index(drop=True)
    values = [column for column in PER_QUERY_VALUES if column in results.columns]  # older results: no prefix
    for method, rows in results.groupby("method", sort=False):
        renamed = {column: f"{method}: {PER_QUERY_VALUES[column]}" for column in values}
        part = rows[keys + values].rename(columns=renamed)
        table = table.merge(part, on=keys, how="left")
    if table["task"].nunique() <= 1:
        table = table.drop(columns="task")
    return table
