"""Box arithmetic on tensors of any Keras backend (normalised (y1, x1, y2, x2) coordinates).

Every function takes boxes [..., 4] with any leading axes, so the same code serves one image
and a batch. One box coder (:func:`box_refinement` / :func:`apply_box_deltas`) is used by the
RPN targets (through :mod:`mrcnn.utils`, on numpy), the proposals, the detection targets and
detection.
"""
from __future__ import annotations

import math

from keras import ops

#: Largest log size change a delta may ask for: exp() of more overflows float16/bfloat16 boxes
#: and turns an untrained network's first proposals into infinities (1000 / 16, as Detectron).
MAX_LOG_SIZE_DELTA = math.log(1000.0 / 16)


def apply_box_deltas(boxes, deltas):
    """Shift and scale boxes [..., 4] by deltas [..., (dy, dx, log dh, log dw)]."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    deltas = ops.convert_to_tensor(deltas, "float32")
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    center_y = boxes[..., 0] + 0.5 * height + deltas[..., 0] * height
    center_x = boxes[..., 1] + 0.5 * width + deltas[..., 1] * width
    height = height * ops.exp(ops.minimum(deltas[..., 2], MAX_LOG_SIZE_DELTA))
    width = width * ops.exp(ops.minimum(deltas[..., 3], MAX_LOG_SIZE_DELTA))
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return ops.stack([y1, x1, y1 + height, x1 + width], axis=-1)


def clip_boxes(boxes, window):
    """Clip boxes [..., 4] to ``window`` (y1, x1, y2, x2)."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    window = ops.convert_to_tensor(window, "float32")
    low = ops.stack([window[0], window[1], window[0], window[1]])
    high = ops.stack([window[2], window[3], window[2], window[3]])
    return ops.maximum(ops.minimum(boxes, high), low)


def box_refinement(box, gt_box):
    """Deltas [..., 4] that turn ``box`` [..., 4] into ``gt_box`` [..., 4]."""
    box = ops.convert_to_tensor(box, "float32")
    gt_box = ops.convert_to_tensor(gt_box, "float32")
    height = box[..., 2] - box[..., 0]
    width = box[..., 3] - box[..., 1]
    center_y = box[..., 0] + 0.5 * height
    center_x = box[..., 1] + 0.5 * width
    gt_height = gt_box[..., 2] - gt_box[..., 0]
    gt_width = gt_box[..., 3] - gt_box[..., 1]
    gt_center_y = gt_box[..., 0] + 0.5 * gt_height
    gt_center_x = gt_box[..., 1] + 0.5 * gt_width
    return ops.stack([(gt_center_y - center_y) / height, (gt_center_x - center_x) / width,
                      ops.log(gt_height / height), ops.log(gt_width / width)], axis=-1)


def overlaps(boxes1, boxes2):
    """Pairwise IoU [..., N1, N2] of boxes1 [..., N1, 4] and boxes2 [..., N2, 4]."""
    b1 = ops.expand_dims(ops.convert_to_tensor(boxes1, "float32"), -2)
    b2 = ops.expand_dims(ops.convert_to_tensor(boxes2, "float32"), -3)
    y1 = ops.maximum(b1[..., 0], b2[..., 0])
    x1 = ops.maximum(b1[..., 1], b2[..., 1])
    y2 = ops.minimum(b1[..., 2], b2[..., 2])
    x2 = ops.minimum(b1[..., 3], b2[..., 3])
    intersection = ops.maximum(y2 - y1, 0.0) * ops.maximum(x2 - x1, 0.0)
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    return intersection / ops.maximum(area1 + area2 - intersection, 1e-9)


def norm_boxes(boxes, shape):
    """Pixel boxes [..., 4] to normalised coordinates (see ``mrcnn.utils.norm_boxes``);
    ``shape`` is (height, width)."""
    boxes = ops.convert_to_tensor(boxes, "float32")
    shape = ops.cast(ops.convert_to_tensor(shape), "float32")
    scale = ops.stack([shape[0], shape[1], shape[0], shape[1]]) - 1.0
    shift = ops.convert_to_tensor([0.0, 0.0, 1.0, 1.0], "float32")
    return (boxes - shift) / scale


def valid_rows(boxes):
    """Which rows of boxes [..., N, 4] are real boxes, not all-zero padding: bool [..., N]."""
    return ops.sum(ops.abs(ops.convert_to_tensor(boxes, "float32")), axis=-1) > 0
