"""The fixed 603 / 67 train/validation split of stage1_train, and seeded k-fold splits.

The split is stored as two id lists inside the package (``nucleus/data/*_ids.txt``) so that every
run, machine and user validates on the same 67 images, whatever is on their disk. The lists were
made once with :func:`make_split` from the 670 ids of stage1_train; the function stays so that
anyone can check that the files are what it produces.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_write

SPLIT_SEED = 2018
N_VAL = 67
KFOLD_SEED = 42
DATA_DIR = Path(__file__).resolve().parent / "data"
TRAIN_IDS_FILE = DATA_DIR / "train_ids.txt"
VAL_IDS_FILE = DATA_DIR / "val_ids.txt"


def make_split(all_ids: Iterable[str], n_val: int = N_VAL,
               seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """Shuffle the sorted ids with ``default_rng(seed)``; the first ``n_val`` are validation.

    Sorting first makes the result independent of directory listing order.
    Returns ``(train_ids, val_ids)``, each sorted.
    """
    ids = sorted(set(all_ids))
    if not 0 < n_val < len(ids):
        raise ValueError(f"n_val must be in 1..{len(ids) - 1} for {len(ids)} ids, got {n_val}")
    order = np.random.default_rng(seed).permutation(len(ids))
    val = sorted(ids[i] for i in order[:n_val])
    train = sorted(ids[i] for i in order[n_val:])
    return train, val


def _read_ids(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise InputError(f"{path}: cannot read the split id list ({e})") from e
    return [line.strip() for line in text.splitlines() if line.strip()]


def load_split() -> tuple[list[str], list[str]]:
    """The packaged fixed split as ``(train_ids, val_ids)`` (603 and 67 Kaggle ids, sorted)."""
    return _read_ids(TRAIN_IDS_FILE), _read_ids(VAL_IDS_FILE)


def write_split(train_ids: Sequence[str], val_ids: Sequence[str],
                folder: str | Path = DATA_DIR) -> None:
    """Write the two id lists (one id a line) atomically; used once to create the package files."""
    folder = Path(folder)
    for name, ids in (("train_ids.txt", train_ids), ("val_ids.txt", val_ids)):
        with atomic_write(folder / name, "w", encoding="utf-8") as f:
            f.write("".join(f"{i}\n" for i in ids))


def kfold_split(ids: Iterable[str], k: int,
                seed: int = KFOLD_SEED) -> list[tuple[list[str], list[str]]]:
    """K-fold cross-validation parts: ``k`` pairs ``(train_ids, val_ids)``, each list sorted.

    The sorted ids are shuffled with ``default_rng(seed)`` and dealt round-robin into ``k``
    folds, so fold sizes differ by at most one and every id is validated exactly once.
    """
    ids = sorted(set(ids))
    if k < 2 or k > len(ids):
        raise ValueError(f"k must be in 2..{len(ids)} for {len(ids)} ids, got {k}")
    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = np.empty(len(ids), dtype=np.int64)
    fold_of[order] = np.arange(len(ids)) % k
    parts = []
    for fold in range(k):
        val = [i for i, f in zip(ids, fold_of) if f == fold]
        train = [i for i, f in zip(ids, fold_of) if f != fold]
        parts.append((train, val))
    return parts
