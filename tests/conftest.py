"""Shared fixtures of the Mask R-CNN tests: a tiny 64x64 configuration and models built once.

Building a ResNet-50 Mask R-CNN costs seconds and tracing its training step far more, so the
models here are session-scoped; tests that change a model's state (weights, trainable flags, log
folder) set what they rely on themselves.
"""
from __future__ import annotations

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.dirname(_HERE), _HERE):  # the repository (mrcnn, nucleus) and synthetic.py
    if _path not in sys.path:
        sys.path.insert(0, _path)

import pytest  # noqa: E402

from mrcnn.config import Config  # noqa: E402


def run_fresh_python(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` run by a new interpreter from the repository, this checkout first on its path:
    what a module imports by itself, which this test process (having imported everything)
    cannot tell."""
    repo = os.path.dirname(_HERE)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=timeout)


def pytest_configure(config) -> None:
    # Keras 3 converts variables with np.array(copy=False), which NumPy 2 warns about at length.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
    # Tests that must hold under every Keras backend: the README's test command runs them
    # again with KERAS_BACKEND=jax (``-m backends``).
    config.addinivalue_line("markers", "backends: runs under every Keras backend (TF and JAX)")


class TinyConfig(Config):
    """The smallest configuration that still learns: 64x64 images, thin heads, one class.

    Training from scratch needs BatchNorm statistics that move (``TRAIN_BN``); the narrow RPN,
    pyramid and heads make a training step cost ~0.4 s on two cores instead of ~2 s.
    """
    NAME = "tiny"
    NUM_CLASSES = 2
    IMAGES_PER_GPU = 4
    BACKBONE = "resnet50"
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    RPN_CONV_SIZE = 64
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 200
    POST_NMS_ROIS_INFERENCE = 100
    TRAIN_ROIS_PER_IMAGE = 32
    MAX_GT_INSTANCES = 8
    MINI_MASK_SHAPE = (28, 28)
    TOP_DOWN_PYRAMID_SIZE = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 128
    MASK_HEAD_CONV_SIZE = 32
    TRAIN_BN = True
    MIXED_PRECISION = None
    LEARNING_RATE = 0.01
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0
    DETECTION_MIN_CONFIDENCE = 0.5


class TwoReplicaConfig(TinyConfig):
    """Two devices (GPU_COUNT) of one image each: the data-parallel tests of every backend."""
    GPU_COUNT = 2
    IMAGES_PER_GPU = 1


class TinyInferenceConfig(TinyConfig):
    """One image at a time, padded to a multiple of 64 without scaling."""
    IMAGES_PER_GPU = 1
    IMAGE_RESIZE_MODE = "pad64"
    IMAGE_MIN_DIM = None


@pytest.fixture(scope="session")
def tiny_config() -> TinyConfig:
    return TinyConfig()


@pytest.fixture(scope="session")
def training_model(tmp_path_factory):
    """An untrained MaskRCNN in training mode (its model_dir is a session temp folder)."""
    from mrcnn import model as modellib

    return modellib.MaskRCNN("training", TinyConfig(), str(tmp_path_factory.mktemp("logs")))


@pytest.fixture(scope="session")
def inference_model(tmp_path_factory):
    """A MaskRCNN in inference mode (built untrained; tests may load weights into it)."""
    from mrcnn import model as modellib

    return modellib.MaskRCNN("inference", TinyInferenceConfig(),
                             str(tmp_path_factory.mktemp("logs")))
