"""mrcnn.box_ops (TensorFlow) agrees with the NumPy versions in mrcnn.utils."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn import box_ops, utils


def random_boxes(rng, n, size=1.0):
    y1, x1 = rng.uniform(0, 0.6 * size, (2, n))
    h, w = rng.uniform(0.05 * size, 0.4 * size, (2, n))
    return np.stack([y1, x1, y1 + h, x1 + w], 1).astype(np.float32)


def test_box_refinement_and_apply_box_deltas_agree_with_numpy_and_invert():
    rng = np.random.default_rng(1)
    boxes, gt = random_boxes(rng, 30), random_boxes(rng, 30)
    deltas_tf = box_ops.box_refinement(tf.constant(boxes), tf.constant(gt)).numpy()
    np.testing.assert_allclose(deltas_tf, utils.box_refinement(boxes, gt), rtol=1e-5, atol=1e-6)
    back = box_ops.apply_box_deltas(tf.constant(boxes), tf.constant(deltas_tf)).numpy()
    np.testing.assert_allclose(back, gt, atol=1e-5)
    np.testing.assert_allclose(back, utils.apply_box_deltas(boxes, deltas_tf), atol=1e-5)


def test_overlaps_agrees_with_compute_overlaps():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 7, 100), random_boxes(rng, 5, 100)
    b[0] = a[3]  # one exact match
    b[1] = [500, 500, 510, 510]  # one disjoint box
    iou = box_ops.overlaps(tf.constant(a), tf.constant(b)).numpy()
    np.testing.assert_allclose(iou, utils.compute_overlaps(a, b), rtol=1e-5, atol=1e-6)
    assert iou[3, 0] == np.float32(1.0)
    assert not iou[:, 1].any()


def test_overlaps_known_value():
    iou = box_ops.overlaps(tf.constant([[0., 0., 10., 10.]]),
                           tf.constant([[5., 5., 15., 15.], [0., 0., 10., 5.]])).numpy()
    np.testing.assert_allclose(iou, [[25 / 175, 0.5]], rtol=1e-6)


def test_clip_boxes_to_window():
    boxes = tf.constant([[-0.2, 0.1, 0.5, 1.3], [0.3, 0.3, 0.4, 0.4], [1.2, 1.2, 1.5, 1.5]])
    clipped = box_ops.clip_boxes(boxes, tf.constant([0.1, 0.0, 0.9, 1.0])).numpy()
    np.testing.assert_allclose(clipped, [[0.1, 0.1, 0.5, 1.0], [0.3, 0.3, 0.4, 0.4],
                                         [0.9, 1.0, 0.9, 1.0]], rtol=1e-6)


def test_norm_boxes_agrees_with_numpy():
    boxes = np.array([[0, 0, 64, 48], [10, 5, 20, 30]], np.float32)
    tf_norm = box_ops.norm_boxes(tf.constant(boxes), tf.constant([64, 48])).numpy()
    np.testing.assert_allclose(tf_norm, utils.norm_boxes(boxes, (64, 48)), rtol=1e-6)


def test_trim_zero_rows():
    boxes = tf.constant([[0., 0., 0., 0.], [0.1, 0.2, 0.3, 0.4], [0., 0., 0., 0.],
                         [0., 0., 0.5, 0.5]])
    kept, mask = box_ops.trim_zero_rows(boxes)
    np.testing.assert_allclose(kept.numpy(), [[0.1, 0.2, 0.3, 0.4], [0., 0., 0.5, 0.5]])
    np.testing.assert_array_equal(mask.numpy(), [False, True, False, True])


def test_overlaps_of_small_normalised_boxes():
    # Normalised boxes have areas far below 1: the guard against a zero union must not bite.
    iou = box_ops.overlaps(tf.constant([[0.1, 0.1, 0.2, 0.2]]),
                           tf.constant([[0.15, 0.1, 0.25, 0.2], [0.5, 0.5, 0.6, 0.6]])).numpy()
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]], rtol=1e-5)
