"""Mask boundaries moved out to where each nucleus's own brightness falls to half.

Mask R-CNN draws a mask from a 28 x 28 grid inside a box, and on images unlike its training set
its masks come out smaller than the nuclei (on the labelled half of stage-1 test the matched
masks covered 0.87 of the labelled area on fluorescence images, 0.74 on colour ones; on ``val``
1.01). This stage grows each mask by up to ``reach`` pixels into the background around it,
keeping the pixels brighter than half-way between the nucleus and its local background (its
"half maximum", the usual edge of a blurred spot), so that a boundary follows the image rather
than the mask grid. A mask never shrinks, never takes a pixel of another nucleus (a pixel two
nuclei could both take stays background), and nuclei are never added or removed.

Works on a label image and the prepared image the model saw (uint8, dark background:
:func:`nucleus.formats.image_io.prepare_image`); the detectors call it on every image or tile
(``MASK_GROWTH_REACH``; 0 turns it off).
"""
from __future__ import annotations

import numpy as np

LEVEL = 0.5
"""Where between the local background (0) and the nucleus (1) the boundary goes: half maximum."""
RING = 4
"""Width (px) of the band beyond ``reach`` whose darker pixels give a nucleus's background."""
BACKGROUND_PERCENTILE = 20
"""The background level: this percentile of the band (neighbours' dim edges lie above it)."""
MIN_CONTRAST = 5.0
"""Grey levels a nucleus must stand above its background for its edge to be looked for."""
MIN_RING = 5
"""Pixels the band needs (a nucleus packed among others keeps its mask as it is)."""


def _quantile(values: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear interpolation) by a partial sort: the same number,
    without NumPy's per-call overhead, which here is most of the time of a small nucleus."""
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    parted = np.partition(values, (low, high))
    return float(parted[low] + (parted[high] - parted[low]) * (position - low))


def _grey(patch: np.ndarray) -> np.ndarray:
    """float32 [h, w]: the mean of the channels (the value ``mean(axis=2, dtype=float32)``
    gives, at a fraction of its cost on small patches)."""
    if patch.ndim == 2:
        return patch.astype(np.float32)
    total = patch[..., 0].astype(np.float32)
    for channel in range(1, patch.shape[2]):
        total += patch[..., channel]
    return total / np.float32(patch.shape[2])


def _disk(radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return (yy * yy + xx * xx <= radius * radius).astype(np.uint8)


def grow_to_half_maximum(labels: np.ndarray, image: np.ndarray, reach: int = 2) -> np.ndarray:
    """``labels`` (int [H, W], 0 background) with each nucleus grown by up to ``reach`` px into
    background pixels brighter than its half maximum; a new array, ``labels`` is not changed.

    ``image``: [H, W] or [H, W, C] with a dark background (channels are averaged). A background
    pixel two nuclei both reach stays background, so the result does not depend on the order of
    the labels (nor on which tile of a big image a nucleus was found in).
    """
    from scipy import ndimage as ndi

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be [H, W], got shape {labels.shape}")
    if image.shape[:2] != labels.shape:
        raise ValueError(f"image {image.shape[:2]} and labels {labels.shape} differ in size")
    out = labels.copy()
    if reach <= 0 or not labels.any():
        return out
    boxes = [(index + 1, found[0].start, found[1].start, found[0].stop, found[1].stop)
             for index, found in enumerate(ndi.find_objects(labels)) if found is not None]
    _grow(out, image, reach, boxes)
    return out


def _grow(labels: np.ndarray, image: np.ndarray, reach: int,
          boxes: list[tuple[int, int, int, int, int]]) -> None:
    """:func:`grow_to_half_maximum` in place, the nuclei given as (label, y0, x0, y1, x1) with
    their boxes: every nucleus is measured on ``labels`` as it came, then all are grown."""
    import cv2

    near, far = _disk(reach), _disk(reach + RING)
    margin = reach + RING
    height, width = labels.shape
    claims = np.zeros(labels.shape, np.uint8)
    grown_by: list[tuple[int, slice, slice, np.ndarray]] = []
    for label, y0, x0, y1, x1 in boxes:
        rows = slice(max(y0 - margin, 0), min(y1 + margin, height))
        cols = slice(max(x0 - margin, 0), min(x1 + margin, width))
        local = labels[rows, cols]
        own = (local == label).view(np.uint8)
        background_here = local == 0
        zone = cv2.dilate(own, near).view(bool) & background_here
        ring = cv2.dilate(own, far).view(bool) & background_here & ~zone
        patch = _grey(image[rows, cols])
        around = patch[ring]
        if len(around) < MIN_RING:
            continue
        inside = _quantile(patch[own.view(bool)], 0.5)
        background = _quantile(around, BACKGROUND_PERCENTILE / 100)
        if inside < background + MIN_CONTRAST:
            continue
        grown = zone & (patch > background + LEVEL * (inside - background))
        if grown.any():
            claims[rows, cols] += grown
            grown_by.append((label, rows, cols, grown))
    for label, rows, cols, grown in grown_by:
        labels[rows, cols][grown & (claims[rows, cols] == 1)] = label


def grow_crops(boxes: np.ndarray, masks: list, image: np.ndarray,
               reach: int = 2) -> tuple[np.ndarray, list]:
    """:func:`grow_to_half_maximum` for disjoint nuclei given as boxes int [N, 4] (y0, x0, y1,
    x1 in ``image``) and masks cropped to them: the boxes widened by ``reach`` on each side
    (within the image, so their centres stay put) and the grown masks cropped to those."""
    boxes = np.asarray(boxes, dtype=np.int64).reshape(-1, 4)
    if reach <= 0 or len(boxes) == 0:
        return boxes, list(masks)
    height, width = image.shape[:2]
    grown = np.zeros((height, width), np.int32)
    for i, ((y0, x0, y1, x1), mask) in enumerate(zip(boxes, masks)):
        grown[y0:y1, x0:x1][mask] = i + 1
    _grow(grown, image, reach, [(i + 1, *box) for i, box in enumerate(boxes.tolist())])
    wide = np.stack([np.maximum(boxes[:, 0] - reach, 0), np.maximum(boxes[:, 1] - reach, 0),
                     np.minimum(boxes[:, 2] + reach, height),
                     np.minimum(boxes[:, 3] + reach, width)], axis=1)
    crops = [grown[y0:y1, x0:x1] == i + 1 for i, (y0, x0, y1, x1) in enumerate(wide)]
    return wide, crops
