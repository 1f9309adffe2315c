"""Evaluation shared by every method: prompts in, per-query outcomes out.

A method is evaluated as (prompts, intervention): zero-shot and k-shot ICL are plain
prompts with no intervention; the vector methods pass zero-shot prompts plus an
:class:`Intervention` that hooks the forward pass. Metrics (METHODS.md):

* first-token accuracy: the argmax at the last prompt token is the answer's first token;
* exact match: greedy decoding, first line of the output, normalised (stripped, spaces
  collapsed, lowercased unless the task is case-sensitive) equals the normalised answer.

Every row records the method, template, shots and the prompt's token count, so any
table built from these frames says how it was made.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Callable, Protocol

import pandas as pd
import torch

from workbench import inference
from workbench.heads import Hook
from workbench.models import LoadedModel
from workbench.prompts import PromptTemplate, answer_text, build_prompts, get_template
from workbench.tasks import Task

Progress = Callable[[int, int], None]


class Intervention(Protocol):
    """Something that changes a forward pass: a method's fitted vector, weights, ..."""

    name: str

    def hooks(self, model: LoadedModel, prompts: list[str]) -> list[Hook]: ...


def normalise(text: str, case_sensitive: bool = False) -> str:
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = " ".join(line.split())
    return line if case_sensitive else line.lower()


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
        longest = max(inference.answer_token_count(model, answer_text(y)) for _, y in items)
        max_new_tokens = min(longest + 2, 24)

    rows = []
    for start in range(0, len(items), batch_size):
        chunk = slice(start, start + batch_size)
        batch_prompts = prompts[chunk]
        t0 = time.perf_counter()
        hooks = intervention.hooks(model, batch_prompts) if intervention else []
        gen = inference.generate(model, batch_prompts, hooks, max_new_tokens=max_new_tokens)
        seconds = (time.perf_counter() - t0) / len(batch_prompts)
        predicted_first = gen.first_logits.argmax(-1).tolist()
        for i, (x, y) in enumerate(items[chunk]):
            target_first = inference.answer_first_token(model, answer_text(y))
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
                    "exact_match": prediction == normalise(y, task.case_sensitive),
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


def first_token_loss(model: LoadedModel, prompts: list[str], answers: list[str], hooks: list[Hook] = ()) -> torch.Tensor:
    """Mean cross-entropy of each answer's first token at the last prompt token (differentiable)."""
    logits = inference.last_logits(model, prompts, hooks)  # (B, vocab)
    targets = torch.tensor([inference.answer_first_token(model, answer_text(y)) for y in answers], device=logits.device)
    return torch.nn.functional.cross_entropy(logits.float(), targets)
