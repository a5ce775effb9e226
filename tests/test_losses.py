"""mrcnn.losses: zero for perfect predictions and known values on small cases."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mrcnn import losses

LN2 = float(np.log(2.0))


def value(t) -> float:
    return float(t.numpy())


def test_smooth_l1_known_values():
    out = losses.smooth_l1(tf.constant([0.0, 0.0, 0.0, 1.0]), tf.constant([0.5, -1.0, 3.0, 1.0]))
    np.testing.assert_allclose(out.numpy(), [0.125, 0.5, 2.5, 0.0])


def test_rpn_class_loss():
    match = np.array([[[1], [-1], [0], [1]]], np.int32)  # anchor 2 is ignored
    perfect = np.array([[[-50, 50], [50, -50], [50, -50], [-50, 50]]], np.float32)
    assert value(losses.rpn_class_loss(tf.constant(match), tf.constant(perfect))) < 1e-6
    undecided = np.zeros((1, 4, 2), np.float32)
    assert value(losses.rpn_class_loss(tf.constant(match), tf.constant(undecided))) == \
        pytest.approx(LN2, rel=1e-6)
    # One of the three counted anchors is confidently wrong by a logit gap of 2.
    wrong = perfect.copy()
    wrong[0, 1] = [1.0, -1.0]           # negative anchor scored towards background: right
    wrong[0, 3] = [1.0, -1.0]           # positive anchor scored towards background: wrong
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(2.0))) / 3
    assert value(losses.rpn_class_loss(tf.constant(match), tf.constant(wrong))) == \
        pytest.approx(expected, rel=1e-5)


def test_rpn_class_loss_with_nothing_to_count_is_zero():
    match = np.zeros((1, 3, 1), np.int32)
    assert value(losses.rpn_class_loss(tf.constant(match), tf.zeros((1, 3, 2)))) == 0.0


def test_rpn_bbox_loss_pairs_targets_with_positive_anchors_image_by_image():
    # Image 0: positives at anchors 1 and 3; image 1: a positive at anchor 0.
    match = np.array([[[0], [1], [-1], [1]], [[1], [0], [-1], [-1]]], np.int32)
    target = np.zeros((2, 3, 4), np.float32)   # deltas in anchor order, zero padded
    target[0, 0] = [0.1, 0.2, 0.3, 0.4]
    target[0, 1] = [-1, 0, 0, 0.5]
    target[1, 0] = [2, 2, 2, 2]
    pred = np.full((2, 4, 4), 9.0, np.float32)  # non-positive anchors must not count
    pred[0, 1] = target[0, 0]
    pred[0, 3] = target[0, 1]
    pred[1, 0] = target[1, 0]
    assert value(losses.rpn_bbox_loss(tf.constant(target), tf.constant(match),
                                      tf.constant(pred))) < 1e-7
    pred[1, 0] = [2, 2, 2, 0]                   # one element off by 2: smooth L1 1.5
    assert value(losses.rpn_bbox_loss(tf.constant(target), tf.constant(match),
                                      tf.constant(pred))) == pytest.approx(1.5 / 12)


def test_mrcnn_class_loss_ignores_padding():
    ids = tf.constant([1, 0, 2, 0])
    valid = tf.constant([True, True, True, False])
    logits = np.full((4, 3), -40.0, np.float32)
    logits[[0, 1, 2], [1, 0, 2]] = 40.0
    logits[3] = [0.0, 0.0, 40.0]                # padding row, wrong: ignored
    assert value(losses.mrcnn_class_loss(ids, tf.constant(logits), valid)) < 1e-6
    uniform = tf.zeros((4, 3))
    assert value(losses.mrcnn_class_loss(ids, uniform, valid)) == \
        pytest.approx(np.log(3.0), rel=1e-6)


def test_mrcnn_bbox_loss_uses_the_true_class_of_positive_rois():
    ids = tf.constant([2, 0, 1])
    target = np.array([[0.5, 0, 0, 0], [7, 7, 7, 7], [0, 0, 0, 0]], np.float32)
    pred = np.zeros((3, 3, 4), np.float32)
    pred[0, 2] = [0.5, 0, 0, 0]
    pred[0, 1] = [5, 5, 5, 5]                    # another class's deltas: ignored
    pred[1] = 3.0                                # a background ROI: ignored
    assert value(losses.mrcnn_bbox_loss(tf.constant(target), ids, tf.constant(pred))) == 0.0
    pred[2, 1] = [0, 0, 0.5, 3.0]                # 0.125 + 2.5 over 8 elements
    assert value(losses.mrcnn_bbox_loss(tf.constant(target), ids, tf.constant(pred))) == \
        pytest.approx(2.625 / 8)
    none = tf.constant([0, 0, 0])
    assert value(losses.mrcnn_bbox_loss(tf.constant(target), none, tf.constant(pred))) == 0.0


def test_mrcnn_mask_loss():
    target = np.zeros((2, 4, 4), np.float32)
    target[0, :2] = 1
    target[1, :, :1] = 1
    ids = tf.constant([1, 2])
    pred = np.full((2, 4, 4, 3), 0.5, np.float32)
    pred[0, ..., 1] = target[0]                   # exact masks for the true classes
    pred[1, ..., 2] = target[1]
    assert value(losses.mrcnn_mask_loss(tf.constant(target), ids, tf.constant(pred))) < 1e-6
    half = np.full((2, 4, 4, 3), 0.5, np.float32)
    assert value(losses.mrcnn_mask_loss(tf.constant(target), ids, tf.constant(half))) == \
        pytest.approx(LN2, rel=1e-6)
    pred[1, 0, 0, 2] = 0.25                        # one pixel (target 1) at 0.25
    assert value(losses.mrcnn_mask_loss(tf.constant(target), ids, tf.constant(pred))) == \
        pytest.approx(-np.log(0.25) / 32, rel=1e-3)


def test_mrcnn_mask_loss_without_positives_is_zero():
    out = losses.mrcnn_mask_loss(tf.zeros((0, 4, 4)), tf.zeros((0,), tf.int32),
                                 tf.zeros((0, 4, 4, 3)))
    assert value(out) == 0.0
