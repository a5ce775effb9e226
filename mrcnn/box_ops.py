"""Box arithmetic on tensors (normalised (y1, x1, y2, x2) coordinates)."""
from __future__ import annotations

import tensorflow as tf


def apply_box_deltas(boxes: tf.Tensor, deltas: tf.Tensor) -> tf.Tensor:
    """Shift and scale boxes [N, 4] by deltas [N, (dy, dx, log dh, log dw)]."""
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height + deltas[:, 0] * height
    center_x = boxes[:, 1] + 0.5 * width + deltas[:, 1] * width
    height = height * tf.exp(deltas[:, 2])
    width = width * tf.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return tf.stack([y1, x1, y1 + height, x1 + width], axis=1)


def clip_boxes(boxes: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    """Clip boxes [N, 4] to ``window`` (y1, x1, y2, x2)."""
    wy1, wx1, wy2, wx2 = tf.split(window, 4)
    y1, x1, y2, x2 = tf.split(boxes, 4, axis=1)
    y1 = tf.maximum(tf.minimum(y1, wy2), wy1)
    x1 = tf.maximum(tf.minimum(x1, wx2), wx1)
    y2 = tf.maximum(tf.minimum(y2, wy2), wy1)
    x2 = tf.maximum(tf.minimum(x2, wx2), wx1)
    return tf.concat([y1, x1, y2, x2], axis=1)


def box_refinement(box: tf.Tensor, gt_box: tf.Tensor) -> tf.Tensor:
    """Deltas that turn ``box`` [N, 4] into ``gt_box`` [N, 4]."""
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    return tf.stack([(gt_center_y - center_y) / height, (gt_center_x - center_x) / width,
                     tf.math.log(gt_height / height), tf.math.log(gt_width / width)], axis=1)


def overlaps(boxes1: tf.Tensor, boxes2: tf.Tensor) -> tf.Tensor:
    """Pairwise IoU [N1, N2]."""
    b1 = tf.expand_dims(boxes1, 1)
    b2 = tf.expand_dims(boxes2, 0)
    y1 = tf.maximum(b1[..., 0], b2[..., 0])
    x1 = tf.maximum(b1[..., 1], b2[..., 1])
    y2 = tf.minimum(b1[..., 2], b2[..., 2])
    x2 = tf.minimum(b1[..., 3], b2[..., 3])
    intersection = tf.maximum(y2 - y1, 0) * tf.maximum(x2 - x1, 0)
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    return intersection / tf.maximum(area1 + area2 - intersection, 1e-9)


def norm_boxes(boxes: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """Pixel boxes to normalised coordinates (see ``mrcnn.utils.norm_boxes``)."""
    h, w = tf.split(tf.cast(shape, tf.float32), 2)
    scale = tf.concat([h, w, h, w], axis=-1) - 1.0
    shift = tf.constant([0., 0., 1., 1.])
    return (boxes - shift) / scale


def trim_zero_rows(boxes: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """Drop all-zero padding rows; also returns the keep mask."""
    non_zeros = tf.cast(tf.reduce_sum(tf.abs(boxes), axis=1), tf.bool)
    return tf.boolean_mask(boxes, non_zeros), non_zeros
