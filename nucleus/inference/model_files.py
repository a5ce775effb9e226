"""Where a Mask R-CNN's weights and configuration come from: the shipped file, and the
configuration a weights file of ours carries. Inference needs these, training too; both import
them from here, so inference code never imports training code.
"""
from __future__ import annotations

import json
import os
import sys

from mrcnn.config import Config
from mrcnn.weights import read_attrs
from nucleus.config import make_config

# this file is <repo>/nucleus/inference/model_files.py
REPO_WEIGHTS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "weights")
SHIPPED_NAME = "mask_rcnn_nucleus.h5"
# ``pip install .`` puts the shipped model under <prefix>/share (setup.py data_files); a
# checkout or an editable install has it in weights/ beside the packages.
INSTALLED_WEIGHTS_DIR = os.path.join(sys.prefix, "share", "nucleus-mrcnn", "weights")


def _shipped_weights() -> str:
    candidates = [os.path.join(REPO_WEIGHTS_DIR, SHIPPED_NAME),
                  os.path.join(INSTALLED_WEIGHTS_DIR, SHIPPED_NAME)]
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


SHIPPED_WEIGHTS = _shipped_weights()


def config_from_weights(path: str, inference: bool = True, overrides: dict | None = None,
                        profile: str | None = None):
    """Rebuild the configuration stored in one of our weights files (profile + values).

    ``profile`` (the command line's ``--profile``) wins over the one the file names; files
    without a stored configuration (matterport's) fall back to the study profile.
    """
    attrs = read_attrs(path)
    stored = json.loads(attrs["mrcnn_config"]) if "mrcnn_config" in attrs else {}
    if profile is None:
        profile = "cpu" if stored.get("NAME", "").startswith("nucleus_cpu") else "study"
    keep = ("BACKBONE", "RPN_ANCHOR_SCALES", "RPN_ANCHOR_RATIOS", "TOP_DOWN_PYRAMID_SIZE",
            "FPN_CLASSIF_FC_LAYERS_SIZE", "NUM_CLASSES", "RPN_CONV_SIZE",
            "MASK_HEAD_CONV_SIZE", "MEAN_PIXEL", "TRAIN_BN",
            "BACKBONE_STRIDES", "POOL_SIZE", "MASK_POOL_SIZE", "MASK_SHAPE",
            "IMAGE_NORMALIZATION", "OBJECT_DIAMETER")
    # A value the file does not record had the library's default when the file was written
    # (IMAGE_NORMALIZATION, say, is newer than the first checkpoints).
    values = {k: stored.get(k, getattr(Config, k)) for k in keep} if stored else {}
    if "RPN_ANCHOR_SCALES" in values:
        values["RPN_ANCHOR_SCALES"] = tuple(values["RPN_ANCHOR_SCALES"])
    values.update(overrides or {})
    return make_config(profile, inference=inference, overrides=values)
