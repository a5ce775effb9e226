"""File helpers: atomic writes, so an interrupted run never leaves a half-written file behind."""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

_WRITE_MODES = {"w", "wt", "wb"}


def _default_mode() -> int:
    """Permission bits a plain ``open(path, "w")`` would give a new file (0o666 minus umask)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success move it over ``path`` in one step.

    The temporary file lives in the same folder so that ``os.replace`` is an atomic rename.
    If the body of the ``with`` raises, the temporary file is removed and any existing file at
    ``path`` is left untouched. ``open_kwargs`` (``encoding``, ``newline`` ...) go to ``open``.
    A replaced file keeps its permission bits; a new one gets the usual umask-based bits.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"atomic_write: mode must be one of {sorted(_WRITE_MODES)}, got {mode!r}")
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"{path}: folder {folder} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        try:
            handle = os.fdopen(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        try:
            permissions = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            permissions = _default_mode()
        os.chmod(tmp_name, permissions)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
