"""Turning dataset images into training batches: resize, augment, mini masks, RPN targets.

:class:`DataGenerator` is a ``keras.utils.PyDataset`` that runs in threads (no multiprocessing,
so nothing hangs at "Epoch 1") and prefetches while the model trains.
"""
from __future__ import annotations

import logging
import threading

import cv2
import keras
import numpy as np

from mrcnn import utils

log = logging.getLogger(__name__)


def mold_image(images: np.ndarray, config) -> np.ndarray:
    """uint8 RGB -> float32 network input (mean pixel subtracted), in one pass: the same
    float32 values as converting first and subtracting after, without the converted copy
    (a 1,024-px tile: 10 -> 6 ms)."""
    return np.subtract(images, np.asarray(config.MEAN_PIXEL, np.float32), dtype=np.float32)


def unmold_image(normalized_images: np.ndarray, config) -> np.ndarray:
    # Round, not truncate: float32 round-off would turn 163 into 162.999 and then 162.
    images = np.asarray(normalized_images) + np.asarray(config.MEAN_PIXEL)
    return np.clip(np.round(images), 0, 255).astype(np.uint8)


def load_image_gt(dataset, config, image_id: int, augment: bool = False, augmentation=None,
                  use_mini_mask: bool | None = None, rng=None):
    """Image and ground truth of one dataset image, resized (and augmented) for training.

    Returns ``image [H, W, 3] uint8, image_meta, class_ids [N], bbox [N, 4] (pixels),
    mask [h, w, N]`` where the mask is a mini mask when ``use_mini_mask`` (default: the
    configuration's ``USE_MINI_MASK``). ``augment`` is matterport's deprecated flag: a
    left-right flip half of the time; ``augmentation`` is an imgaug augmenter. ``rng``: the
    NumPy ``Generator`` of crops and flips (None: NumPy's global one).
    """
    if use_mini_mask is None:
        use_mini_mask = config.USE_MINI_MASK
    image = config.normalize_image(dataset.load_image(image_id))
    mask, class_ids = dataset.load_mask(image_id)
    original_shape = image.shape
    if config.OBJECT_DIAMETER and config.IMAGE_RESIZE_MODE == "crop":
        factor = object_scale(mask, config.OBJECT_DIAMETER, config.OBJECT_SCALE_JITTER,
                              np.random if rng is None else rng)
        image, mask, window, scale = scaled_crop(image, mask, factor, config.IMAGE_MIN_DIM, rng)
    else:
        image, window, scale, padding, crop = utils.resize_image(
            image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
            max_dim=config.IMAGE_MAX_DIM, mode=config.IMAGE_RESIZE_MODE, rng=rng)
        if mask.shape[-1]:
            mask = utils.resize_mask(mask, scale, padding, crop)
        else:
            mask = np.zeros(image.shape[:2] + (0,), bool)
    if augment:
        log.warning("'augment' is deprecated. Use 'augmentation' instead.")
        if utils.random_below(rng, 2):
            image, mask = np.fliplr(image), np.fliplr(mask)
    if augmentation is not None:
        # here: imgaug (~0.8 s) only when training augments, not for every detection
        from mrcnn.augmentation import apply_augmentation
        image, mask = apply_augmentation(augmentation, image, mask)
    # Crops and augmentation can leave masks empty: drop them.
    keep = np.where(np.sum(mask, axis=(0, 1)) > 0)[0]
    mask = mask[:, :, keep]
    class_ids = np.asarray(class_ids)[keep]
    bbox = utils.extract_bboxes(mask)
    active_class_ids = np.ones([config.NUM_CLASSES], dtype=np.int32)
    if use_mini_mask and mask.shape[-1]:
        mask = utils.minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)
    elif use_mini_mask:
        mask = np.zeros(tuple(config.MINI_MASK_SHAPE) + (0,), bool)
    image_meta = utils.compose_image_meta(image_id, original_shape, image.shape, window, scale,
                                          active_class_ids)
    return image, image_meta, class_ids, bbox, mask


SCALE_LIMITS = (0.25, 4.0)
"""The smallest and largest factor :func:`object_scale` returns."""


def object_scale(mask: np.ndarray, diameter: float, jitter: tuple[float, float] = (1.0, 1.0),
                 rng=np.random) -> float:
    """The factor that brings the median object of ``mask`` [H, W, N] to ``diameter`` pixels,
    times a log-uniform draw from ``jitter`` (low, high), clipped to :data:`SCALE_LIMITS`.

    This is Cellpose's idea applied to training: every image shows the network objects of about
    one size, so an image of another magnification is rescaled to it at inference
    (:mod:`nucleus.inference.scales`) instead of being a size the network never saw. An image
    without objects keeps its size (times the jitter).
    """
    low, high = (float(v) for v in jitter)
    if not 0 < low <= high:
        raise ValueError(f"jitter must satisfy 0 < low <= high, got {jitter!r}")
    found = utils.median_diameter(mask)
    base = 1.0 if found is None else float(diameter) / found
    factor = base * float(np.exp(rng.uniform(np.log(low), np.log(high))))
    return float(np.clip(factor, *SCALE_LIMITS))


def scaled_crop(image: np.ndarray, mask: np.ndarray, factor: float,
                size: int, rng=None) -> tuple[np.ndarray, np.ndarray, tuple, float]:
    """A random ``size`` x ``size`` crop of ``image`` [H, W, C] and ``mask`` [H, W, N] rescaled
    by ``factor``: the matching window of ``size / factor`` pixels is cut first (padded with
    zeros where the image is smaller) and only it is resized, so an image enlarged 4x costs no
    more than its crop. Returns ``image, mask (bool, masks absent from the crop dropped),
    window (y1, x1, y2, x2) of image content in the crop, scale``.
    """
    # OpenCV's channel limit; here: imgaug_compat imports imgaug (~0.8 s), see load_image_gt
    from mrcnn.imgaug_compat import CV_MAX_CHANNELS as chunk_size

    source = max(1, int(round(size / factor)))
    h, w = image.shape[:2]
    y = utils.random_below(rng, max(h - source, 0) + 1)
    x = utils.random_below(rng, max(w - source, 0) + 1)
    piece = image[y:y + source, x:x + source]
    masks = mask[y:y + source, x:x + source]
    masks = masks[..., masks.reshape(-1, masks.shape[-1]).any(axis=0)] if masks.shape[-1] \
        else masks
    ph, pw = piece.shape[:2]
    scale = size / source
    out_h, out_w = min(size, round(ph * scale)), min(size, round(pw * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(piece, (out_w, out_h), interpolation=interpolation)
    if resized.ndim == 2:
        resized = resized[..., None]
    out = np.zeros((size, size, image.shape[-1]), image.dtype)
    out[:out_h, :out_w] = resized
    out_masks = np.zeros((size, size, masks.shape[-1]), bool)
    for start in range(0, masks.shape[-1], chunk_size):
        chunk = masks[..., start:start + chunk_size].astype(np.uint8) * 255
        small = cv2.resize(chunk, (out_w, out_h), interpolation=cv2.INTER_LINEAR)
        if small.ndim == 2:
            small = small[..., None]
        out_masks[:out_h, :out_w, start:start + small.shape[-1]] = small >= 128
    return out, out_masks, (0, 0, out_h, out_w), scale


def build_rpn_targets(anchors: np.ndarray, gt_class_ids: np.ndarray, gt_boxes: np.ndarray,
                      config, rng=None):
    """Anchor labels (1 positive, -1 negative, 0 ignored) and deltas of the positive anchors.

    Returns ``rpn_match [A]`` and ``rpn_bbox [RPN_TRAIN_ANCHORS_PER_IMAGE, 4]`` (the deltas of
    the positive anchors in anchor order, zero padded). ``rng``: the NumPy ``Generator`` that
    subsamples anchors (None: NumPy's global one).
    """
    rng = np.random if rng is None else rng
    rpn_match = np.zeros([anchors.shape[0]], dtype=np.int32)
    rpn_bbox = np.zeros((config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), dtype=np.float32)
    if gt_boxes.shape[0] == 0:
        ids = rng.permutation(anchors.shape[0])[:config.RPN_TRAIN_ANCHORS_PER_IMAGE]
        rpn_match[ids] = -1
        return rpn_match, rpn_bbox
    overlaps = utils.compute_overlaps(anchors, gt_boxes)
    anchor_iou_argmax = np.argmax(overlaps, axis=1)
    anchor_iou_max = overlaps[np.arange(overlaps.shape[0]), anchor_iou_argmax]
    rpn_match[anchor_iou_max < config.RPN_NEGATIVE_IOU] = -1
    # Every gt box gets its best anchor(s), however low the IoU.
    gt_iou_max = np.max(overlaps, axis=0)
    best = np.argwhere((overlaps == gt_iou_max[None, :]) & (gt_iou_max[None, :] > 0))[:, 0]
    rpn_match[best] = 1
    rpn_match[anchor_iou_max >= config.RPN_POSITIVE_IOU] = 1
    ids = np.where(rpn_match == 1)[0]
    extra = len(ids) - config.RPN_TRAIN_ANCHORS_PER_IMAGE // 2
    if extra > 0:
        rpn_match[rng.choice(ids, extra, replace=False)] = 0
    ids = np.where(rpn_match == -1)[0]
    extra = len(ids) - (config.RPN_TRAIN_ANCHORS_PER_IMAGE - np.sum(rpn_match == 1))
    if extra > 0:
        rpn_match[rng.choice(ids, extra, replace=False)] = 0
    ids = np.where(rpn_match == 1)[0]
    gt = gt_boxes[anchor_iou_argmax[ids]]
    deltas = utils.box_refinement(anchors[ids], gt)
    rpn_bbox[:len(ids)] = deltas / np.asarray(config.RPN_BBOX_STD_DEV)
    return rpn_match, rpn_bbox


def build_training_sample(dataset, config, image_id: int, anchors: np.ndarray,
                          augmentation=None, rng=None) -> dict | None:
    """Everything the training graph reads for one image, padded to fixed sizes; ``rng``:
    the NumPy ``Generator`` of its crop, flips and sampled anchors (None: NumPy's global one;
    imgaug's ``augmentation`` draws from imgaug's own)."""
    rng = np.random if rng is None else rng
    image, _, class_ids, boxes, masks = load_image_gt(dataset, config, image_id,
                                                      augmentation=augmentation, rng=rng)
    if not np.any(class_ids > 0):
        return None
    rpn_match, rpn_bbox = build_rpn_targets(anchors, class_ids, boxes, config, rng)
    if boxes.shape[0] > config.MAX_GT_INSTANCES:
        ids = rng.choice(np.arange(boxes.shape[0]), config.MAX_GT_INSTANCES, replace=False)
        class_ids, boxes, masks = class_ids[ids], boxes[ids], masks[:, :, ids]
    g = config.MAX_GT_INSTANCES
    gt_class_ids = np.zeros([g], np.int32)
    gt_boxes = np.zeros([g, 4], np.float32)
    gt_masks = np.zeros(masks.shape[:2] + (g,), bool)
    n = boxes.shape[0]
    gt_class_ids[:n], gt_boxes[:n], gt_masks[:, :, :n] = class_ids, boxes, masks
    return {
        "input_image": mold_image(image, config),
        "input_rpn_match": rpn_match[:, None],
        "input_rpn_bbox": rpn_bbox,
        "input_gt_class_ids": gt_class_ids,
        "input_gt_boxes": gt_boxes,
        "input_gt_masks": gt_masks,
    }


class DataGenerator(keras.utils.PyDataset):
    """Batches of training samples in random order; an epoch is ``steps`` batches.

    Images without any instance (after a crop, say) are replaced by another random image. A file
    that fails to load stops training with the loader's error (naming the file) instead of being
    silently skipped.
    """

    def __init__(self, dataset, config, anchors: np.ndarray, steps: int, shuffle: bool = True,
                 augmentation=None, workers: int = 2, seed: int | None = None,
                 batch_size: int | None = None):
        super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=4)
        # images per batch: config.BATCH_SIZE, or one worker's share of it across machines
        self.batch_size = batch_size or config.BATCH_SIZE
        self.dataset = dataset
        self.config = config
        self.anchors = anchors
        self.steps = steps
        self.shuffle = shuffle
        self.augmentation = augmentation
        self.image_ids = np.copy(dataset.image_ids)
        if len(self.image_ids) == 0:
            raise ValueError("the training dataset has no images")
        # Without a seed, one drawn from NumPy's global generator: random as before unless the
        # caller seeded it (``keras.utils.set_random_seed``), which then fixes the batches too.
        self._seed = int(np.random.randint(2 ** 31 - 1) if seed is None else seed)
        self._rng = np.random.default_rng(self._seed)
        self._epoch = 0
        self._lock = threading.Lock()
        self._order = self._new_order()

    def _new_order(self) -> np.ndarray:
        need = self.steps * self.batch_size
        reps = -(-need // len(self.image_ids))
        order = np.concatenate([self._rng.permutation(self.image_ids) if self.shuffle
                                else self.image_ids for _ in range(reps)])
        return order[:need]

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self) -> None:
        with self._lock:
            self._order = self._new_order()
            self._epoch += 1

    def __getitem__(self, idx: int) -> tuple[dict]:
        b = self.batch_size
        with self._lock:
            ids = list(self._order[idx * b:(idx + 1) * b])
            epoch = self._epoch
        # One generator per batch, from the seed, epoch and index: the batch is the same
        # whichever worker thread builds it, and whenever.
        rng = np.random.default_rng((self._seed, epoch, idx))
        samples = []
        tries = 0
        while len(samples) < b:
            image_id = ids[len(samples)] if len(samples) < len(ids) else None
            if image_id is None or tries > 0:
                image_id = int(rng.choice(self.image_ids))
            sample = build_training_sample(self.dataset, self.config, image_id, self.anchors,
                                           self.augmentation, rng)
            if sample is None:
                tries += 1
                if tries > 50:
                    raise ValueError("50 images in a row had no instance: check the masks")
                continue
            tries = 0
            samples.append(sample)
        batch = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
        # uint8, not bool: TensorFlow's multi-device strategies average a first batch to
        # build the model, and cannot average booleans
        batch["input_gt_masks"] = batch["input_gt_masks"].astype(np.uint8)
        return (batch,)
