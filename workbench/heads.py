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

Methods never spell hook names themselves: they ask :class:`HeadAccess` for hooks.
A hook is a pair ``(name, fn)`` as TransformerLens' ``run_with_hooks`` takes it; ``pos``
is the sequence index the hook acts on (``-1``: the last prompt token, with left padding).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

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

    # ------------------------------------------------------------------ writing

    def mix_z(self, alpha: torch.Tensor, target: torch.Tensor, pos: int = -1) -> list[Hook]:
        """z'[l,h] = (1 - alpha[l,h]) z[l,h] + alpha[l,h] target[l,h] at pos, every layer.

        alpha: (L, H); target: (L, H, d_head). Differentiable in both.
        """
        hooks = []
        for layer in range(self.shape.n_layers):
            a = alpha[layer][:, None]  # (H, 1)
            t = target[layer]  # (H, d_head)

            def mix(z, hook, a=a, t=t):  # z: (B, T, H, d_head)
                mixed = (1 - a) * z[:, pos] + a * t  # (B, H, d_head)
                return _put_at(z, pos, mixed)
            hooks.append((self.z_name(layer), mix))
        return hooks

    def add_resid(self, vectors: dict[int, torch.Tensor], pos: int = -1) -> list[Hook]:
        """Add vectors[layer] (d_model,) or (B, d_model) to the residual after layer, at pos."""
        def add(x, hook, v):
            return _put_at(x, pos, x[:, pos] + v)
        return [(self.resid_name(l), lambda x, hook, v=v: add(x, hook, v)) for l, v in vectors.items()]

    def replace_resid(self, layer: int, vector: torch.Tensor, pos: int = -1) -> list[Hook]:
        """Overwrite the residual after layer at pos with vector (d_model,) or (B, d_model)."""
        def put(x, hook):
            return _put_at(x, pos, vector.expand(x.shape[0], -1).to(x.dtype))
        return [(self.resid_name(layer), put)]

    def _layers(self, layers) -> range | list[int]:
        return range(self.shape.n_layers) if layers is None else list(layers)


def _put_at(x: torch.Tensor, pos: int, value: torch.Tensor) -> torch.Tensor:
    """x with x[:, pos] replaced by value, out of place (keeps autograd happy)."""
    onehot = torch.zeros(x.shape[1], dtype=torch.bool, device=x.device)
    onehot[pos] = True
    onehot = onehot.view(1, -1, *([1] * (x.dim() - 2)))
    return torch.where(onehot, value.unsqueeze(1).to(x.dtype), x)
