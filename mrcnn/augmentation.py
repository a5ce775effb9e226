"""Apply one imgaug augmenter to an image and its instance masks consistently.

Geometric augmenters (flips, crops, affine warps ...) must move the masks exactly as they move
the image, while pixel-value augmenters (brightness, contrast, blur, noise ...) must leave the
masks alone: a brighter nucleus is still the same nucleus. We freeze the random draws with
``to_deterministic()`` and run the image through every augmenter, then run the masks through
the same frozen augmenter with a hook that switches off every class not in
:data:`MASK_AUGMENTERS`.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from mrcnn.imgaug_compat import CV_MAX_CHANNELS, SuspiciousSingleImageShapeWarning, ia, iaa

MASK_AUGMENTERS: tuple[type, ...] = (
    # containers: they must stay active so that their geometric children are reached
    iaa.Sequential, iaa.SomeOf, iaa.Sometimes,  # OneOf is a SomeOf
    # geometric transforms; subclasses are included (Crop/Pad are CropAndPad,
    # Rotate/ScaleX/TranslateX/ShearX... are Affine)
    iaa.Fliplr, iaa.Flipud, iaa.CropAndPad, iaa.Affine, iaa.PiecewiseAffine,
    iaa.PerspectiveTransform, iaa.ElasticTransformation, iaa.Rot90, iaa.Resize,
    iaa.CropToFixedSize, iaa.PadToFixedSize,
)
"""Augmenter classes allowed to act on masks; anything else only changes the image.

Keep geometric transforms at their default ``mode="constant", cval=0``: a border filled with
another value or by reflection would fill the masks the same way.
"""

MASK_CHUNK = CV_MAX_CHANNELS
"""Masks go through imgaug this many channels at a time (OpenCV 5 rejects more; see
:mod:`mrcnn.imgaug_compat`). The frozen augmenter draws the same transform for every chunk."""


def _mask_activator(images: Any, augmenter: Any, parents: Any, default: bool) -> bool:
    """imgaug hook: only whitelisted (geometric or container) augmenters touch masks."""
    return isinstance(augmenter, MASK_AUGMENTERS)


def apply_augmentation(augmenter: Any, image: np.ndarray,
                       mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Augment ``image`` (uint8 [H, W, 3]) and ``mask`` (bool [H, W, N]) with one random draw.

    Returns the augmented ``(image, mask)``; the mask is bool [H', W', N] with H', W' the
    augmented image's size (equal to H, W unless the augmenter resizes or crops to a fixed
    size). N may be 0. Raises ValueError if the inputs disagree or the augmenter changes the
    image dtype, the channel count or the number of masks.

    ``augmenter`` may also be any callable ``(image, mask) -> (image, mask)`` that is not an
    imgaug augmenter: a step that needs the instances themselves (dimming some nuclei, say)
    cannot be an imgaug augmenter, which sees masks only as extra channels to move.
    """
    if not hasattr(augmenter, "to_deterministic") and callable(augmenter):
        return augmenter(image, mask)
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or mask.ndim != 3:
        raise ValueError(f"expected image [H, W, C] and mask [H, W, N], "
                         f"got shapes {image.shape} and {mask.shape}")
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
    if mask.dtype != bool:
        raise ValueError(f"mask must be bool, got {mask.dtype}")

    det = augmenter.to_deterministic()
    image_aug = det.augment_image(image)
    hooks = ia.HooksImages(activator=_mask_activator)
    n = mask.shape[-1]
    with warnings.catch_warnings():
        # imgaug warns that >= 32 channels look like a batch of grey images; here they are not.
        warnings.simplefilter("ignore", SuspiciousSingleImageShapeWarning)
        if n == 0:
            # One blank channel, so that size-changing augmenters still give the right H', W'.
            probe = np.zeros(mask.shape[:2] + (1,), dtype=bool)
            mask_aug = det.augment_image(probe, hooks=hooks)[..., :0]
        else:
            chunks = [det.augment_image(mask[..., i:i + MASK_CHUNK], hooks=hooks)
                      for i in range(0, n, MASK_CHUNK)]
            mask_aug = chunks[0] if len(chunks) == 1 else np.concatenate(chunks, axis=-1)

    if (image_aug.dtype != image.dtype or image_aug.ndim != 3
            or image_aug.shape[-1] != image.shape[-1]):
        raise ValueError(f"augmenter changed the image from {image.dtype} {image.shape} "
                         f"to {image_aug.dtype} {image_aug.shape}")
    if mask_aug.shape != image_aug.shape[:2] + (n,):
        raise ValueError(f"augmented mask {mask_aug.shape} does not match augmented image "
                         f"{image_aug.shape} with {n} masks")
    if mask_aug.dtype != bool:
        raise ValueError(f"augmented mask became {mask_aug.dtype}, expected bool")
    return image_aug, mask_aug
