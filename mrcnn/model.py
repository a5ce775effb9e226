"""``MaskRCNN``: matterport's public facade (train, detect, load_weights, find_last) on Keras 3."""
from __future__ import annotations

import datetime
import logging
import os
import re
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from mrcnn import utils, weights as weights_io
from mrcnn.data import DataGenerator, mold_image
from mrcnn.network import MaskRCNNNet, anchors_for_shape

log = logging.getLogger(__name__)

# Layer groups for ``train(layers=...)``, as regular expressions over layer names.
LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}

_CHECKPOINT_RE = re.compile(
    r".*[/\\][\w-]+?(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]mask\_rcnn\_[\w-]+?(\d{4})\.h5$")


def _strategy(config) -> tf.distribute.Strategy:
    """MirroredStrategy over GPU_COUNT devices (GPUs, or logical CPUs when there is no GPU)."""
    if config.GPU_COUNT <= 1:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus if len(gpus) >= config.GPU_COUNT else tf.config.list_logical_devices("CPU")
    if len(devices) < config.GPU_COUNT:
        raise ValueError(f"GPU_COUNT={config.GPU_COUNT} but only {len(devices)} devices are "
                         "visible")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:config.GPU_COUNT]])


def find_last_checkpoint(model_dir: str, name: str | None) -> str:
    """Last checkpoint of the latest run named ``<name><timestamp>`` under ``model_dir``
    (no model needed, so callers can look before building one)."""
    name = (name or "model").lower()
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: no such folder, so no checkpoint to resume from")
    run_name = re.compile(re.escape(name) + r"\d{8}T\d{4}")
    runs = sorted(d for d in os.listdir(model_dir)
                  if run_name.fullmatch(d) and os.path.isdir(os.path.join(model_dir, d)))
    for run in reversed(runs):
        folder = os.path.join(model_dir, run)
        checkpoints = sorted(f for f in os.listdir(folder)
                             if f.startswith("mask_rcnn") and f.endswith(".h5"))
        if checkpoints:
            return os.path.join(folder, checkpoints[-1])
    raise FileNotFoundError(f"Could not find a checkpoint of '{name}' in {model_dir}")


class CheckpointCallback(keras.callbacks.Callback):
    """Save weights after every epoch, atomically, with the configuration inside the file."""

    def __init__(self, owner: "MaskRCNN"):
        super().__init__()
        self.owner = owner

    def on_epoch_end(self, epoch, logs=None):
        path = self.owner.checkpoint_path.format(epoch=epoch + 1)
        weights_io.save_weights(self.owner.keras_model, path,
                                attrs={**weights_io.config_attrs(self.owner.config),
                                       "epoch": epoch + 1})
        self.owner.epoch = epoch + 1


class MaskRCNN:
    """Mask R-CNN with matterport's API.

    ``mode`` is ``"training"`` or ``"inference"``; both build the same network, the mode only
    says which methods make sense. ``model_dir`` holds one folder per training run with a
    checkpoint per epoch.
    """

    def __init__(self, mode: str, config, model_dir: str):
        assert mode in ["training", "inference"], f"unknown mode {mode!r}"
        self.mode = mode
        self.config = config
        self.model_dir = model_dir
        self.strategy = _strategy(config)
        # The dtype policy is global in Keras: set it for this model's layers only.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(config.MIXED_PRECISION or "float32")
        try:
            with self.strategy.scope():
                self.keras_model = MaskRCNNNet(config)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        self._anchor_cache: dict[tuple, np.ndarray] = {}
        self.set_log_dir()

    # ------------------------------------------------------------------ files
    def set_log_dir(self, model_path: str | None = None) -> None:
        """Choose the run folder and epoch: a new run, or the run a checkpoint came from."""
        self.epoch = 0
        now = datetime.datetime.now()
        if model_path:
            m = _CHECKPOINT_RE.match(os.path.abspath(model_path))
            if m:
                now = datetime.datetime(*[int(g) for g in m.groups()[:5]])
                self.epoch = int(m.group(6))
        name = (self.config.NAME or "model").lower()
        self.log_dir = os.path.join(self.model_dir, f"{name}{now:%Y%m%dT%H%M}")
        self.checkpoint_path = os.path.join(self.log_dir, f"mask_rcnn_{name}_{{epoch:04d}}.h5")

    def find_last(self) -> str:
        """Path of the last checkpoint of the latest run of this configuration's NAME."""
        return find_last_checkpoint(self.model_dir, self.config.NAME)

    def load_weights(self, filepath: str, by_name: bool = False,
                     exclude: Iterable[str] | None = None) -> list[str]:
        """Load a weights file (ours or matterport's Keras 2 HDF5); see :mod:`mrcnn.weights`."""
        filepath = os.fspath(filepath)
        if not os.path.exists(filepath):
            hint = ""
            if os.path.basename(filepath) == "mask_rcnn_coco.h5":
                hint = f" Download it from {weights_io.COCO_WEIGHTS_URL} and pass its path."
            elif "resnet50_weights" in os.path.basename(filepath):
                hint = (f" Download it from {weights_io.IMAGENET_RESNET50_URL} into "
                        "~/.keras/models/.")
            raise FileNotFoundError(f"{filepath}: weights file not found.{hint}")
        loaded = weights_io.load_weights(self.keras_model, filepath, by_name=by_name,
                                         exclude=exclude)
        self.set_log_dir(filepath)
        return loaded

    def save_weights(self, filepath: str, dtype: str | None = None) -> None:
        weights_io.save_weights(self.keras_model, filepath, dtype=dtype,
                                attrs={**weights_io.config_attrs(self.config),
                                       "epoch": self.epoch})

    def get_imagenet_weights(self) -> str:
        """Path of the ImageNet ResNet-50 file (Keras 2 layout, matterport's layer names).

        Looked up in ``~/.keras/models``; fetched from its usual release address when missing.
        """
        local = os.path.join(os.path.expanduser("~"), ".keras", "models",
                             weights_io.IMAGENET_RESNET50_FILE)
        if os.path.exists(local):
            return local
        try:
            return keras.utils.get_file(weights_io.IMAGENET_RESNET50_FILE,
                                        weights_io.IMAGENET_RESNET50_URL,
                                        cache_subdir="models")
        except Exception as e:  # no network: say what to fetch and where to put it
            raise FileNotFoundError(
                f"{local}: ImageNet ResNet-50 weights not found and could not be downloaded "
                f"({type(e).__name__}). Download {weights_io.IMAGENET_RESNET50_URL} into "
                "~/.keras/models/ or pass the file's path.") from None

    # ------------------------------------------------------------------ training
    def set_trainable(self, layer_regex: str, verbose: int = 0) -> list[str]:
        """Make layers whose names match ``layer_regex`` trainable, freeze the others."""
        trainable = []
        for unit in weights_io.weight_units(self.keras_model):
            on = bool(re.fullmatch(layer_regex, unit.name))
            unit.trainable = on
            if on:
                trainable.append(unit.name)
        if verbose:
            log.info("trainable layers: %s", ", ".join(trainable))
        return trainable

    def compile(self, learning_rate: float, momentum: float) -> None:
        with self.strategy.scope():
            optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                             global_clipnorm=self.config.GRADIENT_CLIP_NORM)
            self.keras_model.compile(optimizer=optimizer, jit_compile=False)

    def train(self, train_dataset, val_dataset, learning_rate: float, epochs: int, layers: str,
              augmentation=None, custom_callbacks: list | None = None,
              no_augmentation_sources=None, verbose: int = 1) -> keras.callbacks.History | None:
        """Train the layers ``layers`` (a group name or a regex) up to epoch ``epochs``.

        Training resumes at ``self.epoch`` (set by :meth:`load_weights` from a checkpoint name),
        so calling ``train`` again after an interruption continues where it stopped.
        """
        assert self.mode == "training", "Create model in training mode."
        regex = LAYER_REGEX.get(layers, layers)
        if self.epoch >= epochs:
            log.info("already at epoch %d >= %d: nothing to train", self.epoch, epochs)
            return None
        anchors = self.keras_model.train_anchors
        train_gen = DataGenerator(train_dataset, self.config, anchors,
                                  self.config.STEPS_PER_EPOCH, shuffle=True,
                                  augmentation=augmentation)
        val_gen = None
        if val_dataset is not None and self.config.VALIDATION_STEPS:
            val_gen = DataGenerator(val_dataset, self.config, anchors,
                                    self.config.VALIDATION_STEPS, shuffle=True)
        os.makedirs(self.log_dir, exist_ok=True)
        callbacks = [
            keras.callbacks.TensorBoard(log_dir=self.log_dir, histogram_freq=0,
                                        write_graph=False, profile_batch=0),
            keras.callbacks.CSVLogger(os.path.join(self.log_dir, "history.csv"), append=True),
            CheckpointCallback(self),
        ] + list(custom_callbacks or [])
        log.info("Starting at epoch %d. LR=%s. Checkpoint path: %s", self.epoch, learning_rate,
                 self.checkpoint_path)
        self.set_trainable(regex)
        self.compile(learning_rate, self.config.LEARNING_MOMENTUM)
        history = self.keras_model.fit(train_gen, initial_epoch=self.epoch, epochs=epochs,
                                       steps_per_epoch=self.config.STEPS_PER_EPOCH,
                                       callbacks=callbacks, validation_data=val_gen,
                                       validation_steps=self.config.VALIDATION_STEPS
                                       if val_gen else None, verbose=verbose)
        self.epoch = max(self.epoch, epochs)
        return history

    # ------------------------------------------------------------------ inference
    def get_anchors(self, image_shape) -> np.ndarray:
        """Normalised anchors for a molded image shape (cached)."""
        key = tuple(int(s) for s in image_shape[:2])
        if key not in self._anchor_cache:
            pixels = anchors_for_shape(self.config, key)
            self._anchor_cache[key] = utils.norm_boxes(pixels, key).astype(np.float32)
        return self._anchor_cache[key]

    def mold_inputs(self, images: list[np.ndarray]):
        """Resize and normalise images as the configuration says; returns molded images,
        image metas and windows."""
        molded, metas, windows = [], [], []
        for image in images:
            image = utils.normalize_image(utils.to_rgb_uint8(image),
                                          self.config.IMAGE_NORMALIZATION)
            resized, window, scale, _, _ = utils.resize_image(
                image, min_dim=self.config.IMAGE_MIN_DIM, min_scale=self.config.IMAGE_MIN_SCALE,
                max_dim=self.config.IMAGE_MAX_DIM, mode=self.config.IMAGE_RESIZE_MODE)
            molded.append(mold_image(resized, self.config))
            metas.append(utils.compose_image_meta(0, image.shape, resized.shape, window, scale,
                                                  np.zeros([self.config.NUM_CLASSES], np.int32)))
            windows.append(window)
        return molded, np.stack(metas), np.array(windows)

    def run_stages(self, image: np.ndarray) -> tuple[dict, dict]:
        """Every intermediate output of the inference graph for one image (for notebooks),
        plus the molding facts (molded image, window, scale)."""
        if self.config.IMAGE_RESIZE_MODE == "crop":
            raise ValueError("IMAGE_RESIZE_MODE 'crop' is for training; use an inference "
                             "configuration with 'pad64', 'square' or 'none'")
        molded, metas, windows = self.mold_inputs([image])
        molded = molded[0]
        window = utils.norm_boxes(np.array(windows[0], np.float32), molded.shape[:2])
        anchors = self.get_anchors(molded.shape)
        out = self.keras_model.infer(tf.constant(molded[None]), tf.constant(anchors),
                                     tf.constant(window, tf.float32))
        out = {k: v.numpy() for k, v in out.items()}
        facts = {"molded_image": molded, "window": windows[0], "image_meta": metas[0],
                 "anchors": anchors, "original_shape": image.shape}
        return out, facts

    def unmold_detections(self, detections: np.ndarray, mrcnn_mask: np.ndarray,
                          original_image_shape, image_shape, window) -> tuple:
        """Detections in normalised molded coordinates -> pixel boxes and full-size masks."""
        boxes = detections[:, :4]
        class_ids = detections[:, 4].astype(np.int32)
        scores = detections[:, 5]
        wy1, wx1, wy2, wx2 = utils.norm_boxes(np.array(window, np.float32), image_shape[:2])
        wh, ww = wy2 - wy1, wx2 - wx1
        boxes = (boxes - np.array([wy1, wx1, wy1, wx1])) / np.array([wh, ww, wh, ww])
        boxes = utils.denorm_boxes(boxes, original_image_shape[:2])
        keep = np.where((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)[0]
        boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], \
            mrcnn_mask[keep]
        full = np.zeros(tuple(original_image_shape[:2]) + (len(keep),), dtype=bool)
        for i in range(len(keep)):
            full[:, :, i] = _paste_mask(masks[i], boxes[i], original_image_shape)
        return boxes, class_ids, scores, full

    def detect(self, images: list[np.ndarray], verbose: int = 0) -> list[dict]:
        """Detect instances in each image; returns one dict per image with ``rois`` [N, 4],
        ``class_ids`` [N], ``scores`` [N] and ``masks`` [H, W, N] (full-size booleans)."""
        assert self.mode == "inference", "Create model in inference mode."
        results = []
        for image in images:
            if verbose:
                log.info("Processing image of shape %s", np.shape(image))
            out, facts = self.run_stages(image)
            rois, class_ids, scores, masks = self.unmold_detections(
                out["detections"], out["mrcnn_mask"], facts["original_shape"],
                facts["molded_image"].shape, facts["window"])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores,
                            "masks": masks})
        return results

    def debug_model(self, layer_names: list[str]) -> keras.Model:
        """A model from the molded image to the outputs of named backbone/FPN layers
        (Keras 3 cannot walk the graph as matterport's ``run_graph`` did)."""
        backbone = self.keras_model.backbone
        outputs = [backbone.get_layer(n).output for n in layer_names]
        return keras.Model(backbone.input, outputs, name="debug")


def _paste_mask(mask: np.ndarray, box: np.ndarray, image_shape) -> np.ndarray:
    """A 28x28 soft mask resized into its box, thresholded at 0.5, on a full-size canvas."""
    import cv2

    y1, x1, y2, x2 = [int(v) for v in box]
    full = np.zeros(image_shape[:2], dtype=bool)
    y1c, x1c = max(y1, 0), max(x1, 0)
    y2c, x2c = min(y2, image_shape[0]), min(x2, image_shape[1])
    if y2c <= y1c or x2c <= x1c:
        return full
    resized = cv2.resize(mask.astype(np.float32), (x2 - x1, y2 - y1),
                         interpolation=cv2.INTER_LINEAR)
    full[y1c:y2c, x1c:x2c] = resized[y1c - y1:y2c - y1, x1c - x1:x2c - x1] >= 0.5
    return full
