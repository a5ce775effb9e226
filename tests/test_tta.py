"""Tests for nucleus.inference.tta: flip test-time augmentation and the vote that merges its
runs."""
from __future__ import annotations

import numpy as np
import pytest

from nucleus.inference import tta


def _disk(shape, cy, cx, r) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _stack(*masks) -> np.ndarray:
    shape = (40, 50)
    if not masks:
        return np.zeros(shape + (0,), bool)
    return np.stack(masks, axis=-1)


SHAPE = (40, 50)


def test_majority_keeps_what_most_runs_found_and_drops_single_finds():
    a = _disk(SHAPE, 10, 10, 5)
    b = _disk(SHAPE, 28, 35, 6)
    noise = _disk(SHAPE, 30, 8, 3)
    runs = [(_stack(a, b), np.array([0.9, 0.8])),
            (_stack(a, b, noise), np.array([0.9, 0.6, 0.95])),
            (_stack(a), np.array([0.7])),
            (_stack(b), np.array([0.8]))]
    masks, scores = tta.merge_runs(runs, SHAPE)       # default: 3 of 4 runs
    assert masks.shape == SHAPE + (2,)
    np.testing.assert_array_equal(masks[..., 0], a)  # a: (0.9 + 0.9 + 0.7) / 4 = 0.625
    np.testing.assert_array_equal(masks[..., 1], b)  # b: (0.8 + 0.6 + 0.8) / 4 = 0.55
    np.testing.assert_allclose(scores, [0.625, 0.55], rtol=1e-6)
    # With one vote enough, the noise comes back, scored by its one run.
    masks, scores = tta.merge_runs(runs, SHAPE, min_votes=1)
    assert masks.shape[-1] == 3
    assert any(np.array_equal(masks[..., k], noise) for k in range(3))
    np.testing.assert_allclose(sorted(scores), [0.2375, 0.55, 0.625], rtol=1e-6)


def test_pixels_are_voted_among_the_runs_that_found_the_nucleus():
    core = _disk(SHAPE, 20, 25, 6)
    grown = _disk(SHAPE, 20, 25, 7)
    shifted = np.roll(core, 1, axis=1)
    runs = [(_stack(core), np.array([0.9])), (_stack(grown), np.array([0.9])),
            (_stack(shifted), np.array([0.9]))]
    masks, _ = tta.merge_runs(runs, SHAPE, min_votes=2)
    votes = core.astype(int) + grown + shifted
    np.testing.assert_array_equal(masks[..., 0], votes * 2 >= 3)


def test_one_run_cannot_vote_twice_for_one_nucleus():
    a = _disk(SHAPE, 20, 25, 8)
    half = a & (np.arange(SHAPE[1]) < 27)[None]       # a fragment of a, IoU ~0.6 with it
    runs = [(_stack(a, half), np.array([0.9, 0.5])), (_stack(), np.zeros(0)),
            (_stack(), np.zeros(0))]
    masks, _ = tta.merge_runs(runs, SHAPE, min_votes=2)
    assert masks.shape[-1] == 0                        # one run found it, twice: not 2 votes


def test_low_overlap_stays_apart_and_empty_runs_give_empty_output():
    left = _disk(SHAPE, 20, 15, 6)
    right = _disk(SHAPE, 20, 24, 6)                    # touching neighbours, IoU well < 0.5
    runs = [(_stack(left, right), np.array([0.9, 0.9]))] * 2
    masks, scores = tta.merge_runs(runs, SHAPE, min_votes=2)
    assert masks.shape[-1] == 2
    empty = [(_stack(), np.zeros(0))] * 4
    masks, scores = tta.merge_runs(empty, SHAPE)
    assert masks.shape == SHAPE + (0,) and scores.shape == (0,)


class _FlipAwareDetector:
    """Finds the bright disk in any flip of the image, and an artefact below it only when the
    image is not flipped up-down."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        bright = image[..., 0] > 200
        masks, scores = [bright], [0.95]
        if np.array_equal(image, self.image) or np.array_equal(image, self.image[:, ::-1]):
            masks.append(np.roll(bright, 15, axis=0))
            scores.append(0.6)
        return np.stack(masks, -1), np.array(scores)


def test_detect_with_flips_maps_masks_back_and_votes():
    image = np.zeros(SHAPE + (3,), np.uint8)
    nucleus = _disk(SHAPE, 8, 12, 4)
    image[nucleus] = 255
    model = _FlipAwareDetector(image)
    masks, scores = tta.detect_with_flips(model, image)
    assert model.calls == 4
    assert masks.shape == SHAPE + (1,)
    np.testing.assert_array_equal(masks[..., 0], nucleus)
    np.testing.assert_allclose(scores, [0.95])
    masks, scores = tta.detect_with_flips(model, image, min_votes=2)
    assert masks.shape[-1] == 2                        # the artefact has 2 of 4 votes
    with pytest.raises(ValueError, match="unknown flips"):
        tta.detect_with_flips(model, image, flips=("none", "rot45"))


def _rect(shape, y1, x1, y2, x2) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[y1:y2, x1:x2] = True
    return out


def test_a_duplicate_from_one_run_neither_adds_a_vote_nor_raises_the_score():
    a = _disk(SHAPE, 20, 25, 8)
    half = a & (np.arange(SHAPE[1]) < 27)[None]       # a fragment of a, IoU ~0.6 with it
    runs = [(_stack(a, half), np.array([0.9, 0.5])), (_stack(a), np.array([0.9])),
            (_stack(), np.zeros(0))]
    masks, scores = tta.merge_runs(runs, SHAPE, min_votes=2)
    assert masks.shape[-1] == 1                        # the fragment is no nucleus of its own
    np.testing.assert_array_equal(masks[..., 0], a)
    np.testing.assert_allclose(scores, [(0.9 + 0.9) / 3], rtol=1e-6)


def test_pixels_found_by_exactly_half_of_the_runs_are_kept():
    core = _disk(SHAPE, 20, 25, 6)
    grown = _disk(SHAPE, 20, 25, 7)                    # its ring is found by 2 of 4 runs
    runs = [(_stack(core), np.array([0.9])), (_stack(grown), np.array([0.9])),
            (_stack(core), np.array([0.9])), (_stack(grown), np.array([0.9]))]
    masks, _ = tta.merge_runs(runs, SHAPE)
    np.testing.assert_array_equal(masks[..., 0], grown)
    two = tta.merge_runs(runs[:2], SHAPE)[0]           # 2 flips: the union of the two
    np.testing.assert_array_equal(two[..., 0], grown)


def test_a_mask_joins_a_cluster_only_above_the_iou_threshold():
    shape = (30, 60)
    first = _rect(shape, 5, 40, 15, 50)                # 100 pixels, top right of a wide image
    exactly_half = _rect(shape, 5, 40, 15, 45)         # inside it, IoU 50/100
    above_half = _rect(shape, 5, 40, 15, 46)           # IoU 60/100
    for other, merged in ((exactly_half, False), (above_half, True)):
        runs = [(first[..., None], np.array([0.9])), (other[..., None], np.array([0.8]))]
        masks, _ = tta.merge_runs(runs, shape, min_votes=2)
        assert masks.shape[-1] == int(merged)
    runs = [(first[..., None], np.array([0.9])), (above_half[..., None], np.array([0.8]))]
    assert tta.merge_runs(runs, shape, iou_threshold=0.6, min_votes=2)[0].shape[-1] == 0


def test_touching_neighbours_from_different_runs_are_not_one_nucleus():
    left = _disk(SHAPE, 20, 15, 6)
    right = _disk(SHAPE, 20, 24, 6)                    # overlaps left a little: IoU well < 0.5
    runs = [(_stack(left), np.array([0.9])), (_stack(right), np.array([0.9]))]
    masks, _ = tta.merge_runs(runs, SHAPE, min_votes=2)
    assert masks.shape[-1] == 0                        # each was found by one run only


def test_tall_and_small_masks_are_compared_in_place():
    shape = (60, 20)
    tall = _rect(shape, 5, 2, 45, 8)                   # 40 x 6, taller than it is wide
    inner = _rect(shape, 10, 2, 40, 8)                 # inside it, ends above it: IoU 0.75
    for tall_score, inner_score in ((0.9, 0.8), (0.8, 0.9)):   # either one anchors the cluster
        runs = [(tall[..., None], np.array([tall_score])),
                (inner[..., None], np.array([inner_score]))]
        masks, scores = tta.merge_runs(runs, shape, min_votes=2)
        assert masks.shape[-1] == 1
        np.testing.assert_array_equal(masks[..., 0], tall)  # 1 of 2 votes is half: kept
        np.testing.assert_allclose(scores, [0.85], rtol=1e-6)


def test_the_best_scored_mask_anchors_its_cluster():
    shape = (20, 40)
    best = _rect(shape, 5, 10, 15, 20)                 # x 10..20
    left = _rect(shape, 5, 10, 15, 16)                 # IoU 0.6 with best, 0.2 with right
    right = _rect(shape, 5, 14, 15, 20)                # IoU 0.6 with best
    runs = [(best[..., None], np.array([0.9])), (left[..., None], np.array([0.2])),
            (right[..., None], np.array([0.5]))]
    masks, scores = tta.merge_runs(runs, shape, min_votes=2)
    assert masks.shape[-1] == 1                        # all three are one nucleus
    np.testing.assert_allclose(scores, [(0.9 + 0.2 + 0.5) / 3], rtol=1e-6)
    np.testing.assert_array_equal(masks[..., 0], best)


def test_default_majority_for_odd_run_counts():
    a = _disk(SHAPE, 10, 10, 5)
    one = tta.merge_runs([(_stack(a), np.array([0.7]))], SHAPE)
    assert one[0].shape[-1] == 1                       # a single run keeps what it found
    runs = [(_stack(a), np.array([0.9])), (_stack(a), np.array([0.9])), (_stack(), np.zeros(0))]
    assert tta.merge_runs(runs, SHAPE)[0].shape[-1] == 1   # 2 of 3 runs are a majority


def test_output_types_and_an_image_shape_with_channels():
    a = _disk(SHAPE, 10, 10, 5)
    runs = [(_stack(a), np.array([0.9]))] * 2
    masks, scores = tta.merge_runs(runs, SHAPE + (3,))  # image.shape works as image_shape
    assert masks.dtype == bool and masks.shape == SHAPE + (1,)
    assert scores.dtype == np.float32
    masks, scores = tta.merge_runs([(_stack(), np.zeros(0))] * 2, SHAPE)
    assert masks.dtype == bool and scores.dtype == np.float32


def test_equal_scores_keep_the_order_the_nuclei_were_first_found_in():
    shape = (40, 80)
    squares = [_rect(shape, 8 * (k // 10), 8 * (k % 10), 8 * (k // 10) + 6, 8 * (k % 10) + 6)
               for k in range(20)]
    first = np.array([0.9, 0.8, 0.8, 0.9, 0.8, 0.4, 0.9, 0.8, 0.4, 0.8] * 2)
    even = np.arange(0, 20, 2)                         # the second run finds every other one
    runs = [(np.stack(squares, -1), first),
            (np.stack([squares[k] for k in even], -1), first[even])]
    masks, merged = tta.merge_runs(runs, shape, min_votes=1)
    final = np.where(np.arange(20) % 2 == 0, first, first / 2)   # a run that missed counts 0
    found = sorted(range(20), key=lambda k: -first[k])            # clusters in creation order
    expected = sorted(found, key=lambda k: -final[k])              # many ties: stable
    for out, k in enumerate(expected):
        np.testing.assert_array_equal(masks[..., out], squares[k], err_msg=str(out))
    np.testing.assert_allclose(merged, final[expected], rtol=1e-6)


class _OverlapDetector:
    """Finds a big and a small nucleus that overlap, the same way in every flip."""

    def __init__(self, big: np.ndarray, small: np.ndarray):
        self.big, self.small = big, small

    def __call__(self, image):
        flip = next(f for f in tta.FLIPS.values()
                    if np.array_equal(f(image[..., 0] > 0), self.big | self.small))
        return np.stack([flip(self.small), flip(self.big)], -1), np.array([0.9, 0.8])


def test_detect_with_flips_returns_masks_without_overlaps():
    big = _disk(SHAPE, 20, 20, 8)
    small = _disk(SHAPE, 20, 30, 5)                    # overlaps big; IoU far below 0.5
    image = np.zeros(SHAPE + (3,), np.uint8)
    image[big | small] = 255
    masks, scores = tta.detect_with_flips(_OverlapDetector(big, small), image)
    assert masks.shape[-1] == 2 and masks.sum(-1).max() == 1
    np.testing.assert_array_equal(masks[..., 0], small & ~big)   # the bigger keeps the overlap
    np.testing.assert_array_equal(masks[..., 1], big)
    np.testing.assert_allclose(scores, [0.9, 0.8])
