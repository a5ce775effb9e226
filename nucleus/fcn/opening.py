"""Split a semantic foreground into instances by morphological opening (the study's FCN step).

Erosion by a disk cuts the thin necks where touching nuclei meet; each surviving core is one
nucleus. The cores then grow back by the same radius, but only through the foreground and each
pixel to the core that reaches it first, so neighbours never merge and no masks overlap.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import scipy.ndimage as ndi
import skimage.measure
import skimage.morphology
import skimage.segmentation
from tqdm import tqdm

from nucleus.scoring.metric import image_score
from nucleus.scoring.metric import labels_to_masks  # re-exported: opening gives consecutive labels

DEFAULT_MIN_SIZE = 10


def label_by_opening(foreground: np.ndarray, radius: int,
                     min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Instance label image int32 [H, W] (0 = background, 1..N) of a bool foreground."""
    foreground = np.asarray(foreground, dtype=bool)
    if foreground.ndim != 2:
        raise ValueError(f"foreground must be 2-D [H, W], got shape {foreground.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if radius == 0:
        labels = skimage.measure.label(foreground)
    else:
        cores = ndi.binary_erosion(foreground, structure=skimage.morphology.disk(radius),
                                   border_value=0)
        markers = skimage.measure.label(cores)
        # Flood outwards in order of distance to the nearest core, through the foreground only,
        # never further than ``radius``: pixels a core cannot reach this way are dropped, as
        # the opening would drop them.
        distance = ndi.distance_transform_edt(markers == 0)
        reach = foreground & (distance <= radius)
        labels = skimage.segmentation.watershed(distance, markers=markers, mask=reach)
    return _drop_small(labels, min_size)


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Remove labels smaller than ``min_size`` pixels and renumber the rest 1..N."""
    areas = np.bincount(labels.ravel())
    keep = areas >= min_size
    keep[0] = False
    new_ids = np.zeros(len(areas), dtype=np.int32)
    new_ids[keep] = np.arange(1, keep.sum() + 1, dtype=np.int32)
    return new_ids[labels]


def instances_by_opening(foreground: np.ndarray, radius: int,
                         min_size: int = DEFAULT_MIN_SIZE) -> np.ndarray:
    """Instance masks bool [H, W, N] from a bool foreground [H, W]; they never overlap.

    ``radius`` 0 gives the connected components (8-connectivity); fragments smaller than
    ``min_size`` pixels are dropped.
    """
    return labels_to_masks(label_by_opening(foreground, radius, min_size))


def pick_radius(foregrounds: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                radii: Iterable[int], min_size: int = DEFAULT_MIN_SIZE
                ) -> tuple[int, dict[int, float]]:
    """The opening radius with the best DSB mAP over the images, and the mAP of every radius.

    ``foregrounds`` are predicted bool [H, W]; ``truths`` label images [H, W] or bool stacks
    [H, W, N]. Ties go to the smallest radius.
    """
    if len(foregrounds) != len(truths):
        raise ValueError(f"{len(foregrounds)} foregrounds but {len(truths)} truths")
    if not foregrounds:
        raise ValueError("pick_radius needs at least one image")
    radii = sorted(set(int(r) for r in radii))
    if not radii:
        raise ValueError("pick_radius needs at least one radius")
    scores: dict[int, float] = {}
    for radius in tqdm(radii, desc="opening radius", leave=False):
        per_image = [image_score(truth, label_by_opening(fg, radius, min_size)).score
                     for fg, truth in zip(foregrounds, truths)]
        scores[radius] = float(np.mean(per_image))
    best = max(radii, key=lambda r: (scores[r], -r))
    return best, scores
