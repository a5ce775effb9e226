"""The region proposal network head, shared by every pyramid level.

Built as a small functional model named ``rpn_model`` (as matterport does), so its three layers
``rpn_conv_shared``, ``rpn_class_raw`` and ``rpn_bbox_pred`` load from a matterport weights file.
"""
from __future__ import annotations

import keras
from keras import layers as KL


def build_rpn_model(anchor_stride: int, anchors_per_location: int, depth: int,
                    conv_size: int = 512) -> keras.Model:
    """Feature map [B, h, w, depth] -> (logits [B, A, 2], probs [B, A, 2], deltas [B, A, 4])."""
    feature_map = KL.Input(shape=[None, None, depth], name="input_rpn_feature_map")
    shared = KL.Conv2D(conv_size, 3, padding="same", activation="relu", strides=anchor_stride,
                       name="rpn_conv_shared")(feature_map)
    x = KL.Conv2D(2 * anchors_per_location, 1, padding="valid", activation="linear",
                  name="rpn_class_raw")(shared)
    logits = KL.Reshape((-1, 2))(x)
    probs = KL.Activation("softmax", name="rpn_class_xxx", dtype="float32")(logits)
    x = KL.Conv2D(anchors_per_location * 4, 1, padding="valid", activation="linear",
                  name="rpn_bbox_pred")(shared)
    deltas = KL.Reshape((-1, 4))(x)
    return keras.Model([feature_map], [logits, probs, deltas], name="rpn_model")
