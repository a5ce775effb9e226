"""Kaggle DSB2018 submission files: write, validate and read back (scored against a solution by
:mod:`nucleus.scoring.submission_score`).

Submission: header ``ImageId,EncodedPixels``, one row per predicted nucleus (RLE, see
``nucleus.formats.rle``), one row with empty EncodedPixels for an image without nuclei; masks of
one image must not overlap. Solution (Kaggle's answer key):
``ImageId,EncodedPixels,Height,Width[,Usage]``, one row per true nucleus. Read functions return
label images [H, W] (0 = background, object k of an image gets label k in file order), the form
``nucleus.scoring.metric`` scores fastest.
"""
from __future__ import annotations

import csv
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
from tqdm import tqdm

from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_write
from nucleus.formats.rle import parse_rle, rle_encode, runs_to_indices

HEADER = ("ImageId", "EncodedPixels")
SOLUTION_COLUMNS = ("ImageId", "EncodedPixels", "Height", "Width")

PathLike = str | os.PathLike
Masks = np.ndarray | Sequence[np.ndarray]


# ----------------------------------------------------------------------------- writing
def _mask_list(image_id: str, masks: Masks) -> list[np.ndarray]:
    """Split the accepted mask forms into a list of [H, W] bool masks, checking shapes."""
    if isinstance(masks, np.ndarray):
        if masks.ndim == 3:
            return [masks[:, :, k] != 0 for k in range(masks.shape[2])]
        if masks.ndim == 2 and np.issubdtype(masks.dtype, np.integer) and masks.dtype != bool:
            present = np.unique(masks)
            return [masks == label for label in present[present > 0]]
        raise InputError(f"image {image_id}: expected a [H, W, N] mask stack, a list of [H, W] "
                         f"masks or an integer label image, got {masks.dtype} {masks.shape}")
    out = [np.asarray(m) != 0 for m in masks]
    for k, m in enumerate(out):
        if m.ndim != 2 or m.shape != out[0].shape:
            raise InputError(f"image {image_id}: mask {k} has shape {m.shape}, expected "
                             f"{out[0].shape if k else '[H, W]'}")
    return out


class SubmissionWriter:
    """Collects predictions image by image and writes the CSV atomically on ``close``.

    Use as a context manager: an exception inside the ``with`` block discards everything and
    leaves any existing file at ``path`` untouched::

        with SubmissionWriter("submission.csv") as writer:
            for image_id, masks in predictions:
                writer.add(image_id, masks)
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        self._rows: list[tuple[str, str]] = []
        self._ids: set[str] = set()
        self._closed = False

    def add(self, image_id: str, masks: Masks) -> int:
        """Add one image's nuclei; returns the number of rows written for it.

        ``masks``: a bool stack [H, W, N], a list of [H, W] bool masks, or an integer label image
        [H, W]. Empty masks are skipped (RLE can't express them); masks must not overlap.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: SubmissionWriter is already closed")
        if not isinstance(image_id, str) or not image_id or image_id != image_id.strip():
            raise InputError(f"{self.path}: bad image id {image_id!r}")
        if image_id in self._ids:
            raise InputError(f"{self.path}: image {image_id} was added twice")
        mask_list = [m for m in _mask_list(image_id, masks) if m.any()]
        if len(mask_list) > 1:
            coverage = np.sum(mask_list, axis=0, dtype=np.int32)
            if coverage.max() > 1:
                raise InputError(
                    f"{self.path}: image {image_id}: masks overlap on {(coverage > 1).sum()} "
                    "pixels; run nucleus.inference.overlap.eliminate_overlaps first")
        rles = [rle_encode(m) for m in mask_list] or [""]
        self._ids.add(image_id)
        self._rows.extend((image_id, rle) for rle in rles)
        return len(rles)

    def close(self) -> None:
        """Write the file (atomically). Closing twice is harmless."""
        if self._closed:
            return
        with atomic_write(self.path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(HEADER)
            writer.writerows(self._rows)
        self._closed = True

    def abort(self) -> None:
        """Discard what was added; nothing is written."""
        self._rows.clear()
        self._closed = True

    def __enter__(self) -> SubmissionWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_submission(path: PathLike, rows: Iterable[tuple[str, Masks]],
                     progress: bool = False) -> None:
    """Write (image_id, masks) pairs as a submission CSV; see ``SubmissionWriter.add``."""
    with SubmissionWriter(path) as writer:
        for image_id, masks in tqdm(rows, desc="submission", disable=not progress):
            writer.add(image_id, masks)


# ----------------------------------------------------------------------------- reading
def _open_csv(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) for every row, the header included; errors name the file."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            for row in reader:
                yield reader.line_num, row
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not a UTF-8 text file ({exc})") from None
    except csv.Error as exc:
        raise InputError(f"{path}: malformed CSV: {exc}") from None


def _columns(path: Path, rows: Iterator[tuple[int, list[str]]],
             required: Sequence[str]) -> dict[str, int]:
    """Read the header row; map each required column to its position."""
    try:
        _, header = next(rows)
    except StopIteration:
        raise InputError(f"{path}: empty file, expected a header {','.join(required)}") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise InputError(f"{path}:1: missing column(s) {', '.join(missing)}; header is "
                         f"{','.join(header)!r}, expected {','.join(required)}")
    return {c: header.index(c) for c in header}


class _LabelBuilder:
    """Paints decoded rows into per-image label images, refusing overlapping masks."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.flat: dict[str, np.ndarray] = {}
        self.shapes: dict[str, tuple[int, int]] = {}
        self.lines: dict[str, list[int]] = defaultdict(list)  # label k -> line of row k

    def add(self, line: int, image_id: str, rle: str, shape: tuple[int, int]) -> None:
        if image_id not in self.flat:
            self.flat[image_id] = np.zeros(shape[0] * shape[1], dtype=np.int32)
            self.shapes[image_id] = shape
        elif self.shapes[image_id] != shape:
            raise InputError(f"{self.path}:{line}: image {image_id}: size {shape} differs from "
                             f"{self.shapes[image_id]} given earlier")
        if not rle.strip():
            return
        try:
            starts, lengths = parse_rle(rle, shape)
        except InputError as exc:
            raise InputError(f"{self.path}:{line}: image {image_id}: {exc}") from None
        flat, lines = self.flat[image_id], self.lines[image_id]
        indices = runs_to_indices(starts, lengths)
        taken = flat[indices]
        if taken.any():
            other = lines[int(taken[taken > 0][0]) - 1]
            raise InputError(f"{self.path}:{line}: image {image_id}: mask overlaps the mask on "
                             f"line {other}")
        lines.append(line)
        flat[indices] = len(lines)

    def labels(self) -> dict[str, np.ndarray]:
        return {image_id: flat.reshape(self.shapes[image_id], order="F")
                for image_id, flat in self.flat.items()}


def _field(path: Path, line: int, row: list[str], n_columns: int) -> None:
    if len(row) != n_columns:
        raise InputError(f"{path}:{line}: expected {n_columns} fields, found {len(row)}")


def read_solution(csv_path: PathLike) -> dict[str, np.ndarray]:
    """Read a Kaggle solution file into {image_id: int32 label image [Height, Width]}.

    A row with empty EncodedPixels declares an image without nuclei. Extra columns (``Usage``)
    are ignored. Overlapping true masks are refused: the metric needs disjoint objects.
    """
    path = Path(csv_path)
    rows = _open_csv(path)
    columns = _columns(path, rows, SOLUTION_COLUMNS)
    builder = _LabelBuilder(path)
    for line, row in rows:
        _field(path, line, row, len(columns))
        image_id = row[columns["ImageId"]]
        try:
            shape = (int(row[columns["Height"]]), int(row[columns["Width"]]))
        except ValueError:
            shape = (0, 0)
        if min(shape) < 1:
            raise InputError(f"{path}:{line}: image {image_id}: Height and Width must be positive "
                             f"integers, got {row[columns['Height']]!r}, {row[columns['Width']]!r}")
        builder.add(line, image_id, row[columns["EncodedPixels"]], shape)
    return builder.labels()


def read_submission(csv_path: PathLike, shapes: Mapping[str, tuple[int, int]],
                    unknown: list[str] | None = None) -> dict[str, np.ndarray]:
    """Read a submission into {image_id: int32 label image}, for the images present in the file.

    ``shapes`` gives each image's (height, width); an id not in it is an error, unless
    ``unknown`` is a list: then its rows are skipped and the id appended there once. Bad RLE
    and overlapping masks are errors. Use ``validate_submission`` for a complete list of
    problems instead.
    """
    path = Path(csv_path)
    rows = _open_csv(path)
    columns = _columns(path, rows, HEADER)
    builder = _LabelBuilder(path)
    for line, row in rows:
        _field(path, line, row, len(columns))
        image_id = row[columns["ImageId"]]
        if image_id not in shapes and unknown is not None:
            if image_id not in unknown:
                unknown.append(image_id)
            continue
        if image_id not in shapes:
            raise InputError(f"{path}:{line}: unknown image id {image_id!r}")
        builder.add(line, image_id, row[columns["EncodedPixels"]],
                    tuple(int(v) for v in shapes[image_id]))
    return builder.labels()


# ----------------------------------------------------------------------------- validation
def validate_submission(csv_path: PathLike,
                        image_shapes: Mapping[str, tuple[int, int]]) -> list[str]:
    """Every problem Kaggle would reject the file for, as "file:line: ..." messages ([] if fine).

    Checks: exact header, two fields a row, known ids, every image present, RLE well formed
    (sorted, positive lengths, inside the image), masks of one image disjoint, and an image has
    either one empty row or only non-empty rows.
    """
    path = Path(csv_path)
    problems: list[str] = []
    runs: dict[str, list[tuple[np.ndarray, np.ndarray, int]]] = defaultdict(list)
    empty_rows: dict[str, list[int]] = defaultdict(list)
    unknown: set[str] = set()
    seen: set[str] = set()  # ids with at least one row, even a broken one
    try:
        rows = _open_csv(path)
        first = next(rows, None)
        if first is None:
            return [f"{path}: empty file, expected the header {','.join(HEADER)}"]
        if tuple(first[1]) != HEADER:
            return [f"{path}:1: header is {','.join(first[1])!r}, expected {','.join(HEADER)!r}"]
        for line, row in rows:
            if len(row) != 2:
                problems.append(f"{path}:{line}: expected 2 fields, found {len(row)}")
                continue
            image_id, rle = row
            if image_id not in image_shapes:
                if image_id not in unknown:
                    problems.append(f"{path}:{line}: unknown image id {image_id!r}")
                    unknown.add(image_id)
                continue
            seen.add(image_id)
            if not rle.strip():
                empty_rows[image_id].append(line)
                continue
            try:
                starts, lengths = parse_rle(rle, image_shapes[image_id])
            except InputError as exc:
                problems.append(f"{path}:{line}: image {image_id}: {exc}")
                continue
            runs[image_id].append((starts, lengths, line))
    except InputError as exc:
        return problems + [str(exc)]

    for image_id in image_shapes:
        if image_id not in seen:
            problems.append(f"{path}: image {image_id} is missing (give it one row with empty "
                            "EncodedPixels if it has no nucleus)")
    for image_id, lines in empty_rows.items():
        if image_id in runs:
            problems.append(f"{path}:{lines[0]}: image {image_id} has an empty row and "
                            f"{len(runs[image_id])} non-empty row(s)")
        elif len(lines) > 1:
            problems.append(f"{path}:{lines[1]}: image {image_id} has {len(lines)} empty rows")
    for image_id, image_runs in runs.items():
        problems.extend(f"{path}:{line}: image {image_id}: mask overlaps the mask on line {other}"
                        for line, other in _overlapping_lines(image_runs))
    return problems


def _overlapping_lines(
        image_runs: list[tuple[np.ndarray, np.ndarray, int]]) -> list[tuple[int, int]]:
    """(line, earlier line) pairs whose masks share pixels, found from the runs alone."""
    starts = np.concatenate([s for s, _, _ in image_runs])
    ends = np.concatenate([s + n - 1 for s, n, _ in image_runs])
    lines = np.concatenate([np.full(len(s), line) for s, _, line in image_runs])
    order = np.argsort(starts, kind="stable")
    starts, ends, lines = starts[order], ends[order], lines[order]
    if len(starts) < 2 or (starts[1:] > np.maximum.accumulate(ends)[:-1]).all():
        return []
    pairs: set[tuple[int, int]] = set()
    reach, reach_line = ends[0], lines[0]
    for start, end, line in zip(starts[1:].tolist(), ends[1:].tolist(), lines[1:].tolist()):
        if start <= reach:
            pairs.add((max(line, reach_line), min(line, reach_line)))
        if end > reach:
            reach, reach_line = end, line
    return sorted(pairs)


def check_submission(csv_path: PathLike, image_shapes: Mapping[str, tuple[int, int]],
                     max_shown: int = 10) -> None:
    """Raise InputError listing the first problems if ``validate_submission`` finds any."""
    problems = validate_submission(csv_path, image_shapes)
    if problems:
        shown = "\n  ".join(problems[:max_shown])
        more = f"\n  ... and {len(problems) - max_shown} more" if len(problems) > max_shown else ""
        raise InputError(
            f"{csv_path}: {len(problems)} problem(s) in the submission:\n  {shown}{more}")
