"""The Mask R-CNN network as a Keras 3 model: layers, training step and inference graph.

The forward pass is plain TensorFlow code calling named Keras layers (no KerasTensor tricks, no
``add_loss``), so it runs the same eagerly, in ``tf.function`` and under ``tf.distribute``.
"""
from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from mrcnn import box_ops, heads, losses, utils
from mrcnn.backbone import BatchNorm, build_backbone, compute_backbone_shapes
from mrcnn.detection import refine_detections
from mrcnn.proposals import propose
from mrcnn.roi_align import pyramid_roi_align
from mrcnn.rpn import build_rpn_model
from mrcnn.targets import detection_targets

LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
              "mrcnn_mask_loss")


def anchors_for_shape(config, image_shape) -> np.ndarray:
    """Pixel anchors for a molded image of ``image_shape`` (H, W, ...)."""
    shapes = compute_backbone_shapes(config, image_shape)
    return utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                          shapes, config.BACKBONE_STRIDES,
                                          config.RPN_ANCHOR_STRIDE)


class MaskRCNNNet(keras.Model):
    """All trainable parts of Mask R-CNN plus the graphs that use them."""

    def __init__(self, config, **kwargs):
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
        self.loss_trackers = {n: keras.metrics.Mean(name=n) for n in LOSS_NAMES + ("loss",)}
        # Build the heads so their weights exist before any loading.
        depth = config.TOP_DOWN_PYRAMID_SIZE
        heads.box_head(self.box_layers, tf.zeros([1, config.POOL_SIZE, config.POOL_SIZE, depth]),
                       False)
        heads.mask_head(self.mask_layers,
                        tf.zeros([1, config.MASK_POOL_SIZE, config.MASK_POOL_SIZE, depth]), False)
        self.built = True
        for layer in self._batch_norm_layers():
            layer.momentum = float(config.BATCH_NORM_MOMENTUM)
        self._train_anchors = None
        self._infer_fn = None

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
    def _train_anchors_norm(self) -> tf.Tensor:
        return tf.constant(utils.norm_boxes(self.train_anchors, self.config.IMAGE_SHAPE[:2]),
                           tf.float32)

    # ------------------------------------------------------------------ shared stages
    @property
    def metrics(self):
        return list(self.loss_trackers.values())

    def features(self, images, training):
        """Pyramid [P2..P6] of a molded image batch."""
        return self.backbone(images, training=training)

    def rpn(self, feature_maps):
        """RPN outputs of every level, concatenated: logits, probs, deltas [B, A, ...]."""
        outputs = [self.rpn_model(p) for p in feature_maps]
        logits, probs, deltas = [tf.concat([tf.cast(o[i], tf.float32) for o in outputs], axis=1)
                                 for i in range(3)]
        return logits, probs, deltas

    # ------------------------------------------------------------------ training
    def compute_losses(self, inputs: dict, training: bool = True) -> dict:
        """The five losses of one batch (``inputs`` as :class:`mrcnn.data.DataGenerator` yields)."""
        config = self.config
        images = tf.cast(inputs["input_image"], self.compute_dtype)
        image_shape = tf.shape(images)[1:3]
        batch = tf.shape(images)[0]
        feature_maps = self.features(images, training)
        rpn_logits, rpn_probs, rpn_deltas = self.rpn(feature_maps)

        proposals = propose(rpn_probs, rpn_deltas, self._train_anchors_norm,
                            config.POST_NMS_ROIS_TRAINING, config.RPN_NMS_THRESHOLD,
                            config.PRE_NMS_LIMIT, config.RPN_BBOX_STD_DEV)
        gt_class_ids = tf.cast(inputs["input_gt_class_ids"], tf.int32)
        gt_boxes = box_ops.norm_boxes(tf.cast(inputs["input_gt_boxes"], tf.float32), image_shape)
        gt_masks = tf.cast(inputs["input_gt_masks"], tf.float32)
        rois, target_ids, target_deltas, target_masks = detection_targets(
            tf.stop_gradient(proposals), gt_class_ids, gt_boxes, gt_masks, config)

        num_rois = config.TRAIN_ROIS_PER_IMAGE
        flat_rois = tf.reshape(rois, [-1, 4])
        box_indices = tf.repeat(tf.range(batch), num_rois)
        flat_ids = tf.reshape(target_ids, [-1])
        flat_deltas = tf.reshape(target_deltas, [-1, 4])
        valid = tf.reduce_sum(tf.abs(flat_rois), axis=1) > 0
        head_maps = feature_maps[:4]
        pooled = pyramid_roi_align(flat_rois, box_indices, head_maps, config.POOL_SIZE,
                                   image_shape)
        class_logits, _, pred_deltas = heads.box_head(self.box_layers, pooled, training)

        positive = tf.where(flat_ids > 0)[:, 0]
        pos_ids = tf.gather(flat_ids, positive)
        pos_masks = tf.gather(tf.reshape(target_masks, [-1] + list(config.MASK_SHAPE)), positive)
        if config.MASK_HEAD_POSITIVE_ONLY:
            pooled_masks = pyramid_roi_align(tf.gather(flat_rois, positive),
                                             tf.gather(box_indices, positive), head_maps,
                                             config.MASK_POOL_SIZE, image_shape)
            pred_masks = heads.mask_head(self.mask_layers, pooled_masks, training)
        else:
            pooled_masks = pyramid_roi_align(flat_rois, box_indices, head_maps,
                                             config.MASK_POOL_SIZE, image_shape)
            pred_masks = tf.gather(heads.mask_head(self.mask_layers, pooled_masks, training),
                                   positive)
        return {
            "rpn_class_loss": losses.rpn_class_loss(inputs["input_rpn_match"], rpn_logits),
            "rpn_bbox_loss": losses.rpn_bbox_loss(tf.cast(inputs["input_rpn_bbox"], tf.float32),
                                                  inputs["input_rpn_match"], rpn_deltas),
            "mrcnn_class_loss": losses.mrcnn_class_loss(flat_ids, class_logits, valid),
            "mrcnn_bbox_loss": losses.mrcnn_bbox_loss(flat_deltas, flat_ids, pred_deltas),
            "mrcnn_mask_loss": losses.mrcnn_mask_loss(pos_masks, pos_ids, pred_masks),
        }

    def weight_decay_loss(self) -> tf.Tensor:
        """L2 on trainable kernels and biases (not BatchNorm), scaled by size as matterport does."""
        terms = [self.config.WEIGHT_DECAY * tf.reduce_sum(tf.square(tf.cast(w, tf.float32)))
                 / tf.cast(tf.size(w), tf.float32)
                 for w in self.trainable_weights if "gamma" not in w.name and "beta" not in w.name]
        return tf.add_n(terms) if terms else tf.constant(0.0)

    def _total(self, loss_values: dict) -> tf.Tensor:
        weights = self.config.LOSS_WEIGHTS
        total = tf.add_n([loss_values[n] * weights.get(n, 1.0) for n in LOSS_NAMES])
        return total + self.weight_decay_loss()

    def _track(self, loss_values: dict, total) -> dict:
        for name in LOSS_NAMES:
            self.loss_trackers[name].update_state(loss_values[name])
        self.loss_trackers["loss"].update_state(total)
        results = {m.name: m.result() for m in self.metrics}
        if isinstance(tf.distribute.get_strategy(), tf.distribute.MultiWorkerMirroredStrategy):
            # Keras averages a multi-worker step's outputs over axis 0, which a scalar lacks
            results = {k: tf.reshape(v, [1]) for k, v in results.items()}
        return results

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under tf.distribute Keras first averages a batch over the replicas to build the model
        # symbolically; that MEAN reduce fails on the boolean gt masks. The network is built in
        # __init__, so build (the optimizer) without a batch.
        super()._maybe_symbolic_build(iterator=None, data_batch=data_batch)

    @staticmethod
    def _unpack(data):
        return data[0] if isinstance(data, (tuple, list)) else data

    def train_step(self, data):
        inputs = self._unpack(data)
        with tf.GradientTape() as tape:
            loss_values = self.compute_losses(inputs, training=True)
            total = self._total(loss_values)
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            scaled = total / tf.cast(replicas, tf.float32)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
        self.optimizer.apply_gradients(pairs)
        return self._track(loss_values, total)

    def test_step(self, data):
        inputs = self._unpack(data)
        loss_values = self.compute_losses(inputs, training=False)
        return self._track(loss_values, self._total(loss_values))

    def call(self, inputs, training=False):
        """Keras entry point: the inference graph on ``(images, anchors, window)``."""
        images, anchors, window = inputs
        return self.inference(images, anchors, window)

    # ------------------------------------------------------------------ inference
    def inference(self, images, anchors, window) -> dict:
        """One molded image [1, H, W, 3]; anchors [A, 4] and window [4] normalised.

        Returns every intermediate result by name, so notebooks can look at each stage.
        """
        config = self.config
        images = tf.cast(images, self.compute_dtype)
        image_shape = tf.shape(images)[1:3]
        feature_maps = self.features(images, False)
        rpn_logits, rpn_probs, rpn_deltas = self.rpn(feature_maps)
        proposals = propose(rpn_probs, rpn_deltas, anchors, config.POST_NMS_ROIS_INFERENCE,
                            config.RPN_NMS_THRESHOLD, config.PRE_NMS_LIMIT,
                            config.RPN_BBOX_STD_DEV)
        rois = proposals[0]
        rois, _ = box_ops.trim_zero_rows(rois)
        head_maps = feature_maps[:4]
        zeros = tf.zeros([tf.shape(rois)[0]], tf.int32)
        pooled = pyramid_roi_align(rois, zeros, head_maps, config.POOL_SIZE, image_shape)
        class_logits, class_probs, deltas = heads.box_head(self.box_layers, pooled, False)
        detections = refine_detections(rois, class_probs, deltas, window, config)
        det_boxes = detections[:, :4]
        det_ids = tf.cast(detections[:, 4], tf.int32)
        # TF's CPU Conv2D returns its input unchanged for an empty batch, which breaks the mask
        # head on an image without detections: run it on one extra box and drop that again.
        count = tf.shape(det_boxes)[0]
        mask_boxes = tf.concat([det_boxes, tf.constant([[0., 0., 1., 1.]])], axis=0)
        pooled_masks = pyramid_roi_align(mask_boxes, tf.zeros([count + 1], tf.int32),
                                         head_maps, config.MASK_POOL_SIZE, image_shape)
        all_masks = heads.mask_head(self.mask_layers, pooled_masks, False)[:count]
        masks = tf.gather(tf.transpose(all_masks, [0, 3, 1, 2]), det_ids, axis=1, batch_dims=1)
        return {
            "rpn_class_logits": rpn_logits, "rpn_class": rpn_probs, "rpn_bbox": rpn_deltas,
            "proposals": rois, "mrcnn_class": class_probs, "mrcnn_bbox": deltas,
            "detections": detections, "mrcnn_mask": masks,
        }

    def infer(self, images, anchors, window) -> dict:
        """Compiled :meth:`inference` (one trace for every image size)."""
        if self._infer_fn is None:
            spec = [tf.TensorSpec([1, None, None, self.config.IMAGE_CHANNEL_COUNT], tf.float32),
                    tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([4], tf.float32)]
            self._infer_fn = tf.function(self.inference, input_signature=spec,
                                         reduce_retracing=True)
        return self._infer_fn(images, anchors, window)
