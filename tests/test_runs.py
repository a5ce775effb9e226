"""mrcnn.runs: run folders and checkpoint names, matterport's for Mask R-CNN and the FCN's."""
from __future__ import annotations

import datetime
import os

import pytest

from mrcnn.runs import RunFolder, RunLayout, mask_rcnn_layout

STARTED = datetime.datetime(2024, 1, 2, 9, 30, 5)
FCN = RunLayout("fcn", "fcn_{epoch:04d}.weights.h5", stamp="%Y%m%dT%H%M%S")


def touch(path) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb"):
        pass
    return str(path)


def test_mask_rcnn_names_are_matterports(tmp_path):
    run = mask_rcnn_layout("Tiny").folder(tmp_path, STARTED)
    assert run.path == str(tmp_path / "tiny20240102T0930")      # minutes, name in lower case
    assert run.checkpoint(3) == str(tmp_path / "tiny20240102T0930" / "mask_rcnn_tiny_0003.h5")
    assert run.history == str(tmp_path / "tiny20240102T0930" / "history.csv")
    assert run.val_map == str(tmp_path / "tiny20240102T0930" / "val_map.csv")
    assert mask_rcnn_layout(None).prefix == "model"
    assert not os.path.exists(run.path)                            # nothing is created


def test_the_fcn_names_its_runs_by_the_second_and_skips_a_taken_one(tmp_path):
    run = FCN.folder(tmp_path, STARTED, unique=True)
    assert run.name == "fcn20240102T093005"
    os.makedirs(run.path)
    assert FCN.folder(tmp_path, STARTED, unique=True).name == "fcn20240102T093006"
    assert FCN.folder(tmp_path, STARTED).name == "fcn20240102T093005"
    assert run.checkpoint(12) == os.path.join(run.path, "fcn_0012.weights.h5")


def test_find_last_is_the_last_checkpoint_of_the_newest_run_with_one(tmp_path):
    layout = mask_rcnn_layout("nucleus_cpu")
    assert layout.find_last(tmp_path / "missing") is None
    assert layout.find_last(tmp_path) is None
    touch(tmp_path / "nucleus_cpu20260101T1200" / "mask_rcnn_nucleus_cpu_0003.h5")
    last = touch(tmp_path / "nucleus_cpu20260102T1200" / "mask_rcnn_nucleus_cpu_0012.h5")
    touch(tmp_path / "nucleus_cpu20260102T1200" / "mask_rcnn_nucleus_cpu_0002.h5")
    touch(tmp_path / "nucleus_cpu20260102T1200" / "mask_rcnn_nucleus_cpu_0013.h5.tmp42")
    touch(tmp_path / "nucleus_cpu20260102T1200" / "history.csv")
    (tmp_path / "nucleus_cpu20270101T0000").mkdir()             # newer, nothing saved yet
    touch(tmp_path / "nucleus20280101T0000" / "mask_rcnn_nucleus_0099.h5")  # another NAME
    assert layout.find_last(tmp_path) == (last, 12)
    assert layout.last_run(tmp_path).path == os.path.dirname(last)
    assert [r.name for r in layout.runs(tmp_path)] == [
        "nucleus_cpu20260101T1200", "nucleus_cpu20260102T1200", "nucleus_cpu20270101T0000"]
    assert mask_rcnn_layout("nucleus").find_last(tmp_path)[1] == 99


def test_epochs_are_read_from_checkpoint_names(tmp_path):
    layout = mask_rcnn_layout("tiny")
    assert layout.epoch_of("logs/run/mask_rcnn_tiny_0042.h5") == 42
    assert layout.epoch_of("mask_rcnn_tiny_12345.h5") == 12345     # past 9999 epochs
    assert layout.epoch_of("mask_rcnn_tiny_0042.h5.tmp1") is None
    assert layout.epoch_of("mask_rcnn_other_0042.h5") is None
    run = RunFolder(str(tmp_path), layout)
    for epoch in (10000, 2, 9999):
        touch(run.checkpoint(epoch))
    assert [e for e, _ in run.checkpoints()] == [2, 9999, 10000]     # by number, not by name
    assert RunFolder(str(tmp_path / "missing"), layout).last_checkpoint() is None


def test_the_run_of_a_checkpoint(tmp_path):
    checkpoint = tmp_path / "fcn20260101T120000" / "fcn_0004.weights.h5"
    run = FCN.run_of(checkpoint)
    assert run == RunFolder(str(checkpoint.parent), FCN)
    assert FCN.run_of(tmp_path / "weights" / "fcn_0004.weights.h5") is None   # not a run
    assert FCN.run_of(tmp_path / "fcn20260101T120000" / "model.weights.h5") is None
    assert mask_rcnn_layout("nucleus_cpu").run_of("weights/mask_rcnn_nucleus.h5") is None


def test_a_folder_without_a_layout_knows_only_its_files(tmp_path):
    run = RunFolder(str(tmp_path))
    assert run.curves == str(tmp_path / "training_curves.png")
    with pytest.raises(ValueError, match="no checkpoint names"):
        run.checkpoint(1)
    with pytest.raises(ValueError, match="epoch"):
        RunLayout("x", "x.h5")
