"""Pasting a detection's 28x28 mask into its box on the full image (mrcnn.model, mrcnn.utils).

The mask here is asymmetric (only its top-left corner is on) and the box is twice as wide as it
is tall, so a mask pasted transposed, flipped or stretched the wrong way lands elsewhere.
With linear resizing and the 0.5 threshold, the on corner (rows 0-13, columns 0-6 of 28)
becomes exactly the top half and the left quarter of a 20 x 40 box.
"""
from __future__ import annotations

import numpy as np

from mrcnn import utils
from mrcnn.model import _paste_mask

CORNER = np.zeros((28, 28), np.float32)
CORNER[:14, :7] = 1.0
IMAGE = (40, 70)


def expected(y1, x1, shape=IMAGE) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[max(y1, 0):max(y1 + 10, 0), x1:x1 + 10] = True
    return out


def test_detection_mask_lands_in_the_top_left_of_its_box():
    pasted = _paste_mask(CORNER, np.array([10, 20, 30, 60]), IMAGE)
    np.testing.assert_array_equal(pasted, expected(10, 20))


def test_detection_mask_crossing_the_image_edge_keeps_its_visible_part():
    pasted = _paste_mask(CORNER, np.array([-5, 50, 15, 90]), IMAGE)
    np.testing.assert_array_equal(pasted, expected(-5, 50))
    assert not _paste_mask(CORNER, np.array([50, 0, 60, 10]), IMAGE).any()   # fully outside


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
