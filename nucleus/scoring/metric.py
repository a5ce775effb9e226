"""The Kaggle Data Science Bowl 2018 metric: precision averaged over IoU thresholds 0.50..0.95.

For one image and a threshold t, a predicted object matches a true object when their IoU is
strictly greater than t; precision(t) = TP / (TP + FP + FN). The image score is the mean over the
ten thresholds, the data set score the mean over images.

Instances come either as a label image [H, W] (ints, 0 = background, any positive label is one
object, labels need not be consecutive) or as a bool stack [H, W, N]. Instances must not overlap,
as in a Kaggle submission: run ``nucleus.inference.overlap.eliminate_overlaps`` on raw detections
first. Empty instances (no pixel) are ignored: they can not be matched nor written to a submission.

IoUs come from one 2-D histogram of (true label, predicted label) over the pixels, so the cost is
O(H*W + N*M) rather than N*M full-image comparisons.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from tqdm import tqdm

from mrcnn.mask_iou import iou_from_counts
from nucleus.errors import InputError

# k / 100 is the double nearest to the decimal threshold, and inter / union is the double nearest
# to the exact ratio, so an IoU of exactly 11/20 compares equal to 0.55 and "IoU > t" is exact.
THRESHOLDS: np.ndarray = np.arange(50, 100, 5) / 100
THRESHOLDS.flags.writeable = False


# ----------------------------------------------------------------------------- conversions
def masks_to_labels(masks: np.ndarray) -> np.ndarray:
    """Bool stack [H, W, N] -> int32 label image [H, W]; mask i gets label i + 1.

    Raises InputError if two masks share a pixel: a label image can not hold that, and the metric
    (like Kaggle) needs non-overlapping instances.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InputError(f"masks_to_labels: expected a [H, W, N] stack, got shape {masks.shape}")
    masks = masks.astype(bool, copy=False)
    coverage = masks.sum(axis=2, dtype=np.int32)
    if coverage.max(initial=0) > 1:
        n_pixels = int((coverage > 1).sum())
        raise InputError(
            f"masks_to_labels: masks overlap on {n_pixels} pixels; remove overlaps first "
            "(nucleus.inference.overlap.eliminate_overlaps)")
    labels = np.zeros(masks.shape[:2], dtype=np.int32)
    # argmax over the instance axis finds the single mask covering each pixel.
    covered = coverage == 1
    if masks.shape[2]:
        labels[covered] = masks[covered].argmax(axis=1) + 1
    return labels


def labels_to_masks(labels: np.ndarray) -> np.ndarray:
    """Label image [H, W] -> bool stack [H, W, N], one mask per present label, in label order."""
    labels = _check_label_image(labels, "labels_to_masks")
    present = np.unique(labels)
    present = present[present > 0]
    return labels[:, :, None] == present[None, None, :]


def as_labels(instances: np.ndarray) -> np.ndarray:
    """Accept a label image [H, W] or a bool stack [H, W, N]; return a label image [H, W]."""
    instances = np.asarray(instances)
    if instances.ndim == 3:
        return masks_to_labels(instances)
    return _check_label_image(instances, "as_labels")


def _check_label_image(labels: np.ndarray, where: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise InputError(f"{where}: expected a label image [H, W], got shape {labels.shape}")
    if labels.dtype == bool or not np.issubdtype(labels.dtype, np.integer):
        # A 2-D bool array is ambiguous (one object? a semantic mask?), so it is refused.
        raise InputError(
            f"{where}: a label image must have an integer dtype, got {labels.dtype}; "
            "pass bool masks as a [H, W, N] stack")
    if labels.size and labels.min() < 0:
        raise InputError(f"{where}: label image has negative labels (min {labels.min()})")
    return labels


def _consecutive(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Relabel so present labels become 1..n in ascending order; returns (flat int64 labels, n)."""
    flat = labels.ravel().astype(np.int64, copy=False)
    top = int(flat.max(initial=0))
    if top <= 4 * flat.size + 1024:
        counts = np.bincount(flat, minlength=top + 1)
        present = np.flatnonzero(counts[1:]) + 1
        lookup = np.zeros(top + 1, dtype=np.int64)
        lookup[present] = np.arange(1, present.size + 1)
        return lookup[flat], int(present.size)
    # Huge label values: a lookup table would be too big, sort instead.
    values, inverse = np.unique(flat, return_inverse=True)
    if values[0] != 0:
        inverse = inverse + 1
    return inverse.astype(np.int64), int((values > 0).sum())


# ----------------------------------------------------------------------------- IoU and matching
def iou_matrix(true_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows) with every predicted object (columns), float64 [n, m].

    Inputs are label images or bool stacks of the same height and width. Rows and columns follow
    ascending label order (stack order for stacks), skipping empty instances.
    """
    true_labels, pred_labels = as_labels(true_labels), as_labels(pred_labels)
    if true_labels.shape != pred_labels.shape:
        raise InputError(
            f"iou_matrix: true shape {true_labels.shape} != predicted shape {pred_labels.shape}")
    t, n = _consecutive(true_labels)
    p, m = _consecutive(pred_labels)
    joint = np.bincount(t * (m + 1) + p, minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1)
    return iou_from_counts(joint[1:, 1:], joint[1:, :].sum(axis=1), joint[:, 1:].sum(axis=0))


def match(iou: np.ndarray, threshold: float) -> np.ndarray:
    """One-to-one matches (pairs [K, 2] of row, column) with IoU > threshold, best IoU first.

    Above 0.5 each object has at most one candidate when instances don't overlap, so the greedy
    pass (best IoU first, as COCO does) only matters for hand-made IoU matrices or thresholds
    below 0.5.
    """
    candidates = np.argwhere(iou > threshold)
    if len(candidates) == 0:
        return candidates.reshape(0, 2)
    rows, cols = candidates[:, 0], candidates[:, 1]
    if len(np.unique(rows)) == len(rows) and len(np.unique(cols)) == len(cols):
        return candidates
    order = np.argsort(-iou[rows, cols], kind="stable")  # ties: lowest (row, column) first
    used_rows, used_cols, pairs = set(), set(), []
    for r, c in candidates[order]:
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def precision_at(iou: np.ndarray, threshold: float) -> tuple[float, int, int, int]:
    """(precision, TP, FP, FN) at one threshold from an IoU matrix [n_true, n_pred].

    No true and no predicted object gives precision 1.0 (nothing to find, nothing wrongly found).
    """
    iou = np.asarray(iou, dtype=np.float64)
    if iou.ndim != 2:
        raise InputError(f"precision_at: IoU matrix must be 2-D, got shape {iou.shape}")
    n_true, n_pred = iou.shape
    tp = len(match(iou, threshold))
    fp, fn = n_pred - tp, n_true - tp
    total = tp + fp + fn
    return (tp / total if total else 1.0), tp, fp, fn


# ----------------------------------------------------------------------------- scores
@dataclass(frozen=True, eq=False)
class ImageScore:
    """Score of one image plus the counts behind it, one entry per threshold in ``THRESHOLDS``."""

    score: float
    precisions: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    fn: np.ndarray

    @property
    def n_true(self) -> int:
        return int(self.tp[0] + self.fn[0])

    @property
    def n_pred(self) -> int:
        return int(self.tp[0] + self.fp[0])


def score_from_iou(iou: np.ndarray) -> ImageScore:
    """ImageScore from a precomputed IoU matrix [n_true, n_pred]."""
    counts = [precision_at(iou, t) for t in THRESHOLDS]
    precisions = np.array([c[0] for c in counts], dtype=np.float64)
    tp, fp, fn = (np.array([c[i] for c in counts], dtype=np.int64) for i in (1, 2, 3))
    return ImageScore(float(precisions.mean()), precisions, tp, fp, fn)


def image_score(true: np.ndarray, pred: np.ndarray) -> ImageScore:
    """DSB score of one image. Inputs: label images [H, W] or bool stacks [H, W, N].

    Edge cases: no true and no predicted object -> 1.0; true objects but no prediction -> 0.0;
    predictions but no true object -> 0.0.
    """
    return score_from_iou(iou_matrix(true, pred))


def dataset_scores(pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                   progress: bool = False) -> list[ImageScore]:
    """ImageScore of each (true, pred) pair, in order."""
    return [image_score(t, p) for t, p in tqdm(pairs, desc="scoring", disable=not progress)]


def mean_precisions(scores: Sequence[ImageScore]) -> np.ndarray:
    """Mean precision per threshold over images; its mean is the data set score."""
    if len(scores) == 0:
        raise InputError("mean_precisions: no image scores given")
    return np.mean([s.precisions for s in scores], axis=0)


def dataset_score(pairs: Iterable[tuple[np.ndarray, np.ndarray]], progress: bool = False) -> float:
    """Mean image score over (true, pred) pairs: the Kaggle leaderboard number."""
    scores = dataset_scores(pairs, progress=progress)
    if not scores:
        raise InputError("dataset_score: no images given")
    return float(np.mean([s.score for s in scores]))
