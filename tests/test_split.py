"""Tests for nucleus.split: the packaged fixed split and seeded k-fold parts."""
from __future__ import annotations

import random

import pytest

from nucleus.split import N_VAL, kfold_split, load_split, make_split


def test_packaged_split_has_603_and_67_disjoint_ids():
    train, val = load_split()
    assert len(train) == 603 and len(val) == 67
    assert len(set(train)) == 603 and len(set(val)) == 67
    assert not set(train) & set(val)
    assert all(len(i) == 64 and int(i, 16) >= 0 for i in train + val)  # Kaggle ids: sha256 hex


def test_make_split_reproduces_the_packaged_files():
    train, val = load_split()
    assert make_split(sorted(train + val)) == (train, val)
    shuffled = train + val
    random.Random(3).shuffle(shuffled)
    assert make_split(shuffled) == (train, val)  # listing order does not matter
    assert make_split(train + val, seed=1) != (train, val)


def test_make_split_sizes_and_errors():
    ids = [f"id{i:03d}" for i in range(100)]
    train, val = make_split(ids)
    assert len(val) == N_VAL and len(train) == 100 - N_VAL
    assert sorted(train + val) == ids
    with pytest.raises(ValueError, match="n_val"):
        make_split(ids[:10])


def test_kfold_split_covers_every_id_once():
    ids = [f"id{i:02d}" for i in range(23)]
    parts = kfold_split(reversed(ids), 5)
    assert len(parts) == 5
    vals = [v for _, v in parts]
    assert sorted(sum(vals, [])) == ids
    assert {len(v) for v in vals} == {4, 5}
    for train, val in parts:
        assert sorted(train + val) == ids and not set(train) & set(val)
        assert train == sorted(train) and val == sorted(val)
    assert kfold_split(ids, 5) == parts  # fixed seed
    assert kfold_split(ids, 5, seed=7) != parts


def test_kfold_split_bad_k():
    with pytest.raises(ValueError, match="k must be"):
        kfold_split(["a", "b", "c"], 4)
    with pytest.raises(ValueError, match="k must be"):
        kfold_split(["a", "b", "c"], 1)
