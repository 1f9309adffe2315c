"""ATV on tiny models (tiny-llama as the target, a tiny random BERT as S): zero vectors
change nothing, the shapes per layer, training lowers the loss, the run round trip."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from workbench.methods.atv import AdaptiveTaskVector, AtvConfig, layer_vectors, lora_parameters
from workbench.methods.queries import prompt_batches, summed_loss
from workbench.model.encoder import load_encoder
from workbench.model.loading import load_model
from workbench.store.codec import from_run, to_run
from workbench.store.runs import RunError, RunStore
from workbench.tasks.files import load_task
from workbench.tasks.prompts import get_template

TINY = AdaptiveTaskVector.tiny_settings


@pytest.fixture(scope="module")
def tasks():
    return [load_task("antonym"), load_task("uppercase")]


@pytest.fixture(scope="module")
def untrained(tiny_llama, tasks):
    return AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**{**TINY, "steps": 1, "lr": 1e-12}))


def _batch(model, pairs, objective="answer"):
    template = get_template("qa")
    prompts = [template.format_query(x) for x, _ in pairs]
    (batch,) = prompt_batches(
        model, prompts, [y for _, y in pairs], template.separator, len(pairs), objective
    )
    return prompts, batch


def test_zero_vectors_leave_the_logits_unchanged(tiny_llama, tasks, untrained):
    assert untrained.B.abs().max() < 1e-6  # B starts at zero (and an lr of 1e-12 keeps it there)
    prompts, batch = _batch(tiny_llama, tasks[0].split(0)["test"][:4])
    edited = batch.logits(tiny_llama, untrained.intervention().for_prompts(tiny_llama, prompts))
    torch.testing.assert_close(edited, batch.logits(tiny_llama))


def test_each_query_gets_one_vector_per_layer(tiny_llama, tasks):
    fit = AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**TINY))
    shape = tiny_llama.heads.shape
    prompts = ["Q: hot\nA:", "Q: cat\nA:", "Q: a much longer query\nA:"]
    v = fit.vectors(tiny_llama, prompts)
    assert v.shape == (3, shape.n_layers, shape.d_model)
    assert not torch.allclose(v[0], v[1])  # adaptive: the query decides its vectors
    torch.testing.assert_close(fit.vectors(tiny_llama, prompts[:1])[0], v[0], atol=1e-5, rtol=1e-5)
    h = torch.randn(2, 16)
    A, B = torch.randn(16, 4), torch.randn(4, shape.n_layers * shape.d_model)
    torch.testing.assert_close(
        layer_vectors(h, A, B, shape.n_layers)[1, 2], (h[1] @ A @ B)[2 * shape.d_model : 3 * shape.d_model]
    )
    full = AdaptiveTaskVector.fit(tiny_llama, tasks[:1], AtvConfig(**{**TINY, "rank": 0}))
    assert full.A is None and full.B.shape == (16, shape.n_layers * shape.d_model)
    assert fit.parameters() == 16 * 4 + 4 * shape.n_layers * shape.d_model
    assert lora_parameters(tiny_llama, 4) == 4 * shape.n_layers * (
        3 * shape.d_model + shape.n_kv_heads * shape.d_head
    )


def test_training_lowers_the_loss_on_a_task(tiny_llama):
    uppercase = load_task("uppercase")
    config = AtvConfig(**{**TINY, "steps": 40, "eval_every": 10, "lr": 1e-2, "per_task": 40, "patience": 10})
    fit = AdaptiveTaskVector.fit(tiny_llama, [uppercase], config)
    history = fit.trace.history
    assert fit.trace.best_valid_loss < history["valid_loss"].iloc[0] - 0.1  # step 0 is the untrained map
    prompts, batch = _batch(tiny_llama, uppercase.split(0)["test"][:8])
    trained = summed_loss(tiny_llama, batch, fit.intervention().for_prompts(tiny_llama, prompts)).item()
    assert trained < summed_loss(tiny_llama, batch).item()  # held-out queries too


def test_a_run_round_trips_and_a_mismatch_is_an_error(tiny_llama, tasks, tmp_path):
    fit = AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**TINY))
    store = RunStore(tmp_path)
    run_id = store.save(to_run(fit, tiny_llama, tasks))
    loaded = from_run(store.load(run_id), tiny_llama)
    prompts = ["Q: hot\nA:", "Q: dog\nA:"]
    torch.testing.assert_close(loaded.vectors(tiny_llama, prompts), fit.vectors(tiny_llama, prompts))
    assert loaded.tasks == ["antonym", "uppercase"] and loaded.config.rank == 4
    with pytest.raises((RunError, ValueError), match="tiny-gpt2|shape|does not fit"):
        from_run(store.load(run_id), load_model("tiny-gpt2", device="cpu"))
    with pytest.raises(ValueError, match="holds"):
        AdaptiveTaskVector.restore({"B": fit.B}, fit.record(), tasks=fit.tasks, config=fit.config)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="rank must be >= 0"):
        AtvConfig(rank=-1).check()
    with pytest.raises(ValueError, match="per_task must be >= 1"):
        AtvConfig(per_task=0).check()


class Interrupted(Exception):
    pass


def _interrupt_at(stop_step):
    def progress(phase, step, total, record):
        if step == stop_step:
            raise Interrupted
    return progress


def test_an_interrupted_fit_resumes_from_its_checkpoint_to_the_same_result(tiny_llama, tasks, tmp_path):
    config = AtvConfig(**{**TINY, "steps": 12, "eval_every": 3, "lr": 1e-2, "patience": 10})
    whole = AdaptiveTaskVector.fit(tiny_llama, tasks, config)
    folder = tmp_path / "checkpoint"
    with pytest.raises(Interrupted):  # killed after step 8; the last checkpoint is step 5's
        AdaptiveTaskVector.fit(tiny_llama, tasks, config, progress=_interrupt_at(8), checkpoint=folder,
                               checkpoint_every=5)
    assert (folder / "state.json").is_file() and [p.name for p in folder.glob("*.safetensors")] == [
        "state-0000005.safetensors"]
    steps_run = []
    resumed = AdaptiveTaskVector.fit(tiny_llama, tasks, config, checkpoint=folder, checkpoint_every=5,
                                     progress=lambda phase, step, total, record: steps_run.append(step))
    assert steps_run[0] == 6  # went on after the checkpoint, not from the start
    assert torch.equal(resumed.A, whole.A) and torch.equal(resumed.B, whole.B)
    assert resumed.trace.best_step == whole.trace.best_step
    pd.testing.assert_frame_equal(resumed.trace.history, whole.trace.history)
    again = AdaptiveTaskVector.fit(tiny_llama, tasks, config, checkpoint=folder, checkpoint_every=5,
                                   progress=_interrupt_at(1))  # finished: no step runs
    assert torch.equal(again.B, whole.B)


def test_a_checkpoint_of_another_fit_is_refused(tiny_llama, tasks, tmp_path):
    folder = tmp_path / "checkpoint"
    AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**TINY), checkpoint=folder, checkpoint_every=1)
    with pytest.raises(ValueError, match="another fit"):
        AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**{**TINY, "lr": 0.5}), checkpoint=folder)
    (next(folder.glob("state-*.safetensors"))).write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="cannot be read|delete"):
        AdaptiveTaskVector.fit(tiny_llama, tasks, AtvConfig(**TINY), checkpoint=folder)


def test_a_trained_s_is_fitted_saved_and_reloaded(tiny_llama, tmp_path):
    uppercase = load_task("uppercase")
    config = AtvConfig(**{**TINY, "steps": 6, "eval_every": 2, "lr": 1e-2, "train_encoder": True,
                          "encoder_lr": 1e-2, "patience": 10})
    fit = AdaptiveTaskVector.fit(tiny_llama, [uppercase], config)
    fresh = dict(load_encoder("tiny-encoder").model.named_parameters())
    assert fit.trace.best_step > 0 and set(fit.encoder_state) == set(fresh)
    assert any(not torch.equal(fit.encoder_state[k].cpu(), fresh[k].detach()) for k in fresh)  # S moved
    assert fit.encoder_parameters() == sum(p.numel() for p in fresh.values())
    prompts = ["Q: hot\nA:", "Q: dog\nA:"]
    frozen_s = AdaptiveTaskVector(tasks=fit.tasks, config=AtvConfig(**{**TINY}), A=fit.A, B=fit.B,
                                  trace=fit.trace, n_layers=fit.n_layers)
    assert not torch.allclose(fit.vectors(tiny_llama, prompts), frozen_s.vectors(tiny_llama, prompts))
    store = RunStore(tmp_path)
    loaded = from_run(store.load(store.save(to_run(fit, tiny_llama, [uppercase]))), tiny_llama)
    torch.testing.assert_close(loaded.vectors(tiny_llama, prompts), fit.vectors(tiny_llama, prompts))
    run = to_run(fit, tiny_llama, [uppercase])
    run.tensors = {k: v for k, v in run.tensors.items() if not k.startswith("S.")}
    with pytest.raises((RunError, ValueError), match="S's weights"):
        from_run(store.load(store.save(run)), tiny_llama)


def test_all_positions_edit_the_prompt_and_fit_without_a_cache(tiny_llama, tasks):
    config = AtvConfig(**{**TINY, "when": "all", "steps": 4, "eval_every": 2, "lr": 5e-2, "patience": 10})
    fit = AdaptiveTaskVector.fit(tiny_llama, tasks, config)
    assert fit.trace.best_valid_loss < fit.trace.history["valid_loss"].iloc[0]  # it learns
    prompts, batch = _batch(tiny_llama, tasks[0].split(0)["test"][:4])
    template = get_template("qa")
    (whole,) = prompt_batches(tiny_llama, prompts, [y for _, y in tasks[0].split(0)["test"][:4]],
                              template.separator, 4, "answer", cache=False)
    torch.testing.assert_close(whole.logits(tiny_llama), batch.logits(tiny_llama), atol=1e-4, rtol=1e-4)
    last = fit.intervention(when="last").for_prompts(tiny_llama, prompts)
    torch.testing.assert_close(
        whole.logits(tiny_llama, last), batch.logits(tiny_llama, last), atol=1e-4, rtol=1e-4
    )
    every = fit.intervention(when="all").for_prompts(tiny_llama, prompts)
    assert not torch.allclose(whole.logits(tiny_llama, every), whole.logits(tiny_llama, last), atol=1e-4)
    with pytest.raises(ValueError, match="not 'all'"):
        batch.logits(tiny_llama, every)  # cached prefixes cannot take an edit of the prompt


def test_a_fit_killed_between_the_two_checkpoint_files_resumes_from_the_previous_one(
    tiny_llama, tasks, tmp_path
):
    config = AtvConfig(**{**TINY, "steps": 8, "eval_every": 2, "lr": 1e-2, "patience": 10})
    whole = AdaptiveTaskVector.fit(tiny_llama, tasks, config)
    folder = tmp_path / "checkpoint"
    with pytest.raises(Interrupted):
        AdaptiveTaskVector.fit(tiny_llama, tasks, config, progress=_interrupt_at(5), checkpoint=folder,
                               checkpoint_every=2)
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    # a kill after the next tensor file was written but before the JSON that names it
    (folder / "state-0000006.safetensors").write_bytes(b"a newer, unnamed tensor file")
    steps_run = []
    resumed = AdaptiveTaskVector.fit(tiny_llama, tasks, config, checkpoint=folder, checkpoint_every=2,
                                     progress=lambda phase, step, total, record: steps_run.append(step))
    assert "state-0000004.safetensors" in kept and steps_run[0] == 5
    assert torch.equal(resumed.B, whole.B) and torch.equal(resumed.A, whole.A)
