"""nucleus.fcn.detector: FCNDetector's result dicts, the newest checkpoint, and that inference
loads no training code. (FCNDetector on a trained network: tests/test_fcn_train.py.)"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import run_fresh_python

from nucleus.fcn import detector
from nucleus.fcn.detector import FCNDetector, find_last


def _two_nuclei() -> np.ndarray:
    """Foreground probability [40, 60]: a faint disk (0.7) left, a sure one (0.9) right."""
    yy, xx = np.mgrid[:40, :60]
    probability = np.full((40, 60), 0.1, np.float32)
    probability[(yy - 20) ** 2 + (xx - 14) ** 2 <= 64] = 0.7
    probability[(yy - 20) ** 2 + (xx - 44) ** 2 <= 81] = 0.9
    return probability


def test_detect_gives_mask_rcnn_style_results_sorted_by_score(monkeypatch):
    probability = _two_nuclei()
    monkeypatch.setattr(detector, "predict_foreground", lambda model, image: probability)
    fcn = FCNDetector(model=None, radius=1)
    image = np.zeros((40, 60, 3), np.uint8)
    (result,) = fcn.detect([image])
    masks, scores = result["masks"], result["scores"]
    assert masks.dtype == bool and masks.shape == (40, 60, 2)
    assert masks.sum(axis=-1).max() <= 1                     # never overlapping
    np.testing.assert_allclose(scores, [0.9, 0.7], rtol=1e-6)  # mean probability, best first
    assert masks[20, 44, 0] and masks[20, 14, 1]
    for k in range(2):
        ys, xs = np.nonzero(masks[..., k])
        assert tuple(result["rois"][k]) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    assert list(result["class_ids"]) == [1, 1]
    same_masks, same_scores = fcn.detect_with_scores(image)
    np.testing.assert_array_equal(same_masks, masks)
    np.testing.assert_array_equal(same_scores, scores)
    with pytest.raises(ValueError, match="list of images"):
        fcn.detect(image)


def test_nothing_above_the_threshold_is_no_nuclei(monkeypatch):
    monkeypatch.setattr(detector, "predict_foreground",
                        lambda model, image: np.full((8, 8), 0.2, np.float32))
    masks, scores = FCNDetector(model=None).detect_with_scores(np.zeros((8, 8, 3), np.uint8))
    assert masks.shape == (8, 8, 0) and scores.shape == (0,)


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return path


def test_find_last_is_the_last_checkpoint_of_the_newest_run_with_one(tmp_path):
    assert find_last(tmp_path / "missing") is None
    assert find_last(tmp_path) is None
    _touch(tmp_path / "fcn20260101T120000" / "fcn_0003.weights.h5")
    last = _touch(tmp_path / "fcn20260102T120000" / "fcn_0012.weights.h5")
    _touch(tmp_path / "fcn20260102T120000" / "fcn_0002.weights.h5")
    _touch(tmp_path / "fcn20260102T120000" / "fcn_0013.weights.h5.tmp")   # not a checkpoint
    (tmp_path / "fcn20260103T120000").mkdir()                 # newer, but nothing saved yet
    _touch(tmp_path / "other20270101T120000" / "fcn_0099.weights.h5")      # not a run folder
    assert find_last(tmp_path) == (last, 12)


def test_inference_loads_no_training_code(tmp_path):
    """Importing the inference modules and finding an FCN checkpoint through
    nucleus.inference.nucleus_model imports neither nucleus.training.train nor nucleus.fcn.train."""
    _touch(tmp_path / "fcn20260101T120000" / "fcn_0001.weights.h5")
    code = (
        "import sys\n"
        "import nucleus.inference.detectors, nucleus.inference.parallel, nucleus.segment\n"
        "import nucleus.fcn.detector\n"
        "from nucleus.inference.nucleus_model import NucleusModel\n"
        f"found = NucleusModel.load(None, kind='fcn', logs={str(tmp_path)!r})\n"
        "assert found.weights.endswith('fcn_0001.weights.h5') and found.epoch == 1\n"
        "print(sorted(m for m in ('nucleus.training.train', 'nucleus.fcn.train',\n"
        "                         'nucleus.fcn.crossval') if m in sys.modules))\n")
    done = run_fresh_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"


def test_the_package_still_offers_every_name():
    import nucleus.fcn as fcn

    assert fcn.FCNDetector is FCNDetector and fcn.find_last is find_last
    for name in fcn.__all__:
        assert callable(getattr(fcn, name)), name
    with pytest.raises(AttributeError):
        fcn.no_such_name
