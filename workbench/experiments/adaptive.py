"""ATV one query at a time: what the adaptive vectors of a single query are, and what they do.

An ATV fit (:class:`workbench.methods.atv.AdaptiveTaskVector`) writes each query its own
vectors, one per layer of the target model: v = lambda * reshape(h A B), (L, d_model)
per query. This module looks at one query's v:

* :func:`steered`: the query's answer under any number of vector sets at once (one batched
  greedy decoding, scored by :func:`workbench.experiments.evaluation.evaluate` when the
  query has a gold answer) and the probability of the answer's first token that carries it;
  on it stand :func:`answers` (with and without the vectors), :func:`scale_sweep` (lambda
  scaled), :func:`layer_ablation` (one layer's vector removed at a time) and :func:`swap`
  (another query's vectors);
* :func:`layer_norms`: ||v[l]|| per layer;
* :func:`task_mean_vectors`, :func:`reference_vectors`, :func:`task_similarity`,
  :func:`centred_task_similarity`, :func:`similarity_to_tasks`, :func:`task_match`: the
  cosine of each layer's v[l] to each task's mean ATV vector and
  to its TV / FV / LTV vectors at the same layer ("which task does this query look like");
* :func:`logit_lens`: the top tokens of each v[l] read through the final norm and the
  unembedding.

A query is the raw input x (``"hot"``); its prompt is the fit's template's zero-shot query
(``"Q: hot\\nA:"``). Vector tensors are on the model's device. Figures of all this are in
``analyses/figures/adaptive.py``; the app's page is ``pages/adaptive.py``.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from workbench.experiments.evaluation import evaluate
from workbench.interventions import Intervention, When, add_to_residual
from workbench.methods import Method
from workbench.methods.atv import AdaptiveTaskVector
from workbench.methods.queries import answer_probability, prompt_batches
from workbench.model import inference
from workbench.model.loading import LoadedModel
from workbench.scoring import normalise
from workbench.tasks.prompts import get_template
from workbench.tasks.task import Task, TaskSplits

DEFAULT_SCALES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)  # multiples of the fit's lambda
NO_ANSWER_TOKENS = 16  # greedy tokens for a typed query (no gold answer to size them by)
MEAN, CENTRED = "ATV mean", "ATV mean, centred"  # references of task_similarity
SCORES = ["first_token_correct", "prefix_match", "exact_match", "target_prob"]  # with a gold answer


# ----------------------------------------------------------------------------- the vectors


def query_prompt(fit: AdaptiveTaskVector, query: str) -> str:
    """The zero-shot prompt of ``query`` in the fit's template."""
    return get_template(fit.config.template).format_query(query)


def atv_vectors(
    model: LoadedModel, fit: AdaptiveTaskVector, queries: Sequence[str], scale: float | None = None
) -> torch.Tensor:
    """lambda * v of each query: (B, L, d_model). ``scale``: lambda (default: the fit's)."""
    if scale is None:
        return fit.vectors(model, [query_prompt(fit, q) for q in queries])
    at_scale = copy.copy(fit)
    at_scale.config = dataclasses.replace(fit.config, scale=float(scale))
    return at_scale.vectors(model, [query_prompt(fit, q) for q in queries])


def layer_norms(vectors: torch.Tensor) -> pd.DataFrame:
    """||v[l]|| of one query's vectors (L, d_model): columns layer, norm."""
    norms = torch.linalg.norm(vectors.float(), dim=-1).cpu()  # (L,)
    return pd.DataFrame({"layer": range(len(norms)), "norm": norms.numpy()})


# ----------------------------------------------------------------------------- answers under vector sets


def steered(
    model: LoadedModel,
    fit: AdaptiveTaskVector,
    query: str,
    vectors: torch.Tensor,
    labels: Sequence[str],
    answer: str | None = None,
    *,
    case_sensitive: bool = False,
    task: str = "typed",
) -> pd.DataFrame:
    """The query answered once per vector set: ``vectors`` (N, L, d_model) added to the
    residual after every layer (as the fit's intervention does, ``when`` included), in one
    batch of N copies of the query's prompt. A set of zeros is the unsteered model.

    One row per set, in order: ``variant`` (its label) and ``prediction``; with a gold
    ``answer``, the three answer metrics of :func:`workbench.experiments.evaluation.evaluate`
    (first_token_correct, prefix_match, exact_match) and ``target_prob``: the probability
    of the answer's tokens up to its first token that carries it, teacher-forced (the
    probability of that token itself when the answer's first token carries it)."""
    if len(labels) != len(vectors):
        raise ValueError(f"{len(vectors)} vector sets but {len(labels)} labels.")
    n = len(vectors)
    intervention = Intervention(
        "ATV", (add_to_residual(vectors, when=When.parse(fit.config.when), per_query=True),)
    )
    template = get_template(fit.config.template)
    if answer is None:
        gen = inference.generate(
            model, [template.format_query(query)] * n, intervention, max_new_tokens=NO_ANSWER_TOKENS
        )
        return pd.DataFrame(
            {"variant": list(labels), "prediction": [normalise(t, case_sensitive) for t in gen.texts]}
        )
    pairs = [(query, answer)] * n
    one_query = Task(task, pairs, case_sensitive=case_sensitive, fixed_splits=TaskSplits(pairs, pairs, pairs))
    rows = evaluate(
        model, one_query, template=template, intervention=intervention, method="ATV", batch_size=n
    )
    (batch,) = prompt_batches(model, [template.format_query(query)] * n, [answer] * n, template.separator, n)
    rows["target_prob"] = answer_probability(model, batch, intervention).cpu().numpy()
    rows.insert(0, "variant", list(labels))
    return rows[
        ["variant", "input", "target", "prediction", *SCORES, "first_token_target", "first_token_pred"]
    ]


def answers(
    model: LoadedModel,
    fit: AdaptiveTaskVector,
    query: str,
    answer: str | None = None,
    *,
    scale: float | None = None,
    case_sensitive: bool = False,
) -> pd.DataFrame:
    """The query's answer without the vectors (variant ``"zero-shot"``) and with them
    (``"ATV"``, at lambda ``scale``, default the fit's): :func:`steered` rows."""
    v = atv_vectors(model, fit, [query], scale)  # (1, L, d_model)
    vectors = torch.cat([torch.zeros_like(v), v])  # (2, L, d_model)
    return steered(model, fit, query, vectors, ["zero-shot", "ATV"], answer, case_sensitive=case_sensitive)


def scale_sweep(
    model: LoadedModel,
    fit: AdaptiveTaskVector,
    query: str,
    scales: Sequence[float],
    answer: str | None = None,
    *,
    case_sensitive: bool = False,
) -> pd.DataFrame:
    """The query answered with its vectors at each lambda of ``scales`` (0: no vectors):
    :func:`steered` rows with a ``scale`` column."""
    unit = atv_vectors(model, fit, [query], 1.0)[0]  # (L, d_model): v at lambda = 1
    vectors = torch.stack([float(s) * unit for s in scales])  # (N, L, d_model)
    rows = steered(
        model, fit, query, vectors, [f"lambda {s:g}" for s in scales], answer, case_sensitive=case_sensitive
    )
    rows.insert(1, "scale", [float(s) for s in scales])
    return rows


def layer_ablation(
    model: LoadedModel,
    fit: AdaptiveTaskVector,
    query: str,
    answer: str | None = None,
    *,
    scale: float | None = None,
    case_sensitive: bool = False,
) -> pd.DataFrame:
    """The query answered with every layer's vector (``ablated`` "none"), then with one
    layer's vector removed at a time (``"layer l"``, ``layer`` l), then with all removed
    (``"all"``, the unsteered model): :func:`steered` rows with ``ablated`` and ``layer``."""
    v = atv_vectors(model, fit, [query], scale)[0]  # (L, d_model)
    n_layers = len(v)
    keep = torch.ones(n_layers + 2, n_layers, 1, device=v.device, dtype=v.dtype)  # (N, L, 1)
    for layer in range(n_layers):
        keep[1 + layer, layer] = 0
    keep[-1] = 0
    labels = ["none", *(f"layer {layer}" for layer in range(n_layers)), "all"]
    rows = steered(model, fit, query, keep * v, labels, answer, case_sensitive=case_sensitive)
    rows.insert(1, "ablated", labels)
    rows.insert(2, "layer", pd.array([pd.NA, *range(n_layers), pd.NA], dtype="Int64"))
    return rows


def swap(
    model: LoadedModel,
    fit: AdaptiveTaskVector,
    query: str,
    other: str,
    answer: str | None = None,
    *,
    scale: float | None = None,
    case_sensitive: bool = False,
) -> pd.DataFrame:
    """The query answered with no vectors, its own, and ``other``'s (a query of another
    task, say): :func:`steered` rows with ``vectors_of`` ("none", query, other)."""
    v = atv_vectors(model, fit, [query, other], scale)  # (2, L, d_model)
    vectors = torch.cat([torch.zeros_like(v[:1]), v])  # (3, L, d_model)
    labels = ["no vectors", "own vectors", "other query's vectors"]
    rows = steered(model, fit, query, vectors, labels, answer, case_sensitive=case_sensitive)
    rows.insert(1, "vectors_of", ["none", query, other])
    return rows


# ----------------------------------------------------------------------------- which task does it look like


def task_mean_vectors(
    model: LoadedModel,
    fit: AdaptiveTaskVector,
    task: Task,
    limit: int = 50,
    split: str = "test",
    seed: int = 0,
) -> torch.Tensor:
    """The mean of v over up to ``limit`` queries of ``task``'s ``split``, at lambda = 1
    (cosines do not depend on lambda): (L, d_model). Depends only on the fit and the task,
    so a caller can keep it (the page caches it per run and task)."""
    queries = [x for x, _ in task.split(seed)[split][:limit]]
    if not queries:
        raise ValueError(f"Task {task.name!r} has no {split} queries.")
    total = None
    for start in range(0, len(queries), 64):
        v = atv_vectors(model, fit, queries[start : start + 64], 1.0).float()  # (b, L, d_model)
        total = v.sum(0) if total is None else total + v.sum(0)
    return total / len(queries)  # (L, d_model)


def reference_vectors(fit: Method, model: LoadedModel) -> torch.Tensor:
    """A single-task method's vector at each layer, to compare with ATV's: (L, d_model), NaN at
    layers where it has none (the method's optional verb ``per_layer_vectors``; methods that
    offer it: :func:`reference_methods`)."""
    if not fit.offers("per_layer_vectors"):
        raise ValueError(f"No per-layer vectors for {fit.name}: use one of {', '.join(reference_methods())}.")
    return fit.per_layer_vectors(model)


def reference_methods() -> list[str]:
    """The registered methods whose fits have per-layer vectors to compare with ATV's."""
    from workbench.methods import METHODS

    return [name for name, method in METHODS.items() if method.offers("per_layer_vectors")]


def task_similarity(
    vectors: torch.Tensor, references: Mapping[tuple[str, str], torch.Tensor]
) -> pd.DataFrame:
    """Cosine of one query's v[l] (L, d_model) to each reference's vector at the same layer.
    ``references``: (task, reference) -> (L, d_model), e.g. ("antonym", "ATV mean") or
    ("antonym", "FV"); NaN rows (no vector at that layer) give no row. Columns task,
    reference, layer, cosine."""
    rows = []
    v = vectors.float()
    for (task, reference), other in references.items():
        cosine = torch.nn.functional.cosine_similarity(v, other.to(v.device).float(), dim=-1)  # (L,)
        for layer, value in enumerate(cosine.tolist()):
            if not torch.isnan(other[layer]).any():
                rows.append({"task": task, "reference": reference, "layer": layer, "cosine": value})
    return pd.DataFrame(rows, columns=["task", "reference", "layer", "cosine"])


def centred_task_similarity(vectors: torch.Tensor, means: Mapping[str, torch.Tensor]) -> pd.DataFrame:
    """:func:`task_similarity` to each task's mean ATV vector after the average of the task
    means is taken out of both (reference ``"ATV mean, centred"``). ATV's vectors share a
    large common part (every query's v is close to every task mean), so the plain cosine
    is near 1 for all tasks; the centred one shows which task's own direction v leans to.
    Needs two task means or more. ``means``: task -> (L, d_model)."""
    if len(means) < 2:
        raise ValueError("Centring needs the mean vectors of two tasks or more.")
    centre = torch.stack([m.float() for m in means.values()]).mean(0)  # (L, d_model)
    references = {(task, CENTRED): m.float() - centre for task, m in means.items()}
    return task_similarity(vectors.float() - centre.to(vectors.device), references)


def similarity_to_tasks(
    vectors: torch.Tensor,
    means: Mapping[str, torch.Tensor],
    methods: Mapping[tuple[str, str], torch.Tensor] | None = None,
) -> pd.DataFrame:
    """Everything "which task does this query look like" shows, as one
    :func:`task_similarity` frame: one query's v (L, d_model) against each task's mean ATV
    vector (``means``: task -> (L, d_model); reference ``"ATV mean"``), the same centred
    (:func:`centred_task_similarity`, with two tasks or more), and ``methods``:
    (task, method) -> :func:`reference_vectors`."""
    references = {(task, MEAN): m for task, m in means.items()} | dict(methods or {})
    frames = [task_similarity(vectors, references)]
    if len(means) >= 2:
        frames.append(centred_task_similarity(vectors, means))
    return pd.concat(frames, ignore_index=True)


def task_match(similarity: pd.DataFrame) -> pd.DataFrame:
    """Mean cosine over layers per (task, reference) of :func:`task_similarity`, best first
    within each reference: columns task, reference, cosine, layers."""
    table = similarity.groupby(["reference", "task"], sort=False)["cosine"].agg(cosine="mean", layers="size")
    table = table.reset_index().sort_values(["reference", "cosine"], ascending=[True, False], kind="stable")
    return table[["task", "reference", "cosine", "layers"]].reset_index(drop=True)


# ----------------------------------------------------------------------------- logit lens


def logit_lens(model: LoadedModel, vectors: torch.Tensor, k: int = 10) -> pd.DataFrame:
    """The top ``k`` tokens of each layer's vector (L, d_model) read out through the final
    norm and the unembedding (``HeadAccess.unembed``), as if it were the last residual state:
    one row per (layer, rank), columns layer, rank, token_id, token, logit, prob."""
    logits = model.heads.unembed(vectors.to(model.device)).float()  # (L, vocab)
    probs = logits.softmax(-1)
    top = logits.topk(k, dim=-1)  # (L, k)
    rows = []
    for layer in range(len(vectors)):
        for rank, (token_id, logit) in enumerate(
            zip(top.indices[layer].tolist(), top.values[layer].tolist())
        ):
            rows.append({
                "layer": layer, "rank": rank, "token_id": token_id,
                "token": model.tokenizer.decode([token_id]),
                "logit": logit, "prob": float(probs[layer, token_id]),
            })  # fmt: skip
    return pd.DataFrame(rows)
