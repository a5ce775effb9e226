"""The study's training augmentation: random flips and random brightness (quarter turns optional).

Each image gets its own draw: a left-right flip with probability 1/2, an up-down flip with
probability 1/2, and a brightness factor drawn uniformly from ``brightness``. Flips are
geometric, so :func:`mrcnn.augmentation.apply_augmentation` applies them to the masks as well;
brightness touches the image only.
"""
from __future__ import annotations

from typing import Any

from mrcnn.imgaug_compat import iaa


def build_augmentation(flip: bool = True,
                       brightness: tuple[float, float] | None = (0.8, 1.5),
                       rotate90: bool = False) -> Any | None:
    """An imgaug augmenter for training; ``None`` if it would do nothing.

    ``brightness`` is the (low, high) range of the factor that multiplies pixel values.
    ``rotate90`` adds a quarter turn by 0-3 steps; with both flips that draws each of the
    eight orientations of the square equally (nuclei have no preferred direction).
    """
    steps = []
    if flip:
        steps += [iaa.Fliplr(0.5), iaa.Flipud(0.5)]
    if rotate90:
        steps.append(iaa.Rot90((0, 3)))
    if brightness is not None:
        try:
            low, high = (float(v) for v in brightness)
        except (TypeError, ValueError):
            raise ValueError(f"brightness must be a (low, high) pair of numbers, "
                             f"got {brightness!r}") from None
        if not 0 < low <= high:
            raise ValueError(f"brightness range must satisfy 0 < low <= high, got {brightness!r}")
        steps.append(iaa.Multiply((low, high)))
    if not steps:
        return None
    return iaa.Sequential(steps)
