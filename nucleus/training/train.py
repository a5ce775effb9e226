"""The staged training schedule of the study, and the weight sources a run can start from."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from mrcnn import model as modellib
from mrcnn.runs import mask_rcnn_layout
from nucleus.config import make_config
from nucleus.dataset import NucleusDataset, load_labelled_folder, load_subset
from nucleus.errors import InputError
from nucleus.inference.nucleus_model import NucleusModel, read_weights_attrs
from nucleus.scoring.evaluation import MapCallback
from nucleus.training.augment import build_augmentation
from nucleus.training.sampling import combined, exclude_kinds, kind_counts, oversample
from nucleus.training.train_options import TrainOptions

log = logging.getLogger(__name__)

COCO_EXCLUDE = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]


@dataclass
class Stage:
    layers: str        # layer group or regex
    until_epoch: int   # train until this (1-based, inclusive) epoch


def default_schedule(weights: str, epochs: int | None = None,
                     layers: str | None = None) -> list[Stage]:
    """The study's schedule: from COCO/ImageNet, heads to epoch 100 then "4+" to 150.

    From scratch (``none``) or from our own checkpoints, every layer trains: freezing an
    untrained backbone makes no sense. ``layers`` forces one stage; ``epochs`` ends the schedule
    early or late.
    """
    if layers:
        return [Stage(layers, epochs or 150)]
    if weights in ("coco", "imagenet"):
        end = epochs or 150
        first = min(100, end)
        stages = [Stage("heads", first)]
        if end > first:
            stages.append(Stage("4+", end))
        return stages
    return [Stage("all", epochs or 150)]


def load_start_weights(model: modellib.MaskRCNN, weights: str) -> str | None:
    """Initialise ``model`` from coco | imagenet | last | none | a path
    (:meth:`nucleus.inference.nucleus_model.NucleusModel.resolve`; "last" is the model's own
    run); returns the file used. COCO and ImageNet start a new run at epoch 0."""
    path = NucleusModel.resolve(weights, logs=model.model_dir, name=model.config.NAME,
                                start=True)
    if path is None:
        return None
    try:
        model.load_weights(path, by_name=True,
                           exclude=COCO_EXCLUDE if weights == "coco" else None)
    except FileNotFoundError as e:
        raise InputError(str(e)) from None
    except ValueError as e:
        if isinstance(e, InputError):
            raise
        raise InputError(str(e)) from None
    if weights in ("coco", "imagenet"):
        model.set_log_dir()  # a new run, starting at epoch 0
    return path


def check_start_weights(weights: str) -> None:
    """Fail on a missing or unreadable start file before minutes go into building a model
    ("imagenet" is fetched and "last" found once the model knows its run folder)."""
    if weights not in ("none", "imagenet", "last"):
        path = NucleusModel.resolve(weights, start=True)
        if weights != "coco":
            read_weights_attrs(path)


def check_images(dataset: NucleusDataset, subset: str) -> None:
    """Decode every image and its masks once, before training starts.

    A bad file met later, inside Keras' data pipeline, surfaces as a TensorFlow traceback hours
    into a run; here it is an InputError naming the file. The masks land in the dataset's label
    cache, so training does not read them again.
    """
    for image_id in tqdm(dataset.image_ids, desc=f"check {subset}", unit="image", disable=None,
                         leave=False):
        dataset.load_image(image_id)
        dataset.load_labels(image_id)


def train_nucleus(dataset_dir: str | None, subset: str, weights: str, logs: str,
                  options: TrainOptions | None = None, *, profile: str = "study",
                  overrides: dict | None = None, limit: int | None = None,
                  resume: bool = False, **option_values: Any) -> modellib.MaskRCNN:
    """Train on ``subset`` following :func:`default_schedule`, tracking validation mAP.

    ``options`` (:class:`nucleus.training.train_options.TrainOptions`: schedule, augmentation,
    sampling, validation; default: its defaults); any of its fields may also be given as a keyword
    (``epochs=30, rotate90=True``), which replaces the one in ``options``. ``overrides`` are
    configuration values; they win over those the options set (``steps_per_epoch``).
    ``limit``: train on the first images of ``subset`` only.
    ``resume``: when ``logs`` already holds a checkpoint of this configuration, continue its
    run from the last one instead of starting from ``weights``; the schedule stays the one
    ``weights`` gives (a run started from COCO keeps its heads-then-4+ stages).
    """
    options = TrainOptions.of(options, **option_values)
    overrides = {**options.overrides(), **(overrides or {})}
    config = make_config(profile, overrides=overrides)
    schedule = default_schedule(weights, options.epochs, options.layers)
    if resume and mask_rcnn_layout(config.NAME).find_last(logs) is not None:
        weights = "last"
    check_start_weights(weights)
    train_ds = load_subset(dataset_dir, subset, limit)
    if options.extra_train:
        train_ds = _with_extra(train_ds, options.extra_train)
    if options.exclude or options.oversample_kinds:
        train_ds = _resample(train_ds, options.oversample_kinds, options.exclude)
    # Checked once assembled: each copy made above starts with an empty label cache, so only
    # the training set's own cache spares training from reading the masks again.
    check_images(train_ds, subset)
    val_ds = None
    if options.val_subset:
        try:
            val_ds = load_subset(dataset_dir, options.val_subset)
        except InputError:  # no validation images here: train without validation
            val_ds = None
        else:
            check_images(val_ds, options.val_subset)
    model = modellib.MaskRCNN("training", config, logs)
    start = load_start_weights(model, weights)
    log.info("start weights: %s, epoch %d, run folder %s", start, model.epoch, model.log_dir)
    callbacks = []
    if val_ds is not None and options.eval_every > 0:
        validation = NucleusModel.of_training(config, overrides, profile, logs)
        callbacks.append(MapCallback(model, validation, val_ds, every=options.eval_every,
                                     first=options.eval_first, limit=options.eval_limit))
    augmentation = (build_augmentation(rotate90=options.rotate90, appearance=options.appearance,
                                       scale=options.scale, aspect=options.aspect,
                                       dim=options.dim,
                                       defocus=options.defocus,
                                       dim_toward=options.dim_toward,
                                       tissue=options.tissue)
                    if options.augment else None)
    for stage, learning_rate in _with_lr_drop(schedule, config.LEARNING_RATE, options.lr_drop):
        model.train(train_ds, val_ds if config.VALIDATION_STEPS else None,
                    learning_rate=learning_rate, epochs=stage.until_epoch,
                    layers=stage.layers, augmentation=augmentation, custom_callbacks=callbacks)
    return model


def _with_extra(train_ds: NucleusDataset, folders: list[str]) -> NucleusDataset:
    """The training set with the labelled images of ``folders`` added."""
    extra = [load_labelled_folder(folder) for folder in folders]
    for folder, dataset in zip(folders, extra):
        log.info("extra training images from %s: %d", folder, len(dataset.image_ids))
    return combined(train_ds, *extra)


def _resample(train_ds: NucleusDataset, oversample_kinds: dict[str, int] | None,
              exclude: list[str] | None) -> NucleusDataset:
    """The training set with ``exclude``'d kinds dropped and rare kinds repeated."""
    log.info("training images by kind: %s", kind_counts(train_ds))
    if exclude:
        train_ds = exclude_kinds(train_ds, exclude)
    if oversample_kinds:
        train_ds = oversample(train_ds, oversample_kinds)
    log.info("training entries by kind after resampling: %s", kind_counts(train_ds))
    return train_ds


def _with_lr_drop(stages: list[Stage], learning_rate: float,
                  lr_drop: int | None) -> list[tuple[Stage, float]]:
    """(stage, learning rate) pairs: a tenth of the rate from epoch ``lr_drop`` on.

    A stage that spans ``lr_drop`` is split in two with the same layers.
    """
    if lr_drop is None:
        return [(stage, learning_rate) for stage in stages]
    if lr_drop < 1:
        raise InputError(f"--lr-drop must be an epoch number of 1 or more, got {lr_drop}")
    out, start = [], 0
    for stage in stages:
        if stage.until_epoch <= lr_drop - 1:
            out.append((stage, learning_rate))
        elif start >= lr_drop - 1:
            out.append((stage, learning_rate / 10))
        else:
            out.append((Stage(stage.layers, lr_drop - 1), learning_rate))
            out.append((stage, learning_rate / 10))
        start = stage.until_epoch
    return out
