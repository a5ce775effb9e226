"""Tests for nucleus.inference.scales: detection at a chosen scale, one chosen per image, and a
vote."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk
from skimage.measure import label

from nucleus.errors import InputError
from nucleus.inference import scales
from nucleus.inference.detectors import Detector


def _discs(shape=(120, 160), centres=((40, 40), (80, 110)), radius=27) -> tuple:
    image = np.zeros(shape + (3,), np.uint8)
    truth = np.zeros(shape + (len(centres),), bool)
    for k, c in enumerate(centres):
        rr, cc = disk(c, radius, shape=shape)
        truth[rr, cc, k] = True
        image[rr, cc] = 200
    return image, truth


def _threshold_detector(calls: list | None = None):
    """Bright connected components as instances, scored 0.9; records the sizes it is given."""
    def detect(image):
        if calls is not None:
            calls.append(image.shape[:2])
        lab = label(image[..., 0] > 100)
        n = lab.max()
        masks = np.stack([lab == k for k in range(1, n + 1)], -1) if n else \
            np.zeros(image.shape[:2] + (0,), bool)
        return masks, np.full(n, 0.9, np.float32)
    return detect


def _iou(a, b):
    return np.count_nonzero(a & b) / np.count_nonzero(a | b)


def test_rescale_image_sizes_and_identity():
    image = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    assert scales.rescale_image(image, 1.0) is image
    assert scales.rescale_image(image, 0.5).shape == (25, 40, 3)
    assert scales.rescale_image(image, 2.0).shape == (100, 160, 3)
    assert scales.rescale_image(image, 2.0).dtype == np.uint8
    with pytest.raises(ValueError):
        scales.rescale_image(image, 0)


@pytest.mark.parametrize("factor", [0.5, 2.0])
def test_detect_at_scale_returns_masks_of_the_original_size(factor):
    image, truth = _discs()
    calls = []
    masks, scores = scales.detect_at_scale(_threshold_detector(calls), image, factor)
    assert calls == [(round(120 * factor), round(160 * factor))]
    assert masks.shape == truth.shape and masks.dtype == bool
    assert scores.shape == (2,)
    for k in range(2):
        assert max(_iou(masks[..., j], truth[..., k]) for j in range(2)) > 0.9


def test_restore_masks_drops_masks_that_vanish():
    small = np.zeros((10, 10, 2), bool)
    small[0, 0, 0] = True                  # a single pixel at 1/8 of the size: lost
    small[2:9, 2:9, 1] = True
    # scale 8 -> 1: restoring to a smaller shape keeps only masks that cover >= half a pixel
    restored = scales.restore_masks(small, (5, 5))
    assert restored.shape == (5, 5, 2)
    assert not restored[..., 0].any() and restored[..., 1].any()


@pytest.mark.parametrize("shape", [(250, 333), (61, 40), (13, 7)])
def test_restore_masks_equals_resizing_each_whole_mask(shape):
    # crop-by-crop restoring must give the pixels of skimage's resize on each whole mask,
    # shrinking and enlarging, masks touching the edges and corners included
    from skimage.transform import resize
    rng = np.random.default_rng(sum(shape))
    small = np.zeros((60, 80, 12), bool)
    for k in range(10):
        rr, cc = disk((rng.integers(0, 60), rng.integers(0, 80)), rng.integers(1, 9),
                      shape=(60, 80))
        small[rr, cc, k] = True
    small[:3, :2, 10] = True
    small[-1, -4:, 11] = True
    expected = np.stack([resize(small[..., k].astype(np.float32), shape, order=1,
                                anti_aliasing=False) >= 0.5 for k in range(12)], axis=-1)
    restored = scales.restore_masks(small, shape)
    assert restored.shape == shape + (12,)
    assert np.array_equal(restored, expected)


def test_choose_scale():
    target = scales.TRAINING_DIAMETER
    assert scales.choose_scale(None) == 1.0
    assert scales.choose_scale(target) == 1.0
    assert scales.choose_scale(target * 1.4) == 1.0          # within the tolerance
    assert scales.choose_scale(target * 3) == pytest.approx(1 / 3)
    assert scales.choose_scale(target / 3) == pytest.approx(3)
    assert scales.choose_scale(target * 100) == scales.AUTO_RANGE[0]
    assert scales.choose_scale(target / 100) == scales.AUTO_RANGE[1]


def test_median_diameter():
    _, truth = _discs(radius=20)
    assert scales.median_diameter(truth) == pytest.approx(40, rel=0.05)
    assert scales.median_diameter(np.zeros((4, 4, 0), bool)) is None


def test_auto_scale_brings_big_nuclei_to_training_size():
    image, truth = _discs(radius=27)                         # diameter 54: 3x the training's
    calls = []
    masks, scores, factor, measured = scales.detect_auto_scale(_threshold_detector(calls),
                                                               image)
    assert measured == pytest.approx(54, rel=0.05)
    assert factor == pytest.approx(scales.TRAINING_DIAMETER / 54, rel=0.05)
    assert calls[0] == (120, 160) and calls[1] == (round(120 * factor), round(160 * factor))
    assert masks.shape == truth.shape
    for k in range(2):
        assert max(_iou(masks[..., j], truth[..., k]) for j in range(masks.shape[-1])) > 0.85


def test_auto_scale_leaves_training_sized_nuclei_alone():
    image, _ = _discs(radius=9)
    calls = []
    _, _, factor, measured = scales.detect_auto_scale(_threshold_detector(calls), image)
    assert measured == pytest.approx(18, rel=0.1)
    assert factor == 1.0 and len(calls) == 1


def test_vote_over_scales_drops_what_one_scale_alone_finds():
    image, truth = _discs()
    base = _threshold_detector()

    def detect(img):
        masks, s = base(img)
        if img.shape[0] == 120:                              # only the original scale
            extra = np.zeros(img.shape[:2] + (1,), bool)    # sees a spurious object
            extra[5:15, 140:155] = True
            masks, s = np.concatenate([masks, extra], -1), np.append(s, 0.99)
        return masks, s

    masks, scores = scales.detect_with_scales(detect, image, (0.8, 1.0, 1.25))
    assert masks.shape[-1] == 2
    assert not masks[5:15, 140:155].any()
    assert np.all(masks.sum(-1) <= 1)                        # no overlaps
    np.testing.assert_allclose(scores, 0.9, atol=1e-6)
    with pytest.raises(ValueError):
        scales.detect_with_scales(detect, image, ())


def test_detector_scale_options():
    image, truth = _discs()
    plain = Detector(_threshold_detector())(image)
    calls = []
    half = Detector(_threshold_detector(calls), scale=0.5)(image)
    assert calls == [(60, 80)]
    assert half[0].shape == plain[0].shape
    calls.clear()
    Detector(_threshold_detector(calls), scales=(0.5, 1.0))(image)
    assert sorted(calls) == [(60, 80), (120, 160)]
    calls.clear()
    Detector(_threshold_detector(calls), scale="auto")(image)
    assert len(calls) == 2
    for bad in (dict(scale=0), dict(scale="big"), dict(scales=()), dict(scales=(1.0, -1.0)),
                dict(scale=2.0, scales=(1.0, 2.0))):
        with pytest.raises(InputError):
            Detector(_threshold_detector(), **bad)


def test_probe_keeps_the_factor_the_model_is_most_confident_of():
    """A detector that is confident only when the discs are small (as a model is on nuclei of
    the sizes it knows) makes the probe shrink the image; a uniform one keeps it as it is."""
    image, truth = _discs(radius=27)
    seen = []

    def shy_of_big(img):
        masks, _ = _threshold_detector()(img)
        seen.append(img.shape[:2])
        d = scales.median_diameter(masks) or 0
        confidence = 0.95 if d < 30 else 0.75
        return masks, np.full(masks.shape[-1], confidence, np.float32)

    masks, scores, factor = scales.detect_probe_scale(shy_of_big, image)
    assert factor in (0.5, 0.25) and len(seen) == 3
    assert seen[0] == (120, 160) and seen[1] == (60, 80) and seen[2] == (30, 40)
    assert masks.shape[:2] == truth.shape[:2] and np.all(scores == np.float32(0.95))
    for k in range(truth.shape[-1]):
        assert max(_iou(masks[..., j], truth[..., k]) for j in range(masks.shape[-1])) > 0.8

    def steady(img):
        masks, _ = _threshold_detector()(img)
        return masks, np.full(masks.shape[-1], 0.9, np.float32)

    _, _, factor = scales.detect_probe_scale(steady, image)
    assert factor == 1.0                       # no factor beats native by the margin
    with pytest.raises(ValueError, match="no factors"):
        scales.detect_probe_scale(steady, image, factors=())


def test_probe_does_not_shrink_nuclei_below_the_smallest_training_size():
    """Nuclei of 20 px are tried at half size (10 px) but not at a quarter (5 px, under the
    training set's 10th percentile of 8.5 px), so a detector that is confident on specks cannot
    win there; nuclei of 12 px are not shrunk at all; a first pass that finds nothing rules
    nothing out."""
    def confident_on_specks(calls):
        def detect(img):
            masks, _ = _threshold_detector(calls)(img)
            d = scales.median_diameter(masks) or 0
            return masks, np.full(masks.shape[-1], 0.99 if d < 8 else 0.8, np.float32)
        return detect

    for radius, expected in ((10, [(120, 160), (60, 80)]), (6, [(120, 160)])):
        image, _ = _discs(radius=radius)
        calls = []
        _, _, factor = scales.detect_probe_scale(confident_on_specks(calls), image)
        assert calls == expected and factor == 1.0
    calls = []
    scales.detect_probe_scale(confident_on_specks(calls), np.zeros((120, 160, 3), np.uint8))
    assert calls == [(120, 160), (60, 80), (30, 40)]
    # the rule follows ``smallest``: with 4 px allowed, the 20-px nuclei are tried at 5 px
    image, _ = _discs(radius=10)
    calls = []
    _, _, factor = scales.detect_probe_scale(confident_on_specks(calls), image, smallest=4.0)
    assert len(calls) == 3 and factor == 0.25
