"""mrcnn.mask_iou: every mask IoU entry point gives the same numbers as pixel counting."""
from __future__ import annotations

import numpy as np

from mrcnn import utils
from mrcnn.mask_iou import iou_from_counts, mask_iou
from nucleus.inference import tta
from nucleus.scoring import metric, plots


def _blobs(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    """A bool stack [H, W, n] of random rectangles with random holes; they may overlap."""
    out = np.zeros((*shape, n), bool)
    for k in range(n):
        y1, x1 = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        y2, x2 = rng.integers(y1 + 1, shape[0] + 1), rng.integers(x1 + 1, shape[1] + 1)
        out[y1:y2, x1:x2, k] = rng.random((y2 - y1, x2 - x1)) < 0.8
        out[y1, x1, k] = True
    return out


def _counted(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference: IoU by counting the pixels of each pair, one pair at a time."""
    out = np.zeros((a.shape[-1], b.shape[-1]))
    for i in range(a.shape[-1]):
        for j in range(b.shape[-1]):
            union = np.count_nonzero(a[..., i] | b[..., j])
            out[i, j] = np.count_nonzero(a[..., i] & b[..., j]) / union if union else 0.0
    return out


def _disjoint(stack: np.ndarray) -> np.ndarray:
    """The stack with each pixel left only to its first mask."""
    owner = np.cumsum(stack, axis=-1)
    return stack & (owner == 1)


def test_entry_points_agree_on_random_masks():
    rng = np.random.default_rng(7)
    for trial in range(20):
        shape = (int(rng.integers(5, 60)), int(rng.integers(5, 60)))
        a = _blobs(rng, shape, int(rng.integers(1, 9)))
        b = _blobs(rng, shape, int(rng.integers(1, 9)))
        expected = _counted(a, b)
        np.testing.assert_array_equal(mask_iou(a, b), expected)
        np.testing.assert_array_equal(plots._iou(a, b), expected)  # overlapping masks
        # matterport's float32 result is the float32 division of the counts
        old = utils.compute_overlaps_masks(a.astype(np.float32), b.astype(np.float32))
        inter = (a.reshape(-1, a.shape[-1]).T.astype(np.float32)
                 @ b.reshape(-1, b.shape[-1]).astype(np.float32))
        union = a.sum((0, 1)).astype(np.float32)[:, None] + b.sum((0, 1)).astype(np.float32) - inter
        assert old.dtype == np.float32
        np.testing.assert_array_equal(old, inter / union)
        np.testing.assert_array_equal(old, expected.astype(np.float32))
        # label images (disjoint, non-empty masks) through the metric's histogram
        da, db = _disjoint(a), _disjoint(b)
        da, db = da[..., da.any((0, 1))], db[..., db.any((0, 1))]
        np.testing.assert_array_equal(metric.iou_matrix(da, db), _counted(da, db))
        np.testing.assert_array_equal(metric.iou_matrix(metric.masks_to_labels(da),
                                                        metric.masks_to_labels(db)),
                                      mask_iou(da, db))
        np.testing.assert_array_equal(plots._iou(da, db), mask_iou(da, db))
        # test-time augmentation's IoU of two cropped instances
        ia = tta._instances(a, np.ones(a.shape[-1]), 0)
        ib = tta._instances(b, np.ones(b.shape[-1]), 1)
        got = np.array([[tta._mask_iou(x, y) for y in ib] for x in ia])
        np.testing.assert_array_equal(got, expected)


def test_empty_masks_and_empty_stacks():
    masks = np.zeros((4, 4, 2), bool)
    masks[1:3, 1:3, 1] = True
    np.testing.assert_array_equal(mask_iou(masks, masks), [[0.0, 0.0], [0.0, 1.0]])
    assert mask_iou(masks, np.zeros((4, 4, 0), bool)).shape == (2, 0)
    np.testing.assert_array_equal(iou_from_counts(np.array([[0, 2]]), [2], [0, 4]), [[0.0, 0.5]])
    np.testing.assert_array_equal(iou_from_counts(np.zeros((1, 1)), [0], [0]), [[0.0]])
