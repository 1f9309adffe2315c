"""The contract every method keeps, so that nothing generic ever branches on a method's name.

A method is a class; a fitted method is an instance of it (its parameters and how the fit
went). Like a scikit-learn estimator it has a few verbs:

* ``Method.fit(model, tasks, config, progress)`` -> a fitted instance;
* ``.intervention(task, when)`` -> the :class:`workbench.interventions.Intervention` it makes
  on a zero-shot query of ``task`` (``when``: last prompt token / also generated tokens /
  every position);
* ``.head_map()`` / ``.relevance()``: the optional (L, H) map, and how much each head matters
  under the method's sign convention (:class:`HeadMap`);
* ``.summary()``: the headline numbers of the fit, for tables;
* the run codec's halves, ``.tensors()`` / ``.record()`` and ``Method.restore(...)``:
  :mod:`workbench.store.codec` saves and loads every method through them.

The registry (:mod:`workbench.methods`) lists the classes; the CLI, scripts and pages take
the method list from it.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch

from workbench.interventions import Intervention, When
from workbench.model.loading import LoadedModel
from workbench.tasks.prompts import DEFAULT_TEMPLATE
from workbench.tasks.task import Task

Progress = Callable[[str, int, int, dict], None]  # (stage, done, total, record of the step)

# What a setting of any method must be, by its name (MethodConfig.check): the least whole
# number, or for rates a finite number above (lr) or from (init_std) zero.
AT_LEAST = {"seed": 0, "shots": 1, "n_prompts": 1, "n_shuffled": 1, "candidates": 1, "steps": 1, "batch_size": 1, "top_k": 1,
            "eval_every": 1, "patience": 1, "rank": 0, "per_task": 1}
ABOVE_ZERO, FROM_ZERO = ("lr",), ("init_std",)


@dataclass(kw_only=True)
class MethodConfig:
    """Settings every method has; each method's config adds its own."""

    template: str = DEFAULT_TEMPLATE  # prompt template (name or custom format), recorded with every result
    seed: int = 0  # split, prompt sampling and initialisation
    when: str = "last"  # where the intervention acts: "last" prompt token, or also every "generated" token

    def __post_init__(self) -> None:
        self.when = When.parse(self.when).value
        if self.when == When.ALL.value:
            raise ValueError("Methods fit on cached prefixes: 'when' is 'last' or 'generated', not 'all'.")

    def as_dict(self) -> dict:
        return asdict(self)

    def check(self, n_layers: int | None = None, names: dict[str, str] | None = None) -> None:
        """Raise ValueError, naming the setting (``names`` maps a field to what the caller
        calls it, e.g. a CLI flag), unless every setting can give a real fit: whole numbers
        in range, finite positive rates, a layer the model has, a usable template."""
        from workbench.tasks.prompts import get_template

        get_template(self.template)
        for f in fields(self):
            value, name = getattr(self, f.name), (names or {}).get(f.name, f.name)
            if f.name in AT_LEAST or f.name == "layer":
                if value is None and f.name == "layer":
                    continue
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be a whole number, got {value!r}.")
                low = AT_LEAST.get(f.name, 0)
                if value < low:
                    raise ValueError(f"{name} must be >= {low}, got {value}.")
                if f.name == "layer" and n_layers is not None and value >= n_layers:
                    raise ValueError(f"{name} must be below the model's {n_layers} layers, got {value}.")
            elif f.name in ABOVE_ZERO + FROM_ZERO:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise ValueError(f"{name} must be a finite number, got {value!r}.")
                if value < 0 or (value == 0 and f.name in ABOVE_ZERO):
                    raise ValueError(f"{name} must be {'>' if f.name in ABOVE_ZERO else '>='} 0, got {value}.")


@dataclass(frozen=True)
class HeadMap:
    """What a method's (L, H) map means."""

    label: str  # the value's name: "alpha", "indirect effect", "theta"
    signed: bool = False  # has both signs: drawn on a diverging scale centred at 0
    by_magnitude: bool = False  # relevance is |value|: a large negative weight matters as much
    is_selection: bool = False  # values are a soft head selection in [0, 1], usable as mix weights


@dataclass(kw_only=True, eq=False)
class Method(ABC):
    name: ClassVar[str]  # "SITE": the registry key, stored with every run
    title: ClassVar[str]  # "Soft injection (SITE)"
    Config: ClassVar[type[MethodConfig]]
    head_map_info: ClassVar[HeadMap | None] = None  # None: acts on the residual stream, no head map
    several_tasks: ClassVar[bool] = False  # one fit may serve several tasks at once

    tasks: list[str]
    config: MethodConfig
    fit_seconds: float = 0.0
    meta: dict = field(default_factory=dict)  # provenance when loaded: run id, created, metrics

    # ------------------------------------------------------------------ the verbs

    @classmethod
    @abstractmethod
    def fit(
        cls,
        model: LoadedModel,
        tasks: Task | Sequence[Task],
        config: MethodConfig | None = None,
        progress: Progress | None = None,
    ) -> "Method": ...

    @abstractmethod
    def intervention(self, task: str | None = None, when: When | str | None = None) -> Intervention:
        """The edit on a zero-shot query of ``task``, acting ``when`` (default: the config's)."""

    def head_map(self) -> torch.Tensor:
        """(L, H) on the CPU, float32: the method's per-head values (see ``head_map_info``)."""
        if self.head_map_info is None:
            raise ValueError(f"{self.name} has no per-head map (it acts on the residual stream).")
        return self._head_values().detach().float().cpu()

    def relevance(self) -> torch.Tensor:
        """(L, H): how much each head matters, for ranking heads (|value| where the sign is free)."""
        values = self.head_map()
        return values.abs() if self.head_map_info.by_magnitude else values

    def summary(self) -> dict:
        """Headline numbers of the fit for tables (fit time, chosen layer, best step, ...)."""
        return {"fit_s": round(self.fit_seconds, 1)}

    # ------------------------------------------------------------------ the run codec's halves

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The fitted tensors, saved as safetensors."""

    @abstractmethod
    def record(self) -> dict:
        """The method's own fit record (JSON-able: chosen layer, curves, trace, timings)."""

    @classmethod
    @abstractmethod
    def restore(cls, tensors: dict[str, torch.Tensor], record: dict, **common: Any) -> "Method":
        """Rebuild a fitted method from what :meth:`tensors` and :meth:`record` saved;
        ``common`` holds the fields every method has (tasks, config, fit_seconds, meta)."""

    # ------------------------------------------------------------------ helpers for subclasses

    @property
    def label(self) -> str:
        """The task (or tasks, joined by '+') this fit is for."""
        return "+".join(self.tasks)

    def _head_values(self) -> torch.Tensor:
        raise NotImplementedError

    def _when(self, when: When | str | None) -> When:
        return When.parse(self.config.when if when is None else when)

    def _task(self, task: str | None) -> str:
        """``task`` (default: the first fitted task), checked to be one of this fit's tasks."""
        task = task or self.tasks[0]
        if task not in self.tasks:
            raise KeyError(f"This {self.name} fit is for {', '.join(map(repr, self.tasks))}, not {task!r}.")
        return task

    @classmethod
    def _tasks(cls, tasks: Task | Sequence[Task]) -> list[Task]:
        """``tasks`` as a list, checked against ``several_tasks``."""
        tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
        if not tasks:
            raise ValueError("No tasks to fit.")
        if len(tasks) > 1 and not cls.several_tasks:
            raise ValueError(f"{cls.name} is fitted per task; {len(tasks)} tasks were given.")
        return tasks

    @classmethod
    def _config(cls, config: MethodConfig | None) -> Any:
        config = config or cls.Config()
        if not isinstance(config, cls.Config):
            raise TypeError(f"{cls.name} takes a {cls.Config.__name__}, not a {type(config).__name__}.")
        return config
