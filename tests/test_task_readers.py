"""The task-file readers against random and hostile files (hypothesis).

The property: whatever records are written, reading the file either gives exactly the
pairs that were written (each value stripped, as documented) or raises the project's own
:class:`TaskFileError` naming the file. Never another exception, never other pairs.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from workbench.tasks.files import LINE_BREAKS, TaskFileError, read_pairs

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# Text of any kind: line breaks of every sort, quotes, commas, spaces, control characters,
# lone surrogates (JSON can carry them as escapes), and the ordinary words of a task.
text = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.sampled_from(list(LINE_BREAKS + ' ,"\'\t\x00\ufeff\ud800ab')), max_size=6),
    st.from_regex(r"[a-z]{1,8}", fullmatch=True),
)
value = st.one_of(text, text, st.integers(), st.booleans(), st.none(), st.lists(text, max_size=2))
record = st.one_of(
    st.fixed_dictionaries({"input": value, "output": value}),
    st.fixed_dictionaries({"input": text, "output": text}, optional={"note": text}),
    st.dictionaries(st.sampled_from(["input", "output", "Input", "x"]), value, max_size=3),
    value,
)
# Mostly-valid files, so the property is tested on files that parse as well as on ones that fail.
words = st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=5, max_size=10, unique=True)


def expected_pairs(records: list) -> list[tuple[str, str]]:
    return [(str(r["input"]).strip(), str(r["output"]).strip()) for r in records]


def write(tmp_path, suffix: str, data: str | bytes):
    path = tmp_path / f"{uuid.uuid4().hex}{suffix}"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    return path


def read_or_error(path):
    """The pairs, or None after the project's own error (naming the file). Pairs that are
    read keep the validation's promises: stripped, non-empty, one line, valid Unicode,
    unique inputs."""
    try:
        pairs = read_pairs(path)
    except TaskFileError as err:
        assert str(path) in str(err)
        return None
    for x, y in pairs:
        for v in (x, y):
            assert v and v == v.strip() and not set(v) & set(LINE_BREAKS)
            v.encode("utf-8")
    assert len({x for x, _ in pairs}) == len(pairs)
    return pairs


@SETTINGS
@given(records=st.lists(record, max_size=8))
def test_any_json_records_parse_to_the_written_pairs_or_a_task_file_error(tmp_path, records):
    path = write(tmp_path, ".json", json.dumps(records))
    pairs = read_or_error(path)
    if pairs is not None:
        assert pairs == expected_pairs(records)


@SETTINGS
@given(inputs=words, outputs=st.lists(text, min_size=10, max_size=10), spaced=st.booleans())
def test_mostly_valid_json_files(tmp_path, inputs, outputs, spaced):
    records = [{"input": f" {x} " if spaced else x, "output": y} for x, y in zip(inputs, outputs)]
    pairs = read_or_error(write(tmp_path, ".json", json.dumps(records)))
    if pairs is not None:
        assert pairs == expected_pairs(records)
    elif all(
        y.strip() and not set(y) & set(LINE_BREAKS) and "\ud800" not in y for y in outputs[: len(inputs)]
    ):
        pytest.fail("a file of plain words and usable answers was refused")


@SETTINGS
@given(
    rows=st.lists(st.tuples(text, text), max_size=8),
    header=st.sampled_from(["input,output", " Input , OUTPUT", "output,input"]),
)
@example(rows=[("hot\ncold", "x")] + [(f"w{i}", "y") for i in range(6)], header="input,output")
def test_any_csv_rows_parse_to_the_written_pairs_or_a_task_file_error(tmp_path, rows, header):
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    flipped = header.startswith("output")
    for x, y in rows:
        writer.writerow([y, x] if flipped else [x, y])
    path = write(tmp_path, ".csv", header + "\n" + buffer.getvalue())
    pairs = read_or_error(path)
    if pairs is not None:
        assert pairs == expected_pairs([{"input": x, "output": y} for x, y in rows])


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '[{"input": ']))
def test_nesting_of_any_depth_is_read_or_refused(tmp_path, depth, opener):
    read_or_error(write(tmp_path, ".json", opener * depth))


@SETTINGS
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".json", ".csv"]))
def test_any_bytes_are_read_or_refused_with_a_task_file_error(tmp_path, data, suffix):
    read_or_error(write(tmp_path, suffix, data))


# ----------------------------------------------------------------------------- the probes' cases


def _rows(n=8):
    return "".join(f"w{i},W{i}\n" for i in range(n))


@pytest.mark.parametrize(
    "name, content, message",
    [
        (
            "multiline.csv",
            'input,output\n"hot\ncold",x\n' + _rows(),
            "record 0: field 'input' contains a line break (U+000A)",
        ),
        (
            "dupheader.csv",
            "input,Input,output\n" + _rows(),
            "names column 'input' more than once (columns [1, 2])",
        ),
        (
            "extra.csv",
            "input,output\nin, inside,out\n" + _rows(),
            "record 0 (line 2) has 3 values, the header 2 columns",
        ),
        (
            "bigfield.csv",
            "input,output\n" + "x" * 140_000 + ",y\n" + _rows(),
            "unreadable CSV at line 2: field larger than field limit",
        ),
        ("u2028.json", json.dumps([{"input": "a\u2028b", "output": "x"}]), "contains a line break (U+2028)"),
        ("u0085.json", json.dumps([{"input": "a\u0085b", "output": "x"}]), "contains a line break (U+0085)"),
        ("vt.json", json.dumps([{"input": "a\x0bb", "output": "x"}]), "contains a line break (U+000B)"),
        ("trailing.json", json.dumps([{"input": "a", "output": "x\n"}]), "contains a line break (U+000A)"),
        ("surrogate.json", '[{"input": "a\\ud800", "output": "x"}]', "is not valid Unicode (U+D800"),
        ("nested.json", "[" * 100_000 + "]" * 100_000, "JSON nested too deeply"),
        (
            "dupkey.json",
            '[{"input": "a", "input": "b", "output": "c"}]',
            "record 0: key 'input' appears more than once",
        ),
        ("nan.json", '[{"input": NaN, "output": "c"}]', "NaN is not valid JSON"),
        ("object.json", '{"input": "a", "output": "b"}', "got dict"),
    ],
)
def test_hostile_task_files_are_clear_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TaskFileError, match=re.escape(str(path)) + ".*" + re.escape(message)):
        read_pairs(path)


def test_json_numbers_keep_their_literal_text(tmp_path):
    path = tmp_path / "numbers.json"
    path.write_text(json.dumps([{"input": f"n{i}", "output": "x"} for i in range(5)])[:-1]
                    + ', {"input": 1.10, "output": 12345678901234567890123}]', encoding="utf-8")
    assert read_pairs(path)[-1] == ("1.10", "12345678901234567890123")


def test_a_quoted_comma_and_extra_columns_are_fine(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text(
        'input,output,note\n"in, inside",out,n\n' + "".join(f"w{i},W{i},\n" for i in range(5)),
        encoding="utf-8",
    )
    assert read_pairs(path)[0] == ("in, inside", "out")
