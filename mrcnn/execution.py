"""How the model runs on each Keras backend: compiled inference, replicas, shape buckets.

Everything backend-specific about *running* the network lives here (the fused kernels of its
stages are in :mod:`mrcnn.backend_ops`), so the network itself is plain ``keras.ops``.
TensorFlow is imported only under the TensorFlow backend.
"""
from __future__ import annotations

from typing import Callable

import keras
import numpy as np


def backend() -> str:
    return keras.backend.backend()


def _tf_strategy():
    import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

    return tf.distribute.get_strategy()


def scale_loss_for_replicas(loss):
    """The loss of one replica's share of a step: Keras sums gradients over TensorFlow's
    replicas, so each divides by their number (JAX's data parallelism averages itself)."""
    if backend() != "tensorflow":
        return loss
    replicas = _tf_strategy().num_replicas_in_sync
    return loss / float(replicas) if replicas > 1 else loss


def step_outputs_for_workers(results: dict) -> dict:
    """Under TensorFlow's MultiWorkerMirroredStrategy Keras averages a step's outputs over
    axis 0, which a scalar lacks: give each a length-1 axis there."""
    if backend() != "tensorflow":
        return results
    import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

    if isinstance(_tf_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
        return {k: tf.reshape(v, [1]) for k, v in results.items()}
    return results


def compile_stateless(model: keras.Model, fn: Callable) -> Callable:
    """``fn(*arrays)`` (which uses ``model``'s weights) compiled once per input shape.

    Under JAX the weights are passed in as arguments (a ``keras.StatelessScope`` maps the
    model's variables to them), so the compiled function holds no copy of them and sees
    weights loaded later. Other backends run ``fn`` as it is. Outputs stay backend tensors
    (on the device), so one compiled function's outputs can feed the next.
    """
    if backend() != "jax":
        return fn
    import jax   # here: JAX only (an optional extra)

    variables = list(model.variables)

    def pure(values, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(pure)

    def run(*args):
        return jitted([v.value for v in variables], *args)
    return run


def image_bucket(height: int, width: int, step: int = 64) -> tuple[int, int]:
    """The padded size an image of ``height`` x ``width`` runs at under a compiling backend:
    each side rounded up to a multiple of ``step``, so images of many sizes share a few
    compiled graphs. The padding is not free: besides convolving it, the network sees black
    where the image's edge was, which moves detections near it (``Config.INFERENCE_SHAPE_STEP``
    chooses; 64 leaves "pad64" images as they are)."""
    return (-(-int(height) // step) * step, -(-int(width) // step) * step)


def pad_to(image: np.ndarray, height: int, width: int, value) -> np.ndarray:
    """A molded image [H, W, C] padded at the bottom and right with ``value`` (per channel)."""
    out = np.empty((height, width, image.shape[2]), image.dtype)
    out[...] = np.asarray(value, image.dtype)
    out[:image.shape[0], :image.shape[1]] = image
    return out
