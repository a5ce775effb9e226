"""The five Mask R-CNN losses, each a scalar averaged over the elements that count.

Static shapes: instead of gathering the elements that count (a shape known only at run time),
every loss weighs all rows by a 0/1 mask, so it compiles once under JAX.
"""
from __future__ import annotations

from keras import ops


def smooth_l1(y_true, y_pred):
    diff = ops.abs(ops.cast(y_true, "float32") - ops.cast(y_pred, "float32"))
    less_than_one = ops.cast(diff < 1.0, "float32")
    return less_than_one * 0.5 * diff ** 2 + (1 - less_than_one) * (diff - 0.5)


def masked_mean(values, weights):
    """Mean of ``values`` over the entries whose weight is 1 (0 when there are none)."""
    weights = ops.cast(ops.broadcast_to(weights, ops.shape(values)), "float32")
    total = ops.sum(values * weights)
    count = ops.sum(weights)
    return ops.where(count > 0, total / ops.maximum(count, 1.0), 0.0)


def rpn_class_loss(rpn_match, rpn_class_logits):
    """rpn_match [B, A, 1] in {1, -1, 0 = ignore}; logits [B, A, 2]."""
    rpn_match = ops.squeeze(ops.convert_to_tensor(rpn_match), -1)
    anchor_class = ops.cast(rpn_match == 1, "int32")
    loss = ops.sparse_categorical_crossentropy(anchor_class,
                                               ops.cast(rpn_class_logits, "float32"),
                                               from_logits=True)
    return masked_mean(loss, rpn_match != 0)


def first_positive_anchors(rpn_match, count: int):
    """Indices [B, count] of each image's first ``count`` positive anchors in anchor order
    (then other anchors), and which of them are positive [B, count]."""
    positive = ops.squeeze(ops.convert_to_tensor(rpn_match), -1) == 1
    anchors = ops.shape(positive)[1]
    order = ops.cast(ops.arange(anchors), "float32")
    key = ops.where(positive, order, order + ops.cast(anchors, "float32"))
    _, ix = ops.top_k(-key, count, sorted=True)
    return ix, ops.take_along_axis(positive, ix, axis=1)


def rpn_bbox_loss(target_bbox, rpn_match, rpn_bbox):
    """target_bbox [B, max_pos, 4] holds the deltas of the positive anchors of each image in
    anchor order, zero padded; rpn_match [B, A, 1]; rpn_bbox [B, A, 4] the predictions."""
    target_bbox = ops.cast(target_bbox, "float32")
    ix, positive = first_positive_anchors(rpn_match, target_bbox.shape[1])
    pred = ops.take_along_axis(ops.cast(rpn_bbox, "float32"), ops.expand_dims(ix, -1), axis=1)
    return masked_mean(smooth_l1(target_bbox, pred), ops.expand_dims(positive, -1))


def mrcnn_class_loss(target_class_ids, logits, valid):
    """Cross-entropy over the sampled ROIs (``valid`` marks ROIs that are not padding)."""
    loss = ops.sparse_categorical_crossentropy(ops.cast(target_class_ids, "int32"),
                                               ops.cast(logits, "float32"), from_logits=True)
    return masked_mean(loss, valid)


def _of_class(values, class_ids):
    """values [N, K, ...] -> values[n, class_ids[n]] [N, ...]."""
    ids = ops.cast(class_ids, "int32")
    ids = ops.reshape(ids, [-1] + [1] * (len(values.shape) - 1))
    return ops.squeeze(ops.take_along_axis(values, ids, axis=1), 1)


def mrcnn_bbox_loss(target_deltas, target_class_ids, pred_deltas):
    """Smooth L1 on positive ROIs, for the deltas of their true class.
    Shapes [N, 4], [N], [N, K, 4]."""
    pred = _of_class(ops.cast(pred_deltas, "float32"), target_class_ids)
    positive = ops.expand_dims(ops.convert_to_tensor(target_class_ids) > 0, -1)
    return masked_mean(smooth_l1(target_deltas, pred), positive)


def mrcnn_mask_loss(target_masks, target_class_ids, pred_masks):
    """Binary cross-entropy of positive ROIs' masks for their true class.

    target_masks [P, h, w], target_class_ids [P] (0 marks a row that is not a positive ROI),
    pred_masks [P, h, w, K].
    """
    pred = _of_class(ops.transpose(ops.cast(pred_masks, "float32"), [0, 3, 1, 2]),
                     target_class_ids)
    pred = ops.clip(pred, 1e-7, 1 - 1e-7)
    target = ops.cast(target_masks, "float32")
    bce = -(target * ops.log(pred) + (1 - target) * ops.log(1 - pred))
    positive = ops.reshape(ops.convert_to_tensor(target_class_ids) > 0, [-1, 1, 1])
    return masked_mean(bce, positive)
