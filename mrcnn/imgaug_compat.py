"""The one place that imports imgaug: it makes imgaug 0.4.0 (its last release) work on NumPy 2.

Import ``ia``, ``iaa`` and ``iap`` from here, never ``import imgaug`` directly, so the shims below always
run before imgaug's own code does. Each shim is applied only when the thing it replaces is
missing or broken, so a fixed imgaug release or an old NumPy is left untouched.

What breaks, and why (checked with NumPy 2.4, OpenCV 5.0):

* ``import imgaug`` fails: ``imgaug/imgaug.py`` builds its dtype tables from ``np.sctypes``,
  which NumPy 2.0 removed. We restore an equivalent dict (same keys and scalar types as
  NumPy 1.x had) before importing.
* ``np.complex`` (removed in NumPy 1.24) is used by the ``Power`` parameter and by
  ``FrequencyNoise`` (so ``Clouds``, ``Fog``, ``Snowflakes``, ``FrequencyNoiseAlpha``).
  We restore it as the builtin ``complex``, which is what the alias always was.
* ``ElasticTransformation`` fails inside ``cv2.convertMaps``: under NumPy 2's promotion rules
  (NEP 50) its displacement maps become float64 (a float32 array times a NumPy float64 scalar),
  and OpenCV only accepts float32 maps. We cast the maps back to float32, as NumPy 1 gave them.

Checked and fine without a shim: ``Fliplr``, ``Flipud``, ``Multiply``, ``Affine``, ``Crop``,
``CropAndPad``, ``Rot90``, ``PiecewiseAffine``, ``Sequential``/``SomeOf``/``OneOf``/
``Sometimes``, ``GaussianBlur``, ``AdditiveGaussianNoise`` on uint8 images and bool masks
(``np.bool`` is used by ``SomeOf`` but NumPy 2 has it again).

Not shimmed here, because it is OpenCV's limit rather than NumPy's: OpenCV 5 handles at most
:data:`CV_MAX_CHANNELS` channels in ``cv2.resize`` / ``cv2.flip`` / ``cv2.copyMakeBorder``, so a
stack of 129..512 masks makes ``Rot90``, ``Crop``, ``CropAndPad`` and ``Resize`` fail (imgaug
only splits arrays above 512 channels). :func:`mrcnn.augmentation.apply_augmentation` feeds
masks to imgaug in chunks of at most that many channels.
"""
from __future__ import annotations

import numpy as np

CV_MAX_CHANNELS = 128
"""Most channels one OpenCV 5 call accepts (``CV_CN_MAX``; it was 512 in OpenCV 4)."""

if not hasattr(np, "sctypes"):
    np.sctypes = {  # type: ignore[attr-defined]
        "int": [np.int8, np.int16, np.int32, np.int64],
        "uint": [np.uint8, np.uint16, np.uint32, np.uint64],
        "float": [np.float16, np.float32, np.float64, np.longdouble],
        "complex": [np.complex64, np.complex128, np.clongdouble],
        "others": [bool, object, bytes, str, np.void],
    }

try:
    np.complex  # type: ignore[attr-defined]  # noqa: B018
except AttributeError:
    np.complex = complex  # type: ignore[attr-defined]

import imgaug as ia  # noqa: E402
import imgaug.augmenters as iaa  # noqa: E402
import imgaug.parameters as iap  # noqa: E402
from imgaug.augmenters import geometric as _geometric  # noqa: E402
from imgaug.augmenters.base import SuspiciousSingleImageShapeWarning  # noqa: E402


def _patch_elastic_shift_maps() -> None:
    """Make ``ElasticTransformation`` return float32 shift maps, which OpenCV requires."""
    cls = _geometric.ElasticTransformation
    original = cls._generate_shift_maps
    if getattr(original, "_float32_shim", False):
        return

    def generate_shift_maps(shape, alpha, sigma, random_state):
        dx, dy = original(shape, alpha, sigma, random_state)
        return dx.astype(np.float32, copy=False), dy.astype(np.float32, copy=False)

    generate_shift_maps._float32_shim = True  # type: ignore[attr-defined]
    cls._generate_shift_maps = staticmethod(generate_shift_maps)


_patch_elastic_shift_maps()

__all__ = ["ia", "iaa", "CV_MAX_CHANNELS", "SuspiciousSingleImageShapeWarning"]
