"""Atomic writes: a file or a folder appears whole under its name, or not at all.

Everything the workbench writes for the user (run folders, the model cache, CSV and JSON
results, checkpoints) goes through here. The content is written beside the target under a
hidden temporary name, flushed, and renamed into place with ``os.replace``, which is atomic
on one file system: a process killed midway leaves at worst a hidden ``.tmp-*`` entry, never
a half-written file under the real name.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return write_bytes(path, text.encode("utf-8"))


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically, with a normal file's permissions; returns the path."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=folder)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; give it the usual mode
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def folder(target: str | Path, *, replace: bool = False) -> Iterator[Path]:
    """``with folder(target) as tmp:`` fill ``tmp``; on a clean exit it becomes ``target``.

    On an exception (or a kill) nothing appears at ``target``. An existing ``target`` is an
    error unless ``replace`` (then the old folder is swapped out and removed)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{target.name}-", dir=target.parent))
    try:
        yield tmp
        _flush_folder(tmp)  # the content is on disk before the name points at it
        if target.exists():
            if not replace:
                raise FileExistsError(f"{target} already exists.")
            old = target.parent / f"{TEMP_PREFIX}old-{target.name}-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync_folder_entry(target.parent)  # and the rename itself (its siblings are not ours)


def _flush_folder(path: Path) -> None:
    """fsync the files directly in ``path`` (a folder only this process writes), then
    ``path`` itself."""
    for item in path.iterdir():
        if item.is_file() and not item.is_symlink():
            with open(item, "rb") as handle:
                os.fsync(handle.fileno())
    _sync_folder_entry(path)


def _sync_folder_entry(path: Path) -> None:
    """fsync the folder ``path`` itself, so renames in it are on disk (best effort where a
    file system cannot sync a folder). Its files are left alone: other processes may be
    creating and deleting them (an SQLite journal beside the runs, for one)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_folder(target: str | Path) -> None:
    """Delete a folder so that it is never seen half-deleted under its own name: rename it to
    a hidden temporary name first (unique, so a leftover of an earlier kill is no obstacle),
    then remove that."""
    target = Path(target)
    trash = target.parent / f"{TEMP_PREFIX}deleted-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    os.replace(target, trash)
    shutil.rmtree(trash, ignore_errors=True)


def is_temporary(path: str | Path) -> bool:
    """A leftover of an interrupted write (swept by the run store)."""
    return Path(path).name.startswith(TEMP_PREFIX)
