"""The task library (built-in tasks, the file loader, splits) and k-shot prompt building."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

import workbench.tasks.files as tasks_module
from workbench.tasks.files import DATA_DIR, TaskFileError, catalog, list_tasks, load_task, read_pairs
from workbench.tasks.prompts import DEFAULT_TEMPLATE, TEMPLATES, PromptTemplate, build_prompts, get_template
from workbench.tasks.task import Task

CATALOG_FILE = DATA_DIR / "catalog.json"
RAW_CATALOG = json.loads(CATALOG_FILE.read_text(encoding="utf-8")) if CATALOG_FILE.is_file() else {}
BUILT_IN = sorted(RAW_CATALOG)


# ----------------------------------------------------------------------------- built-in tasks


def test_at_least_30_built_in_tasks():
    assert len(list_tasks()) >= 30


def test_catalog_and_task_files_match():
    files = {p.stem for p in DATA_DIR.glob("*.json")} - {"catalog"}
    assert files == set(RAW_CATALOG), "every data/tasks/*.json needs a catalog entry and vice versa"
    assert list_tasks() == sorted(RAW_CATALOG)


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_task_is_well_formed(name):
    info = catalog()[name]
    task = load_task(name)
    assert task.name == name
    assert len(task) >= 50
    assert isinstance(info.get("case_sensitive"), bool)
    assert task.case_sensitive == info["case_sensitive"]
    assert info.get("description", "").strip() and info.get("category", "").strip()
    for x, y in task.pairs:
        assert isinstance(x, str) and isinstance(y, str)
        assert x.strip() and y.strip(), f"empty value in {name}: {(x, y)!r}"
        assert x == x.strip() and y == y.strip()
        assert "\n" not in x + y
    inputs = [x if task.case_sensitive else x.lower() for x, _ in task.pairs]
    dupes = [x for x, n in Counter(inputs).items() if n > 1]
    assert not dupes, f"{name} has duplicate inputs: {dupes[:5]}"


def test_catalog_entries_have_the_loaded_metadata():
    task = load_task("antonym")
    assert task.description == RAW_CATALOG["antonym"]["description"]
    assert task.category == RAW_CATALOG["antonym"]["category"]
    assert task.path.endswith("antonym.json")


# ----------------------------------------------------------------------------- splits


def _task(n: int) -> Task:
    return Task(name=f"t{n}", pairs=[(f"x{i}", f"y{i}") for i in range(n)])


@pytest.mark.parametrize("name", ["antonym", "country_capital", "adjective_superlative"])
def test_splits_are_deterministic_disjoint_and_complete(name):
    task = load_task(name)
    a, b = task.split(seed=0), task.split(seed=0)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    parts = [set(a.train), set(a.valid), set(a.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(a.train) + len(a.valid) + len(a.test) == len(task)
    assert parts[0] | parts[1] | parts[2] == set(task.pairs)
    n = len(task)
    for part, frac in zip((a.train, a.valid, a.test), (0.70, 0.09, 0.21)):
        assert abs(len(part) - frac * n) <= 1.5, (len(part), frac * n)


def test_split_depends_on_seed():
    task = load_task("antonym")
    assert task.split(seed=0).test != task.split(seed=1).test
    assert task.split(seed=1).test == task.split(seed=1).test


@pytest.mark.parametrize("n", [5, 7, 50, 1000])
def test_split_sizes_for_any_size(n):
    s = _task(n).split(seed=3)
    assert len(s.train) >= 1 and len(s.valid) >= 1 and len(s.test) >= 1
    assert len(s.train) + len(s.valid) + len(s.test) == n
    if n >= 50:  # within rounding (1 item each way, 2 for train) of 70 / 9 / 21
        for part, frac in zip((s.train, s.valid, s.test), (0.70, 0.09, 0.21)):
            assert abs(len(part) - frac * n) <= 1.5, (n, len(part), frac * n)


def test_split_lookup_by_name():
    s = _task(20).split()
    assert s["train"] is s.train and s["test"] is s.test
    with pytest.raises(KeyError, match="Unknown split"):
        s["dev"]


def test_too_few_items_to_split():
    with pytest.raises(ValueError, match="too few to split"):
        _task(2).split()


# ----------------------------------------------------------------------------- the loader


def _write_json(tmp_path, records, name="task.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _good(n=6):
    return [{"input": f"in{i}", "output": f"out{i}"} for i in range(n)]


def _names_file(path):
    return re.escape(str(path))


def test_valid_json_file_loads(tmp_path):
    path = _write_json(tmp_path, _good(6) + [{"input": " padded ", "output": 7}])
    task = load_task(path)
    assert task.name == "task" and task.category == "user" and not task.case_sensitive
    assert task.pairs[0] == ("in0", "out0")
    assert task.pairs[-1] == ("padded", "7")  # stripped, numbers read as text
    assert len(task) == 7


def test_malformed_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[{"input": "a", "output": "b"},\n{"input": ', encoding="utf-8")
    with pytest.raises(TaskFileError, match=_names_file(path) + r": invalid JSON at line 2"):
        read_pairs(path)


def test_json_not_a_list(tmp_path):
    path = _write_json(tmp_path, {"input": "a", "output": "b"})
    with pytest.raises(TaskFileError, match=_names_file(path) + r": expected a JSON list .* got dict"):
        read_pairs(path)


def test_record_not_an_object(tmp_path):
    records = _good(6)
    records[2] = ["a", "b"]
    path = _write_json(tmp_path, records)
    with pytest.raises(TaskFileError, match=_names_file(path) + r": record 2: expected an object"):
        read_pairs(path)


@pytest.mark.parametrize("field", ["input", "output"])
def test_missing_field(tmp_path, field):
    records = _good(6)
    del records[3][field]
    path = _write_json(tmp_path, records)
    with pytest.raises(TaskFileError, match=_names_file(path) + rf": record 3: missing field '{field}'"):
        read_pairs(path)


def test_null_field_counts_as_missing(tmp_path):
    records = _good(6)
    records[4]["output"] = None
    path = _write_json(tmp_path, records)
    with pytest.raises(TaskFileError, match=r"record 4: missing field 'output'"):
        read_pairs(path)


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_field(tmp_path, value):
    records = _good(6)
    records[1]["input"] = value
    path = _write_json(tmp_path, records)
    with pytest.raises(TaskFileError, match=_names_file(path) + r": record 1: field 'input' is empty"):
        read_pairs(path)


@pytest.mark.parametrize(
    "value, message",
    [
        (["a"], "field 'output' must be text, got list"),
        (True, "field 'output' must be text, got bool"),
        ("two\nlines", "field 'output' contains a line break"),
        ("x" * 20_001, "field 'output' has 20001 characters"),
    ],
)
def test_bad_field_values(tmp_path, value, message):
    records = _good(6)
    records[5]["output"] = value
    path = _write_json(tmp_path, records)
    with pytest.raises(TaskFileError, match=_names_file(path) + r": record 5: " + re.escape(message)):
        read_pairs(path)


def test_duplicate_input(tmp_path):
    records = _good(6)
    records[4]["input"] = "in1"
    path = _write_json(tmp_path, records)
    with pytest.raises(
        TaskFileError, match=_names_file(path) + r": record 4: input 'in1' already appears in record 1"
    ):
        read_pairs(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_bytes(b"")
    with pytest.raises(TaskFileError, match=_names_file(path) + r": the file is empty"):
        read_pairs(path)


def test_zero_records(tmp_path):
    path = _write_json(tmp_path, [])
    with pytest.raises(TaskFileError, match=_names_file(path) + r": no records"):
        read_pairs(path)


def test_too_few_records(tmp_path):
    path = _write_json(tmp_path, _good(4))
    with pytest.raises(TaskFileError, match=_names_file(path) + r": 4 records; a task needs at least 5"):
        read_pairs(path)


def test_too_many_records(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks_module, "MAX_RECORDS", 10)
    path = _write_json(tmp_path, _good(11))
    with pytest.raises(TaskFileError, match=_names_file(path) + r": 11 records is over the limit of 10"):
        read_pairs(path)


def test_huge_file(tmp_path, monkeypatch):
    path = _write_json(tmp_path, _good(6))
    monkeypatch.setattr(tasks_module, "MAX_FILE_BYTES", 64)
    with pytest.raises(TaskFileError, match=_names_file(path) + r": .* bytes is over the .* limit"):
        read_pairs(path)


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"input": "caf\u00e9", "output": "x"}]'.encode("latin-1"))
    with pytest.raises(TaskFileError, match=_names_file(path) + r": not UTF-8 text"):
        read_pairs(path)


def test_csv_without_header_columns(tmp_path):
    path = tmp_path / "noheader.csv"
    path.write_text("hot,cold\nbig,small\nup,down\nin,out\nleft,right\n", encoding="utf-8")
    with pytest.raises(TaskFileError, match=_names_file(path) + r": a CSV task file needs a header row"):
        read_pairs(path)


def test_valid_csv(tmp_path):
    path = tmp_path / "opposites.csv"
    rows = ["hot,cold", "big,small", "up,down", '"in, inside",out', "left,right", "yes,no"]
    # a BOM and a header with odd case and spaces are fine
    path.write_text("\ufeff Input , OUTPUT\n" + "\n".join(rows) + "\n", encoding="utf-8")
    task = load_task(path)
    assert task.name == "opposites"
    assert task.pairs == [("hot", "cold"), ("big", "small"), ("up", "down"), ("in, inside", "out"),
                          ("left", "right"), ("yes", "no")]


def test_csv_row_with_missing_value_names_the_record(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("input,output\na,b\nc,d\ne\nf,g\nh,i\nj,k\n", encoding="utf-8")
    with pytest.raises(TaskFileError, match=_names_file(path) + r": record 2: missing field 'output'"):
        read_pairs(path)


def test_unknown_task_name():
    with pytest.raises(TaskFileError, match=r"No built-in task or file named 'no_such_task'.*antonym"):
        load_task("no_such_task")


def test_a_folder_without_split_files_is_a_clear_error(tmp_path):
    with pytest.raises(TaskFileError, match=_names_file(tmp_path) + r": a task folder holds train.json"):
        load_task(tmp_path)
    with pytest.raises(TaskFileError, match=_names_file(tmp_path) + r": not a file"):
        read_pairs(tmp_path)


def test_task_file_error_is_a_value_error():
    assert issubclass(TaskFileError, ValueError)


# ----------------------------------------------------------------------------- prompts

POOL = [(f"word{i}", f"ans{i}") for i in range(30)]


def _demo_lines(prompt: str) -> list[str]:
    """Arrow-template demonstrations: every line but the last (the query)."""
    return prompt.split("\n")[:-1]


@pytest.mark.parametrize("k", [1, 3, 10])
def test_k_shot_prompt_has_k_demonstrations(k):
    arrow = get_template("arrow")
    prompts = build_prompts(arrow, ["query"], POOL, k, seed=0)
    lines = _demo_lines(prompts[0])
    assert len(lines) == k
    assert set(lines) <= {f"{x} -> {y}" for x, y in POOL}
    assert len(set(lines)) == k  # no demonstration twice
    assert prompts[0].endswith("\nquery ->")


def test_qa_template_k_shot():
    prompt = build_prompts(TEMPLATES["qa"], ["query"], POOL, 4, seed=0)[0]
    assert prompt.count("Q: ") == 5 and prompt.count("\nA: ") == 4
    assert prompt.endswith("Q: query\nA:")


def test_query_is_never_a_demonstration():
    arrow = get_template("arrow")
    queries = [x for x, _ in POOL]
    prompts = build_prompts(arrow, queries, POOL, len(POOL) - 1, seed=5)
    for x, prompt in zip(queries, prompts):
        lines = _demo_lines(prompt)
        assert len(lines) == len(POOL) - 1
        assert not any(line.startswith(f"{x} ->") for line in lines)


def test_prompts_are_reproducible_by_seed():
    arrow = get_template("arrow")
    queries = ["a", "b", "c"]
    first = build_prompts(arrow, queries, POOL, 5, seed=11)
    assert build_prompts(arrow, queries, POOL, 5, seed=11) == first
    assert build_prompts(arrow, queries, POOL, 5, seed=12) != first


def test_zero_shot_is_the_query_alone():
    assert build_prompts(get_template("arrow"), ["hot"], POOL, 0) == ["hot ->"]
    assert build_prompts(get_template("qa"), ["hot"], POOL, 0) == ["Q: hot\nA:"]
    assert build_prompts(get_template("arrow"), ["hot"], [], 0) == ["hot ->"]  # needs no pool


def test_demonstration_format():
    assert get_template("arrow").demonstration("hot", "cold") == "hot -> cold\n"
    assert get_template("qa").demonstration("hot", "cold") == "Q: hot\nA: cold\n\n"


def test_custom_template():
    t = get_template("Input: {x}\\nOutput:|\\n\\n")
    assert (t.name, t.query, t.separator) == ("custom", "Input: {x}\nOutput:", "\n\n")
    assert build_prompts(t, ["q"], [("a", "b"), ("c", "d")], 1, seed=0)[0].endswith("\n\nInput: q\nOutput:")
    assert get_template("say {x} =").separator == "\n"
    assert get_template(None) is TEMPLATES[DEFAULT_TEMPLATE]
    assert "{x}" in get_template("qa").describe() and get_template("qa").describe().startswith("qa: ")


@pytest.mark.parametrize("spec", ["nope", "no placeholder here"])
def test_unknown_template(spec):
    with pytest.raises(ValueError, match="Unknown prompt template"):
        get_template(spec)


def test_template_validation():
    with pytest.raises(ValueError, match=r"must contain '\{x\}'"):
        PromptTemplate("bad", "no placeholder", "\n")
    with pytest.raises(ValueError, match="must contain a newline"):
        PromptTemplate("bad", "{x} =", " | ")
    with pytest.raises(ValueError, match="must contain a newline"):
        get_template("{x} =| ;")


def test_shots_errors():
    arrow = get_template("arrow")
    with pytest.raises(ValueError, match="shots must be >= 0"):
        build_prompts(arrow, ["q"], POOL, -1)
    with pytest.raises(ValueError, match="need at least 31 demonstration pairs, got 30"):
        build_prompts(arrow, ["q"], POOL, 30)


# ----------------------------------------------------------------------------- the literature's layout


def _write(path, pairs):
    path.write_text(json.dumps([{"input": x, "output": y} for x, y in pairs]), encoding="utf-8")


def test_a_split_folder_keeps_its_splits(tmp_path):
    folder = tmp_path / "person_instrument"
    folder.mkdir()
    parts = {"train": [(f"t{i}", f"a{i}") for i in range(12)], "valid": [("v1", "b"), ("v2", "c")],
             "test": [("q1", "d"), ("q2", "e"), ("q3", "f")]}
    for name, pairs in parts.items():
        _write(folder / f"{name}.json", pairs)
    task = load_task(folder)
    assert task.name == "person_instrument" and len(task) == 17
    for seed in (0, 1, 7):
        splits = task.split(seed)
        assert (splits.train, splits.valid, splits.test) == (parts["train"], parts["valid"], parts["test"])
    assert task.split_sizes(3) == {"train": 12, "valid": 2, "test": 3}
    (folder / "valid.json").unlink()
    with pytest.raises(TaskFileError, match="missing valid.json"):
        load_task(folder)


def test_the_duplicate_option_keeps_the_first_and_reports_what_it_dropped(tmp_path):
    pairs = [("Yo-Yo Ma", "cello"), ("a", "1"), ("Yo-Yo Ma", "piano"), ("b", "2"), ("c", "3"), ("a", "9"),
             ("d", "4"), ("e", "5")]
    path = tmp_path / "instruments.json"
    _write(path, pairs)
    with pytest.raises(
        TaskFileError, match=r"record 2: input 'Yo-Yo Ma' already appears in record 0.*--keep-first"
    ):
        load_task(path)
    task = load_task(path, keep_first_duplicates=True)
    assert task.meta["duplicates_dropped"] == 2
    assert task.pairs == [("Yo-Yo Ma", "cello"), ("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]
    # across the splits of a folder too: an input in train and test would leak
    folder = tmp_path / "folder"
    folder.mkdir()
    _write(folder / "train.json", [("x", "1"), ("y", "2"), ("z", "3")])
    _write(folder / "valid.json", [("w", "4")])
    _write(folder / "test.json", [("x", "9"), ("u", "5")])
    with pytest.raises(TaskFileError, match="already appears in an earlier split"):
        load_task(folder)
    kept = load_task(folder, keep_first_duplicates=True)
    assert kept.split().test == [("u", "5")] and kept.meta["duplicates_dropped"] == 1


def test_sentence_inputs_are_not_refused_by_length(tmp_path):
    sentence = "The committee, which had met every spring since its founding, " * 7  # ~450 characters
    pairs = [(f"{sentence} ({i})", f"answer {i}") for i in range(6)]
    path = tmp_path / "extractive.json"
    _write(path, pairs)
    assert len(pairs[0][0]) > 400 and len(load_task(path)) == 6
