"""Detection with a trained FCN-8s baseline: :class:`FCNDetector`; how its runs are named
(:data:`FCN_RUNS`) and :func:`find_last`, the newest checkpoint of a training run.

Inference (:class:`nucleus.inference.nucleus_model.NucleusModel`) reaches the FCN through this
module and :mod:`nucleus.fcn.model` / :mod:`nucleus.fcn.opening`, never through the training code
(:mod:`nucleus.fcn.train`, which writes the checkpoints found here).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from mrcnn.runs import RunLayout
from mrcnn.utils import extract_bboxes
from nucleus.fcn.model import load_fcn, predict_foreground
from nucleus.fcn.opening import DEFAULT_MIN_SIZE, label_by_opening, labels_to_masks

DEFAULT_RADIUS = 2
"""Erosion radius of the instance split when none is chosen (``pick-radius`` chooses one)."""
FCN_RUNS = RunLayout("fcn", "fcn_{epoch:04d}.weights.h5", stamp="%Y%m%dT%H%M%S")
"""The FCN's run folders: ``fcn<YYYYmmddTHHMMSS>/fcn_<epoch:04d>.weights.h5``, with
``history.csv`` and ``val_map.csv`` beside the checkpoints as in a Mask R-CNN run."""


def find_last(logs_dir: str | os.PathLike) -> tuple[Path, int] | None:
    """(path, epoch) of the last checkpoint of the newest ``fcn<timestamp>`` run, or None."""
    found = FCN_RUNS.find_last(logs_dir)
    return None if found is None else (Path(found[0]), found[1])


class FCNDetector:
    """FCN + opening behind Mask R-CNN's ``detect`` interface, so callers can use either.

    ``detect(images)`` returns one dict per image with ``masks`` bool [H, W, N] (never
    overlapping), ``scores`` [N] (mean foreground probability inside each mask), ``rois``
    [N, 4] (y1, x1, y2, x2) and ``class_ids`` [N] (all 1), sorted by score.
    """

    def __init__(self, model, radius: int = DEFAULT_RADIUS, min_size: int = DEFAULT_MIN_SIZE,
                 threshold: float = 0.5):
        self.model = model
        self.radius = radius
        self.min_size = min_size
        self.threshold = threshold

    @classmethod
    def from_weights(cls, weights: str | os.PathLike, radius: int = DEFAULT_RADIUS,
                     fc_width: int = 4096, **kwargs: Any) -> "FCNDetector":
        """Load an FCN checkpoint file (or ``"imagenet"``/VGG16 file for an untrained head)."""
        return cls(load_fcn(weights, fc_width=fc_width), radius=radius, **kwargs)

    def detect_one(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """The result dict of :meth:`detect` for one uint8 RGB image."""
        probability = predict_foreground(self.model, image)
        labels = label_by_opening(probability > self.threshold, self.radius, self.min_size)
        n = int(labels.max())
        sums = np.bincount(labels.ravel(), weights=probability.ravel(), minlength=n + 1)[1:]
        areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
        scores = (sums / np.maximum(areas, 1)).astype(np.float32)
        order = np.argsort(-scores, kind="stable")
        masks = labels_to_masks(labels)[..., order]
        return {"rois": extract_bboxes(masks).astype(np.int32).reshape(-1, 4),
                "class_ids": np.ones(n, dtype=np.int32),
                "scores": scores[order],
                "masks": masks}

    def detect_with_scores(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(masks bool [H, W, N], scores [N])`` for one image: the command line's interface."""
        result = self.detect_one(image)
        return result["masks"], result["scores"]

    def detect(self, images: Sequence[np.ndarray], verbose: int = 0) -> list[dict[str, np.ndarray]]:
        """One result dict per image (uint8 RGB, any size), like ``MaskRCNN.detect``."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            raise ValueError("detect takes a list of images, as MaskRCNN.detect does: "
                             "use detect([image])[0]")
        iterator = tqdm(images, desc="FCN detect", leave=False) if verbose else images
        return [self.detect_one(image) for image in iterator]
