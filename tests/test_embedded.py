"""Integration tests on the embedded SmolLM2-135M-Instruct (slow: real weights)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workbench.experiments.evaluation import evaluate, summarize
from workbench.model.loading import embedded_cache_path
from workbench.tasks.files import load_task

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent


def test_embedded_model_loads_from_its_cache(embedded_model):
    assert embedded_model.heads.shape.n_layers == 30 and embedded_model.heads.shape.n_kv_heads == 3
    assert (embedded_cache_path() / "model.safetensors").is_file()
    # A second process reads the cache instead of dequantizing the GGUF again.
    probe = "from workbench.model.loading import load_model; print(load_model(device='cpu').source)"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True,
                         env=dict(os.environ))
    assert out.stdout.strip().splitlines()[-1] == "cache"


def test_ten_shot_icl_beats_zero_shot_on_country_capital(embedded_model):
    task = load_task("country_capital")
    frames = [evaluate(embedded_model, task, shots=k, limit=30, template="arrow") for k in (0, 10)]
    table = summarize(__import__("pandas").concat(frames)).set_index("shots")
    assert table.loc[10, "n"] == min(30, len(task.split(0).test))
    assert table.loc[10, "first_token_acc"] >= table.loc[0, "first_token_acc"] + 0.2
    assert table.loc[10, "exact_match"] >= 0.2


def test_bundled_site_run_injects_the_task_into_zero_shot_queries(embedded_model):
    from workbench.store.codec import from_run
    from workbench.store.runs import bundled_store

    run = bundled_store().latest("SITE", "antonym", embedded_model.name)
    assert run is not None, "results/runs has no SITE run for antonym"
    fit = from_run(run, embedded_model)
    task = load_task("antonym")
    frames = [evaluate(embedded_model, task, limit=40, template=fit.config.template, intervention=i)
              for i in (None, fit.intervention("antonym"))]
    table = summarize(__import__("pandas").concat(frames)).set_index("method")
    assert table.loc["zero-shot", "first_token_acc"] <= 0.1
    assert table.loc["SITE", "first_token_acc"] >= 0.4


def test_bundled_tv_fv_ltv_runs_reproduce_the_benchmark_table(embedded_model):
    """Each bundled run, loaded and re-evaluated, scores what the committed benchmark table says."""

    from workbench.experiments.comparison import read_benchmark
    from workbench.store.codec import from_run
    from workbench.store.runs import bundled_store

    table = read_benchmark(ROOT / "analyses" / "results" / "methods_smollm2-135m-instruct_qa.csv")
    expected = table[table["task"] == "present_past"].set_index("method")["first_token_acc"]
    task = load_task("present_past")
    for name in ("TV", "FV", "LTV"):
        run = bundled_store().latest(name, "present_past", embedded_model.name)
        assert run is not None, f"results/runs has no {name} run for present_past"
        fit = from_run(run, embedded_model)
        frame = evaluate(embedded_model, task, template=fit.config.template, max_new_tokens=1,
                         intervention=fit.intervention(task.name))
        assert run.meta["metrics"][task.name]["test_first_token_acc"] == pytest.approx(
            expected[name], abs=1e-9
        )
        assert frame["first_token_correct"].mean() == pytest.approx(expected[name], abs=1e-6), name


def test_no_built_in_task_scores_smollm2s_bare_space(embedded_model):
    """SmolLM2 writes " 97" as " ", "9", "7": the first token that carries a digit answer is
    the digit, for every built-in task's answers."""
    from workbench import scoring
    from workbench.tasks.files import list_tasks

    tokenizer = embedded_model.tokenizer
    digits = 0
    for name in list_tasks():
        for _, y in load_task(name).pairs:
            tokens = scoring.answer_tokens(tokenizer, y, "\n\n")
            assert tokenizer.decode([tokens.target]).strip(), (name, y)
            digits += tokens.first == 1 and y[0].isdigit()
    assert digits > 100  # number_next, number_previous, number_word_to_digit
