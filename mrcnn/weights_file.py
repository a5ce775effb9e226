"""A weights file's root attributes, read with h5py alone, and where matterport's files come from.

The attributes (the configuration stored beside the weights, the epoch) are read before any
network is built, to know which network to build. :mod:`mrcnn.weights`, which reads and writes
the weights of Keras models, imports Keras and so the backend (TensorFlow: 4 s of start-up on
an idle machine, 24 s against 1 s for h5py alone on a loaded one); this module imports no
Keras, so reading a file's attributes costs what h5py costs (about 0.1 s). :mod:`mrcnn.weights`
re-exports its names.
"""
from __future__ import annotations

import os

import h5py

from mrcnn.errors import WeightsError

COCO_WEIGHTS_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
IMAGENET_RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_RESNET50_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/"
                         "v0.2/" + IMAGENET_RESNET50_FILE)


def open_weights(filepath: str | os.PathLike) -> h5py.File:
    """The weights file open for reading; a missing file -> FileNotFoundError, one h5py cannot
    read -> :class:`mrcnn.errors.WeightsError`, each naming the file."""
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"{filepath}: weights file not found")
    try:
        return h5py.File(filepath, "r")
    except OSError as e:
        raise WeightsError(f"{filepath}: not a readable HDF5 weights file ({e})") from None


def read_attrs(filepath: str | os.PathLike) -> dict:
    """Root attributes of a weights file (e.g. the stored configuration and epoch)."""
    with open_weights(filepath) as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
