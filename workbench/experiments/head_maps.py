"""Per-head maps: one value per (layer, head), and how maps compare.

Any (L, H) map works: SITE's head selection alpha, a function vector's indirect effects,
LTV's weights (docs/methods.md). Figures of these live in ``analyses/figures/head_maps.py``.

* :func:`as_map`: a (L, H) float array from a tensor, array or nested list;
* :func:`alpha_summary`: how binary a selection ended (near 0, near 1, in between);
* :func:`head_across_tasks`: one head's value in every task's map, and its rank in each;
* :func:`rank_correlation`, :func:`top_k_overlap`, :func:`compare_maps`: how alike the maps
  of several methods are (Spearman over all heads; shared top-k heads);
* :func:`maps_table`: several maps as one long table, for export.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from workbench.methods.selection import top_heads

SELECTED = 0.5  # a head counts as selected when alpha > 0.5


def as_map(values: torch.Tensor | np.ndarray | Sequence) -> np.ndarray:
    """A (L, H) float64 array from a tensor (any device / dtype), array or nested list."""
    if isinstance(values, torch.Tensor):
        values = values.detach().float().cpu().numpy()
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"A head map is (layers, heads); got shape {array.shape}.")
    return array


def alpha_summary(alpha: torch.Tensor | np.ndarray, low: float = 0.1, high: float = 0.9) -> dict:
    """How binary the head selection ended: fractions of heads with alpha < ``low``, > ``high``
    and in between, the mean alpha, and the number of heads with alpha > 0.5."""
    a = as_map(alpha)
    n = a.size
    below, above = float((a < low).sum()) / n, float((a > high).sum()) / n
    return {
        "n_heads": int(n),
        "frac_below": below,
        "frac_above": above,
        "frac_between": 1.0 - below - above,
        "frac_extreme": below + above,
        "mean": float(a.mean()),
        "n_selected": int((a > SELECTED).sum()),
        "low": low,
        "high": high,
    }


def head_across_tasks(maps: Mapping[str, torch.Tensor | np.ndarray], layer: int, head: int) -> pd.DataFrame:
    """One head's value in each task's map, sorted by value: columns task, value, rank (1 = the
    highest of the task's L*H heads; ties share the best rank), n_heads, selected (> 0.5)."""
    rows = []
    for task, values in maps.items():
        a = as_map(values)
        if not (0 <= layer < a.shape[0] and 0 <= head < a.shape[1]):
            raise ValueError(f"Head ({layer}, {head}) is outside task {task!r}'s map of shape {a.shape}.")
        value = a[layer, head]
        rows.append(
            {
                "task": task,
                "value": float(value),
                "rank": int((a > value).sum()) + 1,
                "n_heads": int(a.size),
                "selected": bool(value > SELECTED),
            }
        )
    frame = pd.DataFrame(rows, columns=["task", "value", "rank", "n_heads", "selected"])
    return frame.sort_values(["value", "task"], ascending=[False, True], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- maps of several methods


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a flat array, ties given their average rank."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.arange(1, values.size + 1)
    unique, inverse = np.unique(values, return_inverse=True)
    if unique.size < values.size:  # average the ranks within each tie
        ranks = (np.bincount(inverse, ranks) / np.bincount(inverse))[inverse]
    return ranks


def rank_correlation(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Spearman's rank correlation of two (L, H) maps over all heads (NaN if one is constant)."""
    x, y = as_map(a).ravel(), as_map(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"The maps have different shapes: {as_map(a).shape} vs {as_map(b).shape}.")
    rx, ry = _ranks(x) - (x.size + 1) / 2, _ranks(y) - (y.size + 1) / 2
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / denominator) if denominator > 0 else float("nan")


def top_k_overlap(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, k: int) -> float:
    """|top-k heads of a  &  top-k heads of b| / k."""
    if k < 1:
        raise ValueError("k must be at least 1.")
    x, y = (torch.as_tensor(as_map(m)) for m in (a, b))
    k = min(k, x.numel())
    return len(set(top_heads(x, k)) & set(top_heads(y, k))) / k


def maps_table(maps: Mapping[str, torch.Tensor | np.ndarray], value: str = "value") -> pd.DataFrame:
    """Long table of several (L, H) maps: columns map, layer, head, ``value``."""
    frames = []
    for name, values in maps.items():
        z = as_map(values)
        layer, head = np.meshgrid(np.arange(z.shape[0]), np.arange(z.shape[1]), indexing="ij")
        frames.append(
            pd.DataFrame({"map": name, "layer": layer.ravel(), "head": head.ravel(), value: z.ravel()})
        )
    return (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["map", "layer", "head", value])
    )


def compare_maps(maps: Mapping[str, torch.Tensor | np.ndarray], k: int = 10) -> pd.DataFrame:
    """Every pair of maps (e.g. method -> relevance map of one task): columns a, b,
    spearman, top_k_overlap, k, and the overlap two random head sets would have on average
    (k / n_heads), as the chance level."""
    names = list(maps)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            n = as_map(maps[a]).size
            rows.append(
                {
                    "a": a,
                    "b": b,
                    "spearman": rank_correlation(maps[a], maps[b]),
                    "top_k_overlap": top_k_overlap(maps[a], maps[b], k),
                    "k": min(k, n),
                    "chance_overlap": min(k, n) / n,
                }
            )
    return pd.DataFrame(rows, columns=["a", "b", "spearman", "top_k_overlap", "k", "chance_overlap"])
