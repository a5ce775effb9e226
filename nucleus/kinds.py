"""What kind of microscope image this is: fluorescence, bright-field grey or colour tissue.

The DSB2018 images come from many microscopes, but three kinds of appearance cover them and
decide how hard an image is for a model trained mostly on one of them:

- ``fluorescence``: grey, dark background, bright nuclei (most of the training set);
- ``brightfield``: grey, light background, dark nuclei;
- ``colour``: stained tissue (H&E and similar), colour, light background.

:func:`image_kind` assigns one from the pixels alone, so it works on images with no labels and no
metadata (the stage-1 test images, a user's own files). The rule was read off the 670 stage-1
training and 65 test images: every grey image there has identical channels (mean deviation from
the channel mean exactly 0), every stained one deviates by 4.5 or more (on 0-255).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

KINDS: tuple[str, ...] = ("fluorescence", "brightfield", "colour")
"""Every kind :func:`image_kind` returns, in the order reports list them."""

COLOUR_DEVIATION = 2.0
"""Mean absolute deviation of the channels from their mean (0-255 scale) above which an image
is colour. Grey images stored as RGB have 0; the palest stained training image has 4.5."""

LIGHT_BACKGROUND = 127.5
"""Median grey level above which a grey image has a light background (bright-field)."""


def image_kind(image: np.ndarray) -> str:
    """``"fluorescence"``, ``"brightfield"`` or ``"colour"`` for one image.

    ``image`` is [H, W] grey or [H, W, C] with C >= 3 (an alpha channel is ignored), any numeric
    dtype; grey levels are compared on the image's own 0-255 scale (uint8) or its dtype's range
    (uint16), or, for floats, on the range of its values. Large images are subsampled to about
    a quarter of a million pixels.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] < 3):
        raise ValueError(f"expected an [H, W] or [H, W, 3+] image, got shape {image.shape}")
    if image.size == 0:
        raise ValueError("empty image")
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 250_000)))
    sample = image[::step, ::step].astype(np.float64) * _to_255(image)
    if sample.ndim == 3:
        rgb = sample[..., :3]
        grey = rgb.mean(axis=-1)
        if np.abs(rgb - grey[..., None]).mean() > COLOUR_DEVIATION:
            return "colour"
    else:
        grey = sample
    return "brightfield" if np.median(grey) > LIGHT_BACKGROUND else "fluorescence"


def _to_255(image: np.ndarray) -> float:
    """Factor that brings ``image``'s grey levels to a 0-255 scale."""
    if image.dtype == np.uint8 or image.dtype == bool:
        return 255.0 if image.dtype == bool else 1.0
    if np.issubdtype(image.dtype, np.integer):
        return 255.0 / np.iinfo(image.dtype).max
    top = float(np.max(image))
    return 255.0 / top if top > 0 else 1.0


def dataset_kinds(dataset, image_ids: Iterable[int] | None = None) -> dict[int, str]:
    """Kind of each image of a ``mrcnn.utils.Dataset`` (all of them unless ``image_ids``).

    The kind is stored in the image's ``image_info`` entry (key ``"kind"``), so copies of the
    dataset (:mod:`nucleus.training.sampling`) and later calls do not read the image again.
    """
    ids = dataset.image_ids if image_ids is None else image_ids
    out = {}
    for i in ids:
        info = dataset.image_info[int(i)]
        if "kind" not in info:
            info["kind"] = image_kind(dataset.load_image(int(i)))
        out[int(i)] = info["kind"]
    return out
