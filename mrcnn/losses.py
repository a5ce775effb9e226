"""The five Mask R-CNN losses (each a scalar, averaged over the elements that count)."""
from __future__ import annotations

import tensorflow as tf


def smooth_l1(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    diff = tf.abs(y_true - y_pred)
    less_than_one = tf.cast(diff < 1.0, tf.float32)
    return less_than_one * 0.5 * diff ** 2 + (1 - less_than_one) * (diff - 0.5)


def _safe_mean(x: tf.Tensor) -> tf.Tensor:
    return tf.math.divide_no_nan(tf.reduce_sum(x), tf.cast(tf.size(x), tf.float32))


def rpn_class_loss(rpn_match: tf.Tensor, rpn_class_logits: tf.Tensor) -> tf.Tensor:
    """rpn_match [B, A, 1] in {1, -1, 0 = ignore}; logits [B, A, 2]."""
    rpn_match = tf.squeeze(rpn_match, -1)
    anchor_class = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    indices = tf.where(tf.not_equal(rpn_match, 0))
    logits = tf.gather_nd(tf.cast(rpn_class_logits, tf.float32), indices)
    labels = tf.gather_nd(anchor_class, indices)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _safe_mean(loss)


def rpn_bbox_loss(target_bbox: tf.Tensor, rpn_match: tf.Tensor, rpn_bbox: tf.Tensor) -> tf.Tensor:
    """target_bbox [B, max_pos, 4] holds the deltas of the positive anchors of each image in
    anchor order, zero padded; rpn_bbox [B, A, 4] the predictions."""
    rpn_match = tf.squeeze(rpn_match, -1)
    positive = tf.equal(rpn_match, 1)
    pred = tf.boolean_mask(tf.cast(rpn_bbox, tf.float32), positive)
    counts = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)
    # Gather the first counts[b] rows of each image's targets, in the same order as ``pred``.
    max_pos = tf.shape(target_bbox)[1]
    take = tf.sequence_mask(tf.minimum(counts, max_pos), max_pos)
    target = tf.boolean_mask(target_bbox, take)
    n = tf.minimum(tf.shape(pred)[0], tf.shape(target)[0])
    return _safe_mean(smooth_l1(target[:n], pred[:n]))


def mrcnn_class_loss(target_class_ids: tf.Tensor, logits: tf.Tensor,
                     valid: tf.Tensor) -> tf.Tensor:
    """Cross-entropy over the sampled ROIs (``valid`` marks ROIs that are not padding)."""
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(target_class_ids, tf.int32), logits=logits)
    weights = tf.cast(valid, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(loss * weights), tf.reduce_sum(weights))


def mrcnn_bbox_loss(target_deltas: tf.Tensor, target_class_ids: tf.Tensor,
                    pred_deltas: tf.Tensor) -> tf.Tensor:
    """Smooth L1 on positive ROIs, for the deltas of their true class. Shapes [N, 4], [N], [N, K, 4]."""
    positive = tf.where(target_class_ids > 0)[:, 0]
    ids = tf.gather(tf.cast(target_class_ids, tf.int32), positive)
    indices = tf.stack([tf.cast(positive, tf.int32), ids], axis=1)
    pred = tf.gather_nd(pred_deltas, indices)
    target = tf.gather(target_deltas, positive)
    return _safe_mean(smooth_l1(target, pred))


def mrcnn_mask_loss(target_masks: tf.Tensor, target_class_ids: tf.Tensor,
                    pred_masks: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy of positive ROIs' masks for their true class.

    target_masks [P, h, w], target_class_ids [P] (all positive), pred_masks [P, h, w, K].
    """
    pred = tf.gather(tf.transpose(pred_masks, [0, 3, 1, 2]), tf.cast(target_class_ids, tf.int32),
                     axis=1, batch_dims=1)
    pred = tf.clip_by_value(pred, 1e-7, 1 - 1e-7)
    bce = -(target_masks * tf.math.log(pred) + (1 - target_masks) * tf.math.log(1 - pred))
    return _safe_mean(bce)
