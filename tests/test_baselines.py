"""Task Vector, Function Vector and LTV on the tiny models: the math, the cheap paths, the store."""

import pandas as pd
import pytest
import torch
from reference import full_forward

from workbench.experiments.evaluation import evaluate
from workbench.interventions import Intervention, add_to_residual, replace_head, replace_residual
from workbench.methods import fv, ltv, selection, tv
from workbench.methods.activations import task_embedding, task_residuals
from workbench.methods.queries import hits, prompt_batches
from workbench.methods.training import Trace
from workbench.model import inference
from workbench.model.loading import load_model
from workbench.store.codec import from_run, to_run
from workbench.store.runs import RunError, RunStore
from workbench.tasks.prompts import get_template, train_prompts
from workbench.tasks.task import Task

ZERO_SHOT = ["Q: ab\nA:", "Q: hello\nA:", "Q: x\nA:"]


def _task(name="toy", n=40):
    return Task(name, [(f"w{i:02d}", f"{'abcdefg'[i % 7]}{i % 3}") for i in range(n)])


# ----------------------------------------------------------------------------- Task Vector


def _tv(vector, layer):
    return Intervention("TV", (replace_residual(layer, vector),))


def test_task_vectors_are_the_mean_last_token_residual(tiny_llama):
    task = _task()
    prompts, answers = train_prompts(task.split(0).train, "qa", shots=2, n_prompts=5, seed=0)
    assert len(prompts) == 5 and prompts[0].count("\n\n") == 2 and all(a[1] in "012" for a in answers)
    vectors = task_residuals(tiny_llama, prompts, batch_size=2)
    shape = tiny_llama.heads.shape
    assert vectors.shape == (shape.n_layers, shape.d_model)
    store = {}
    inference.run_hooks_only(tiny_llama, prompts, tiny_llama.heads.capture_resid(store))
    for layer in range(shape.n_layers):
        assert torch.allclose(vectors[layer], store[layer].mean(0), atol=1e-5)
    # The same prompts SITE's task embedding reads (so all methods share one prompt set).
    z = {}
    inference.run_hooks_only(tiny_llama, prompts, tiny_llama.heads.capture_z(z))
    assert torch.allclose(task_embedding(tiny_llama, prompts)[2], z[2].mean(0), atol=1e-5)


def test_tv_substitution_reproduces_the_source_residual(tiny_model):
    shape = tiny_model.heads.shape
    prompts, _ = train_prompts(_task().split(0).train, "qa", shots=2, n_prompts=4)
    vectors = task_residuals(tiny_model, prompts)
    plain = inference.last_logits(tiny_model, ZERO_SHOT)
    for layer in range(shape.n_layers):
        store, before = {}, {}
        intervention = _tv(vectors[layer], layer)
        inference.run_hooks_only(
            tiny_model,
            ZERO_SHOT,
            [*intervention.hooks(tiny_model), *tiny_model.heads.capture_resid(store, layers=[layer])],
        )
        assert torch.allclose(store[layer], vectors[layer].expand(len(ZERO_SHOT), -1), atol=1e-6)
        # earlier tokens are not touched
        inference.run_hooks_only(
            tiny_model, ZERO_SHOT, tiny_model.heads.capture_resid(before, pos=-2, layers=[layer])
        )
        after = {}
        inference.run_hooks_only(
            tiny_model,
            ZERO_SHOT,
            [*intervention.hooks(tiny_model), *tiny_model.heads.capture_resid(after, pos=-2, layers=[layer])],
        )
        assert torch.allclose(before[layer], after[layer])
    # At the last layer the vector is all the unembedding sees: every query gets the same logits.
    last = _tv(vectors[-1], shape.n_layers - 1)
    patched = inference.last_logits(tiny_model, ZERO_SHOT, last.hooks(tiny_model))
    assert torch.allclose(patched, patched[:1].expand_as(patched), atol=1e-5)
    assert not torch.allclose(patched, plain, atol=1e-3)


def test_the_cached_layer_sweep_equals_full_forwards(tiny_llama):
    task = _task()
    prompts, _ = train_prompts(task.split(0).train, "qa", shots=2, n_prompts=4)
    vectors = task_residuals(tiny_llama, prompts)
    valid = task.split(0).valid
    curve, zero_shot = selection.layer_sweep(tiny_llama, valid, lambda l: _tv(vectors[l], l), "qa")
    layer = selection.best_layer(curve)
    assert list(curve["layer"]) == [0, 1, 2] and layer in (0, 1, 2)
    assert curve["first_token_acc"].between(0, 1).all()
    # the byte tokenizer writes " a0" as " ", "a", "0": the scores read two answer columns
    for l in range(3):
        rows = full_forward(tiny_llama, "qa", valid, _tv(vectors[l], l))
        assert curve["loss"][l] == pytest.approx(sum(r[0] for r in rows) / len(rows), abs=1e-4)
        assert curve["first_token_acc"][l] == pytest.approx(sum(r[1] for r in rows) / len(rows))
    rows = full_forward(tiny_llama, "qa", valid)
    assert zero_shot["loss"] == pytest.approx(sum(r[0] for r in rows) / len(rows), abs=1e-4)


def test_best_layer_ranks_accuracy_then_loss_then_nearness():
    import pandas as pd

    curve = pd.DataFrame(
        {"layer": [0, 1, 2, 3], "first_token_acc": [0.5, 0.8, 0.8, 0.8], "loss": [1.0, 2.0, 1.5, 1.5]}
    )
    assert selection.best_layer(curve) == 2
    assert selection.best_layer(curve, prefer=3) == 3


# ----------------------------------------------------------------------------- Function Vector


def test_fv_with_every_head_is_the_sum_of_all_projected_means(tiny_model):
    shape = tiny_model.heads.shape
    torch.manual_seed(0)
    a = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    effects = torch.randn(shape.n_layers, shape.n_heads)
    all_heads = fv.function_vector(tiny_model, a, effects, shape.n_layers * shape.n_heads)
    assert torch.allclose(all_heads, tiny_model.heads.project(a).sum((0, 1)), atol=1e-5)
    # and k = 1 is the single head with the largest effect
    l, h = divmod(int(effects.argmax()), shape.n_heads)
    assert selection.top_heads(effects, 1) == [(l, h)]
    assert torch.allclose(
        fv.function_vector(tiny_model, a, effects, 1), a[l, h] @ tiny_model.heads.W_O[l, h], atol=1e-5
    )


def test_fv_is_added_to_the_residual_at_one_layer(tiny_model):
    d_model = tiny_model.heads.shape.d_model
    vector = torch.randn(d_model)
    before, after = {}, {}
    inference.run_hooks_only(tiny_model, ZERO_SHOT, tiny_model.heads.capture_resid(before, layers=[1]))
    inference.run_hooks_only(
        tiny_model,
        ZERO_SHOT,
        [*Intervention("FV", (add_to_residual(vector[None], (1,)),)).hooks(tiny_model),
         *tiny_model.heads.capture_resid(after, layers=[1])],
    )
    assert torch.allclose(after[1] - before[1], vector.expand(len(ZERO_SHOT), -1), atol=1e-5)


def test_shuffled_twins_keep_inputs_and_true_answers_but_move_labels(tiny_llama):
    task = _task()
    pool = task.split(0).train
    icl = fv.icl_correct_prompts(tiny_llama, pool, get_template("qa"), shots=3, candidates=6, seed=0)
    clean, clean_answers = train_prompts(pool, "qa", shots=3, n_prompts=6)
    assert icl.candidates == 6 and set(icl.clean) <= set(clean) and len(icl.clean) == len(icl.shuffled)
    labels = dict(task.pairs)
    for twin, prompt, answer in zip(icl.shuffled, icl.clean, icl.answers):
        blocks, twin_blocks = prompt.split("\n\n"), twin.split("\n\n")
        assert blocks[-1] == twin_blocks[-1] and labels[blocks[-1][3:].split("\n")[0]] == answer  # same query
        assert [b.split("\n")[0] for b in blocks] == [b.split("\n")[0] for b in twin_blocks]  # same inputs
    demos = [block for p in icl.shuffled for block in p.split("\n\n")[:-1]]
    pairs = [(d.split("\n")[0][3:], d.split("\nA: ")[1]) for d in demos]
    assert sum(labels[x] != y for x, y in pairs) > len(pairs) // 2  # most labels are someone else's


def test_icl_correct_prompts_keep_only_what_icl_answers(tiny_llama):
    pool = _task().split(0).train
    template = get_template("qa")
    icl = fv.icl_correct_prompts(tiny_llama, pool, template, shots=2, candidates=12, seed=0)
    clean, answers = train_prompts(pool, template, shots=2, n_prompts=12)
    right = [
        bool(h) for b in prompt_batches(tiny_llama, clean, answers, "\n\n", 16) for h in hits(tiny_llama, b)
    ]
    if any(right):
        assert icl.clean == [p for p, ok in zip(clean, right) if ok] and not icl.fallback
    else:
        assert icl.clean == clean and icl.fallback  # nothing right: every candidate, said so


def _silence_head(model, layer: int, head: int) -> None:
    """Zero head (layer, head)'s block of the output projection in the model's own weights."""
    d = model.heads.shape.d_head
    block = model.bridge.W_O[layer, head]  # (d_head, d_model)
    weight = model.bridge.blocks[layer].attn.o.original_component.weight
    rows = slice(head * d, (head + 1) * d)
    with torch.no_grad():
        if torch.equal(weight[:, rows].T, block):  # nn.Linear: (d_model, H * d_head)
            weight[:, rows] = 0
        else:  # Conv1D: (H * d_head, d_model)
            assert torch.equal(weight[rows], block)
            weight[rows] = 0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2"])
def test_indirect_effect_is_zero_for_a_head_that_writes_nothing(name):
    model = load_model(name, device="cpu")  # a private copy: its weights are edited
    _silence_head(model, 1, 2)
    assert model.heads.W_O[1, 2].abs().max() == 0 and model.heads.W_O[1, 1].abs().max() > 0
    task = _task()
    pool = task.split(0).train
    clean, _ = train_prompts(pool, "qa", shots=2, n_prompts=4)
    a = task_embedding(model, clean)
    prompts, answers = train_prompts(pool, "qa", shots=2, n_prompts=5, demo_pool=fv.shuffled_labels(pool))
    effects = fv.indirect_effects(model, prompts, answers, a, "\n\n", batch_size=3)  # two batches
    assert effects.shape == (3, 4)
    assert effects[1, 2] == 0  # patching a head that writes nothing changes nothing
    assert (effects[1, [0, 1, 3]] != 0).all()  # control: the layer's other heads do act
    # the cached path equals full forwards with the same patch (through the answer's bare space)
    patch = Intervention("patch", (replace_head(1, 1, a[1, 1]),))
    pairs = [(None, y) for y in answers]
    patched = full_forward(model, "qa", pairs, patch, prompts=prompts)
    plain = full_forward(model, "qa", pairs, prompts=prompts)
    full = sum(p[2] - q[2] for p, q in zip(patched, plain)) / len(prompts)
    assert effects[1, 1] == pytest.approx(full, rel=1e-3, abs=1e-8)


# ----------------------------------------------------------------------------- LTV


def _ltv(theta, activations):
    """An LTV fit with the given weights and head activations."""
    return ltv.LearnableTaskVector(tasks=["toy"], config=ltv.LtvConfig(), theta=theta, embedding=activations,
                                   trace=Trace(0, 0.0, pd.DataFrame()))


def test_ltv_with_theta_zero_leaves_logits_unchanged(tiny_model):
    shape = tiny_model.heads.shape
    a = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    intervention = _ltv(torch.zeros(shape.n_layers, shape.n_heads), a).intervention()
    assert intervention.name == "LTV"
    plain = inference.last_logits(tiny_model, ZERO_SHOT)
    assert torch.equal(inference.last_logits(tiny_model, ZERO_SHOT, intervention.hooks(tiny_model)), plain)
    # while theta = 1 on one head of layer 0 adds exactly that head's projected mean there
    theta = torch.zeros(shape.n_layers, shape.n_heads)
    theta[0, 1] = 1.0
    before, after = {}, {}
    inference.run_hooks_only(tiny_model, ZERO_SHOT, tiny_model.heads.capture_resid(before, layers=[0]))
    hooks = _ltv(theta, a).intervention().hooks(tiny_model)
    assert len(hooks) == shape.n_layers  # one add after every layer
    inference.run_hooks_only(
        tiny_model, ZERO_SHOT, [*hooks, *tiny_model.heads.capture_resid(after, layers=[0])]
    )
    expected = (a[0, 1] @ tiny_model.heads.W_O[0, 1]).expand(len(ZERO_SHOT), -1)
    assert torch.allclose(after[0] - before[0], expected, atol=1e-5)


def test_ltv_gradients_reach_only_theta(tiny_llama):
    shape = tiny_llama.heads.shape
    theta = torch.full((shape.n_layers, shape.n_heads), 0.01, requires_grad=True)
    a = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    cached = inference.cache_prefixes(tiny_llama, ZERO_SHOT)
    logits = inference.cached_last_logits(tiny_llama, cached, _ltv(theta, a).intervention().hooks(tiny_llama))
    logits.logsumexp(-1).sum().backward()
    assert theta.grad is not None and (theta.grad.abs() > 0).all()  # every layer's every head
    assert a.grad is None
    assert all(p.grad is None for p in tiny_llama.bridge.parameters())


LTV_TINY = ltv.LtvConfig(
    template="qa", shots=2, n_prompts=6, steps=12, eval_every=3, batch_size=8, lr=0.5, patience=100
)


def test_ltv_fit_lowers_the_valid_loss_on_a_synthetic_task(tiny_llama):
    fit = ltv.LearnableTaskVector.fit(tiny_llama, _task(), LTV_TINY)
    start = fit.trace.history["valid_loss"].iloc[0]
    assert fit.trace.best_valid_loss < start - 0.05 and fit.trace.best_step > 0
    assert fit.theta.shape == (3, 4) and fit.theta.abs().max() > 0.1  # moved well past its init
    # the stored best loss is what the fitted intervention scores on the selection queries
    select = selection.selection_split(_task()).select
    rows = full_forward(tiny_llama, "qa", select, fit.intervention().for_prompts(tiny_llama, []))
    assert sum(r[0] for r in rows) / len(rows) == pytest.approx(fit.trace.best_valid_loss, abs=1e-4)


# ----------------------------------------------------------------------------- fits, evaluation, store


@pytest.fixture(scope="module")
def fits(tiny_llama):
    task = _task()
    return {
        "TV": tv.TaskVector.fit(tiny_llama, task, tv.TvConfig(shots=2, n_prompts=4)),
        "FV": fv.FunctionVector.fit(
            tiny_llama, task, fv.FvConfig(shots=2, n_prompts=4, n_shuffled=4, top_k=3)
        ),
        "LTV": ltv.LearnableTaskVector.fit(
            tiny_llama, task, ltv.LtvConfig(shots=2, n_prompts=4, steps=2, eval_every=1, batch_size=8)
        ),
    }


def test_fitted_baselines_plug_into_evaluate(tiny_llama, fits):
    tv_fit, fv_fit = fits["TV"], fits["FV"]
    assert len(tv_fit.layer_sweep) == 3 and tv_fit.layer == selection.best_layer(tv_fit.layer_sweep)
    assert fv_fit.effects.shape == (3, 4) and len(fv_fit.heads) == 3 and len(fv_fit.layer_sweep) == 3
    assert torch.allclose(
        fv_fit.vector, fv.function_vector(tiny_llama, fv_fit.embedding, fv_fit.effects, 3)
    )
    for name, fit in fits.items():
        frame = evaluate(
            tiny_llama, _task(), split="valid", limit=2, intervention=fit.intervention(), max_new_tokens=2
        )
        assert list(frame["method"]) == [name, name]
        with pytest.raises(KeyError, match="is for 'toy', not 'other'"):
            fit.intervention("other")


SCORES = {"toy": {"test_first_token_acc": 0.5, "test_exact_match": 0.25, "n_test": 8}}


@pytest.mark.parametrize("method", ["TV", "FV", "LTV"])
def test_store_round_trip(tmp_path, tiny_llama, fits, method):
    fit = fits[method]
    store = RunStore(tmp_path)
    run_id = store.save(to_run(fit, tiny_llama, _task(), metrics=SCORES))
    assert list(store.list(method=method, task="toy")["id"]) == [run_id]
    loaded = from_run(store.load(run_id), tiny_llama)
    assert type(loaded) is type(fit) and loaded.fit_seconds == fit.fit_seconds
    if method == "TV":
        assert torch.equal(loaded.vectors, fit.vectors) and loaded.layer == fit.layer
        assert loaded.layer_sweep.equals(fit.layer_sweep) and loaded.config == fit.config
    elif method == "FV":
        assert torch.equal(loaded.effects, fit.effects) and torch.equal(loaded.embedding, fit.embedding)
        assert torch.equal(loaded.vector, fit.vector) and (loaded.top_k, loaded.layer) == (
            fit.top_k,
            fit.layer,
        )
        assert (
            loaded.heads == fit.heads
            and loaded.layer_sweep.equals(fit.layer_sweep)
            and loaded.config == fit.config
        )
    else:
        assert torch.equal(loaded.theta, fit.theta) and torch.equal(loaded.embedding, fit.embedding)
        assert loaded.trace.best_step == fit.trace.best_step and loaded.config == fit.config
    assert loaded.meta["metrics"] == SCORES
    plain = inference.last_logits(tiny_llama, ZERO_SHOT, fit.intervention().hooks(tiny_llama))
    assert torch.equal(
        inference.last_logits(tiny_llama, ZERO_SHOT, loaded.intervention().hooks(tiny_llama)), plain
    )
    # the codec restores each run as the method it was saved from
    other = fits[{"TV": "FV", "FV": "LTV", "LTV": "TV"}[method]]
    other_id = store.save(to_run(other, tiny_llama, _task()))
    assert type(from_run(store.load(other_id))) is type(other)
    run = store.load(run_id)
    run.method = "XYZ"
    with pytest.raises(RunError, match="Unknown method 'XYZ'"):
        from_run(run)


@pytest.mark.parametrize("method", ["TV", "FV", "LTV"])
def test_loading_into_a_model_of_another_shape_raises(tmp_path, tiny_llama, fits, method):
    fit = fits[method]
    store = RunStore(tmp_path)
    run_id = store.save(to_run(fit, tiny_llama, _task()))
    gpt2 = load_model("tiny-gpt2", device="cpu")  # same layers and heads, but 4 kv heads
    with pytest.raises(RunError, match=r"fitted on tiny-llama and does not fit tiny-gpt2: n_kv_heads 2 vs 4"):
        from_run(store.load(run_id), gpt2)
