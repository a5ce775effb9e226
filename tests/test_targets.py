"""mrcnn.targets: ROI sampling and the class, box and mask targets of each ROI."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn import utils
from mrcnn.config import Config
from mrcnn.targets import detection_targets

IMAGE = (64, 64)


class TargetConfig(Config):
    NUM_CLASSES = 3
    TRAIN_ROIS_PER_IMAGE = 12          # at most int(12 * 0.33) = 3 positives
    ROI_POSITIVE_RATIO = 0.33
    MASK_SHAPE = [28, 28]
    MINI_MASK_SHAPE = (28, 28)
    USE_MINI_MASK = True


def ellipse(shape, center, radii):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 <= 1.0


GT_PIXELS = np.array([[4, 6, 24, 30], [36, 30, 60, 50]])
GT_IDS = np.array([1, 2, 0, 0], np.int32)  # two objects, two padding rows


def gt_inputs(full_masks=False):
    """Normalised gt boxes padded as the data pipeline pads them, and mini (or full) masks."""
    boxes = np.zeros((4, 4), np.float32)
    boxes[:2] = GT_PIXELS
    boxes = utils.norm_boxes(boxes, IMAGE)
    full = np.zeros(IMAGE + (4,), bool)
    full[..., 0] = ellipse(IMAGE, (13.5, 17.5), (10, 12))
    full[..., 1] = ellipse(IMAGE, (47.5, 39.5), (12, 10))
    full[40:50, 30:36, 1] = True  # a square notch so the two shapes differ
    if full_masks:
        return boxes, full
    mini = np.zeros((28, 28, 4), bool)
    mini[..., :2] = utils.minimize_mask(GT_PIXELS, full[..., :2], (28, 28))
    return boxes, mini


def norm(pixel_boxes):
    return utils.norm_boxes(np.asarray(pixel_boxes, np.float32), IMAGE)


NEGATIVES = [[0, 40, 10, 60], [50, 0, 62, 20], [20, 40, 30, 62], [30, 0, 40, 10],
             [0, 0, 5, 5], [55, 55, 63, 63], [10, 50, 20, 60], [40, 10, 50, 25]]


def run(proposals, config=None, full_masks=False, class_ids=GT_IDS):
    config = config or TargetConfig()
    proposals = np.concatenate([proposals, np.zeros((3, 4), np.float32)])  # zero padding
    boxes, masks = gt_inputs(full_masks)
    out = detection_targets(tf.constant(proposals[None]), tf.constant(class_ids[None]),
                            tf.constant(boxes[None]), tf.constant(masks[None], tf.float32),
                            config)
    return [t.numpy()[0] for t in out]


def test_positives_first_then_negatives_then_padding_at_the_positive_ratio():
    positives = norm([[5, 6, 24, 30], [4, 7, 24, 29], [4, 6, 23, 31], [37, 30, 60, 50],
                      [36, 31, 59, 50]])
    for seed in range(3):
        tf.random.set_seed(seed)
        rois, class_ids, deltas, masks = run(np.concatenate([positives, norm(NEGATIVES)]))
        assert rois.shape == (12, 4) and class_ids.shape == (12,) and deltas.shape == (12, 4)
        assert masks.shape == (12, 28, 28)
        # 7 candidates are positive (5 proposals + 2 gt boxes): capped at 3, then 2 negatives
        # per positive (int(3 / 0.33) - 3 = 6), then zero padding.
        assert (class_ids[:3] > 0).all() and (class_ids[3:] == 0).all()
        iou = utils.compute_overlaps(rois, norm(GT_PIXELS))
        assert (iou[:3].max(1) >= 0.5).all()
        assert (iou[3:9].max(1) < 0.5).all() and (np.abs(rois[3:9]).sum(1) > 0).all()
        np.testing.assert_array_equal(rois[9:], 0)
        np.testing.assert_array_equal(deltas[3:], 0)
        np.testing.assert_array_equal(masks[3:], 0)


def test_deltas_turn_positive_rois_into_their_gt_boxes_and_class_ids_match():
    positives = norm([[5, 6, 24, 30], [37, 30, 60, 50]])
    rois, class_ids, deltas, _ = run(np.concatenate([positives, norm(NEGATIVES)]))
    n = int((class_ids > 0).sum())
    assert n == 3  # two proposals and two gt boxes are candidates: capped at 3
    gt = norm(GT_PIXELS)
    assigned = utils.compute_overlaps(rois[:n], gt).argmax(1)
    np.testing.assert_array_equal(class_ids[:n], GT_IDS[assigned])
    refined = utils.apply_box_deltas(rois[:n], deltas[:n] * TargetConfig.BBOX_STD_DEV)
    np.testing.assert_allclose(refined, gt[assigned], atol=1e-5)


def test_mask_target_of_the_gt_box_is_its_mini_mask():
    rois, class_ids, _, masks = run(norm(NEGATIVES))  # positives: the two gt boxes only
    assert (class_ids > 0).sum() == 2
    _, mini = gt_inputs()
    gt = norm(GT_PIXELS)
    for k in range(2):
        row = np.where(np.all(np.isclose(rois, gt[k]), axis=1))[0]
        assert len(row) == 1 and class_ids[row[0]] == GT_IDS[k]
        np.testing.assert_array_equal(masks[row[0]], mini[..., k].astype(np.float32))


def test_mask_target_without_mini_masks_crops_the_full_mask():
    class Full(TargetConfig):
        USE_MINI_MASK = False

    rois, class_ids, _, masks = run(norm(NEGATIVES), Full(), full_masks=True)
    _, full = gt_inputs(full_masks=True)
    expected = utils.minimize_mask(GT_PIXELS, full[..., :2], (28, 28))
    gt = norm(GT_PIXELS)
    for k in range(2):
        row = np.where(np.all(np.isclose(rois, gt[k]), axis=1))[0][0]
        iou = utils.compute_overlaps_masks(masks[row][..., None] > 0.5,
                                           expected[..., k:k + 1])[0, 0]
        assert iou > 0.9, iou


def test_image_without_objects_gets_background_rois_only():
    rois, class_ids, deltas, masks = run(norm(NEGATIVES), class_ids=np.zeros(4, np.int32))
    assert (class_ids == 0).all()
    assert (np.abs(rois).sum(1) > 0).sum() == 12 // 4
    assert not deltas.any() and not masks.any()
