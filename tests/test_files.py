"""mrcnn.files: atomic writes leave the old file or the new one, never half of one."""
from __future__ import annotations

import os

import pytest

from mrcnn import files


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
