"""Detection stage: refine ROIs with the box head, drop background and weak scores, per-class NMS.

The output has a static shape (``DETECTION_MAX_INSTANCES`` rows, zero after the last detection)
and comes with the count of real rows, so the stage compiles once under JAX.
"""
from __future__ import annotations

import numpy as np
from keras import ops

from mrcnn import backend_ops
from mrcnn.box_ops import apply_box_deltas, clip_boxes


def refine_detections(rois, probs, deltas, window, config):
    """One image: rois [N, 4], probs [N, K], deltas [N, K, 4], window [4] (normalised)
    -> (detections [M, (y1, x1, y2, x2, class_id, score)] best first and zero padded,
    count: how many rows are detections), M = DETECTION_MAX_INSTANCES.
    """
    rois = ops.cast(rois, "float32")
    probs = ops.cast(probs, "float32")
    class_ids = ops.cast(ops.argmax(probs, axis=1), "int32")
    class_scores = ops.take_along_axis(probs, class_ids[:, None], axis=1)[:, 0]  # any rows
    chosen = ops.expand_dims(ops.expand_dims(class_ids, -1), -1)
    deltas_specific = ops.squeeze(ops.take_along_axis(ops.cast(deltas, "float32"), chosen,
                                                      axis=1), 1)
    refined = apply_box_deltas(rois, deltas_specific * np.asarray(config.BBOX_STD_DEV,
                                                                  np.float32))
    refined = clip_boxes(refined, window)

    keep = class_ids > 0
    if config.DETECTION_MIN_CONFIDENCE:
        keep = ops.logical_and(keep, class_scores >= config.DETECTION_MIN_CONFIDENCE)
    # ROIs that are zero padding have zero area: drop them as well.
    area = (refined[:, 2] - refined[:, 0]) * (refined[:, 3] - refined[:, 1])
    keep = ops.logical_and(keep, area > 0)
    scores = ops.where(keep, class_scores, -np.inf)
    # Per-class NMS in one call: shift each class to its own region so classes never overlap.
    offset = ops.expand_dims(ops.cast(class_ids, "float32"), -1) * 4.0
    limit = int(config.DETECTION_MAX_INSTANCES)
    chosen, counts = backend_ops.non_max_suppression(
        (refined + offset)[None], scores[None], limit, config.DETECTION_NMS_THRESHOLD)
    chosen, count = chosen[0], counts[0]
    # NMS pads its indices with 0: with no ROI at all (TensorFlow trims the padding) there is
    # no row 0, so gather from the rows plus one of zeros (the padding is zeroed below)
    table = ops.concatenate([refined, ops.cast(class_ids, "float32")[:, None],
                             class_scores[:, None]], axis=1)
    table = ops.concatenate([table, ops.zeros([1, 6], "float32")], axis=0)
    rows = ops.take(table, chosen, axis=0)
    filled = ops.arange(limit) < count
    return ops.where(filled[:, None], rows, 0.0), count
