"""The second-stage heads: box classifier/regressor and mask predictor.

The layers carry matterport's names and shapes (its TimeDistributed wrappers hold the same
kernels), so its COCO weights load. They run on flat ROI batches [N, pool, pool, C], which lets
the mask head see only the ROIs that matter (positives in training, detections at inference).
"""
from __future__ import annotations

from keras import layers as KL
from keras import ops

from mrcnn import backend_ops
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


def _kernel_and_input(layer, x):
    """The layer's kernel and ``x`` in its compute dtype (what calling it would use), building
    it first when nothing has called it yet."""
    if not layer.built:
        layer.build(tuple(x.shape))
    dtype = layer.compute_dtype
    return ops.cast(layer.kernel, dtype), ops.cast(x, dtype)


def whole_input_conv(layer, x):
    """A "valid" conv whose kernel covers its whole input ([N, k, k, C] -> [N, 1, 1, F]) as
    the matrix product it is: the same numbers, and its gradient is 2-3x faster than the
    conv's on TensorFlow and JAX CPUs (measured on the box head's 7x7x256 -> 1024 layer)."""
    kernel, x = _kernel_and_input(layer, x)
    kh, kw, channels, filters = kernel.shape
    y = ops.matmul(ops.reshape(x, [-1, kh * kw * channels]), ops.reshape(kernel, [-1, filters]))
    y = ops.reshape(y + ops.cast(layer.bias, y.dtype), [-1, 1, 1, filters])
    return layer.activation(y)


def stride_two_deconv(layer, x):
    """A 2x2, stride-2 transposed conv as the product it is: each input pixel spreads into its
    own 2x2 output block, out[n, 2h+i, 2w+j] = x[n, h, w] . kernel[i, j]. XLA's CPU gradient of
    the transposed conv is 40x slower than of this product (JAX); TensorFlow's own kernel is
    faster than either, so TensorFlow keeps the layer's call."""
    if backend_ops.uses_fused_kernels():
        return layer(x)
    kernel, x = _kernel_and_input(layer, x)
    y = ops.einsum("nhwc,ijoc->nhiwjo", x, kernel)
    _, h, _, w, _, filters = y.shape
    y = ops.reshape(y, [-1, 2 * h, 2 * w, filters]) + ops.cast(layer.bias, y.dtype)
    return layer.activation(y)


def box_head(layers: dict, pooled, training: bool):
    """pooled [N, 7, 7, C] -> logits [N, K], probs [N, K], deltas [N, K, 4] (float32)."""
    x = whole_input_conv(layers["mrcnn_class_conv1"], pooled)
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
    x = stride_two_deconv(layers["mrcnn_mask_deconv"], x)
    return ops.cast(layers["mrcnn_mask"](x), "float32")
