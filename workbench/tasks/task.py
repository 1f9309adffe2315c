"""A task: a named list of input/output pairs, and its fixed train / valid / test split.

Splits are fixed by seed: train / valid / test, about 70 / 9 / 21 per cent
(docs/methods.md, "Tasks, prompts, splits").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

SPLIT_FRACTIONS = (0.70, 0.09, 0.21)
SPLITS = ("train", "valid", "test")

Pair = tuple[str, str]


@dataclass(frozen=True)
class TaskSplits:
    train: list[Pair]
    valid: list[Pair]
    test: list[Pair]

    def __getitem__(self, name: str) -> list[Pair]:
        if name not in ("train", "valid", "test"):
            raise KeyError(f"Unknown split {name!r}: use train, valid or test.")
        return getattr(self, name)


@dataclass(frozen=True)
class Task:
    name: str
    pairs: list[Pair]
    case_sensitive: bool = False
    description: str = ""
    category: str = "user"
    path: str = ""
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def content_hash(self) -> str:
        """sha256 of the pairs as canonical JSON: the task's identity, whatever file it came from."""
        text = json.dumps([list(pair) for pair in self.pairs], ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def split(self, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> TaskSplits:
        """Shuffle with ``seed`` and cut into train / valid / test (each non-empty)."""
        n = len(self.pairs)
        order = np.random.default_rng(seed).permutation(n)
        n_valid = max(1, round(n * fractions[1]))
        n_test = max(1, round(n * fractions[2]))
        n_train = n - n_valid - n_test
        if n_train < 1:
            raise ValueError(f"Task {self.name!r} has {n} items: too few to split.")
        items = [self.pairs[i] for i in order]
        return TaskSplits(items[:n_train], items[n_train : n_train + n_valid], items[n_train + n_valid :])

    def split_sizes(self, seed: int = 0) -> dict[str, int]:
        """{"train": n, "valid": n, "test": n} for ``seed``, as recorded with every run."""
        splits = self.split(seed)
        return {name: len(splits[name]) for name in SPLITS}
