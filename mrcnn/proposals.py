"""Proposal stage: RPN scores and deltas -> a fixed number of ROIs per image.

Static shapes throughout: every image gets exactly ``proposal_count`` rows, the ones NMS did not
fill being zeros (:func:`mrcnn.box_ops.valid_rows` tells them apart), so the stage compiles once
under JAX and runs as one batched computation on every backend.
"""
from __future__ import annotations

import numpy as np
from keras import ops

from mrcnn import backend_ops
from mrcnn.box_ops import apply_box_deltas, clip_boxes


def top_anchors(scores, deltas, anchors, pre_nms_limit: int):
    """The ``pre_nms_limit`` best anchors of each image, refined by their deltas and clipped.

    scores [B, A], deltas [B, A, 4] (already scaled by the std dev), anchors [A, 4]
    -> (scores [B, k], pre-NMS anchors [B, k, 4], refined [B, k, 4], clipped [B, k, 4]).
    """
    count = anchors.shape[0]
    if count is None:  # TensorFlow tracing one graph for every image size
        k = ops.minimum(pre_nms_limit, ops.shape(anchors)[0])
    else:
        k = min(int(pre_nms_limit), int(count))
    scores, ix = ops.top_k(scores, k, sorted=True)
    pre_nms = ops.take(anchors, ix, axis=0)
    deltas = ops.take_along_axis(deltas, ops.expand_dims(ix, -1), axis=1)
    refined = apply_box_deltas(pre_nms, deltas)
    clipped = clip_boxes(refined, np.array([0.0, 0.0, 1.0, 1.0], np.float32))
    return scores, pre_nms, refined, clipped


def propose(rpn_probs, rpn_deltas, anchors, proposal_count: int, nms_threshold: float,
            pre_nms_limit: int, rpn_bbox_std_dev):
    """Batch: probs [B, A, 2], deltas [B, A, 4], anchors [A, 4] -> proposals [B, count, 4]
    (best first, zero rows after the last one NMS kept)."""
    scores = ops.cast(rpn_probs[:, :, 1], "float32")
    deltas = ops.cast(rpn_deltas, "float32") * np.reshape(
        np.asarray(rpn_bbox_std_dev, np.float32), [1, 1, 4])
    anchors = ops.cast(anchors, "float32")
    scores, _, _, boxes = top_anchors(scores, deltas, anchors, pre_nms_limit)
    keep, counts = backend_ops.non_max_suppression(boxes, scores, proposal_count, nms_threshold)
    proposals = ops.take_along_axis(boxes, ops.expand_dims(keep, -1), axis=1)
    filled = ops.arange(proposal_count)[None, :] < ops.expand_dims(counts, -1)
    return ops.where(ops.expand_dims(filled, -1), proposals, 0.0)
