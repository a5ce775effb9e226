"""mrcnn.roi_align: level choice, constant regions, and output order across pyramid levels."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn.roi_align import pyramid_roi_align, roi_levels

IMAGE = 1024
SIZES = {2: 256, 3: 128, 4: 64, 5: 32}  # P2..P5 of a 1024x1024 image


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
        maps.append(tf.constant(m))
    return maps


def test_roi_levels_follow_the_fpn_rule():
    boxes = tf.constant([square(0, 0, s) for s in (30, 56, 112, 224, 448, 1000)], tf.float32)
    levels = roi_levels(boxes, tf.constant([IMAGE, IMAGE])).numpy()
    np.testing.assert_array_equal(levels, [2, 2, 3, 4, 5, 5])


def test_output_order_is_input_order_across_levels():
    sides = [448, 56, 224, 112, 60, 900, 230]
    boxes = tf.constant([square(10 + i, 20 + i, s) for i, s in enumerate(sides)], tf.float32)
    out = pyramid_roi_align(boxes, tf.zeros([len(sides)], tf.int32), level_maps(), 7,
                            tf.constant([IMAGE, IMAGE])).numpy()
    assert out.shape == (len(sides), 7, 7, 2)
    expected = [5, 2, 4, 3, 2, 5, 4]
    np.testing.assert_allclose(out[..., 0], np.array(expected)[:, None, None] * np.ones((7, 7)))
    np.testing.assert_allclose(out[..., 1], -out[..., 0])


def test_box_indices_pick_the_image_of_the_batch():
    boxes = tf.constant([square(0, 0, 224), square(0, 0, 224), square(0, 0, 56)], tf.float32)
    out = pyramid_roi_align(boxes, tf.constant([1, 0, 1]), level_maps(batch=2), 3,
                            tf.constant([IMAGE, IMAGE])).numpy()
    np.testing.assert_allclose(out[:, 1, 1, 0], [104, 4, 102])


def test_box_inside_a_constant_region_returns_the_constant():
    rng = np.random.default_rng(0)
    maps = [rng.normal(size=(1, s, s, 3)).astype(np.float32) for s in SIZES.values()]
    maps[0][0, 10:31, 20:51, :] = [7.5, -2.0, 0.25]  # P2 cells y 10..30, x 20..50
    # In P2 coordinates (y * 255) the box spans y 11..28 and x 21..38: inside the region.
    box = [11 / 255, 21 / 255, 28 / 255, 38 / 255]
    assert roi_levels(tf.constant([box]), tf.constant([IMAGE, IMAGE])).numpy()[0] == 2
    out = pyramid_roi_align(tf.constant([box]), tf.constant([0]), [tf.constant(m) for m in maps],
                            14, tf.constant([IMAGE, IMAGE])).numpy()
    assert out.shape == (1, 14, 14, 3)
    np.testing.assert_allclose(out[0], np.broadcast_to([7.5, -2.0, 0.25], (14, 14, 3)),
                               rtol=1e-6)


def test_no_boxes_gives_an_empty_result():
    out = pyramid_roi_align(tf.zeros([0, 4]), tf.zeros([0], tf.int32), level_maps(), 7,
                            tf.constant([IMAGE, IMAGE]))
    assert out.shape == (0, 7, 7, 2)
