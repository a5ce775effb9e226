"""Instances from a semantic foreground by morphological opening, and the radius search."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.measure

from nucleus.fcn.opening import (instances_by_opening, label_by_opening, labels_to_masks,
                                 pick_radius)


def disk(shape, centre, radius):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2


def touching_disks(shape=(64, 84)):
    """Two disks of radius 12 whose centres are 22 apart: they share a ~10 px wide neck."""
    a, b = disk(shape, (32, 30), 12), disk(shape, (32, 52), 12)
    foreground = a | b
    # The true split: each pixel of the union to the nearer centre.
    xx = np.mgrid[:shape[0], :shape[1]][1]
    truth = np.stack([foreground & (xx <= 41), foreground & (xx > 41)], axis=-1)
    return foreground, truth


def check_instances(masks, foreground):
    assert masks.dtype == bool and masks.ndim == 3 and masks.shape[:2] == foreground.shape
    assert masks.sum(axis=-1).max(initial=0) <= 1, "instances overlap"
    assert not np.any(masks.any(axis=-1) & ~foreground), "instance outside the foreground"


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_touching_disks_become_two_instances_with_right_areas():
    foreground, truth = touching_disks()
    assert skimage.measure.label(foreground).max() == 1  # one blob before opening
    masks = instances_by_opening(foreground, radius=5)
    check_instances(masks, foreground)
    assert masks.shape[-1] == 2
    left_to_right = np.argsort([np.argwhere(masks[..., k])[:, 1].mean() for k in range(2)])
    masks = masks[..., left_to_right]
    for k in range(2):
        area, true_area = masks[..., k].sum(), truth[..., k].sum()
        assert abs(area - true_area) <= 0.05 * true_area, (area, true_area)
        assert iou(masks[..., k], truth[..., k]) > 0.9
    assert masks.any(axis=-1).sum() >= 0.97 * foreground.sum()  # the opening keeps nearly all


def test_radius_zero_gives_connected_components():
    foreground, _ = touching_disks()
    foreground |= disk(foreground.shape, (8, 8), 5)
    foreground[55:62, 70:80] = True
    masks = instances_by_opening(foreground, radius=0, min_size=1)
    check_instances(masks, foreground)
    reference = skimage.measure.label(foreground)
    assert masks.shape[-1] == reference.max() == 3
    assert {frozenset(np.flatnonzero(masks[..., k])) for k in range(masks.shape[-1])} == \
        {frozenset(np.flatnonzero(reference == k)) for k in range(1, 4)}


def test_small_fragments_are_dropped():
    foreground = disk((40, 40), (20, 20), 8)
    foreground[2:5, 2:5] = True  # 9 pixels
    assert instances_by_opening(foreground, radius=0, min_size=10).shape[-1] == 1
    assert instances_by_opening(foreground, radius=0, min_size=9).shape[-1] == 2


def test_thin_structures_without_a_core_are_dropped_not_attached():
    """A line thinner than the opening is removed, as an opening removes it, even next to a disk."""
    foreground = disk((48, 48), (24, 20), 10)
    foreground[5:45, 33] = True  # 1 px wide, 3 px right of the disk's edge
    labels = label_by_opening(foreground, radius=3)
    assert labels.max() == 1
    assert not labels[:, 33].any()
    assert labels[24, 20] == 1


def test_empty_and_bad_input():
    masks = instances_by_opening(np.zeros((10, 12), bool), radius=2)
    assert masks.shape == (10, 12, 0) and masks.dtype == bool
    with pytest.raises(ValueError):
        instances_by_opening(np.zeros((4, 4, 1), bool), radius=1)
    with pytest.raises(ValueError):
        instances_by_opening(np.zeros((4, 4), bool), radius=-1)
    np.testing.assert_array_equal(labels_to_masks(np.array([[0, 2], [1, 1]])).sum(axis=(0, 1)),
                                  [2, 1])


def test_pick_radius_prefers_the_radius_that_splits():
    foreground, truth = touching_disks()
    other_fg = disk(foreground.shape, (30, 40), 14)
    other_truth = other_fg[..., None]
    best, scores = pick_radius([foreground, other_fg], [truth, other_truth], radii=[0, 5, 1])
    assert sorted(scores) == [0, 1, 5]
    assert best == 5
    assert scores[5] > scores[0]
    assert scores[5] == pytest.approx((1.0 + 1.0) / 2, abs=0.1)
    with pytest.raises(ValueError):
        pick_radius([foreground], [], radii=[1])
    with pytest.raises(ValueError):
        pick_radius([foreground], [truth], radii=[])
