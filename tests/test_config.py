"""mrcnn.config: derived values and the dict round trip stored beside checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mrcnn.config import Config


class Nuclei(Config):
    NAME = "nuclei"
    NUM_CLASSES = 3
    GPU_COUNT = 2
    IMAGES_PER_GPU = 3
    IMAGE_MAX_DIM = 512
    MEAN_PIXEL = np.array([10.0, 20.0, 30.0])


def test_derived_values():
    c = Nuclei()
    assert c.BATCH_SIZE == 6
    np.testing.assert_array_equal(c.IMAGE_SHAPE, [512, 512, 3])
    assert c.IMAGE_META_SIZE == 1 + 3 + 3 + 4 + 1 + 3


def test_crop_mode_image_shape_is_min_dim():
    class Crop(Config):
        IMAGE_RESIZE_MODE = "crop"
        IMAGE_MIN_DIM = 256
        IMAGE_CHANNEL_COUNT = 1

    np.testing.assert_array_equal(Crop().IMAGE_SHAPE, [256, 256, 1])


def test_to_dict_is_json_and_from_dict_restores_it():
    c = Nuclei()
    c.LEARNING_RATE = 0.05  # instance overrides are kept too
    values = c.to_dict()
    assert values["NAME"] == "nuclei" and values["BATCH_SIZE"] == 6
    assert values["MEAN_PIXEL"] == [10.0, 20.0, 30.0]
    assert "display" not in values and "to_dict" not in values
    restored = Nuclei.from_dict(json.loads(json.dumps(values)))
    assert isinstance(restored, Nuclei)
    assert restored.LEARNING_RATE == 0.05
    assert isinstance(restored.MEAN_PIXEL, np.ndarray)
    np.testing.assert_array_equal(restored.MEAN_PIXEL, c.MEAN_PIXEL)
    np.testing.assert_array_equal(restored.IMAGE_SHAPE, c.IMAGE_SHAPE)
    as_json = lambda d: json.loads(json.dumps(d))  # noqa: E731 (tuples become lists)
    assert as_json(restored.to_dict()) == as_json(values)


def test_from_dict_recomputes_derived_values():
    values = Nuclei().to_dict()
    values["IMAGES_PER_GPU"] = 1
    values["BATCH_SIZE"] = 99  # stale derived values are ignored
    assert Nuclei.from_dict(values).BATCH_SIZE == 2


def test_display_lists_every_setting(capsys):
    Nuclei().display()
    out = capsys.readouterr().out
    assert "IMAGES_PER_GPU" in out and "nuclei" in out and "LOSS_WEIGHTS" in out


def test_normalize_image_knows_only_none_and_subclasses_add_modes():
    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    assert Nuclei().normalize_image(image) is image

    class Stretched(Nuclei):
        IMAGE_NORMALIZATION = "stretch"

    with pytest.raises(ValueError, match="IMAGE_NORMALIZATION 'stretch'"):
        Stretched().normalize_image(image)

    class Inverted(Stretched):
        def normalize_image(self, image):
            return 255 - image

    np.testing.assert_array_equal(Inverted().normalize_image(image), 255 - image)
    assert "normalize_image" not in Inverted().to_dict()
