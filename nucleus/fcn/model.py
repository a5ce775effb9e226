"""FCN-8s (Long, Shelhamer and Darrell) on a VGG16 backbone, as a Keras 3 functional model.

The backbone layers carry the standard Keras names (``block1_conv1`` ... ``block5_pool``) so the
ImageNet weights of ``keras.applications.VGG16(include_top=False)`` copy over by name. fc6/fc7 are
convolutions with "same" padding, so any input whose sides are multiples of 32 works;
:func:`predict_foreground` pads other sizes and crops back. The model outputs background /
foreground logits at the input resolution.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import h5py
import keras
import numpy as np

from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_path

#: What ``keras.applications.VGG16(include_top=False, weights="imagenet")`` downloads.
VGG16_NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
#: keras.applications.vgg16.preprocess_input ("caffe" mode): BGR order, these means subtracted.
VGG_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
#: The total stride of the backbone: input sides must be multiples of it.
STRIDE = 32
NUM_CLASSES = 2  # background, foreground

# (block, number of 3x3 convolutions, filters) of VGG16.
_VGG_BLOCKS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def preprocess_image(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., H, W, 3] -> float32 as VGG16's ImageNet weights expect (BGR, mean removed).

    The single place that maps pixels to network inputs, shared by training and inference.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.shape[-1] != 3:
        raise ValueError(f"expected RGB images [..., H, W, 3], got shape {image.shape}")
    return image[..., ::-1] - VGG_MEAN_BGR


def bilinear_kernel(size: int, channels: int) -> np.ndarray:
    """Conv2DTranspose kernel [size, size, channels, channels] that upsamples bilinearly.

    Each channel maps to itself only. With stride ``size // 2`` and "same" padding it reproduces
    half-pixel-centred bilinear interpolation, the FCN paper's initialisation.
    """
    factor = (size + 1) // 2
    centre = factor - 1 if size % 2 == 1 else factor - 0.5
    ramp = 1.0 - np.abs(np.arange(size) - centre) / factor
    kernel2d = np.outer(ramp, ramp).astype(np.float32)
    kernel = np.zeros((size, size, channels, channels), dtype=np.float32)
    for c in range(channels):
        kernel[:, :, c, c] = kernel2d
    return kernel


def _upsample(x, factor: int, name: str, trainable: bool):
    size = 2 * factor
    layer = keras.layers.Conv2DTranspose(
        NUM_CLASSES, size, strides=factor, padding="same", use_bias=False, name=name,
        kernel_initializer=keras.initializers.Constant(bilinear_kernel(size, NUM_CLASSES)),
        trainable=trainable)
    return layer(x)


def _score(x, name: str):
    return keras.layers.Conv2D(NUM_CLASSES, 1, name=name, kernel_initializer="zeros")(x)


def build_fcn8s(weights: str | os.PathLike | None = "imagenet", dropout: float = 0.5,
                fc_width: int = 4096):
    """The FCN-8s network, input [None, None, 3] preprocessed by :func:`preprocess_image`.

    ``weights`` initialises the VGG16 backbone: ``"imagenet"`` (keras.applications' download or
    its cache in ``~/.keras/models/``), the path of a VGG16 no-top weight file, or ``None`` for
    random initialisation (He normal: with no batch norm, keras.applications' Glorot default
    shrinks the signal through the 15 ReLU layers and training from scratch starts slower).
    fc6 (7x7) and fc7 (1x1) are ``fc_width`` wide (4096 in the paper; smaller values make
    quick experiments possible). Score layers start at zero and the upsampling layers as
    bilinear interpolation; the last x8 upsampling stays fixed, as in the paper.
    """
    inputs = keras.Input((None, None, 3), name="image")
    x = inputs
    pools = {}
    for block, n_convs, filters in _VGG_BLOCKS:
        for i in range(1, n_convs + 1):
            x = keras.layers.Conv2D(filters, 3, padding="same", activation="relu",
                                    kernel_initializer="he_normal",
                                    name=f"block{block}_conv{i}")(x)
        x = keras.layers.MaxPooling2D(2, strides=2, name=f"block{block}_pool")(x)
        pools[block] = x

    x = keras.layers.Conv2D(fc_width, 7, padding="same", activation="relu",
                            kernel_initializer="he_normal", name="fc6")(x)
    x = keras.layers.Dropout(dropout, name="drop6")(x)
    x = keras.layers.Conv2D(fc_width, 1, activation="relu", kernel_initializer="he_normal",
                            name="fc7")(x)
    x = keras.layers.Dropout(dropout, name="drop7")(x)
    x = _score(x, "score_fr")

    x = _upsample(x, 2, "upscore2", trainable=True)                       # stride 16
    x = keras.layers.Add(name="fuse_pool4")([x, _score(pools[4], "score_pool4")])
    x = _upsample(x, 2, "upscore_pool4", trainable=True)                  # stride 8
    x = keras.layers.Add(name="fuse_pool3")([x, _score(pools[3], "score_pool3")])
    logits = _upsample(x, 8, "upscore8", trainable=False)                 # stride 1
    model = keras.Model(inputs, logits, name="fcn8s")

    if weights is not None:
        load_vgg16_weights(model, weights)
    return model


def load_vgg16_weights(model, weights: str | os.PathLike) -> None:
    """Copy VGG16 no-top weights ("imagenet" or a file path) into the ``block*`` layers of ``model``."""
    if isinstance(weights, os.PathLike) or weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: VGG16 weight file not found")
        try:
            vgg = keras.applications.VGG16(include_top=False, weights=str(path),
                                           input_shape=(None, None, 3))
        except Exception as error:  # h5py, Keras and shape errors alike
            raise InputError(f"{path}: not a VGG16 no-top weight file ({error})") from error
    else:
        try:
            vgg = keras.applications.VGG16(include_top=False, weights="imagenet",
                                           input_shape=(None, None, 3))
        except Exception as error:
            cache = Path("~/.keras/models").expanduser()
            raise InputError(
                f"{VGG16_NOTOP_FILE}: the ImageNet VGG16 weights could not be downloaded "
                f"({error}); put that file in {cache}/ (i.e. ~/.keras/models/) or pass "
                f"--weights PATH to a local copy") from error
    for layer in vgg.layers:
        if layer.name.startswith("block") and layer.weights:
            model.get_layer(layer.name).set_weights(layer.get_weights())


def is_fcn_checkpoint(path: str | os.PathLike) -> bool:
    """True for a Keras 3 weight file (a checkpoint of this model), False for a legacy one.

    keras.applications' VGG16 files use the Keras 2 HDF5 layout, which lists ``layer_names``
    at the top; Keras 3 ``.weights.h5`` checkpoints do not.
    """
    try:
        with h5py.File(path, "r") as f:
            return "layer_names" not in f.attrs
    except OSError as error:
        raise InputError(f"{path}: not an HDF5 weight file ({error})") from error


def save_fcn_weights(model, path: str | os.PathLike) -> Path:
    """Write the model's weights (not the optimizer's state) to ``path`` atomically.

    ``path`` must end in ``.weights.h5`` (Keras 3). Adam's two moments would triple the file
    (1.6 GB a checkpoint at the paper's width) and are not restored on resume anyway.
    """
    path = Path(path)
    if not path.name.endswith(".weights.h5"):
        raise ValueError(f"{path}: FCN weight files must end in '.weights.h5'")
    skip = [model.optimizer] if getattr(model, "optimizer", None) is not None else None
    with atomic_path(path, suffix=".partial.weights.h5") as partial:  # Keras checks the suffix
        keras.saving.save_weights(model, partial, objects_to_skip=skip)
    return path


def load_fcn_weights(model, path: str | os.PathLike) -> None:
    """Load an FCN checkpoint written by ``model.save_weights``; a file that does not fit -> InputError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path}: FCN weight file not found")
    if not path.name.endswith(".weights.h5"):
        raise InputError(f"{path}: FCN checkpoints are Keras '.weights.h5' files")
    try:
        with warnings.catch_warnings():
            # Keras 3.15 warns about its own Functional bookkeeping lists on every load of a
            # functional model's checkpoint; the weights themselves all load (see the tests).
            warnings.filterwarnings("ignore", message="Skipping nested container")
            model.load_weights(str(path))
    except Exception as error:
        raise InputError(f"{path}: does not fit this FCN-8s model ({error})") from error


def load_fcn(weights: str | os.PathLike | None, dropout: float = 0.5, fc_width: int = 4096):
    """Build the model and initialise it from whatever ``weights`` names.

    An FCN checkpoint (Keras 3 ``.weights.h5``) loads into the whole model; ``"imagenet"``, a
    VGG16 no-top file or ``None`` go to :func:`build_fcn8s`. The command line's entry point,
    so its ``"none"`` (``--weights none``) means ``None``: random initialisation.
    """
    if weights == "none":
        weights = None
    if weights is not None and weights != "imagenet":
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"{path}: weight file not found")
        if is_fcn_checkpoint(path):
            model = build_fcn8s(None, dropout=dropout, fc_width=fc_width)
            load_fcn_weights(model, path)
            return model
    return build_fcn8s(weights, dropout=dropout, fc_width=fc_width)


def pad_to_stride(image: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Zero-pad the bottom and right of [H, W, ...] so both sides are multiples of ``stride``."""
    h, w = image.shape[:2]
    pad = [(0, -h % stride), (0, -w % stride)] + [(0, 0)] * (image.ndim - 2)
    return np.pad(image, pad)


def predict_foreground(model, image: np.ndarray) -> np.ndarray:
    """Foreground probability float32 [H, W] for one uint8 RGB image of any size."""
    image = np.asarray(image)
    h, w = image.shape[:2]
    batch = preprocess_image(pad_to_stride(image))[None]
    logits = model(batch, training=False)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(logits, axis=-1))
    return probs[0, :h, :w, 1].astype(np.float32)
