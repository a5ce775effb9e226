"""Tests for mrcnn.imgaug_compat: imgaug 0.4.0 imports and runs on NumPy 2."""
from __future__ import annotations

import numpy as np

from mrcnn.imgaug_compat import ia, iaa


def _image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)


def test_import_restores_sctypes():
    assert np.uint8 in np.sctypes["uint"] and np.float32 in np.sctypes["float"]
    assert ia.is_np_array(_image())


def test_geometric_and_pixel_augmenters_run_on_uint8_and_bool():
    image = _image()
    mask = np.zeros((40, 56, 2), dtype=bool)
    mask[5:15, 5:20, 0] = True
    for aug in (iaa.Fliplr(1.0), iaa.Flipud(1.0), iaa.Affine(rotate=20), iaa.Crop(px=3),
                iaa.CropAndPad(percent=-0.1), iaa.Rot90(1)):
        assert aug.augment_image(image).dtype == np.uint8
        out = aug.augment_image(mask)
        assert out.dtype == bool and out.shape[-1] == 2 and out[..., 0].any()
    np.testing.assert_array_equal(iaa.Fliplr(1.0).augment_image(mask), mask[:, ::-1])
    brighter = iaa.Multiply(1.5).augment_image(image)
    assert brighter.dtype == np.uint8 and brighter.astype(int).sum() > image.astype(int).sum()


def test_elastic_transformation_works():
    """NumPy 2 promotion made its shift maps float64, which OpenCV rejects."""
    image = _image()
    out = iaa.ElasticTransformation(alpha=8.0, sigma=3.0).augment_image(image)
    assert out.shape == image.shape and not np.array_equal(out, image)


def test_frequency_noise_augmenters_work():
    """Clouds uses np.complex, removed from NumPy."""
    ia.seed(1)
    assert iaa.Clouds().augment_image(_image()).shape == (40, 56, 3)
