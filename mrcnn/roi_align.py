"""Pyramid ROIAlign: crop each ROI from the pyramid level that suits its size."""
from __future__ import annotations

import tensorflow as tf


def roi_levels(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """Pyramid level (2..5) of each normalised box, by the FPN paper's rule (224 px -> P4)."""
    y1, x1, y2, x2 = tf.split(boxes, 4, axis=1)
    h = y2 - y1
    w = x2 - x1
    image_area = tf.cast(image_shape[0] * image_shape[1], tf.float32)
    level = tf.math.log(tf.sqrt(h * w) / (224.0 / tf.sqrt(image_area)) + 1e-12) / tf.math.log(2.0)
    level = tf.minimum(5, tf.maximum(2, 4 + tf.cast(tf.round(level), tf.int32)))
    return tf.squeeze(level, 1)


def pyramid_roi_align(boxes: tf.Tensor, box_indices: tf.Tensor, feature_maps: list[tf.Tensor],
                      pool_size: int, image_shape: tf.Tensor) -> tf.Tensor:
    """Crop and resize ROIs.

    boxes [N, 4] normalised, box_indices [N] (which image of the batch), feature_maps [P2..P5]
    -> [N, pool_size, pool_size, channels], in the order of ``boxes``.
    """
    boxes = tf.stop_gradient(tf.cast(boxes, tf.float32))
    box_indices = tf.stop_gradient(tf.cast(box_indices, tf.int32))
    levels = roi_levels(boxes, image_shape)
    pooled, order = [], []
    for i, level in enumerate(range(2, 6)):
        ix = tf.where(tf.equal(levels, level))[:, 0]
        order.append(ix)
        feature = feature_maps[i]
        crops = tf.image.crop_and_resize(tf.cast(feature, tf.float32), tf.gather(boxes, ix),
                                         tf.gather(box_indices, ix), [pool_size, pool_size],
                                         method="bilinear")
        pooled.append(tf.cast(crops, feature.dtype))
    pooled = tf.concat(pooled, axis=0)
    order = tf.concat(order, axis=0)
    # Undo the grouping by level: position k of the output is box k.
    inverse = tf.math.invert_permutation(tf.cast(order, tf.int32))
    return tf.gather(pooled, inverse)
