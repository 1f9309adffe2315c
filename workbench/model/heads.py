"""The one place that knows how to read and write a model's per-head activations.

Vocabulary (TransformerLens hook names, stable across architectures):

* ``blocks.{l}.attn.hook_z``: head outputs before the output projection,
  shape (batch, pos, n_heads, d_head). With grouped-query attention this is still one
  slot per *query* head: key/value heads are shared upstream of it. (It is the same
  hook as ``attn.o.hook_in``; register one name only, or it fires twice.)
* ``blocks.{l}.hook_resid_post``: the residual stream after block l, (batch, pos, d_model).

``W_O[l, h]`` is head h's (d_head, d_model) block of layer l's output projection, so
``z[l, h] @ W_O[l, h]`` is that head's write into the residual stream and the attention
output is the sum over heads (plus the bias, if any).

Nothing else spells a hook name: the intervention vocabulary
(:mod:`workbench.interventions`) asks :meth:`HeadAccess.hook_name` where a component lives,
and readers ask for the capture hooks below. A hook is a pair ``(name, fn)`` as
TransformerLens' ``run_with_hooks`` takes it; ``pos`` is the sequence index a reader reads
(``-1``: the last prompt token, with left padding).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch

Hook = tuple[str, Callable]


@dataclass(frozen=True)
class HeadShape:
    n_layers: int
    n_heads: int  # query heads per layer
    n_kv_heads: int  # key/value heads per layer (< n_heads with grouped-query attention)
    d_head: int
    d_model: int

    def as_dict(self) -> dict:
        return asdict(self)


class HeadAccess:
    """Per-head view of a bridge: shapes, hook names, W_O blocks, and hook factories."""

    def __init__(self, bridge) -> None:
        cfg = bridge.cfg
        n_heads = int(cfg.n_heads)
        n_kv = getattr(cfg, "n_key_value_heads", None) or n_heads
        self.bridge = bridge
        self.shape = HeadShape(int(cfg.n_layers), n_heads, int(n_kv), int(cfg.d_head), int(cfg.d_model))
        self._W_O: torch.Tensor | None = None
        self._b_O: torch.Tensor | None = None

    # ------------------------------------------------------------------ names and weights

    @staticmethod
    def z_name(layer: int) -> str:
        return f"blocks.{layer}.attn.hook_z"

    @staticmethod
    def resid_name(layer: int) -> str:
        return f"blocks.{layer}.hook_resid_post"

    def hook_name(self, component: str, layer: int) -> str:
        """Where a component of ``layer`` is read and written: ``"head"`` (per-head outputs z,
        (batch, pos, H, d_head)) or ``"resid"`` (residual after the block, (batch, pos, d_model))."""
        if not 0 <= layer < self.shape.n_layers:
            raise ValueError(f"Layer {layer} is outside the model's {self.shape.n_layers} layers.")
        if component == "head":
            return self.z_name(layer)
        if component == "resid":
            return self.resid_name(layer)
        raise ValueError(f"Unknown component {component!r}: use 'head' or 'resid'.")

    @property
    def W_O(self) -> torch.Tensor:
        """(n_layers, n_heads, d_head, d_model), detached, cached."""
        if self._W_O is None:
            self._W_O = self.bridge.W_O.detach().clone()
        return self._W_O

    @property
    def b_O(self) -> torch.Tensor:
        """(n_layers, d_model): the output projection's bias, zeros for bias-free models."""
        if self._b_O is None:
            try:
                self._b_O = self.bridge.b_O.detach().clone()
            except AttributeError:  # the bridge exposes no b_O when the checkpoint has none
                self._b_O = torch.zeros(self.shape.n_layers, self.shape.d_model, device=self.W_O.device)
        return self._b_O

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Each head's write into the residual: (..., L, H, d_head) -> (..., L, H, d_model)."""
        return torch.einsum("...lhd,lhdm->...lhm", z, self.W_O.to(z.dtype))

    @torch.no_grad()
    def unembed(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors in the residual stream read out as the model reads its last residual state:
        the final norm, then the unembedding (the logit lens). (..., d_model) -> (..., vocab)."""
        return self.bridge.unembed(self.bridge.ln_final(x))

    # ------------------------------------------------------------------ reading

    def capture_z(self, store: dict[int, torch.Tensor], pos: int = -1, layers=None) -> list[Hook]:
        """Hooks that record z[:, pos] of every head, as store[layer] = (batch, H, d_head)."""
        hooks = []
        for layer in self._layers(layers):
            def read(z, hook, layer=layer):
                store[layer] = z[:, pos].detach()
                return z
            hooks.append((self.z_name(layer), read))
        return hooks

    def capture_resid(self, store: dict[int, torch.Tensor], pos: int = -1, layers=None) -> list[Hook]:
        """Hooks that record the residual after each layer at pos: store[layer] = (batch, d_model)."""
        hooks = []
        for layer in self._layers(layers):
            def read(x, hook, layer=layer):
                store[layer] = x[:, pos].detach()
                return x
            hooks.append((self.resid_name(layer), read))
        return hooks

    def _layers(self, layers) -> range | list[int]:
        return range(self.shape.n_layers) if layers is None else list(layers)

