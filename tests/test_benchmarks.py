"""The benchmark scripts run end to end (on a tiny model) and write their tables."""


import pandas as pd
import pytest
from scripts import load_script


def test_site_benchmark_writes_one_row_per_task_and_a_mean(tmp_path, capsys):
    load_script("bench_site").main(["--model", "tiny-llama", "--tasks", "antonym", "uppercase",
                                    "--limit", "4", "--steps", "2", "--no-save", "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "site_tiny-llama_qa.csv")
    assert list(table["task"]) == ["antonym", "uppercase", "MEAN"]
    assert (table["n_test"].iloc[:2] == 4).all() and (table["fit_s"] > 0).all()
    assert "| antonym" in capsys.readouterr().out


def test_bos_benchmark_measures_both_prompt_starts(tmp_path, capsys):
    load_script("bench_bos").main(["--model", "tiny-llama", "--tasks", "antonym", "--shots", "0", "2",
                                   "--limit", "3", "--methods", "TV", "--out", str(tmp_path)])  # fmt: skip
    table = pd.read_csv(tmp_path / "bos_tiny-llama_qa.csv", keep_default_na=False)
    assert len(table) == 2 * 2 * 3  # bos x split x (zero-shot, 2-shot ICL, TV)
    assert sorted(set(table["method"])) == ["2-shot ICL", "TV", "zero-shot"]
    assert (table[table["method"] == "TV"]["fit_s"].astype(float) > 0).all()  # fitted once per prompt start
    assert (
        set(table[table["bos"]]["prompt_start"]) == {"<bos>"}
        and set(table[~table["bos"]]["prompt_start"]) == {""}
    )
    assert (table["n"] == 3).all() and table[["first_token_acc", "prefix_match", "exact_match"]].apply(
        lambda c: c.between(0, 1)
    ).all().all()
    assert "pooled over 1 tasks" in capsys.readouterr().out


def test_methods_benchmark_covers_every_method(tmp_path):
    from workbench.store.runs import RunStore

    load_script("bench_methods").main(["--model", "tiny-llama", "--tasks", "antonym", "--limit", "3",
                                       "--methods", "TV", "LTV", "--out", str(tmp_path),
                                       "--store", str(tmp_path / "runs")])
    table = pd.read_csv(tmp_path / "methods_tiny-llama_qa.csv")
    assert list(table["method"]) == ["zero-shot", "10-shot ICL", "TV", "LTV"]
    assert table.loc[table.method == "LTV", "fit_s"].iloc[0] > 0
    runs = RunStore(tmp_path / "runs").list()
    assert sorted(runs["method"]) == ["LTV", "TV"]
    for metrics, method in zip(runs["metrics"], runs["method"]):  # each run carries its row's test scores
        row = table[table.method == method].iloc[0]
        assert (
            metrics["antonym"]["test_first_token_acc"] == row["first_token_acc"]
            and metrics["antonym"]["n_test"] == 3
        )


def test_head_map_agreement_reads_stored_runs_and_prints_each_pair(tmp_path, capsys, tiny_llama):
    from workbench.methods import METHODS
    from workbench.store.codec import to_run
    from workbench.store.runs import RunStore
    from workbench.tasks.files import load_task

    store = RunStore(tmp_path)
    tiny = {"FV": dict(n_prompts=4, n_shuffled=4, shots=2), "LTV": dict(n_prompts=4, shots=2, steps=2),
            "SITE": dict(n_prompts=4, shots=2, steps=2)}
    antonym = load_task("antonym")
    for name, settings in tiny.items():
        fit = METHODS[name].fit(tiny_llama, antonym, METHODS[name].Config(**settings))
        store.save(to_run(fit, tiny_llama, antonym))
    module = load_script("head_map_agreement")
    table = module.agreement(store, "tiny-llama", ["antonym", "uppercase"], k=3)
    assert list(zip(table["a"], table["b"])) == [("SITE", "FV"), ("SITE", "LTV"), ("FV", "LTV")]
    assert set(table["task"]) == {"antonym"}  # uppercase has no runs: skipped
    module.main(["--model", "tiny-llama", "--tasks", "antonym", "--k", "3", "--store", str(tmp_path)])
    assert "| SITE | FV  |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no task has a run"):
        module.agreement(store, "tiny-llama", ["uppercase"], k=3)
