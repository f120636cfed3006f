"""atomic_open: the target appears complete or not at all; failures leave the old file untouched."""

from __future__ import annotations

import os

import pytest

from pointworld.atomic import atomic_open


def test_writes_text_and_bytes_and_creates_parents(tmp_path):
    target = tmp_path / "a" / "b" / "f.txt"
    with atomic_open(target, "w") as fh:
        fh.write("héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    with atomic_open(target, "wb") as fh:
        fh.write(b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_exception_inside_block_keeps_old_file_and_removes_temp(tmp_path):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"):
        with atomic_open(target) as fh:
            fh.write(b"half of the new cont")
            raise RuntimeError("crash mid-write")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_failed_rename_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")

    def fail(src, dst):
        raise OSError("simulated rename failure")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="rename"):
        with atomic_open(target) as fh:
            fh.write(b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_no_file_appears_before_the_block_ends(tmp_path):
    target = tmp_path / "f.bin"
    with atomic_open(target) as fh:
        fh.write(b"x")
        assert not target.exists()
    assert target.exists()


def test_bad_mode_names_the_argument(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_open(tmp_path / "f", "a"):
            pass


def test_written_files_get_plain_open_permissions(tmp_path):
    reference = tmp_path / "plain"
    reference.write_bytes(b"")
    target = tmp_path / "atomic"
    with atomic_open(target) as fh:
        fh.write(b"x")
    assert (target.stat().st_mode & 0o777) == (reference.stat().st_mode & 0o777)
