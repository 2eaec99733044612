"""Atomic outputs: a failed write leaves the previous file or folder untouched and no temp files."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.io import atomic_dir, atomic_path, write_text_atomic


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "out.txt"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_atomic_path_keeps_old_file_on_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "stats"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with atomic_dir(target) as tmp:
        (tmp / "b").write_text("2")
    assert [p.name for p in target.iterdir()] == ["b"]
    assert [p.name for p in tmp_path.iterdir()] == ["stats"]


def test_atomic_dir_keeps_old_folder_on_error(tmp_path):
    target = tmp_path / "stats"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(ValueError):
        with atomic_dir(target) as tmp:
            (tmp / "b").write_text("half")
            raise ValueError("bad label")
    assert [p.name for p in target.iterdir()] == ["a"]
    assert [p.name for p in tmp_path.iterdir()] == ["stats"]


def test_outputs_get_the_usual_permissions(tmp_path):
    write_text_atomic(tmp_path / "f.txt", "x")
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "a").write_text("1")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o666 & ~mask
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o777 & ~mask


def test_leftovers_of_dead_writers_are_cleaned_and_live_ones_kept(tmp_path):
    from pipeline import io

    target = tmp_path / "metrics.json"
    dead = 2**22 + 12345  # a pid no process has: above the kernel's largest pid (pid_max <= 2**22)
    killed = tmp_path / f".metrics.json.{io.HOST}.{dead}.abc123.tmp"
    live = tmp_path / f".metrics.json.{io.HOST}.{os.getpid()}.def456.tmp"
    remote_old = tmp_path / ".metrics.json.otherhost.77.ghi789.tmp"
    remote_new = tmp_path / ".metrics.json.otherhost.78.jkl012.tmp"
    unrelated = tmp_path / ".notes.txt.otherhost.1.x.tmp"
    for path in (killed, live, remote_old, remote_new, unrelated):
        path.write_text("half")
    two_days = time.time() - 2 * 24 * 3600
    os.utime(remote_old, (two_days, two_days))
    os.utime(unrelated, (two_days, two_days))
    write_text_atomic(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [target.name, live.name, remote_new.name, unrelated.name]
    )


def test_writes_are_flushed_before_the_rename(tmp_path, monkeypatch):
    from pipeline import io

    events = []
    monkeypatch.setattr(io, "fsync_path", lambda path: events.append(("fsync", Path(path).name)))
    real_replace = os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (events.append(("replace", Path(b).name)), real_replace(a, b)))
    write_text_atomic(tmp_path / "index.json", "{}")
    assert events[0][0] == "fsync" and events[0][1].startswith(".index.json.")  # the file's data
    assert events[1:] == [("replace", "index.json"), ("fsync", tmp_path.name)]  # then its name in the folder
