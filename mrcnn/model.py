"""``MaskRCNN``: matterport's public facade (train, detect, load_weights, find_last) on Keras 3."""
from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import threading
from collections import OrderedDict
from typing import Any, Iterable

import keras
import numpy as np
from keras import ops

from mrcnn import backend, backend_ops, data, distribute, execution, heads, utils
from mrcnn import weights as weights_io
from mrcnn.data import DataGenerator, mold_image, unmold_image  # noqa: F401 (matterport names)
from mrcnn.network import MaskRCNNNet, anchors_for_shape
from mrcnn.proposals import top_anchors
from mrcnn.roi_align import pyramid_roi_align
from mrcnn.runs import RunFolder, mask_rcnn_layout
from mrcnn.utils import compose_image_meta, parse_image_meta  # noqa: F401 (matterport names)

logger = logging.getLogger(__name__)


def log(text: str, array: np.ndarray | None = None) -> None:
    """Print ``text`` and, given an array, its shape, min, max and dtype (matterport's ``log``).

    The notebooks call it on every intermediate result to check shapes and value ranges.
    """
    if array is not None:
        array = np.asarray(array)
        text = f"{text:<25}shape: {str(array.shape):<20}  "
        if array.size:
            text += f"min: {float(array.min()):10.5f}  max: {float(array.max()):10.5f}"
        else:
            text += f"min: {'':10}  max: {'':10}"
        text += f"  {array.dtype}"
    print(text)


def load_image_gt(dataset, config, image_id: int, augment: bool = False, augmentation=None,
                  use_mini_mask: bool = False):
    """matterport's ``load_image_gt``: image, image_meta, class_ids, boxes and masks of one image,
    resized as the configuration says; full-size masks unless ``use_mini_mask``.

    ``augment`` (deprecated in matterport too) flips left-right half of the time;
    ``augmentation`` is an imgaug augmenter. See :func:`mrcnn.data.load_image_gt`.
    """
    return data.load_image_gt(dataset, config, image_id, augment=augment,
                              augmentation=augmentation, use_mini_mask=use_mini_mask)


def build_rpn_targets(image_shape, anchors: np.ndarray, gt_class_ids: np.ndarray,
                      gt_boxes: np.ndarray, config):
    """matterport's signature for :func:`mrcnn.data.build_rpn_targets` (``image_shape`` is
    not needed: anchors and boxes are both in pixels of the molded image)."""
    return data.build_rpn_targets(anchors, gt_class_ids, gt_boxes, config)

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


class _OneDevice:
    """The strategy of backends that distribute through ``keras.distribution`` instead."""
    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def _strategy(config):
    """Under TensorFlow: MirroredStrategy over GPU_COUNT devices (GPUs, or logical CPUs when
    there is no GPU), or the multi-worker strategy of :mod:`mrcnn.distribute` when one was
    made. Under JAX, GPU_COUNT > 1 sets Keras's DataParallel distribution over that many
    devices (GPUs, or CPU devices when there are no GPUs)."""
    if keras.backend.backend() != "tensorflow":
        if config.GPU_COUNT > 1:
            _data_parallel(config.GPU_COUNT)
        return _OneDevice()
    import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

    if distribute.active() is not None:
        return distribute.active()
    if config.GPU_COUNT <= 1:
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus if len(gpus) >= config.GPU_COUNT else tf.config.list_logical_devices("CPU")
    if len(devices) < config.GPU_COUNT:
        raise ValueError(f"GPU_COUNT={config.GPU_COUNT} but only {len(devices)} devices are "
                         "visible")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:config.GPU_COUNT]])


def _data_parallel(count: int) -> None:
    """Keras's DataParallel over ``count`` devices of one kind (GPUs, else CPUs: JAX makes
    several host devices with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``), for
    every model made next: variables replicated on each device, each batch split along its
    first axis. Keras takes the distribution's devices when a model creates its variables."""
    devices: list[str] = []
    for kind in ("gpu", "cpu"):
        try:
            devices = keras.distribution.list_devices(kind)
        except RuntimeError:        # JAX raises for a platform that it does not have
            devices = []
        if len(devices) >= count:
            break
    if len(devices) < count:
        raise ValueError(f"GPU_COUNT={count} but only {len(devices)} devices are visible")
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=devices[:count]))


def find_last_checkpoint(model_dir: str, name: str | None) -> str:
    """Last checkpoint of the latest run named ``<name><timestamp>`` under ``model_dir``
    (no model needed, so callers can look before building one)."""
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"{model_dir}: no such folder, so no checkpoint to resume from")
    layout = mask_rcnn_layout(name)
    found = layout.find_last(model_dir)
    if found is None:
        raise FileNotFoundError(f"Could not find a checkpoint of '{layout.prefix}' in {model_dir}")
    return found[0]


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


#: matterport's names of inference tensors that :meth:`MaskRCNN.run_graph` computes, and what
#: each holds (B images, A anchors, C classes; boxes normalised to the molded image).
GRAPH_NODES = {
    "input_image": "molded images [B, H, W, 3]",
    "input_image_meta": "image metas [B, 12 + C]",
    "input_anchors": "anchors [B, A, 4]",
    "rpn_class_logits": "RPN logits [B, A, 2]",
    "rpn_class": "RPN probabilities [B, A, 2]",
    "rpn_bbox": "RPN box deltas [B, A, 4]",
    "ROI": "proposals [B, POST_NMS_ROIS_INFERENCE, 4], zero padded",
    "mrcnn_class": "class probabilities of the proposals [B, POST_NMS_ROIS_INFERENCE, C]",
    "mrcnn_bbox": "box deltas of the proposals [B, POST_NMS_ROIS_INFERENCE, C, 4]",
    "mrcnn_detection": "detections (y1, x1, y2, x2, class, score) [B, DETECTION_MAX_INSTANCES, 6]",
    "mrcnn_mask": "masks of every class [B, DETECTION_MAX_INSTANCES, 28, 28, C]",
}
#: The proposal layer's steps, by the names :meth:`MaskRCNN.ancestor` takes.
PROPOSAL_STEPS = {
    "ROI/pre_nms_anchors": "best PRE_NMS_LIMIT anchors by RPN score [B, K, 4]",
    "ROI/refined_anchors": "those anchors moved by the RPN deltas [B, K, 4]",
    "ROI/refined_anchors_clipped": "the same, clipped to the image [B, K, 4]",
    "ROI/rpn_non_max_suppression": "indices into those K boxes that NMS keeps [N]",
}
_UNBATCHED = {"ROI/rpn_non_max_suppression"}


class GraphNode:
    """One of matterport's named inference tensors, which Keras 3 keeps no graph to hold.

    ``keras_model.get_layer(name)`` and :meth:`MaskRCNN.ancestor` give these, and
    :meth:`MaskRCNN.run_graph` computes them. ``.output`` is the node itself, so matterport's
    ``get_layer(name).output`` works; other attributes are those of the Keras layer of that
    name (``mrcnn_mask`` ...), where there is one.
    """

    def __init__(self, name: str, layer: keras.layers.Layer | None = None):
        self.name = name
        self.layer = layer

    @property
    def output(self) -> "GraphNode":
        return self

    def __getattr__(self, attr: str):
        layer = self.__dict__.get("layer")
        if layer is None:
            raise AttributeError(f"'{self.__dict__.get('name')}' is a tensor of the inference "
                                 f"graph, not a Keras layer: it has no '{attr}'")
        return getattr(layer, attr)

    def __repr__(self) -> str:
        return f"<inference graph node {self.name!r}>"


class InspectableNet(MaskRCNNNet):
    """The network, whose ``get_layer`` knows matterport's names.

    ``get_layer`` also finds layers inside the backbone and the RPN model (matterport's model
    was flat), and gives a :class:`GraphNode` for the names of :data:`GRAPH_NODES`.
    """

    def get_layer(self, name: str | None = None, index: int | None = None):
        if name is None or index is not None:
            return super().get_layer(name, index)
        layer = None
        for model in (super(), self.backbone, self.rpn_model):
            try:
                layer = model.get_layer(name)
                break
            except ValueError:
                continue
        if name in GRAPH_NODES:
            return GraphNode(name, layer)
        if layer is None:
            raise ValueError(f"No such layer: {name}. The inference graph's tensors are "
                             f"{', '.join(GRAPH_NODES)}")
        return layer


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
        if distribute.active() is not None:
            # a global batch over every worker's replicas, each replica IMAGES_PER_GPU
            config.BATCH_SIZE = config.IMAGES_PER_GPU * self.strategy.num_replicas_in_sync
        # The dtype policy is global in Keras: set it for this model's layers only.
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy(config.MIXED_PRECISION or "float32")
        try:
            with self.strategy.scope():
                self.keras_model = InspectableNet(config)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        self._anchor_cache: dict[tuple, np.ndarray] = {}
        # one network call at a time: threads may mold and unmold beside it (the tiles of a
        # large image, nucleus.inference.large.serial_tiles) without a second call's memory
        self._network_lock = threading.Lock()
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
        run = mask_rcnn_layout(self.config.NAME).folder(self.model_dir, now)
        self.log_dir = run.path
        self.checkpoint_path = os.path.join(self.log_dir, run.layout.checkpoint)

    @property
    def run_folder(self) -> RunFolder:
        """The run folder of :attr:`log_dir`: its checkpoints, history.csv and val_map.csv."""
        return RunFolder(self.log_dir, mask_rcnn_layout(self.config.NAME))

    def find_last(self) -> str:
        """Path of the last checkpoint of the latest run of this configuration's NAME."""
        return find_last_checkpoint(self.model_dir, self.config.NAME)

    def load_weights(self, filepath: str, by_name: bool = False,
                     exclude: Iterable[str] | None = None) -> list[str]:
        """Load a weights file (ours or matterport's Keras 2 HDF5); see :mod:`mrcnn.weights`."""
        self._check_not_folded("load weights into")
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
        self._check_not_folded("save")
        weights_io.save_weights(self.keras_model, filepath, dtype=dtype,
                                attrs={**weights_io.config_attrs(self.config),
                                       "epoch": self.epoch})

    def fold_batch_norms(self) -> int:
        """Inference mode: fold each BatchNorm into its convolution, the same detections about
        a quarter faster on the CPU (:meth:`mrcnn.network.MaskRCNNNet.fold_batch_norms`). Call
        it after loading weights; the model cannot load, save or train afterwards."""
        if self.mode != "inference":
            raise ValueError("BatchNorm can only be folded in an inference model")
        return self.keras_model.fold_batch_norms()

    def _check_not_folded(self, what: str) -> None:
        if self.keras_model.batch_norms_folded:
            raise ValueError(f"cannot {what} a model whose BatchNorm layers are folded into its "
                             "convolutions (fold_batch_norms); build a new model")

    def get_imagenet_weights(self) -> str:
        """Path of the ImageNet ResNet-50 file (:func:`mrcnn.weights.get_imagenet_weights`)."""
        return weights_io.get_imagenet_weights()

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
            logger.info("trainable layers: %s", ", ".join(trainable))
        return trainable

    def compile(self, learning_rate: float, momentum: float) -> None:
        with self.strategy.scope():
            optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum,
                                             global_clipnorm=self.config.GRADIENT_CLIP_NORM)
            # TensorFlow runs the step as a graph (XLA is slower on these CPUs); JAX compiles
            self.keras_model.compile(optimizer=optimizer,
                                     jit_compile=keras.backend.backend() != "tensorflow")

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
            if verbose:
                print(f"Already at epoch {self.epoch} >= {epochs}: nothing to train")
            return None
        anchors = self.keras_model.train_anchors
        # each worker of a multi-worker run loads its own share of the global batch
        worker_batch = self.config.BATCH_SIZE // distribute.worker_count()
        train_gen = DataGenerator(train_dataset, self.config, anchors,
                                  self.config.STEPS_PER_EPOCH, shuffle=True,
                                  augmentation=augmentation, batch_size=worker_batch)
        val_gen = None
        if val_dataset is not None and self.config.VALIDATION_STEPS:
            val_gen = DataGenerator(val_dataset, self.config, anchors,
                                    self.config.VALIDATION_STEPS, shuffle=True,
                                    batch_size=worker_batch)
        callbacks = list(custom_callbacks or [])
        if distribute.is_chief():      # other workers of a multi-worker run write nothing
            os.makedirs(self.log_dir, exist_ok=True)
            # TensorBoard curves under every backend: Keras's callback under TensorFlow, the
            # tensorboard package's own writer under the others
            callbacks[:0] = [
                *backend.training_callbacks_for_logging(self.log_dir),
                keras.callbacks.CSVLogger(self.run_folder.history, append=True),
                CheckpointCallback(self)]
        trainable = self.set_trainable(regex)
        if verbose:  # what matterport printed
            print(f"\nStarting at epoch {self.epoch}. LR={learning_rate}\n")
            print(f"Checkpoint Path: {self.checkpoint_path}")
            print(f"Selecting layers to train: {len(trainable)} of "
                  f"{len(weights_io.weight_units(self.keras_model))} layers with weights "
                  f"match {layers!r}")
        self.compile(learning_rate, self.config.LEARNING_MOMENTUM)
        if distribute.active() is not None:
            train_gen = distribute.distributed_batches(train_gen, self.strategy)
            if val_gen is not None:
                val_gen = distribute.distributed_batches(val_gen, self.strategy)
        history = self.keras_model.fit(train_gen, initial_epoch=self.epoch, epochs=epochs,
                                       shuffle=False,   # the generators shuffle
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
            image = self.config.normalize_image(utils.to_rgb_uint8(image))
            resized, window, scale, _, _ = utils.resize_image(
                image, min_dim=self.config.IMAGE_MIN_DIM, min_scale=self.config.IMAGE_MIN_SCALE,
                max_dim=self.config.IMAGE_MAX_DIM, mode=self.config.IMAGE_RESIZE_MODE)
            molded.append(mold_image(resized, self.config))
            metas.append(utils.compose_image_meta(0, image.shape, resized.shape, window, scale,
                                                  np.zeros([self.config.NUM_CLASSES], np.int32)))
            windows.append(window)
        return molded, np.stack(metas), np.array(windows)

    def infer_molded(self, molded: np.ndarray, window,
                     sized: bool = False) -> dict[str, np.ndarray]:
        """The compiled inference graph on one molded image; ``window`` in its pixels. Its raw
        outputs (proposals, detections, mask logits), without unmolding: what :meth:`detect`,
        :meth:`run_stages` and :meth:`detect_molded` build on, and what benchmarks/speed.py
        times alone. ``sized``: for many images of one size, such as tiles (TensorFlow traces
        a graph for the size: :data:`mrcnn.network.SIZED_GRAPHS`)."""
        shape = original = molded.shape[:2]
        if not backend_ops.uses_fused_kernels():
            # a compiling backend: pad to a bucket size (with the molded value of black, as
            # resizing pads), so many image sizes share a few compiled graphs
            shape = execution.image_bucket(*shape, step=self.config.INFERENCE_SHAPE_STEP)
            molded = execution.pad_to(molded, *shape, -np.asarray(self.config.MEAN_PIXEL))
        norm_window = utils.norm_boxes(np.array(window, np.float32), shape)
        with self._network_lock:
            out = self.keras_model.infer(molded[None], self.get_anchors(shape), norm_window,
                                         sized)
        # the (height, width) the network ran on: the molded image's, or its bucket's
        out["molded_shape"] = np.asarray(shape, np.int32)
        if shape != original:
            # normalised to the padded image: back to the molded image's coordinates
            scale = np.array([(shape[0] - 1) / (original[0] - 1), (shape[1] - 1) /
                              (original[1] - 1)] * 2, np.float32)
            out["proposals"] = out["proposals"] * scale
            out["detections"][:, :4] = out["detections"][:, :4] * scale
        return out

    def run_stages(self, image: np.ndarray, sized: bool = False) -> tuple[dict, dict]:
        """Every intermediate output of the inference graph for one image (for notebooks),
        plus the molding facts (molded image, window, scale); ``sized`` as
        :meth:`infer_molded`."""
        if self.config.IMAGE_RESIZE_MODE == "crop":
            raise ValueError("IMAGE_RESIZE_MODE 'crop' is for training; use an inference "
                             "configuration with 'pad64', 'square' or 'none'")
        molded, metas, windows = self.mold_inputs([image])
        molded = molded[0]
        out = self.infer_molded(molded, windows[0], sized)
        facts = {"molded_image": molded, "window": windows[0], "image_meta": metas[0],
                 "anchors": self.get_anchors(molded.shape), "original_shape": image.shape}
        return out, facts

    def unmold_detections(self, detections: np.ndarray, mrcnn_mask: np.ndarray,
                          original_image_shape, image_shape, window) -> tuple:
        """Detections in normalised molded coordinates -> pixel boxes and full-size masks.

        With ``DETECTION_MASK_OVERLAP = "confidence"`` the masks come back disjoint: a pixel
        several masks cover goes to the detection with the highest score x mask probability
        there (a mask can end up empty); with ``"keep"`` (matterport) masks may overlap.
        """
        boxes, class_ids, scores, pasted = self._paste(detections, mrcnn_mask,
                                                       original_image_shape, image_shape, window)
        full = np.zeros(tuple(original_image_shape[:2]) + (len(boxes),), dtype=bool)
        for i, (where, on) in enumerate(pasted):
            full[where + (i,)] = on
        return boxes, class_ids, scores, full

    def unmold_instances(self, detections: np.ndarray, mrcnn_mask: np.ndarray,
                         original_image_shape, image_shape, window) -> tuple:
        """:meth:`unmold_detections` without the full-size stack: for each detection left with
        at least one pixel, its tight box (y1, x1, y2, x2; ends exclusive) and the boolean
        mask inside it, and its score. Memory and time grow with the nuclei's areas, not with
        the image area times their number (a [1024, 1024, 400] stack is 400 MB).

        Needs ``DETECTION_MASK_OVERLAP = "confidence"`` (disjoint masks); the result equals
        :meth:`unmold_detections`' masks with the empty ones dropped, cropped to their boxes.
        """
        if self.config.DETECTION_MASK_OVERLAP != "confidence":
            raise ValueError("unmold_instances needs DETECTION_MASK_OVERLAP = 'confidence'")
        _, _, scores, pasted = self._paste(detections, mrcnn_mask, original_image_shape,
                                           image_shape, window)
        boxes, masks, kept = [], [], []
        for i, ((rows, cols), on) in enumerate(pasted):
            if not on.any():
                continue
            ys, xs = np.flatnonzero(on.any(axis=1)), np.flatnonzero(on.any(axis=0))
            y0, y1, x0, x1 = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
            boxes.append((rows.start + y0, cols.start + x0, rows.start + y1, cols.start + x1))
            masks.append(on[y0:y1, x0:x1])
            kept.append(i)
        return (np.asarray(boxes, np.int64).reshape(-1, 4), masks,
                np.asarray(scores)[np.asarray(kept, np.int64)])

    def _paste(self, detections: np.ndarray, mrcnn_mask: np.ndarray, original_image_shape,
               image_shape, window) -> tuple:
        """The detections' boxes, class ids and scores, and per detection ``(where, on)``: the
        canvas slices of its box and its boolean mask there (after the overlap rule)."""
        boxes = detections[:, :4]
        class_ids = detections[:, 4].astype(np.int32)
        scores = detections[:, 5]
        wy1, wx1, wy2, wx2 = utils.norm_boxes(np.array(window, np.float32), image_shape[:2])
        wh, ww = wy2 - wy1, wx2 - wx1
        boxes = (boxes - np.array([wy1, wx1, wy1, wx1])) / np.array([wh, ww, wh, ww])
        # Masks go onto the boxes as the box head gives them (fractional pixels, as
        # denorm_boxes places them before rounding); the returned boxes are rounded.
        h, w = original_image_shape[:2]
        exact = boxes * np.array([h - 1, w - 1, h - 1, w - 1]) + np.array([0, 0, 1, 1])
        boxes = utils.denorm_boxes(boxes, original_image_shape[:2])
        keep = np.where((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0)[0]
        boxes, class_ids, scores, masks = boxes[keep], class_ids[keep], scores[keep], \
            mrcnn_mask[keep]
        rule = self.config.DETECTION_MASK_OVERLAP
        if rule not in ("keep", "confidence"):
            raise ValueError(f"DETECTION_MASK_OVERLAP {rule!r}: use 'keep' or 'confidence'")
        owned = rule == "confidence"
        if owned:   # per pixel: the best score x mask probability so far, and whose it is
            best = np.zeros(original_image_shape[:2], np.float64)
            owner = np.full(original_image_shape[:2], -1, np.int64)
        pasted = []
        threshold = self.config.DETECTION_MASK_THRESHOLD
        for i, (where, values) in enumerate(utils.box_masks(masks, exact[keep],
                                                             original_image_shape)):
            on = values >= threshold
            if owned:   # in place on the box's views of the canvases
                claim = values * scores[i]
                wins = on & (claim > best[where])
                best[where][wins] = claim[wins]
                owner[where][wins] = i
            pasted.append((where, on))
        if owned:
            pasted = [(where, owner[where] == i) for i, (where, _) in enumerate(pasted)]
        return boxes, class_ids, scores, pasted

    def detect(self, images: list[np.ndarray], verbose: int = 0) -> list[dict]:
        """Detect instances in each image; returns one dict per image with ``rois`` [N, 4],
        ``class_ids`` [N], ``scores`` [N] and ``masks`` [H, W, N] (full-size booleans).

        ``verbose`` prints what matterport's did: the image count, then per image the shape
        and value range of the image, the molded image, its meta and the anchors.
        """
        assert self.mode == "inference", "Create model in inference mode."
        if verbose:
            print(f"Processing {len(images)} images")
        results = []
        for image in images:
            out, facts = self.run_stages(image)
            if verbose:
                log("image", image)
                log("molded_images", facts["molded_image"][None])
                log("image_metas", facts["image_meta"][None])
                log("anchors", facts["anchors"][None])
            rois, class_ids, scores, masks = self.unmold_detections(
                out["detections"], out["mrcnn_mask"], facts["original_shape"],
                facts["molded_image"].shape, facts["window"])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores,
                            "masks": masks})
        return results

    def detect_instances(self, image: np.ndarray) -> tuple[np.ndarray, list, np.ndarray]:
        """One image's detections as :meth:`unmold_instances` gives them: tight boxes [K, 4],
        K boolean masks cropped to those boxes, scores [K]; what :meth:`detect` finds, without
        the full-size mask stack, through the graph traced for the image's size (for big
        images and their tiles, which share a few sizes)."""
        assert self.mode == "inference", "Create model in inference mode."
        out, facts = self.run_stages(image, sized=True)
        return self.unmold_instances(out["detections"], out["mrcnn_mask"],
                                     facts["original_shape"], facts["molded_image"].shape,
                                     facts["window"])

    def _as_molded(self, image: np.ndarray) -> np.ndarray:
        """An image that is resized and padded already, as network input.

        Integer images (what ``load_image_gt`` returns, and what matterport's notebooks pass
        as "molded") get the mean pixel subtracted here; float images are taken as molded.
        """
        image = np.asarray(image)
        if np.issubdtype(image.dtype, np.integer):
            return mold_image(image, self.config)
        return image.astype(np.float32)

    def detect_molded(self, molded_images, image_metas, verbose: int = 0) -> list[dict]:
        """Detect on images that ``load_image_gt`` resized and padded, given their metas.

        Results are in the pixels of those images, as matterport's, so they compare with the
        ground truth ``load_image_gt`` returned; detections are clipped to each meta's window.
        """
        assert self.mode == "inference", "Create model in inference mode."
        metas = np.asarray(image_metas).reshape(len(molded_images), -1)
        windows = utils.parse_image_meta(metas)["window"]
        if verbose:
            print(f"Processing {len(molded_images)} images")
            for image in molded_images:
                log("image", image)
        results = []
        for image, window in zip(molded_images, windows):
            molded = self._as_molded(image)
            out = self.infer_molded(molded, window)
            h, w = molded.shape[:2]
            rois, class_ids, scores, masks = self.unmold_detections(
                out["detections"], out["mrcnn_mask"], molded.shape, molded.shape, [0, 0, h, w])
            results.append({"rois": rois, "class_ids": class_ids, "scores": scores,
                            "masks": masks})
        return results

    # ------------------------------------------------------------------ inspection
    def ancestor(self, tensor: Any, name: str) -> "GraphNode | None":
        """matterport's search of the graph above ``tensor`` for the tensor called ``name``.

        Keras 3 keeps no such graph; the proposal layer's steps are offered under matterport's
        names ("ROI/pre_nms_anchors:0", "ROI/refined_anchors:0",
        "ROI/refined_anchors_clipped:0", "ROI/rpn_non_max_suppression:0") for
        :meth:`run_graph`. Other names give None, as a search that found nothing did.
        """
        key = re.sub(r":\d+$", "", str(name))
        return GraphNode(key) if key in PROPOSAL_STEPS else None

    def run_graph(self, images: list[np.ndarray], outputs, image_metas=None) -> OrderedDict:
        """Named intermediate results of inference, as matterport's ``run_graph``.

        ``outputs`` lists ``(name, node)`` pairs. A node is ``keras_model.get_layer(X).output``
        for X one of matterport's graph names (:data:`GRAPH_NODES`), what :meth:`ancestor`
        returns, or the ``.output`` of a backbone layer ("res2c_out", "fpn_p2" ...). With
        ``image_metas`` the images are taken as molded (resized and padded) already. Returns
        an OrderedDict name -> numpy array with a leading image axis, zero-padded as
        matterport's were: POST_NMS_ROIS_INFERENCE proposals (with their class scores and box
        deltas), DETECTION_MAX_INSTANCES detections and masks.
        """
        assert self.mode == "inference", "Create model in inference mode."
        outputs = OrderedDict(outputs)
        stages: dict[str, str] = {}
        tensors: dict[str, Any] = {}
        for name, node in outputs.items():
            if isinstance(node, str):
                node = self.keras_model.get_layer(node)
            if isinstance(node, keras.layers.Layer):
                node = node.output
            if isinstance(node, GraphNode):
                stages[name] = node.name
            elif isinstance(node, keras.KerasTensor):
                tensors[name] = node
            else:
                raise ValueError(f"run_graph: output '{name}' is {node!r}, not a node of the "
                                 f"inference graph; nodes are {', '.join(GRAPH_NODES)}, the "
                                 f"proposal steps {', '.join(PROPOSAL_STEPS)} and backbone "
                                 "layer outputs")
        backbone = None
        if tensors:
            try:
                backbone = keras.Model(self.keras_model.backbone.input, list(tensors.values()))
            except ValueError as e:
                raise ValueError(f"run_graph: {', '.join(tensors)}: only outputs of backbone "
                                 f"layers (res*, bn*, fpn_*) can be computed here ({e})") from None
        if image_metas is None:
            molded, metas, windows = self.mold_inputs(images)
        else:
            molded = [self._as_molded(image) for image in images]
            metas = np.asarray(image_metas).reshape(len(molded), -1)
            windows = utils.parse_image_meta(metas)["window"]
        per_image = []
        for image, meta, window in zip(molded, metas, windows):
            found = self._graph_nodes(image, meta, window, set(stages.values()))
            values = {name: found[stage] for name, stage in stages.items()}
            if backbone is not None:
                arrays = backbone(image[None], training=False)
                arrays = arrays if isinstance(arrays, (list, tuple)) else [arrays]
                values.update({name: np.asarray(keras.ops.convert_to_numpy(a), np.float32)
                               for name, a in zip(tensors, arrays)})
            per_image.append(values)
        result = OrderedDict()
        for name in outputs:
            parts = [values[name] for values in per_image]
            if len(parts) > 1 and stages.get(name) in _UNBATCHED:
                raise ValueError(f"run_graph: '{name}' is per image; ask for it one image "
                                 "at a time")
            result[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return result

    def _graph_nodes(self, image: np.ndarray, meta: np.ndarray, window,
                     wanted: set[str]) -> dict[str, np.ndarray]:
        """The arrays of :data:`GRAPH_NODES` and :data:`PROPOSAL_STEPS` for one molded image."""
        config = self.config
        out = self.infer_molded(image, window)
        rois = config.POST_NMS_ROIS_INFERENCE
        found = {
            "input_image": image[None], "input_image_meta": meta[None],
            "input_anchors": self.get_anchors(image.shape)[None],
            "rpn_class_logits": out["rpn_class_logits"], "rpn_class": out["rpn_class"],
            "rpn_bbox": out["rpn_bbox"],
            "ROI": _pad_rows(out["proposals"], rois)[None],
            "mrcnn_class": _pad_rows(out["mrcnn_class"], rois)[None],
            "mrcnn_bbox": _pad_rows(out["mrcnn_bbox"], rois)[None],
            "mrcnn_detection": _pad_rows(out["detections"],
                                         config.DETECTION_MAX_INSTANCES)[None],
        }
        if "mrcnn_mask" in wanted:
            found["mrcnn_mask"] = _pad_rows(self._class_masks(image, out["detections"]),
                                            config.DETECTION_MAX_INSTANCES)[None]
        if wanted & set(PROPOSAL_STEPS):
            found.update(self._proposal_steps(out, self.get_anchors(image.shape)))
        return found

    def _class_masks(self, image: np.ndarray, detections: np.ndarray) -> np.ndarray:
        """The mask head's output for every class [N, 28, 28, NUM_CLASSES] on the detections
        (inference keeps only the detected class's mask; matterport's graph had them all)."""
        config = self.config
        if not len(detections):
            return np.zeros((0,) + tuple(config.MASK_SHAPE) + (config.NUM_CLASSES,), np.float32)
        net = self.keras_model
        images = ops.cast(image[None], net.compute_dtype)
        feature_maps = net.features(images, False)
        pooled = pyramid_roi_align(detections[:, :4].astype(np.float32),
                                   np.zeros([len(detections)], np.int32), feature_maps[:4],
                                   config.MASK_POOL_SIZE, image.shape[:2])
        return ops.convert_to_numpy(heads.mask_head(net.mask_layers, pooled, False))

    def _proposal_steps(self, out: dict, anchors: np.ndarray) -> dict[str, np.ndarray]:
        """The proposal stage's steps (those of :func:`mrcnn.proposals.propose`), one by
        one: best anchors by score, refined by the RPN deltas, clipped, kept by NMS."""
        config = self.config
        if len(anchors) != out["rpn_class"].shape[1]:
            # a compiling backend ran the image padded to its bucket size
            anchors = self.get_anchors(out["molded_shape"])
        scores = out["rpn_class"][:1, :, 1]
        deltas = out["rpn_bbox"][:1] * np.asarray(config.RPN_BBOX_STD_DEV, np.float32)
        top_scores, pre_nms, refined, clipped = top_anchors(scores, deltas, anchors,
                                                            config.PRE_NMS_LIMIT)
        keep, count = backend_ops.non_max_suppression(
            clipped, top_scores, config.POST_NMS_ROIS_INFERENCE, config.RPN_NMS_THRESHOLD)
        keep = ops.convert_to_numpy(keep)[0][:int(ops.convert_to_numpy(count)[0])]
        return {"ROI/pre_nms_anchors": ops.convert_to_numpy(pre_nms),
                "ROI/refined_anchors": ops.convert_to_numpy(refined),
                "ROI/refined_anchors_clipped": ops.convert_to_numpy(clipped),
                "ROI/rpn_non_max_suppression": keep}

    def debug_model(self, layer_names: list[str]) -> keras.Model:
        """A model from the molded image to the outputs of named backbone/FPN layers
        (Keras 3 cannot walk the graph as matterport's ``run_graph`` did)."""
        backbone = self.keras_model.backbone
        outputs = [backbone.get_layer(n).output for n in layer_names]
        return keras.Model(backbone.input, outputs, name="debug")


def _pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """Zero rows appended up to ``rows`` (matterport's graph padded to fixed sizes)."""
    missing = rows - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([array, np.zeros((missing,) + array.shape[1:], array.dtype)])

