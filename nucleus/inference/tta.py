"""Test-time augmentation: detect on the four flips of an image and keep what they agree on.

A detector trained with flips treats each flip of an image as a new image. A nucleus that most
flips find is real; one that a single flip finds is usually noise. Voting pixel by pixel over
the flips that found a nucleus also smooths the outline the 28x28 mask head draws.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from mrcnn import utils
from mrcnn.mask_iou import mask_iou
from nucleus.inference.overlap import eliminate_overlaps

# Each flip is its own inverse.
FLIPS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none": lambda a: a,
    "lr": lambda a: a[:, ::-1],
    "ud": lambda a: a[::-1],
    "lrud": lambda a: a[::-1, ::-1],
}


@dataclass
class _Instance:
    """One detected mask, stored as its bounding box and the crop inside it."""
    box: np.ndarray            # y1, x1, y2, x2 (exclusive), pixels
    crop: np.ndarray           # bool [y2 - y1, x2 - x1]
    score: float
    run: int


@dataclass
class _Cluster:
    members: list = field(default_factory=list)
    runs: set = field(default_factory=set)


def _instances(masks: np.ndarray, scores: np.ndarray, run: int) -> list[_Instance]:
    boxes = utils.extract_bboxes(masks)
    out = []
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        if y2 > y1 and x2 > x1:
            out.append(_Instance(np.array([y1, x1, y2, x2]), masks[y1:y2, x1:x2, k].copy(),
                                 float(scores[k]), run))
    return out


def _mask_iou(a: _Instance, b: _Instance) -> float:
    y1, x1 = np.minimum(a.box[:2], b.box[:2])
    y2, x2 = np.maximum(a.box[2:], b.box[2:])
    pa = np.zeros((y2 - y1, x2 - x1), bool)
    pb = np.zeros_like(pa)
    pa[a.box[0] - y1:a.box[2] - y1, a.box[1] - x1:a.box[3] - x1] = a.crop
    pb[b.box[0] - y1:b.box[2] - y1, b.box[1] - x1:b.box[3] - x1] = b.crop
    return float(mask_iou(pa[..., None], pb[..., None])[0, 0])


def merge_runs(runs: Sequence[tuple[np.ndarray, np.ndarray]], image_shape: tuple[int, int],
               iou_threshold: float = 0.5,
               min_votes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Merge the ``(masks [H, W, N], scores [N])`` of several runs over one image.

    Instances are taken in falling score order; each joins the cluster whose first (best) mask
    it overlaps most, with mask IoU above ``iou_threshold``, unless that cluster already holds
    one from the same run. A cluster found by at least ``min_votes`` runs (default: more than
    half) becomes one nucleus: the pixels that at least half of its members cover, scored by
    the mean score over all runs (a run that missed it counts 0).
    Returns masks [H, W, M] (bool) and scores [M], highest score first.
    """
    n_runs = len(runs)
    if min_votes is None:
        min_votes = n_runs // 2 + 1
    instances = [inst for r, (masks, scores) in enumerate(runs)
                 for inst in _instances(masks, scores, r)]
    instances.sort(key=lambda inst: -inst.score)
    clusters: list[_Cluster] = []
    firsts = np.zeros((0, 4), int)          # box of each cluster's first member
    for inst in instances:
        best, best_iou = None, iou_threshold
        overlapping = np.where((firsts[:, 0] < inst.box[2]) & (inst.box[0] < firsts[:, 2]) &
                               (firsts[:, 1] < inst.box[3]) & (inst.box[1] < firsts[:, 3]))[0]
        for c in overlapping:
            if inst.run in clusters[c].runs:
                continue
            iou = _mask_iou(inst, clusters[c].members[0])
            if iou > best_iou:
                best, best_iou = c, iou
        if best is None:
            clusters.append(_Cluster([inst], {inst.run}))
            firsts = np.vstack([firsts, inst.box[None]])
        else:
            clusters[best].members.append(inst)
            clusters[best].runs.add(inst.run)
    height, width = image_shape[:2]
    masks, scores = [], []
    for cluster in clusters:
        if len(cluster.runs) < min_votes:
            continue
        boxes = np.stack([m.box for m in cluster.members])
        y1, x1 = boxes[:, :2].min(0)
        y2, x2 = boxes[:, 2:].max(0)
        votes = np.zeros((y2 - y1, x2 - x1), np.int32)
        for m in cluster.members:
            votes[m.box[0] - y1:m.box[2] - y1, m.box[1] - x1:m.box[3] - x1] += m.crop
        # Every member overlaps the first by IoU > 0.5, so some pixel always wins the vote.
        mask = np.zeros((height, width), bool)
        mask[y1:y2, x1:x2] = votes * 2 >= len(cluster.members)
        masks.append(mask)
        scores.append(sum(m.score for m in cluster.members) / n_runs)
    if not masks:
        return np.zeros((height, width, 0), bool), np.zeros((0,), np.float32)
    order = np.argsort(-np.asarray(scores), kind="stable")
    return (np.stack(masks, axis=-1)[..., order],
            np.asarray(scores, np.float32)[order])


def detect_with_flips(detect: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                      image: np.ndarray, flips: Sequence[str] = tuple(FLIPS),
                      iou_threshold: float = 0.5,
                      min_votes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Masks [H, W, N] without overlaps and their scores, voted over ``flips`` of ``image``.

    ``detect(image) -> (masks [H, W, N], scores [N])`` is any detector (Mask R-CNN or the
    FCN baseline); it runs once per flip.
    """
    unknown = [f for f in flips if f not in FLIPS]
    if unknown:
        raise ValueError(f"unknown flips {unknown}: choose from {sorted(FLIPS)}")
    runs = []
    for name in flips:
        flip = FLIPS[name]
        masks, scores = detect(np.ascontiguousarray(flip(image)))
        runs.append((flip(masks), np.asarray(scores)))
    masks, scores = merge_runs(runs, image.shape[:2], iou_threshold, min_votes)
    masks, kept = eliminate_overlaps(masks)
    return masks, scores[kept]
