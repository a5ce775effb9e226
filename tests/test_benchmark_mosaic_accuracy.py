"""benchmarks/mosaic_accuracy.py: a labelled mosaic whose labels lie exactly on its nuclei."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "mosaic_accuracy.py"
_spec = importlib.util.spec_from_file_location("benchmark_mosaic_accuracy", _PATH)
mosaic_accuracy = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_mosaic_accuracy"] = mosaic_accuracy
_spec.loader.exec_module(mosaic_accuracy)


def _piece(shape, boxes) -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros(shape, np.int32)
    for k, (y0, x0, y1, x1) in enumerate(boxes, 1):
        labels[y0:y1, x0:x1] = k
    return (labels > 0).astype(np.uint8) * 200, labels


def test_labels_follow_the_pieces_and_are_numbered_apart():
    pairs = [_piece((30, 50), [(2, 2, 10, 10), (20, 40, 30, 50)]),
             _piece((40, 20), [(0, 0, 5, 5), (10, 5, 20, 15), (35, 15, 40, 20)])]
    image, labels = mosaic_accuracy.labelled_mosaic(pairs, 100, seed=1)
    assert image.shape == labels.shape == (100, 100)
    np.testing.assert_array_equal(image > 0, labels > 0)        # every nucleus pixel labelled
    ids = np.unique(labels[labels > 0])
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))   # consecutive
    # pieces repeat, yet no label spans two pieces: each label is one box
    for k in ids:
        ys, xs = np.nonzero(labels == k)
        assert (labels[ys.min():ys.max() + 1, xs.min():xs.max() + 1] == k).all()
    assert len(ids) > 10
    again = mosaic_accuracy.labelled_mosaic(pairs, 100, seed=1)
    np.testing.assert_array_equal(again[1], labels)               # seeded


def test_the_sample_val_images_make_a_mosaic(tmp_path):
    pairs = mosaic_accuracy.val_pairs(None)
    assert pairs and all(p.dtype == np.uint8 and p.shape == t.shape for p, t in pairs)
    image_path, labels_path = mosaic_accuracy.mosaic_files(
        tmp_path, "val", lambda: pairs, 700)
    labels = np.load(labels_path)
    import tifffile
    image = tifffile.imread(image_path)
    assert image.shape == labels.shape == (700, 700) and labels.max() > 50
    assert image[labels > 0].mean() > image[labels == 0].mean() + 20   # nuclei are bright
    assert sorted(p.name for p in tmp_path.iterdir()) == ["val_700.tif", "val_700_labels.npy"]
