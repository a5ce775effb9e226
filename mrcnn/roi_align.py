"""Pyramid ROIAlign stage: crop each ROI from the pyramid level that suits its size."""
from __future__ import annotations

import math

from keras import ops

from mrcnn import backend_ops

LEVELS = (2, 3, 4, 5)


def roi_levels(boxes, image_shape):
    """Pyramid level (2..5) of each normalised box [N, 4], by the FPN paper's rule
    (a 224-pixel box -> P4); ``image_shape`` is (height, width)."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    image_shape = ops.cast(ops.convert_to_tensor(image_shape), "float32")
    h = boxes[:, 2] - boxes[:, 0]
    w = boxes[:, 3] - boxes[:, 1]
    image_area = image_shape[0] * image_shape[1]
    level = ops.log(ops.sqrt(h * w) / (224.0 / ops.sqrt(image_area)) + 1e-12) / math.log(2.0)
    level = 4 + ops.cast(ops.round(level), "int32")
    return ops.minimum(5, ops.maximum(2, level))


def pyramid_roi_align(boxes, box_indices, feature_maps: list, pool_size: int, image_shape):
    """Crop and resize ROIs.

    boxes [N, 4] normalised, box_indices [N] (which image of the batch), feature_maps [P2..P5]
    -> [N, pool_size, pool_size, channels] in the dtype of the maps, in the order of ``boxes``.
    """
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    box_indices = ops.stop_gradient(ops.cast(box_indices, "int32"))
    levels = roi_levels(boxes, image_shape)
    size = (pool_size, pool_size)
    dtype = feature_maps[0].dtype
    if backend_ops.uses_fused_kernels():
        return _grouped_by_level(boxes, box_indices, levels, feature_maps, size, dtype)
    # Static shapes: every box is cropped from every level, and its own level's crop is kept.
    pooled = None
    for feature, level in zip(feature_maps, LEVELS):
        crops = backend_ops.crop_and_resize(feature, boxes, box_indices, size)
        mine = ops.reshape(levels == level, [-1, 1, 1, 1])
        pooled = ops.where(mine, crops, 0.0) if pooled is None else ops.where(mine, crops, pooled)
    return ops.cast(pooled, dtype)


def _grouped_by_level(boxes, box_indices, levels, feature_maps, size, dtype):
    """Each box cropped from its own level only (dynamic shapes, TensorFlow's fused kernel):
    a quarter of the cropping work of the static path."""
    pooled, order = [], []
    for feature, level in zip(feature_maps, LEVELS):
        ix = ops.reshape(ops.where(levels == level)[0], [-1])
        order.append(ix)
        pooled.append(backend_ops.crop_and_resize(feature, ops.take(boxes, ix, axis=0),
                                                  ops.take(box_indices, ix, axis=0), size))
    pooled = ops.concatenate(pooled, axis=0)
    order = ops.concatenate(order, axis=0)
    # Undo the grouping by level: position k of the output is box k.
    return ops.cast(ops.take(pooled, ops.argsort(order), axis=0), dtype)
