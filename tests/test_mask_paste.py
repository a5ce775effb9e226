"""Pasting a detection's 28x28 mask into its box on the full image (mrcnn.utils.paste_mask,
used by mrcnn.model's unmold_detections).

The mask here is asymmetric (only its top-left corner is on) and the box is twice as wide as it
is tall, so a mask pasted transposed, flipped or stretched the wrong way lands elsewhere.
With linear resizing and the 0.5 threshold, the on corner (rows 0-13, columns 0-6 of 28)
becomes exactly the top half and the left quarter of a 20 x 40 box.
"""
from __future__ import annotations

import numpy as np

from mrcnn import utils
from mrcnn.utils import paste_mask

CORNER = np.zeros((28, 28), np.float32)
CORNER[:14, :7] = 1.0
IMAGE = (40, 70)


def expected(y1, x1, shape=IMAGE) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[max(y1, 0):max(y1 + 10, 0), x1:x1 + 10] = True
    return out


def test_detection_mask_lands_in_the_top_left_of_its_box():
    pasted = paste_mask(CORNER, np.array([10, 20, 30, 60]), IMAGE)
    np.testing.assert_array_equal(pasted, expected(10, 20))


def test_detection_mask_crossing_the_image_edge_keeps_its_visible_part():
    pasted = paste_mask(CORNER, np.array([-5, 50, 15, 90]), IMAGE)
    np.testing.assert_array_equal(pasted, expected(-5, 50))
    assert not paste_mask(CORNER, np.array([50, 0, 60, 10]), IMAGE).any()   # fully outside


def test_integer_boxes_paste_as_cv2_resizes():
    """On whole-pixel boxes the paste is cv2's linear resize of the mask into the box, the
    mapping the training targets use (a smooth mask, so any shift or stretch shows)."""
    import cv2

    yy, xx = np.mgrid[0:28, 0:28]
    smooth = np.clip(1.2 - np.hypot(yy - 9.3, xx - 16.1) / 10.0, 0, 1).astype(np.float32)
    for box in ([10, 20, 30, 60], [3, 4, 11, 9], [0, 0, 40, 70]):
        y1, x1, y2, x2 = box
        resized = cv2.resize(smooth, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
        want = np.zeros(IMAGE, bool)
        want[y1:y2, x1:x2] = resized >= 0.5
        np.testing.assert_array_equal(paste_mask(smooth, np.array(box), IMAGE), want)


def test_fractional_boxes_move_the_mask_by_less_than_a_pixel():
    """The box head's boxes are fractional: the mask follows a quarter-pixel shift of its box
    instead of snapping to the rounded box."""
    full = np.ones((28, 28), np.float32)
    # A box from 10.3 to 20.3: pixels whose centres lie inside are rows 10-19 (10.5 .. 19.5).
    pasted = paste_mask(full, np.array([10.3, 20.0, 20.3, 30.0]), IMAGE)
    assert np.flatnonzero(pasted.any(axis=1)).tolist() == list(range(10, 20))
    # From 10.6 to 20.6 the first row's centre (10.5) is outside and row 20 (20.5) inside.
    pasted = paste_mask(full, np.array([10.6, 20.0, 20.6, 30.0]), IMAGE)
    assert np.flatnonzero(pasted.any(axis=1)).tolist() == list(range(11, 21))
    # The corner mask's edge moves with the box: half the box height below y1.
    moved = paste_mask(CORNER, np.array([10.6, 20.0, 30.6, 60.0]), IMAGE)
    assert np.flatnonzero(moved.any(axis=1)).tolist() == list(range(11, 21))


def test_empty_and_outside_boxes_paste_nothing():
    assert not paste_mask(CORNER, np.array([10.0, 20.0, 10.0, 30.0]), IMAGE).any()
    assert not paste_mask(CORNER, np.array([10.2, 20.0, 10.4, 30.0]), IMAGE).any()
    assert not paste_mask(CORNER, np.array([-9.0, 0.0, -1.0, 10.0]), IMAGE).any()


def test_unmold_mask_of_matterports_api_agrees():
    np.testing.assert_array_equal(utils.unmold_mask(CORNER, np.array([10, 20, 30, 60]), IMAGE),
                                  expected(10, 20))


def test_unmold_detections_maps_boxes_back_and_pastes_masks(inference_model):
    """A 40x70 image padded to 64x128: the box comes back in image pixels, the mask with it."""
    molded = (64, 128, 3)
    box = utils.norm_boxes(np.array([[10, 20, 30, 60]], np.float32), molded[:2])
    detections = np.concatenate([box, [[1, 0.9]]], axis=1).astype(np.float32)
    boxes, class_ids, scores, masks = inference_model.unmold_detections(
        detections, CORNER[None], IMAGE + (3,), molded, (0, 0, 40, 70))
    np.testing.assert_array_equal(boxes, [[10, 20, 30, 60]])
    np.testing.assert_array_equal(class_ids, [1])
    np.testing.assert_allclose(scores, [0.9], rtol=1e-6)
    assert masks.shape == IMAGE + (1,)
    np.testing.assert_array_equal(masks[..., 0], expected(10, 20))


def test_unmold_detections_pastes_masks_at_the_fractional_box(inference_model):
    """A box 0.4 pixel off the pixel grid: the box comes back rounded, the mask is pasted
    where the box really is (rows whose centres it covers)."""
    molded = (64, 128, 3)
    box = utils.norm_boxes(np.array([[10.6, 20, 30.6, 60]], np.float32), molded[:2])
    detections = np.concatenate([box, [[1, 0.9]]], axis=1).astype(np.float32)
    full = np.ones((1, 28, 28), np.float32)
    boxes, _, _, masks = inference_model.unmold_detections(
        detections, full, IMAGE + (3,), molded, (0, 0, 40, 70))
    np.testing.assert_array_equal(boxes, [[11, 20, 31, 60]])
    assert np.flatnonzero(masks[..., 0].any(axis=1)).tolist() == list(range(11, 31))


def _two_overlapping(inference_model, scores, probabilities):
    """Two 20x20 boxes sharing columns 30-39 of a 40x70 image, uniform masks."""
    molded = (64, 128, 3)
    boxes = utils.norm_boxes(np.array([[10, 20, 30, 40], [10, 30, 30, 50]], np.float32),
                             molded[:2])
    detections = np.concatenate([boxes, [[1, scores[0]], [1, scores[1]]]], axis=1)
    masks = np.stack([np.full((28, 28), p, np.float32) for p in probabilities])
    return inference_model.unmold_detections(detections.astype(np.float32), masks,
                                             IMAGE + (3,), molded, (0, 0, 40, 70))[3]


def test_overlapping_masks_are_kept_as_matterport_by_default(inference_model):
    assert inference_model.config.DETECTION_MASK_OVERLAP == "keep"
    masks = _two_overlapping(inference_model, (0.9, 0.8), (0.9, 0.9))
    assert masks[:, :, 0].sum() == masks[:, :, 1].sum() == 400
    assert (masks[:, :, 0] & masks[:, :, 1]).sum() == 200


def test_shared_pixels_go_to_the_most_confident_detection(inference_model, monkeypatch):
    monkeypatch.setattr(inference_model.config, "DETECTION_MASK_OVERLAP", "confidence")
    # Same mask probability: the higher score keeps the shared columns.
    masks = _two_overlapping(inference_model, (0.9, 0.8), (0.9, 0.9))
    assert not (masks[:, :, 0] & masks[:, :, 1]).any()
    assert masks[:, :, 0].sum() == 400 and masks[:, :, 1].sum() == 200
    assert masks[10:30, 30:40, 0].all()
    # Score x probability decides: 0.8 x 0.95 beats 0.9 x 0.6.
    masks = _two_overlapping(inference_model, (0.9, 0.8), (0.6, 0.95))
    assert masks[10:30, 30:40, 1].all() and masks[:, :, 0].sum() == 200


def test_unknown_overlap_rule_is_a_clear_error(inference_model, monkeypatch):
    import pytest

    monkeypatch.setattr(inference_model.config, "DETECTION_MASK_OVERLAP", "confidense")
    with pytest.raises(ValueError, match="DETECTION_MASK_OVERLAP 'confidense'"):
        _two_overlapping(inference_model, (0.9, 0.8), (0.9, 0.9))


def test_unmold_instances_are_the_full_masks_cropped(inference_model, monkeypatch):
    """The crop-sized result equals the full-size one: each non-empty mask cut to its tight
    box, the empty ones (all their pixels won by more confident detections) left out."""
    monkeypatch.setattr(inference_model.config, "DETECTION_MASK_OVERLAP", "confidence")
    rng = np.random.default_rng(3)
    molded, shape = (64, 128, 3), (40, 70, 3)
    pixel_boxes = [[10, 20, 30, 40], [10, 30, 30, 50], [12, 22, 28, 38], [-5, 60, 8, 80],
                   [35, 5, 39.5, 17.3], [0, 0, 40, 70]]
    boxes = utils.norm_boxes(np.array(pixel_boxes, np.float32), molded[:2])
    scores = np.array([0.95, 0.9, 0.5, 0.8, 0.99, 0.3], np.float32)
    detections = np.concatenate([boxes, np.ones((6, 1)), scores[:, None]], axis=1)
    masks = rng.uniform(0.3, 1.0, (6, 28, 28)).astype(np.float32)
    masks[0] = rng.uniform(0.6, 1.0, (28, 28))
    masks[2] = 0.55                          # inside box 0, which is surer everywhere
    args = (detections.astype(np.float32), masks, shape, molded, (0, 0, 40, 70))
    _, _, full_scores, full = inference_model.unmold_detections(*args)
    boxes_out, crops, kept_scores = inference_model.unmold_instances(*args)
    nonempty = [k for k in range(full.shape[2]) if full[..., k].any()]
    assert len(nonempty) < full.shape[2]      # some mask was emptied and must be dropped
    assert len(crops) == len(boxes_out) == len(kept_scores) == len(nonempty)
    np.testing.assert_array_equal(kept_scores, full_scores[nonempty])
    for (y1, x1, y2, x2), crop, k in zip(boxes_out, crops, nonempty):
        canvas = np.zeros(shape[:2], bool)
        canvas[y1:y2, x1:x2] = crop
        np.testing.assert_array_equal(canvas, full[..., k])
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


def test_unmold_instances_needs_disjoint_masks(inference_model):
    import pytest

    assert inference_model.config.DETECTION_MASK_OVERLAP == "keep"
    with pytest.raises(ValueError, match="confidence"):
        inference_model.unmold_instances(np.zeros((0, 6), np.float32),
                                         np.zeros((0, 28, 28), np.float32), IMAGE + (3,),
                                         (64, 128, 3), (0, 0, 40, 70))


def test_box_masks_gives_each_box_what_it_gets_alone():
    """The batched paste (one pass of array operations for all boxes) gives each box the
    slices and values box_mask gives it on its own, bit for bit (no box's pixels leak into
    another's): fractional, integer, tiny, empty, and partly or wholly outside boxes, on a
    canvas that is not square."""
    rng = np.random.default_rng(5)
    masks = rng.uniform(0, 1, (60, 28, 28)).astype(np.float32)
    corners = rng.uniform(-30, 90, (60, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(0.1, 60, (60, 2))], axis=1)
    boxes[:6] = [[10, 20, 30, 60], [10.0, 20.0, 10.0, 30.0], [10.2, 20.0, 10.4, 30.0],
                 [-9.0, 0.0, -1.0, 10.0], [38.7, 65.2, 52.0, 90.0], [5.3, 7.1, 5.9, 7.4]]
    batch = utils.box_masks(masks, boxes, IMAGE)
    assert len(batch) == len(boxes)
    for mask, box, (where, values) in zip(masks, boxes, batch):
        want_where, want = utils.box_mask(mask, box, IMAGE)
        assert where == want_where
        assert values.shape == want.shape and values.dtype == want.dtype
        np.testing.assert_array_equal(values, want)
    assert utils.box_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4)), IMAGE) == []
