"""Detection targets: sample ROIs among the proposals and give each its class, box and mask target.

Positive ROIs (IoU >= 0.5 with a ground-truth box) come first, then negatives, then zero padding,
so that the positives of image b are ``rois[b, :positive_count[b]]``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn import box_ops


def detection_targets_one(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """One image.

    proposals [P, 4], gt_class_ids [G], gt_boxes [G, 4] (normalised), gt_masks [h, w, G]
    -> rois [R, 4], class_ids [R], deltas [R, 4], masks [R, mh, mw] with R = TRAIN_ROIS_PER_IMAGE.
    """
    num_rois = config.TRAIN_ROIS_PER_IMAGE
    proposals, _ = box_ops.trim_zero_rows(proposals)
    # Padding rows have class id 0 (normalising turns their zero boxes into non-zero values).
    non_zeros = gt_class_ids > 0
    gt_boxes = tf.boolean_mask(gt_boxes, non_zeros)
    gt_class_ids = tf.boolean_mask(gt_class_ids, non_zeros)
    gt_masks = tf.boolean_mask(gt_masks, non_zeros, axis=2)
    # Ground-truth boxes are always candidate ROIs too, so every object has positives
    # from the first step of training on (the RPN is useless then).
    proposals = tf.concat([proposals, gt_boxes], axis=0)

    iou = box_ops.overlaps(proposals, gt_boxes)
    has_gt = tf.shape(gt_boxes)[0] > 0
    roi_iou_max = tf.cond(has_gt, lambda: tf.reduce_max(iou, axis=1),
                          lambda: tf.zeros([tf.shape(proposals)[0]]))
    positive_indices = tf.where(roi_iou_max >= 0.5)[:, 0]
    negative_indices = tf.where(roi_iou_max < 0.5)[:, 0]

    positive_count = int(num_rois * config.ROI_POSITIVE_RATIO)
    positive_indices = tf.random.shuffle(positive_indices)[:positive_count]
    positive_count = tf.shape(positive_indices)[0]
    r = 1.0 / config.ROI_POSITIVE_RATIO
    negative_count = tf.cast(r * tf.cast(positive_count, tf.float32), tf.int32) - positive_count
    negative_count = tf.maximum(negative_count, 0)
    # With no positive at all, still train the classifier on some background.
    negative_count = tf.where(positive_count > 0, negative_count, num_rois // 4)
    negative_indices = tf.random.shuffle(negative_indices)[:negative_count]

    positive_rois = tf.gather(proposals, positive_indices)
    negative_rois = tf.gather(proposals, negative_indices)
    positive_iou = tf.gather(iou, positive_indices)
    assignment = tf.cond(tf.shape(positive_iou)[1] > 0,
                         lambda: tf.argmax(positive_iou, axis=1),
                         lambda: tf.zeros([0], tf.int64))
    roi_gt_boxes = tf.gather(gt_boxes, assignment)
    roi_gt_class_ids = tf.gather(gt_class_ids, assignment)
    deltas = box_ops.box_refinement(positive_rois, roi_gt_boxes)
    deltas = deltas / np.asarray(config.BBOX_STD_DEV, np.float32)

    # Mask targets: crop each assigned gt mask at the ROI and resize to MASK_SHAPE.
    masks = tf.expand_dims(tf.transpose(gt_masks, [2, 0, 1]), -1)
    roi_masks = tf.gather(masks, assignment)
    boxes = positive_rois
    if config.USE_MINI_MASK:
        # Mini masks are stored in their gt box's frame: express the ROI in that frame.
        y1, x1, y2, x2 = tf.split(positive_rois, 4, axis=1)
        gy1, gx1, gy2, gx2 = tf.split(roi_gt_boxes, 4, axis=1)
        gh = gy2 - gy1
        gw = gx2 - gx1
        boxes = tf.concat([(y1 - gy1) / gh, (x1 - gx1) / gw, (y2 - gy1) / gh, (x2 - gx1) / gw], 1)
    box_ids = tf.range(0, tf.shape(roi_masks)[0])
    target_masks = tf.image.crop_and_resize(tf.cast(roi_masks, tf.float32), boxes, box_ids,
                                            list(config.MASK_SHAPE))
    target_masks = tf.round(tf.squeeze(target_masks, axis=3))

    rois = tf.concat([positive_rois, negative_rois], axis=0)
    n_neg = tf.shape(negative_rois)[0]
    padding = tf.maximum(num_rois - tf.shape(rois)[0], 0)
    rois = tf.pad(rois, [(0, padding), (0, 0)])[:num_rois]
    class_ids = tf.pad(tf.cast(roi_gt_class_ids, tf.int32), [(0, n_neg + padding)])[:num_rois]
    deltas = tf.pad(deltas, [(0, n_neg + padding), (0, 0)])[:num_rois]
    target_masks = tf.pad(target_masks, [(0, n_neg + padding), (0, 0), (0, 0)])[:num_rois]
    return rois, class_ids, deltas, target_masks


def detection_targets(proposals, gt_class_ids, gt_boxes, gt_masks, config):
    """Batch version of :func:`detection_targets_one` (gradients stop here)."""
    num_rois = config.TRAIN_ROIS_PER_IMAGE
    mh, mw = config.MASK_SHAPE
    out = tf.map_fn(
        lambda x: detection_targets_one(x[0], x[1], x[2], x[3], config),
        (proposals, gt_class_ids, gt_boxes, gt_masks),
        fn_output_signature=(tf.TensorSpec([num_rois, 4], tf.float32),
                             tf.TensorSpec([num_rois], tf.int32),
                             tf.TensorSpec([num_rois, 4], tf.float32),
                             tf.TensorSpec([num_rois, mh, mw], tf.float32)))
    return [tf.stop_gradient(t) for t in out]
