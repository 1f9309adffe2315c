"""Task families: every sequence in a batch draws its own function f and n inputs x, and
the model sees (x_1, f(x_1)), ..., (x_n, f(x_n)).

Inputs: x ~ N(0, I_d), or x = z @ S with z ~ N(0, I_d) for the skewed covariance
Sigma = S^T S (eigenvalues proportional to 1/i^2 in a fixed random basis, trace d).

Functions (B sequences, d input dimensions):

* linear:         w ~ N(0, I_d), y = x . w                                   Var(y) = d
* sparse_linear:  w ~ N(0, I_d) with all but ``sparsity`` coordinates zeroed   Var(y) = sparsity
* relu_net:       y = sum_j a_j relu(W_j . x), W_j ~ N(0, I_d), a_j ~ N(0, 2/hidden),
                  hidden = 100 units; E[relu(g)^2] = Var(g)/2 makes Var(y) = d, as linear

Options: ``noise_std`` adds N(0, sigma^2) to every y; ``orthogonal_query`` replaces the
last input by its component orthogonal to the span of the earlier inputs, rescaled to
its original norm (needs n - 1 < d, or nothing would be left); ``active_dims`` zeroes the
input coordinates past it (a training curriculum's easier tasks, as in Garg et al.).

Everything is drawn from one ``torch.Generator``, so a seed reproduces a batch exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import cache
from typing import NamedTuple

import torch

FAMILIES = ("linear", "sparse_linear", "relu_net")
SKEW_BASIS_SEED = 1234  # fixes the skewed covariance's basis: the same Sigma for every run


class Batch(NamedTuple):
    xs: torch.Tensor  # (B, n, d)
    ys: torch.Tensor  # (B, n)


@dataclass
class FamilyConfig:
    family: str = "linear"  # one of FAMILIES
    n_dims: int = 5  # d
    n_points: int = 11  # n: in-context examples plus the query
    noise_std: float = 0.0  # sigma of the noise added to y
    skewed: bool = False  # x = z @ S with the fixed skewed covariance instead of N(0, I)
    orthogonal_query: bool = False  # the last x is orthogonal to the span of the others
    sparsity: int = 3  # sparse_linear: nonzero coordinates of w
    hidden: int = 100  # relu_net: hidden units
    active_dims: int | None = None  # x coordinates past this are zero (None: all d)

    def __post_init__(self) -> None:
        if self.active_dims is not None and not 0 < self.active_dims <= self.n_dims:
            raise ValueError(f"active_dims must lie in 1..{self.n_dims}, got {self.active_dims}")
        if self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; choose from {FAMILIES}")
        dims = self.active_dims or self.n_dims
        if self.orthogonal_query and self.n_points - 1 >= dims:
            raise ValueError(f"an orthogonal query needs n_points - 1 < dims, got {self.n_points}, {dims}")
        if self.family == "sparse_linear" and not 0 < self.sparsity <= self.n_dims:
            raise ValueError(f"sparsity must lie in 1..{self.n_dims}, got {self.sparsity}")

    def as_dict(self) -> dict:
        return asdict(self)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the one source of randomness of the samplers."""
    return torch.Generator().manual_seed(seed)


def sample_batch(config: FamilyConfig, batch_size: int, gen: torch.Generator) -> Batch:
    """B sequences of n (x, y) pairs, each with its own function of ``config.family``."""
    xs = sample_inputs(config, batch_size, gen)  # (B, n, d)
    if config.family == "linear":
        ys = linear(xs, linear_weights(batch_size, config.n_dims, gen))
    elif config.family == "sparse_linear":
        ys = linear(xs, sparse_weights(batch_size, config.n_dims, config.sparsity, gen))
    else:
        ys = relu_net(xs, *relu_net_weights(batch_size, config.n_dims, config.hidden, gen))
    if config.noise_std > 0:
        ys = ys + config.noise_std * torch.randn(ys.shape, generator=gen)
    return Batch(xs, ys)  # (B, n, d), (B, n)


# ----------------------------------------------------------------------------- inputs


def sample_inputs(config: FamilyConfig, batch_size: int, gen: torch.Generator) -> torch.Tensor:
    """(B, n, d) inputs: N(0, I), or N(0, Sigma) when skewed; coordinates past
    ``config.active_dims`` zeroed; the last one made orthogonal to the others when
    ``config.orthogonal_query``."""
    d = config.n_dims
    xs = torch.randn(batch_size, config.n_points, d, generator=gen)  # (B, n, d)
    if config.skewed:
        xs = xs @ skewed_covariance_root(d)  # (B, n, d) @ (d, d): Cov(x) = S^T S
    if config.active_dims is not None and config.active_dims < d:
        xs[..., config.active_dims :] = 0.0
    if config.orthogonal_query:
        xs = torch.cat([xs[:, :-1], orthogonal_to_context(xs[:, :-1], xs[:, -1])[:, None]], dim=1)
    return xs


@cache
def skewed_covariance_root(d: int) -> torch.Tensor:
    """S (d, d) with S^T S = Q diag(lambda) Q^T, lambda_i proportional to 1/i^2, trace d,
    and Q a random rotation fixed by SKEW_BASIS_SEED."""
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=generator(SKEW_BASIS_SEED)))  # (d, d) orthogonal
    eigenvalues = 1.0 / torch.arange(1, d + 1, dtype=torch.float32) ** 2  # (d,)
    eigenvalues = eigenvalues * d / eigenvalues.sum()  # trace d, like the identity
    return eigenvalues.sqrt()[:, None] * q.T  # diag(sqrt(lambda)) @ Q^T


def orthogonal_to_context(context: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
    """The query minus its projection on span(context), rescaled to the query's norm.

    context: (B, k, d) with k < d; query: (B, d) -> (B, d).
    """
    basis, _ = torch.linalg.qr(context.transpose(1, 2))  # (B, d, k): orthonormal columns
    inside = basis @ (basis.transpose(1, 2) @ query[..., None])  # (B, d, 1)
    outside = query - inside[..., 0]  # (B, d)
    return outside * (query.norm(dim=-1, keepdim=True) / outside.norm(dim=-1, keepdim=True))


# ----------------------------------------------------------------------------- functions


def linear_weights(batch_size: int, d: int, gen: torch.Generator) -> torch.Tensor:
    """w ~ N(0, I_d) per sequence: (B, d)."""
    return torch.randn(batch_size, d, generator=gen)


def linear(xs: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """y = x . w per sequence: xs (B, n, d), w (B, d) -> (B, n)."""
    return (xs @ w[..., None])[..., 0]


def sparse_weights(batch_size: int, d: int, sparsity: int, gen: torch.Generator) -> torch.Tensor:
    """N(0, I_d) weights with exactly ``sparsity`` nonzero coordinates, chosen uniformly: (B, d)."""
    w = torch.randn(batch_size, d, generator=gen)  # (B, d)
    kept = torch.rand(batch_size, d, generator=gen).argsort(dim=-1)[:, :sparsity]  # (B, s) random coordinates
    mask = torch.zeros(batch_size, d).scatter_(1, kept, 1.0)  # (B, d) with s ones per row
    return w * mask


def relu_net_weights(
    batch_size: int, d: int, hidden: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """First layer W (B, hidden, d) ~ N(0, 1) and read-out a (B, hidden) ~ N(0, 2/hidden)."""
    first = torch.randn(batch_size, hidden, d, generator=gen)
    readout = torch.randn(batch_size, hidden, generator=gen) * (2.0 / hidden) ** 0.5
    return first, readout


def relu_net(xs: torch.Tensor, first: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """y = relu(x W^T) a per sequence: xs (B, n, d) -> (B, n)."""
    hidden = torch.relu(xs @ first.transpose(1, 2))  # (B, n, hidden)
    return (hidden @ readout[..., None])[..., 0]  # (B, n)
