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


def test_remove_stale_temps_clears_only_interrupted_writes(tmp_path):
    from omnishift.paths import atomic_dir, remove_stale_temps

    (tmp_path / ".step-00000200.k2j3.tmp").mkdir()  # a checkpoint copy killed mid-write
    (tmp_path / ".step-00000200.k2j3.tmp" / "optimizer.pt").write_bytes(b"x" * 100)
    (tmp_path / ".final.old").mkdir()
    (tmp_path / ".00001.tmp.safetensors").write_bytes(b"partial")
    (tmp_path / "step-00000100").mkdir()
    (tmp_path / ".hidden_config").write_text("keep")
    assert sorted(remove_stale_temps(tmp_path)) == [".00001.tmp.safetensors", ".final.old", ".step-00000200.k2j3.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden_config", "step-00000100"]
    with atomic_dir(tmp_path / "step-00000300") as d:
        (d / "a").write_text("1")
    assert remove_stale_temps(tmp_path) == [] and (tmp_path / "step-00000300" / "a").is_file()
    assert remove_stale_temps(tmp_path / "missing") == []


def test_ensure_writable_dir_refuses_files_and_read_only_folders(tmp_path):
    import os

    import pytest

    from omnishift.paths import ensure_writable_dir

    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir() and not list((tmp_path / "a" / "b").iterdir())
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        ensure_writable_dir(tmp_path / "f")
    with pytest.raises(NotADirectoryError, match="parent of it is a file"):
        ensure_writable_dir(tmp_path / "f" / "sub")


def test_ensure_writable_dir_refuses_read_only_folders(tmp_path):
    import os

    import pytest

    from omnishift.paths import ensure_writable_dir

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores permission bits: nothing to check here
            pytest.skip("running as root: a read-only folder is still writable")
        with pytest.raises(PermissionError, match="not writable"):
            ensure_writable_dir(ro)
    finally:
        ro.chmod(0o700)
