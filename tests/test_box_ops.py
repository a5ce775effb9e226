"""mrcnn.box_ops (keras.ops, every backend) agrees with the NumPy versions in mrcnn.utils.

Inputs are NumPy arrays and outputs come back through ``keras.ops.convert_to_numpy``, so the
same tests run under TensorFlow and JAX (``-m backends``).
"""
from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn import box_ops, utils

pytestmark = pytest.mark.backends


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def random_boxes(rng, n, size=1.0):
    y1, x1 = rng.uniform(0, 0.6 * size, (2, n))
    h, w = rng.uniform(0.05 * size, 0.4 * size, (2, n))
    return np.stack([y1, x1, y1 + h, x1 + w], 1).astype(np.float32)


def test_box_refinement_and_apply_box_deltas_agree_with_numpy_and_invert():
    rng = np.random.default_rng(1)
    boxes, gt = random_boxes(rng, 30), random_boxes(rng, 30)
    deltas = to_np(box_ops.box_refinement(boxes, gt))
    np.testing.assert_allclose(deltas, utils.box_refinement(boxes, gt), rtol=1e-5, atol=1e-6)
    back = to_np(box_ops.apply_box_deltas(boxes, deltas))
    np.testing.assert_allclose(back, gt, atol=1e-5)
    np.testing.assert_allclose(back, utils.apply_box_deltas(boxes, deltas), atol=1e-5)


def test_box_coder_known_values():
    # A 0.2 x 0.4 box moved by half its height down, a quarter of its width left, its height
    # doubled and its width halved: every number is exact in float32.
    box = np.array([[0.25, 0.25, 0.45, 0.65]], np.float32)
    deltas = np.array([[0.5, -0.25, math.log(2.0), math.log(0.5)]], np.float32)
    out = to_np(box_ops.apply_box_deltas(box, deltas))
    np.testing.assert_allclose(out, [[0.25, 0.25, 0.65, 0.45]], atol=1e-6)
    np.testing.assert_allclose(to_np(box_ops.box_refinement(box, out)), deltas, atol=1e-6)


def test_box_ops_take_any_leading_axes():
    rng = np.random.default_rng(3)
    boxes, gt = random_boxes(rng, 24).reshape(2, 3, 4, 4), random_boxes(rng, 24).reshape(2, 3, 4, 4)
    deltas = to_np(box_ops.box_refinement(boxes, gt))
    assert deltas.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(deltas.reshape(-1, 4),
                               utils.box_refinement(boxes.reshape(-1, 4), gt.reshape(-1, 4)),
                               rtol=1e-5, atol=1e-6)
    back = to_np(box_ops.apply_box_deltas(boxes, deltas))
    np.testing.assert_allclose(back, gt, atol=1e-5)
    window = np.array([0.1, 0.2, 0.5, 0.6], np.float32)
    clipped = to_np(box_ops.clip_boxes(gt, window))
    np.testing.assert_allclose(clipped.reshape(-1, 4),
                               to_np(box_ops.clip_boxes(gt.reshape(-1, 4), window)))
    # overlaps: batch axes in front of the pairwise [N1, N2] pair.
    a, b = random_boxes(rng, 10).reshape(2, 5, 4), random_boxes(rng, 6).reshape(2, 3, 4)
    iou = to_np(box_ops.overlaps(a, b))
    assert iou.shape == (2, 5, 3)
    for k in range(2):
        np.testing.assert_allclose(iou[k], utils.compute_overlaps(a[k], b[k]),
                                   rtol=1e-5, atol=1e-6)


def test_size_deltas_are_clamped_at_max_log_size_delta():
    assert box_ops.MAX_LOG_SIZE_DELTA == pytest.approx(math.log(1000.0 / 16), rel=1e-12)
    box = np.array([[0.5, 0.25, 0.5625, 0.3125]], np.float32)   # 1/16 x 1/16, exact
    limit = box_ops.MAX_LOG_SIZE_DELTA
    for dh in (limit, limit + 1e-3, 10.0, 1e4):
        out = to_np(box_ops.apply_box_deltas(box, np.array([[0.0, 0.0, dh, 0.0]], np.float32)))
        # Height at most 1000/16 times the old one, centre unchanged, width untouched.
        assert np.isfinite(out).all()
        np.testing.assert_allclose(out[0, 2] - out[0, 0], 1000.0 / 16 / 16, rtol=1e-5)
        np.testing.assert_allclose(0.5 * (out[0, 0] + out[0, 2]), 0.53125, rtol=1e-6)
        np.testing.assert_allclose(out[0, [1, 3]], box[0, [1, 3]], atol=1e-7)
    out = to_np(box_ops.apply_box_deltas(box, np.array([[0.0, 0.0, 0.0, 50.0]], np.float32)))
    np.testing.assert_allclose(out[0, 3] - out[0, 1], 1000.0 / 16 / 16, rtol=1e-5)
    np.testing.assert_allclose(out[0, [0, 2]], box[0, [0, 2]], atol=1e-7)
    # Below the limit nothing is clamped (and shrinking is never limited).
    for dh in (limit - 1e-2, 1.0, -2.0):
        out = to_np(box_ops.apply_box_deltas(box, np.array([[0.0, 0.0, dh, dh]], np.float32)))
        np.testing.assert_allclose(out[0, 2] - out[0, 0], np.exp(dh) / 16, rtol=1e-4)
        np.testing.assert_allclose(out[0, 3] - out[0, 1], np.exp(dh) / 16, rtol=1e-4)


def test_overlaps_agrees_with_compute_overlaps():
    rng = np.random.default_rng(2)
    a, b = random_boxes(rng, 7, 100), random_boxes(rng, 5, 100)
    b[0] = a[3]  # one exact match
    b[1] = [500, 500, 510, 510]  # one disjoint box
    iou = to_np(box_ops.overlaps(a, b))
    np.testing.assert_allclose(iou, utils.compute_overlaps(a, b), rtol=1e-5, atol=1e-6)
    assert iou[3, 0] == np.float32(1.0)
    assert not iou[:, 1].any()


def test_overlaps_known_value():
    iou = to_np(box_ops.overlaps(np.array([[0., 0., 10., 10.]], np.float32),
                                 np.array([[5., 5., 15., 15.], [0., 0., 10., 5.]], np.float32)))
    np.testing.assert_allclose(iou, [[25 / 175, 0.5]], rtol=1e-6)


def test_overlaps_of_touching_boxes_is_zero_not_negative():
    # Boxes that share an edge or lie apart: the intersection is clamped at 0 on each axis.
    iou = to_np(box_ops.overlaps(np.array([[0., 0., 1., 1.]], np.float32),
                                 np.array([[1., 0., 2., 1.], [0., 2., 1., 3.],
                                           [2., 2., 3., 3.]], np.float32)))
    np.testing.assert_array_equal(iou, [[0.0, 0.0, 0.0]])


def test_clip_boxes_to_window():
    boxes = np.array([[-0.2, 0.1, 0.5, 1.3], [0.3, 0.3, 0.4, 0.4], [1.2, 1.2, 1.5, 1.5]],
                     np.float32)
    clipped = to_np(box_ops.clip_boxes(boxes, np.array([0.1, 0.0, 0.9, 1.0], np.float32)))
    np.testing.assert_allclose(clipped, [[0.1, 0.1, 0.5, 1.0], [0.3, 0.3, 0.4, 0.4],
                                         [0.9, 1.0, 0.9, 1.0]], rtol=1e-6)


def test_clip_boxes_uses_each_window_coordinate_for_its_own_axis():
    # A window whose four numbers all differ: y1/y2 clip rows, x1/x2 clip columns.
    # Boxes wholly above-left or below-right of it collapse onto its corners.
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.5, 0.5, 0.5, 0.5], [0.0, 0.0, 0.05, 0.05],
                      [0.95, 0.95, 1.0, 1.0]], np.float32)
    clipped = to_np(box_ops.clip_boxes(boxes, np.array([0.1, 0.2, 0.7, 0.8], np.float32)))
    np.testing.assert_allclose(clipped, [[0.1, 0.2, 0.7, 0.8], [0.5, 0.5, 0.5, 0.5],
                                         [0.1, 0.2, 0.1, 0.2], [0.7, 0.8, 0.7, 0.8]],
                               rtol=1e-6)


def test_norm_boxes_agrees_with_numpy():
    boxes = np.array([[0, 0, 64, 48], [10, 5, 20, 30]], np.float32)
    norm = to_np(box_ops.norm_boxes(boxes, np.array([64, 48])))
    np.testing.assert_allclose(norm, utils.norm_boxes(boxes, (64, 48)), rtol=1e-6)
    np.testing.assert_allclose(norm[0], [0.0, 0.0, 1.0, 1.0], atol=1e-7)
    # A tuple shape and leading axes work too.
    batched = to_np(box_ops.norm_boxes(np.stack([boxes, boxes[::-1]]), (64, 48)))
    np.testing.assert_allclose(batched[1], norm[::-1], rtol=1e-6)


def test_box_ops_compute_in_float32_whatever_the_input_dtypes():
    # The network passes int32 pixel gt boxes (norm_boxes), float16 head outputs under mixed
    # precision, and NumPy float64 arrays: every op casts its inputs and returns float32.
    pixels = np.array([[0, 0, 64, 48], [10, 5, 20, 30]], np.int32)
    norm = box_ops.norm_boxes(pixels, np.array([64, 48], np.int32))
    assert ops.convert_to_numpy(norm).dtype == np.float32
    np.testing.assert_allclose(to_np(norm), utils.norm_boxes(pixels, (64, 48)), rtol=1e-6)

    other = np.array([[5, 5, 15, 15], [0, 0, 10, 5]], np.int32)
    for a, b in [(pixels, other), (pixels, other.astype(np.float64)),
                 (pixels.astype(np.float16), other)]:
        iou = box_ops.overlaps(a, b)
        assert ops.convert_to_numpy(iou).dtype == np.float32
        np.testing.assert_allclose(to_np(iou), utils.compute_overlaps(pixels, other),
                                   rtol=1e-6)

    boxes = np.array([[-0.2, 0.1, 0.5, 1.3], [0.25, 0.25, 0.375, 0.5]])  # float64
    window = np.array([0.1, 0.0, 0.9, 1.0])
    for b, w in [(boxes, window), (boxes.astype(np.float16), window.astype(np.float32)),
                 (boxes.astype(np.float32), window.astype(np.float16))]:
        clipped = box_ops.clip_boxes(b, w)
        assert ops.convert_to_numpy(clipped).dtype == np.float32
        np.testing.assert_allclose(to_np(clipped), [[0.1, 0.1, 0.5, 1.0],
                                                    [0.25, 0.25, 0.375, 0.5]], atol=1e-3)

    box = np.array([[0.25, 0.25, 0.45, 0.65]])
    target = np.array([[0.25, 0.25, 0.65, 0.45]])
    deltas = np.array([[0.5, -0.25, np.log(2.0), np.log(0.5)]])
    for b, d in [(box, deltas.astype(np.float16)), (box.astype(np.float16), deltas),
                 (box.astype(np.float32), deltas)]:
        out = box_ops.apply_box_deltas(b, d)
        assert ops.convert_to_numpy(out).dtype == np.float32
        np.testing.assert_allclose(to_np(out), target, atol=2e-3)
    for b, t in [(box, target.astype(np.float16)), (box.astype(np.float16), target),
                 (box.astype(np.float32), target)]:
        out = box_ops.box_refinement(b, t)
        assert ops.convert_to_numpy(out).dtype == np.float32
        np.testing.assert_allclose(to_np(out), deltas, atol=5e-3)


def test_valid_rows():
    boxes = np.array([[0., 0., 0., 0.], [0.1, 0.2, 0.3, 0.4], [0., 0., 0., 0.],
                      [0., 0., 0.5, 0.5], [-0.1, 0., 0.1, 0.]], np.float32)
    np.testing.assert_array_equal(to_np(box_ops.valid_rows(boxes)),
                                  [False, True, False, True, True])
    batched = to_np(box_ops.valid_rows(np.stack([boxes, np.zeros_like(boxes)])))
    assert batched.shape == (2, 5) and batched.dtype == bool
    np.testing.assert_array_equal(batched[1], False)


def test_overlaps_of_small_normalised_boxes():
    # Normalised boxes have areas far below 1: the guard against a zero union must not bite.
    iou = to_np(box_ops.overlaps(np.array([[0.1, 0.1, 0.2, 0.2]], np.float32),
                                 np.array([[0.15, 0.1, 0.25, 0.2], [0.5, 0.5, 0.6, 0.6]],
                                          np.float32)))
    np.testing.assert_allclose(iou, [[1 / 3, 0.0]], rtol=1e-5)


def test_box_ops_run_inside_jax_jit():
    """Under JAX every box op compiles in ``jax.jit`` and gives the eager values."""
    rng = np.random.default_rng(4)
    boxes, gt = random_boxes(rng, 8), random_boxes(rng, 8)
    gt[6:] = 0.0  # two padding rows

    def stage(boxes, gt):
        deltas = box_ops.box_refinement(boxes[:6], gt[:6])
        return (deltas, box_ops.apply_box_deltas(boxes[:6], deltas),
                box_ops.clip_boxes(gt, np.array([0.1, 0.1, 0.9, 0.9], np.float32)),
                box_ops.overlaps(boxes, gt), box_ops.norm_boxes(boxes * 63.0, (64, 64)),
                box_ops.valid_rows(gt))

    expected = [utils.box_refinement(boxes[:6], gt[:6]), gt[:6],
                np.clip(gt, 0.1, 0.9), utils.compute_overlaps(boxes, gt),
                utils.norm_boxes(boxes * 63.0, (64, 64)), [True] * 6 + [False] * 2]
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        outputs = jax.jit(stage)(boxes, gt)
        assert all(isinstance(o, jax.Array) for o in outputs)
    else:
        outputs = stage(boxes, gt)
    for out, want in zip(outputs, expected):
        np.testing.assert_allclose(to_np(out), np.asarray(want), rtol=1e-5, atol=1e-5)
