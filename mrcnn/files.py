"""Atomic file writes: a reader never sees half a file, a failed write leaves the old one as it was.

One mechanism for every file the project writes: :func:`atomic_path` for writers that want a
path (h5py, Keras, Matplotlib, another atomic writer) and :func:`atomic_write` for those that
write to an open file. This module imports nothing from the rest of the project, so that any
module (the weights writer, the figure savers, the nucleus application) can use it without an
import cycle.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from typing import IO, Any, Iterator

_WRITE_MODES = {"w", "wt", "wb"}


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
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[str]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it to ``path``.

    An interrupted write leaves neither a partial file nor a stray temporary one, and a reader
    never sees half a file. The result has the permissions a plain ``open`` would give it
    (umask-based for a new file, the old ones for a replaced file), not mkstemp's 0600.
    The temporary file exists (empty) when the block starts. ``suffix`` ends its name, for
    writers that insist on one (Keras wants ``.weights.h5``). Missing folders are made.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=suffix, dir=folder)
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


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success move it over ``path`` in one step.

    :func:`atomic_path` for writers that write to an open file. If the body of the ``with``
    raises, the temporary file is removed and any existing file at ``path`` is left untouched.
    ``open_kwargs`` (``encoding``, ``newline`` ...) go to ``open``. The data reach the disk
    before the rename. Unlike :func:`atomic_path`, a missing folder is an error: these files
    are outputs whose folder the caller chose.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"atomic_write: mode must be one of {sorted(_WRITE_MODES)}, got {mode!r}")
    folder = os.path.dirname(path)
    if not os.path.isdir(folder or "."):
        raise FileNotFoundError(f"{os.fspath(path)}: folder {folder or '.'} does not exist")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
