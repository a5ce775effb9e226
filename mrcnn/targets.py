"""Detection-target stage: sample ROIs among the proposals and give each its class, box and mask.

For every image, ``TRAIN_ROIS_PER_IMAGE`` rows: positive ROIs (IoU >= ``ROI_POSITIVE_IOU``, 0.5,
with a ground-truth box) first, then negatives, then zero rows. Positives are at most
``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)``, so mask targets are needed only for that many
leading rows. All shapes are static (a random key per candidate and ``top_k`` instead of a
shuffle of a list of unknown length), so the stage compiles once under JAX; randomness comes from
``keras.random`` and the seed (generator) the caller passes.
"""
from __future__ import annotations

import numpy as np
from keras import ops, random

from mrcnn import backend_ops, box_ops


def max_positive_rois(config) -> int:
    """Rows of each image's ROIs that can hold positives (and so need mask targets)."""
    return int(config.TRAIN_ROIS_PER_IMAGE * config.ROI_POSITIVE_RATIO)


def negative_counts(positive_count, config):
    """How many negatives go with ``positive_count`` positives [B]: enough to make positives
    ROI_POSITIVE_RATIO of the sample, or a quarter of the ROIs when there is no positive."""
    ratio = 1.0 / config.ROI_POSITIVE_RATIO
    count = ops.cast(ratio * ops.cast(positive_count, "float32"), "int32") - positive_count
    count = ops.maximum(count, 0)
    return ops.where(positive_count > 0, count, config.TRAIN_ROIS_PER_IMAGE // 4)


def _take_rows(values, index):
    """values [B, N, ...] -> values[b, index[b, r]] [B, R, ...]."""
    for _ in range(len(values.shape) - 2):
        index = ops.expand_dims(index, -1)
    return ops.take_along_axis(values, index, axis=1)


def detection_targets(proposals, gt_class_ids, gt_boxes, gt_masks, config, seed=None):
    """Batch of B images.

    proposals [B, P, 4] (zero rows are padding), gt_class_ids [B, G] (0 = padding),
    gt_boxes [B, G, 4] normalised, gt_masks [B, h, w, G] (mini masks when USE_MINI_MASK)
    -> rois [B, R, 4], class_ids [B, R] int32, deltas [B, R, 4], masks [B, M, mh, mw] for the
    first M = :func:`max_positive_rois` rows (zero where a row is not positive). No gradients.
    """
    num_rois = config.TRAIN_ROIS_PER_IMAGE
    max_pos = max_positive_rois(config)
    proposals = ops.cast(proposals, "float32")
    gt_boxes = ops.cast(gt_boxes, "float32")
    gt_class_ids = ops.cast(gt_class_ids, "int32")
    batch = ops.shape(proposals)[0]
    gt_valid = gt_class_ids > 0
    # Ground-truth boxes are always candidate ROIs too, so every object has positives
    # from the first step of training on (the RPN is useless then).
    candidates = ops.concatenate([proposals, gt_boxes], axis=1)
    candidate_valid = ops.concatenate([box_ops.valid_rows(proposals), gt_valid], axis=1)
    iou = ops.where(ops.expand_dims(gt_valid, 1), box_ops.overlaps(candidates, gt_boxes), -1.0)
    iou_max = ops.max(iou, axis=2)
    positive = ops.logical_and(candidate_valid, iou_max >= config.ROI_POSITIVE_IOU)
    negative = ops.logical_and(candidate_valid, iou_max < config.ROI_POSITIVE_IOU)

    # A random order of the positives, then of the negatives: top_k of a random key that
    # puts the wanted kind above everything else.
    key = random.uniform(ops.shape(iou_max), seed=seed)
    _, positive_ix = ops.top_k(ops.where(positive, key + 1.0, -1.0), max_pos)
    _, negative_ix = ops.top_k(ops.where(negative, key + 1.0, -1.0), num_rois)
    positive_count = ops.minimum(ops.sum(ops.cast(positive, "int32"), axis=1), max_pos)
    negative_count = ops.minimum(negative_counts(positive_count, config),
                                 ops.sum(ops.cast(negative, "int32"), axis=1))
    negative_count = ops.minimum(negative_count, num_rois - positive_count)

    slot = ops.arange(num_rois)[None, :]
    pos_count = ops.expand_dims(positive_count, 1)
    is_positive = slot < pos_count
    is_negative = ops.logical_and(slot >= pos_count,
                                  slot < pos_count + ops.expand_dims(negative_count, 1))
    from_positives = _take_rows(positive_ix, ops.broadcast_to(ops.minimum(slot, max_pos - 1),
                                                               [batch, num_rois]))
    from_negatives = _take_rows(negative_ix, ops.clip(slot - pos_count, 0, num_rois - 1))
    chosen = ops.where(is_positive, from_positives, from_negatives)
    used = ops.logical_or(is_positive, is_negative)
    rois = ops.where(ops.expand_dims(used, -1), _take_rows(candidates, chosen), 0.0)

    # Targets of the rows that may be positive.
    pos_valid = is_positive[:, :max_pos]
    pos_rois = ops.where(ops.expand_dims(pos_valid, -1), rois[:, :max_pos],
                         np.array([0.0, 0.0, 1.0, 1.0], np.float32))
    assignment = ops.argmax(_take_rows(iou, chosen[:, :max_pos]), axis=2)
    roi_gt_boxes = ops.where(ops.expand_dims(pos_valid, -1), _take_rows(gt_boxes, assignment),
                             np.array([0.0, 0.0, 1.0, 1.0], np.float32))
    roi_gt_ids = ops.where(pos_valid, _take_rows(gt_class_ids, assignment), 0)
    deltas = box_ops.box_refinement(pos_rois, roi_gt_boxes)
    deltas = ops.where(ops.expand_dims(pos_valid, -1),
                       deltas / np.asarray(config.BBOX_STD_DEV, np.float32), 0.0)
    masks = mask_targets(pos_rois, roi_gt_boxes, assignment, gt_masks, pos_valid, config)

    pad = num_rois - max_pos
    class_ids = ops.concatenate([roi_gt_ids, ops.zeros([batch, pad], "int32")], axis=1)
    deltas = ops.concatenate([deltas, ops.zeros([batch, pad, 4], "float32")], axis=1)
    return [ops.stop_gradient(t) for t in (rois, class_ids, deltas, masks)]


def mask_targets(rois, roi_gt_boxes, assignment, gt_masks, valid, config):
    """Crop each ROI's assigned gt mask at the ROI and resize it to MASK_SHAPE, rounded to 0/1.

    rois, roi_gt_boxes [B, M, 4], assignment [B, M] (gt index), gt_masks [B, h, w, G],
    valid [B, M] -> [B, M, mh, mw] (zeros where not valid).
    """
    batch, max_pos = ops.shape(rois)[0], rois.shape[1]
    gt_count = gt_masks.shape[3]
    boxes = rois
    if config.USE_MINI_MASK:
        # Mini masks are stored in their gt box's frame: express the ROI in that frame.
        gh = roi_gt_boxes[..., 2] - roi_gt_boxes[..., 0]
        gw = roi_gt_boxes[..., 3] - roi_gt_boxes[..., 1]
        boxes = ops.stack([(rois[..., 0] - roi_gt_boxes[..., 0]) / gh,
                           (rois[..., 1] - roi_gt_boxes[..., 1]) / gw,
                           (rois[..., 2] - roi_gt_boxes[..., 0]) / gh,
                           (rois[..., 3] - roi_gt_boxes[..., 1]) / gw], axis=-1)
    # One image per gt mask: [B * G, h, w, 1]; each ROI crops mask (b, assignment).
    masks = ops.reshape(ops.transpose(ops.cast(gt_masks, "float32"), [0, 3, 1, 2]),
                        [-1, gt_masks.shape[1], gt_masks.shape[2], 1])
    image_ix = ops.arange(batch)[:, None] * gt_count + ops.cast(assignment, "int32")
    crops = backend_ops.crop_and_resize(masks, ops.reshape(boxes, [-1, 4]),
                                        ops.reshape(image_ix, [-1]), tuple(config.MASK_SHAPE))
    crops = ops.reshape(ops.round(crops), [-1, max_pos] + list(config.MASK_SHAPE))
    return ops.where(ops.reshape(valid, [-1, max_pos, 1, 1]), crops, 0.0)
