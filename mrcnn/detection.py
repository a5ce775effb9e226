"""Detection layer: refine ROIs with the box head, drop background and weak scores, per-class NMS."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn.box_ops import apply_box_deltas, clip_boxes


def refine_detections(rois: tf.Tensor, probs: tf.Tensor, deltas: tf.Tensor, window: tf.Tensor,
                      config) -> tf.Tensor:
    """One image: rois [N, 4], probs [N, K], deltas [N, K, 4], window [4] (normalised)
    -> detections [n, (y1, x1, y2, x2, class_id, score)], best first, n <= DETECTION_MAX_INSTANCES.
    """
    class_ids = tf.argmax(probs, axis=1, output_type=tf.int32)
    indices = tf.stack([tf.range(tf.shape(probs)[0]), class_ids], axis=1)
    class_scores = tf.gather_nd(probs, indices)
    deltas_specific = tf.gather_nd(deltas, indices)
    refined = apply_box_deltas(rois, deltas_specific * np.asarray(config.BBOX_STD_DEV, np.float32))
    refined = clip_boxes(refined, window)

    keep = class_ids > 0
    if config.DETECTION_MIN_CONFIDENCE:
        keep = tf.logical_and(keep, class_scores >= config.DETECTION_MIN_CONFIDENCE)
    # ROIs that are zero padding have zero area: drop them as well.
    area = (refined[:, 2] - refined[:, 0]) * (refined[:, 3] - refined[:, 1])
    keep = tf.logical_and(keep, area > 0)
    keep_ix = tf.where(keep)[:, 0]
    boxes = tf.gather(refined, keep_ix)
    ids = tf.gather(class_ids, keep_ix)
    scores = tf.gather(class_scores, keep_ix)
    # Per-class NMS in one call: shift each class to its own region so classes never overlap.
    offset = tf.cast(ids, tf.float32)[:, None] * 4.0
    nms_keep = tf.image.non_max_suppression(boxes + offset, scores,
                                            config.DETECTION_MAX_INSTANCES,
                                            config.DETECTION_NMS_THRESHOLD)
    boxes = tf.gather(boxes, nms_keep)
    ids = tf.gather(ids, nms_keep)
    scores = tf.gather(scores, nms_keep)
    return tf.concat([boxes, tf.cast(ids, tf.float32)[:, None], scores[:, None]], axis=1)
