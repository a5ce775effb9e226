"""Tests for nucleus.tta: flip test-time augmentation and the vote that merges its runs."""
from __future__ import annotations

import numpy as np
import pytest

from nucleus import tta


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
