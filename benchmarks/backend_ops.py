"""Speed of mrcnn/backend_ops.py on this machine: the keras.ops path against TensorFlow's fused
kernels (never asserts).

Why: the TensorFlow backend keeps ``tf.image.crop_and_resize`` and TensorFlow's NMS kernel only
because they are faster on the CPU than the generic ``keras.ops`` code; this script measures by
how much, on the backend that ``KERAS_BACKEND`` selects, at the sizes Mask R-CNN uses:

* NMS of 4000 candidate boxes (RPN-like: clusters of overlapping boxes) to at most 1000, IoU
  threshold 0.7, batch 2 (the proposal stage in training);
* crop_and_resize of 256 boxes to 7x7 from a [2, 64, 64, 128] feature map, forward, and forward
  plus the gradient w.r.t. the map (ROIAlign in training).

Usage::

    python benchmarks/backend_ops.py [--repeats 20]
    KERAS_BACKEND=jax python benchmarks/backend_ops.py [--repeats 20]

Every figure is the median wall time of ``--repeats`` calls after one warm-up call (which
compiles); run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402

from mrcnn import backend_ops  # noqa: E402


def nms_inputs(rng: np.random.Generator, batch: int = 2, num_boxes: int = 4000):
    """Normalised boxes in clusters of 20 jittered copies (as RPN proposals come) and scores."""
    clusters = num_boxes // 20
    centres = np.repeat(rng.uniform(0.05, 0.95, (batch, clusters, 2)), 20, axis=1)
    sizes = np.repeat(rng.uniform(0.02, 0.2, (batch, clusters, 2)), 20, axis=1)
    centres = centres + rng.normal(scale=0.01, size=centres.shape)
    sizes = sizes * rng.uniform(0.8, 1.25, sizes.shape)
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], -1).astype(np.float32)
    return boxes, rng.random((batch, num_boxes)).astype(np.float32)


def crop_inputs(rng: np.random.Generator, num_boxes: int = 256):
    image = rng.normal(size=(2, 64, 64, 128)).astype(np.float32)
    corners = np.sort(rng.uniform(0, 1, (num_boxes, 2, 2)), axis=1)
    boxes = corners.reshape(-1, 4).astype(np.float32)
    return image, boxes, rng.integers(0, 2, num_boxes).astype(np.int32)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median milliseconds of one call, after a warm-up call; results are made concrete."""
    ops.convert_to_numpy(ops.convert_to_tensor(_first(fn())))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ops.convert_to_numpy(_first(fn()))
        times.append(time.perf_counter() - start)
    return 1000.0 * statistics.median(times)


def _first(result):
    return result[0] if isinstance(result, (tuple, list)) else result


def tensorflow_cases(boxes, scores, image, crop_boxes, box_indices):
    """(label, callable) for the TF backend: each path inside tf.function, so the generic
    path's loop is a graph loop, not Python."""
    import tensorflow as tf   # here: TensorFlow backend only (a JAX machine may lack it)

    def nms(generic):
        return tf.function(lambda b, s: backend_ops.non_max_suppression(b, s, 1000, 0.7,
                                                                        generic=generic))

    def crop(generic, jit_compile=False):
        return tf.function(lambda i, b, k: backend_ops.crop_and_resize(i, b, k, (7, 7),
                                                                       generic=generic),
                           jit_compile=jit_compile)

    def crop_grad(generic):
        @tf.function
        def step(i, b, k):
            with tf.GradientTape() as tape:
                tape.watch(i)
                loss = tf.reduce_sum(backend_ops.crop_and_resize(i, b, k, (7, 7),
                                                                 generic=generic))
            return tape.gradient(loss, i)
        return step

    batched_padded = tf.function(lambda b, s: tf.image.non_max_suppression_padded(
        b, s, 1000, 0.7, pad_to_max_output_size=True))
    b, s = tf.constant(boxes), tf.constant(scores)
    i, cb, k = tf.constant(image), tf.constant(crop_boxes), tf.constant(box_indices)
    fused_nms, generic_nms = nms(None), nms(True)
    return [
        ("NMS 2x4000 -> 1000", "fused: NonMaxSuppressionV4 per image", lambda: fused_nms(b, s)),
        ("NMS 2x4000 -> 1000", "tf.image.non_max_suppression_padded (batched, tiled)",
         lambda: batched_padded(b, s)),
        ("NMS 2x4000 -> 1000", "generic keras.ops, tf.function", lambda: generic_nms(b, s)),
        ("crop 256 -> 7x7", "fused: tf.image.crop_and_resize", lambda f=crop(None): f(i, cb, k)),
        ("crop 256 -> 7x7", "generic keras.ops, tf.function", lambda f=crop(True): f(i, cb, k)),
        ("crop 256 -> 7x7", "generic keras.ops, tf.function(jit_compile=True)",
         lambda f=crop(True, True): f(i, cb, k)),
        ("crop + image gradient", "fused", lambda f=crop_grad(None): f(i, cb, k)),
        ("crop + image gradient", "generic keras.ops, tf.function",
         lambda f=crop_grad(True): f(i, cb, k)),
    ], {"fused": fused_nms(b, s)[1].numpy().tolist(),
        "generic": generic_nms(b, s)[1].numpy().tolist()}


def jax_cases(boxes, scores, image, crop_boxes, box_indices):
    """(label, callable) for the JAX backend: the generic path under jax.jit."""
    import jax   # here: JAX backend only (an optional extra)

    nms = jax.jit(lambda b, s: backend_ops.non_max_suppression(b, s, 1000, 0.7))
    crop = jax.jit(lambda i, b, k: backend_ops.crop_and_resize(i, b, k, (7, 7)))
    crop_grad = jax.jit(jax.grad(lambda i, b, k: backend_ops.crop_and_resize(
        i, b, k, (7, 7)).sum()))
    b, s = jax.numpy.asarray(boxes), jax.numpy.asarray(scores)
    i, cb, k = (jax.numpy.asarray(a) for a in (image, crop_boxes, box_indices))
    return [
        ("NMS 2x4000 -> 1000", "generic keras.ops, jax.jit", lambda: nms(b, s)),
        ("crop 256 -> 7x7", "generic keras.ops, jax.jit", lambda: crop(i, cb, k)),
        ("crop + image gradient", "generic keras.ops, jax.jit", lambda: crop_grad(i, cb, k)),
    ], {"generic": np.asarray(nms(b, s)[1]).tolist()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per figure")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    rng = np.random.default_rng(0)
    inputs = (*nms_inputs(rng), *crop_inputs(rng))
    backend = keras.backend.backend()
    if backend == "tensorflow":
        cases, kept = tensorflow_cases(*inputs)
    elif backend == "jax":
        cases, kept = jax_cases(*inputs)
    else:
        parser.error(f"no cases written for the {backend!r} backend")
    print(f"backend {backend}, keras {keras.__version__}, {os.cpu_count()} CPUs, "
          f"median of {args.repeats} calls after a warm-up; boxes kept by NMS per image: {kept}")
    print("| operation | path | ms |\n|---|---|---:|")
    for operation, path, fn in cases:
        print(f"| {operation} | {path} | {median_ms(fn, args.repeats):.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
