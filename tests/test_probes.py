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

    def load(name="smollm2-135m-instruct", device=None, prepend_bos=None):
        assert name in models_module.TINY_MODELS, "tests use tiny models only"
        key = name if prepend_bos is None else (name, prepend_bos)
        if key not in model_cache:
            model_cache[key] = real(name, device="cpu", prepend_bos=prepend_bos)
        return model_cache[key]

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
    with pytest.raises(
        ValueError, match=rf"A prompt has \d+ tokens, over the context of {n_ctx} tokens of tiny-llama"
    ):
        inference.encode(model, [fits, "b" * (2 * n_ctx)])


def test_eval_with_prompts_over_the_context_is_an_error(tmp_path, capsys):
    long = write_pairs(tmp_path / "long.json", [(f"item{i} " + "word " * 38, f"o{i}") for i in range(40)])
    rc, out, err = run(["eval", "--model", "tiny-llama", "--task", long, "--shots", "0", "10", "--limit", "2",
                        "--no-progress"], capsys)
    assert_one_line_error(rc, err, "task 'long', 10-shot prompts: A prompt has", before_model=False)
    assert "over the context of 512 tokens" in err and out == ""  # no accuracy is reported


def test_eval_leaves_room_to_decode_within_the_context(tmp_path, capsys):
    """A 2-shot prompt a few tokens under the context: it fits, but the answer could not be
    decoded (tiny-gpt2's learned positions end at n_ctx), so it is an error up front."""
    model = models_module.load_model("tiny-gpt2")
    n_ctx = model.bridge.cfg.n_ctx

    def prompt_tokens(width: int) -> int:
        pairs = [(f"{i:03d}" + "x" * (width - 3), "y") for i in range(3)]
        return inference.encode(model, [get_template("qa").prompt(pairs[:2], pairs[2][0])]).tokens.shape[1]

    base = prompt_tokens(100)
    width = 100 + (n_ctx - 5 - base) // 3  # 3 inputs per prompt
    assert n_ctx - 24 < prompt_tokens(width) <= n_ctx
    path = write_pairs(tmp_path / "near.json", [(f"{i:03d}" + "x" * (width - 3), "y") for i in range(40)])
    rc, _, err = run(
        ["eval", "--model", "tiny-gpt2", "--task", path, "--shots", "2", "--no-progress"], capsys
    )
    assert_one_line_error(
        rc, err, "with up to 24 generated tokens that is over the context of 512", before_model=False
    )


# ----------------------------------------------------------------------------- 8. templates


def test_a_template_written_as_a_demonstration_is_understood():
    arrow, qa = TEMPLATES["arrow"], TEMPLATES["qa"]
    assert (get_template("{x} -> {y}").query, get_template("{x} -> {y}").separator) == (
        arrow.query, arrow.separator
    )
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


# ---------------------------------------------------------------------------- 2-3. a damaged store, the index
# (the whole catalogue of damage is in test_store_damage.py; these are the probes as run)


def _tv_fit(store, capsys, *extra):
    rc, out, err = run(["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym",
                        "--prompts", "3", "--shots", "1", "--no-eval", "--store", store, "--no-progress",
                        *extra], capsys)
    assert rc == 0, err
    return out.splitlines()[-1].split()[0]


def test_runs_show_of_a_truncated_run_is_an_error_and_runs_list_flags_it(tmp_path, capsys):
    store = tmp_path / "runs"
    run_id = _tv_fit(store, capsys)
    tensors = store / run_id / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:100])
    rc, _, err = run(["runs", "show", run_id, "--store", store], capsys)
    assert_one_line_error(rc, err, f"Run {run_id} in {store} is damaged: tensors.safetensors is unreadable")
    rc, out, err = run(["runs", "list", "--store", store], capsys)
    assert rc == 0 and "damaged: tensors.safetensors is unreadable" in out and "1 damaged run(s)" in out


def test_a_deleted_index_loses_no_run_and_runs_reindex_rebuilds_it(tmp_path, capsys):
    store = tmp_path / "runs"
    run_id = _tv_fit(store, capsys)
    (store / "index.sqlite").unlink()
    rc, out, _ = run(["runs", "list", "--store", store], capsys)
    assert rc == 0 and run_id in out
    (store / "index.sqlite").unlink()
    rc, out, _ = run(["runs", "reindex", "--store", store], capsys)
    assert rc == 0 and "indexed 1 runs" in out


# ----------------------------------------------------------------------------- 4. task identity


def test_two_files_with_the_same_stem_are_two_tasks(tmp_path, capsys):
    a = write_pairs(tmp_path / "a" / "same.json", [(f"a{i}", "x") for i in range(20)])
    b = write_pairs(tmp_path / "b" / "same.json", [(f"b{i}", "y") for i in range(20)])
    rc, out, err = run(["eval", "--model", "tiny-llama", "--task", a, b, "--shots", "0", "--limit", "2",
                        "--format", "json", "--no-progress"], capsys)
    assert rc == 0, err
    names = [row["task"] for row in json.loads(out)]
    assert len(names) == 2 and len(set(names)) == 2 and all(n.startswith("same@") for n in names)
    rc, out, err = run(["eval", "--model", "tiny-llama", "--task", a, a, "--shots", "0", "--limit", "2",
                        "--format", "json", "--no-progress"], capsys)
    assert [row["task"] for row in json.loads(out)] == ["same"]  # the same file twice is one task


def test_a_user_file_named_like_a_built_in_task_is_fitted_under_another_name(tmp_path, capsys):
    from workbench.store.runs import RunStore

    mine = write_pairs(tmp_path / "antonym.json", [(f"u{i}", "v") for i in range(20)])
    store = tmp_path / "runs"
    run_id = _tv_fit(store, capsys, "--task", mine)  # the built-in antonym and the file: two runs
    listed = RunStore(store).list()
    assert sorted(map(tuple, listed["tasks"])) == [("antonym",), (f"antonym@{run_id.split('@')[1][:8]}",)]
    assert RunStore(store).latest("TV", "antonym", "tiny-llama").meta["task_sources"]["antonym"]["path"] \
        == "data/tasks/antonym.json"
    meta = json.loads((store / run_id / "meta.json").read_text())
    assert meta["task_sources"][meta["tasks"][0]]["path"] == str(mine)


# ----------------------------------------------------------------------------- 6. fit's settings


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--limit", "0"], "--limit must be >= 1, got 0"),
        (["--limit", "-5"], "--limit must be >= 1, got -5"),
        (["--method", "SITE", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["--method", "SITE", "--steps", "-3"], "--steps must be >= 1, got -3"),
        (["--prompts", "0"], "--prompts must be >= 1, got 0"),
        (["--shots", "0"], "--shots must be >= 1, got 0"),
        (["--shots", "-1"], "--shots must be >= 1, got -1"),
        (["--shots", "500"], "too few for 500-shot prompts"),
        (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["--seed", "-1"], "--seed must be >= 0, got -1"),
        (["--method", "FV", "--top-k", "0"], "--top-k must be >= 1, got 0"),
        (["--method", "FV", "--layer", "-1"], "--layer must be >= 0, got -1"),
        (["--method", "SITE", "--lr", "inf"], "--lr must be a finite number, got inf"),
        (["--method", "SITE", "--lr", "nan"], "--lr must be a finite number, got nan"),
        (["--method", "LTV", "--lr", "0"], "--lr must be > 0, got 0.0"),
        (["--template", "{x}->{y}"], "must follow a space"),
        (["--device", "nonsense"], "Unknown device 'nonsense'"),
    ],
)
def test_bad_fit_settings_fail_before_the_model_loads(tmp_path, capsys, extra, message):
    method = [] if "--method" in extra else ["--method", "TV"]
    rc, _, err = run(["fit", *method, "--model", "tiny-llama", "--task", "antonym",
                      "--store", tmp_path / "runs", "--no-progress", *extra], capsys)
    assert_one_line_error(rc, err, message)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing saved


def test_a_layer_the_model_lacks_fails_right_after_the_model_loads(tmp_path, capsys, monkeypatch):
    from workbench.methods.fv import FunctionVector

    monkeypatch.setattr(FunctionVector, "fit", lambda *a, **k: pytest.fail("fitted with a bad layer"))
    rc, _, err = run(["fit", "--method", "FV", "--model", "tiny-llama", "--task", "antonym", "--layer", "99",
                      "--store", tmp_path / "runs", "--no-progress"], capsys)
    assert_one_line_error(rc, err, "--layer must be below the model's 3 layers, got 99", before_model=False)


def test_fit_with_a_limit_scores_that_many_test_items(tmp_path, capsys):
    rc, out, err = run(["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym",
                        "--prompts", "3", "--shots", "1", "--limit", "2", "--store", tmp_path / "runs",
                        "--no-progress"], capsys)
    assert rc == 0, err
    (meta_path,) = (tmp_path / "runs").glob("*/meta.json")
    assert json.loads(meta_path.read_text())["metrics"]["antonym"]["n_test"] == 2


def test_a_task_file_with_a_very_long_name_is_fitted_and_saved(tmp_path, capsys):
    long = write_pairs(tmp_path / ("t" * 240 + ".json"), [(f"w{i}", "y") for i in range(20)])
    rc, out, err = run(["fit", "--method", "TV", "--model", "tiny-llama", "--task", long, "--prompts", "3",
                        "--shots", "1", "--no-eval", "--store", tmp_path / "runs", "--no-progress"], capsys)
    assert rc == 0, err
    (folder,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(folder.name) < 120 and json.loads((folder / "meta.json").read_text())["tasks"] == ["t" * 240]


def test_the_fit_config_check_serves_every_caller():
    from workbench.methods import METHODS
    from workbench.methods.site import SiteConfig

    for method in METHODS.values():
        method.Config().check(n_layers=30)  # the defaults are fine
    with pytest.raises(ValueError, match="steps must be >= 1"):
        SiteConfig(steps=0).check()
    with pytest.raises(ValueError, match="batch_size must be a whole number"):
        SiteConfig(batch_size=2.5).check()


# ----------------------------------------------------------------------------- 7. devices


@pytest.mark.parametrize(
    "device, message",
    [
        ("nonsense", "Unknown device 'nonsense': use cpu, cuda, cuda:N or mps"),
        ("meta", "Unsupported device 'meta'"),
        ("cuda:99", "cuda:99"),
    ],
)
def test_a_device_the_machine_lacks_is_a_clear_error(capsys, device, message):
    rc, _, err = run(
        ["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "0", "--device", device], capsys
    )
    assert_one_line_error(rc, err, message)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(capsys):
    rc, _, err = run(
        ["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "0", "--device", "cuda"], capsys
    )
    assert_one_line_error(rc, err, "--device cuda: CUDA is not available here")


# ----------------------------------------------------------------------------- no traceback, ever


def test_an_unexpected_failure_is_one_line_too(capsys, monkeypatch):
    monkeypatch.setattr(cli, "cmd_tasks", lambda args: 1 / 0)
    rc, _, err = run(["tasks"], capsys)
    assert_one_line_error(rc, err, "unexpected ZeroDivisionError: division by zero (WORKBENCH_DEBUG=1")
