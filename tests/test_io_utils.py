from __future__ import annotations

import os
import stat

import pytest

from nucleus.io_utils import atomic_write


def test_writes_new_file_text_and_binary(tmp_path):
    with atomic_write(tmp_path / "a.txt") as f:
        f.write("hello\n")
    assert (tmp_path / "a.txt").read_text() == "hello\n"
    with atomic_write(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin"]


def test_open_kwargs_are_passed(tmp_path):
    with atomic_write(tmp_path / "c.csv", encoding="utf-8", newline="") as f:
        f.write("é\r\n")
    assert (tmp_path / "c.csv").read_bytes() == "é\r\n".encode()


def test_exception_leaves_existing_file_untouched_and_no_temp(tmp_path):
    target = tmp_path / "keep.txt"
    target.write_text("original")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as f:
            f.write("partial")
            raise RuntimeError("boom")
    assert target.read_text() == "original"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_exception_creates_nothing_when_file_was_absent(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.txt") as f:
            f.write("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_replace_keeps_permissions_and_new_file_follows_umask(tmp_path):
    target = tmp_path / "p.txt"
    target.write_text("old")
    os.chmod(target, 0o640)
    with atomic_write(target) as f:
        f.write("new")
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640

    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "fresh.txt") as f:
            f.write("x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE((tmp_path / "fresh.txt").stat().st_mode) == 0o644


def test_bad_mode_and_missing_folder(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "x", "a"):
            pass
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_write(tmp_path / "no" / "x"):
            pass
