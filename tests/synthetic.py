"""Synthetic images of filled ellipses, with exact instance masks, for fast tests."""
from __future__ import annotations

import numpy as np
import skimage.draw

from mrcnn import utils


def ellipse_image(rng: np.random.Generator, size: int = 64, max_objects: int = 4,
                  radius=(5, 11)) -> tuple[np.ndarray, np.ndarray]:
    """A noisy grey image with non-overlapping bright ellipses and their masks [H, W, N]."""
    image = rng.normal(30, 8, (size, size)).clip(0, 255)
    masks = []
    occupied = np.zeros((size, size), bool)
    for _ in range(rng.integers(1, max_objects + 1) * 4):
        if len(masks) >= max_objects:
            break
        ry, rx = rng.integers(radius[0], radius[1], 2)
        cy = rng.integers(ry + 1, size - ry - 1)
        cx = rng.integers(rx + 1, size - rx - 1)
        rr, cc = skimage.draw.ellipse(cy, cx, ry, rx, shape=(size, size),
                                      rotation=rng.uniform(0, np.pi))
        m = np.zeros((size, size), bool)
        m[rr, cc] = True
        if (m & occupied).any() or m.sum() < 10:
            continue
        grown = np.zeros_like(m)
        grown[max(cy - ry - 2, 0):cy + ry + 3, max(cx - rx - 2, 0):cx + rx + 3] = True
        if (grown & occupied).any():
            continue
        occupied |= m
        masks.append(m)
        image[m] = rng.normal(170, 15, m.sum())
    image = np.stack([image.clip(0, 255).astype(np.uint8)] * 3, axis=-1)
    mask = np.stack(masks, axis=-1) if masks else np.zeros((size, size, 0), bool)
    return image, mask


class EllipseDataset(utils.Dataset):
    """In-memory dataset of :func:`ellipse_image` samples (class 1 = ellipse)."""

    def __init__(self, count: int, seed: int, size: int = 64, max_objects: int = 4):
        super().__init__()
        self.add_class("shapes", 1, "ellipse")
        rng = np.random.default_rng(seed)
        self._samples = [ellipse_image(rng, size, max_objects) for _ in range(count)]
        for i in range(count):
            self.add_image("shapes", image_id=i, path=None)
        self.prepare()

    def load_image(self, image_id: int) -> np.ndarray:
        return self._samples[image_id][0]

    def load_mask(self, image_id: int):
        mask = self._samples[image_id][1]
        return mask, np.ones([mask.shape[-1]], np.int32)
