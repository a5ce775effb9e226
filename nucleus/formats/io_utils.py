"""File helpers: atomic writes, so an interrupted run never leaves a half-written file behind.

The writers live in :mod:`mrcnn.files`, one mechanism for the library and the application;
the nucleus modules import them from here.
"""
from __future__ import annotations

from mrcnn.files import atomic_path, atomic_write

__all__ = ["atomic_path", "atomic_write"]
