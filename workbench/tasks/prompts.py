"""Prompt templates and k-shot prompt construction.

A template is a query format with ``{x}`` plus a separator between demonstrations.
A demonstration is ``query(x) + " " + y + separator`` (answers get one leading space), a
k-shot prompt is k demonstrations followed by ``query(x)``, and zero-shot is the query
alone. The default template follows the task-vector literature (docs/methods.md):

    qa:     "Q: {x}\\nA: {y}\\n\\n" per demonstration, query "Q: {x}\\nA:"
    arrow:  "{x} -> {y}\\n"          per demonstration, query "{x} ->"

Small models are sensitive to this choice, so every result records the template's name
and text (:meth:`PromptTemplate.describe`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    query: str  # contains "{x}"
    separator: str  # after each demonstration's answer

    def __post_init__(self) -> None:
        if "{x}" not in self.query:
            raise ValueError(f"Template query {self.query!r} must contain '{{x}}'.")
        if "{y}" in self.query + self.separator or "{x}" in self.separator:
            raise ValueError(
                f"Template query {self.query!r}, separator {self.separator!r}: a '{{y}}' in either, or an "
                "'{x}' in the separator, would be written into every prompt literally."
            )
        if "\n" not in self.separator:
            raise ValueError(
                f"Template separator {self.separator!r} must contain a newline: answers are "
                "read up to the first line break."
            )

    def format_query(self, x: str) -> str:
        return self.query.replace("{x}", x)

    def demonstration(self, x: str, y: str) -> str:
        return self.format_query(x) + answer_text(y) + self.separator

    def prompt(self, demos: list[tuple[str, str]], x: str) -> str:
        return "".join(self.demonstration(dx, dy) for dx, dy in demos) + self.format_query(x)

    def describe(self) -> str:
        """Name plus the literal text of a one-shot prompt, as recorded with results."""
        return f"{self.name}: {self.demonstration('{x}', '{y}') + self.format_query('{x}')!r}"


TEMPLATES: dict[str, PromptTemplate] = {
    "qa": PromptTemplate("qa", "Q: {x}\nA:", "\n\n"),
    "arrow": PromptTemplate("arrow", "{x} ->", "\n"),
}
DEFAULT_TEMPLATE = "qa"


def get_template(spec: str | PromptTemplate | None = None) -> PromptTemplate:
    """A template by name ('qa', 'arrow'), or a custom query format containing {x}.

    A custom format may carry its separator after a '|', e.g. "Input: {x}\\nOutput:|\\n\\n"
    (escaped newlines are understood); without one it is a single newline. A whole
    demonstration with ``{y}`` is understood too, as the README writes templates:
    "{x} -> {y}" is the query "{x} ->", and what follows "{y}" is the separator.
    """
    if isinstance(spec, PromptTemplate):
        return spec
    spec = spec or DEFAULT_TEMPLATE
    if spec in TEMPLATES:
        return TEMPLATES[spec]
    if "{x}" not in spec:
        raise ValueError(
            f"Unknown prompt template {spec!r}: use one of {', '.join(TEMPLATES)} or a "
            "custom query format containing '{x}'."
        )
    text = spec.replace("\\n", "\n")
    if "{y}" in text:
        return _from_demonstration(spec, text)
    query, _, separator = text.partition("|")
    return PromptTemplate("custom", query, separator or "\n")


def _from_demonstration(spec: str, text: str) -> PromptTemplate:
    """A template written as one demonstration, "{x} -> {y}" or "Q: {x}\\nA: {y}\\n\\n"."""
    before, *after = text.split("{y}")
    if len(after) != 1 or "{x}" not in before or "{x}" in after[0] or "|" in after[0]:
        raise ValueError(
            f"Template {spec!r}: a demonstration is '{{x}}', then a single '{{y}}', then the separator "
            "(no '|'), e.g. '{x} -> {y}'."
        )
    if not before.endswith(answer_text("")):
        raise ValueError(
            f"Template {spec!r}: answers are written after the query with one space, so '{{y}}' must "
            "follow a space, e.g. '{x} -> {y}'."
        )
    return PromptTemplate("custom", before[: -len(answer_text(""))], after[0] or "\n")


def answer_text(y: str) -> str:
    """The answer as it follows the query in a prompt: one leading space."""
    return " " + y


def build_prompts(
    template: PromptTemplate,
    queries: list[str],
    demo_pool: list[tuple[str, str]],
    shots: int,
    seed: int = 0,
) -> list[str]:
    """One prompt per query, each with its own ``shots`` demonstrations drawn from
    ``demo_pool`` (never the query itself), reproducibly from ``seed``."""
    if shots < 0:
        raise ValueError("shots must be >= 0")
    if shots and len(demo_pool) < shots + 1:
        raise ValueError(
            f"{shots}-shot prompts need at least {shots + 1} demonstration pairs, got {len(demo_pool)}."
        )
    rng = np.random.default_rng(seed)
    prompts = []
    for x in queries:
        demos: list[tuple[str, str]] = []
        if shots:
            order = rng.permutation(len(demo_pool))
            demos = [demo_pool[i] for i in order if demo_pool[i][0] != x][:shots]
        prompts.append(template.prompt(demos, x))
    return prompts


def train_prompts(
    pool: list[tuple[str, str]],
    template: str | PromptTemplate | None = None,
    shots: int = 10,
    n_prompts: int = 50,
    seed: int = 0,
    demo_pool: list[tuple[str, str]] | None = None,
) -> tuple[list[str], list[str]]:
    """M k-shot prompts whose queries are drawn from ``pool`` (a task's fitting pairs), and
    their answers.

    Every method that averages activations over k-shot prompts (SITE's task embedding,
    TV, FV, LTV) reads this one set for the same arguments. ``demo_pool`` replaces ``pool``
    as the source of demonstrations (e.g. shuffled labels).
    """
    template = get_template(template)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(pool), size=min(n_prompts, len(pool)), replace=False)
    queries = [pool[i][0] for i in picks]
    prompts = build_prompts(template, queries, pool if demo_pool is None else demo_pool, shots, seed=seed + 1)
    return prompts, [pool[i][1] for i in picks]
