"""Proposal layer: turn RPN scores and deltas into a fixed number of ROIs per image."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn.box_ops import apply_box_deltas, clip_boxes


def propose_one(scores: tf.Tensor, deltas: tf.Tensor, anchors: tf.Tensor, proposal_count: int,
                nms_threshold: float, pre_nms_limit: int) -> tf.Tensor:
    """One image: top anchors by score, refined, clipped, NMS'd, zero-padded to ``proposal_count``."""
    k = tf.minimum(pre_nms_limit, tf.shape(anchors)[0])
    scores, ix = tf.math.top_k(scores, k, sorted=True)
    deltas = tf.gather(deltas, ix)
    boxes = apply_box_deltas(tf.gather(anchors, ix), deltas)
    boxes = clip_boxes(boxes, tf.constant([0., 0., 1., 1.]))
    keep = tf.image.non_max_suppression(boxes, scores, proposal_count, nms_threshold)
    proposals = tf.gather(boxes, keep)
    padding = tf.maximum(proposal_count - tf.shape(proposals)[0], 0)
    return tf.pad(proposals, [(0, padding), (0, 0)])


def propose(rpn_probs: tf.Tensor, rpn_deltas: tf.Tensor, anchors: tf.Tensor, proposal_count: int,
            nms_threshold: float, pre_nms_limit: int, rpn_bbox_std_dev) -> tf.Tensor:
    """Batch: probs [B, A, 2], deltas [B, A, 4], anchors [A, 4] -> proposals [B, count, 4]."""
    scores = tf.cast(rpn_probs[:, :, 1], tf.float32)
    deltas = tf.cast(rpn_deltas, tf.float32) * np.reshape(rpn_bbox_std_dev, [1, 1, 4]).astype(
        np.float32)
    anchors = tf.cast(anchors, tf.float32)
    return tf.map_fn(
        lambda x: propose_one(x[0], x[1], anchors, proposal_count, nms_threshold, pre_nms_limit),
        (scores, deltas), fn_output_signature=tf.TensorSpec([proposal_count, 4], tf.float32))
