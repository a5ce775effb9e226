"""The second-stage heads: box classifier/regressor and mask predictor.

The layers carry matterport's names and shapes (its TimeDistributed wrappers hold the same
kernels), so its COCO weights load. They run on flat ROI batches [N, pool, pool, C], which lets
the mask head see only the ROIs that matter (positives in training, detections at inference).
"""
from __future__ import annotations

from keras import layers as KL
from keras import ops

from mrcnn.backbone import BatchNorm


def build_box_head(num_classes: int, fc_size: int, pool_size: int, train_bn: bool) -> dict:
    """Layers of the box head: 7x7 'fc' conv, 1x1 conv (each with BatchNorm), logits, deltas."""
    return {
        "mrcnn_class_conv1": KL.Conv2D(fc_size, pool_size, padding="valid",
                                       name="mrcnn_class_conv1"),
        "mrcnn_class_bn1": BatchNorm(name="mrcnn_class_bn1", batch_stats=train_bn),
        "mrcnn_class_conv2": KL.Conv2D(fc_size, 1, name="mrcnn_class_conv2"),
        "mrcnn_class_bn2": BatchNorm(name="mrcnn_class_bn2", batch_stats=train_bn),
        "mrcnn_class_logits": KL.Dense(num_classes, name="mrcnn_class_logits"),
        "mrcnn_bbox_fc": KL.Dense(num_classes * 4, activation="linear", name="mrcnn_bbox_fc"),
    }


def build_mask_head(num_classes: int, train_bn: bool, conv_size: int = 256) -> dict:
    """Layers of the mask head: four 3x3x256 convs with BatchNorm, 2x deconv, per-class sigmoid."""
    layers = {}
    for i in range(1, 5):
        layers[f"mrcnn_mask_conv{i}"] = KL.Conv2D(conv_size, 3, padding="same",
                                                  name=f"mrcnn_mask_conv{i}")
        layers[f"mrcnn_mask_bn{i}"] = BatchNorm(name=f"mrcnn_mask_bn{i}", batch_stats=train_bn)
    layers["mrcnn_mask_deconv"] = KL.Conv2DTranspose(conv_size, 2, strides=2, activation="relu",
                                                     name="mrcnn_mask_deconv")
    layers["mrcnn_mask"] = KL.Conv2D(num_classes, 1, strides=1, activation="sigmoid",
                                     name="mrcnn_mask", dtype="float32")
    return layers


def box_head(layers: dict, pooled, training: bool):
    """pooled [N, 7, 7, C] -> logits [N, K], probs [N, K], deltas [N, K, 4] (float32)."""
    x = layers["mrcnn_class_conv1"](pooled)
    x = ops.relu(layers["mrcnn_class_bn1"](x, training=training))
    x = layers["mrcnn_class_conv2"](x)
    x = ops.relu(layers["mrcnn_class_bn2"](x, training=training))
    shared = ops.reshape(x, [-1, x.shape[-1]])
    logits = ops.cast(layers["mrcnn_class_logits"](shared), "float32")
    probs = ops.softmax(logits, axis=-1)
    deltas = ops.cast(layers["mrcnn_bbox_fc"](shared), "float32")
    deltas = ops.reshape(deltas, [-1, logits.shape[-1], 4])
    return logits, probs, deltas


def mask_head(layers: dict, pooled, training: bool):
    """pooled [N, 14, 14, C] -> per-class masks [N, 28, 28, K] (sigmoid, float32)."""
    x = pooled
    for i in range(1, 5):
        x = layers[f"mrcnn_mask_conv{i}"](x)
        x = ops.relu(layers[f"mrcnn_mask_bn{i}"](x, training=training))
    x = layers["mrcnn_mask_deconv"](x)
    return ops.cast(layers["mrcnn_mask"](x), "float32")
