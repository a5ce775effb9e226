"""mrcnn.losses: zero for perfect predictions and known values on small cases.

NumPy inputs, outputs through ``keras.ops.convert_to_numpy``: runs under TensorFlow and JAX.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn import losses

pytestmark = pytest.mark.backends

LN2 = float(np.log(2.0))


def value(t) -> float:
    out = np.asarray(ops.convert_to_numpy(t))
    assert out.shape == (), out.shape  # every loss is a scalar
    return float(out)


def test_smooth_l1_known_values():
    out = losses.smooth_l1(np.array([0.0, 0.0, 0.0, 1.0], np.float32),
                           np.array([0.5, -1.0, 3.0, 1.0], np.float32))
    np.testing.assert_allclose(ops.convert_to_numpy(out), [0.125, 0.5, 2.5, 0.0])


def test_masked_mean_counts_only_the_weighted_entries():
    values = np.array([[1.0, 2.0], [3.0, 10.0]], np.float32)
    assert value(losses.masked_mean(values, np.array([[True, False], [True, False]]))) == 2.0
    # Weights broadcast over trailing axes, and nothing to count gives 0, not NaN.
    assert value(losses.masked_mean(values, np.array([[False], [True]]))) == 6.5
    assert value(losses.masked_mean(values, np.zeros((2, 2), bool))) == 0.0


def test_rpn_class_loss():
    match = np.array([[[1], [-1], [0], [1]]], np.int32)  # anchor 2 is ignored
    perfect = np.array([[[-50, 50], [50, -50], [50, -50], [-50, 50]]], np.float32)
    assert value(losses.rpn_class_loss(match, perfect)) < 1e-6
    undecided = np.zeros((1, 4, 2), np.float32)
    assert value(losses.rpn_class_loss(match, undecided)) == pytest.approx(LN2, rel=1e-6)
    # One of the three counted anchors is confidently wrong by a logit gap of 2.
    wrong = perfect.copy()
    wrong[0, 1] = [1.0, -1.0]           # negative anchor scored towards background: right
    wrong[0, 3] = [1.0, -1.0]           # positive anchor scored towards background: wrong
    expected = (np.log1p(np.exp(-2.0)) + np.log1p(np.exp(2.0))) / 3
    assert value(losses.rpn_class_loss(match, wrong)) == pytest.approx(expected, rel=1e-5)


def test_rpn_class_loss_with_nothing_to_count_is_zero():
    match = np.zeros((1, 3, 1), np.int32)
    assert value(losses.rpn_class_loss(match, np.zeros((1, 3, 2), np.float32))) == 0.0


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
    assert value(losses.rpn_bbox_loss(target, match, pred)) < 1e-7
    pred[1, 0] = [2, 2, 2, 0]                   # one element off by 2: smooth L1 1.5
    assert value(losses.rpn_bbox_loss(target, match, pred)) == pytest.approx(1.5 / 12)


def test_rpn_bbox_loss_uses_the_first_positives_in_anchor_order_only():
    # Image 0 has four positives (anchors 0, 2, 3, 5) but room for three targets: they pair
    # with anchors 0, 2 and 3 in that order, anchor 5 is left out. Image 1 has none.
    match = np.zeros((2, 6, 1), np.int32)
    match[0, [0, 2, 3, 5], 0] = 1
    match[0, [1, 4], 0] = -1
    match[1, :, 0] = -1
    target = np.zeros((2, 3, 4), np.float32)
    target[0] = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]
    target[1] = 5.0                             # rows of an image without positives: ignored
    pred = np.full((2, 6, 4), 7.0, np.float32)
    pred[0, [0, 2, 3]] = target[0]
    assert value(losses.rpn_bbox_loss(target, match, pred)) < 1e-7
    # Swapping the predictions of anchors 2 and 3 breaks the pairing: two rows off by 1 twice.
    swapped = pred.copy()
    swapped[0, [2, 3]] = pred[0, [3, 2]]
    assert value(losses.rpn_bbox_loss(target, match, swapped)) == pytest.approx(4 * 0.5 / 12)
    # One element of the first pair off by 3: smooth L1 2.5 over the 12 paired elements.
    pred[0, 0, 3] = 3.0
    assert value(losses.rpn_bbox_loss(target, match, pred)) == pytest.approx(2.5 / 12)


def test_rpn_bbox_loss_without_positives_is_zero():
    match = np.array([[[-1], [0], [-1]]], np.int32)
    out = losses.rpn_bbox_loss(np.ones((1, 2, 4), np.float32), match,
                               np.full((1, 3, 4), 4.0, np.float32))
    assert value(out) == 0.0


def test_first_positive_anchors():
    match = np.array([[[0], [1], [-1], [1], [1]], [[1], [0], [0], [0], [0]]], np.int32)
    ix, positive = losses.first_positive_anchors(match, 3)
    ix, positive = np.asarray(ops.convert_to_numpy(ix)), np.asarray(ops.convert_to_numpy(positive))
    np.testing.assert_array_equal(ix[0], [1, 3, 4])
    np.testing.assert_array_equal(positive, [[True, True, True], [True, False, False]])
    assert ix[1, 0] == 0


def test_mrcnn_class_loss_ignores_padding():
    ids = np.array([1, 0, 2, 0], np.int32)
    valid = np.array([True, True, True, False])
    logits = np.full((4, 3), -40.0, np.float32)
    logits[[0, 1, 2], [1, 0, 2]] = 40.0
    logits[3] = [0.0, 0.0, 40.0]                # padding row, wrong: ignored
    assert value(losses.mrcnn_class_loss(ids, logits, valid)) < 1e-6
    uniform = np.zeros((4, 3), np.float32)
    assert value(losses.mrcnn_class_loss(ids, uniform, valid)) == \
        pytest.approx(np.log(3.0), rel=1e-6)


def test_mrcnn_bbox_loss_uses_the_true_class_of_positive_rois():
    ids = np.array([2, 0, 1], np.int32)
    target = np.array([[0.5, 0, 0, 0], [7, 7, 7, 7], [0, 0, 0, 0]], np.float32)
    pred = np.zeros((3, 3, 4), np.float32)
    pred[0, 2] = [0.5, 0, 0, 0]
    pred[0, 1] = [5, 5, 5, 5]                    # another class's deltas: ignored
    pred[1] = 3.0                                # a background ROI: ignored
    assert value(losses.mrcnn_bbox_loss(target, ids, pred)) == 0.0
    pred[2, 1] = [0, 0, 0.5, 3.0]                # 0.125 + 2.5 over 8 elements
    assert value(losses.mrcnn_bbox_loss(target, ids, pred)) == pytest.approx(2.625 / 8)
    none = np.array([0, 0, 0], np.int32)
    assert value(losses.mrcnn_bbox_loss(target, none, pred)) == 0.0


def test_mrcnn_mask_loss():
    target = np.zeros((2, 4, 4), np.float32)
    target[0, :2] = 1
    target[1, :, :1] = 1
    ids = np.array([1, 2], np.int32)
    pred = np.full((2, 4, 4, 3), 0.5, np.float32)
    pred[0, ..., 1] = target[0]                   # exact masks for the true classes
    pred[1, ..., 2] = target[1]
    assert value(losses.mrcnn_mask_loss(target, ids, pred)) < 1e-6
    half = np.full((2, 4, 4, 3), 0.5, np.float32)
    assert value(losses.mrcnn_mask_loss(target, ids, half)) == pytest.approx(LN2, rel=1e-6)
    pred[1, 0, 0, 2] = 0.25                        # one pixel (target 1) at 0.25
    assert value(losses.mrcnn_mask_loss(target, ids, pred)) == \
        pytest.approx(-np.log(0.25) / 32, rel=1e-3)


def test_mrcnn_mask_loss_ignores_rows_that_are_not_positive():
    # Rows of class 0 (negatives and padding among the maskable ROIs) do not count, whatever
    # their targets and predictions hold.
    target = np.zeros((3, 4, 4), np.float32)
    target[0, :2] = 1
    target[2] = 1
    ids = np.array([1, 0, 0], np.int32)
    pred = np.full((3, 4, 4, 3), 0.5, np.float32)
    pred[0, ..., 1] = target[0]
    pred[1:] = 0.01
    assert value(losses.mrcnn_mask_loss(target, ids, pred)) < 1e-6
    pred[0, 3, 3, 1] = 0.5                         # one counted pixel (target 0) at 0.5
    assert value(losses.mrcnn_mask_loss(target, ids, pred)) == pytest.approx(LN2 / 16, rel=1e-5)


def test_mrcnn_mask_loss_without_positives_is_zero():
    out = losses.mrcnn_mask_loss(np.zeros((0, 4, 4), np.float32), np.zeros((0,), np.int32),
                                 np.zeros((0, 4, 4, 3), np.float32))
    assert value(out) == 0.0
    out = losses.mrcnn_mask_loss(np.ones((2, 4, 4), np.float32), np.zeros((2,), np.int32),
                                 np.zeros((2, 4, 4, 3), np.float32))
    assert value(out) == 0.0


def test_losses_run_inside_jax_jit():
    """Under JAX all five losses compile in ``jax.jit`` (masked means, no gathers of a
    data-dependent size) and give the eager values."""
    rng = np.random.default_rng(0)
    match = rng.choice([-1, 0, 1], size=(2, 20, 1)).astype(np.int32)
    rpn_logits = rng.normal(size=(2, 20, 2)).astype(np.float32)
    rpn_target = rng.normal(size=(2, 6, 4)).astype(np.float32)
    rpn_bbox = rng.normal(size=(2, 20, 4)).astype(np.float32)
    ids = np.array([1, 2, 0, 1, 0, 0], np.int32)
    valid = np.array([True] * 5 + [False])
    class_logits = rng.normal(size=(6, 3)).astype(np.float32)
    target_deltas = rng.normal(size=(6, 4)).astype(np.float32)
    pred_deltas = rng.normal(size=(6, 3, 4)).astype(np.float32)
    target_masks = (rng.uniform(size=(6, 4, 4)) > 0.5).astype(np.float32)
    pred_masks = rng.uniform(0.05, 0.95, size=(6, 4, 4, 3)).astype(np.float32)
    args = (match, rpn_logits, rpn_target, rpn_bbox, ids, valid, class_logits, target_deltas,
            pred_deltas, target_masks, pred_masks)

    def all_losses(match, rpn_logits, rpn_target, rpn_bbox, ids, valid, class_logits,
                   target_deltas, pred_deltas, target_masks, pred_masks):
        return (losses.rpn_class_loss(match, rpn_logits),
                losses.rpn_bbox_loss(rpn_target, match, rpn_bbox),
                losses.mrcnn_class_loss(ids, class_logits, valid),
                losses.mrcnn_bbox_loss(target_deltas, ids, pred_deltas),
                losses.mrcnn_mask_loss(target_masks, ids, pred_masks))

    eager = [value(v) for v in all_losses(*args)]
    assert all(np.isfinite(eager)) and all(v > 0 for v in eager)
    # The box-head losses by hand: cross-entropy over valid rows, smooth L1 of the true class.
    shifted = class_logits - class_logits.max(1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert eager[2] == pytest.approx(-log_probs[np.arange(6), ids][valid].mean(), rel=1e-5)
    diff = np.abs(target_deltas - pred_deltas[np.arange(6), ids])[ids > 0]
    assert eager[3] == pytest.approx(np.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).mean(),
                                     rel=1e-5)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jitted = jax.jit(all_losses)(*args)
        assert all(isinstance(v, jax.Array) for v in jitted)
        np.testing.assert_allclose([value(v) for v in jitted], eager, rtol=1e-5)
