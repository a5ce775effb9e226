"""mrcnn.targets: ROI sampling and the class, box and mask targets of each ROI.

NumPy inputs, outputs through ``keras.ops.convert_to_numpy``: runs under TensorFlow and JAX.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn import utils
from mrcnn.config import Config
from mrcnn.targets import detection_targets, max_positive_rois, negative_counts

pytestmark = pytest.mark.backends

IMAGE = (64, 64)


class TargetConfig(Config):
    NUM_CLASSES = 3
    TRAIN_ROIS_PER_IMAGE = 12          # at most int(12 * 0.33) = 3 positives
    ROI_POSITIVE_RATIO = 0.33
    MASK_SHAPE = [28, 28]
    MINI_MASK_SHAPE = (28, 28)
    USE_MINI_MASK = True


class HalfConfig(TargetConfig):
    ROI_POSITIVE_RATIO = 0.5           # at most 6 positives, one negative per positive


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


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
POSITIVES = [[5, 6, 24, 30], [4, 7, 24, 29], [4, 6, 23, 31], [37, 30, 60, 50], [36, 31, 59, 50]]


def padded(proposals, rows=16):
    """Proposals followed by zero rows (the padding the proposal stage leaves), ``rows`` in all."""
    out = np.zeros((rows, 4), np.float32)
    out[:len(proposals)] = proposals
    return out


def run(proposals, config=None, full_masks=False, class_ids=GT_IDS, seed=0):
    """One image through the batched stage: its rois, class_ids, deltas, masks."""
    config = config or TargetConfig()
    boxes, masks = gt_inputs(full_masks)
    out = detection_targets(padded(proposals)[None], class_ids[None], boxes[None],
                            masks[None].astype(np.float32), config, seed=seed)
    return [to_np(t)[0] for t in out]


def test_positives_first_then_negatives_then_padding_at_the_positive_ratio():
    for seed in range(3):
        rois, class_ids, deltas, masks = run(np.concatenate([norm(POSITIVES), norm(NEGATIVES)]),
                                             seed=seed)
        assert rois.shape == (12, 4) and class_ids.shape == (12,) and deltas.shape == (12, 4)
        assert masks.shape == (3, 28, 28)  # targets of the rows that may be positive only
        # 7 candidates are positive (5 proposals + 2 gt boxes): capped at 3, then 2 negatives
        # per positive (int(3 / 0.33) - 3 = 6), then zero padding.
        assert (class_ids[:3] > 0).all() and (class_ids[3:] == 0).all()
        iou = utils.compute_overlaps(rois, norm(GT_PIXELS))
        assert (iou[:3].max(1) >= 0.5).all()
        assert (iou[3:9].max(1) < 0.5).all() and (np.abs(rois[3:9]).sum(1) > 0).all()
        np.testing.assert_array_equal(rois[9:], 0)
        np.testing.assert_array_equal(deltas[3:], 0)
        assert masks.any(axis=(1, 2)).all()  # each positive's mask crop holds its object
        # Sampled without replacement: no candidate twice.
        assert len(np.unique(rois[:9], axis=0)) == 9


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
    np.testing.assert_array_equal(masks[2], 0)  # the third maskable row is a negative


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


def test_masks_of_each_image_come_from_its_own_gt_masks():
    # Image 1 lists the same two objects in the other order (and with swapped classes): each
    # ROI must crop the mask of its own image's assigned gt row.
    boxes, mini = gt_inputs()
    boxes = np.stack([boxes, boxes[[1, 0, 2, 3]]])
    masks = np.stack([mini, mini[..., [1, 0, 2, 3]]]).astype(np.float32)
    ids = np.stack([GT_IDS, np.array([1, 2, 0, 0], np.int32)])
    proposals = np.stack([padded(norm(NEGATIVES))] * 2)
    rois, class_ids, _, out_masks = (to_np(t) for t in detection_targets(
        proposals, ids, boxes, masks, TargetConfig(), seed=1))
    assert out_masks.shape == (2, 3, 28, 28)
    for b in range(2):
        for k in range(2):
            row = np.where(np.all(np.isclose(rois[b], boxes[b, k]), axis=1))[0]
            assert len(row) == 1 and class_ids[b, row[0]] == ids[b, k]
            np.testing.assert_array_equal(out_masks[b, row[0]], masks[b, ..., k])


@pytest.mark.parametrize("config_class", [TargetConfig, HalfConfig])
def test_positive_and_negative_counts_follow_the_positive_ratio(config_class):
    config = config_class()
    ratio = config.ROI_POSITIVE_RATIO
    max_pos = max_positive_rois(config)
    assert max_pos == int(12 * ratio)
    two = np.array([1, 2, 0, 0], np.int32)
    cases = [  # (proposals, gt class ids, positive candidates)
        (np.concatenate([norm(POSITIVES), norm(NEGATIVES)]), two, 7),
        (norm(NEGATIVES), np.array([1, 0, 0, 0], np.int32), 1),   # one object: its gt box
        (norm(NEGATIVES), two, 2),
        (norm(NEGATIVES), np.zeros(4, np.int32), 0),
        (norm(NEGATIVES[:1]), two, 2),                            # one negative to sample
    ]
    boxes, mini = gt_inputs()
    rois, class_ids, deltas, masks = (to_np(t) for t in detection_targets(
        np.stack([padded(p) for p, _, _ in cases]), np.stack([c for _, c, _ in cases]),
        np.stack([boxes] * len(cases)), np.stack([mini] * len(cases)).astype(np.float32),
        config, seed=3))
    assert masks.shape == (len(cases), max_pos, 28, 28)
    for b, (proposals, ids, candidates) in enumerate(cases):
        pos = min(candidates, max_pos)
        wanted = int(pos / ratio) - pos if pos else 12 // 4
        # Negatives to sample: the proposals that are not positive (gt boxes always are).
        available = len(proposals) - (candidates - int((ids > 0).sum()))
        neg = min(wanted, available)
        assert (class_ids[b, :pos] > 0).all() and (class_ids[b, pos:] == 0).all(), b
        valid = np.abs(rois[b]).sum(1) > 0
        np.testing.assert_array_equal(valid, np.arange(12) < pos + neg, err_msg=f"image {b}")
        gt = boxes[ids > 0]
        if len(gt):
            iou = utils.compute_overlaps(rois[b, :pos + neg], gt).max(1)
            assert (iou[:pos] >= 0.5).all() and (iou[pos:] < 0.5).all(), b
        assert len(np.unique(rois[b, :pos + neg], axis=0)) == pos + neg
        np.testing.assert_array_equal(deltas[b, pos:], 0)
        np.testing.assert_array_equal(masks[b, pos:], 0)
    # The formula itself, for every possible number of positives.
    counts = to_np(negative_counts(np.arange(max_pos + 1, dtype=np.int32), config))
    np.testing.assert_array_equal(
        counts, [12 // 4] + [int(p * (1.0 / ratio)) - p for p in range(1, max_pos + 1)])


def test_a_seed_makes_the_sample_reproducible():
    proposals = np.concatenate([norm(POSITIVES), norm(NEGATIVES)])
    first = run(proposals, seed=7)
    again = run(proposals, seed=7)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    # A seed generator made with the same seed gives the same sample as well.
    from_generator = [run(proposals, seed=keras.random.SeedGenerator(11)) for _ in range(2)]
    for a, b in zip(*from_generator):
        np.testing.assert_array_equal(a, b)
    # ... and the sample is random: other seeds pick other positives or negatives.
    samples = {run(proposals, seed=s)[0].tobytes() for s in range(8)}
    assert len(samples) > 1


def test_detection_targets_run_inside_jax_jit():
    """Under JAX the stage compiles in ``jax.jit`` (static shapes) and, with the same seed,
    samples what it samples eagerly."""
    boxes, mini = gt_inputs()
    args = (np.stack([padded(np.concatenate([norm(POSITIVES), norm(NEGATIVES)])),
                      padded(norm(NEGATIVES))]),
            np.stack([GT_IDS, np.zeros(4, np.int32)]), np.stack([boxes, boxes]),
            np.stack([mini, mini]).astype(np.float32))
    config = TargetConfig()

    def stage(*inputs):
        return detection_targets(*inputs, config, seed=5)

    eager = [to_np(t) for t in stage(*args)]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        outputs = jax.jit(stage)(*args)
        assert all(isinstance(o, jax.Array) for o in outputs)
        for out, want in zip(outputs[:3], eager[:3]):
            np.testing.assert_allclose(to_np(out), want, atol=1e-6)
        # Mask crops may differ only on their border: a ROI that shares an edge with its gt box
        # samples exactly on the mask's last row or column, which XLA's fused arithmetic puts
        # a rounding error inside or outside the mask (outside reads as 0).
        differ = np.argwhere(to_np(outputs[3]) != eager[3])
        assert np.isin(differ[:, 2:], [0, 27]).any(axis=1).all(), differ
    rois, class_ids, deltas, masks = eager
    assert rois.shape == (2, 12, 4) and masks.shape == (2, 3, 28, 28)
    np.testing.assert_array_equal((class_ids > 0).sum(1), [3, 0])
    np.testing.assert_array_equal((np.abs(rois).sum(2) > 0).sum(1), [9, 3])


def test_the_positive_iou_comes_from_the_configuration():
    """ROI_POSITIVE_IOU decides positives, as RPN_POSITIVE_IOU does for anchors: at 0.99 only
    the ground-truth boxes themselves (IoU 1) are positive."""
    strict = type("StrictConfig", (TargetConfig,), {"ROI_POSITIVE_IOU": 0.99})()
    rois, class_ids, _, _ = run(np.concatenate([norm(POSITIVES), norm(NEGATIVES)]), strict)
    positives = rois[class_ids > 0]
    assert len(positives) == 2
    np.testing.assert_allclose(np.sort(positives, axis=0), np.sort(norm(GT_PIXELS), axis=0),
                               atol=1e-6)
