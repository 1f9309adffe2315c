import pytest
import torch

from workbench.experiments.evaluation import evaluate, majority_baseline, summarize
from workbench.interventions import Intervention, mix_heads
from workbench.scoring import first_token_loss, normalise
from workbench.tasks.task import Task

PAIRS = [(f"w{i}", f"v{i % 3}") for i in range(40)]


def test_normalise_reads_the_first_line():
    assert normalise("  Paris\nQ: next", case_sensitive=False) == "paris"
    assert normalise(" Paris  France\n", case_sensitive=True) == "Paris France"
    assert normalise("\n") == ""


def test_evaluate_returns_one_row_per_query(tiny_llama):
    task = Task("toy", PAIRS)
    frame = evaluate(tiny_llama, task, shots=2, limit=5, batch_size=2)
    assert len(frame) == 5
    assert set(frame["method"]) == {"2-shot ICL"} and set(frame["template"]) == {"qa"}
    assert frame["prompt"].iloc[0].count("Q:") == 3  # two demonstrations and the query
    summary = summarize(frame)
    assert summary.loc[0, "n"] == 5
    assert 0.0 <= summary.loc[0, "exact_match"] <= 1.0


def test_exact_match_uses_the_task_case_rule(tiny_llama):
    # A model that always answers the target is simulated by checking the comparison rule.
    assert normalise("ABC", case_sensitive=False) == normalise("abc", case_sensitive=False)
    assert normalise("ABC", case_sensitive=True) != normalise("abc", case_sensitive=True)


def test_majority_baseline_counts_the_most_common_train_label():
    task = Task("toy", [(f"x{i}", "a" if i % 4 else "b") for i in range(100)])
    baseline = majority_baseline(task)
    test_items = task.split(0).test
    assert baseline == pytest.approx(sum(y == "a" for _, y in test_items) / len(test_items))


def test_first_token_loss_is_differentiable_through_hooks(tiny_llama):
    shape = tiny_llama.heads.shape
    alpha = torch.full((shape.n_layers, shape.n_heads), 0.5, requires_grad=True)
    target = torch.randn(shape.n_layers, shape.n_heads, shape.d_head)
    hooks = Intervention("mix", (mix_heads(alpha, target),)).hooks(tiny_llama)
    loss = first_token_loss(tiny_llama, ["a ->", "b ->"], ["x", "y"], hooks)
    loss.backward()
    assert loss.item() > 0 and alpha.grad.abs().sum() > 0
