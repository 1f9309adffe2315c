"""Answer scoring: what the answer's tokens are, the losses fitted on them, and the three
metrics that judge a model's output (docs/methods.md, "Answer metrics").

An answer y follows the query as ``" " + y`` and is ended by the template's separator, whose
first token holds a line break. :func:`answer_tokens` cuts that text into the answer's tokens
and marks two of them:

* the **first token that carries the answer**: the first one that is not whitespace alone.
  SmolLM2 writes ``" 97"`` as ``" "``, ``"9"``, ``"7"``, so for digits it is the second token;
  for ``" cold"`` it is the first. First-token accuracy and the first-token loss count the
  tokens up to and including it, so a bare space never decides a score.
* the **end of the answer**: the first token holding a line break; the answer loss runs up to
  and including it, so a fit also learns where the answer stops.

The three metrics of a generated continuation (every table names the one it shows):

* ``first_token_acc``: greedy decoding starts with the answer's tokens up to its first
  token that carries the answer;
* ``prefix_match``: the output starts with the answer, followed by a word boundary (the
  SITE and FV papers' convention; "9" is no prefix match of "97");
* ``exact_match``: the output's first line equals the answer.

Text is compared after :func:`normalise`: stripped, spaces collapsed, lowercased unless the
task is case-sensitive.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from workbench.model import inference
from workbench.model.heads import Hook
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import answer_text


@dataclass(frozen=True)
class Metric:
    """One answer metric under every name it goes by, so no module keeps a rename table."""

    summary: str  # the column of a summary or benchmark table: the mean over queries
    per_query: str  # the column of per-query rows: True / False
    short: str  # a compact header (side-by-side tables)
    label: str  # what tables and figures call it
    note: str  # what it checks
    aliases: tuple[str, ...] = ()  # older names of the summary column (benchmark CSVs before the record)

    @property
    def run_key(self) -> str:
        """Its key in a run's test metrics (``meta["metrics"][task]``)."""
        return f"test_{self.summary}"


ANSWER_METRICS = (
    Metric("first_token_acc", "first_token_correct", "first token", "first-token accuracy",
           "greedy output starts with the answer's tokens up to the first one that carries it", ("first",)),
    Metric("prefix_match", "prefix_match", "prefix", "prefix match",
           "the output starts with the answer, then a word boundary", ("prefix",)),
    Metric("exact_match", "exact_match", "exact", "exact match", "the output's first line equals the answer",
           ("exact",)),
)
METRICS = {m.summary: m.label for m in ANSWER_METRICS}  # summary column -> label
METRIC_NOTES = {m.summary: m.note for m in ANSWER_METRICS}


def current_columns(frame):
    """A saved table with the metrics' older column names (``first``, ``prefix``, ``exact``)
    renamed to their summary names; other columns as they are."""
    renames = {
        alias: m.summary for m in ANSWER_METRICS for alias in m.aliases if m.summary not in frame.columns
    }
    return frame.rename(columns=renames)


# ----------------------------------------------------------------------------- the answer's tokens


@dataclass(frozen=True)
class AnswerTokens:
    """An answer's tokens as they follow the prompt, with the end-of-answer token last."""

    ids: tuple[int, ...]  # " " + y + separator, up to and including the first token with a line break
    first: int  # index of the first token that carries the answer (not whitespace alone)
    end: int  # index of the end-of-answer token (== len(ids) - 1), or len(ids) if none was found

    @property
    def target(self) -> int:
        """The first token that carries the answer."""
        return self.ids[self.first]

    @property
    def first_ids(self) -> tuple[int, ...]:
        """The tokens a first-token score reads: up to and including :attr:`target`."""
        return self.ids[: self.first + 1]


def answer_tokens(tokenizer, answer: str, separator: str = "\n") -> AnswerTokens:
    """Tokenise ``" " + answer + separator`` and mark the first token that carries the answer
    and the end-of-answer token (the first one holding a line break)."""
    ids = tokenizer(answer_text(answer) + separator, add_special_tokens=False).input_ids
    pieces = [tokenizer.decode([i]) for i in ids]
    end = next((i for i, piece in enumerate(pieces) if "\n" in piece), len(ids))
    # a token may hold the answer's last characters and the line break together: what comes
    # before the break is answer text
    carries = [piece.split("\n", 1)[0].strip() for piece in pieces[: end + 1]]
    first = next((i for i, text in enumerate(carries) if text), None)
    if first is None:
        raise ValueError(f"Answer {answer!r} encodes to no token that carries it.")
    return AnswerTokens(tuple(ids[: end + 1]), first, end)


def answer_first_token(model: LoadedModel, answer: str) -> int:
    """Id of the first token that carries ``answer`` (given without its leading space)."""
    return answer_tokens(model.tokenizer, answer).target


def answer_token_count(model: LoadedModel, answer: str) -> int:
    """Tokens of the answer up to and including its end-of-answer token."""
    return len(answer_tokens(model.tokenizer, answer).ids)


def first_token_targets(model: LoadedModel, answers: list[str]) -> torch.Tensor:
    """(B,) the first token that carries each answer ``y``."""
    return torch.tensor([answer_first_token(model, y) for y in answers], device=model.device)


# ----------------------------------------------------------------------------- losses and hits


def first_token_ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of target tokens: logits (B, vocab), targets (B,); -100 targets are ignored."""
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction=reduction, ignore_index=-100)


def first_token_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the argmax is the target token."""
    return logits.argmax(-1) == targets


def answer_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) probability of each query's target token."""
    return logits.float().softmax(-1).gather(1, targets[:, None])[:, 0]


def first_token_loss(
    model: LoadedModel, prompts: list[str], answers: list[str], hooks: list[Hook] = ()
) -> torch.Tensor:
    """Mean cross-entropy of each answer's first token, for answers whose first token carries
    them (single-position, at the last prompt token; differentiable)."""
    logits = inference.last_logits(model, prompts, hooks)  # (B, vocab)
    return first_token_ce(logits, first_token_targets(model, answers))


def starts_with_answer(generated: list[int], answer: AnswerTokens) -> bool:
    """The greedy tokens begin with the answer's tokens up to its first token that carries it."""
    return tuple(generated[: answer.first + 1]) == answer.first_ids


# ----------------------------------------------------------------------------- generated text


def normalise(text: str, case_sensitive: bool = False) -> str:
    """The first line, stripped, inner spaces collapsed, lowercased unless case-sensitive."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = " ".join(line.split())
    return line if case_sensitive else line.lower()


def exact_match(prediction: str, answer: str, case_sensitive: bool = False) -> bool:
    """The output's first line equals the answer (both normalised)."""
    return normalise(prediction, case_sensitive) == normalise(answer, case_sensitive)


def prefix_match(prediction: str, answer: str, case_sensitive: bool = False) -> bool:
    """The output starts with the answer and the answer ends there or at a word boundary
    (the next character is not a letter or digit)."""
    output, target = normalise(prediction, case_sensitive), normalise(answer, case_sensitive)
    if not target or not output.startswith(target):
        return False
    rest = output[len(target) :]
    return not rest or not rest[0].isalnum()
