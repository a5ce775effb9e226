"""mrcnn.files: atomic writes leave the old file or the new one, never half of one."""
from __future__ import annotations

import os
import stat

import pytest

from mrcnn import files
from mrcnn.files import atomic_write


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    previous = os.umask(0o022)
    try:
        with files.atomic_path(target) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and not target.exists()
            with open(tmp, "wb") as f:
                f.write(b"first")
        assert target.read_bytes() == b"first"
        assert os.stat(target).st_mode & 0o777 == 0o644  # umask-based, not mkstemp's 0600
        with pytest.raises(RuntimeError):
            with files.atomic_path(target) as tmp:
                with open(tmp, "wb") as f:
                    f.write(b"half")
                raise RuntimeError("interrupted")
    finally:
        os.umask(previous)
    assert target.read_bytes() == b"first" and os.listdir(tmp_path) == ["out.bin"]


def test_atomic_path_suffix_ends_the_temporary_name(tmp_path):
    with files.atomic_path(tmp_path / "m.weights.h5", suffix=".partial.weights.h5") as tmp:
        assert tmp.endswith(".partial.weights.h5") and os.path.exists(tmp)
        with open(tmp, "wb") as f:
            f.write(b"w")
    assert sorted(os.listdir(tmp_path)) == ["m.weights.h5"]


# ----------------------------------------------------------------------------- atomic_write
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


def test_a_file_that_cannot_be_opened_leaves_nothing(tmp_path):
    with pytest.raises(LookupError):
        with atomic_write(tmp_path / "x.txt", encoding="no-such-codec"):
            pass
    assert list(tmp_path.iterdir()) == []
