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
* optional verbs, which :meth:`Method.offers` tells about: ``.per_layer_vectors(model)``;
* the run codec's halves, ``.tensors()`` / ``.record()`` and ``Method.restore(...)``, read
  off the method's own dataclass fields: :mod:`workbench.store.codec` saves and loads every
  method through them, and a method writes none of them.

What every fit starts with (tasks, config checked against its bounds, template, ``when``,
seeded generators, each task's selection split) is :meth:`Method.begin`; a method's
settings are the fields of its Config, each declared once with its bounds and help
(:mod:`workbench.methods.settings`). The registry (:mod:`workbench.methods`) lists the
classes; the CLI, scripts, pages and tests take the method list and the settings from it.
"""

from __future__ import annotations

import dataclasses
import time
import typing
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from workbench.interventions import Intervention, When
from workbench.methods import settings
from workbench.methods.selection import Selection, selection_split
from workbench.methods.settings import setting
from workbench.model.loading import LoadedModel
from workbench.progress import Progress
from workbench.tasks.prompts import DEFAULT_TEMPLATE, PromptTemplate, get_template
from workbench.tasks.task import Task

LOSSES = ("first_token", "answer")  # what a learned fit's cross-entropy covers (workbench.methods.queries)


@dataclass(kw_only=True)
class MethodConfig:
    """Settings every method has; each method's config adds its own. Every field is a
    :func:`~workbench.methods.settings.setting`: its default, bounds and help, declared once."""

    template: str = setting(DEFAULT_TEMPLATE, "prompt template: qa, arrow, or a custom format with {x} "
                            "(recorded with every result)")
    seed: int = setting(0, "seed of the split, the prompt sampling and the initialisation", minimum=0)
    when: str = setting("last", "where the intervention acts: the last prompt token, "
                        "or also every generated token", choices=("last", "generated"))

    def __post_init__(self) -> None:
        if isinstance(self.when, (str, When)):
            self.when = When.parse(self.when).value

    def as_dict(self) -> dict:
        return asdict(self)

    def check(self, n_layers: int | None = None, names: dict[str, str] | None = None) -> None:
        """Raise ValueError, naming the setting (``names`` maps a field to what the caller
        calls it, e.g. a CLI flag), unless every setting is within the bounds its field
        declares (:mod:`workbench.methods.settings`), the layer one the model has, and the
        template usable."""
        from workbench.tasks.prompts import get_template

        settings.check(self, n_layers, names)
        get_template(self.template)


def saved(default: Any = MISSING, *, key: str | None = None, aliases: tuple[str, ...] = (),
          default_factory: Any = MISSING) -> Any:
    """A fitted method's field, as the run codec saves it under ``key`` (default: its name)
    and also reads it under ``aliases`` (the names older runs used)."""
    return field(default=default, default_factory=default_factory,
                 metadata={"codec": {"key": key, "aliases": aliases}})


@dataclass(frozen=True)
class Setup:
    """What every fit starts from (:meth:`Method.begin`)."""

    tasks: list[Task]
    config: Any  # the method's Config, checked
    template: PromptTemplate
    when: When
    rng: np.random.Generator  # mini-batch draws, seeded by config.seed
    generator: torch.Generator  # initialisation, seeded by config.seed
    selections: dict[str, Selection]  # task -> its fitting pool and selection items
    t0: float  # when the fit began (perf_counter)

    @property
    def task(self) -> Task:
        return self.tasks[0]

    @property
    def selection(self) -> Selection:
        return self.selections[self.tasks[0].name]

    def seconds(self) -> float:
        return time.perf_counter() - self.t0


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
    # fitted on a mixture of tasks, a long fit by default: the app never offers it as a quick one-task fit
    mixture: ClassVar[bool] = False
    # the smallest settings that run every step of a fit (the test suite's)
    tiny_settings: ClassVar[dict] = {}

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
    ) -> Method: ...

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

    def per_layer_vectors(self, model: LoadedModel) -> torch.Tensor:
        """Optional verb: the vector the method adds (or writes) at each layer, (L, d_model) on
        the model's device, NaN at layers where it has none; the Adaptive view compares a
        query's ATV vectors with it. :meth:`offers` tells which methods have it."""
        raise NotImplementedError(f"{self.name} has no per-layer vectors.")

    @classmethod
    def offers(cls, verb: str) -> bool:
        """Whether this method implements the optional verb ``verb`` (e.g. "per_layer_vectors")."""
        return getattr(cls, verb) is not getattr(Method, verb)

    # ------------------------------------------------------------------ the run codec's halves
    #
    # Read off the subclass's own dataclass fields, by type: a tensor (or an optional one) is
    # saved as ``key``; a dict of tensors as ``key.<name>``; a record part (a type with
    # ``record()`` and ``from_record()``, e.g. the training Trace) is spread into the record; a
    # data frame is saved as its columns; anything else as JSON. ``saved(key=, aliases=)`` names
    # a field's key and the names older runs used.

    def tensors(self) -> dict[str, torch.Tensor]:
        """The fitted tensors, saved as safetensors."""
        out: dict[str, torch.Tensor] = {}
        for part in _parts(type(self)):
            value = getattr(self, part.name)
            if part.kind == "tensor" and value is not None:
                out[part.key] = value
            elif part.kind == "tensors":
                out.update({f"{part.key}.{name}": t for name, t in (value or {}).items()})
        return out

    def record(self) -> dict:
        """The method's own fit record (JSON-able: chosen layer, curves, trace, timings)."""
        out: dict = {}
        for part in _parts(type(self)):
            value = getattr(self, part.name)
            if part.kind == "record":
                out.update(value.record())
            elif part.kind == "frame":
                out[part.key] = value.to_dict(orient="list")
            elif part.kind == "json":
                out[part.key] = value
        return {**out, **self.record_extra()}

    def record_extra(self) -> dict:
        """Derived values written for readers of the JSON, never read back (default none)."""
        return {}

    @classmethod
    def restore(cls, tensors: dict[str, torch.Tensor], record: dict, **common: Any) -> Method:
        """Rebuild a fitted method from what :meth:`tensors` and :meth:`record` saved;
        ``common`` holds the fields every method has (tasks, config, fit_seconds, meta).
        Raises KeyError naming a missing piece, ValueError for pieces that do not fit."""
        values = {}
        for part in _parts(cls):
            names = (part.key, *part.aliases)
            if part.kind == "tensor":
                found = next((tensors[n] for n in names if n in tensors), None)
                if found is None and not part.optional:
                    raise KeyError(part.key)
                values[part.name] = found
            elif part.kind == "tensors":
                prefix = next((n for n in names if any(k.startswith(n + ".") for k in tensors)), part.key)
                found = {
                    k.removeprefix(prefix + "."): t for k, t in tensors.items() if k.startswith(prefix + ".")
                }
                values[part.name] = found or (None if part.optional else {})
            elif part.kind == "record":
                values[part.name] = part.type.from_record(record)
            else:
                name = next((n for n in names if n in record), None)
                if name is None:
                    if not part.has_default:
                        raise KeyError(part.key)
                    continue
                raw = record[name]
                values[part.name] = pd.DataFrame(raw) if part.kind == "frame" else part.cast(raw)
        cls.check_restored(tensors, record, common["config"])
        return cls(**common, **values)

    @classmethod  # noqa: B027 (an optional hook by design: the default checks nothing)
    def check_restored(cls, tensors: dict[str, torch.Tensor], record: dict, config: Any) -> None:
        """Raise ValueError where a run's pieces do not fit each other (default: no check)."""

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
    def begin(cls, model: LoadedModel, tasks: Task | Sequence[Task], config: MethodConfig | None) -> Setup:
        """The preamble of every fit: ``tasks`` as a list (checked against ``several_tasks``), the
        config (default: the method's defaults; checked against its bounds and the model), its
        template and ``when``, the random generators seeded by ``config.seed``, and each task's
        fitting pool and selection items."""
        tasks = [tasks] if isinstance(tasks, Task) else list(tasks)
        if not tasks:
            raise ValueError("No tasks to fit.")
        if len(tasks) > 1 and not cls.several_tasks:
            raise ValueError(f"{cls.name} is fitted per task; {len(tasks)} tasks were given.")
        config = config or cls.Config()
        if not isinstance(config, cls.Config):
            raise TypeError(f"{cls.name} takes a {cls.Config.__name__}, not a {type(config).__name__}.")
        config.check(model.heads.shape.n_layers)
        rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        selections = {task.name: selection_split(task, config.seed) for task in tasks}
        return Setup(tasks, config, get_template(config.template), When.parse(config.when), rng, generator,
                     selections, time.perf_counter())


@dataclass(frozen=True)
class _Part:
    """How the run codec saves one field of a fitted method."""

    name: str
    key: str
    aliases: tuple[str, ...]
    kind: str  # tensor, tensors, record, frame, json
    type: Any
    optional: bool
    has_default: bool

    def cast(self, raw: Any) -> Any:
        return self.type(raw) if self.type in (int, float, str, bool) else raw


_COMMON_FIELDS = {"tasks", "config", "fit_seconds", "meta"}


def _parts(cls: type) -> list[_Part]:
    """The codec's view of a method class's own fields (cached per class)."""
    if "_codec_parts" in cls.__dict__:
        return cls.__dict__["_codec_parts"]
    hints = typing.get_type_hints(cls)
    parts = []
    for f in dataclasses.fields(cls):
        if f.name in _COMMON_FIELDS or not f.init:
            continue
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = type(None) in typing.get_args(hint)
        base = args[0] if optional and len(args) == 1 else hint
        origin = typing.get_origin(base)
        if base is torch.Tensor:
            kind = "tensor"
        elif origin is dict and typing.get_args(base)[1:] == (torch.Tensor,):
            kind = "tensors"
        elif isinstance(base, type) and hasattr(base, "from_record") and hasattr(base, "record"):
            kind = "record"
        elif base is pd.DataFrame:
            kind = "frame"
        else:
            kind = "json"
        codec = f.metadata.get("codec", {})
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        parts.append(_Part(f.name, codec.get("key") or f.name, tuple(codec.get("aliases", ())), kind,
                           origin or base, optional, has_default))
    cls._codec_parts = parts
    return parts
