"""The intervention vocabulary: every method's effect on a forward pass is a value of it.

An :class:`Edit` is data, not a hand-written hook. It says

* **where** (:class:`Where`): a component of some layers. ``"head"`` is the per-head output
  z[l, h] before the output projection (all heads, or a subset); ``"resid"`` is the residual
  stream after block l.
* **what** (``op``):
    replace  x' = v
    add      x' = x + v
    mix      x' = (1 - w) * x + w * v          (w per layer and head, e.g. SITE's alpha)
* **when** (:class:`When`): the last prompt token only; the last prompt token and every
  generated token; or every position, prompt and generated.

``value`` holds one entry per named layer, ``(n_layers, [heads,] d)``; with ``per_query``
it has a leading batch axis, ``(B, n_layers, [heads,] d)``, one value per query (ATV).

An :class:`Intervention` is a named tuple of edits. It compiles to TransformerLens hooks for
one *phase* of a forward pass: ``"prompt"`` or ``"decode"`` (one generated token). A prompt
pass may carry answer tokens after the prompt (teacher forcing): ``prompt_end`` is then the
column of the prompt's last token, and the columns after it stand for generated tokens, so
"the last prompt token" means that column and "every generated token" the ones after it.
Only the per-head module knows hook names: this module asks
:meth:`workbench.model.heads.HeadAccess.hook_name` for them.

Examples (docs/methods.md has each method's math):

    TV    Edit(Where("resid", (l,)), "replace", tv[l][None])
    FV    Edit(Where("resid", (l,)), "add", fv[None])
    LTV   Edit(Where("resid", all layers), "add", v)                     v: (L, d_model)
    SITE  Edit(Where("head", all layers), "mix", t, weight=alpha)        t: (L, H, d_head)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from workbench.model.heads import Hook
    from workbench.model.loading import LoadedModel

Component = Literal["head", "resid"]
Op = Literal["replace", "add", "mix"]
Phase = Literal["prompt", "decode"]
OPS = ("replace", "add", "mix")


class When(str, Enum):  # noqa: UP042 (str() of a member stays "When.X"; StrEnum would change it)
    """Which positions an edit acts on."""

    LAST = "last"  # the last prompt token only: generated tokens read it through the KV cache
    GENERATED = "generated"  # the last prompt token and every generated token
    ALL = "all"  # every prompt position and every generated token

    @classmethod
    def parse(cls, value: When | str) -> When:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"Unknown 'when' {value!r}: use {', '.join(w.value for w in cls)}.") from None


@dataclass(frozen=True)
class Where:
    component: Component
    layers: tuple[int, ...]
    heads: tuple[int, ...] | None = None  # "head" only; None: every head of the layer

    def __post_init__(self) -> None:
        if self.component not in ("head", "resid"):
            raise ValueError(f"Unknown component {self.component!r}: use 'head' or 'resid'.")
        if self.heads is not None and self.component != "head":
            raise ValueError("Only the 'head' component has heads.")
        if not self.layers:
            raise ValueError("An edit needs at least one layer.")


@dataclass(frozen=True, eq=False)
class Edit:
    where: Where
    op: Op
    value: torch.Tensor  # (n_layers, [heads,] d) or, per query, (B, n_layers, [heads,] d)
    weight: torch.Tensor | None = None  # mix only: (n_layers, heads) or (n_layers,) for "resid"
    when: When = When.LAST
    per_query: bool = False

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"Unknown op {self.op!r}: use {', '.join(OPS)}.")
        if (self.op == "mix") != (self.weight is not None):
            raise ValueError("A mix needs a weight, and only a mix has one.")
        n = self.value.shape[1 if self.per_query else 0]
        if n != len(self.where.layers):
            raise ValueError(f"The value holds {n} layers but the edit names {len(self.where.layers)}.")

    def columns(self, phase: Phase, prompt_end: int = -1) -> slice | None:
        """The sequence columns this edit acts on in a pass (None: it does not act)."""
        if phase == "decode":
            return None if self.when is When.LAST else slice(None)
        if self.when is When.ALL:
            return slice(None)
        if self.when is When.GENERATED:
            return slice(prompt_end, None)
        return slice(prompt_end, None if prompt_end == -1 else prompt_end + 1)

    def hooks(self, model: LoadedModel, phase: Phase, prompt_end: int = -1) -> list[Hook]:
        """One hook per layer for this phase (none when the edit does not act in it)."""
        columns = self.columns(phase, prompt_end)
        if columns is None:
            return []
        value = self.value.to(model.device)
        weight = None if self.weight is None else self.weight.to(model.device)
        heads = None if self.where.heads is None else torch.tensor(self.where.heads, device=model.device)
        hooks = []
        for i, layer in enumerate(self.where.layers):
            v = value[:, i] if self.per_query else value[i]  # ([B,] [heads,] d)
            w = None if weight is None else weight[i]  # ([heads])
            name = model.heads.hook_name(self.where.component, layer)
            hooks.append((name, _edit_fn(self.op, v, w, heads, self.per_query, columns)))
        return hooks


@dataclass(frozen=True, eq=False)
class Intervention:
    """A method's effect on a forward pass: named edits (``name`` labels result rows)."""

    name: str
    edits: tuple[Edit, ...]

    def hooks(self, model: LoadedModel, phase: Phase = "prompt", prompt_end: int = -1) -> list[Hook]:
        return [hook for edit in self.edits for hook in edit.hooks(model, phase, prompt_end)]

    def at(self, when: When | str) -> Intervention:
        """The same edits acting ``when`` (last prompt token / also generated / every position)."""
        when = When.parse(when)
        return dataclasses.replace(self, edits=tuple(dataclasses.replace(e, when=when) for e in self.edits))

    def for_prompts(self, model: LoadedModel, prompts: list[str]) -> Intervention:
        """The intervention for this batch of prompts: itself. A query-dependent method (ATV)
        returns a subclass that computes its per-query values here."""
        return self

    @property
    def last_token_only(self) -> bool:
        """True when the prompt pass is touched at its last token only, so a prefix cached
        without the intervention stays valid (the fast path of the fits)."""
        return all(e.when is not When.ALL for e in self.edits)

    @property
    def when_label(self) -> str:
        """When the edits act ("last", "generated", "all"), as results record it."""
        return "+".join(dict.fromkeys(e.when.value for e in self.edits))


@dataclass(frozen=True, eq=False, kw_only=True)
class Deferred(Intervention):
    """An intervention whose edits are made when it meets a model and a batch of prompts:
    LTV's vectors need the model's W_O; ATV computes each query's vectors from its prompt.

    ``build(model, prompts, when)`` returns the edits. :meth:`for_prompts` makes them; a
    ``needs_prompts`` intervention has no hooks before that."""

    edits: tuple[Edit, ...] = ()
    build: Callable[[LoadedModel, list[str], When], tuple[Edit, ...]]
    when: When = When.LAST
    needs_prompts: bool = False

    def for_prompts(self, model: LoadedModel, prompts: list[str]) -> Intervention:
        return Intervention(self.name, tuple(self.build(model, prompts, self.when)))

    def hooks(self, model: LoadedModel, phase: Phase = "prompt", prompt_end: int = -1) -> list[Hook]:
        if self.needs_prompts:
            raise ValueError(
                f"{self.name} makes its edits per query: call for_prompts(model, prompts) first."
            )
        return self.for_prompts(model, []).hooks(model, phase, prompt_end)

    def at(self, when: When | str) -> Deferred:
        return dataclasses.replace(self, when=When.parse(when))

    @property
    def last_token_only(self) -> bool:
        return self.when is not When.ALL

    @property
    def when_label(self) -> str:
        return self.when.value


# ----------------------------------------------------------------------------- edits of the methods


def mix_heads(weight: torch.Tensor, value: torch.Tensor, when: When = When.LAST) -> Edit:
    """Every head of every layer: z' = (1 - w) z + w v. weight (L, H), value (L, H, d_head)."""
    return Edit(Where("head", tuple(range(weight.shape[0]))), "mix", value, weight=weight, when=when)


def replace_head(layer: int, head: int, value: torch.Tensor, when: When = When.LAST) -> Edit:
    """One head's output becomes ``value`` (d_head,)."""
    return Edit(Where("head", (layer,), (head,)), "replace", value[None, None], when=when)


def replace_residual(layer: int, vector: torch.Tensor, when: When = When.LAST) -> Edit:
    """The residual after ``layer`` becomes ``vector`` (d_model,)."""
    return Edit(Where("resid", (layer,)), "replace", vector[None], when=when)


def add_to_residual(
    vectors: torch.Tensor,
    layers: tuple[int, ...] | None = None,
    when: When = When.LAST,
    per_query: bool = False,
) -> Edit:
    """Add vectors[i] to the residual after layers[i]: (n, d_model), or (B, n, d_model) per query.
    ``layers`` None: every layer, 0 .. n - 1."""
    n = vectors.shape[1 if per_query else 0]
    return Edit(Where("resid", tuple(range(n)) if layers is None else tuple(layers)), "add", vectors,
                when=when, per_query=per_query)


# ----------------------------------------------------------------------------- the hook arithmetic


def _apply(op: Op, current: torch.Tensor, v: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
    if op == "replace":
        return v.expand_as(current)
    if op == "add":
        return current + v
    while w.dim() < v.dim():  # (heads,) -> (heads, 1): one weight per head
        w = w.unsqueeze(-1)
    return (1 - w) * current + w * v


def _edit_fn(op, v, w, heads, per_query: bool, columns: slice):
    """The hook for one layer. x: (B, T, H, d_head) for heads, (B, T, d_model) for the residual;
    the edit is written into ``columns`` of T."""

    def edit(x: torch.Tensor, hook) -> torch.Tensor:
        if columns == slice(-1, None):  # the last column alone: computed on it only
            last = x[:, -1]  # (B, [H,] d)
            current = last if heads is None else last.index_select(1, heads)
            new = _apply(op, current, v, w)
            if heads is not None:
                new = last.index_copy(1, heads, new.to(x.dtype))
            return _put_columns(x, new.unsqueeze(1), columns)
        value = v.unsqueeze(1) if per_query else v  # broadcast over positions
        current = x if heads is None else x.index_select(2, heads)
        new = _apply(op, current, value, w).to(x.dtype)
        if heads is not None:
            new = x.index_copy(2, heads, new)
        return _put_columns(x, new, columns)

    return edit


def _put_columns(x: torch.Tensor, value: torch.Tensor, columns: slice) -> torch.Tensor:
    """x with the positions in ``columns`` taken from ``value`` (broadcast over positions),
    out of place (autograd flows through both)."""
    if columns == slice(None):
        return value.expand_as(x).to(x.dtype) if value.shape != x.shape else value.to(x.dtype)
    chosen = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
    chosen[columns] = True
    chosen = chosen.view(1, -1, *([1] * (x.dim() - 2)))
    return torch.where(chosen, value.to(x.dtype), x)
