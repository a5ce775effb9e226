"""Atomic file writes: a reader never sees half a file, a failed write leaves the old one as it was.

This module imports nothing from the rest of the package, so that any module (the weights
writer, the figure savers, the nucleus application) can use it without an import cycle.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


def _new_file_mode() -> int:
    """Permission bits ``open(path, "w")`` gives a new file: 0o666 less the umask."""
    try:  # Linux reports the umask without changing it (no race with other threads)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it to ``path``.

    An interrupted write leaves neither a partial file nor a stray temporary one, and a reader
    never sees half a file. The result has the permissions a plain ``open`` would give it
    (umask-based for a new file, the old ones for a replaced file), not mkstemp's 0600.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = _new_file_mode()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
