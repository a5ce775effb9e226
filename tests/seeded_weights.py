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
