"""Mask IoU, computed one way: exact pixel counts, then one float64 division.

Two inputs reach it: stacks of masks [H, W, N] (:func:`mask_iou`, which may overlap: raw
detections, test-time-augmentation runs) and label images, whose counts ``nucleus.scoring.metric``
takes from one histogram because that is O(pixels) rather than O(pixels x N). Both end in
:func:`iou_from_counts`, so an IoU of the same two masks is the same double wherever it is
computed, and the metric's strict "IoU > t" decides alike everywhere.
Imports only NumPy, so the metric can use it without loading the model code.
"""
from __future__ import annotations

import numpy as np

_FLOAT32_EXACT = 1 << 24
"""Counts up to 2**24 are whole numbers in float32, so a float32 product counts exactly."""


def iou_from_counts(intersection: np.ndarray, area1: np.ndarray,
                    area2: np.ndarray) -> np.ndarray:
    """IoU [N1, N2] in float64 from pixel counts: intersections [N1, N2] and areas [N1], [N2].

    Counts are whole numbers, so each IoU is the double nearest the exact ratio. A pair with
    no pixel in either mask has IoU 0.
    """
    intersection = np.asarray(intersection, dtype=np.float64)
    union = (np.asarray(area1, dtype=np.float64)[:, None]
             + np.asarray(area2, dtype=np.float64)[None, :] - intersection)
    return np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)


def mask_iou(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """Pairwise IoU [N1, N2] (float64) of two bool stacks [H, W, N1] and [H, W, N2].

    Masks may overlap one another and may be empty. Counts come from one matrix product of the
    flattened stacks, in float32 where that is exact (up to 2**24 pixels), else float64.
    """
    masks1, masks2 = np.asarray(masks1), np.asarray(masks2)
    pixels = int(np.prod(masks1.shape[:-1]))
    dtype = np.float32 if pixels <= _FLOAT32_EXACT else np.float64
    m1 = masks1.reshape(pixels, masks1.shape[-1]).astype(dtype)
    m2 = masks2.reshape(int(np.prod(masks2.shape[:-1])), masks2.shape[-1]).astype(dtype)
    return iou_from_counts(m1.T @ m2, m1.sum(axis=0), m2.sum(axis=0))
