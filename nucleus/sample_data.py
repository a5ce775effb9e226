"""Inputs for timing and checking the machinery around a model, built from the bundled sample.

:func:`sample_mosaic` makes an image of any size from the real fluorescence images shipped in
``nucleus/sample``, for tiling, large-image and scaling runs; :func:`threshold_detector` finds
bright regions without a model, so that those runs time the machinery and not the network, and
give the same nuclei in a tile as in the whole image. Tests and benchmarks both use them.
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import skimage.measure

from nucleus.dataset import load_subset
from nucleus.formats.image_io import normalize_image
from nucleus.inference.detectors import Detector
from nucleus.scoring.metric import labels_to_masks


def sample_mosaic(size: int, piece: int = 256) -> np.ndarray:
    """A grey uint8 RGB image of ``size`` x ``size`` tiled from the bundled sample's
    fluorescence images (each stretched as the models see it, cut to ``piece`` x ``piece``)."""
    ds = load_subset(None, "stage1_train")
    pieces = []
    for image_id in ds.image_ids:
        image = ds.load_image(image_id)
        if np.median(image) < 50 and min(image.shape[:2]) >= piece:
            pieces.append(normalize_image(image, "stretch")[:piece, :piece])
    n = -(-size // piece)
    rows = [np.concatenate([pieces[(r * n + c) % len(pieces)] for c in range(n)], axis=1)
            for r in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0)[:size, :size])


def threshold_detector(level: int = 128) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A detector that sees only what is near each pixel: the connected regions brighter than
    ``level``, scored by their mean brightness. It finds a region the same way in a tile as in
    the whole image, so tiled and whole-image results can be compared exactly."""
    def detect(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        grey = image[..., 0] if image.ndim == 3 else image
        labels = skimage.measure.label(grey > level)
        n = int(labels.max())
        sums = np.bincount(labels.ravel(), weights=grey.ravel(), minlength=n + 1)[1:]
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        return labels_to_masks(labels), (sums / np.maximum(areas, 1) / 255).astype(np.float32)

    return detect


def make_threshold_detector(level: int = 128, delay: float = 0.0,
                            normalization: str | None = None):
    """:func:`threshold_detector` as a :class:`nucleus.inference.detectors.Detector`, which Dask
    worker processes build by import path (``"nucleus.sample_data:make_threshold_detector"``);
    ``delay`` seconds a call make a run long enough to kill a worker in the middle of it."""
    detect = threshold_detector(level)

    def slow(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(delay)
        return detect(image)

    return Detector(slow if delay else detect, normalization=normalization, name="threshold")
