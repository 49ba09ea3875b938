"""Atomic writes: nothing half-written on failure, normal permissions on success."""

from __future__ import annotations

import os

import pytest

from omnishift.paths import atomic_dir, atomic_write_text


def test_atomic_write_replaces_and_keeps_normal_mode(tmp_path):
    p = atomic_write_text(tmp_path / "a.txt", "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.stat(p).st_mode & 0o044, "file must be readable by group/others like a normal write"
    assert [f.name for f in tmp_path.iterdir()] == ["a.txt"]


def test_atomic_dir_failure_leaves_old_content(tmp_path):
    with atomic_dir(tmp_path / "d") as d:
        (d / "x").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("new")
            raise RuntimeError("killed")
    assert (tmp_path / "d" / "x").read_text() == "old"
    assert sorted(f.name for f in tmp_path.iterdir()) == ["d"]
