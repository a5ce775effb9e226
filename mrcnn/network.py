"""The Mask R-CNN network as a Keras 3 model of any backend: stages, training and inference.

The forward pass calls the pipeline's stages (``mrcnn.proposals``, ``targets``, ``roi_align``,
``heads``, ``detection``, ``losses``), all written in ``keras.ops`` with static shapes. Training
is Keras's own: :meth:`MaskRCNNNet.call` on a training batch returns the five losses (and the
weight decay), :meth:`compute_loss` weighs them, and each backend's trainer (TensorFlow's tape,
JAX's ``value_and_grad``) does the rest. Inference runs as two compiled functions, the detection
stage and the mask head (see :meth:`MaskRCNNNet.infer`).
"""
from __future__ import annotations

import copy
import math

import keras
import numpy as np
from keras import ops

from mrcnn import backend_ops, box_ops, execution, heads, losses, utils
from mrcnn.backbone import BatchNorm, build_backbone, compute_backbone_shapes
from mrcnn.detection import refine_detections
from mrcnn.proposals import propose
from mrcnn.roi_align import pyramid_roi_align
from mrcnn.rpn import build_rpn_model
from mrcnn.targets import detection_targets, max_positive_rois

LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
              "mrcnn_mask_loss")


def anchors_for_shape(config, image_shape) -> np.ndarray:
    """Pixel anchors for a molded image of ``image_shape`` (H, W, ...)."""
    shapes = compute_backbone_shapes(config, image_shape)
    return utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                          shapes, config.BACKBONE_STRIDES,
                                          config.RPN_ANCHOR_STRIDE)


CAP_NAMES = ("PRE_NMS_LIMIT", "POST_NMS_ROIS_INFERENCE", "DETECTION_MAX_INSTANCES")
"""The inference caps that ``INFERENCE_CAP_PIXELS`` sizes to the input's area."""


SIZED_GRAPHS = 4
"""TensorFlow: ``infer(..., sized=True)`` (the tiles of a big image) runs the detection stage
traced for the image's size (height, width) alone, keeping the graphs of this many sizes
(least recently used dropped). With the size known when the graph is built, oneDNN's
convolutions run about 1.6x faster on the CPU than in the one graph traced for any size (the
detection stage of a 1,024-px tile 0.43 -> 0.27 s, AMX machine), but each trace costs about
1.2 s and 40-140 MB: a gain where many calls share a size (the tiles of a big image), a loss
where most sizes come once (``evaluate``'s whole images), which keep the graph for any size."""

SIZED_MIN_PIXELS = 512 * 1024
"""Smaller inputs keep the graph for any size even when ``sized``: the time a size's own graph
saves grows with its pixels (about 0.16 s a megapixel), its trace does not, and a folder of
small images of many sizes (one tile each) would pay a trace for each."""

CAP_STEPS = 4
""":func:`cap_factor` is rounded up to a multiple of 1 / CAP_STEPS, so that images of many
sizes share a few traced graphs (one per factor)."""


def cap_factor(config, height: int, width: int) -> float:
    """How many times :data:`CAP_NAMES` an input of ``height`` x ``width`` gets: its pixels
    over ``INFERENCE_CAP_PIXELS``, rounded up to a quarter, at least ``INFERENCE_CAP_FLOOR``
    (1 when that is None: a smaller input keeps the full caps); always 1 when
    ``INFERENCE_CAP_PIXELS`` is None.

    A floor below 1 lets a small image run fewer proposals through the box head, whose cost
    is then mostly this fixed number, not the image's size (a half-size pass of ``--scale
    probe`` cost 60% of the native one with the full caps)."""
    per = config.INFERENCE_CAP_PIXELS
    if not per:
        return 1.0
    floor = 1.0 if config.INFERENCE_CAP_FLOOR is None else float(config.INFERENCE_CAP_FLOOR)
    return max(floor, -(-CAP_STEPS * int(height) * int(width) // int(per)) / CAP_STEPS)


def scaled_caps(config, height: int, width: int):
    """``config`` with :data:`CAP_NAMES` times :func:`cap_factor` (``config`` itself when 1),
    so that a tile of twice the area keeps as many proposals and detections per pixel."""
    factor = cap_factor(config, height, width)
    if factor == 1:
        return config
    scaled = copy.copy(config)
    for name in CAP_NAMES:
        setattr(scaled, name, int(math.ceil(int(getattr(config, name)) * factor)))
    return scaled


def conv_of_batch_norm(name: str) -> str:
    """The name of the convolution a BatchNorm of matterport's naming normalises."""
    if name == "bn_conv1":
        return "conv1"
    if name.startswith("mrcnn_"):
        return name.replace("_bn", "_conv")
    if name.startswith("bn"):
        return "res" + name[2:]
    raise ValueError(f"{name}: not a BatchNorm name of this network")


class MaskRCNNNet(keras.Model):
    """All trainable parts of Mask R-CNN plus the graphs that use them."""

    def __init__(self, config, seed: int | None = None, **kwargs):
        super().__init__(name="mask_rcnn", **kwargs)
        self.config = config
        train_bn = bool(config.TRAIN_BN)
        self.backbone = build_backbone(config.BACKBONE, config.TOP_DOWN_PYRAMID_SIZE, train_bn,
                                       config.IMAGE_CHANNEL_COUNT)
        self.rpn_model = build_rpn_model(config.RPN_ANCHOR_STRIDE,
                                         len(config.RPN_ANCHOR_RATIOS),
                                         config.TOP_DOWN_PYRAMID_SIZE, config.RPN_CONV_SIZE)
        self.box_layers = heads.build_box_head(config.NUM_CLASSES,
                                               config.FPN_CLASSIF_FC_LAYERS_SIZE,
                                               config.POOL_SIZE, train_bn)
        self.mask_layers = heads.build_mask_head(config.NUM_CLASSES, train_bn,
                                                 config.MASK_HEAD_CONV_SIZE)
        for name, layer in {**self.box_layers, **self.mask_layers}.items():
            setattr(self, name, layer)
        # One Mean per loss; Keras's own tracker reports the total as "loss".
        self.loss_trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES}
        # The detection-target stage's random sampling (a variable, so JAX threads it through).
        self.seed_generator = keras.random.SeedGenerator(seed)
        # Build the heads so their weights exist before any loading.
        depth = config.TOP_DOWN_PYRAMID_SIZE
        heads.box_head(self.box_layers,
                       np.zeros([1, config.POOL_SIZE, config.POOL_SIZE, depth], np.float32), False)
        heads.mask_head(self.mask_layers,
                        np.zeros([1, config.MASK_POOL_SIZE, config.MASK_POOL_SIZE, depth],
                                 np.float32), False)
        self.built = True
        for layer in self._batch_norm_layers():
            layer.momentum = float(config.BATCH_NORM_MOMENTUM)
        self._train_anchors = None
        self._infer_fns: dict = {}
        self._sized_graphs: dict = {}      # TensorFlow's detection graphs by caps and size

    def fold_batch_norms(self) -> int:
        """Fold every BatchNorm into the convolution before it (inference only: the weights
        change, and training or saving afterwards would be wrong); returns how many.

        The convolution of a BatchNorm is found by matterport's names: ``bn_conv1`` normalises
        ``conv1``, ``bn4a_branch2b`` ``res4a_branch2b``, ``mrcnn_mask_bn2``
        ``mrcnn_mask_conv2``.
        """
        layers = {layer.name: layer for layer in self.backbone.layers}
        layers.update(self.box_layers)
        layers.update(self.mask_layers)
        count = 0
        for bn in self._batch_norm_layers():
            if bn.folded:
                continue
            bn.fold_into(layers[conv_of_batch_norm(bn.name)])
            count += 1
        self._infer_fns.clear()          # traced graphs would keep the BatchNorm ops
        self._sized_graphs.clear()
        return count

    @property
    def batch_norms_folded(self) -> bool:
        """Whether :meth:`fold_batch_norms` has run (the weights no longer match a file's)."""
        return any(bn.folded for bn in self._batch_norm_layers())

    def _batch_norm_layers(self) -> list[BatchNorm]:
        layers = [l for l in self.backbone.layers if isinstance(l, BatchNorm)]
        return layers + [l for l in {**self.box_layers, **self.mask_layers}.values()
                         if isinstance(l, BatchNorm)]

    @property
    def train_anchors(self) -> np.ndarray:
        """Pixel anchors of the fixed training image shape (IMAGE_SHAPE)."""
        if self._train_anchors is None:
            shape = self.config.IMAGE_SHAPE
            if shape is None or any(s is None for s in shape[:2]):
                raise ValueError("training needs a fixed IMAGE_SHAPE: use IMAGE_RESIZE_MODE "
                                 "'square' or 'crop'")
            self._train_anchors = anchors_for_shape(self.config, shape)
        return self._train_anchors

    @property
    def _train_anchors_norm(self) -> np.ndarray:
        return utils.norm_boxes(self.train_anchors, self.config.IMAGE_SHAPE[:2]).astype(
            np.float32)

    # ------------------------------------------------------------------ shared stages
    def features(self, images, training):
        """Pyramid [P2..P6] of a molded image batch."""
        return self.backbone(images, training=training)

    def rpn(self, feature_maps):
        """RPN outputs of every level, concatenated: logits, probs, deltas [B, A, ...]."""
        outputs = [self.rpn_model(p) for p in feature_maps]
        logits, probs, deltas = [
            ops.concatenate([ops.cast(o[i], "float32") for o in outputs], axis=1)
            for i in range(3)]
        return logits, probs, deltas

    # ------------------------------------------------------------------ training
    def compute_losses(self, inputs: dict, training: bool = True) -> dict:
        """The five losses of one batch (``inputs`` as :class:`mrcnn.data.DataGenerator` yields)."""
        config = self.config
        images = ops.cast(inputs["input_image"], self.compute_dtype)
        image_shape = ops.shape(images)[1:3]
        batch = ops.shape(images)[0]
        feature_maps = self.features(images, training)
        rpn_logits, rpn_probs, rpn_deltas = self.rpn(feature_maps)

        proposals = propose(rpn_probs, rpn_deltas, self._train_anchors_norm,
                            config.POST_NMS_ROIS_TRAINING, config.RPN_NMS_THRESHOLD,
                            config.PRE_NMS_LIMIT, config.RPN_BBOX_STD_DEV)
        gt_boxes = box_ops.norm_boxes(inputs["input_gt_boxes"], image_shape)
        rois, target_ids, target_deltas, target_masks = detection_targets(
            ops.stop_gradient(proposals), inputs["input_gt_class_ids"], gt_boxes,
            inputs["input_gt_masks"], config, seed=self.seed_generator)

        num_rois = config.TRAIN_ROIS_PER_IMAGE
        flat_rois = ops.reshape(rois, [-1, 4])
        box_indices = ops.repeat(ops.arange(batch), num_rois)
        flat_ids = ops.reshape(target_ids, [-1])
        head_maps = feature_maps[:4]
        pooled = pyramid_roi_align(flat_rois, box_indices, head_maps, config.POOL_SIZE,
                                   image_shape)
        class_logits, _, pred_deltas = heads.box_head(self.box_layers, pooled, training)

        # Positives are among the first max_pos ROIs of each image (mrcnn.targets).
        max_pos = max_positive_rois(config)
        mask_ids = ops.reshape(target_ids[:, :max_pos], [-1])
        if config.MASK_HEAD_POSITIVE_ONLY:
            pooled_masks = pyramid_roi_align(ops.reshape(rois[:, :max_pos], [-1, 4]),
                                             ops.repeat(ops.arange(batch), max_pos), head_maps,
                                             config.MASK_POOL_SIZE, image_shape)
            pred_masks = heads.mask_head(self.mask_layers, pooled_masks, training)
        else:
            pooled_masks = pyramid_roi_align(flat_rois, box_indices, head_maps,
                                             config.MASK_POOL_SIZE, image_shape)
            pred_masks = heads.mask_head(self.mask_layers, pooled_masks, training)
            pred_masks = ops.reshape(pred_masks, [-1, num_rois] + list(pred_masks.shape[1:]))
            pred_masks = ops.reshape(pred_masks[:, :max_pos], [-1] + list(pred_masks.shape[2:]))
        return {
            "rpn_class_loss": losses.rpn_class_loss(inputs["input_rpn_match"], rpn_logits),
            "rpn_bbox_loss": losses.rpn_bbox_loss(inputs["input_rpn_bbox"],
                                                  inputs["input_rpn_match"], rpn_deltas),
            "mrcnn_class_loss": losses.mrcnn_class_loss(flat_ids, class_logits,
                                                        box_ops.valid_rows(flat_rois)),
            "mrcnn_bbox_loss": losses.mrcnn_bbox_loss(ops.reshape(target_deltas, [-1, 4]),
                                                      flat_ids, pred_deltas),
            "mrcnn_mask_loss": losses.mrcnn_mask_loss(
                ops.reshape(target_masks, [-1] + list(config.MASK_SHAPE)), mask_ids,
                pred_masks),
        }

    def weight_decay_loss(self):
        """L2 on trainable kernels and biases (not BatchNorm), scaled by size as matterport does."""
        terms = [self.config.WEIGHT_DECAY * ops.sum(ops.square(ops.cast(w, "float32")))
                 / float(np.prod(w.shape))
                 for w in self.trainable_weights if "gamma" not in w.name and "beta" not in w.name]
        return ops.sum(ops.stack(terms)) if terms else ops.convert_to_tensor(0.0, "float32")

    def call(self, inputs, training=False):
        """A training batch (dict) -> its losses and weight decay; ``(images, anchors,
        window)`` -> the inference stages' outputs (:meth:`inference`)."""
        if isinstance(inputs, dict):
            values = self.compute_losses(inputs, training=training)
            values["weight_decay"] = self.weight_decay_loss()
            return values
        images, anchors, window = inputs
        return self.inference(images, anchors, window)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted sum of the losses :meth:`call` returned, plus the weight decay."""
        weights = self.config.LOSS_WEIGHTS
        total = y_pred["weight_decay"]
        for name in LOSS_NAMES:
            total = total + y_pred[name] * weights.get(name, 1.0)
        return execution.scale_loss_for_replicas(total)

    def compute_metrics(self, x, y, y_pred, sample_weight=None) -> dict:
        for name in LOSS_NAMES:
            self.loss_trackers[name].update_state(y_pred[name])
        results = {m.name: m.result() for m in self.metrics}
        return execution.step_outputs_for_workers(results)

    # ------------------------------------------------------------------ inference
    def detection_stage(self, images, anchors, window, config=None) -> dict:
        """One molded image [1, H, W, 3]; anchors [A, 4] and window [4] normalised ->
        every intermediate result by name up to the detections (zero padded to
        DETECTION_MAX_INSTANCES rows, ``detection_count`` of them real) and the pyramid
        maps the mask head crops from (``head_maps``). ``config``: the configuration whose
        caps apply (:func:`scaled_caps`; default the model's own)."""
        config = config or self.config
        images = ops.cast(images, self.compute_dtype)
        feature_maps = self.features(images, False)
        rpn_logits, rpn_probs, rpn_deltas = self.rpn(feature_maps)
        proposals = propose(rpn_probs, rpn_deltas, anchors, config.POST_NMS_ROIS_INFERENCE,
                            config.RPN_NMS_THRESHOLD, config.PRE_NMS_LIMIT,
                            config.RPN_BBOX_STD_DEV)[0]
        head_maps = feature_maps[:4]
        image_shape = ops.shape(images)[1:3]
        rois = proposals
        if backend_ops.uses_fused_kernels():
            # TensorFlow traces one graph for every size: cropping only real ROIs is cheaper
            rois = proposals[:ops.sum(ops.cast(box_ops.valid_rows(proposals), "int32"))]
        zeros = ops.zeros([ops.shape(rois)[0]], "int32")
        pooled = pyramid_roi_align(rois, zeros, head_maps, config.POOL_SIZE, image_shape)
        class_logits, class_probs, deltas = heads.box_head(self.box_layers, pooled, False)
        detections, count = refine_detections(rois, class_probs, deltas, window, config)
        return {
            "rpn_class_logits": rpn_logits, "rpn_class": rpn_probs, "rpn_bbox": rpn_deltas,
            "proposals": rois, "mrcnn_class": class_probs, "mrcnn_bbox": deltas,
            "detections": detections, "detection_count": count, "head_maps": head_maps,
            "image_shape": image_shape,
        }

    def mask_stage(self, head_maps, image_shape, detections):
        """Masks [N, 28, 28] of detections [N, 6] (their own class's channel, sigmoid)."""
        config = self.config
        boxes = detections[:, :4]
        ids = ops.cast(detections[:, 4], "int32")
        # TF's CPU Conv2D returns its input unchanged for an empty batch, which breaks the mask
        # head on an image without detections: run it on one extra box and drop that again.
        count = ops.shape(boxes)[0]
        boxes = ops.concatenate([boxes, np.array([[0., 0., 1., 1.]], np.float32)], axis=0)
        pooled = pyramid_roi_align(boxes, ops.zeros([count + 1], "int32"), head_maps,
                                   config.MASK_POOL_SIZE, image_shape)
        all_masks = heads.mask_head(self.mask_layers, pooled, False)[:count]
        channels = ops.reshape(ids, [-1, 1, 1, 1])
        return ops.squeeze(ops.take_along_axis(all_masks, channels, axis=3), 3)

    def inference(self, images, anchors, window) -> dict:
        """Every intermediate result of inference by name; detections and masks trimmed to
        the real detections (so the shapes are dynamic: TensorFlow, or eager)."""
        out = self.detection_stage(images, anchors, window)
        detections = out["detections"][:out["detection_count"]]
        masks = self.mask_stage(out.pop("head_maps"), out.pop("image_shape"), detections)
        out.update(detections=detections, mrcnn_mask=masks)
        return out

    def infer(self, images, anchors, window, sized: bool = False) -> dict:
        """Compiled :meth:`inference` on numpy inputs -> numpy outputs.

        TensorFlow traces one graph for every image size (one per set of caps), then
        runs the mask head on ``DETECTION_MASK_BATCH`` detections at a time, so that its
        memory stays flat however many nuclei a big tile holds. JAX compiles per shape, so
        the caller pads images to a few bucket sizes (:func:`mrcnn.execution.image_bucket`)
        and the mask head runs on the detections padded to a power of two: a handful of
        compilations instead of one per image (in batches of ``DETECTION_MASK_BATCH`` beyond
        it). ``sized``: TensorFlow runs a detection graph traced for this image size alone
        (:data:`SIZED_GRAPHS`, from :data:`SIZED_MIN_PIXELS` up), for callers that run many
        images of one size.
        """
        images = np.asarray(images, np.float32)
        anchors = np.asarray(anchors, np.float32)
        window = np.asarray(window, np.float32)
        if backend_ops.uses_fused_kernels():
            return self._infer_tf(images, anchors, window, sized)
        return self._infer_static(images, anchors, window)

    def _infer_tf(self, images, anchors, window, sized: bool = False) -> dict:
        """The detection stage as one ``tf.function``, then the mask head in batches."""
        height, width = images.shape[1:3]
        detect = self._detect_tf((height, width), sized and height * width >= SIZED_MIN_PIXELS)
        out = detect(images, anchors, window)
        maps, shape = out.pop("head_maps"), out.pop("image_shape")
        count = int(out["detection_count"])
        detections = out["detections"][:count]
        masks = self._masks_tf(maps, shape, detections)
        result = {k: np.asarray(v) for k, v in out.items()}
        result["detections"] = np.asarray(detections)
        result["mrcnn_mask"] = masks
        return result

    def _detect_tf(self, size: tuple[int, int], sized: bool = False):
        """The traced detection stage for images of ``size`` (height, width): one traced for
        any size (per set of caps), or with ``sized`` one traced for this size alone (the
        :data:`SIZED_GRAPHS` most recently used sizes kept)."""
        import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

        size = (int(size[0]), int(size[1]))
        config = scaled_caps(self.config, *size)
        caps = tuple(int(getattr(config, name)) for name in CAP_NAMES)
        graphs, key = (self._sized_graphs, caps + size) if sized else (self._infer_fns,
                                                                      ("tf",) + caps)
        detect = graphs.pop(key, None)
        if detect is None:
            spec = None if sized else [
                tf.TensorSpec([1, None, None, self.config.IMAGE_CHANNEL_COUNT], tf.float32),
                tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([4], tf.float32)]
            detect = tf.function(lambda i, a, w: self.detection_stage(i, a, w, config),
                                 input_signature=spec, reduce_retracing=not sized)
            while sized and len(graphs) >= SIZED_GRAPHS:
                graphs.pop(next(iter(graphs)))
        graphs[key] = detect                  # last: the most recently used
        return detect

    def _masks_tf(self, maps, image_shape, detections) -> np.ndarray:
        """:meth:`mask_stage` on ``DETECTION_MASK_BATCH`` detections at a time (compiled once;
        each detection's mask is computed on its own crop, so the batches change nothing)."""
        import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

        image_shape = tf.cast(tf.stack(list(image_shape)), tf.int32)   # (height, width)
        fn = self._infer_fns.get("tf_masks")
        if fn is None:
            spec = [[tf.TensorSpec([1, None, None, m.shape[-1]], m.dtype) for m in maps],
                    tf.TensorSpec([2], tf.int32), tf.TensorSpec([None, 6], tf.float32)]
            fn = self._infer_fns["tf_masks"] = tf.function(self.mask_stage, input_signature=spec,
                                                           reduce_retracing=True)
        count = int(detections.shape[0])
        batch = int(self.config.DETECTION_MASK_BATCH or count) or 1
        parts = [np.asarray(fn(maps, image_shape, detections[i:i + batch]))
                 for i in range(0, max(count, 1), batch)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _infer_static(self, images, anchors, window) -> dict:
        """Two compiled functions (detection stage, mask head on a bucket of detections)."""
        if "detect" not in self._infer_fns:
            self._infer_fns["detect"] = execution.compile_stateless(
                self, lambda i, a, w: self.detection_stage(
                    i, a, w, scaled_caps(self.config, *i.shape[1:3])))
            self._infer_fns["masks"] = execution.compile_stateless(
                self, lambda maps, shape, dets: self.mask_stage(maps, shape, dets))
        out = self._infer_fns["detect"](images, anchors, window)
        count = int(out.pop("detection_count"))
        limit = scaled_caps(self.config, *images.shape[1:3]).DETECTION_MAX_INSTANCES
        rows = detection_bucket(count, limit)
        maps, shape = out.pop("head_maps"), out.pop("image_shape")
        batch = int(self.config.DETECTION_MASK_BATCH or rows)
        if rows <= batch:
            masks = self._infer_fns["masks"](maps, shape, out["detections"][:rows])
        else:   # batches of one bucket size: one more compilation, flat memory
            masks = np.concatenate([
                ops.convert_to_numpy(self._infer_fns["masks"](
                    maps, shape, out["detections"][i:i + batch]))
                for i in range(0, count, batch)])
        result = {k: ops.convert_to_numpy(v) for k, v in out.items()}
        # as TensorFlow's path: only the proposals NMS kept, only the real detections
        kept = int(np.sum(np.any(result["proposals"] != 0, axis=1)))
        for key in ("proposals", "mrcnn_class", "mrcnn_bbox"):
            result[key] = result[key][:kept]
        result["detections"] = result["detections"][:count]
        result["mrcnn_mask"] = ops.convert_to_numpy(masks)[:count]
        return result


def detection_bucket(count: int, limit: int) -> int:
    """Rows the mask head runs on for ``count`` detections: the next power of two (at least
    8), at most ``limit``, so it compiles for a few sizes only."""
    rows = 8
    while rows < count:
        rows *= 2
    return max(min(rows, int(limit)), min(count, int(limit)))
