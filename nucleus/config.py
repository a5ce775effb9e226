"""Configurations of the nucleus application, as data.

``NucleusConfig`` holds the study's settings (ResNet-101-FPN, 512x512 square resize, COCO mean
pixel, anchors 32-512 ...), the default for people with a GPU and COCO weights.
``NucleusCPUConfig`` is the configuration chosen by measurement for training from scratch on a
CPU (see the README): ResNet-50, random 256x256 crops at native resolution, small anchors, fewer
ROIs, the mask head on positive ROIs only. Inference variants run on the whole image.
"""
from __future__ import annotations

import ast
from typing import Any

import numpy as np

from mrcnn.config import Config
from nucleus.errors import InputError
from nucleus.formats.image_io import normalize_image


class NucleusConfig(Config):
    """The study's training configuration."""
    PROFILE = "study"                 # the profile's name (:data:`PROFILES`), stored with the
                                      # weights so that inference rebuilds the same profile
    NAME = "nucleus"
    NUM_CLASSES = 1 + 1               # background + nucleus
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 100
    VALIDATION_STEPS = 10
    BACKBONE = "resnet101"
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 512
    IMAGE_MAX_DIM = 512
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])
    IMAGE_NORMALIZATION = None        # the study feeds images as they are
    INFERENCE_SCALE = 1.0             # the scale whole images are detected at when the caller
                                      # names none (``--scale``; 1: native resolution)
    MASK_GROWTH_REACH = 0             # pixels a mask may grow to its nucleus's half maximum
                                      # (nucleus/inference/boundaries.py; 0: the study's masks)
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 2000
    MAX_GT_INSTANCES = 400            # stage1_train has up to 375 nuclei in an image
    DETECTION_MAX_INSTANCES = 400
    DETECTION_NMS_THRESHOLD = 0.3
    DETECTION_MIN_CONFIDENCE = 0.7
    LEARNING_RATE = 0.001
    MINI_MASK_SHAPE = (56, 56)

    def normalize_image(self, image: np.ndarray) -> np.ndarray:
        """``IMAGE_NORMALIZATION`` None or "stretch"
        (:func:`nucleus.formats.image_io.normalize_image`): the model's own normalisation, in
        training and detection alike."""
        return normalize_image(image, self.IMAGE_NORMALIZATION)


class NucleusInferenceConfig(NucleusConfig):
    """The study's inference settings: one image at a time, same 512x512 square resize."""
    IMAGES_PER_GPU = 1


class NucleusCPUConfig(NucleusConfig):
    """Training from scratch on a 2-core CPU (chosen by measurement; see README)."""
    PROFILE = "cpu"
    NAME = "nucleus_cpu"
    BACKBONE = "resnet50"
    IMAGES_PER_GPU = 2
    IMAGE_RESIZE_MODE = "crop"        # random 256x256 crops at native resolution
    IMAGE_MIN_DIM = 256
    IMAGE_MAX_DIM = 256
    IMAGE_NORMALIZATION = "stretch"   # invert light backgrounds, stretch dim images (README)
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)  # nuclei are 5-80 px at native resolution
    TRAIN_ROIS_PER_IMAGE = 128
    POST_NMS_ROIS_TRAINING = 1000
    PRE_NMS_LIMIT = 4000
    MAX_GT_INSTANCES = 200
    TOP_DOWN_PYRAMID_SIZE = 128       # narrower FPN, RPN and heads: ~3x fewer FLOPs after
    RPN_CONV_SIZE = 256               # the backbone, plenty for one class of small objects
    FPN_CLASSIF_FC_LAYERS_SIZE = 512
    MASK_HEAD_CONV_SIZE = 128
    TRAIN_BN = True                   # from scratch: BatchNorm statistics must learn
    BATCH_NORM_MOMENTUM = 0.9         # inference statistics follow the weights within ~10 steps
    MIXED_PRECISION = "mixed_bfloat16"  # 1.5x faster steps on AVX512-BF16 CPUs (measured)
    LEARNING_RATE = 0.01
    MINI_MASK_SHAPE = (28, 28)


class NucleusCPUInferenceConfig(NucleusCPUConfig):
    """Whole images at native resolution, padded to a multiple of 64."""
    IMAGES_PER_GPU = 1
    IMAGE_RESIZE_MODE = "pad64"
    IMAGE_MIN_DIM = None
    IMAGE_MAX_DIM = None
    DETECTION_MIN_CONFIDENCE = 0.7    # with the epoch-124 file and confidence-owned pixels:
                                      # 0.5 / 0.6 / 0.7 / 0.8 / 0.9 give 0.534 / 0.542 / 0.546 /
                                      # 0.547 / 0.542 on the first 120 train images, 0.552 /
                                      # 0.557 / 0.560 / 0.559 / 0.556 on val (README)
    DETECTION_NMS_THRESHOLD = 0.2     # chosen on 60 training images: 0.461 vs 0.452 at 0.3;
                                      # touching nuclei barely overlap, duplicates do
    DETECTION_MAX_INSTANCES = 1000    # a 1024-px tile of a dense slide holds more than 400
    INFERENCE_CAP_PIXELS = 1024 * 1024  # the caps above (and PRE_NMS_LIMIT, proposals) are
                                      # per 1024 x 1024 pixels: a bigger tile or image gets
                                      # them times its pixels / that (rounded up to a
                                      # quarter)
    INFERENCE_CAP_FLOOR = 0.5         # ...and a smaller one fewer, down to half of them
                                      # (1,000 proposals): val 0.5656 -> 0.5658, dev half
                                      # 0.4532 -> 0.4530 with 1,000 for every image; a
                                      # quarter lost nuclei (docs/test_like_evaluation.md)
    INFERENCE_SCALE = "probe"         # whole images (not segment's tiles) at whichever of 1, 0.5
                                      # and 0.25 the model is most confident at: val 0.5656 ->
                                      # 0.566, test-like dev half 0.453 -> 0.481 (README)
    MASK_GROWTH_REACH = 1             # masks grown up to 1 px to their nuclei's half maximum
                                      # (nucleus/inference/boundaries.py): val 0.5661 -> 0.580,
                                      # dev half 0.480 -> 0.511; 2 px: 0.577 / 0.515 (README)
    DETECTION_MASK_OVERLAP = "confidence"  # shared pixels to the most confident nucleus: val
                                      # 0.5473 -> 0.5521, 120 train images 0.5254 -> 0.5339
                                      # against the study's "biggest mask keeps them" (README)


PROFILES = {
    "study": (NucleusConfig, NucleusInferenceConfig),
    "cpu": (NucleusCPUConfig, NucleusCPUInferenceConfig),
}


def parse_value(text: str) -> Any:
    """A ``--set NAME=VALUE`` value: a Python literal (number, tuple, True, None) or else the text.

    Training's ``--set`` and the sweep's axes read values alike, so it lives beside the
    configuration both apply them to.
    """
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def make_config(profile: str = "study", inference: bool = False,
                overrides: dict[str, Any] | None = None) -> Config:
    """A configuration of ``profile`` with ``overrides`` (attribute name -> value) applied.

    An override of ``None`` is a value like any other (``MIXED_PRECISION=None`` means float32).
    """
    if profile not in PROFILES:
        raise InputError(f"unknown configuration {profile!r}: choose from {sorted(PROFILES)}")
    cls = PROFILES[profile][1 if inference else 0]
    attrs = dict(overrides or {})
    if "PROFILE" in attrs:
        raise InputError("PROFILE is the configuration's own name: choose the configuration "
                         "with --profile")
    for name in attrs:
        if not hasattr(cls, name):
            raise InputError(f"unknown configuration value {name} (see mrcnn/config.py and "
                             "nucleus/config.py for the names)")
    if not attrs:
        return cls()
    # A subclass keeps the class defaults and lets __init__ derive IMAGE_SHAPE and friends.
    return type(cls.__name__, (cls,), attrs)()
