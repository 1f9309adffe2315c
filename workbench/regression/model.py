"""A small GPT-style transformer that regresses in context.

Input: xs (B, n, d) and ys (B, n). The sequence is interleaved and ends at the query:

    tokens = x_1, y_1, x_2, y_2, ..., x_{n-1}, y_{n-1}, x_n        (T = 2n - 1 tokens)

Each token is a vector in R^d (y becomes [y, 0, ..., 0]) and is embedded by one linear
read-in, plus a learned positional embedding. Pre-LayerNorm blocks (causal multi-head
attention, GELU MLP) follow; a final LayerNorm and a linear read-out give a scalar at
every token, and the ones at the x positions are the predictions: prediction k (0-based)
sees the k examples before x_{k+1}. ``ys[:, -1]`` is the query's target and never read.
The loss is the squared error averaged over every prefix (all n x positions).

The model is a TransformerLens ``HookedRootModule`` whose ``HookPoint`` names follow
TransformerLens' convention, so ``workbench.model.heads.HeadAccess`` reads it like the language
models: ``cfg.n_layers / n_heads / d_head / d_model``, ``W_O`` (L, H, d_head, d_model),
``b_O`` (L, d_model), ``blocks.{l}.attn.hook_z`` (B, T, H, d_head),
``blocks.{l}.hook_resid_post`` (B, T, d_model), and ``run_with_hooks(xs, ys, fwd_hooks=...)``.
Position -1 is the query x_n, which is HeadAccess' default position and the token the
intervention vocabulary's "last token" edits act on. :class:`LoadedRegressor` wraps a
trained model the way ``workbench.model.loading.LoadedModel`` wraps a language model
(``.heads``, ``.device``), so the method core's edits compile to hooks on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from workbench.model.heads import HeadAccess, Hook


@dataclass
class ModelConfig:
    n_dims: int = 5  # d: input dimension
    n_positions: int = 11  # n: the most (x, y) pairs a sequence holds, query included
    n_layers: int = 4
    n_heads: int = 4
    d_model: int = 128
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of n_heads {self.n_heads}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_ctx(self) -> int:
        return 2 * self.n_positions - 1  # x_1, y_1, ..., x_n

    def as_dict(self) -> dict:
        return asdict(self)


# ----------------------------------------------------------------------------- tokens


def interleave(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """x_1, [y_1, 0..0], ..., x_n: xs (B, n, d), ys (B, n) -> (B, 2n - 1, d)."""
    batch, n, d = xs.shape
    y_tokens = F.pad(ys[..., None], (0, d - 1))  # (B, n, d): [y, 0, ..., 0]
    tokens = torch.stack([xs, y_tokens], dim=2).reshape(batch, 2 * n, d)  # (B, 2n, d)
    return tokens[:, :-1]  # the last y is the query's answer: not an input


def x_positions(n: int) -> torch.Tensor:
    """Token indices of x_1, ..., x_n in the interleaved sequence: 0, 2, ..., 2n - 2."""
    return torch.arange(0, 2 * n - 1, 2)


# ----------------------------------------------------------------------------- blocks


class Attention(nn.Module):
    """Causal multi-head attention with per-head weights laid out as TransformerLens does."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        H, d_head, d_model = cfg.n_heads, cfg.d_head, cfg.d_model
        self.W_Q = nn.Parameter(torch.empty(H, d_model, d_head))
        self.W_K = nn.Parameter(torch.empty(H, d_model, d_head))
        self.W_V = nn.Parameter(torch.empty(H, d_model, d_head))
        self.b_Q = nn.Parameter(torch.zeros(H, d_head))
        self.b_K = nn.Parameter(torch.zeros(H, d_head))
        self.b_V = nn.Parameter(torch.zeros(H, d_head))
        self.W_O = nn.Parameter(torch.empty(H, d_head, d_model))
        self.b_O = nn.Parameter(torch.zeros(d_model))
        self.register_buffer("causal", torch.ones(cfg.n_ctx, cfg.n_ctx).tril().bool(), persistent=False)
        self.hook_q = HookPoint()  # (B, T, H, d_head)
        self.hook_k = HookPoint()  # (B, T, H, d_head)
        self.hook_v = HookPoint()  # (B, T, H, d_head)
        self.hook_pattern = HookPoint()  # (B, H, T_query, T_key)
        self.hook_z = HookPoint()  # (B, T, H, d_head): each head's output before W_O

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, T, d_model)
        T, d_head = x.shape[1], self.W_Q.shape[-1]
        q = self.hook_q(torch.einsum("btm,hmd->bthd", x, self.W_Q) + self.b_Q)  # (B, T, H, d_head)
        k = self.hook_k(torch.einsum("btm,hmd->bthd", x, self.W_K) + self.b_K)  # (B, T, H, d_head)
        v = self.hook_v(torch.einsum("btm,hmd->bthd", x, self.W_V) + self.b_V)  # (B, T, H, d_head)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d_head)  # (B, H, T, T)
        scores = scores.masked_fill(~self.causal[:T, :T], float("-inf"))
        pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, H, T, T)
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))  # (B, T, H, d_head)
        # sum_h z[h] @ W_O[h] + b_O, as one matmul over the flattened (H, d_head) axis
        return z.flatten(2) @ self.W_O.flatten(0, 1) + self.b_O  # (B, T, d_model)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model)
        self.fc_out = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model)
        self.hook_post = HookPoint()  # (B, T, mlp_ratio * d_model): after the GELU

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, d_model)
        return self.fc_out(self.hook_post(F.gelu(self.fc_in(x))))


class Block(nn.Module):
    """resid_mid = resid_pre + attn(LN(resid_pre)); resid_post = resid_mid + mlp(LN(resid_mid))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.hook_resid_pre = HookPoint()  # (B, T, d_model)
        self.hook_attn_out = HookPoint()  # (B, T, d_model): sum of the heads' writes plus b_O
        self.hook_resid_mid = HookPoint()  # (B, T, d_model)
        self.hook_mlp_out = HookPoint()  # (B, T, d_model)
        self.hook_resid_post = HookPoint()  # (B, T, d_model)

    def forward(self, resid: torch.Tensor) -> torch.Tensor:  # (B, T, d_model)
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid))))
        return self.hook_resid_post(resid + self.hook_mlp_out(self.mlp(self.ln2(resid))))


# ----------------------------------------------------------------------------- model


class RegressionTransformer(HookedRootModule):
    """xs (B, n, d), ys (B, n) -> predictions (B, n): y at every x position."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.read_in = nn.Linear(cfg.n_dims, cfg.d_model)
        self.pos_embed = nn.Parameter(torch.empty(cfg.n_ctx, cfg.d_model))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_final = nn.LayerNorm(cfg.d_model)
        self.read_out = nn.Linear(cfg.d_model, 1)
        self.hook_embed = HookPoint()  # (B, T, d_model): read-in of the tokens
        self.hook_pos_embed = HookPoint()  # (1, T, d_model)
        self._init_weights()
        self.setup()  # HookedRootModule: name every HookPoint for run_with_hooks

    def _init_weights(self) -> None:
        """GPT-2's: N(0, init_std), the residual writers (W_O, fc_out) scaled by 1/sqrt(2L)."""
        std = self.cfg.init_std
        for name, param in self.named_parameters():
            if param.dim() < 2:
                continue  # biases keep zero, LayerNorms keep (1, 0)
            scale = (2 * self.cfg.n_layers) ** -0.5 if name.endswith(("W_O", "fc_out.weight")) else 1.0
            nn.init.normal_(param, std=std * scale)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    # ------------------------------------------------------------------ forward

    def forward(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        n = xs.shape[1]
        if n > self.cfg.n_positions:
            raise ValueError(f"{n} points exceed the model's n_positions = {self.cfg.n_positions}")
        tokens = interleave(xs, ys)  # (B, T, d), T = 2n - 1
        T = tokens.shape[1]
        resid = self.hook_embed(self.read_in(tokens)) + self.hook_pos_embed(self.pos_embed[None, :T])
        for block in self.blocks:
            resid = block(resid)  # (B, T, d_model)
        out = self.read_out(self.ln_final(resid))[..., 0]  # (B, T)
        return out[:, x_positions(n)]  # (B, n): the prediction of y_k made at x_k

    def loss(self, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
        """Squared error averaged over the batch and every prefix (all n x positions)."""
        return (self(xs, ys) - ys).pow(2).mean()

    # ------------------------------------------------------------------ per-head view

    @property
    def W_O(self) -> torch.Tensor:
        """(n_layers, n_heads, d_head, d_model): each head's block of the output projection."""
        return torch.stack([block.attn.W_O for block in self.blocks])

    @property
    def b_O(self) -> torch.Tensor:
        """(n_layers, d_model): the output projection's bias."""
        return torch.stack([block.attn.b_O for block in self.blocks])


# ----------------------------------------------------------------------------- as the method core sees it


@dataclass(eq=False)
class LoadedRegressor:
    """A trained regression transformer, frozen, with per-head access: what
    :meth:`workbench.interventions.Edit.hooks` and the methods need of a model."""

    module: RegressionTransformer
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    heads: HeadAccess = field(init=False)

    def __post_init__(self) -> None:
        self.module.eval().requires_grad_(False)
        self.module.to(self.device)
        self.heads = HeadAccess(self.module)

    @property
    def cfg(self) -> ModelConfig:
        return self.module.cfg

    def predict(self, xs: torch.Tensor, ys: torch.Tensor, hooks: Sequence[Hook] = ()) -> torch.Tensor:
        """Predictions (B, n) with ``hooks`` attached for this one forward pass."""
        return self.module.run_with_hooks(xs.to(self.device), ys.to(self.device), fwd_hooks=list(hooks))
