"""A trained model as one object, Mask R-CNN or the FCN-8s baseline: :class:`NucleusModel`.

Which file a weights name means is resolved here and nowhere else (:meth:`NucleusModel.resolve`:
the shipped file, the last checkpoint under a logs folder, a path, and the starts of a training
run: COCO, ImageNet or none). :meth:`NucleusModel.load` reads a file's root attributes once and
holds what they say: the configuration stored beside the weights (the network of
:data:`NETWORK_SHAPE_KEYS` and its profile, the inference settings of that profile), the epoch,
the image preparation and the run folder (:class:`mrcnn.runs.RunFolder`) the file lies in.
:meth:`NucleusModel.detector` builds the one detector interface
(:class:`nucleus.inference.detectors.Detector`), and :func:`make_detector` is the commands' way
to it. Training's validation is a model of the same class (:meth:`NucleusModel.of_training`:
the run's inference configuration, :func:`run_inference_config`, its weights in memory; the
FCN's :meth:`NucleusModel.of_fcn_training`) whose detector is built by the same
:meth:`NucleusModel.detector_of`; this module imports no training code.
"""
from __future__ import annotations

import copy
import json
import os
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mrcnn.config import Config
from mrcnn.errors import WeightsError
from mrcnn.runs import RunFolder, RunLayout, mask_rcnn_layout
from nucleus.config import PROFILES, make_config
from nucleus.errors import InputError
from nucleus.inference.detectors import (Detector, detector_scale, has_sparse_call,
                                         raw_detections, returns_crop_sized)

if TYPE_CHECKING:
    import keras

    from mrcnn.model import MaskRCNN

MODELS = ("mrcnn", "fcn")
START_NAMES = ("coco", "imagenet", "none")
"""What a Mask R-CNN training run may start from besides a file or its own last checkpoint."""

# this file is <repo>/nucleus/inference/nucleus_model.py
REPO_WEIGHTS_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "weights")
SHIPPED_NAME = "mask_rcnn_nucleus.h5"
# ``pip install .`` puts the shipped model under <prefix>/share (setup.py data_files); a
# checkout or an editable install has it in weights/ beside the packages.
INSTALLED_WEIGHTS_DIR = os.path.join(sys.prefix, "share", "nucleus-mrcnn", "weights")


def _shipped_weights() -> str:
    candidates = [os.path.join(REPO_WEIGHTS_DIR, SHIPPED_NAME),
                  os.path.join(INSTALLED_WEIGHTS_DIR, SHIPPED_NAME)]
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


SHIPPED_WEIGHTS = _shipped_weights()

NETWORK_SHAPE_KEYS = (
    "BACKBONE", "BACKBONE_STRIDES", "TOP_DOWN_PYRAMID_SIZE", "FPN_CLASSIF_FC_LAYERS_SIZE",
    "NUM_CLASSES", "RPN_CONV_SIZE", "RPN_ANCHOR_SCALES", "RPN_ANCHOR_RATIOS",
    "RPN_ANCHOR_STRIDE", "RPN_BBOX_STD_DEV", "BBOX_STD_DEV", "MASK_HEAD_CONV_SIZE", "POOL_SIZE",
    "MASK_POOL_SIZE", "MASK_SHAPE", "TRAIN_BN", "IMAGE_CHANNEL_COUNT", "MEAN_PIXEL",
    "IMAGE_NORMALIZATION", "OBJECT_DIAMETER")
"""The configuration values a weights file carries into inference: the network's shape, how its
box deltas are scaled, and the input it was trained on (channels, mean pixel, normalisation,
nucleus size). The profile's inference class supplies the rest."""

TRAINING_ONLY_KEYS = (
    "IMAGE_RESIZE_MODE", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "IMAGES_PER_GPU", "STEPS_PER_EPOCH",
    "VALIDATION_STEPS", "LEARNING_RATE", "TRAIN_ROIS_PER_IMAGE", "RPN_TRAIN_ANCHORS_PER_IMAGE",
    "POST_NMS_ROIS_TRAINING")
"""Overrides of a training run that its validation model does not take: the training input
(crops, batches) and schedule, where the profile's inference class has its own. Its other
overrides (thresholds, NMS, precision) apply to validation as they would to ``evaluate``."""


# ----------------------------------------------------------------------------- configuration
def profile_of(stored: dict) -> str:
    """The profile a stored configuration was made with: its ``PROFILE``, or for a file written
    before the profile was stored, "cpu" when its NAME is the CPU profile's, else "study"."""
    if stored.get("PROFILE") in PROFILES:
        return stored["PROFILE"]
    return "cpu" if str(stored.get("NAME", "")).startswith("nucleus_cpu") else "study"


def network_values(stored: dict) -> dict[str, Any]:
    """:data:`NETWORK_SHAPE_KEYS` of a stored configuration (``Config.to_dict()``, or its JSON).

    A value the file does not record had the library's default when the file was written
    (IMAGE_NORMALIZATION, say, is newer than the first checkpoints). Arrays and the anchor
    scales get their configuration types back.
    """
    values = {}
    for key in NETWORK_SHAPE_KEYS:
        default = getattr(Config, key)
        value = stored.get(key, default)
        if isinstance(default, np.ndarray):
            value = np.array(value)
        elif isinstance(default, tuple) and value is not None:
            value = tuple(value)
        values[key] = value
    return values


def config_of(stored: dict, *, profile: str | None = None, inference: bool = True,
              overrides: dict | None = None) -> Config:
    """The configuration a model of this stored configuration runs with: ``profile`` (default:
    the stored one, :func:`profile_of`), the stored network (:func:`network_values`), then
    ``overrides``. Without a stored configuration (matterport's files) the profile alone."""
    values = network_values(stored) if stored else {}
    values.update(overrides or {})
    return make_config(profile or profile_of(stored), inference=inference, overrides=values)


def run_inference_config(training_config: Config, overrides: dict | None = None,
                         profile: str | None = None) -> Config:
    """The inference configuration of a training run, as a detector builds it from the run's
    checkpoints: the network of ``training_config``, the inference settings of its profile and
    the run's ``overrides`` less :data:`TRAINING_ONLY_KEYS` (the validation model)."""
    kept = {k: v for k, v in (overrides or {}).items() if k not in TRAINING_ONLY_KEYS}
    return config_of(training_config.to_dict(), profile=profile, overrides=kept)


def read_weights_attrs(path: str) -> dict:
    """The root attributes of a weights file; a missing or unreadable file -> InputError."""
    # here: h5py (~0.1 s, where `import nucleus` takes ~0.3 s), which only reading a file needs
    from mrcnn import weights_file

    try:
        return weights_file.read_attrs(path)
    except (FileNotFoundError, WeightsError) as e:
        raise InputError(str(e)) from None


def stored_config(attrs: dict) -> dict:
    """The configuration stored in a weights file's attributes ({} for matterport's files)."""
    return json.loads(attrs["mrcnn_config"]) if "mrcnn_config" in attrs else {}


def config_from_weights(path: str, inference: bool = True, overrides: dict | None = None,
                        profile: str | None = None) -> Config:
    """The configuration of a weights file (:func:`config_of`); ``profile`` (the command line's
    ``--profile``) wins over the stored one."""
    return config_of(stored_config(read_weights_attrs(path)), profile=profile,
                     inference=inference, overrides=overrides)


# ----------------------------------------------------------------------------- weights files
def find_coco_weights() -> str:
    """``mask_rcnn_coco.h5`` from weights/, ~/.keras/models or the working folder."""
    from mrcnn.weights_file import COCO_WEIGHTS_URL   # here: h5py (see read_weights_attrs)

    candidates = [os.path.join(REPO_WEIGHTS_DIR, "mask_rcnn_coco.h5"),
                  os.path.join(os.path.expanduser("~"), ".keras", "models", "mask_rcnn_coco.h5"),
                  os.path.abspath("mask_rcnn_coco.h5")]
    for path in candidates:
        if os.path.exists(path):
            return path
    raise InputError(f"{candidates[0]}: COCO weights not found. Download mask_rcnn_coco.h5 from "
                     f"{COCO_WEIGHTS_URL} into weights/ (or pass its path).")


def layout_of(kind: str, name: str | None = None) -> RunLayout:
    """How runs of ``kind`` are named: Mask R-CNN's by its configuration ``name``, the FCN's
    ``fcn<timestamp>``."""
    if kind == "fcn":
        from nucleus.fcn.detector import FCN_RUNS   # here: Keras, for FCN models only

        return FCN_RUNS
    return mask_rcnn_layout(name)


@dataclass(frozen=True)
class NucleusModel:
    """A trained model: which network (``kind``: "mrcnn" or "fcn"), its weights file (None for
    a training run's validation model, whose weights live in memory: :meth:`of_training`,
    :meth:`of_fcn_training`), the inference configuration stored beside the weights (Mask
    R-CNN; None for the FCN), the epoch it was saved at, the profile it was made with and the
    run folder it lies in (None for a file outside one, such as the shipped model). ``logs`` is
    the folder a new model built from it would name its runs in."""
    kind: str
    weights: str | None
    config: Config | None = None
    epoch: int = 0
    run_folder: RunFolder | None = None
    profile: str | None = None
    logs: str = "logs"

    @staticmethod
    def resolve(weights: str | os.PathLike | None, *, kind: str = "mrcnn",
                logs: str | os.PathLike = "logs", profile: str | None = None,
                name: str | None = None, start: bool = False) -> str | None:
        """The weights file ``weights`` names, checked to exist: a path; "last", the last
        checkpoint of the newest run under ``logs`` (Mask R-CNN: runs of ``name``, by default
        the NAME of ``profile``, else of the study); None, the shipped Mask R-CNN or the newest
        FCN checkpoint. Where a Mask R-CNN training run starts (``start``), also "coco",
        "imagenet" (the ResNet-50 file, fetched when missing) and "none" (None: random
        weights). A missing file or checkpoint -> InputError naming it.
        """
        if kind not in MODELS:
            raise InputError(f"unknown model {kind!r}: choose from {', '.join(MODELS)}")
        weights = (os.fspath(weights) if weights is not None else "") or None   # "": the default
        if start and kind == "mrcnn" and weights in START_NAMES:
            if weights == "none":
                return None
            if weights == "coco":
                return find_coco_weights()
            from mrcnn.weights import get_imagenet_weights   # here: Keras (TensorFlow, ~4 s)

            try:
                return get_imagenet_weights()
            except FileNotFoundError as e:
                raise InputError(str(e)) from None
        if weights is None and kind == "mrcnn":
            if not os.path.exists(SHIPPED_WEIGHTS):
                raise InputError(f"{SHIPPED_WEIGHTS}: the shipped model is missing; pass "
                                 "--weights PATH or train one with `nucleus train`")
            return SHIPPED_WEIGHTS
        if weights in (None, "last"):
            if name is None and kind == "mrcnn":
                name = make_config(profile or "study").NAME
            layout = layout_of(kind, name)
            found = layout.find_last(logs)
            if found is None:
                names = f"{layout.prefix}<timestamp>/" + layout.checkpoint.replace(
                    "{epoch:04d}", "NNNN")
                what = "FCN" if kind == "fcn" else "Mask R-CNN"
                raise InputError(f"{os.fspath(logs)}: no {what} checkpoint found ({names}); "
                                 "pass --weights PATH")
            return found[0]
        if not os.path.isfile(weights):
            raise InputError(f"{weights}: weights file not found")
        return weights

    @classmethod
    def load(cls, weights: str | os.PathLike | None = None, *, kind: str = "mrcnn",
             logs: str | os.PathLike = "logs", profile: str | None = None,
             overrides: dict | None = None) -> NucleusModel:
        """The model ``weights`` names (:meth:`resolve`). Mask R-CNN: the file's attributes are
        read once; its configuration is the stored one (:func:`config_of`), ``profile``
        winning over the stored profile and ``overrides`` (configuration values) over both.
        A file that is not HDF5 -> InputError. No network is built."""
        path = cls.resolve(weights, kind=kind, logs=logs, profile=profile)
        if kind == "fcn":
            layout = layout_of("fcn")
            return cls("fcn", path, epoch=layout.epoch_of(path) or 0,
                       run_folder=layout.run_of(path), logs=os.fspath(logs))
        attrs = read_weights_attrs(path)
        stored = stored_config(attrs)
        profile = profile or profile_of(stored)
        config = config_of(stored, profile=profile, overrides=overrides)
        layout = layout_of("mrcnn", stored.get("NAME") or config.NAME)
        epoch = int(attrs["epoch"]) if "epoch" in attrs else layout.epoch_of(path) or 0
        return cls("mrcnn", path, config, epoch, layout.run_of(path), profile, os.fspath(logs))

    @classmethod
    def of_training(cls, training_config: Config, overrides: dict | None = None,
                    profile: str | None = None,
                    logs: str | os.PathLike = "logs") -> NucleusModel:
        """A training run's validation model: the configuration its checkpoints will load with
        (:func:`run_inference_config`) and no file (``weights`` None), since training copies its
        weights into the network (:meth:`network`) each time it validates."""
        config = run_inference_config(training_config, overrides, profile)
        return cls("mrcnn", None, config, profile=profile or profile_of(training_config.to_dict()),
                   logs=os.fspath(logs))

    @classmethod
    def of_fcn_training(cls, logs: str | os.PathLike = "logs") -> NucleusModel:
        """An FCN training run's validation model: no file (``weights`` None) and no network of
        its own, since the FCN trains the network it infers with (dropout is off in
        inference): :meth:`detector_of` takes the training network itself."""
        return cls("fcn", None, logs=os.fspath(logs))

    @property
    def normalization(self) -> str | None:
        """The per-image intensity normalisation the model was trained with (None or
        "stretch", :func:`nucleus.formats.image_io.normalize_image`); the FCN's is None."""
        return None if self.config is None else self.config.IMAGE_NORMALIZATION

    def default_scale(self, tiled: bool = False) -> float | str:
        """The scale a Mask R-CNN detector of this model runs at when the caller names none
        (no vote over scales), before ``OBJECT_DIAMETER``'s "auto": the profile's
        ``INFERENCE_SCALE`` for whole images ("probe" for the CPU profile: it wins on `val`
        and on the test-like dev half, README), 1 for the ``tiled`` detectors of large images
        (``segment``): tiles of one slide share one magnification, and at 1 the masks stay
        crop-sized (the fast path)."""
        if tiled or self.config is None:
            return 1.0
        return getattr(self.config, "INFERENCE_SCALE", 1.0)

    def crop_sized(self, tta: bool = False, scale: float | str | None = None,
                   scales: tuple[float, ...] | None = None, tiled: bool = False) -> bool:
        """What ``self.detector(tta, scale=scale, scales=scales, tiled=tiled).crop_sized``
        says, without building the network."""
        if self.config is None:
            return False
        return returns_crop_sized(has_sparse_call(self.config), tta,
                                  self._scale_of(scale, scales, tiled), scales)

    def _scale_of(self, scale: float | str | None, scales: tuple[float, ...] | None,
                  tiled: bool) -> float | str:
        """The scale a Mask R-CNN detector of this model runs at (``scale`` None: the
        model's own, :meth:`default_scale`)."""
        return detector_scale(scale, scales, self.config.OBJECT_DIAMETER,
                              self.default_scale(tiled))

    def network(self) -> MaskRCNN:
        """The Mask R-CNN inference network of this configuration, without weights. The detector
        prepares (normalises) whole images itself (:meth:`detector_of`), so the network's own
        ``IMAGE_NORMALIZATION`` is off: it takes prepared images as they are."""
        if self.kind != "mrcnn":
            raise ValueError(f"a {self.kind} model has no Mask R-CNN network")
        from mrcnn import model as modellib   # here: TensorFlow (~4 s) only once a model runs

        config = copy.copy(self.config)
        config.IMAGE_NORMALIZATION = None
        return modellib.MaskRCNN("inference", config, self.logs)

    def detector_of(self, network: MaskRCNN | keras.Model, tta: bool = False, *,
                    scale: float | str | None = None, scales: tuple[float, ...] | None = None,
                    radius: int | None = None, min_size: int | None = None,
                    tiled: bool = False) -> Detector:
        """The detector around ``network``, a network that holds this model's weights: loaded
        from its file (:meth:`detector`), or put there by training (the validation models,
        :meth:`of_training`, :meth:`of_fcn_training`). Mask R-CNN: a network :meth:`network`
        built; the FCN: the FCN-8s (:func:`nucleus.fcn.model.build_fcn8s`), split into nuclei
        by opening of ``radius`` that drops fragments under ``min_size`` pixels (None: the
        defaults of :class:`nucleus.fcn.detector.FCNDetector`). The image preparation, scale,
        labelling and overlap rule are the same for both ways, so validation scores a model
        as ``evaluate`` does. ``tiled``: the detector runs on tiles of large images
        (:meth:`default_scale`)."""
        if self.kind == "fcn":
            from nucleus.fcn.detector import FCNDetector   # here: Keras, for FCN models only

            split = {k: v for k, v in (("radius", radius), ("min_size", min_size))
                     if v is not None}
            return Detector(FCNDetector(network, **split), None, tta, "FCN-8s",
                            1.0 if scale is None else scale, scales)
        diameter = self.config.OBJECT_DIAMETER
        sparse = network.detect_instances if has_sparse_call(self.config) else None
        return Detector(lambda image: raw_detections(network, image), self.normalization, tta,
                        "Mask R-CNN", self._scale_of(scale, scales, tiled), scales, diameter,
                        detect_sparse=sparse, grow=int(self.config.MASK_GROWTH_REACH))

    def loaded_network(self) -> MaskRCNN | keras.Model:
        """The network of this model holding its file's weights, ready for inference (Mask
        R-CNN's batch norms folded into its convolutions): what :meth:`detector` wraps. Built
        once, it serves several detectors (:meth:`detector_of`), at several scales say."""
        if self.weights is None:
            raise ValueError("this model has no weights file (a training run's validation "
                             "model): use detector_of with the network training holds")
        if self.kind == "fcn":
            from nucleus.fcn.model import load_fcn   # here: Keras, for FCN models only

            return load_fcn(self.weights)
        network = self.network()
        network.load_weights(self.weights, by_name=True)
        network.fold_batch_norms()
        return network

    def detector(self, tta: bool = False, *, scale: float | str | None = None,
                 scales: tuple[float, ...] | None = None, radius: int | None = None,
                 tiled: bool = False) -> Detector:
        """The detector of this model (:meth:`loaded_network`, :meth:`detector_of`), voting
        over flips when ``tta``; ``scale`` and ``scales`` as
        :class:`nucleus.inference.detectors.Detector` takes them, ``scale`` None being the
        model's own: "auto" for a Mask R-CNN trained at one nucleus size (``OBJECT_DIAMETER``),
        else :meth:`default_scale` (``tiled``: for tiles of large images). ``radius``: the
        erosion radius of the FCN's instance split."""
        return self.detector_of(self.loaded_network(), tta, scale=scale, scales=scales,
                                radius=radius, tiled=tiled)


# ----------------------------------------------------------------------------- the commands' way
def model_of(model: str = "mrcnn", weights: str | os.PathLike | None = None, tta: bool = False,
             *, profile: str | None = None, overrides: dict | None = None,
             logs: str | os.PathLike = "logs", **_: object) -> NucleusModel:
    """The model :func:`make_detector`'s keywords name (those only the detector takes are
    ignored)."""
    return NucleusModel.load(weights, kind=model, logs=logs, profile=profile,
                             overrides=overrides)


def make_detector(model: str = "mrcnn", weights: str | os.PathLike | None = None,
                  tta: bool = False, *, radius: int | None = None, profile: str | None = None,
                  overrides: dict | None = None, logs: str | os.PathLike = "logs",
                  scale: float | str | None = None, scales: tuple[float, ...] | None = None,
                  tiled: bool = False) -> Detector:
    """The detector of ``model`` ("mrcnn" or "fcn") from ``weights``
    (:meth:`NucleusModel.load`, then :meth:`NucleusModel.detector`): the one place where the
    command line and scripts get a detector. ``tiled``: for tiles of large images
    (``segment``; :meth:`NucleusModel.default_scale`)."""
    return model_of(model, weights, profile=profile, overrides=overrides, logs=logs).detector(
        tta, scale=scale, scales=scales, radius=radius, tiled=tiled)
