"""Exceptions shared by the nucleus package."""
from __future__ import annotations


class InputError(ValueError):
    """Bad user input: the message names the file and the problem."""
