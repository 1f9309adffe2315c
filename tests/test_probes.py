"""The hostile-input probes of the hardening issue, as a catalogue: every bad input the CLI
was given, and what it must do now (a one-line ``error: ...`` with exit status 2, found
before the model loads where it can be, or the correct result). No probe may print a
traceback.

The task-file readers' property tests are in test_task_readers.py; the damaged-store and
fault tests in test_store_damage.py and test_store_faults.py.
"""

from __future__ import annotations

import json

import pytest
import torch

import workbench.model.loading as models_module
from workbench import cli
from workbench.model import inference
from workbench.tasks.prompts import TEMPLATES, get_template


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(tmp_path_factory.mktemp("workbench-cache")))
        yield {}


@pytest.fixture(autouse=True)
def fast_models(monkeypatch, model_cache):
    """Each tiny model loaded once per module; the device argument is still checked."""
    real = models_module.load_model

    def load(name="smollm2-135m-instruct", device=None):
        assert name in models_module.TINY_MODELS, "tests use tiny models only"
        if name not in model_cache:
            model_cache[name] = real(name, device="cpu")
        return model_cache[name]

    monkeypatch.setattr(models_module, "load_model", load)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, message, *, before_model=True):
    assert rc == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], err
    if before_model:
        assert "loading model" not in err


def write_pairs(path, pairs):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"input": x, "output": y} for x, y in pairs]), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- 1. over-long prompts


def test_an_over_long_prompt_is_an_error_not_cut_to_the_context(model_cache):
    model = models_module.load_model("tiny-llama")
    n_ctx = model.bridge.cfg.n_ctx
    fits = "a" * (n_ctx - 10)
    assert inference.encode(model, [fits]).tokens.shape[1] <= n_ctx
    with pytest.raises(ValueError, match=rf"A prompt has \d+ tokens, over the context of {n_ctx} tokens of tiny-llama"):
        inference.encode(model, [fits, "b" * (2 * n_ctx)])


def test_eval_with_prompts_over_the_context_is_an_error(tmp_path, capsys):
    long = write_pairs(tmp_path / "long.json", [(f"item{i} " + "word " * 38, f"o{i}") for i in range(40)])
    rc, out, err = run(["eval", "--model", "tiny-llama", "--task", long, "--shots", "0", "10", "--limit", "2",
                        "--no-progress"], capsys)
    assert_one_line_error(rc, err, "task 'long', 10-shot prompts: A prompt has", before_model=False)
    assert "over the context of 512 tokens" in err and out == ""  # no accuracy is reported


# ----------------------------------------------------------------------------- 8. templates


def test_a_template_written_as_a_demonstration_is_understood():
    arrow, qa = TEMPLATES["arrow"], TEMPLATES["qa"]
    assert (get_template("{x} -> {y}").query, get_template("{x} -> {y}").separator) == (arrow.query, arrow.separator)
    custom = get_template(r"Q: {x}\nA: {y}\n\n")
    assert (custom.query, custom.separator) == (qa.query, qa.separator)
    assert "{y}" not in get_template("{x} -> {y}").prompt([("hot", "cold")], "big")


@pytest.mark.parametrize(
    "spec, message",
    [
        ("{x}->{y}", "must follow a space"),
        ("{x} {y} {y}", "a single '{y}'"),
        ("{y} {x}", "a single '{y}'"),
        ("{x} -> {y} {x}\\n", "a single '{y}'"),
        ("{x} {y}|\\n", "no '|'"),
        ("{x} -> {y} ;", "must contain a newline"),
    ],
)
def test_a_bad_demonstration_template_is_a_clear_error(capsys, spec, message):
    rc, _, err = run(["eval", "--model", "tiny-llama", "--task", "antonym", "--template", spec], capsys)
    assert_one_line_error(rc, err, message)


def test_show_task_with_the_readme_notation_builds_real_prompts(capsys):
    rc, out, err = run(["show-task", "antonym", "--shots", "2", "--template", "{x} -> {y}"], capsys)
    assert rc == 0, err
    prompt = out.split("-" * 60 + "\n")[1]
    assert "{y}" not in prompt and prompt.count(" ->") == 3
