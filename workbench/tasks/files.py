"""Task files and the built-in task library.

Built-in tasks live in ``data/tasks/<name>.json`` (made by ``data/build_tasks.py``), with
their descriptions in ``data/tasks/catalog.json``. A user file is the same JSON (a list
of ``{"input": ..., "output": ...}``) or a CSV with ``input,output`` columns. A folder
holding ``train.json``, ``valid.json`` and ``test.json`` (the layout of the published
task-vector datasets) is a task that keeps its own splits. Files are validated record by
record; any problem raises :class:`TaskFileError` naming the file and the record.

An input that appears twice is an error, or, with ``keep_first_duplicates``, the first
record is kept and the count of dropped ones is reported (``Task.meta["duplicates_dropped"]``;
the public datasets list some inputs twice). Fields are not limited by characters: the
limit is the model's context, in tokens, checked when prompts are encoded.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from workbench.tasks.task import SPLITS, Pair, Task, TaskSplits

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "tasks"
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_RECORDS = 100_000
MAX_VALUE_CHARS = 20_000  # a sanity bound; the real limit is the model's context in tokens
MIN_RECORDS = 5
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # every character str.splitlines() breaks at


class TaskFileError(ValueError):
    """A task file is malformed; the message names the file and the record."""


def catalog() -> dict[str, dict]:
    """Built-in tasks: name -> {description, case_sensitive, category, source}."""
    path = DATA_DIR / "catalog.json"
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {name: entries[name] for name in sorted(entries) if (DATA_DIR / f"{name}.json").is_file()}


def list_tasks() -> list[str]:
    return list(catalog())


def load_task(
    name_or_path: str | Path, case_sensitive: bool | None = None, keep_first_duplicates: bool = False
) -> Task:
    """A built-in task by name, or a user's JSON / CSV file or split folder by path.

    For a user file, ``case_sensitive`` defaults to a guess: true when most answers are
    their input with only the letter case changed (an uppercase-style task).
    """
    entries = catalog()
    key = str(name_or_path)
    if key in entries:
        info = entries[key]
        path = DATA_DIR / f"{key}.json"
        return Task(
            name=key,
            pairs=read_pairs(path),
            case_sensitive=(
                bool(info.get("case_sensitive", False)) if case_sensitive is None else case_sensitive
            ),
            description=info.get("description", ""),
            category=info.get("category", ""),
            path=str(path),
            meta=info,
        )
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(entries) or "(none: run data/build_tasks.py)"
        raise TaskFileError(f"No built-in task or file named {key!r}. Built-in tasks: {known}.")
    if path.is_dir():
        splits, dropped = _read_split_folder(path, keep_first_duplicates)
        pairs = [pair for name in SPLITS for pair in splits[name]]
    else:
        splits = None
        pairs, dropped = _deduplicate(path, read_pairs(path, check_duplicates=False), keep_first_duplicates)
        if len(pairs) < MIN_RECORDS:
            raise TaskFileError(
                f"{path}: {len(pairs)} records after dropping duplicates; a task needs {MIN_RECORDS}."
            )
    if case_sensitive is None:
        case_changes = sum(x != y and x.lower() == y.lower() for x, y in pairs)
        case_sensitive = case_changes > len(pairs) / 2
    return Task(name=path.stem if path.is_file() else path.name, pairs=pairs, case_sensitive=case_sensitive,
                path=str(path), meta={"duplicates_dropped": dropped}, fixed_splits=splits)


def _read_split_folder(folder: Path, keep_first: bool) -> tuple[TaskSplits, int]:
    """train.json, valid.json and test.json of a folder, as fixed splits. Duplicates are
    looked for across the whole folder (an input in two splits would leak)."""
    missing = [f"{name}.json" for name in SPLITS if not (folder / f"{name}.json").is_file()]
    if missing:
        raise TaskFileError(
            f"{folder}: a task folder holds train.json, valid.json and test.json; "
            f"missing {', '.join(missing)}."
        )
    seen: set[str] = set()
    parts, dropped = {}, 0
    for name in SPLITS:
        path = folder / f"{name}.json"
        pairs = read_pairs(path, check_duplicates=False, minimum=1)
        kept, n = _deduplicate(path, pairs, keep_first, seen)
        parts[name], dropped = kept, dropped + n
        if not kept:
            raise TaskFileError(f"{path}: no records left after dropping duplicates.")
    return TaskSplits(parts["train"], parts["valid"], parts["test"]), dropped


def _deduplicate(
    path: Path, pairs: list[Pair], keep_first: bool, seen: set[str] | None = None
) -> tuple[list[Pair], int]:
    """``pairs`` with each input once: an error naming both records, or, with ``keep_first``,
    the first kept and the number dropped. ``seen`` carries inputs over from other files."""
    seen = set() if seen is None else seen
    first_at: dict[str, int] = {}
    kept: list[Pair] = []
    for i, (x, y) in enumerate(pairs):
        if x in seen:
            if not keep_first:
                where = f"record {first_at[x]}" if x in first_at else "an earlier split"
                raise TaskFileError(
                    f"{path}: record {i}: input {x!r} already appears in {where}; "
                    "each input needs one answer "
                    "(keep the first with --keep-first-duplicates)."
                )
            continue
        seen.add(x)
        first_at[x] = i
        kept.append((x, y))
    return kept, len(pairs) - len(kept)


def read_pairs(path: str | Path, check_duplicates: bool = True, minimum: int = MIN_RECORDS) -> list[Pair]:
    """Read and validate a JSON or CSV task file (``check_duplicates``: a repeated input is an
    error; ``minimum``: the fewest records it may hold)."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: not a file.")
    size = path.stat().st_size
    if size == 0:
        raise TaskFileError(f"{path}: the file is empty.")
    if size > MAX_FILE_BYTES:
        raise TaskFileError(
            f"{path}: {size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit for a task file."
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise TaskFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}).") from None
    records = _parse_csv(path, text) if path.suffix.lower() == ".csv" else _parse_json(path, text)
    pairs = _validate(path, records, minimum)
    return _deduplicate(path, pairs, keep_first=False)[0] if check_duplicates else pairs


def _parse_json(path: Path, text: str) -> list:
    """The records of a JSON task file. Numbers keep their literal text ("1.10" stays 1.10);
    a key given twice in one object, NaN / Infinity, or nesting too deep to read are errors."""

    def constant(name: str):
        raise TaskFileError(f"{path}: {name} is not valid JSON (use a string, e.g. \"{name}\").")

    try:
        data = json.loads(text, object_pairs_hook=_JsonObject.of, parse_int=str, parse_float=str,
                          parse_constant=constant)
    except json.JSONDecodeError as err:
        raise TaskFileError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}."
        ) from None
    except RecursionError:
        raise TaskFileError(
            f"{path}: JSON nested too deeply to read; a task file is a list of flat records."
        ) from None
    if not isinstance(data, list):
        raise TaskFileError(
            f'{path}: expected a JSON list of {{"input": ..., "output": ...}} records, '
            f"got {_json_type(data)}."
        )
    for i, record in enumerate(data):
        if isinstance(record, _JsonObject) and record.repeated:
            raise TaskFileError(f"{path}: record {i}: key {record.repeated[0]!r} appears more than once.")
    return data


class _JsonObject(dict):
    """A JSON object that remembers the keys given more than once (json keeps the last one)."""

    repeated: list[str]

    @classmethod
    def of(cls, pairs: list[tuple[str, object]]) -> _JsonObject:
        obj = cls(pairs)
        obj.repeated = [key for key, n in Counter(key for key, _ in pairs).items() if n > 1]
        return obj


def _json_type(value: object) -> str:
    return "dict" if isinstance(value, dict) else type(value).__name__


def _parse_csv(path: Path, text: str) -> list:
    """The records of a CSV task file, parsed as CSV (quoted fields may hold commas and line
    breaks, which the validation then refuses). Blank rows are skipped; a header that names a
    column twice, or a row with more values than the header, is an error."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        names = [name.strip().lower() for name in header]
        if "input" not in names or "output" not in names:
            raise TaskFileError(
                f"{path}: a CSV task file needs a header row with 'input' and 'output' columns, "
                f"got {header}."
            )
        twice = [name for name, n in Counter(n for n in names if n).items() if n > 1]
        if twice:
            columns = [i + 1 for i, name in enumerate(names) if name == twice[0]]
            raise TaskFileError(
                f"{path}: the header names column {twice[0]!r} more than once (columns {columns})."
            )
        rows = []
        for row in reader:
            if not any(value.strip() for value in row):
                continue
            if any(value.strip() for value in row[len(names) :]):
                raise TaskFileError(
                    f"{path}: record {len(rows)} (line {reader.line_num}) has {len(row)} values, the header "
                    f"{len(names)} columns: quote a value that holds a comma."
                )
            rows.append({name: value for name, value in zip(names, row) if name})
    except csv.Error as err:
        raise TaskFileError(f"{path}: unreadable CSV at line {reader.line_num}: {err}.") from None
    return rows


def _validate(path: Path, records: list, minimum: int = MIN_RECORDS) -> list[Pair]:
    if not records:
        raise TaskFileError(f"{path}: no records.")
    if len(records) > MAX_RECORDS:
        raise TaskFileError(f"{path}: {len(records)} records is over the limit of {MAX_RECORDS}.")
    pairs: list[Pair] = []
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(record, dict):
            raise TaskFileError(
                f'{where}: expected an object {{"input": ..., "output": ...}}, got {record!r:.80}.'
            )
        values = []
        for key in ("input", "output"):
            if key not in record or record[key] is None:
                raise TaskFileError(f"{where}: missing field {key!r} (record: {record!r:.80}).")
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise TaskFileError(f"{where}: field {key!r} must be text, got {type(value).__name__}.")
            value = str(value)
            problem = _unusable_text(value)
            if problem:
                raise TaskFileError(f"{where}: field {key!r} {problem}.")
            value = value.strip()
            if not value:
                raise TaskFileError(f"{where}: field {key!r} is empty.")
            if len(value) > MAX_VALUE_CHARS:
                raise TaskFileError(
                    f"{where}: field {key!r} has {len(value)} characters (limit {MAX_VALUE_CHARS})."
                )
            values.append(value)
        pairs.append((values[0], values[1]))
    if len(pairs) < minimum:
        raise TaskFileError(
            f"{path}: {len(pairs)} records; a task needs at least {minimum} "
            "to split into train / valid / test."
        )
    return pairs


def _unusable_text(value: str) -> str | None:
    """Why ``value`` cannot be a task's text (checked before stripping), or None."""
    breaks = [c for c in value if c in LINE_BREAKS]
    if breaks:
        return f"contains a line break (U+{ord(breaks[0]):04X}); answers are read up to the first one"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"is not valid Unicode (U+{ord(value[err.start]):04X} at character {err.start})"
    return None


def resolve_tasks(names: Iterable[str | Task], keep_first_duplicates: bool = False) -> list[Task]:
    """Tasks by built-in name, file path or split folder; ``"all"`` means every built-in task.

    Order is kept and repeats (the same pairs, under any name or path) are dropped; tasks
    that share a name but not their pairs are told apart (:func:`distinct_names`). Raises
    ``TaskFileError`` for a bad name or file.
    """
    tasks: list[Task] = []
    seen: set[str] = set()
    for item in names:
        if isinstance(item, Task):
            batch = [item]
        elif str(item) == "all":
            batch = [load_task(name) for name in list_tasks()]
        else:
            batch = [load_task(item, keep_first_duplicates=keep_first_duplicates)]
        for task in batch:
            key = task.content_hash  # a task's identity is its content, not its file's name
            if key not in seen:
                seen.add(key)
                tasks.append(task)
    if not tasks:
        raise ValueError("No tasks given.")
    return distinct_names(tasks)


def distinct_names(tasks: list[Task]) -> list[Task]:
    """``tasks`` under names that tell them apart: a task that shares its name with another
    of ``tasks``, or with a built-in task, but not its pairs (``a/same.json`` and
    ``b/same.json``; a user's ``antonym.json``) is renamed ``<name>@<first 8 hex digits of
    its content hash>``. A built-in task, and a file with a built-in task's very pairs, keep
    the name."""
    builtin = catalog()
    counts = Counter(task.name for task in tasks)

    def is_builtin(task: Task) -> bool:
        if task.name not in builtin:
            return False
        return (
            Path(task.path) == DATA_DIR / f"{task.name}.json"
            or task.content_hash == load_task(task.name).content_hash
        )

    renamed = []
    for task in tasks:
        clash = (counts[task.name] > 1 or task.name in builtin) and not is_builtin(task)
        renamed.append(
            dataclasses.replace(task, name=f"{task.name}@{task.content_hash[:8]}") if clash else task
        )
    return renamed
