"""FCN cross-validation end to end on the bundled sample, with a tiny schedule."""
from __future__ import annotations

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest

from nucleus.errors import InputError
from nucleus.fcn.crossval import (PLOT_PNG, SUMMARY_CSV, load_fold, run_crossval,
                                  summarize)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_crossval_on_the_sample(tmp_path):
    keras.utils.set_random_seed(0)
    train0, val0 = (load_fold(None, "stage1_train", 0, 2, part) for part in ("train", "val"))
    ids = lambda d: {info["id"] for info in d.image_info}  # noqa: E731
    assert ids(train0).isdisjoint(ids(val0)) and len(ids(val0)) > 0

    csv_path = run_crossval(None, "stage1_train", folds=2, logs_dir=tmp_path, epochs=1,
                            steps_per_epoch=2, eval_every=1, weights=None, crop_size=64,
                            batch_size=1, learning_rate=1e-4, fc_width=8, verbose=0)
    assert csv_path == tmp_path / "crossval.csv"
    rows = read_csv(csv_path)
    assert list(rows[0]) == ["fold", "epoch", "pixel_iou", "map"]
    assert [(r["fold"], r["epoch"]) for r in rows] == [("0", "1"), ("1", "1")]
    for r in rows:
        assert 0.0 <= float(r["pixel_iou"]) <= 1.0 and 0.0 <= float(r["map"]) <= 1.0

    (summary,) = read_csv(tmp_path / SUMMARY_CSV)
    assert summary["epoch"] == "1" and summary["n_folds"] == "2"
    values = [float(r["map"]) for r in rows]
    assert float(summary["map_mean"]) == pytest.approx(sum(values) / 2)
    assert float(summary["map_std"]) == pytest.approx(abs(values[0] - values[1]) / 2)

    png = tmp_path / PLOT_PNG
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    for fold in (0, 1):  # keep_checkpoints=1 by default: one checkpoint per fold
        assert len(list((tmp_path / f"fold{fold}").glob("fcn*/fcn_*.weights.h5"))) == 1

    # Running again resumes: finished folds are not retrained, the results stay the same.
    again = run_crossval(None, "stage1_train", folds=2, logs_dir=tmp_path, epochs=1,
                         steps_per_epoch=2, weights=None, crop_size=64, batch_size=1,
                         fc_width=8, verbose=0)
    assert read_csv(again) == rows
    assert len(list((tmp_path / "fold0").glob("fcn*"))) == 1


def test_load_fold_with_limit():
    from nucleus.dataset import NucleusDataset

    full = NucleusDataset()
    full.load_nucleus(None, "stage1_train")
    first = [info["id"] for info in full.image_info[:6]]
    parts = [load_fold(None, "stage1_train", fold, 3, part, limit=6)
             for fold in range(3) for part in ("train", "val")]
    val_ids = [i for d in parts[1::2] for i in (info["id"] for info in d.image_info)]
    assert sorted(val_ids) == sorted(first)  # every one of the first 6 validated once
    for train, val in zip(parts[::2], parts[1::2]):
        train_ids = {info["id"] for info in train.image_info}
        assert len(train_ids) == 4 and len(val.image_ids) == 2
        assert train_ids | {info["id"] for info in val.image_info} == set(first)
    with pytest.raises(InputError, match="3 folds"):
        load_fold(None, "stage1_train", 0, 3, "train", limit=2)


def test_summarize_and_bad_folds(tmp_path):
    rows = [{"fold": 0, "epoch": 2, "pixel_iou": 0.5, "map": 0.2},
            {"fold": 1, "epoch": 2, "pixel_iou": 0.7, "map": 0.4},
            {"fold": 0, "epoch": 1, "pixel_iou": 0.1, "map": 0.0}]
    first, second = summarize(rows)
    assert first == {"epoch": 1, "n_folds": 1, "pixel_iou_mean": 0.1, "pixel_iou_std": 0.0,
                     "map_mean": 0.0, "map_std": 0.0}
    assert second["pixel_iou_mean"] == pytest.approx(0.6)
    assert second["map_std"] == pytest.approx(0.1)
    with pytest.raises(InputError):
        run_crossval(None, folds=1, logs_dir=tmp_path)
    with pytest.raises(InputError, match="fold 3"):
        run_crossval(None, folds=2, logs_dir=tmp_path, fold_ids=[3])
