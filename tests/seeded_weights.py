"""Weights drawn from a fixed NumPy seed, the same on every Keras backend.

The session-scoped test models are initialised by Keras's own random generator, which differs
between backends and between runs. An untrained network then puts its best RPN scores anywhere,
sometimes all in the image's black padding, so whether it detects anything in the image changes
from run to run. Tests that need detections from an untrained model set these weights first:
He-normal kernels, zero biases, identity BatchNorm, drawn by NumPy (so TensorFlow and JAX get
identical arrays).
"""
from __future__ import annotations

import keras
import numpy as np


def seeded_weights(model: keras.Model, seed: int) -> list[np.ndarray]:
    """He-normal kernels, zero biases and BatchNorm shifts/means, unit scales/variances, for
    every weight of ``model`` in ``model.weights`` order."""
    rng = np.random.default_rng(seed)
    values = []
    for weight in model.weights:
        shape = tuple(weight.shape)
        kind = weight.path.rsplit("/", 1)[-1]
        if kind == "kernel":
            fan_in = int(np.prod(shape[:-1]))
            value = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
        elif kind in ("gamma", "moving_variance"):
            value = np.ones(shape)
        elif kind in ("bias", "beta", "moving_mean"):
            value = np.zeros(shape)
        else:
            raise ValueError(f"seeded_weights: no rule for weight {weight.path!r}")
        values.append(value.astype(weight.dtype))
    return values


def set_seeded_weights(model: keras.Model, seed: int) -> None:
    model.set_weights(seeded_weights(model, seed))


def set_detecting_weights(model: keras.Model, seed: int, scale: float = 1e-4) -> None:
    """Seeded weights from which the untrained Mask R-CNN network detects things with varied
    scores and boxes: the layers that end in box deltas or class logits get their kernels
    shrunk by ``scale`` (else the saturated activations of an untrained ResNet push every box
    off the image and every score to 0 or 1), and the classifier leans to the object class."""
    set_seeded_weights(model, seed)
    for layer in (model.rpn_model.get_layer("rpn_bbox_pred"), model.mrcnn_class_logits,
                  model.mrcnn_bbox_fc):
        layer.kernel.assign(layer.kernel.numpy() * scale)
    bias = np.zeros(model.mrcnn_class_logits.bias.shape, np.float32)
    bias[0], bias[1:] = -1.0, 1.0
    model.mrcnn_class_logits.bias.assign(bias)
