"""Answer scoring: what the answer's first token is, the losses fitted on it, and the metrics
that judge a model's output (docs/methods.md, "Answer metrics").

Every method, fit and evaluation scores answers through these functions:

* :func:`answer_first_token` / :func:`first_token_targets`: the token id a model should put
  first after the prompt, for an answer as it follows the query (``" " + y``);
* :func:`first_token_ce` and :func:`first_token_loss`: the cross-entropy of that token;
* :func:`first_token_hits`, :func:`answer_probability`: accuracy and probability of it;
* :func:`normalise`, :func:`exact_match`: the generated text against the answer.
"""

from __future__ import annotations

import torch

from workbench.model import inference
from workbench.model.heads import Hook
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import answer_text

METRICS = {"first_token_acc": "first-token accuracy", "exact_match": "exact match"}


# ----------------------------------------------------------------------------- the target token


def answer_first_token(model: LoadedModel, answer: str) -> int:
    """Id of the first token of an answer as it follows a prompt (with its leading space)."""
    ids = model.tokenizer(answer, add_special_tokens=False).input_ids
    if not ids:
        raise ValueError(f"Answer {answer!r} encodes to no tokens.")
    return int(ids[0])


def answer_token_count(model: LoadedModel, answer: str) -> int:
    return len(model.tokenizer(answer, add_special_tokens=False).input_ids)


def first_token_targets(model: LoadedModel, answers: list[str]) -> torch.Tensor:
    """(B,) first-token ids of answers ``y`` as they follow the query (``answer_text(y)``)."""
    return torch.tensor([answer_first_token(model, answer_text(y)) for y in answers], device=model.device)


# ----------------------------------------------------------------------------- losses and hits


def first_token_ce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the target first tokens: logits (B, vocab), targets (B,)."""
    return torch.nn.functional.cross_entropy(logits.float(), targets, reduction=reduction)


def first_token_hits(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the argmax is the target first token."""
    return logits.argmax(-1) == targets


def answer_probability(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B,) probability of each query's target first token."""
    return logits.float().softmax(-1).gather(1, targets[:, None])[:, 0]


def first_token_loss(
    model: LoadedModel, prompts: list[str], answers: list[str], hooks: list[Hook] = ()
) -> torch.Tensor:
    """Mean cross-entropy of each answer's first token at the last prompt token (differentiable)."""
    logits = inference.last_logits(model, prompts, hooks)  # (B, vocab)
    return first_token_ce(logits, first_token_targets(model, answers))


# ----------------------------------------------------------------------------- generated text


def normalise(text: str, case_sensitive: bool = False) -> str:
    """The first line, stripped, inner spaces collapsed, lowercased unless case-sensitive."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    line = " ".join(line.split())
    return line if case_sensitive else line.lower()


def exact_match(prediction: str, answer: str, case_sensitive: bool = False) -> bool:
    """The output's first line equals the answer (both normalised)."""
    return normalise(prediction, case_sensitive) == normalise(answer, case_sensitive)
