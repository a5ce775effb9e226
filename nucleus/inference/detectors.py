"""The one detector interface: ``detector(image) -> (masks [H, W, N], scores [N])``.

detect, evaluate, submit, compare, segment, train's validation mAP, test-time augmentation and
the FCN-8s baseline all go through :class:`Detector`, which a model object builds
(:meth:`nucleus.inference.nucleus_model.NucleusModel.detector`, around a network in memory
:meth:`~nucleus.inference.nucleus_model.NucleusModel.detector_of`; the commands call
:func:`nucleus.inference.nucleus_model.make_detector` with a model name, a weights file and the
TTA switch). A detector does two things in turn, and exposes both:

- :meth:`Detector.prepare` makes the uint8 RGB image the model was trained on, intensity
  normalisation included (``IMAGE_NORMALIZATION``). It runs on a whole image once, so that the
  tiles of a big image (:mod:`nucleus.inference.tiling`) share one intensity scale;
- :meth:`Detector.detect_prepared` finds the nuclei of a prepared image or tile: masks that
  never overlap (the model's ``DETECTION_MASK_OVERLAP`` rule, then the biggest mask keeps
  what is still shared), voted over flips with TTA.

TensorFlow is imported only when a model is built, and SciPy and scikit-image when a detector
runs, so importing this module (as ``import nucleus`` does) is cheap.
"""
from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from nucleus.errors import InputError
from nucleus.formats.image_io import prepare_image
from nucleus.inference.overlap import disjoint_labels, mask_stack
from nucleus.inference.tiling import Instance, instances_of

log = logging.getLogger(__name__)

Detection = tuple[np.ndarray, np.ndarray]
"""``(masks bool [H, W, N], scores float [N])``."""
SparseDetection = tuple[np.ndarray, list, np.ndarray]
"""``(boxes int [N, 4], masks: N bool arrays cropped to those boxes, scores float [N])``: the
same nuclei as a :data:`Detection` without overlaps, empty masks left out
(:meth:`mrcnn.model.MaskRCNN.detect_instances`)."""


class Detector:
    """Instances of one image, whatever the model behind: ``detector(image) -> (masks, scores)``.

    ``detect`` is the model's own call on a prepared image (its masks may overlap);
    ``normalization`` the per-image intensity normalisation the model was trained with
    (``None`` or ``"stretch"``, :func:`nucleus.formats.image_io.normalize_image`); ``tta`` votes
    over the four flips of each image (:mod:`nucleus.inference.tta`). ``scale`` runs the model on
    the image resized by that factor, or, with ``"auto"``, by the factor that brings the nuclei a
    first pass finds to the training sizes, or, with ``"probe"``, by the factor of 1, 0.5 and 0.25
    whose detections the model is most confident of
    (:func:`nucleus.inference.scales.detect_probe_scale`); ``scales`` votes over several factors
    (:mod:`nucleus.inference.scales`). ``detect_sparse``, when given, is the model's call on a
    prepared image returning a :data:`SparseDetection` with disjoint masks; :meth:`detect_instances`
    uses it at scale 1 without TTA, where it saves building full-size mask stacks. ``diameter`` is
    the nucleus diameter (pixels) the model was trained at (``OBJECT_DIAMETER``), the target of
    ``"auto"``; None: the training set's native median. ``grow``: how far (pixels) each mask
    may grow into the background, to where its nucleus's brightness falls to half
    (:mod:`nucleus.inference.boundaries`; 0: masks as the model draws them). After each call,
    :attr:`last_scale` holds ``(measured median diameter, factor used)`` of the image (or tile)
    just detected, for reports.
    """

    def __init__(self, detect: Callable[[np.ndarray], Detection],
                 normalization: str | None = None, tta: bool = False, name: str = "detector",
                 scale: float | str = 1.0, scales: tuple[float, ...] | None = None,
                 diameter: float | None = None,
                 detect_sparse: Callable[[np.ndarray], SparseDetection] | None = None,
                 grow: int = 0):
        if scale not in ("auto", "probe") and not (isinstance(scale, (int, float))
                                                   and scale > 0):
            raise InputError(f"scale must be a positive number, 'auto' or 'probe', "
                             f"got {scale!r}")
        if scales is not None and (not scales or any(s <= 0 for s in scales)):
            raise InputError(f"scales must be positive numbers, got {scales!r}")
        if scales is not None and scale != 1:
            raise InputError("choose one of a scale and a vote over scales, not both")
        self.detect = detect
        self.normalization = normalization
        self.tta = tta
        self.name = name
        self.scale = scale
        self.scales = tuple(float(s) for s in scales) if scales is not None else None
        if diameter is not None and not diameter > 0:
            raise InputError(f"diameter must be a positive number of pixels, got {diameter!r}")
        self.diameter = diameter
        self.detect_sparse = detect_sparse
        if not (isinstance(grow, (int, np.integer)) and grow >= 0):
            raise InputError(f"mask growth must be a whole number of pixels >= 0, got {grow!r}")
        self.grow = int(grow)
        self.last_scale: tuple[float | None, float] = (None, 1.0)

    def __repr__(self) -> str:
        extra = (f", scale={self.scale!r}" if self.scale != 1 else "") + (
            f", scales={self.scales!r}" if self.scales else "") + (
            f", grow={self.grow}" if self.grow else "")
        return (f"Detector({self.name!r}, normalization={self.normalization!r}, "
                f"tta={self.tta}{extra})")

    def __call__(self, image: np.ndarray) -> Detection:
        """Masks bool [H, W, N] without overlaps and their scores [N], for any grey or RGB image."""
        return self.detect_prepared(self.prepare(image))

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """uint8 RGB [H, W, 3], normalised as the model expects (deep images stretched first)."""
        return prepare_image(image, self.normalization)

    def _oriented(self, image: np.ndarray) -> Detection:
        """The model on one image as it is, or voted over its flips with TTA."""
        from nucleus.inference import tta   # here: SciPy, scikit-image: ~0.5 s on `import nucleus`

        if self.tta:
            return tta.detect_with_flips(self.detect, image)
        masks, scores = self.detect(image)
        return masks, np.asarray(scores)

    def detect_prepared(self, image: np.ndarray) -> Detection:
        """Masks without overlaps and scores of an image :meth:`prepare` has made (or a tile)."""
        from nucleus.inference import scales   # here: SciPy, scikit-image (see _oriented)

        if self.scales is not None:
            return scales.detect_with_scales(self._oriented, image, self.scales)
        if self.scale == "auto":
            target = self.diameter or scales.TRAINING_DIAMETER
            masks, scores, factor, measured = scales.detect_auto_scale(self._oriented, image,
                                                                       target)
            self.last_scale = (measured, factor)
            log.info("%s image: first pass found nuclei of median diameter %s px (model: "
                     "%.1f px); detected at scale %.3g", f"{image.shape[0]}x{image.shape[1]}",
                     "-" if measured is None else f"{measured:.1f}", target, factor)
        elif self.scale == "probe":
            masks, scores, factor = scales.detect_probe_scale(self._oriented, image)
            self.last_scale = (None, factor)
            log.info("%s image: detected at scale %.3g (the most confident of %s)",
                     f"{image.shape[0]}x{image.shape[1]}", factor, scales.PROBE_FACTORS)
        else:
            masks, scores = scales.detect_at_scale(self._oriented, image, float(self.scale))
        labels, kept = disjoint_labels(masks)
        if self.grow:
            from nucleus.inference.boundaries import grow_to_half_maximum

            labels = grow_to_half_maximum(labels, image, self.grow)
        return mask_stack(labels, len(kept)), np.asarray(scores)[kept]


    @property
    def crop_sized(self) -> bool:
        """Whether :meth:`detect_instances` takes the crop-sized path (``detect_sparse`` at
        scale 1 without TTA), whose cost follows the nuclei's areas rather than the image's
        area times their number: big tiles pay off (:func:`nucleus.inference.tiling.tile_for`)."""
        return returns_crop_sized(self.detect_sparse is not None, self.tta, self.scale,
                                  self.scales)

    def detect_instances(self, image: np.ndarray,
                         offset: tuple[int, int] = (0, 0)) -> list[Instance]:
        """The nuclei of a prepared image or tile as :class:`nucleus.inference.tiling.Instance`
        objects (box shifted by ``offset``): what :meth:`detect_prepared` finds, empty masks left
        out, in the same order."""
        if not self.crop_sized:
            return instances_of(*self.detect_prepared(image), offset)
        boxes, masks, scores = self.detect_sparse(image)
        if self.grow:
            from nucleus.inference.boundaries import grow_crops

            boxes, masks = grow_crops(boxes, masks, image, self.grow)
        self.last_scale = (None, 1.0)
        dy, dx = offset
        return [Instance((int(b[0]) + dy, int(b[1]) + dx, int(b[2]) + dy, int(b[3]) + dx),
                         np.ascontiguousarray(m, bool), float(s))
                for b, m, s in zip(boxes, masks, scores)]


def returns_crop_sized(sparse: bool, tta: bool = False, scale: float | str = 1.0,
                       scales: tuple[float, ...] | None = None) -> bool:
    """Whether a detector returns crop-sized masks (:attr:`Detector.crop_sized`): it has the
    crop-sized call (``sparse``) and runs at scale 1 (a number, not "auto" or "probe") without
    TTA or a vote over scales."""
    return (sparse and not tta and scales is None and not isinstance(scale, str)
            and float(scale) == 1.0)


def has_sparse_call(config) -> bool:
    """Whether a Mask R-CNN detector of this inference configuration has the crop-sized call
    (``MaskRCNN.detect_instances``): where masks share pixels by confidence."""
    return config.DETECTION_MASK_OVERLAP == "confidence"


def detector_scale(scale: float | str | None, scales: tuple[float, ...] | None,
                   diameter: float | None, default: float | str = 1.0) -> float | str:
    """The scale a Mask R-CNN detector runs at: ``scale``, or, when None, the model's own
    (:func:`model_scale`, ``default`` for a model trained at every size) without a vote over
    scales and 1 with one."""
    if scale is not None:
        return scale
    return model_scale(diameter, default) if scales is None else 1.0


def raw_detections(model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks [H, W, N] (they may overlap) and scores of a Mask R-CNN on one image."""
    result = model.detect([image], verbose=0)[0]
    return result["masks"], np.asarray(result["scores"])


def model_scale(diameter: float | None, default: float | str = 1.0) -> float | str:
    """A Mask R-CNN's own scale: "auto" when it was trained at one nucleus size
    (``OBJECT_DIAMETER``), else ``default`` (its profile's ``INFERENCE_SCALE`` for whole
    images, 1, native resolution, for tiles)."""
    return "auto" if diameter else default
