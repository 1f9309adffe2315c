"""Atomic writes (workbench/atomic.py): a file or folder appears whole or not at all."""

from pathlib import Path

import pytest

from workbench import atomic


def test_write_text_replaces_whole_and_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "results.csv"
    atomic.write_text(target, "old\n")
    assert target.read_text() == "old\n" and oct(target.stat().st_mode)[-3:] != "600"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic.write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert list(tmp_path.iterdir()) == [target]  # the temp file is cleaned up


def test_folder_appears_only_on_a_clean_exit(tmp_path):
    target = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with atomic.folder(target) as tmp:
            (tmp / "a.txt").write_text("half")
            assert tmp.name.startswith(atomic.TEMP_PREFIX) and atomic.is_temporary(tmp)
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic.folder(target) as tmp:
        (tmp / "a.txt").write_text("whole")
    assert (target / "a.txt").read_text() == "whole"
    with pytest.raises(FileExistsError):
        with atomic.folder(target) as tmp:
            pass
    with atomic.folder(target, replace=True) as tmp:
        (tmp / "b.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no leftovers


def test_folder_leaves_files_beside_it_alone(tmp_path, monkeypatch):
    """Other processes write beside a run (the index's SQLite journal comes and goes): a folder
    write must not open them, or it fails when one vanishes between listing and opening."""
    (tmp_path / "index.sqlite-journal").write_text("someone else's")
    opened = []
    real_open = open

    def recording_open(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", recording_open)
    with atomic.folder(tmp_path / "run") as tmp:
        (tmp / "a.txt").write_text("whole")
    assert "index.sqlite-journal" not in opened and "a.txt" in opened


def test_remove_folder(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    (target / "x").write_text("1")
    atomic.remove_folder(target)
    assert list(tmp_path.iterdir()) == []


def test_remove_folder_after_an_interrupted_removal_of_the_same_name(tmp_path):
    """A kill between the rename and the removal leaves trash; the next removal still works."""
    for _ in range(2):
        target = tmp_path / "run"
        target.mkdir()
        (target / "x").write_text("1")
        trash = tmp_path / f"{atomic.TEMP_PREFIX}deleted-run"  # what an earlier kill left
        trash.mkdir(exist_ok=True)
        (trash / "y").write_text("half")
        atomic.remove_folder(target)
        assert not target.exists()
