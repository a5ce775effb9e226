"""Masks grown to their nuclei's half maximum (nucleus/inference/boundaries.py)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from nucleus.errors import InputError
from nucleus.inference.boundaries import grow_crops, grow_to_half_maximum
from nucleus.inference.detectors import Detector
from nucleus.inference.tiling import instances_of


def _disc(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def _spot_image(shape, discs, level=200, background=20, blur=1.0):
    """uint8 grey image of bright discs on a dark background, edges blurred."""
    image = np.full(shape, float(background))
    for centre, radius in discs:
        image[_disc(shape, centre, radius)] = level
    return np.clip(ndi.gaussian_filter(image, blur), 0, 255).astype(np.uint8)


def test_a_mask_drawn_too_small_grows_to_the_nucleus_edge_and_no_further():
    shape = (60, 60)
    image = _spot_image(shape, [((30, 30), 10)])
    truth = _disc(shape, (30, 30), 10)
    small = _disc(shape, (30, 30), 8)
    labels = small.astype(np.int32)
    for reach, most in ((1, 1), (2, 2), (3, 3)):
        grown = grow_to_half_maximum(labels, image, reach) == 1
        added = grown & ~small
        assert grown[small].all()                                    # never shrinks
        distance = ndi.distance_transform_edt(~small)
        assert distance[added].max() <= most + 1e-9                  # at most `reach` px out
        assert (grown & ~truth).sum() <= 2                           # not past the edge
    # reach 3 brings the 8-px mask of the 10-px nucleus to it (a square pixel grid's discs
    # differ by a few pixels along the rim)
    grown = grow_to_half_maximum(labels, image, 3) == 1
    assert _iou(grown, truth) > 0.95 > 0.7 > _iou(small, truth)
    assert labels.sum() == small.sum()                               # input left as it was


def test_a_right_sized_mask_stays_and_a_dim_nucleus_is_left_alone():
    shape = (50, 50)
    image = _spot_image(shape, [((25, 25), 9)])
    exact = _disc(shape, (25, 25), 9).astype(np.int32)
    grown = grow_to_half_maximum(exact, image, 2)
    assert abs(int((grown > 0).sum()) - int(exact.sum())) <= 4
    flat = np.full(shape, 30, np.uint8)                              # no contrast: unchanged
    small = _disc(shape, (25, 25), 6).astype(np.int32)
    np.testing.assert_array_equal(grow_to_half_maximum(small, flat, 2), small)
    np.testing.assert_array_equal(grow_to_half_maximum(small, image, 0), small)


def test_neighbours_never_share_or_steal_pixels_and_order_does_not_matter():
    shape = (40, 60)
    image = _spot_image(shape, [((20, 19), 9), ((20, 40), 9)], blur=1.5)
    labels = np.zeros(shape, np.int32)
    labels[_disc(shape, (20, 19), 7)] = 1
    labels[_disc(shape, (20, 40), 7)] = 2
    grown = grow_to_half_maximum(labels, image, 3)
    assert (grown[labels > 0] == labels[labels > 0]).all()           # nobody loses a pixel
    assert (grown == 1).sum() > (labels == 1).sum()
    assert (grown == 2).sum() > (labels == 2).sum()
    swapped = np.where(labels > 0, 3 - labels, 0)                     # the other order
    regrown = grow_to_half_maximum(swapped, image, 3)
    np.testing.assert_array_equal(np.where(regrown > 0, 3 - regrown, 0), grown)
    # a pixel both reach stays background: nuclei one pixel apart stay apart
    close = np.zeros((20, 20), np.int32)
    close[5:15, 3:9] = 1
    close[5:15, 10:16] = 2
    bright = np.full((20, 20, 3), 10, np.uint8)
    bright[4:16, 2:17] = 220
    out = grow_to_half_maximum(close, bright, 1)
    assert (out[5:15, 9] == 0).all()
    assert (out[5:15, 2] == 1).all() and (out[5:15, 16] == 2).all()


def test_light_background_images_and_bad_shapes():
    with pytest.raises(ValueError, match="differ in size"):
        grow_to_half_maximum(np.zeros((5, 5), np.int32), np.zeros((6, 5), np.uint8), 1)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        grow_to_half_maximum(np.zeros((5, 5, 2), np.int32), np.zeros((5, 5), np.uint8), 1)
    with pytest.raises(InputError, match="whole number"):
        Detector(lambda image: None, grow=-1)


def test_the_crop_form_gives_the_labels_form():
    shape = (48, 64)
    discs = [((14, 14), 8), ((30, 40), 10), ((12, 52), 6)]
    image = np.repeat(_spot_image(shape, discs)[..., None], 3, axis=2)
    labels = np.zeros(shape, np.int32)
    for i, (centre, radius) in enumerate(discs):
        labels[_disc(shape, centre, radius - 2)] = i + 1
    want = grow_to_half_maximum(labels, image, 2)
    masks = labels[..., None] == np.arange(1, 4)
    found = instances_of(masks, np.ones(3))
    boxes = np.array([i.box for i in found])
    wide, crops = grow_crops(boxes, [i.mask for i in found], image, 2)
    painted = np.zeros(shape, np.int32)
    for k, ((y0, x0, y1, x1), crop) in enumerate(zip(wide, crops)):
        painted[y0:y1, x0:x1][crop] = k + 1
    np.testing.assert_array_equal(painted, want)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    np.testing.assert_array_equal((wide[:, :2] + wide[:, 2:]) / 2, centres)  # none at a border


def test_the_detector_grows_masks_on_both_paths():
    """``Detector(grow=...)`` grows the full-size masks of ``detect_prepared`` and the
    crop-sized nuclei of ``detect_instances`` alike."""
    shape = (40, 40)
    image = np.repeat(_spot_image(shape, [((20, 20), 9)])[..., None], 3, axis=2)
    small = _disc(shape, (20, 20), 7)

    def raw(_):
        return small[..., None], np.array([0.9], np.float32)

    def sparse(_):
        (found,) = instances_of(small[..., None], np.array([0.9]))
        return np.array([found.box]), [found.mask], np.array([found.score])

    plain = Detector(raw).detect_prepared(image)[0]
    grown = Detector(raw, grow=2).detect_prepared(image)[0]
    assert plain.sum() == small.sum() and grown.sum() > small.sum()
    (instance,) = Detector(raw, grow=2, detect_sparse=sparse).detect_instances(image)
    y0, x0, y1, x1 = instance.box
    full = np.zeros(shape, bool)
    full[y0:y1, x0:x1] = instance.mask
    np.testing.assert_array_equal(full, grown[..., 0])
