"""A method's settings are data: each is one field of its Config, declared once, with its
default, its bounds and its help text (:func:`setting`). Everything else is read off those
fields: :meth:`MethodConfig.check`, the CLI's ``fit`` flags and ``train_atv.py``'s
(:func:`add_flags`, :func:`given`), ``bench_methods.py --set`` (:func:`parse`), the fit
spec, and the app's Fit form.

    shots: int = setting(10, "k: demonstrations per prompt", minimum=1)

A setting shared by several methods (``steps``, ``lr``, ...) is declared in a shared
config (``LearnedConfig``); a method that wants another default says so with
:func:`retuned`, which keeps the bounds and help.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

KEY = "setting"  # the field-metadata key


@dataclass(frozen=True)
class Setting:
    """What a value of one setting may be, and what it is for."""

    help: str
    minimum: float | None = None  # value >= minimum
    above: float | None = None  # value > above
    choices: tuple | None = None  # one of these
    layer: bool = False  # a layer index: below the model's layer count
    none: str | None = None  # None is allowed and means this ("best on the selection split")
    flag: str | None = None  # the CLI flag, when not --name-with-dashes

    def describe_bounds(self) -> str:
        parts = []
        if self.minimum is not None:
            parts.append(f">= {self.minimum:g}")
        if self.above is not None:
            parts.append(f"> {self.above:g}")
        if self.choices:
            parts.append(" | ".join(map(str, self.choices)))
        if self.layer:
            parts.append("a layer of the model")
        return ", ".join(parts)


def setting(default: Any, help: str, **bounds: Any) -> Any:
    """A Config field: ``default`` with its bounds (:class:`Setting`) and help text."""
    return dataclasses.field(default=default, metadata={KEY: Setting(help, **bounds)})


def retuned(config_class: type, name: str, default: Any, **changes: Any) -> Any:
    """``config_class``'s setting ``name`` with another default (the same bounds and help,
    but for the ``changes``: e.g. one more choice)."""
    spec = dataclasses.replace(config_class.__dataclass_fields__[name].metadata[KEY], **changes)
    return dataclasses.field(default=default, metadata={KEY: spec})


@dataclass(frozen=True)
class Field:
    """One setting of one Config: name, type (int, float, str or bool), default, spec."""

    name: str
    kind: type
    default: Any
    spec: Setting

    @property
    def flag(self) -> str:
        return self.spec.flag or "--" + self.name.replace("_", "-")


def fields(config_class: type) -> list[Field]:
    """The settings of a Config class, in declaration order."""
    hints = typing.get_type_hints(config_class)
    out = []
    for f in dataclasses.fields(config_class):
        if KEY not in f.metadata:
            raise TypeError(
                f"{config_class.__name__}.{f.name} is not declared with setting(...): "
                "give it bounds and help."
            )
        kind = hints[f.name]
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)  # int | None -> int
        if base not in (int, float, str, bool):
            raise TypeError(
                f"{config_class.__name__}.{f.name}: a setting is an int, float, str or bool, not {kind}."
            )
        out.append(Field(f.name, base, f.default, f.metadata[KEY]))
    return out


def check(config: Any, n_layers: int | None = None, names: dict[str, str] | None = None) -> None:
    """Raise ValueError naming the setting (``names`` maps a field to what the caller calls
    it, e.g. its CLI flag) unless every value is of its type and within its bounds."""
    for f in fields(type(config)):
        value, name = getattr(config, f.name), (names or {}).get(f.name, f.name)
        if value is None and f.spec.none is not None:
            continue
        if f.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false, got {value!r}.")
            continue
        if f.kind is str:
            if not isinstance(value, str):
                raise ValueError(f"{name} must be text, got {value!r}.")
        elif f.kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be a whole number, got {value!r}.")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}.")
        spec = f.spec
        if spec.choices is not None and value not in spec.choices:
            raise ValueError(f"{name} must be one of {', '.join(map(str, spec.choices))}, got {value!r}.")
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(f"{name} must be >= {spec.minimum:g}, got {value}.")
        if spec.above is not None and value <= spec.above:
            raise ValueError(f"{name} must be > {spec.above:g}, got {value}.")
        if spec.layer and n_layers is not None and value >= n_layers:
            raise ValueError(f"{name} must be below the model's {n_layers} layers, got {value}.")


def parse(config_class: type, name: str, text: str) -> Any:
    """The value of setting ``name`` written as ``text`` (``--set``, a form): its own type."""
    by_name = {f.name: f for f in fields(config_class)}
    if name not in by_name:
        raise ValueError(
            f"{config_class.__name__} has no setting {name!r} (its settings: {', '.join(by_name)})."
        )
    f = by_name[name]
    if f.spec.none is not None and text.strip().lower() in ("none", "null", ""):
        return None
    if f.kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{name} must be true or false, got {text!r}.")
        return lowered in ("true", "1", "yes")
    try:
        return f.kind(text)
    except ValueError:
        raise ValueError(
            f"{name} must be {'a whole number' if f.kind is int else 'a number'}, got {text!r}."
        ) from None


# ----------------------------------------------------------------------------- command lines


def _union(config_classes: Sequence[tuple[str, type]]) -> dict[str, list[tuple[str, Field]]]:
    """setting name -> [(owner, its field)] over several Configs, checked to agree on type."""
    union: dict[str, list[tuple[str, Field]]] = {}
    for owner, config_class in config_classes:
        for f in fields(config_class):
            union.setdefault(f.name, []).append((owner, f))
    for name, owned in union.items():
        kinds = {f.kind for _, f in owned}
        if len(kinds) > 1:
            raise TypeError(
                f"Setting {name!r} has different types in {', '.join(o for o, _ in owned)}: "
                "one flag cannot serve them."
            )
    return union


def add_flags(
    parser: argparse.ArgumentParser, config_classes: Sequence[tuple[str, type]], skip: Iterable[str] = ()
) -> None:
    """One flag per setting of the given Configs (``(owner name, Config)``, e.g.
    ``("SITE", SiteConfig)``), with its help, bounds and real defaults (per owner where
    they differ). Every flag defaults to None: :func:`given` keeps the ones the user gave."""
    skip = set(skip)
    all_owners = [owner for owner, _ in config_classes]
    for name, owned in _union(config_classes).items():
        if name in skip:
            continue
        f = owned[0][1]
        owners = [o for o, _ in owned]
        every = owners == all_owners or len(all_owners) == 1
        helps = _grouped([(o, g.spec.help) for o, g in owned])
        text = helps[0][1] if len(helps) == 1 else "; ".join(f"{' / '.join(os)}: {h}" for os, h in helps)
        if len(helps) == 1 and not every:
            text = f"{' / '.join(owners)}: {text}"
        defaults = _grouped(
            [(o, repr(g.default) if isinstance(g.default, str) else str(g.default)) for o, g in owned]
        )
        default = (
            defaults[0][1]
            if len(defaults) == 1
            else ", ".join(f"{d} ({' / '.join(os)})" for os, d in defaults)
        )
        bounds = _grouped([(o, g.spec.describe_bounds()) for o, g in owned])
        bound = ", ".join(b if len(bounds) == 1 else f"{' / '.join(os)} {b}" for os, b in bounds if b)
        text += f" (default {default}{'; ' + bound if bound else ''})"
        text = text.replace("%", "%%")
        dest = f"setting_{name}"
        if f.kind is bool:
            parser.add_argument(
                f.flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text
            )
            continue
        choices = None
        if all(g.spec.choices for _, g in owned):
            choices = list(dict.fromkeys(c for _, g in owned for c in g.spec.choices))
        kind = f.kind if f.spec.none is None else _optional(f.kind)
        parser.add_argument(f.flag, dest=dest, type=kind, default=None, choices=choices, help=text,
                            metavar=None if choices else name.upper())


def _grouped(pairs: list[tuple[str, str]]) -> list[tuple[list[str], str]]:
    """(owner, text) pairs grouped by text, in first-seen order: [(owners, text)]."""
    groups: dict[str, list[str]] = {}
    for owner, value in pairs:
        groups.setdefault(value, []).append(owner)
    return [(owners, value) for value, owners in groups.items()]


def _optional(kind: type):
    def convert(text: str):
        return None if text.strip().lower() in ("none", "null") else kind(text)

    convert.__name__ = kind.__name__
    return convert


def given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the user gave on the command line (flags left at None are not given)."""
    return {key.removeprefix("setting_"): value for key, value in vars(args).items()
            if key.startswith("setting_") and value is not None}


def flag_names(config_class: type) -> dict[str, str]:
    """setting -> its CLI flag, for messages that name what the user typed."""
    return {f.name: f.flag for f in fields(config_class)}
