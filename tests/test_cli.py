"""The command line (``python -m workbench``) and the grid evaluation behind ``eval``.

Most tests call :func:`workbench.cli.main` in-process with the tiny model loaded once per
module; one test runs the real ``python -m workbench`` in a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import workbench.model.loading as models_module
from workbench import cli
from workbench.experiments.grid import evaluate_grid, summarize_grid
from workbench.tasks.files import list_tasks, load_task, resolve_tasks
from workbench.tasks.prompts import DEFAULT_TEMPLATE, get_template

ROOT = Path(__file__).resolve().parent.parent
SUMMARY_COLUMNS = [
    "model", "task", "method", "template", "prompt_start", "shots", "when", "n", "first_token_acc",
    "prefix_match", "exact_match", "prompt_tokens", "seconds_per_query", "majority_baseline",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """WORKBENCH_CACHE in a temp dir for this module (the tiny models write configs there)."""
    path = tmp_path_factory.mktemp("workbench-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_CACHE", str(path))
        yield path


@pytest.fixture(scope="module")
def model_cache(cache_dir):
    return {}


@pytest.fixture(autouse=True)
def fast_models(monkeypatch, model_cache, cache_dir):
    """Load each model once per module; unknown names still go through the real loader."""
    real = models_module.load_model

    def load(name="smollm2-135m-instruct", device=None, prepend_bos=None):
        assert name in models_module.TINY_MODELS or name.startswith("no-such"), "tests use tiny models only"
        if (name, prepend_bos) not in model_cache:
            model_cache[name, prepend_bos] = real(name, device="cpu", prepend_bos=prepend_bos)
        return model_cache[name, prepend_bos]

    monkeypatch.setattr(models_module, "load_model", load)


def run(argv, capsys):
    rc = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def _user_task(tmp_path, n=12, name="pairs.csv"):
    path = tmp_path / name
    path.write_text("input,output\n" + "".join(f"w{i},W{i}\n" for i in range(n)), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- listing


def test_models(capsys):
    rc, out, err = run(["models"], capsys)
    assert rc == 0
    for name in models_module.available_models():
        assert name in out
    assert "local" in out and "Hugging Face cache" in out


def test_tasks(capsys):
    rc, out, _ = run(["tasks"], capsys)
    assert rc == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["task", "items", "category", "case_sensitive"]
    for name in list_tasks():
        row = next(line for line in lines if line.split()[:1] == [name])
        task = load_task(name)
        assert row.split()[1] == str(len(task))
        assert row.split()[2] == task.category
        assert task.description in row
    assert f"{len(list_tasks())} built-in tasks" in out


def test_show_task(capsys):
    rc, out, _ = run(["show-task", "antonym", "--shots", "3", "--template", "arrow"], capsys)
    assert rc == 0
    splits = load_task("antonym").split(0)
    assert f"train {len(splits.train)}, valid {len(splits.valid)}, test {len(splits.test)}" in out
    assert get_template("arrow").describe() in out
    x, y = splits.test[0]
    prompt = out.split("-" * 60 + "\n")[1].rstrip("\n")
    assert prompt.endswith(f"{x} ->")
    assert len(prompt.splitlines()) == 4  # 3 demonstrations + the query
    assert f"expected answer {y!r}" in out


def test_show_task_with_qa_template_and_user_file(capsys, tmp_path):
    path = _user_task(tmp_path)
    rc, out, _ = run(["show-task", path, "--template", "qa", "--shots", "2"], capsys)
    assert rc == 0
    assert "task:           pairs" in out and "12 (train" in out
    prompt = out.split("-" * 60 + "\n")[1]
    assert prompt.count("Q: ") == 3 and prompt.count("A: W") == 2


def test_show_task_errors(capsys, tmp_path):
    rc, _, err = run(["show-task", "antonym", "--template", "nonsense"], capsys)
    assert rc == 2 and err.startswith("error: Unknown prompt template")
    rc, _, err = run(["show-task", tmp_path / "missing.json"], capsys)
    assert rc == 2 and "No built-in task or file named" in err


# ----------------------------------------------------------------------------- eval


def test_eval_csv_output_subprocess(tmp_path, cache_dir):
    """The real entry point: `python -m workbench eval ... --output FILE.csv`."""
    out_file = tmp_path / "tmp.csv"
    env = {**os.environ, "WORKBENCH_CACHE": str(cache_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "workbench", "eval", "--model", "tiny-llama", "--task", "antonym",
         "--shots", "0", "2", "--limit", "4", "--format", "csv", "--output", str(out_file),
         "--device", "cpu"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    frame = pd.read_csv(out_file)
    assert list(frame.columns) == SUMMARY_COLUMNS
    assert frame["shots"].tolist() == [0, 2]
    assert frame["n"].tolist() == [4, 4]
    assert set(frame["task"]) == {"antonym"} and set(frame["model"]) == {"tiny-llama"}
    assert frame["exact_match"].between(0, 1).all() and frame["majority_baseline"].between(0, 1).all()
    assert (frame.loc[1, "prompt_tokens"] > frame.loc[0, "prompt_tokens"])  # demonstrations make it longer
    assert f"wrote 2 summary rows (csv) to {out_file}" in proc.stdout
    assert f"template {DEFAULT_TEMPLATE}" in proc.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["tmp.csv"]  # no temp file left behind


def test_eval_json_to_stdout_parses(capsys):
    rc, out, err = run(
        ["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "0", "1", "--limit", "3",
         "--format", "json"], capsys,
    )
    assert rc == 0, err
    records = json.loads(out)  # the template note goes to stderr, so stdout is pure JSON
    assert [r["shots"] for r in records] == [0, 1]
    assert set(records[0]) == set(SUMMARY_COLUMNS)
    assert f"template {DEFAULT_TEMPLATE}" in err


def test_eval_table_states_the_template(capsys):
    rc, out, _ = run(
        ["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "1", "--limit", "2",
         "--template", "qa", "--no-progress"], capsys,
    )
    assert rc == 0
    assert get_template("qa").describe() in out
    header = out.splitlines()[1].split()
    assert header == SUMMARY_COLUMNS
    assert "1-shot ICL" in out


def test_eval_progress_bar_reaches_the_total(capsys):
    rc, _, err = run(
        ["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "0", "1", "--limit", "3"], capsys
    )
    assert rc == 0
    assert "6/6" in err  # 2 shot counts x 3 queries


def test_eval_per_query(capsys, tmp_path):
    out_file = tmp_path / "rows.json"  # format from the extension
    task_file = _user_task(tmp_path)
    rc, out, err = run(
        ["eval", "--model", "tiny-gpt2", "--task", "antonym", "--task", task_file, "--shots", "0", "2",
         "--limit", "3", "--per-query", "--output", out_file, "--no-progress"], capsys,
    )
    assert rc == 0, err
    rows = pd.DataFrame(json.loads(out_file.read_text()))
    assert len(rows) == 2 * 2 * 3  # tasks x shots x queries
    assert {"input", "target", "prediction", "exact_match", "prompt"} <= set(rows.columns)
    assert rows.groupby(["task", "shots"]).size().to_dict() == {
        ("antonym", 0): 3, ("antonym", 2): 3, ("pairs", 0): 3, ("pairs", 2): 3,
    }
    test_inputs = [x for x, _ in load_task("antonym").split(0).test[:3]]
    assert rows.loc[rows.task == "antonym", "input"].tolist() == test_inputs * 2
    assert "wrote 12 per-query rows (json)" in out


def test_eval_per_query_csv_stdout(capsys):
    rc, out, _ = run(
        ["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "1", "--limit", "5",
         "--per-query", "--format", "csv", "--no-progress"], capsys,
    )
    assert rc == 0
    frame = pd.read_csv(io.StringIO(out))
    assert len(frame) == 5 and (frame["shots"] == 1).all()


def test_unknown_model(capsys):
    rc, out, err = run(["eval", "--model", "no-such-model-xyz", "--task", "antonym", "--shots", "0"], capsys)
    assert rc == 2
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "no-such-model-xyz" in error_lines[0]
    assert "Traceback" not in err and out == ""


def test_bad_task_file(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"input": "a"}]', encoding="utf-8")
    rc, out, err = run(["eval", "--model", "tiny-llama", "--task", bad, "--shots", "0"], capsys)
    assert rc == 2
    assert err.startswith("error: ") and str(bad) in err and "record 0" in err
    assert "loading model" not in err  # checked before the model loads
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--template", "nonsense"], "Unknown prompt template"),
        (["--shots", "-1"], "shots must be >= 0"),
        (["--shots", "0", "500"], "too few for 500-shot prompts"),
        (["--limit", "0"], "--limit must be >= 1"),
    ],
)
def test_bad_arguments_fail_fast(capsys, extra, message):
    rc, _, err = run(["eval", "--model", "tiny-llama", "--task", "antonym", *extra], capsys)
    assert rc == 2
    assert err.startswith("error: ") and message in err
    assert "loading model" not in err


def test_missing_task_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["eval", "--model", "tiny-llama"])
    assert exc.value.code == 2
    assert "--task" in capsys.readouterr().err


def test_interrupted_eval_leaves_no_file(capsys, tmp_path, monkeypatch):
    import workbench.experiments.grid as grid

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "evaluate_grid", interrupted)
    out_file = tmp_path / "out.csv"
    rc, _, err = run(["eval", "--model", "tiny-llama", "--task", "antonym", "--output", out_file], capsys)
    assert rc == 130 and "interrupted" in err
    assert list(tmp_path.iterdir()) == []


def test_output_format_choice():
    assert cli._output_format(None, None) == "table"
    assert cli._output_format(None, "x.CSV") == "csv"
    assert cli._output_format(None, "x.json") == "json"
    assert cli._output_format(None, "x.txt") == "table"
    assert cli._output_format("json", "x.csv") == "json"  # --format wins


# ----------------------------------------------------------------------------- the grid


def test_resolve_tasks_all_and_duplicates(tmp_path):
    everything = resolve_tasks(["all"])
    assert [t.name for t in everything] == list_tasks()
    path = _user_task(tmp_path)
    picked = resolve_tasks(["antonym", str(path), "antonym", "all"])
    assert [t.name for t in picked[:2]] == ["antonym", "pairs"]
    assert len(picked) == len(everything) + 1  # antonym once, plus the user file


def test_evaluate_grid_frame_and_progress(model_cache, cache_dir):
    model = models_module.load_model("tiny-llama")
    calls = []
    results = evaluate_grid(
        model, ["antonym", "uppercase"], [0, 1], limit=2, batch_size=1,
        progress=lambda *report: calls.append(report),
    )
    assert len(results) == 2 * 2 * 2
    assert (results["model"] == "tiny-llama").all()
    cells = list(dict.fromkeys(stage for stage, *_ in calls))
    assert cells == ["antonym zero-shot", "antonym 1-shot ICL", "uppercase zero-shot", "uppercase 1-shot ICL"]
    assert [d for _, d, _, _ in calls] == list(range(1, 9)) and {t for _, _, t, _ in calls} == {8}
    for _, _, _, running in calls:  # the running answer metrics of the cell so far
        assert set(running) == {"first_token_acc", "prefix_match", "exact_match"}
        assert all(0 <= v <= 1 for v in running.values())
    summary = summarize_grid(results, resolve_tasks(["antonym", "uppercase"]))
    assert list(summary.columns) == SUMMARY_COLUMNS and len(summary) == 4
    assert summary.set_index("task")["majority_baseline"].between(0, 1).all()


def test_evaluate_grid_rejects_impossible_shots_before_running(model_cache, cache_dir):
    model = models_module.load_model("tiny-llama")
    ran = []
    with pytest.raises(ValueError, match="too few for 1000-shot"):
        evaluate_grid(model, ["antonym"], [0, 1000], progress=lambda *report: ran.append(report))
    assert ran == []


# ----------------------------------------------------------------------------- SITE runs


def test_fit_site_saves_a_run_that_runs_can_list_show_export_and_delete(tmp_path, capsys):
    store = tmp_path / "runs"
    rc, out, _ = run(
        ["fit-site", "--model", "tiny-llama", "--task", "antonym", "--steps", "3", "--prompts", "4",
         "--shots", "2", "--limit", "3", "--store", store, "--no-progress"], capsys,
    )
    assert rc == 0 and "antonym" in out and "test_first_token_acc" in out
    rc, out, _ = run(["runs", "list", "--store", store, "--method", "site"], capsys)
    run_id = out.splitlines()[1].split()[0]
    assert rc == 0 and run_id.startswith("site-antonym-tiny-llama-")
    rc, out, _ = run(["runs", "show", run_id, "--store", store], capsys)
    shown = json.loads(out)
    assert shown["tensors"]["beta"] == [3, 4] and shown["config"]["steps"] == 3
    assert shown["metrics"]["antonym"]["n_test"] == 3
    rc, out, _ = run(["runs", "export", run_id, tmp_path / "exported", "--store", store], capsys)
    assert rc == 0 and (tmp_path / "exported" / run_id / "tensors.safetensors").is_file()
    rc, out, _ = run(["runs", "delete", run_id, "--store", store], capsys)
    assert rc == 0
    rc, out, _ = run(["runs", "list", "--store", store], capsys)
    assert "No runs" in out


def test_fit_any_registered_method_and_refuse_settings_it_lacks(tmp_path, capsys):
    store = tmp_path / "runs"
    rc, out, _ = run(
        ["fit", "--method", "tv", "--model", "tiny-llama", "--task", "antonym", "--prompts", "3",
         "--shots", "1", "--limit", "2", "--store", store, "--no-progress"], capsys,
    )
    assert rc == 0 and "layer" in out and "test_exact_match" in out
    rc, _, err = run(
        ["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym", "--steps", "3"], capsys
    )
    assert rc == 2 and "TV has no setting steps" in err
    rc, _, err = run(["fit", "--method", "LTV", "--model", "tiny-llama", "--task", "antonym", "uppercase",
                      "--agnostic"], capsys)
    assert rc == 2 and "LTV is fitted per task" in err


def test_runs_migrate_rewrites_old_metadata(tmp_path, capsys):
    store = tmp_path / "runs"
    run(["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym", "--prompts", "3",
         "--shots", "1", "--no-eval", "--store", store, "--no-progress"], capsys)
    (meta_path,) = store.glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    old = {k: v for k, v in meta.items() if k not in ("schema", "split_sizes", "task_sources", "fit")}
    old.update(meta["fit"], fit_seconds=meta["fit"]["seconds"])
    del old["seconds"]
    meta_path.write_text(json.dumps(old))
    rc, out, _ = run(["runs", "migrate", "--store", store], capsys)
    assert rc == 0 and "rewrote the metadata of 1 runs" in out
    # what version 0 can recover
    sizes = {k: meta["split_sizes"]["antonym"][k] for k in ("train", "valid", "test")}
    assert json.loads(meta_path.read_text())["split_sizes"] == {"antonym": sizes}
    rc, out, _ = run(["runs", "migrate", "--store", store], capsys)
    assert "every run" in out


def test_task_agnostic_fit_is_one_run_over_several_tasks(tmp_path, capsys):
    store = tmp_path / "runs"
    rc, out, _ = run(
        ["fit-site", "--model", "tiny-llama", "--task", "antonym", "uppercase", "--agnostic", "--steps", "2",
         "--prompts", "3", "--shots", "1", "--no-eval", "--store", store, "--no-progress"], capsys,
    )
    assert rc == 0
    rc, out, _ = run(["runs", "list", "--store", store], capsys)
    assert len(out.strip().splitlines()) == 2 and "antonym, uppercase" in out


def test_unknown_run_is_an_error(tmp_path, capsys):
    rc, _, err = run(["runs", "show", "nope", "--store", tmp_path], capsys)
    assert rc == 2 and err.startswith("error: No run 'nope'")


def test_no_bos_is_used_and_recorded_by_eval_and_fit(tmp_path, capsys):
    rows = {}
    for flag in ([], ["--no-bos"]):
        out_file = tmp_path / f"rows{len(flag)}.json"
        rc, _, err = run(["eval", "--model", "tiny-llama", "--task", "antonym", "--shots", "0",
                          "--limit", "3", "--per-query", "--output", out_file, "--no-progress",
                          "--device", "cpu", *flag], capsys)
        assert rc == 0, err
        rows[bool(flag)] = pd.DataFrame(json.loads(out_file.read_text()))
    assert set(rows[False]["prompt_start"]) == {"<bos>"} and set(rows[True]["prompt_start"]) == {""}
    # the BOS token, nothing else
    assert (rows[False]["prompt_tokens"] - rows[True]["prompt_tokens"] == 1).all()

    store = tmp_path / "runs"
    rc, _, err = run(["fit", "--method", "TV", "--model", "tiny-llama", "--task", "antonym",
                      "--prompts", "2", "--shots", "1", "--limit", "2", "--no-bos", "--store", store,
                      "--device", "cpu"], capsys)
    assert rc == 0, err
    (meta_path,) = store.glob("*/meta.json")
    assert json.loads(meta_path.read_text())["prompt_start"] == ""
