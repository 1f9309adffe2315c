"""Task files and the built-in task library.

Built-in tasks live in ``data/tasks/<name>.json`` (made by ``data/build_tasks.py``), with
their descriptions in ``data/tasks/catalog.json``. A user file is the same JSON (a list
of ``{"input": ..., "output": ...}``) or a CSV with ``input,output`` columns. Files are
validated record by record; any problem raises :class:`TaskFileError` naming the file
and the record.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from pathlib import Path

from workbench.tasks.task import Pair, Task

DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "tasks"
MAX_FILE_BYTES = 20 * 1024 * 1024
MAX_RECORDS = 100_000
MAX_VALUE_CHARS = 200
MIN_RECORDS = 5


class TaskFileError(ValueError):
    """A task file is malformed; the message names the file and the record."""


def catalog() -> dict[str, dict]:
    """Built-in tasks: name -> {description, case_sensitive, category, source}."""
    path = DATA_DIR / "catalog.json"
    entries = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    return {name: entries[name] for name in sorted(entries) if (DATA_DIR / f"{name}.json").is_file()}


def list_tasks() -> list[str]:
    return list(catalog())


def load_task(name_or_path: str | Path, case_sensitive: bool | None = None) -> Task:
    """A built-in task by name, or a user's JSON / CSV file by path.

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
            case_sensitive=bool(info.get("case_sensitive", False)) if case_sensitive is None else case_sensitive,
            description=info.get("description", ""),
            category=info.get("category", ""),
            path=str(path),
            meta=info,
        )
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(entries) or "(none: run data/build_tasks.py)"
        raise TaskFileError(f"No built-in task or file named {key!r}. Built-in tasks: {known}.")
    pairs = read_pairs(path)
    if case_sensitive is None:
        case_changes = sum(x != y and x.lower() == y.lower() for x, y in pairs)
        case_sensitive = case_changes > len(pairs) / 2
    return Task(name=path.stem, pairs=pairs, case_sensitive=case_sensitive, path=str(path))


def read_pairs(path: str | Path) -> list[Pair]:
    """Read and validate a JSON or CSV task file."""
    path = Path(path)
    if not path.is_file():
        raise TaskFileError(f"{path}: not a file.")
    size = path.stat().st_size
    if size == 0:
        raise TaskFileError(f"{path}: the file is empty.")
    if size > MAX_FILE_BYTES:
        raise TaskFileError(f"{path}: {size:,} bytes is over the {MAX_FILE_BYTES:,}-byte limit for a task file.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise TaskFileError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}).") from None
    records = _parse_csv(path, text) if path.suffix.lower() == ".csv" else _parse_json(path, text)
    return _validate(path, records)


def _parse_json(path: Path, text: str) -> list:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise TaskFileError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}.") from None
    if not isinstance(data, list):
        raise TaskFileError(f'{path}: expected a JSON list of {{"input": ..., "output": ...}} records, got {type(data).__name__}.')
    return data


def _parse_csv(path: Path, text: str) -> list:
    reader = csv.DictReader(text.splitlines())
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "input" not in fields or "output" not in fields:
        raise TaskFileError(f"{path}: a CSV task file needs a header row with 'input' and 'output' columns, got {reader.fieldnames}.")
    rows = []
    for row in reader:
        rows.append({k.strip().lower(): v for k, v in row.items() if k is not None})
    return rows


def _validate(path: Path, records: list) -> list[Pair]:
    if not records:
        raise TaskFileError(f"{path}: no records.")
    if len(records) > MAX_RECORDS:
        raise TaskFileError(f"{path}: {len(records)} records is over the limit of {MAX_RECORDS}.")
    pairs: list[Pair] = []
    seen: dict[str, int] = {}
    for i, record in enumerate(records):
        where = f"{path}: record {i}"
        if not isinstance(record, dict):
            raise TaskFileError(f'{where}: expected an object {{"input": ..., "output": ...}}, got {record!r:.80}.')
        values = []
        for key in ("input", "output"):
            if key not in record or record[key] is None:
                raise TaskFileError(f"{where}: missing field {key!r} (record: {record!r:.80}).")
            value = record[key]
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise TaskFileError(f"{where}: field {key!r} must be text, got {type(value).__name__}.")
            value = str(value).strip()
            if not value:
                raise TaskFileError(f"{where}: field {key!r} is empty.")
            if "\n" in value or "\r" in value:
                raise TaskFileError(f"{where}: field {key!r} contains a line break; answers are read up to the first one.")
            if len(value) > MAX_VALUE_CHARS:
                raise TaskFileError(f"{where}: field {key!r} has {len(value)} characters (limit {MAX_VALUE_CHARS}).")
            values.append(value)
        x, y = values
        if x in seen:
            raise TaskFileError(f"{where}: input {x!r} already appears in record {seen[x]}; each input needs one answer.")
        seen[x] = i
        pairs.append((x, y))
    if len(pairs) < MIN_RECORDS:
        raise TaskFileError(f"{path}: {len(pairs)} records; a task needs at least {MIN_RECORDS} to split into train / valid / test.")
    return pairs


def resolve_tasks(names: Iterable[str | Task]) -> list[Task]:
    """Tasks by built-in name or file path; ``"all"`` means every built-in task.

    Order is kept and repeats are dropped. Raises ``TaskFileError`` for a bad name or file.
    """
    tasks: list[Task] = []
    seen: set[str] = set()
    for item in names:
        if isinstance(item, Task):
            batch = [item]
        elif str(item) == "all":
            batch = [load_task(name) for name in list_tasks()]
        else:
            batch = [load_task(item)]
        for task in batch:
            key = task.path or task.name
            if key not in seen:
                seen.add(key)
                tasks.append(task)
    if not tasks:
        raise ValueError("No tasks given.")
    return tasks
