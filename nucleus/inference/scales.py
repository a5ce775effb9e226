"""Detection at other scales than the image's own: a chosen factor, one chosen per image, or a
vote over several.

A model trained on nuclei of one size range finds nuclei far outside it badly: a tissue section
imaged at 40x has nuclei three times the size of the training set's. Rescaling the image so its
nuclei match the training sizes helps; so can voting over a few scales, as the flips of
:mod:`nucleus.inference.tta` do over orientations.

Every function takes ``detect(image) -> (masks [H, W, N], scores [N])`` on a uint8 RGB image
(any detector) and returns masks of the *original* image's size.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from mrcnn.utils import median_diameter
from nucleus.inference.overlap import eliminate_overlaps
from nucleus.inference.tta import merge_runs

Detect = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

TRAINING_DIAMETER = 18.0
"""Median equivalent diameter (pixels) of the nuclei of DSB stage-1 ``train`` (150 random
images, 6,930 nuclei; 10th-90th percentiles 8.5-33), the size the shipped model knows best."""

AUTO_RANGE = (0.25, 4.0)
"""The smallest and largest factor :func:`choose_scale` picks."""

AUTO_TOLERANCE = 1.5
""":func:`choose_scale` keeps an image as it is when its nuclei are within this factor of
:data:`TRAINING_DIAMETER`."""


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` (uint8 [H, W, C]) resized by ``scale`` (anti-aliased when shrinking)."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if scale == 1:
        return image
    height, width = image.shape[:2]
    shape = (max(1, round(height * scale)), max(1, round(width * scale))) + image.shape[2:]
    out = resize(image, shape, order=1, anti_aliasing=scale < 1, preserve_range=True)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def restore_masks(masks: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Masks [h, w, N] of a rescaled image, resized back to ``shape`` (H, W) by bilinear
    interpolation and a 0.5 threshold, each mask computed only around its own pixels.

    The pixels are those of ``skimage.transform.resize(mask, shape, order=1) >= 0.5`` on each
    whole mask (SciPy's ``zoom`` with ``grid_mode``: output pixel centres mapped onto input pixel
    centres, mirrored at the edges), but the work follows the nuclei's areas, not the image's
    area times their number: resizing 112 masks of a 260 x 174 image back to 520 x 348 took
    1.9 s whole and 0.03 s crop by crop. A mask empty at the original size stays empty (callers
    drop those)."""
    height, width, count = masks.shape
    if (height, width) == tuple(shape):
        return masks.astype(bool)
    out_height, out_width = shape
    step_y, step_x = height / out_height, width / out_width
    margin_y, margin_x = int(np.ceil(step_y)) + 3, int(np.ceil(step_x)) + 3
    stack = np.ascontiguousarray(np.moveaxis(masks, -1, 0))
    out = np.zeros((count, out_height, out_width), bool)
    for k in range(count):
        rows = np.flatnonzero(stack[k].any(axis=1))
        if not len(rows):
            continue
        cols = np.flatnonzero(stack[k].any(axis=0))
        y0, y1 = _support(rows[0], rows[-1] + 1, step_y, out_height)
        x0, x1 = _support(cols[0], cols[-1] + 1, step_x, out_width)
        # the input crop: the mask's box and a margin, so that every output pixel in
        # [y0, y1) x [x0, x1) interpolates between pixels inside it, mirrored only where the
        # crop reaches the image's edge, as the whole image is
        top, left = max(0, rows[0] - margin_y), max(0, cols[0] - margin_x)
        crop = stack[k, top:min(height, rows[-1] + 1 + margin_y),
                     left:min(width, cols[-1] + 1 + margin_x)]
        part = ndimage.affine_transform(
            crop.astype(np.float32), [step_y, step_x],
            offset=[(y0 + 0.5) * step_y - 0.5 - top, (x0 + 0.5) * step_x - 0.5 - left],
            output_shape=(y1 - y0, x1 - x0), order=1, mode="mirror")
        out[k, y0:y1, x0:x1] = part >= 0.5
    return np.moveaxis(out, 0, -1)


def _support(first: int, end: int, step: float, size: int) -> tuple[int, int]:
    """Output pixels [start, stop) whose centre maps within a pixel of input pixels
    [first, end) (``(i + 0.5) * step - 0.5``), with a pixel to spare on each side."""
    start = int(np.floor((first - 2 + 0.5) / step - 0.5))
    stop = int(np.ceil((end + 1 + 0.5) / step - 0.5)) + 1
    return max(0, start), min(size, stop)


def detect_at_scale(detect: Detect, image: np.ndarray,
                    scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Masks (original size, possibly overlapping) and scores of ``detect`` on the image
    resized by ``scale``."""
    if scale == 1:
        masks, scores = detect(image)
        return masks, np.asarray(scores)
    masks, scores = detect(rescale_image(image, scale))
    masks = restore_masks(masks, image.shape[:2])
    keep = masks.any(axis=(0, 1))
    return masks[..., keep], np.asarray(scores)[keep]


def choose_scale(diameter: float | None, target: float = TRAINING_DIAMETER,
                 tolerance: float = AUTO_TOLERANCE,
                 limits: tuple[float, float] = AUTO_RANGE) -> float:
    """The factor that brings nuclei of median ``diameter`` to ``target``: 1 when they are
    already within ``tolerance`` of it (or nothing was found), else ``target / diameter``
    clipped to ``limits``."""
    if diameter is None or diameter <= 0:
        return 1.0
    factor = target / diameter
    if 1 / tolerance <= factor <= tolerance:
        return 1.0
    return float(np.clip(factor, *limits))


def detect_auto_scale(detect: Detect, image: np.ndarray, target: float = TRAINING_DIAMETER
                      ) -> tuple[np.ndarray, np.ndarray, float, float | None]:
    """Detect once as the image is; if the nuclei found are far from ``target`` in size,
    detect again with the image rescaled to bring them there. Returns masks (original size),
    scores, the factor used and the median diameter (pixels) the first pass measured (None
    when it found nothing)."""
    masks, scores = detect(image)
    diameter = median_diameter(masks)
    factor = choose_scale(diameter, target)
    if factor == 1:
        return masks, np.asarray(scores), 1.0, diameter
    masks, scores = detect_at_scale(detect, image, factor)
    return masks, scores, factor, diameter


PROBE_FACTORS = (1.0, 0.5, 0.25)
"""The factors :func:`detect_probe_scale` tries: native, and shrunk for nuclei bigger than any
the training set holds."""

PROBE_MARGIN = 0.02
""":func:`detect_probe_scale` leaves native resolution only for a factor whose detections are
on average this much more confident."""

SMALLEST_TRAINING_DIAMETER = 8.5
"""The 10th percentile of the equivalent diameters of stage-1 ``train``'s nuclei (pixels; see
:data:`TRAINING_DIAMETER`): :func:`detect_probe_scale` does not shrink nuclei below it."""


def detect_probe_scale(detect: Detect, image: np.ndarray,
                       factors: Sequence[float] = PROBE_FACTORS,
                       margin: float = PROBE_MARGIN,
                       smallest: float = SMALLEST_TRAINING_DIAMETER
                       ) -> tuple[np.ndarray, np.ndarray, float]:
    """Detect at each of ``factors`` and keep the run whose detections have the highest mean
    score, if it beats the first factor's by more than ``margin`` (else the first). Returns
    masks (original size), scores and the factor kept.

    Unlike :func:`detect_auto_scale`, this does not trust the sizes a first pass measures: a
    model shown nuclei far bigger than it knows finds fragments of sizes it knows, and the
    fragments' size then says "no rescaling needed". The model's confidence tells the runs
    apart better (docs/test_like_evaluation.md). The first pass's sizes only rule factors out:
    a factor that would shrink the nuclei it found below ``smallest`` pixels is not tried
    (relative to the first factor), since the model has seen few nuclei that small and can be
    confidently wrong on them (a few confident blobs where hundreds of small nuclei were); the
    skipped passes also save their time. A first pass that finds nothing rules nothing out.
    """
    if not factors:
        raise ValueError("no factors given")
    first = float(factors[0])
    runs = [(first, *detect_at_scale(detect, image, first))]
    found = median_diameter(runs[0][1]) if runs[0][1].shape[-1] else None
    for factor in factors[1:]:
        relative = float(factor) / first
        if relative < 1 and found is not None and found * relative < smallest:
            continue
        runs.append((float(factor), *detect_at_scale(detect, image, float(factor))))

    def confidence(run) -> float:
        scores = run[2]
        return float(np.mean(scores)) if len(scores) else -1.0

    best = max(runs, key=confidence)
    if confidence(best) <= confidence(runs[0]) + margin:
        best = runs[0]
    return best[1], best[2], best[0]


def detect_with_scales(detect: Detect, image: np.ndarray, scales: Sequence[float],
                       iou_threshold: float = 0.5,
                       min_votes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masks [H, W, N] without overlaps and their scores, voted over the image at ``scales``
    (:func:`nucleus.inference.tta.merge_runs`: a nucleus most scales find, its pixels by
    majority)."""
    if not scales:
        raise ValueError("no scales given")
    runs = [detect_at_scale(detect, image, float(s)) for s in scales]
    masks, scores = merge_runs(runs, image.shape[:2], iou_threshold, min_votes)
    masks, kept = eliminate_overlaps(masks)
    return masks, scores[kept]
