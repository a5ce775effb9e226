"""crop_and_resize and non_max_suppression (mrcnn/backend_ops.py) against plain numpy references.

Every path a backend has is checked against the same references: the keras.ops path everywhere,
TensorFlow's fused kernels too on the TensorFlow backend (and both must agree there). The tests
run under every Keras backend, so TensorFlow is imported only inside TensorFlow branches.
"""
from __future__ import annotations

import os

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn import backend_ops

pytestmark = pytest.mark.backends

ON_TF = keras.backend.backend() == "tensorflow"
# generic=True is the keras.ops path; None is the default dispatch (the fused kernels on TF).
PATHS = [True, None]


def to_np(x):
    return np.asarray(ops.convert_to_numpy(x))


# ------------------------------------------------------------------------------- references

def reference_crop_and_resize(image, boxes, box_indices, crop_size):
    """tf.image.crop_and_resize (bilinear, extrapolation 0), one sample at a time."""
    image = np.asarray(image, np.float32)
    _, height, width, channels = image.shape
    ch, cw = crop_size
    out = np.zeros((len(boxes), ch, cw, channels), np.float32)

    def coords(start, end, size, count):
        if count == 1:
            return [0.5 * (start + end) * (size - 1)]
        return [start * (size - 1) + k * (end - start) * (size - 1) / (count - 1)
                for k in range(count)]

    for n, (y1, x1, y2, x2) in enumerate(np.asarray(boxes, np.float64)):
        img = image[box_indices[n]].astype(np.float64)
        for i, y in enumerate(coords(y1, y2, height, ch)):
            for j, x in enumerate(coords(x1, x2, width, cw)):
                if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
                    continue  # extrapolation value 0
                y0, x0 = int(np.floor(y)), int(np.floor(x))
                y_hi, x_hi = int(np.ceil(y)), int(np.ceil(x))
                dy, dx = y - y0, x - x0
                out[n, i, j] = ((1 - dy) * (1 - dx) * img[y0, x0] + (1 - dy) * dx * img[y0, x_hi]
                                + dy * (1 - dx) * img[y_hi, x0] + dy * dx * img[y_hi, x_hi])
    return out


def reference_iou(a, b):
    """IoU of two boxes given in either corner order; 0 when either has no area."""
    ay0, ay1 = sorted(a[::2])
    ax0, ax1 = sorted(a[1::2])
    by0, by1 = sorted(b[::2])
    bx0, bx1 = sorted(b[1::2])
    area_a = (ay1 - ay0) * (ax1 - ax0)
    area_b = (by1 - by0) * (bx1 - bx0)
    if area_a <= 0 or area_b <= 0:
        return 0.0
    inter = max(min(ay1, by1) - max(ay0, by0), 0.0) * max(min(ax1, bx1) - max(ax0, bx0), 0.0)
    return inter / (area_a + area_b - inter)


def reference_nms(boxes, scores, max_output_size, iou_threshold):
    """Greedy NMS of one image: best score first (ties: lower index), -inf never selected."""
    order = sorted((i for i in range(len(scores)) if scores[i] > -np.inf),
                   key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if len(kept) == max_output_size:
            break
        if all(reference_iou(boxes[i], boxes[k]) <= iou_threshold for k in kept):
            kept.append(i)
    return kept


def check_nms(indices, counts, boxes, scores, max_output_size, iou_threshold):
    indices, counts = to_np(indices), to_np(counts)
    assert indices.shape == (len(boxes), max_output_size) and indices.dtype == np.int32
    assert counts.shape == (len(boxes),) and counts.dtype == np.int32
    for b in range(len(boxes)):
        expected = reference_nms(boxes[b].astype(np.float64), scores[b], max_output_size,
                                 iou_threshold)
        assert counts[b] == len(expected)
        assert indices[b, :counts[b]].tolist() == expected
        assert not indices[b, counts[b]:].any()  # padded with 0


# -------------------------------------------------------------------------------- test data

def random_crop_inputs(rng, num_boxes=40, shape=(3, 13, 17, 4)):
    """An image batch and boxes that lie inside, partly or wholly outside, flipped, degenerate."""
    image = rng.normal(size=shape).astype(np.float32)
    boxes = rng.uniform(-0.4, 1.4, size=(num_boxes, 4)).astype(np.float32)  # often flipped
    # The first quarter lie inside the image, corners in the usual order.
    boxes[: num_boxes // 4] = np.sort(rng.uniform(0, 1, size=(num_boxes // 4, 2, 2)),
                                      axis=1).reshape(-1, 4)
    boxes[-1] = [0.0, 0.0, 1.0, 1.0]  # the whole image: corners land exactly on pixels
    boxes[-2] = [0.5, 0.25, 0.5, 0.25]  # a point
    assert (boxes[: num_boxes // 4, 2:] >= boxes[: num_boxes // 4, :2]).all()
    assert (boxes[num_boxes // 4:-2, 2:] < boxes[num_boxes // 4:-2, :2]).any()  # some flipped
    box_indices = rng.integers(0, shape[0], num_boxes).astype(np.int32)
    return image, boxes, box_indices


def random_nms_inputs(rng, batch=3, num_boxes=60):
    """Clustered boxes (so NMS has work), some flipped, some with no area, tied and -inf scores."""
    centres = rng.uniform(0.1, 0.9, size=(batch, num_boxes, 2))
    sizes = rng.uniform(0.02, 0.3, size=(batch, num_boxes, 2))
    centres[:, num_boxes // 2:] = centres[:, :num_boxes - num_boxes // 2] + rng.normal(
        scale=0.02, size=(batch, num_boxes - num_boxes // 2, 2))  # near-duplicates
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], -1)[..., [0, 1, 2, 3]]
    boxes = boxes.astype(np.float32)
    flip = rng.random((batch, num_boxes)) < 0.3
    boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]  # the other corner order
    boxes[:, 3, 2] = boxes[:, 3, 0]  # no area
    boxes[:, 5] = boxes[:, 4]  # an exact duplicate...
    scores = np.round(rng.random((batch, num_boxes)), 1).astype(np.float32)  # many ties
    scores[:, 5] = scores[:, 4]  # ...with the same score: the lower index wins
    scores[:, 7:12] = -np.inf  # invalid entries
    scores[-1] = -np.inf  # an image with no candidates at all
    return boxes, scores


# ---------------------------------------------------------------------------- crop_and_resize

@pytest.mark.parametrize("generic", PATHS)
@pytest.mark.parametrize("crop_size", [(7, 7), (1, 1), (1, 5), (4, 1), (3, 9)])
def test_crop_and_resize_matches_reference(generic, crop_size):
    image, boxes, box_indices = random_crop_inputs(np.random.default_rng(sum(crop_size)))
    crops = backend_ops.crop_and_resize(image, boxes, box_indices, crop_size, generic=generic)
    expected = reference_crop_and_resize(image, boxes, box_indices, crop_size)
    assert tuple(crops.shape) == expected.shape
    assert keras.backend.standardize_dtype(crops.dtype) == "float32"
    np.testing.assert_allclose(to_np(crops), expected, rtol=1e-5, atol=1e-5)
    # Boxes outside the image crop to zeros, not to edge pixels.
    assert (expected == 0).any()


@pytest.mark.parametrize("generic", PATHS)
def test_crop_and_resize_exact_pixels_and_flips(generic):
    """The unit box on an (H, W) image with a (H, W) crop returns the image itself; the flipped
    box returns it flipped."""
    image = np.arange(2 * 5 * 6 * 2, dtype=np.float32).reshape(2, 5, 6, 2)
    boxes = np.array([[0, 0, 1, 1], [1, 1, 0, 0], [1, 0, 0, 1]], np.float32)
    crops = to_np(backend_ops.crop_and_resize(image, boxes, np.array([1, 0, 1]), (5, 6),
                                              generic=generic))
    np.testing.assert_allclose(crops[0], image[1], atol=1e-4)
    np.testing.assert_allclose(crops[1], image[0, ::-1, ::-1], atol=1e-4)
    np.testing.assert_allclose(crops[2], image[1, ::-1], atol=1e-4)


@pytest.mark.parametrize("generic", PATHS)
@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_crop_and_resize_computes_in_float32(generic, dtype):
    image, boxes, box_indices = random_crop_inputs(np.random.default_rng(1), num_boxes=6)
    low = ops.cast(image, dtype)
    crops = backend_ops.crop_and_resize(low, boxes, box_indices, (3, 3), generic=generic)
    assert keras.backend.standardize_dtype(crops.dtype) == "float32"
    expected = reference_crop_and_resize(to_np(ops.cast(low, "float32")), boxes, box_indices,
                                         (3, 3))
    np.testing.assert_allclose(to_np(crops), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("generic", PATHS)
def test_crop_and_resize_no_boxes(generic):
    image = np.ones((2, 8, 8, 3), np.float32)
    crops = backend_ops.crop_and_resize(image, np.zeros((0, 4), np.float32),
                                        np.zeros((0,), np.int32), (7, 7), generic=generic)
    assert tuple(crops.shape) == (0, 7, 7, 3)


def test_crop_and_resize_rejects_bad_crop_size():
    with pytest.raises(ValueError, match="crop_size"):
        backend_ops.crop_and_resize(np.ones((1, 4, 4, 1), np.float32),
                                    np.zeros((1, 4), np.float32), np.zeros(1, np.int32), (0, 3))


def test_crop_and_resize_gradient_reaches_the_image_only():
    """The generic path's gradient w.r.t. the image equals the fused kernel's (TensorFlow) or
    finite differences (other backends: crop_and_resize is linear in the image, so a central
    difference is exact up to rounding); the boxes get none."""
    rng = np.random.default_rng(3)
    image, boxes, box_indices = random_crop_inputs(rng, num_boxes=12, shape=(2, 6, 7, 3))
    weights = rng.normal(size=(12, 4, 5, 3)).astype(np.float32)

    def loss(img, bxs, generic):
        crops = backend_ops.crop_and_resize(img, bxs, box_indices, (4, 5), generic=generic)
        return ops.sum(crops * weights)

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        grads = {}
        for generic in (True, False):
            img, bxs = tf.Variable(image), tf.Variable(boxes)
            with tf.GradientTape() as tape:
                value = loss(img, bxs, generic)
            grads[generic] = tape.gradient(value, [img, bxs])
            assert grads[generic][1] is None  # no gradient to the boxes
        np.testing.assert_allclose(grads[True][0].numpy(), grads[False][0].numpy(),
                                   rtol=1e-5, atol=1e-5)
        assert np.abs(grads[True][0].numpy()).sum() > 0
        return
    assert backend == "jax", f"no gradient check written for backend {backend!r}"
    import jax

    grad_image, grad_boxes = jax.grad(lambda i, b: loss(i, b, True), argnums=(0, 1))(image, boxes)
    assert not np.asarray(grad_boxes).any()
    grad_image = np.asarray(grad_image)
    assert np.abs(grad_image).sum() > 0
    flat_grad = grad_image.reshape(-1)
    for k in rng.choice(image.size, size=40, replace=False):
        step = np.zeros(image.size, np.float32)
        step[k] = 0.5
        step = step.reshape(image.shape)
        numeric = (float(loss(image + step, boxes, True))
                   - float(loss(image - step, boxes, True))) / 1.0
        assert numeric == pytest.approx(flat_grad[k], abs=2e-3)


# ------------------------------------------------------------------------ non_max_suppression

@pytest.mark.parametrize("generic", PATHS)
@pytest.mark.parametrize("iou_threshold", [0.0, 0.3, 0.7, 1.0])
@pytest.mark.parametrize("max_output_size", [1, 10, 100])
def test_nms_matches_reference(generic, iou_threshold, max_output_size):
    boxes, scores = random_nms_inputs(np.random.default_rng(max_output_size))
    indices, counts = backend_ops.non_max_suppression(boxes, scores, max_output_size,
                                                      iou_threshold, generic=generic)
    check_nms(indices, counts, boxes, scores, max_output_size, iou_threshold)
    counts = to_np(counts)
    assert counts[-1] == 0  # the image with only -inf scores selects nothing
    if max_output_size == 100 and iou_threshold == 1.0:
        # More slots than candidates, and no IoU exceeds 1: every valid box is kept.
        assert counts[:-1].tolist() == [60 - 5, 60 - 5]


@pytest.mark.parametrize("generic", PATHS)
def test_nms_ties_and_duplicates(generic):
    """Equal scores go to the lower index; an exact duplicate is suppressed unless the threshold
    is 1 (IoU 1 is not > 1); a box with no area suppresses nothing and is never suppressed."""
    boxes = np.array([[[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [0.5, 0.5, 0.5, 0.9],
                       [0.5, 0.5, 0.5, 0.9]]], np.float32)
    scores = np.array([[0.5, 0.5, 0.9, 0.9, 0.2]], np.float32)
    indices, counts = backend_ops.non_max_suppression(boxes, scores, 5, 0.5, generic=generic)
    assert to_np(counts).tolist() == [3]
    assert to_np(indices).tolist() == [[2, 3, 4, 0, 0]]
    indices, counts = backend_ops.non_max_suppression(boxes, scores, 5, 1.0, generic=generic)
    assert to_np(indices).tolist() == [[2, 3, 0, 1, 4]] and to_np(counts).tolist() == [5]


@pytest.mark.parametrize("generic", PATHS)
@pytest.mark.parametrize("num_boxes,max_output_size", [(0, 4), (5, 0), (0, 0)])
def test_nms_empty(generic, num_boxes, max_output_size):
    boxes = np.zeros((2, num_boxes, 4), np.float32)
    scores = np.zeros((2, num_boxes), np.float32)
    indices, counts = backend_ops.non_max_suppression(boxes, scores, max_output_size, 0.5,
                                                      generic=generic)
    assert to_np(indices).shape == (2, max_output_size) and not to_np(indices).any()
    assert to_np(counts).tolist() == [0, 0]


@pytest.mark.parametrize("bad", [-0.1, 1.5])
def test_nms_rejects_threshold_outside_0_1(bad):
    with pytest.raises(ValueError, match="iou_threshold"):
        backend_ops.non_max_suppression(np.zeros((1, 2, 4), np.float32),
                                        np.zeros((1, 2), np.float32), 2, bad)


# ----------------------------------------------------------------------------- dispatch, jit

def test_dispatch():
    """The default takes the fused kernels on TensorFlow only; generic=False elsewhere is an
    error rather than a silent fallback."""
    assert backend_ops.uses_fused_kernels() == ON_TF
    assert not backend_ops.uses_fused_kernels(True)
    if ON_TF:
        assert backend_ops.uses_fused_kernels(False)
    else:
        with pytest.raises(ValueError, match="TensorFlow"):
            backend_ops.uses_fused_kernels(False)
        with pytest.raises(ValueError, match="TensorFlow"):
            backend_ops.non_max_suppression(np.zeros((1, 2, 4), np.float32),
                                            np.zeros((1, 2), np.float32), 2, 0.5, generic=False)


def test_fused_and_generic_paths_agree():
    """On TensorFlow the fused kernels and the keras.ops path give the same numbers (NMS: the
    same indices); elsewhere the default is the keras.ops path itself."""
    rng = np.random.default_rng(7)
    image, boxes, box_indices = random_crop_inputs(rng, num_boxes=64, shape=(2, 16, 16, 8))
    crops = {g: to_np(backend_ops.crop_and_resize(image, boxes, box_indices, (7, 7), generic=g))
             for g in PATHS}
    np.testing.assert_allclose(crops[True], crops[None], rtol=1e-6, atol=1e-6)
    nms_boxes, scores = random_nms_inputs(rng, batch=4, num_boxes=300)
    kept = {g: backend_ops.non_max_suppression(nms_boxes, scores, 50, 0.5, generic=g)
            for g in PATHS}
    np.testing.assert_array_equal(to_np(kept[True][0]), to_np(kept[None][0]))
    np.testing.assert_array_equal(to_np(kept[True][1]), to_np(kept[None][1]))


def test_compiled():
    """Both operations compile: under jax.jit (JAX) or tf.function (TensorFlow, also with an
    unknown batch size), and still match the references."""
    rng = np.random.default_rng(11)
    image, boxes, box_indices = random_crop_inputs(rng, num_boxes=20)
    nms_boxes, scores = random_nms_inputs(rng, batch=3, num_boxes=80)
    expected_crops = reference_crop_and_resize(image, boxes, box_indices, (5, 5))
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        crop = jax.jit(lambda i, b, k: backend_ops.crop_and_resize(i, b, k, (5, 5)))
        nms = jax.jit(lambda b, s: backend_ops.non_max_suppression(b, s, 30, 0.6))
        variants = [(crop, nms)]
    elif backend == "tensorflow":
        import tensorflow as tf

        variants = []
        for generic in PATHS:
            crop = tf.function(lambda i, b, k, g=generic: backend_ops.crop_and_resize(
                i, b, k, (5, 5), generic=g), input_signature=[
                tf.TensorSpec([None, 13, 17, 4]), tf.TensorSpec([None, 4]),
                tf.TensorSpec([None], tf.int32)])
            nms = tf.function(lambda b, s, g=generic: backend_ops.non_max_suppression(
                b, s, 30, 0.6, generic=g), input_signature=[
                tf.TensorSpec([None, 80, 4]), tf.TensorSpec([None, 80])])
            variants.append((crop, nms))
    else:
        raise AssertionError(f"no compiled check written for backend {backend!r}")
    for crop, nms in variants:
        np.testing.assert_allclose(to_np(crop(image, boxes, box_indices)), expected_crops,
                                   rtol=1e-5, atol=1e-5)
        indices, counts = nms(nms_boxes, scores)
        check_nms(indices, counts, nms_boxes, scores, 30, 0.6)


def test_jax_backend_never_imports_tensorflow():
    """The GPU machines have no TensorFlow: under JAX both operations run without importing it."""
    import subprocess
    import sys

    code = ("import sys, numpy as np\n"
            "from mrcnn import backend_ops as b\n"
            "b.crop_and_resize(np.ones((1, 4, 4, 1), 'float32'), np.zeros((1, 4), 'float32'),"
            " np.zeros(1, 'int32'), (2, 2))\n"
            "b.non_max_suppression(np.zeros((1, 3, 4), 'float32'), np.zeros((1, 3), 'float32'),"
            " 2, 0.5)\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="jax",
               PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
