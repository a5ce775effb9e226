"""Errors the library raises for bad input, importable without Keras (so a command line can
catch them before, or without, loading a backend)."""
from __future__ import annotations


class WeightsError(ValueError):
    """A weights file that cannot be used: the message names the file and the problem."""
