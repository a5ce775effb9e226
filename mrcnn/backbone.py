"""ResNet-50/101 with a feature pyramid (FPN), as one Keras functional model.

Layer names are matterport's (``conv1``, ``bn_conv1``, ``res4b22_branch2c``, ``fpn_p2`` ...), so a
Keras 2 ``mask_rcnn_coco.h5`` loads into it by name. The model maps a molded image batch
[B, H, W, 3] (H and W multiples of 64) to the pyramid [P2, P3, P4, P5, P6] (strides 4 to 64).
"""
from __future__ import annotations

import keras
import numpy as np
from keras import layers as KL


class BatchNorm(KL.BatchNormalization):
    """BatchNorm that can be told to always use its moving statistics.

    With small batches (one or two images) batch statistics are noise, so matterport freezes them
    (``TRAIN_BN = False``): gamma and beta may still train, the statistics never move. Training
    from scratch needs them to move (``TRAIN_BN = True``).
    """

    def __init__(self, *args, batch_stats: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.batch_stats = batch_stats
        self.folded = False    # set by fold_into: the convolution before it does its work

    def call(self, inputs, training=None, mask=None):
        if self.folded:
            return inputs
        if not self.batch_stats:
            training = False
        return super().call(inputs, training=training, mask=mask)

    def fold_into(self, conv: KL.Conv2D) -> None:
        """Inference only: fold the moving statistics, gamma and beta into ``conv`` (the
        convolution this layer normalises) and become the identity.

        Why: Keras normalises in float32 even under mixed bfloat16, so each BatchNorm is a cast
        and several passes over a full-size feature map; folded, ResNet-50-FPN runs about a
        quarter faster on the CPU for the same outputs (up to rounding).
        """
        if self.folded:
            raise ValueError(f"{self.name}: already folded")
        if not conv.use_bias:
            raise ValueError(f"{self.name}: cannot fold into {conv.name}, which has no bias")
        gamma, beta, mean, variance = (np.asarray(w, np.float64) for w in self.get_weights())
        kernel, bias = (np.asarray(w, np.float64) for w in conv.get_weights())
        if kernel.shape[-1] != gamma.shape[0]:
            raise ValueError(f"{self.name}: {gamma.shape[0]} channels, but {conv.name} has "
                             f"{kernel.shape[-1]}")
        scale = gamma / np.sqrt(variance + self.epsilon)
        conv.set_weights([(kernel * scale).astype(np.float32),
                          ((bias - mean) * scale + beta).astype(np.float32)])
        self.folded = True

    def get_config(self):
        config = super().get_config()
        config["batch_stats"] = self.batch_stats
        return config


def _identity_block(x, kernel_size, filters, stage, block, use_bias, train_bn):
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    y = KL.Conv2D(f1, 1, name=conv + "2a", use_bias=use_bias)(x)
    y = BatchNorm(name=bn + "2a", batch_stats=train_bn)(y)
    y = KL.Activation("relu")(y)
    y = KL.Conv2D(f2, kernel_size, padding="same", name=conv + "2b", use_bias=use_bias)(y)
    y = BatchNorm(name=bn + "2b", batch_stats=train_bn)(y)
    y = KL.Activation("relu")(y)
    y = KL.Conv2D(f3, 1, name=conv + "2c", use_bias=use_bias)(y)
    y = BatchNorm(name=bn + "2c", batch_stats=train_bn)(y)
    y = KL.Add()([y, x])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(y)


def _conv_block(x, kernel_size, filters, stage, block, strides, use_bias, train_bn):
    f1, f2, f3 = filters
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    y = KL.Conv2D(f1, 1, strides=strides, name=conv + "2a", use_bias=use_bias)(x)
    y = BatchNorm(name=bn + "2a", batch_stats=train_bn)(y)
    y = KL.Activation("relu")(y)
    y = KL.Conv2D(f2, kernel_size, padding="same", name=conv + "2b", use_bias=use_bias)(y)
    y = BatchNorm(name=bn + "2b", batch_stats=train_bn)(y)
    y = KL.Activation("relu")(y)
    y = KL.Conv2D(f3, 1, name=conv + "2c", use_bias=use_bias)(y)
    y = BatchNorm(name=bn + "2c", batch_stats=train_bn)(y)
    shortcut = KL.Conv2D(f3, 1, strides=strides, name=conv + "1", use_bias=use_bias)(x)
    shortcut = BatchNorm(name=bn + "1", batch_stats=train_bn)(shortcut)
    y = KL.Add()([y, shortcut])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(y)


STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}


def resnet_graph(input_image, architecture: str, stage5: bool = True, train_bn: bool = True):
    """ResNet stages C1..C5 on a Keras tensor (matterport's block names, biases included)."""
    if architecture not in STAGE4_BLOCKS:
        raise ValueError(f"unknown backbone {architecture!r}: use 'resnet50' or 'resnet101'")
    x = KL.ZeroPadding2D((3, 3))(input_image)
    x = KL.Conv2D(64, 7, strides=2, name="conv1", use_bias=True)(x)
    x = BatchNorm(name="bn_conv1", batch_stats=train_bn)(x)
    x = KL.Activation("relu")(x)
    c1 = x = KL.MaxPooling2D(3, strides=2, padding="same")(x)
    x = _conv_block(x, 3, [64, 64, 256], 2, "a", 1, True, train_bn)
    x = _identity_block(x, 3, [64, 64, 256], 2, "b", True, train_bn)
    c2 = x = _identity_block(x, 3, [64, 64, 256], 2, "c", True, train_bn)
    x = _conv_block(x, 3, [128, 128, 512], 3, "a", 2, True, train_bn)
    for block in "bcd":
        x = _identity_block(x, 3, [128, 128, 512], 3, block, True, train_bn)
    c3 = x
    x = _conv_block(x, 3, [256, 256, 1024], 4, "a", 2, True, train_bn)
    for i in range(STAGE4_BLOCKS[architecture]):
        x = _identity_block(x, 3, [256, 256, 1024], 4, chr(98 + i), True, train_bn)
    c4 = x
    c5 = None
    if stage5:
        x = _conv_block(x, 3, [512, 512, 2048], 5, "a", 2, True, train_bn)
        x = _identity_block(x, 3, [512, 512, 2048], 5, "b", True, train_bn)
        c5 = _identity_block(x, 3, [512, 512, 2048], 5, "c", True, train_bn)
    return [c1, c2, c3, c4, c5]


def fpn_graph(c2, c3, c4, c5, pyramid_size: int):
    """Top-down pathway with lateral 1x1 connections, then 3x3 smoothing; P6 by subsampling P5."""
    p5 = KL.Conv2D(pyramid_size, 1, name="fpn_c5p5")(c5)
    p4 = KL.Add(name="fpn_p4add")([
        KL.UpSampling2D(size=2, name="fpn_p5upsampled")(p5),
        KL.Conv2D(pyramid_size, 1, name="fpn_c4p4")(c4)])
    p3 = KL.Add(name="fpn_p3add")([
        KL.UpSampling2D(size=2, name="fpn_p4upsampled")(p4),
        KL.Conv2D(pyramid_size, 1, name="fpn_c3p3")(c3)])
    p2 = KL.Add(name="fpn_p2add")([
        KL.UpSampling2D(size=2, name="fpn_p3upsampled")(p3),
        KL.Conv2D(pyramid_size, 1, name="fpn_c2p2")(c2)])
    p2 = KL.Conv2D(pyramid_size, 3, padding="same", name="fpn_p2")(p2)
    p3 = KL.Conv2D(pyramid_size, 3, padding="same", name="fpn_p3")(p3)
    p4 = KL.Conv2D(pyramid_size, 3, padding="same", name="fpn_p4")(p4)
    p5 = KL.Conv2D(pyramid_size, 3, padding="same", name="fpn_p5")(p5)
    p6 = KL.MaxPooling2D(pool_size=1, strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]


def build_backbone(architecture: str, pyramid_size: int = 256, train_bn: bool = True,
                   channels: int = 3) -> keras.Model:
    """ResNet-FPN as a model: molded images [B, H, W, C] -> [P2, P3, P4, P5, P6]."""
    image = KL.Input(shape=[None, None, channels], name="input_image")
    _, c2, c3, c4, c5 = resnet_graph(image, architecture, stage5=True, train_bn=train_bn)
    pyramid = fpn_graph(c2, c3, c4, c5, pyramid_size)
    return keras.Model(image, pyramid, name="backbone")


def compute_backbone_shapes(config, image_shape) -> list[tuple[int, int]]:
    """Feature-map sizes of P2..P6 for an input of ``image_shape`` (ceil division by stride)."""
    if callable(config.BACKBONE) or callable(getattr(config, "COMPUTE_BACKBONE_SHAPE", None)):
        if config.COMPUTE_BACKBONE_SHAPE:
            return config.COMPUTE_BACKBONE_SHAPE(image_shape)
    return [(int(-(-image_shape[0] // s)), int(-(-image_shape[1] // s)))
            for s in config.BACKBONE_STRIDES]
