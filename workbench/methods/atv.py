"""ATV: adaptive task vectors (Kang et al. 2025; docs/methods.md, "ATV").

A small model S writes each query its own vectors, one per layer of the target model:

1. S reads the zero-shot query prompt q and is pooled to one state (workbench.model.encoder):
       h = pool(S(q))                                                     (B, d_s)
2. A linear map, full or of rank r, gives one vector per target layer:
       v = reshape(h A B)      A: (d_s, r), B: (r, L * d_model)          (B, L, d_model)
       full rank:  v = reshape(h W),  W: (d_s, L * d_model)
   B (or W) starts at zero, so an untrained ATV leaves the model unchanged.
3. Intervention: lambda * v[l] is ADDED to the residual output of every layer l at the last
   prompt token of the query (and at every generated token with ``when="generated"``; at every
   position, prompt, teacher-forced answer and generated tokens, with ``when="all"``, as the
   paper does: then the fit runs whole prompts instead of cached prefixes).
4. Fit the map with Adam on the cross-entropy of the answer (``loss="answer"``: every answer
   token and the end-of-answer token, teacher-forced, as the paper trains; ``"first_token"``:
   up to the token that carries the answer) on zero-shot queries drawn from a MIXTURE of
   tasks, the target and S frozen; keep the step with the lowest loss on the tasks' selection
   queries, stopping once it stops improving.

By default S is frozen (its states are computed once per query), so a fit step costs what an
LTV step costs: the last prompt token and the answer tokens per query, from cached prefixes.
With ``train_encoder`` S's weights are fitted too (their own learning rate), S runs on every
batch, and its weights are saved with the run.
Unlike the other methods, one fit serves any query, of a task it was trained on or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.interventions import Deferred, Intervention, When, add_to_residual
from workbench.methods.base import Method, MethodConfig, saved
from workbench.methods.queries import prompt_batches, summed_loss
from workbench.methods.settings import retuned, setting
from workbench.methods.training import Checkpoint, LearnedConfig, Trace, learn
from workbench.model.encoder import DEFAULT_ENCODER, LoadedEncoder, load_encoder
from workbench.model.loading import LoadedModel

# Built-in tasks held out of the shipped ATV's training mixture: one of each kind (word
# relation, inflection, fact, number, spelling), none a language variant or an inverse of a
# training task (e.g. not english_german_number while english_french_number is trained on;
# last_letter's nearest trained task is first_letter: the same reading, the other end).
HELD_OUT = ("synonym", "present_gerund", "country_currency", "number_word_ordinal", "last_letter")


@dataclass(kw_only=True)
class AtvConfig(LearnedConfig):
    when: str = retuned(MethodConfig, "when", "last", choices=("last", "generated", "all"),
                        help="where the vectors act: the last prompt token, also every generated token, "
                        "or every position (all, as the paper does)")
    encoder: str = setting(DEFAULT_ENCODER,
                           "S: the embedded all-MiniLM-L6-v2, tiny-encoder, or any HF folder / name")
    train_encoder: bool = setting(False, "also fit S's weights (as the paper does), at encoder_lr; "
                                  "saved with the run")
    encoder_lr: float = setting(5e-5, "Adam learning rate of S's weights (with train_encoder)", above=0)
    rank: int = setting(16, "r of the map; 0: full rank (d_s x L * d_model)", minimum=0)
    scale: float = setting(1.0, "lambda: the vectors' scale")
    init_std: float = setting(0.02, "A ~ N(0, init_std^2); B (or W) starts at 0", minimum=0)
    loss: str = retuned(LearnedConfig, "loss", "answer")
    per_task: int = setting(60, "training queries per task at most (a balanced mixture)", minimum=1)
    select_per_task: int = setting(20, "selection queries per task at most (the early-stop loss)", minimum=1)
    steps: int = retuned(LearnedConfig, "steps", 1500)
    lr: float = retuned(LearnedConfig, "lr", 1e-3)
    eval_every: int = retuned(LearnedConfig, "eval_every", 50)


_ENCODERS: dict[tuple[str, str], LoadedEncoder] = {}


def encoder_for(name: str, device: torch.device) -> LoadedEncoder:
    """S, loaded once per process and device (frozen: no gradients)."""
    key = (name, str(device))
    if key not in _ENCODERS:
        encoder = load_encoder(name, device=device)
        encoder.model.requires_grad_(False)
        _ENCODERS[key] = encoder
    return _ENCODERS[key]


@torch.no_grad()
def query_states(encoder: LoadedEncoder, prompts: list[str], batch_size: int = 64) -> torch.Tensor:
    """h for every prompt: (N, d_s), S frozen."""
    return torch.cat(
        [encoder.encode(prompts[i : i + batch_size]) for i in range(0, len(prompts), batch_size)]
    )


def layer_vectors(h: torch.Tensor, A: torch.Tensor | None, B: torch.Tensor, n_layers: int) -> torch.Tensor:
    """v = reshape(h A B) (or reshape(h B) at full rank, B = W): (B, d_s) -> (B, L, d_model)."""
    low = h if A is None else h @ A  # (B, r) or (B, d_s)
    return (low @ B).view(len(h), n_layers, -1)  # (B, L, d_model)


def lora_parameters(model: LoadedModel, rank: int) -> int:
    """Parameters of a LoRA of the same rank on the target's query and value projections of
    every layer, the usual comparison: r (d_model + d_model) + r (d_model + n_kv_heads d_head)."""
    shape = model.heads.shape
    return rank * shape.n_layers * (2 * shape.d_model + shape.d_model + shape.n_kv_heads * shape.d_head)


@dataclass(kw_only=True, eq=False)
class AdaptiveTaskVector(Method):
    name = "ATV"
    title = "Adaptive task vectors"
    Config = AtvConfig
    several_tasks = True  # one fit on a mixture of tasks; it then serves any query
    mixture = True  # a long fit by default (its steps x every task): not a quick one-task fit
    tiny_settings = dict(encoder="tiny-encoder", rank=4, per_task=16, steps=3, eval_every=1, batch_size=8)

    A: torch.Tensor | None  # (d_s, r) at the best step; None at full rank
    B: torch.Tensor  # (r, L * d_model), or W: (d_s, L * d_model) at full rank
    trace: Trace
    n_layers: int
    n_train: int = 0  # training queries over all tasks
    encoder_state: dict[str, torch.Tensor] | None = saved(None, key="S")  # S's fitted weights (train_encoder)
    _encoder: LoadedEncoder | None = field(default=None, init=False, repr=False)

    def encoder(self, device: torch.device) -> LoadedEncoder:
        """S as this fit uses it: the shared frozen one, or a copy carrying the fitted weights."""
        if self.encoder_state is None:
            return encoder_for(self.config.encoder, device)
        if self._encoder is None or self._encoder.device != torch.device(device):
            encoder = load_encoder(self.config.encoder, device=device)
            missing = set(self.encoder_state) - set(dict(encoder.model.named_parameters()))
            try:
                if missing:
                    raise RuntimeError(f"unknown weights {sorted(missing)[:3]}")
                encoder.model.load_state_dict(self.encoder_state, strict=False)
            except RuntimeError as err:
                raise ValueError(
                    f"This ATV's trained S does not fit {self.config.encoder!r}: {err}"
                ) from None
            encoder.model.requires_grad_(False)
            self._encoder = encoder
        return self._encoder

    @classmethod
    def fit(cls, model, tasks, config=None, progress=None, checkpoint: str | Path | None = None,
            checkpoint_every: int = 100) -> AdaptiveTaskVector:
        """Fit the map on the mixture of ``tasks``. With ``checkpoint`` (a folder) the fit
        saves its state there every ``checkpoint_every`` steps and, run again with the same
        settings, tasks and model, resumes from it."""
        setup = cls.begin(model, tasks, config)
        config, template, rng, when, tasks = setup.config, setup.template, setup.rng, setup.when, setup.tasks
        cache = when is not When.ALL  # an edit at every position changes the prefix: no cached prefixes
        if config.train_encoder:  # a private copy of S whose weights the fit changes
            encoder = load_encoder(config.encoder, device=model.device)
            s_names, s_params = zip(*encoder.model.named_parameters())
        else:
            encoder, s_names, s_params = encoder_for(config.encoder, model.device), (), ()

        # the mixture: up to per_task training and select_per_task selection queries of every task
        train_pairs, select_pairs = [], []
        for task in tasks:
            pairs = setup.selections[task.name]
            chosen = rng.permutation(len(pairs.fit))[: config.per_task]
            train_pairs += [pairs.fit[i] for i in chosen]
            select_pairs += pairs.select[: config.select_per_task]
        order = rng.permutation(len(train_pairs))
        train_pairs = [train_pairs[i] for i in order]

        def cached(pairs, batch_size):
            """(query batch, its prompts, h or None when S is trained and runs every time)."""
            prompts = [template.format_query(x) for x, _ in pairs]
            batches = prompt_batches(model, prompts, [y for _, y in pairs], template.separator, batch_size,
                                     config.loss, cache=cache)
            chunks = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
            if config.train_encoder:
                return [(batch, chunk, None) for batch, chunk in zip(batches, chunks)]
            h = query_states(encoder, prompts).to(model.device)  # step 1: (N, d_s)
            return list(zip(batches, chunks, torch.split(h, batch_size)))

        def states(prompts, h):  # step 1 for one batch: (B, d_s)
            return encoder.encode(prompts).to(model.device) if h is None else h

        train, select = cached(train_pairs, config.batch_size), cached(select_pairs, 64)

        # step 2
        n_layers, d_model = model.heads.shape.n_layers, model.heads.shape.d_model
        d_s, width = encoder.d, n_layers * d_model
        if config.rank:
            A = (config.init_std * torch.randn(d_s, config.rank, generator=setup.generator)).to(model.device)
            A.requires_grad_(True)  # (d_s, r)
            B = torch.zeros(config.rank, width, device=model.device, requires_grad=True)  # (r, L * d_model)
            params = [A, B]
        else:
            A, B = None, torch.zeros(d_s, width, device=model.device, requires_grad=True)  # W
            params = [B]
        lrs = [config.lr] * len(params) + [config.encoder_lr] * len(s_params)
        n_map = len(params)
        params += [p.requires_grad_(True) for p in s_params]

        # step 3
        def intervention(h: torch.Tensor) -> Intervention:
            v = config.scale * layer_vectors(h, A, B, n_layers)  # (B, L, d_model)
            return Intervention("ATV", (add_to_residual(v, when=when, per_query=True),))

        # step 4
        def train_loss() -> torch.Tensor:
            batch, prompts, h = train[rng.integers(len(train))]
            return summed_loss(model, batch, intervention(states(prompts, h))) / len(batch)

        def valid_loss() -> float:
            return sum(summed_loss(model, batch, intervention(states(prompts, h))).item()
                       for batch, prompts, h in select) / len(select_pairs)

        if checkpoint is not None:
            fingerprint = {"config": config.as_dict(), "tasks": [t.name for t in tasks], "model": model.name}
            checkpoint = Checkpoint(Path(checkpoint), every=checkpoint_every, fingerprint=fingerprint)
        best, trace = learn(
            params, train_loss, valid_loss, config, progress, checkpoint=checkpoint, rng=rng, lrs=lrs
        )
        encoder.model.requires_grad_(False)
        return cls(
            tasks=[task.name for task in tasks],
            config=config,
            A=best[0] if config.rank else None,
            B=best[n_map - 1],
            encoder_state=dict(zip(s_names, best[n_map:])) if config.train_encoder else None,
            trace=trace,
            n_layers=n_layers,
            n_train=len(train_pairs),
            fit_seconds=setup.seconds(),
        )

    def vectors(self, model: LoadedModel, prompts: list[str]) -> torch.Tensor:
        """lambda * v for each prompt: (B, L, d_model) on the model's device."""
        h = query_states(self.encoder(model.device), prompts).to(model.device)
        if h.shape[1] != (self.B if self.A is None else self.A).shape[0]:
            raise ValueError(f"This ATV was fitted with a "
                             f"{(self.B if self.A is None else self.A).shape[0]}-wide S, but "
                             f"{self.config.encoder!r} gives {h.shape[1]}.")
        A = None if self.A is None else self.A.to(model.device)
        return self.config.scale * layer_vectors(h, A, self.B.to(model.device), self.n_layers)

    def intervention(self, task: str | None = None, when: When | str | None = None) -> Intervention:
        """The same for every task: each query's vectors come from the query itself (``task``
        is not checked: a task the fit never saw is the point of an unseen-task test)."""
        when = self._when(when)

        def build(model: LoadedModel, prompts: list[str], when: When):
            return (add_to_residual(self.vectors(model, prompts), when=when, per_query=True),)

        return Deferred(name=self.name, build=build, when=when, needs_prompts=True)

    def parameters(self) -> int:
        """The map's parameters (S's, when trained, are counted apart: :meth:`encoder_parameters`)."""
        return sum(t.numel() for t in (self.A, self.B) if t is not None)

    def encoder_parameters(self) -> int:
        return sum(t.numel() for t in (self.encoder_state or {}).values())

    def summary(self) -> dict:
        return {**super().summary(), "best_step": self.trace.best_step,
                "valid_loss": round(self.trace.best_valid_loss, 4), "parameters": self.parameters(),
                "trained_S_parameters": self.encoder_parameters(),
                "tasks": len(self.tasks), "n_train": self.n_train}

    # ------------------------------------------------------------------ run codec

    @classmethod
    def check_restored(cls, tensors, record, config) -> None:
        expected = {"A", "B"} if config.rank else {"B"}
        encoder_state = {k for k in tensors if k.startswith("S.")}
        if set(tensors) - encoder_state != expected:
            raise ValueError(
                f"An ATV run of rank {config.rank} holds {sorted(expected)}, not {sorted(tensors)}."
            )
        if bool(encoder_state) != config.train_encoder:
            raise ValueError("An ATV run holds S's weights exactly when S was trained (train_encoder).")
