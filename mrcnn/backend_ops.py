"""The two operations for which TensorFlow has a fused CPU kernel: ROI cropping and NMS.

Each is written once in ``keras.ops`` (static shapes, so it runs under TensorFlow, JAX and
PyTorch, and compiles under ``jax.jit`` and ``tf.function``) and, on the TensorFlow backend,
dispatched by default to ``tf.image.crop_and_resize`` and TensorFlow's NMS kernel, which are
faster there. Both paths follow TensorFlow's semantics to the rounding, so they give the same
results; ``generic=True`` forces the ``keras.ops`` path (tests compare the two).

TensorFlow is imported only inside the TensorFlow branch: under JAX or PyTorch it may be absent.
"""
from __future__ import annotations

import keras
import numpy as np
from keras import ops

__all__ = ["crop_and_resize", "non_max_suppression", "uses_fused_kernels"]


def uses_fused_kernels(generic: bool | None = None) -> bool:
    """Whether a call with this ``generic`` argument takes TensorFlow's fused kernels.

    ``None``: on the TensorFlow backend only; ``True``: never; ``False``: always (an error
    on any other backend, which has no such kernels).
    """
    on_tf = keras.backend.backend() == "tensorflow"
    if generic is None:
        return on_tf
    if not generic and not on_tf:
        raise ValueError("generic=False needs the TensorFlow backend (fused kernels); "
                         f"the Keras backend is {keras.backend.backend()!r}")
    return not generic


# --------------------------------------------------------------------------- crop_and_resize

def crop_and_resize(image, boxes, box_indices, crop_size: tuple[int, int],
                    generic: bool | None = None):
    """Bilinear crops of normalised boxes, as ``tf.image.crop_and_resize`` (extrapolation 0).

    image [B, H, W, C] (any float dtype; computed and returned in float32), boxes [N, 4]
    normalised (y1, x1, y2, x2), box_indices [N] int (which image) -> [N, ch, cw, C].
    Crop row i samples y = y1 * (H - 1) + i * (y2 - y1) * (H - 1) / (ch - 1) (the centre
    0.5 * (y1 + y2) * (H - 1) when ch == 1), columns likewise; sample points outside
    [0, H - 1] x [0, W - 1] give 0, flipped boxes give flipped crops, N may be 0.
    Gradients flow to ``image`` only: the boxes are treated as constants.
    """
    ch, cw = (int(s) for s in crop_size)
    if ch < 1 or cw < 1:
        raise ValueError(f"crop_size must be two positive integers, got {crop_size!r}")
    if uses_fused_kernels(generic):
        import tensorflow as tf   # here: the TensorFlow backend only (module docstring)

        return tf.image.crop_and_resize(
            tf.cast(image, tf.float32), tf.stop_gradient(tf.cast(boxes, tf.float32)),
            tf.stop_gradient(tf.cast(box_indices, tf.int32)), (ch, cw),
            method="bilinear", extrapolation_value=0.0)
    return _crop_and_resize_generic(image, boxes, box_indices, ch, cw)


def _sample_axis(start, end, size: int, out: int):
    """Sample coordinates [N, out] along one axis of length ``size`` (pixels), the floor and
    ceil neighbours clipped into range, the interpolation weight, and which points are inside.

    The arithmetic is TensorFlow's kernel's, operation for operation, so both paths round alike.
    """
    last = float(size - 1)
    if out > 1:
        step = (end - start) * last / float(out - 1)
        pos = (ops.expand_dims(start * last, 1)
               + ops.expand_dims(ops.arange(out, dtype="float32"), 0) * ops.expand_dims(step, 1))
    else:
        pos = ops.expand_dims(0.5 * (start + end) * last, 1)
    inside = ops.logical_and(pos >= 0.0, pos <= last)
    low = ops.floor(pos)
    lerp = pos - low
    high = ops.ceil(pos)
    low = ops.clip(ops.cast(low, "int32"), 0, size - 1)
    high = ops.clip(ops.cast(high, "int32"), 0, size - 1)
    return low, high, lerp, inside


def _crop_and_resize_generic(image, boxes, box_indices, ch: int, cw: int):
    """crop_and_resize as a gather of four corners from the flattened image [B * H * W, C]."""
    image = ops.cast(image, "float32")
    _, height, width, channels = image.shape
    if height is None or width is None or channels is None:
        raise ValueError(f"crop_and_resize needs static H, W and C, got image shape {image.shape}")
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    box_indices = ops.stop_gradient(ops.cast(box_indices, "int32"))
    top, bottom, y_lerp, y_in = _sample_axis(boxes[:, 0], boxes[:, 2], height, ch)
    left, right, x_lerp, x_in = _sample_axis(boxes[:, 1], boxes[:, 3], width, cw)

    # One gather for all four corners: its gradient is one scatter-add, which XLA runs about
    # four times faster on the CPU than four separate ones.
    flat = ops.reshape(image, [-1, channels])
    base = ops.reshape(box_indices * (height * width), [1, -1, 1, 1])
    rows = ops.stack([top, top, bottom, bottom]) * width  # [4, N, ch]
    cols = ops.stack([left, right, left, right])  # [4, N, cw]
    index = base + ops.expand_dims(rows, 3) + ops.expand_dims(cols, 2)  # [4, N, ch, cw]
    corners = ops.reshape(ops.take(flat, ops.reshape(index, [-1]), axis=0),
                          [4, -1, ch, cw, channels])
    top_left, top_right, bottom_left, bottom_right = ops.unstack(corners, 4, axis=0)

    x_lerp = ops.reshape(x_lerp, [-1, 1, cw, 1])
    y_lerp = ops.reshape(y_lerp, [-1, ch, 1, 1])
    upper = top_left + (top_right - top_left) * x_lerp
    lower = bottom_left + (bottom_right - bottom_left) * x_lerp
    crops = upper + (lower - upper) * y_lerp
    inside = ops.logical_and(ops.expand_dims(y_in, 2), ops.expand_dims(x_in, 1))
    return ops.where(ops.expand_dims(inside, 3), crops, 0.0)


# ----------------------------------------------------------------------- non_max_suppression

def non_max_suppression(boxes, scores, max_output_size: int, iou_threshold: float,
                        generic: bool | None = None):
    """Greedy NMS as ``tf.image.non_max_suppression``, for a batch, padded to a fixed size.

    boxes [B, N, 4] (y1, x1, y2, x2; either corner order), scores [B, N] float32, where -inf
    marks an entry that is never selected. Highest score first (ties: lower index first); a
    box is dropped when its IoU with a selected box is > iou_threshold (IoU is 0 when either
    box has no area). Returns (indices [B, max_output_size] int32, 0 after the valid ones;
    counts [B] int32, the number of valid indices of each image).
    """
    max_output_size = int(max_output_size)
    iou_threshold = float(iou_threshold)
    if max_output_size < 0:
        raise ValueError(f"max_output_size must be >= 0, got {max_output_size}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if uses_fused_kernels(generic):
        return _nms_fused(boxes, scores, max_output_size, iou_threshold)
    return _nms_generic(boxes, scores, max_output_size, iou_threshold)


def _nms_fused(boxes, scores, max_output_size: int, iou_threshold: float):
    """TensorFlow's NMS kernel (NonMaxSuppressionV4, which pads itself) image by image."""
    import tensorflow as tf   # here: the TensorFlow backend only (module docstring)

    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)

    def one(pair):
        indices, count = tf.raw_ops.NonMaxSuppressionV4(
            boxes=pair[0], scores=pair[1], max_output_size=max_output_size,
            iou_threshold=iou_threshold, score_threshold=float("-inf"),
            pad_to_max_output_size=True)
        return tf.ensure_shape(indices, [max_output_size]), count

    batch = boxes.shape[0]
    if batch is not None:  # a static batch: a Python loop is cheaper than map_fn's while loop
        results = [one((boxes[b], scores[b])) for b in range(batch)]
        if not results:
            return tf.zeros([0, max_output_size], tf.int32), tf.zeros([0], tf.int32)
        return (tf.stack([r[0] for r in results]), tf.stack([r[1] for r in results]))
    return tf.map_fn(one, (boxes, scores), fn_output_signature=(
        tf.TensorSpec([max_output_size], tf.int32), tf.TensorSpec([], tf.int32)))


def _nms_generic(boxes, scores, max_output_size: int, iou_threshold: float):
    """One loop iteration per output slot, all images at once: take each image's best remaining
    box, record it, drop the boxes that overlap it; stop when no image has any left."""
    boxes = ops.cast(boxes, "float32")
    scores = ops.cast(scores, "float32")
    num_boxes = boxes.shape[1]
    if num_boxes is None:
        raise ValueError("non_max_suppression (generic) needs a static number of boxes, got "
                         f"boxes of shape {boxes.shape}")
    batch = ops.shape(scores)[0]
    if num_boxes == 0 or max_output_size == 0:
        return (ops.zeros([batch, max_output_size], "int32"), ops.zeros([batch], "int32"))
    ymin = ops.minimum(boxes[..., 0], boxes[..., 2])
    xmin = ops.minimum(boxes[..., 1], boxes[..., 3])
    ymax = ops.maximum(boxes[..., 0], boxes[..., 2])
    xmax = ops.maximum(boxes[..., 1], boxes[..., 3])
    area = (ymax - ymin) * (xmax - xmin)
    positions = ops.expand_dims(ops.arange(num_boxes, dtype="int32"), 0)  # [1, N]
    slots = ops.expand_dims(ops.arange(max_output_size, dtype="int32"), 0)  # [1, M]
    threshold = np.float32(iou_threshold)
    minus_inf = np.float32(-np.inf)

    def chosen(values, best):  # values[b, best[b]] as [B, 1]
        return ops.take_along_axis(values, best, axis=1)

    def cond(step, remaining, indices, counts):
        return ops.logical_and(step < max_output_size, ops.any(remaining > minus_inf))

    def body(step, remaining, indices, counts):
        top = ops.max(remaining, axis=1, keepdims=True)  # [B, 1]
        # The first position holding the maximum: ties go to the lower index on every backend.
        best = ops.min(ops.where(remaining == top, positions, num_boxes), axis=1, keepdims=True)
        best = ops.minimum(best, num_boxes - 1)
        valid = top > minus_inf  # [B, 1]
        # IoU with the chosen box, as TensorFlow's kernel computes it.
        inter_h = ops.maximum(ops.minimum(ymax, chosen(ymax, best))
                              - ops.maximum(ymin, chosen(ymin, best)), 0.0)
        inter_w = ops.maximum(ops.minimum(xmax, chosen(xmax, best))
                              - ops.maximum(xmin, chosen(xmin, best)), 0.0)
        inter = inter_h * inter_w
        best_area = chosen(area, best)
        # No overlap (which includes either box having no area) is IoU 0, never 0 / 0.
        iou = inter / ops.where(inter > 0.0, best_area + area - inter, 1.0)
        drop = ops.logical_and(valid, ops.logical_or(iou > threshold, positions == best))
        remaining = ops.where(drop, minus_inf, remaining)
        record = ops.logical_and(slots == step, valid)
        indices = ops.where(record, best, indices)
        counts = counts + ops.cast(valid[:, 0], "int32")
        return step + 1, remaining, indices, counts

    start = (ops.convert_to_tensor(0, "int32"), scores,
             ops.zeros([batch, max_output_size], "int32"), ops.zeros([batch], "int32"))
    _, _, indices, counts = ops.while_loop(cond, body, start)
    return indices, counts
