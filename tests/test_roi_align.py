"""mrcnn.roi_align: level choice, constant regions, output order across pyramid levels, and both
ways of cropping (TensorFlow's grouped fused path, the static path of other backends) against a
NumPy reference that picks each box's level and crops it.

NumPy inputs, outputs through ``keras.ops.convert_to_numpy``: runs under TensorFlow and JAX.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn import backend_ops
from mrcnn.roi_align import LEVELS, pyramid_roi_align, roi_levels

pytestmark = pytest.mark.backends

IMAGE = 1024
SIZES = {2: 256, 3: 128, 4: 64, 5: 32}  # P2..P5 of a 1024x1024 image


@pytest.fixture(params=["default", "static"])
def path(request, monkeypatch):
    """'default': what the backend does (TensorFlow: the grouped path with fused kernels);
    'static': the keras.ops path of every other backend, forced on TensorFlow as well."""
    if request.param == "static":
        monkeypatch.setattr(backend_ops, "uses_fused_kernels", lambda generic=None: False)
    return request.param


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def square(y, x, side):
    """A normalised box of ``side`` pixels at pixel (y, x)."""
    return [y / IMAGE, x / IMAGE, (y + side) / IMAGE, (x + side) / IMAGE]


def level_maps(batch=1):
    """Every map holds its level number (plus 100 per batch index) in channel 0."""
    maps = []
    for level, size in SIZES.items():
        m = np.zeros((batch, size, size, 2), np.float32)
        for b in range(batch):
            m[b, ..., 0] = level + 100 * b
            m[b, ..., 1] = -level
        maps.append(m)
    return maps


# ------------------------------------------------------------------------------ reference

def reference_levels(boxes, image_shape):
    """The FPN rule in float64: level 4 for a box of 224 pixels (sqrt of its area), one level
    per factor 2, clipped to 2..5."""
    boxes = np.asarray(boxes, np.float64)
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                   * image_shape[0] * image_shape[1])
    return np.clip(4 + np.round(np.log2(side / 224.0)), 2, 5).astype(int), np.log2(side / 224.0)


def reference_crop(feature, box, size):
    """Bilinear samples of one normalised box on one map [H, W, C] (as crop_and_resize:
    corner-aligned sample points, 0 outside the map)."""
    height, width, _ = feature.shape
    y = box[0] * (height - 1) + np.arange(size) * (box[2] - box[0]) * (height - 1) / (size - 1)
    x = box[1] * (width - 1) + np.arange(size) * (box[3] - box[1]) * (width - 1) / (size - 1)
    out = np.zeros((size, size, feature.shape[2]))
    for i, yy in enumerate(y):
        for j, xx in enumerate(x):
            if not (0 <= yy <= height - 1 and 0 <= xx <= width - 1):
                continue
            y0, x0 = int(np.floor(yy)), int(np.floor(xx))
            y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
            dy, dx = yy - y0, xx - x0
            out[i, j] = ((1 - dy) * (1 - dx) * feature[y0, x0] + (1 - dy) * dx * feature[y0, x1]
                         + dy * (1 - dx) * feature[y1, x0] + dy * dx * feature[y1, x1])
    return out


def reference_roi_align(boxes, box_indices, maps, size, image_shape):
    levels, _ = reference_levels(boxes, image_shape)
    return np.stack([reference_crop(maps[level - 2][index].astype(np.float64), box, size)
                     for box, index, level in zip(np.asarray(boxes, np.float64), box_indices,
                                                  levels)])


def random_case(rng, image_shape, count):
    """Boxes of every level (sides 16..700 pixels, log-uniform) inside the image, none whose
    level is a rounding tie, over a batch of two images; random maps P2..P5."""
    boxes = []
    while len(boxes) < count:
        side_y, side_x = np.exp(rng.uniform(np.log(16), np.log(700), 2))
        side_y, side_x = min(side_y, image_shape[0] - 2), min(side_x, image_shape[1] - 2)
        y = rng.uniform(0, image_shape[0] - 1 - side_y)
        x = rng.uniform(0, image_shape[1] - 1 - side_x)
        box = [y / image_shape[0], x / image_shape[1],
               (y + side_y) / image_shape[0], (x + side_x) / image_shape[1]]
        _, raw = reference_levels([box], image_shape)
        if abs(raw[0] - np.floor(raw[0]) - 0.5) > 0.02:
            boxes.append(box)
    boxes = np.array(boxes, np.float32)
    box_indices = rng.integers(0, 2, count).astype(np.int32)
    maps = [rng.normal(size=(2, image_shape[0] // s, image_shape[1] // s, 3)).astype(np.float32)
            for s in (4, 8, 16, 32)]
    return boxes, box_indices, maps


# ---------------------------------------------------------------------------------- tests

def test_roi_levels_follow_the_fpn_rule():
    boxes = np.array([square(0, 0, s) for s in (30, 56, 112, 224, 448, 1000)], np.float32)
    levels = to_np(roi_levels(boxes, np.array([IMAGE, IMAGE])))
    np.testing.assert_array_equal(levels, [2, 2, 3, 4, 5, 5])


def test_roi_levels_use_the_area_of_a_non_square_image():
    # A 224-pixel square on a 512 x 2048 image (the area of a 1024 x 1024 one) is level 4;
    # its normalised size differs along each axis.
    boxes = np.array([[0.0, 0.0, 224 / 512, 224 / 2048], [0.0, 0.0, 112 / 512, 112 / 2048]],
                     np.float32)
    np.testing.assert_array_equal(to_np(roi_levels(boxes, (512, 2048))), [4, 3])
    np.testing.assert_array_equal(to_np(roi_levels(boxes, (256, 1024))), [3, 2])


def test_output_order_is_input_order_across_levels(path):
    sides = [448, 56, 224, 112, 60, 900, 230]
    boxes = np.array([square(10 + i, 20 + i, s) for i, s in enumerate(sides)], np.float32)
    out = to_np(pyramid_roi_align(boxes, np.zeros([len(sides)], np.int32), level_maps(), 7,
                                  np.array([IMAGE, IMAGE])))
    assert out.shape == (len(sides), 7, 7, 2)
    expected = [5, 2, 4, 3, 2, 5, 4]
    np.testing.assert_allclose(out[..., 0], np.array(expected)[:, None, None] * np.ones((7, 7)))
    np.testing.assert_allclose(out[..., 1], -out[..., 0])


def test_box_indices_pick_the_image_of_the_batch(path):
    boxes = np.array([square(0, 0, 224), square(0, 0, 224), square(0, 0, 56)], np.float32)
    out = to_np(pyramid_roi_align(boxes, np.array([1, 0, 1], np.int32), level_maps(batch=2), 3,
                                  np.array([IMAGE, IMAGE])))
    np.testing.assert_allclose(out[:, 1, 1, 0], [104, 4, 102])


def test_box_inside_a_constant_region_returns_the_constant(path):
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(1, s, s, 3)).astype(np.float32) for s in SIZES.values()]
    maps[0][0, 10:31, 20:51, :] = [7.5, -2.0, 0.25]  # P2 cells y 10..30, x 20..50
    # In P2 coordinates (y * 255) the box spans y 11..28 and x 21..38: inside the region.
    box = np.array([[11 / 255, 21 / 255, 28 / 255, 38 / 255]], np.float32)
    assert to_np(roi_levels(box, np.array([IMAGE, IMAGE])))[0] == 2
    out = to_np(pyramid_roi_align(box, np.array([0], np.int32), maps, 14,
                                  np.array([IMAGE, IMAGE])))
    assert out.shape == (1, 14, 14, 3)
    np.testing.assert_allclose(out[0], np.broadcast_to([7.5, -2.0, 0.25], (14, 14, 3)),
                               rtol=1e-6)


def test_no_boxes_gives_an_empty_result(path):
    out = pyramid_roi_align(np.zeros([0, 4], np.float32), np.zeros([0], np.int32), level_maps(),
                            7, np.array([IMAGE, IMAGE]))
    assert tuple(out.shape) == (0, 7, 7, 2)


@pytest.mark.parametrize("image_shape", [(512, 512), (512, 384)])
def test_matches_a_per_box_numpy_reference(path, image_shape):
    rng = np.random.default_rng(sum(image_shape))
    boxes, box_indices, maps = random_case(rng, image_shape, 40)
    levels, _ = reference_levels(boxes, image_shape)
    assert set(levels) == set(LEVELS)  # every level is exercised
    np.testing.assert_array_equal(to_np(roi_levels(boxes, image_shape)), levels)
    out = to_np(pyramid_roi_align(boxes, box_indices, maps, 7, image_shape))
    assert out.shape == (40, 7, 7, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, reference_roi_align(boxes, box_indices, maps, 7, image_shape),
                               rtol=1e-4, atol=1e-4)


def test_output_has_the_dtype_of_the_maps(path):
    rng = np.random.default_rng(5)
    boxes, box_indices, maps = random_case(rng, (256, 256), 12)
    half = [m.astype(np.float16) for m in maps]
    out = to_np(pyramid_roi_align(boxes, box_indices, half, 5, (256, 256)))
    assert out.dtype == np.float16
    expected = reference_roi_align(boxes, box_indices, [m.astype(np.float32) for m in half], 5,
                                   (256, 256))
    np.testing.assert_allclose(out.astype(np.float32), expected, rtol=1e-2, atol=1e-2)


def test_the_two_paths_agree(monkeypatch):
    """The grouped path (TensorFlow's default) and the static path give the same crops; on
    other backends both calls take the static path and must agree trivially with each other
    and with the reference."""
    rng = np.random.default_rng(9)
    boxes, box_indices, maps = random_case(rng, (512, 384), 30)
    default = to_np(pyramid_roi_align(boxes, box_indices, maps, 7, (512, 384)))
    monkeypatch.setattr(backend_ops, "uses_fused_kernels", lambda generic=None: False)
    static = to_np(pyramid_roi_align(boxes, box_indices, maps, 7, (512, 384)))
    np.testing.assert_allclose(static, default, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(static, reference_roi_align(boxes, box_indices, maps, 7,
                                                           (512, 384)), rtol=1e-4, atol=1e-4)


def test_pyramid_roi_align_runs_inside_jax_jit():
    """Under JAX the stage compiles in ``jax.jit`` (static path) and gives the reference."""
    rng = np.random.default_rng(13)
    image_shape = (512, 384)
    boxes, box_indices, maps = random_case(rng, image_shape, 24)

    def stage(boxes, box_indices, *maps):
        return pyramid_roi_align(boxes, box_indices, list(maps), 7, image_shape)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        out = jax.jit(stage)(boxes, box_indices, *maps)
        assert isinstance(out, jax.Array)
    else:
        out = stage(boxes, box_indices, *maps)
    np.testing.assert_allclose(to_np(out), reference_roi_align(boxes, box_indices, maps, 7,
                                                               image_shape),
                               rtol=1e-4, atol=1e-4)
