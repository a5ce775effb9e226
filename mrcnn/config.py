"""Every hyperparameter of the model in one class, with matterport's names.

Subclass :class:`Config` and override class attributes (``NAME``, ``NUM_CLASSES``,
``IMAGES_PER_GPU`` ...); derived values (``BATCH_SIZE``, ``IMAGE_SHAPE``, ``IMAGE_META_SIZE``)
are computed in ``__init__``. ``to_dict()`` and ``from_dict()`` make a configuration data that
can be stored beside a checkpoint.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class Config:
    # --- identity and hardware
    NAME: str | None = None           # prefix of log folders and checkpoints
    GPU_COUNT = 1                     # >1 trains under tf.distribute.MirroredStrategy
    IMAGES_PER_GPU = 2                # images per device per step
    STEPS_PER_EPOCH = 1000            # training steps per epoch (epochs are just bookkeeping)
    VALIDATION_STEPS = 50             # validation batches at the end of each epoch

    # --- backbone
    BACKBONE = "resnet101"            # "resnet50" or "resnet101"
    COMPUTE_BACKBONE_SHAPE = None     # callable(image_shape) -> feature shapes, for custom backbones
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]   # strides of P2..P6
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024  # width of the two box-head "fully connected" layers
    TOP_DOWN_PYRAMID_SIZE = 256       # channels of the FPN feature maps
    RPN_CONV_SIZE = 512               # channels of the RPN's shared 3x3 conv
    MASK_HEAD_CONV_SIZE = 256         # channels of the mask head's convs and deconv

    NUM_CLASSES = 1                   # including background

    # --- region proposal network
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)  # anchor side in pixels, one per level
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]   # width/height ratios at each location
    RPN_ANCHOR_STRIDE = 1             # 1 = an anchor set at every feature-map cell
    RPN_NMS_THRESHOLD = 0.7           # NMS IoU over proposals
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256  # anchors sampled per image for the RPN losses
    RPN_POSITIVE_IOU = 0.7            # anchor IoU with a box above this: positive
    RPN_NEGATIVE_IOU = 0.3            # below this: negative
    ROI_POSITIVE_IOU = 0.5            # training ROI IoU with a box at least this: positive
                                      # (below: negative); matterport's fixed 0.5
    PRE_NMS_LIMIT = 6000              # top-scoring anchors kept before NMS
    POST_NMS_ROIS_TRAINING = 2000     # proposals kept after NMS, training
    POST_NMS_ROIS_INFERENCE = 1000    # proposals kept after NMS, inference
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])  # scale of RPN box deltas

    # --- masks
    USE_MINI_MASK = True              # store gt masks cropped to their box at MINI_MASK_SHAPE
    MINI_MASK_SHAPE = (56, 56)

    # --- input images
    IMAGE_RESIZE_MODE = "square"      # none | square | pad64 | crop
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])  # COCO mean, subtracted from RGB input
    IMAGE_NORMALIZATION = None        # None, or a mode the configuration's normalize_image
                                      # knows (per-image intensities, before resizing)
    OBJECT_DIAMETER = None            # training: rescale each image so its objects' median
                                      # equivalent diameter is this many pixels (times a draw
                                      # from OBJECT_SCALE_JITTER) before the crop; inference:
                                      # the size the model expects (None: native resolution)
    OBJECT_SCALE_JITTER = (0.67, 1.5)  # log-uniform factor range around OBJECT_DIAMETER

    # --- second stage (heads)
    TRAIN_ROIS_PER_IMAGE = 200        # ROIs sampled per image for the heads
    ROI_POSITIVE_RATIO = 0.33         # share of positive ROIs among them
    POOL_SIZE = 7                     # ROIAlign output for the box head
    MASK_POOL_SIZE = 14               # ROIAlign output for the mask head
    MASK_SHAPE = [28, 28]             # mask head output
    MAX_GT_INSTANCES = 100            # ground-truth instances kept per image
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])  # scale of head box deltas
    DETECTION_MAX_INSTANCES = 100     # detections kept per image
    INFERENCE_CAP_PIXELS = None       # None: PRE_NMS_LIMIT, POST_NMS_ROIS_INFERENCE and
                                      # DETECTION_MAX_INSTANCES are per image. A number: they
                                      # are per this many pixels of the network's input, an
                                      # image of more pixels getting them times pixels / this,
                                      # rounded up to a quarter (so a big tile keeps the
                                      # proposals and detections per pixel of a small one)
    INFERENCE_CAP_FLOOR = None        # None: an image of fewer pixels keeps the full caps. A
                                      # share (a multiple of 1/4): its caps shrink with its
                                      # area too, to no fewer than this share of them
    DETECTION_MASK_BATCH = 128        # inference: the mask head runs on at most this many
                                      # detections at a time (its memory, 0.5 MB a detection,
                                      # stays flat however many an image has)
    DETECTION_MIN_CONFIDENCE = 0.7    # detections below this score are dropped
    DETECTION_NMS_THRESHOLD = 0.3     # per-class NMS IoU of detections
    DETECTION_MASK_OVERLAP = "keep"   # "keep": detections' masks may share pixels (matterport);
                                      # "confidence": a shared pixel goes to the detection with
                                      # the highest score x mask probability there
    DETECTION_MASK_THRESHOLD = 0.5    # a pixel is in a detection's mask where the mask head's
                                      # probability, stretched over its box, is at least this
    MASK_HEAD_POSITIVE_ONLY = True    # training: run the mask head on positive ROIs only
                                      # (the only ones in the mask loss; same loss, ~3x cheaper)

    # --- optimisation
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001             # L2 on kernels (not on BatchNorm gamma/beta)
    GRADIENT_CLIP_NORM = 5.0          # global gradient-norm clipping
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.,
        "rpn_bbox_loss": 1.,
        "mrcnn_class_loss": 1.,
        "mrcnn_bbox_loss": 1.,
        "mrcnn_mask_loss": 1.,
    }
    TRAIN_BN = False                  # False: BatchNorm frozen (small batches); True: trained
    BATCH_NORM_MOMENTUM = 0.99        # moving-statistics momentum when TRAIN_BN; from scratch
                                      # 0.9 keeps inference statistics up with the weights
    MIXED_PRECISION = None            # None or "mixed_bfloat16" (CPUs with AVX512-BF16/AMX)
    INFERENCE_SHAPE_STEP = 64         # JAX/compiling backends: images run padded to multiples
                                      # of this (one compilation per padded shape); 64 adds no
                                      # padding to "pad64" images, larger steps compile fewer
                                      # shapes but change detections near the padded edges

    def __init__(self) -> None:
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        if self.IMAGE_RESIZE_MODE == "crop":
            self.IMAGE_SHAPE = np.array([self.IMAGE_MIN_DIM, self.IMAGE_MIN_DIM,
                                         self.IMAGE_CHANNEL_COUNT])
        else:
            self.IMAGE_SHAPE = np.array([self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM,
                                         self.IMAGE_CHANNEL_COUNT])
        # image_id, original shape (3), molded shape (3), window (4), scale, class ids
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for name in dir(self):
            if name.isupper() and not name.startswith("_"):
                value = getattr(self, name)
                if callable(value):
                    continue
                out[name] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Config":
        """A configuration of this class with ``values`` overriding the class defaults."""
        config = cls.__new__(cls)
        for name, value in values.items():
            if name in ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE"):
                continue
            default = getattr(cls, name, None)
            if isinstance(default, np.ndarray):
                value = np.array(value)
            setattr(config, name, value)
        Config.__init__(config)
        return config

    def normalize_image(self, image: np.ndarray) -> np.ndarray:
        """The per-image intensity normalisation ``IMAGE_NORMALIZATION`` names, applied to a
        uint8 RGB image before resizing, in training (``load_image_gt``) and detection
        (``mold_inputs``) alike.

        ``None`` leaves the image as it is (matterport). Other modes belong to applications: a
        subclass overrides this method, and the name stored with the weights selects the mode
        again when they are loaded.
        """
        if self.IMAGE_NORMALIZATION is None:
            return image
        raise ValueError(f"unknown IMAGE_NORMALIZATION {self.IMAGE_NORMALIZATION!r}: "
                         f"{type(self).__name__} knows only None")

    def display(self) -> None:
        print("\nConfigurations:")
        for name, value in sorted(self.to_dict().items()):
            print(f"{name:30} {value}")
        print("\n")
