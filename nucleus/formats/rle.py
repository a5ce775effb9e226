"""Kaggle run-length encoding of one mask: "start length start length ...".

Pixels are numbered from 1, top to bottom then left to right (column-major, Fortran order), so
pixel (row r, column c) of an H-row image is number c * H + r + 1. Runs are sorted and disjoint.
Decoding checks all of that and raises ``InputError`` with the offending run; callers that read
files add the file name and line.
"""
from __future__ import annotations

import numpy as np

from nucleus.errors import InputError


def rle_encode(mask: np.ndarray) -> str:
    """Encode a [H, W] mask (bool, or nonzero = foreground); "" for an empty mask."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise InputError(f"rle_encode: expected a [H, W] mask, got shape {mask.shape}")
    flat = np.zeros(mask.size + 2, dtype=np.int8)
    flat[1:-1] = mask.ravel(order="F") != 0
    edges = np.flatnonzero(np.diff(flat))  # 0-based start of each run, then 0-based end (excl.)
    starts, ends = edges[0::2], edges[1::2]
    pairs = np.empty(2 * len(starts), dtype=np.int64)
    pairs[0::2] = starts + 1
    pairs[1::2] = ends - starts
    return " ".join(map(str, pairs.tolist()))


def parse_rle(rle: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Parse and check an RLE string for an image of ``shape``; returns (starts, lengths), 1-based.

    Raises InputError if a token is not a non-negative integer, the count is odd, a start is < 1,
    a length is < 1, a run leaves the image, or runs are unsorted or overlap (touching is fine).
    """
    if not isinstance(rle, str):
        raise InputError(f"RLE must be a string, got {type(rle).__name__}")
    height, width = (int(v) for v in shape)
    n_pixels = height * width
    tokens = rle.split()
    if len(tokens) % 2:
        raise InputError(
            f"RLE has an odd number of values ({len(tokens)}); expected start/length pairs")
    for token in tokens:
        if not (token.isascii() and token.isdigit()):
            raise InputError(f"RLE value {token!r} is not a non-negative integer")
        if len(token) > 18:  # would overflow int64; no image has that many pixels
            raise InputError(f"RLE value {token[:20]}... is too large")
    values = np.array([int(t) for t in tokens], dtype=np.int64).reshape(-1, 2)
    starts, lengths = values[:, 0], values[:, 1]
    ends = starts + lengths - 1
    bad = (starts < 1) | (lengths < 1) | (ends > n_pixels)
    bad[1:] |= starts[1:] <= ends[:-1]
    if bad.any():
        k = int(np.argmax(bad))
        start, length = int(starts[k]), int(lengths[k])
        if start < 1:
            raise InputError(f"RLE run {k + 1}: start {start} < 1 (pixel numbers start at 1)")
        if length < 1:
            raise InputError(f"RLE run {k + 1} (start {start}): length {length} is not positive")
        if start + length - 1 > n_pixels:
            raise InputError(
                f"RLE run {k + 1} (start {start}, length {length}) ends at pixel "
                f"{start + length - 1}, outside the {height}x{width} image ({n_pixels} pixels)")
        problem = "is before" if start < starts[k - 1] else "overlaps"
        raise InputError(
            f"RLE run {k + 1} (start {start}) {problem} run {k} "
            f"(start {starts[k - 1]}, length {lengths[k - 1]}); runs must be sorted and disjoint")
    return starts, lengths


def runs_to_indices(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """0-based column-major flat pixel indices covered by runs (1-based starts)."""
    starts = np.asarray(starts, dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    # Position within the concatenated runs, shifted by each run's offset.
    run_of = np.repeat(np.arange(len(starts)), lengths)
    first = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) - first[run_of] + starts[run_of] - 1


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode an RLE string into a bool [H, W] mask ("" gives an empty mask)."""
    starts, lengths = parse_rle(rle, shape)
    height, width = (int(v) for v in shape)
    flat = np.zeros(height * width, dtype=bool)
    flat[runs_to_indices(starts, lengths)] = True
    return flat.reshape((height, width), order="F")
