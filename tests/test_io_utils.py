"""nucleus.formats.io_utils: the atomic writers the nucleus modules import (tested in
test_files.py)."""
from __future__ import annotations

from mrcnn import files
from nucleus.formats import io_utils


def test_the_writers_are_the_library_ones():
    assert io_utils.atomic_write is files.atomic_write
    assert io_utils.atomic_path is files.atomic_path
