"""Tests for mrcnn.augmentation: geometry moves masks with the image, pixel values do not."""
from __future__ import annotations

import numpy as np
import pytest

from mrcnn.augmentation import apply_augmentation
from mrcnn.imgaug_compat import CV_MAX_CHANNELS, ia, iaa


def _scene(n: int = 3, h: int = 48, w: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Masks at asymmetric places, and an image whose bright pixels are exactly their union."""
    rng = np.random.default_rng(n)
    mask = np.zeros((h, w, n), dtype=bool)
    for i in range(n):
        y, x = rng.integers(0, h - 8), rng.integers(0, w // 2)
        mask[y:y + 6, x:x + 9, i] = True
    image = np.full((h, w, 3), 10, dtype=np.uint8)
    image[mask.any(axis=-1)] = 200
    return image, mask


def test_fliplr_moves_masks_with_the_image():
    image, mask = _scene()
    image_aug, mask_aug = apply_augmentation(iaa.Fliplr(1.0), image, mask)
    np.testing.assert_array_equal(image_aug, image[:, ::-1])
    np.testing.assert_array_equal(mask_aug, mask[:, ::-1])
    assert mask_aug.dtype == bool and image_aug.dtype == np.uint8


def test_multiply_changes_the_image_but_not_the_masks():
    image, mask = _scene()
    image_aug, mask_aug = apply_augmentation(iaa.Multiply(1.2), image, mask)
    assert not np.array_equal(image_aug, image)
    assert image_aug[mask[..., 0]].min() == 240
    np.testing.assert_array_equal(mask_aug, mask)


@pytest.mark.parametrize("seed", range(6))
def test_random_pipeline_keeps_masks_on_the_nuclei(seed):
    ia.seed(seed)
    aug = iaa.Sequential([
        iaa.Fliplr(0.5), iaa.Flipud(0.5),
        iaa.Sometimes(0.7, iaa.Affine(rotate=(-40, 40), translate_px=(-6, 6), order=0)),
        iaa.OneOf([iaa.Rot90((1, 3), keep_size=False), iaa.Crop(px=(0, 6), keep_size=False)]),
        iaa.Multiply((0.8, 1.2)), iaa.GaussianBlur((0, 0.01)),
    ], random_order=True)
    image, mask = _scene(4)
    image_aug, mask_aug = apply_augmentation(aug, image, mask)
    assert mask_aug.shape == image_aug.shape[:2] + (4,)
    # The bright pixels of the augmented image are where the augmented masks are.
    np.testing.assert_array_equal(image_aug[..., 0] > 100, mask_aug.any(axis=-1))


def test_many_masks_share_one_transform_across_chunks():
    n = CV_MAX_CHANNELS * 2 + 5  # more than one OpenCV 5 call can take
    image, one = _scene(1)
    mask = np.repeat(one, n, axis=-1)
    aug = iaa.Sequential([iaa.Rot90(1, keep_size=False), iaa.CropAndPad(px=(-3, 4, 5, -2)),
                          iaa.Affine(rotate=(-30, 30), order=0)])
    for seed in range(3):
        ia.seed(seed)
        image_aug, mask_aug = apply_augmentation(aug, image, mask)
        assert mask_aug.shape == image_aug.shape[:2] + (n,)
        expected = image_aug[..., 0] > 100
        assert expected.any()
        assert all(np.array_equal(mask_aug[..., i], expected) for i in range(n))


def test_no_masks():
    image, _ = _scene()
    empty = np.zeros(image.shape[:2] + (0,), dtype=bool)
    image_aug, mask_aug = apply_augmentation(iaa.Fliplr(1.0), image, empty)
    assert mask_aug.shape == image.shape[:2] + (0,) and mask_aug.dtype == bool
    image_aug, mask_aug = apply_augmentation(iaa.Resize({"height": 20, "width": 30}), image, empty)
    assert image_aug.shape == (20, 30, 3) and mask_aug.shape == (20, 30, 0)


def test_resize_resizes_masks_too():
    image, mask = _scene()
    image_aug, mask_aug = apply_augmentation(iaa.Resize(0.5, interpolation="nearest"), image, mask)
    assert image_aug.shape == (24, 32, 3) and mask_aug.shape == (24, 32, 3)
    np.testing.assert_array_equal(image_aug[..., 0] > 100, mask_aug.any(axis=-1))


def test_bad_inputs_raise():
    image, mask = _scene()
    with pytest.raises(ValueError, match="differ in size"):
        apply_augmentation(iaa.Fliplr(1.0), image, mask[:-1])
    with pytest.raises(ValueError, match="must be bool"):
        apply_augmentation(iaa.Fliplr(1.0), image, mask.astype(np.uint8))
    with pytest.raises(ValueError, match="shapes"):
        apply_augmentation(iaa.Fliplr(1.0), image, mask[..., 0])

