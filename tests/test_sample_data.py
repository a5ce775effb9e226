"""nucleus.sample_data: the mosaic of the bundled sample and the model-free threshold detector."""
from __future__ import annotations

import numpy as np

from nucleus.inference.detectors import Detector
from nucleus.sample_data import make_threshold_detector, sample_mosaic, threshold_detector


def test_mosaic_is_grey_rgb_of_the_asked_size_and_repeats_its_pieces():
    mosaic = sample_mosaic(600, piece=256)
    assert mosaic.shape == (600, 600, 3) and mosaic.dtype == np.uint8
    assert mosaic.flags.c_contiguous
    assert (mosaic[..., 0] == mosaic[..., 2]).all()
    assert mosaic.std() > 10  # real nuclei, not a flat image
    np.testing.assert_array_equal(sample_mosaic(256, piece=256), mosaic[:256, :256])


def test_threshold_detector_finds_bright_regions_scored_by_brightness():
    image = np.zeros((20, 30), np.uint8)
    image[2:6, 2:6] = 255
    image[10:15, 20:28] = 204
    masks, scores = threshold_detector(128)(image)
    assert masks.shape == (20, 30, 2) and masks.dtype == bool
    assert sorted(masks.sum((0, 1))) == [16, 40]
    np.testing.assert_allclose(sorted(scores), [0.8, 1.0])
    built = make_threshold_detector(level=128)
    assert isinstance(built, Detector)
