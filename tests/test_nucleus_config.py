"""nucleus.config: the study's values, the CPU profile, and command-line overrides reaching them.

The study's numbers are the point of comparison with the paper, so each is pinned here; a change
must be deliberate. Nothing here builds a model.
"""
from __future__ import annotations

import numpy as np
import pytest

from nucleus.cli import build_parser, overrides_from_args
from nucleus.config import (NucleusConfig, NucleusCPUConfig, NucleusCPUInferenceConfig,
                            NucleusInferenceConfig, make_config, parse_value)
from nucleus.errors import InputError
from nucleus.formats.image_io import normalize_image


def test_study_values():
    c = NucleusConfig()
    assert c.NAME == "nucleus"
    assert c.NUM_CLASSES == 2
    assert c.BACKBONE == "resnet101"
    assert c.IMAGE_RESIZE_MODE == "square"
    assert (c.IMAGE_MIN_DIM, c.IMAGE_MAX_DIM) == (512, 512)
    assert list(c.IMAGE_SHAPE) == [512, 512, 3]
    np.testing.assert_allclose(c.MEAN_PIXEL, [123.7, 116.8, 103.9])
    assert tuple(c.RPN_ANCHOR_SCALES) == (32, 64, 128, 256, 512)
    assert list(c.RPN_ANCHOR_RATIOS) == [0.5, 1, 2]
    assert c.RPN_NMS_THRESHOLD == 0.7
    assert c.RPN_TRAIN_ANCHORS_PER_IMAGE == 256
    assert c.TRAIN_ROIS_PER_IMAGE == 200
    assert c.ROI_POSITIVE_RATIO == 0.33
    assert c.DETECTION_NMS_THRESHOLD == 0.3
    assert c.DETECTION_MIN_CONFIDENCE == 0.7
    assert c.LEARNING_RATE == 1e-3
    assert c.MIXED_PRECISION is None


def test_inference_variants_keep_the_network_and_take_one_image():
    study, cpu = NucleusInferenceConfig(), NucleusCPUInferenceConfig()
    assert study.BATCH_SIZE == 1 and cpu.BATCH_SIZE == 1
    assert study.IMAGE_RESIZE_MODE == "square" and study.BACKBONE == "resnet101"
    assert cpu.IMAGE_RESIZE_MODE == "pad64"
    assert cpu.IMAGE_NORMALIZATION == "stretch" and study.IMAGE_NORMALIZATION is None
    assert cpu.DETECTION_NMS_THRESHOLD == 0.2 and study.DETECTION_NMS_THRESHOLD == 0.3
    for name in ("BACKBONE", "TOP_DOWN_PYRAMID_SIZE", "RPN_CONV_SIZE", "RPN_ANCHOR_SCALES",
                 "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CONV_SIZE", "NAME"):
        assert getattr(cpu, name) == getattr(NucleusCPUConfig, name)


def test_configurations_apply_their_own_normalisation():
    light = np.full((32, 32, 3), 220, np.uint8)
    light[8:16, 8:16] = 60                          # a dark nucleus on a light background
    stretched = normalize_image(light, "stretch")
    assert stretched[10, 10, 0] == 255               # inverted and stretched
    np.testing.assert_array_equal(make_config("cpu", inference=True).normalize_image(light),
                                  stretched)
    assert make_config("study").normalize_image(light) is light
    np.testing.assert_array_equal(
        make_config("study", overrides={"IMAGE_NORMALIZATION": "stretch"}).normalize_image(light),
        stretched)
    # as a configuration stored beside weights comes back
    values = {**NucleusConfig().to_dict(), "IMAGE_NORMALIZATION": "stretch"}
    stored = NucleusConfig.from_dict(values)
    np.testing.assert_array_equal(stored.normalize_image(light), stretched)


def test_make_config_profiles():
    assert type(make_config("study")) is NucleusConfig
    assert type(make_config("study", inference=True)) is NucleusInferenceConfig
    assert type(make_config("cpu")) is NucleusCPUConfig
    assert type(make_config("cpu", inference=True)) is NucleusCPUInferenceConfig
    with pytest.raises(InputError, match="gpu"):
        make_config("gpu")


def test_overrides_keep_defaults_and_rederive_shapes():
    c = make_config("study", overrides={"IMAGE_MIN_DIM": 256, "IMAGE_MAX_DIM": 256,
                                         "IMAGES_PER_GPU": 3})
    assert isinstance(c, NucleusConfig)
    assert list(c.IMAGE_SHAPE) == [256, 256, 3]
    assert c.BATCH_SIZE == 3
    assert c.BACKBONE == "resnet101" and c.TRAIN_ROIS_PER_IMAGE == 200
    assert NucleusConfig.IMAGE_MAX_DIM == 512  # the class itself is untouched


def test_override_to_none_is_applied():
    # "--set MIXED_PRECISION=None" must give float32 on the (bfloat16) CPU profile.
    assert make_config("cpu").MIXED_PRECISION == "mixed_bfloat16"
    assert make_config("cpu", overrides={"MIXED_PRECISION": None}).MIXED_PRECISION is None


def test_unknown_configuration_names_are_rejected():
    with pytest.raises(InputError, match="NOT_A_SETTING"):
        make_config("study", overrides={"NOT_A_SETTING": 1})


def _overrides(*argv: str) -> dict:
    return overrides_from_args(build_parser().parse_args(list(argv)))


def test_every_flag_reaches_the_training_config():
    values = _overrides("train", "--backbone", "resnet50", "--rpn-anchors", "512",
                        "--rois", "350", "--image-size", "256", "--images-per-gpu", "1",
                        "--rpn-nms", "0.6", "--positive-ratio", "0.25", "--detection-nms", "0.4",
                        "--min-confidence", "0.5", "--max-detections", "300",
                        "--learning-rate", "0.02", "--validation-steps", "3",
                        "--steps-per-epoch", "7", "--mixed-precision",
                        "--set", "POST_NMS_ROIS_INFERENCE=1000",
                        "--set", "rpn_anchor_scales=(8, 16, 32, 64, 128)",
                        "--set", "TRAIN_BN=True")
    c = make_config("study", overrides=values)
    assert c.BACKBONE == "resnet50"
    assert c.RPN_TRAIN_ANCHORS_PER_IMAGE == 512
    assert c.TRAIN_ROIS_PER_IMAGE == 350
    assert (c.IMAGE_MIN_DIM, c.IMAGE_MAX_DIM) == (256, 256)
    assert list(c.IMAGE_SHAPE) == [256, 256, 3]
    assert c.IMAGES_PER_GPU == 1 and c.BATCH_SIZE == 1
    assert c.RPN_NMS_THRESHOLD == 0.6
    assert c.ROI_POSITIVE_RATIO == 0.25
    assert c.DETECTION_NMS_THRESHOLD == 0.4
    assert c.DETECTION_MIN_CONFIDENCE == 0.5
    assert c.DETECTION_MAX_INSTANCES == 300
    assert c.LEARNING_RATE == 0.02
    assert c.VALIDATION_STEPS == 3
    assert c.STEPS_PER_EPOCH == 7
    assert c.MIXED_PRECISION == "mixed_bfloat16"
    assert c.POST_NMS_ROIS_INFERENCE == 1000
    assert tuple(c.RPN_ANCHOR_SCALES) == (8, 16, 32, 64, 128)
    assert c.TRAIN_BN is True


def test_set_values_are_literals_or_strings():
    values = _overrides("detect", "--set", "MIXED_PRECISION=None", "--set",
                        "IMAGE_RESIZE_MODE=square", "--set", "DETECTION_MIN_CONFIDENCE=0.9")
    assert values == {"MIXED_PRECISION": None, "IMAGE_RESIZE_MODE": "square",
                      "DETECTION_MIN_CONFIDENCE": 0.9}
    c = make_config("cpu", inference=True, overrides=values)
    assert c.MIXED_PRECISION is None and c.IMAGE_RESIZE_MODE == "square"


def test_no_flags_no_overrides():
    assert _overrides("train") == {}
    assert _overrides("evaluate") == {}


def test_malformed_and_unknown_set_are_rejected():
    with pytest.raises(InputError, match="NAME=VALUE"):
        _overrides("train", "--set", "BACKBONE")
    values = _overrides("train", "--set", "NO_SUCH_VALUE=3")
    with pytest.raises(InputError, match="NO_SUCH_VALUE"):
        make_config("study", overrides=values)


def test_set_values_are_python_literals_or_else_text():
    assert parse_value("256") == 256 and parse_value("0.7") == 0.7
    assert parse_value("(0.6, 1.7)") == (0.6, 1.7)
    assert parse_value("None") is None and parse_value("True") is True
    assert parse_value("resnet50") == "resnet50"
