"""NumPy helpers shared by the model, the data pipeline and the evaluation code.

Matterport's ``mrcnn.utils`` names are kept (``Dataset``, ``resize_image``, ``compute_ap``,
``compute_overlaps_masks`` ...) so that code written against it keeps working.
Boxes are ``(y1, x1, y2, x2)`` with y2/x2 exclusive, in pixels unless a name says "norm".
"""
from __future__ import annotations

import http.client
import logging
import os
import urllib.error
import urllib.request
from typing import Any, Iterable

import numpy as np
import skimage.io
import skimage.transform
from tqdm import tqdm

from mrcnn.files import atomic_path  # noqa: F401  (public here since the first release)
from mrcnn.mask_iou import mask_iou

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- boxes
def extract_bboxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes [N, (y1, x1, y2, x2)] around each mask of a [H, W, N] stack (zeros if empty)."""
    boxes = np.zeros([mask.shape[-1], 4], dtype=np.int32)
    for i in range(mask.shape[-1]):
        m = mask[:, :, i]
        rows = np.where(np.any(m, axis=1))[0]
        cols = np.where(np.any(m, axis=0))[0]
        if rows.size:
            boxes[i] = [rows[0], cols[0], rows[-1] + 1, cols[-1] + 1]
    return boxes


def compute_iou(box: np.ndarray, boxes: np.ndarray, box_area: float,
                boxes_area: np.ndarray) -> np.ndarray:
    """IoU of one box against many; areas are passed in so callers can reuse them."""
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = box_area + boxes_area - intersection
    return intersection / np.maximum(union, 1e-12)


def compute_overlaps(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU matrix [len(boxes1), len(boxes2)]."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    for i in range(overlaps.shape[1]):
        overlaps[:, i] = compute_iou(boxes2[i], boxes1, area2[i], area1)
    return overlaps


def compute_overlaps_masks(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two [H, W, N] mask stacks (values above 0.5 are in), as float32 [N1, N2].

    Matterport's name and float32 result over :func:`mrcnn.mask_iou.mask_iou`, which every mask
    IoU goes through; rounding its exact float64 IoU to float32 gives what a float32 division
    of the counts gives.
    """
    if masks1.shape[-1] == 0 or masks2.shape[-1] == 0:
        return np.zeros((masks1.shape[-1], masks2.shape[-1]))
    return mask_iou(masks1 > .5, masks2 > .5).astype(np.float32)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS; returns the indices kept, best score first."""
    assert boxes.shape[0] > 0
    boxes = boxes.astype(np.float32)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    ixs = scores.argsort()[::-1]
    pick = []
    while len(ixs) > 0:
        i = ixs[0]
        pick.append(i)
        iou = compute_iou(boxes[i], boxes[ixs[1:]], area[i], area[ixs[1:]])
        ixs = np.delete(ixs, np.where(iou > threshold)[0] + 1)
        ixs = np.delete(ixs, 0)
    return np.array(pick, dtype=np.int32)


def box_refinement(box: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
    """Deltas (dy, dx, log dh, log dw) that turn ``box`` into ``gt_box`` (numpy in and out):
    :func:`mrcnn.box_ops.box_refinement`, the coder of every stage, so the RPN targets the
    data loader builds are encoded exactly as the network decodes them."""
    # here: Keras imports TensorFlow (~4 s); this module serves the data pipeline and image
    # preparation, which must not pay it
    from keras import ops

    from mrcnn import box_ops

    return np.asarray(ops.convert_to_numpy(box_ops.box_refinement(box, gt_box)), np.float32)


def apply_box_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Inverse of :func:`box_refinement` (:func:`mrcnn.box_ops.apply_box_deltas`: size changes
    clamped as in the network)."""
    from keras import ops   # here: Keras (see box_refinement)

    from mrcnn import box_ops

    return np.asarray(ops.convert_to_numpy(box_ops.apply_box_deltas(boxes, deltas)), np.float32)


def norm_boxes(boxes: np.ndarray, shape: Iterable[int]) -> np.ndarray:
    """Pixel boxes to normalised coordinates in [0, 1] (y2/x2 map to 1 at the last pixel)."""
    h, w = list(shape)[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.divide((boxes - shift), scale).astype(np.float32)


def denorm_boxes(boxes: np.ndarray, shape: Iterable[int]) -> np.ndarray:
    """Inverse of :func:`norm_boxes`, rounded to integer pixels."""
    h, w = list(shape)[:2]
    scale = np.array([h - 1, w - 1, h - 1, w - 1])
    shift = np.array([0, 0, 1, 1])
    return np.around(np.multiply(boxes, scale) + shift).astype(np.int32)


# ----------------------------------------------------------------------------- dataset
class Dataset:
    """Base class for datasets, with matterport's API.

    Subclasses call :meth:`add_class` and :meth:`add_image` in a ``load_*`` method and override
    :meth:`load_mask` (and :meth:`load_image` when images are not plain files); then
    :meth:`prepare` builds the internal id tables.
    """

    def __init__(self, class_map: dict | None = None):
        self._image_ids: np.ndarray = np.array([], dtype=np.int64)
        self.image_info: list[dict[str, Any]] = []
        self.class_info: list[dict[str, Any]] = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids: dict[str, list[int]] = {}

    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        assert "." not in source, "Source name cannot contain a dot"
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id: Any, path: str | None, **kwargs: Any) -> None:
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def image_reference(self, image_id: int) -> str:
        """A string that identifies the image for people (a path or a URL)."""
        return str(self.image_info[image_id].get("path", ""))

    def prepare(self, class_map: dict | None = None) -> None:
        def clean_name(name: str) -> str:
            return ",".join(name.split(",")[:1])

        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)
        self.class_from_source_map = {f"{info['source']}.{info['id']}": id
                                      for info, id in zip(self.class_info, self.class_ids)}
        self.image_from_source_map = {f"{info['source']}.{info['id']}": id
                                      for info, id in zip(self.image_info, self.image_ids)}
        self.sources = sorted({i["source"] for i in self.class_info})
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info)
                if i == 0 or source == info["source"]]

    def map_source_class_id(self, source_class_id: str) -> int:
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id: int, source: str) -> int:
        info = self.class_info[class_id]
        assert info["source"] == source
        return info["id"]

    @property
    def image_ids(self) -> np.ndarray:
        return self._image_ids

    def source_image_link(self, image_id: int) -> str | None:
        return self.image_info[image_id]["path"]

    def load_image(self, image_id: int) -> np.ndarray:
        """Read the image as uint8 RGB [H, W, 3] (grey is stacked, alpha dropped)."""
        image = skimage.io.imread(self.image_info[image_id]["path"])
        return to_rgb_uint8(image)

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks [H, W, N] (bool) and class ids [N]; the base class has none."""
        log.warning("Dataset.load_mask is not overridden: returning no instances")
        return np.empty([0, 0, 0], dtype=bool), np.empty([0], np.int32)


DEEP_PERCENTILES = (0.1, 99.9)
"""Grey levels of a deep (not uint8) image that :func:`to_rgb_uint8` maps to 0 and 255: a few
hot pixels cannot push the rest into a handful of dark levels, as a division by the maximum
would, and no level a later per-image stretch (0.5-99.5th percentiles) uses is lost."""
DEEP_SAMPLE_PIXELS = 4_000_000
"""The percentiles of bigger images are measured on a regular subsample of about this many
pixels (:func:`deep_sample_step`)."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a grey or RGB(A) image of any data type (alpha dropped).

    uint8 stays as it is (grey is copied into the three channels; RGB is returned itself). Bool
    becomes 0/255. Deeper or floating-point images (16-bit microscope TIFFs, float stacks) are
    stretched so that their :data:`DEEP_PERCENTILES` become 0 and 255, one map for all channels:
    a 16-bit image whose nuclei use grey levels 100-900 of 65535 would otherwise be black.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 2):   # grey, grey + alpha
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 4:      # RGBA
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"expected a grey [H, W] or RGB(A) [H, W, 3|4] image, got shape "
                         f"{image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        step = deep_sample_step(image.shape[0], image.shape[1])
        span = deep_range(image[::step, ::step])
        image = np.zeros(image.shape, np.uint8) if span is None else scale_to_uint8(image, *span)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


def deep_sample_step(height: int, width: int) -> int:
    """Stride of the subsample (every step-th row and column) :func:`deep_range` is given."""
    return max(1, int(np.sqrt(height * width / DEEP_SAMPLE_PIXELS)))


def deep_range(sample: np.ndarray) -> tuple[float, float] | None:
    """The grey levels (lo, hi) of a deep image that :func:`to_rgb_uint8` maps to 0 and 255,
    measured on ``sample`` (its pixels, or a subsample); None when no pixel is finite.

    Separate from the mapping so that an image read window by window is measured once.
    """
    sample = np.asarray(sample).astype(np.float64)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return None
    lo, hi = np.percentile(finite, DEEP_PERCENTILES)
    if hi - lo <= 0:
        hi = lo + 1.0                             # a flat image stays flat (and dark)
    return float(lo), float(hi)


def scale_to_uint8(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``image`` with grey level ``lo`` at 0 and ``hi`` at 255, rounded and clipped (NaN: 0)."""
    lo, hi = np.float64(lo), np.float64(hi)
    out = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- resizing
def resize(image: np.ndarray, output_shape: tuple[int, int], order: int = 1,
           mode: str = "constant", cval: float = 0, clip: bool = True,
           preserve_range: bool = False, anti_aliasing: bool = False) -> np.ndarray:
    """``skimage.transform.resize`` with the defaults this code base wants."""
    return skimage.transform.resize(image, output_shape, order=order, mode=mode, cval=cval,
                                    clip=clip, preserve_range=preserve_range,
                                    anti_aliasing=anti_aliasing)


def median_diameter(mask: np.ndarray) -> float | None:
    """Median equivalent diameter (pixels, ``sqrt(4 area / pi)``) of the non-empty masks of a
    [H, W, N] stack; None when there are none."""
    areas = np.asarray(mask).reshape(-1, mask.shape[-1]).sum(axis=0) if mask.shape[-1] else []
    areas = np.asarray(areas, np.float64)
    areas = areas[areas > 0]
    if not areas.size:
        return None
    return float(np.median(np.sqrt(4 * areas / np.pi)))


def random_below(rng, high: int) -> int:
    """A random integer in [0, high) from ``rng``: a NumPy ``Generator``, or None / the
    ``numpy.random`` module for NumPy's global generator (matterport's behaviour)."""
    if rng is None:
        rng = np.random
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(high))
    return int(rng.randint(0, high))


def resize_image(image: np.ndarray, min_dim: int | None = None, max_dim: int | None = None,
                 min_scale: float | None = None, mode: str = "square", rng=None):
    """Resize and pad an image, keeping its aspect ratio.

    Modes: ``none`` (unchanged), ``square`` (long side to ``max_dim``, pad to a square),
    ``pad64`` (pad each side to a multiple of 64, no scaling unless ``min_dim``/``min_scale``
    ask for it), ``crop`` (random ``min_dim`` x ``min_dim`` crop, for training).

    Returns ``image, window (y1, x1, y2, x2), scale, padding, crop`` where ``window`` is the
    part of the result that holds the image and ``crop`` is (y, x, h, w) or None.
    """
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1.0
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode == "none":
        return image, window, scale, padding, crop
    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max
    if scale != 1:
        image = resize(image, (round(h * scale), round(w * scale)), preserve_range=True)
    if mode == "square":
        h, w = image.shape[:2]
        top_pad = (max_dim - h) // 2
        bottom_pad = max_dim - h - top_pad
        left_pad = (max_dim - w) // 2
        right_pad = max_dim - w - left_pad
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding, mode="constant", constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "pad64":
        h, w = image.shape[:2]
        if min_dim:
            assert min_dim % 64 == 0, "Minimum dimension must be a multiple of 64"
        top_pad, bottom_pad = _pad_to_multiple(h, 64)
        left_pad, right_pad = _pad_to_multiple(w, 64)
        padding = [(top_pad, bottom_pad), (left_pad, right_pad), (0, 0)]
        image = np.pad(image, padding, mode="constant", constant_values=0)
        window = (top_pad, left_pad, h + top_pad, w + left_pad)
    elif mode == "crop":
        h, w = image.shape[:2]
        # Images smaller than the crop are padded first so that every crop is min_dim square.
        pad_h, pad_w = max(0, min_dim - h), max(0, min_dim - w)
        if pad_h or pad_w:
            padding = [(0, pad_h), (0, pad_w), (0, 0)]
            image = np.pad(image, padding, mode="constant", constant_values=0)
            h, w = image.shape[:2]
        y = random_below(rng, (h - min_dim) + 1)
        x = random_below(rng, (w - min_dim) + 1)
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    else:
        raise ValueError(f"Mode {mode} not supported")
    return image.astype(image_dtype), window, scale, padding, crop


def _pad_to_multiple(size: int, multiple: int) -> tuple[int, int]:
    if size % multiple == 0:
        return 0, 0
    total = multiple - size % multiple
    return total // 2, total - total // 2


def resize_mask(mask: np.ndarray, scale: float, padding, crop=None) -> np.ndarray:
    """Apply the scale, padding and crop that :func:`resize_image` chose to a [H, W, N] mask."""
    mask = np.asarray(mask)
    if scale != 1:
        h, w = mask.shape[:2]
        out = np.zeros((round(h * scale), round(w * scale), mask.shape[-1]), dtype=bool)
        for i in range(mask.shape[-1]):
            out[:, :, i] = resize(mask[:, :, i].astype(np.float32), out.shape[:2], order=0) > 0.5
        mask = out
    mask = np.pad(mask, padding[:2] + [(0, 0)], mode="constant", constant_values=0)
    if crop is not None:
        y, x, h, w = crop
        mask = mask[y:y + h, x:x + w]
    return mask.astype(bool)


def minimize_mask(bbox: np.ndarray, mask: np.ndarray, mini_shape: tuple[int, int]) -> np.ndarray:
    """Crop each mask to its box and shrink it to ``mini_shape`` to save memory."""
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = mask[y1:y2, x1:x2, i].astype(np.float32)
        if m.size == 0:
            raise Exception("Invalid bounding box with area of zero")
        mini_mask[:, :, i] = resize(m, mini_shape) >= 0.5
    return mini_mask


def expand_mask(bbox: np.ndarray, mini_mask: np.ndarray, image_shape) -> np.ndarray:
    """Inverse of :func:`minimize_mask` (lossy): paste each mini mask back into its box."""
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        h, w = y2 - y1, x2 - x1
        if h <= 0 or w <= 0:
            continue
        m = resize(mini_mask[:, :, i].astype(np.float32), (h, w))
        mask[y1:y2, x1:x2, i] = m >= 0.5
    return mask


def unmold_mask(mask: np.ndarray, bbox: np.ndarray, image_shape) -> np.ndarray:
    """Paste a small float mask predicted for ``bbox`` into a full-size boolean mask."""
    return paste_mask(mask, bbox, image_shape)


def box_mask(mask: np.ndarray, box, image_shape) -> tuple[tuple[slice, slice], np.ndarray]:
    """A [h, w] soft mask (28x28) stretched over ``box`` on an ``image_shape`` canvas:
    ``(rows, columns)`` slices of the canvas and the mask's values there.

    ``box`` is (y1, x1, y2, x2) in pixels, ``y2``/``x2`` one past the last row/column, and may
    be fractional: the box head's boxes are, and rounding them first moves a 10-pixel nucleus's
    mask by up to half a pixel (val DSB mAP 0.539 -> 0.549 with fractional boxes, README).
    Pixel ``p`` (centre ``p + 0.5``) belongs to the box when ``y1 <= p + 0.5 < y2`` and reads
    the mask with the half-pixel convention of the training targets
    (:func:`minimize_mask`, linear resizing); on integer boxes this is ``cv2.resize``'s linear
    interpolation. Parts of the box outside the canvas are dropped (empty slices when nothing
    is left).
    """
    return box_masks(np.asarray(mask)[None], np.asarray(box, np.float64)[None, :4],
                     image_shape)[0]


def box_masks(masks: np.ndarray, boxes: np.ndarray,
              image_shape) -> list[tuple[tuple[slice, slice], np.ndarray]]:
    """:func:`box_mask` of each ``masks[i]`` [N, h, w] over ``boxes[i]`` [N, 4], with the
    interpolation weights of all boxes computed in one pass of array operations instead of
    about ten small ones per box and axis (a tile of the 8,192 mosaic with 332 masks: 20 ->
    6 ms)."""
    masks = np.asarray(masks, np.float64)
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    height, width = int(image_shape[0]), int(image_shape[1])
    y1, x1, y2, x2 = boxes.T
    top = np.maximum(np.ceil(y1 - 0.5), 0).astype(np.int64)
    left = np.maximum(np.ceil(x1 - 0.5), 0).astype(np.int64)
    bottom = np.minimum(np.ceil(y2 - 0.5), height).astype(np.int64)
    right = np.minimum(np.ceil(x2 - 0.5), width).astype(np.int64)
    valid = (y2 > y1) & (x2 > x1) & (bottom > top) & (right > left)
    rows = _spans_samples(top, bottom, y1, y2, masks.shape[1], valid)
    cols = _spans_samples(left, right, x1, x2, masks.shape[2], valid)
    out = []
    for i in range(len(boxes)):
        if not valid[i]:
            out.append(((slice(0, 0), slice(0, 0)), np.zeros((0, 0))))
            continue
        out.append(((slice(int(top[i]), int(bottom[i])), slice(int(left[i]), int(right[i]))),
                    rows[i] @ masks[i] @ cols[i].T))
    return out


def _spans_samples(start: np.ndarray, stop: np.ndarray, low: np.ndarray, high: np.ndarray,
                   size: int, valid: np.ndarray) -> list[np.ndarray | None]:
    """Linear-interpolation weights [stop - start, size] of each valid span (None for the
    others): pixel ``p`` of ``start..stop-1`` reads the mask at ``(p + 0.5 - low) * size /
    (high - low) - 0.5`` (clamped to the mask). The pixels of all spans are concatenated, so
    that each step is one array operation."""
    lengths = np.where(valid, stop - start, 0)
    ends = np.cumsum(lengths)
    firsts = ends - lengths
    total = int(ends[-1]) if len(ends) else 0
    pixel = np.arange(total) - np.repeat(firsts - start, lengths)
    scale = np.repeat(size / np.where(valid, high - low, 1.0), lengths)
    where = (pixel + 0.5 - np.repeat(low, lengths)) * scale - 0.5
    where = np.clip(where, 0, size - 1)
    below = np.floor(where).astype(np.int64)
    above = np.minimum(below + 1, size - 1)
    frac = where - below
    weights = np.zeros((total, size), np.float64)
    index = np.arange(total)
    weights[index, below] = 1.0 - frac
    weights[index, above] += frac      # once per row: the same sums as np.add.at
    return [weights[a:b] if ok else None for a, b, ok in zip(firsts, ends, valid)]


def paste_mask(mask: np.ndarray, box, image_shape, threshold: float = 0.5) -> np.ndarray:
    """:func:`box_mask` on a full-size boolean canvas, thresholded."""
    full = np.zeros(tuple(image_shape[:2]), dtype=bool)
    where, values = box_mask(mask, box, image_shape)
    full[where] = values >= threshold
    return full


# ----------------------------------------------------------------------------- anchors
def generate_anchors(scales: float, ratios, shape, feature_stride: int,
                     anchor_stride: int) -> np.ndarray:
    """Anchors [N, (y1, x1, y2, x2)] in pixels for one feature map of ``shape``."""
    scales, ratios = np.meshgrid(np.array(scales), np.array(ratios))
    scales = scales.flatten()
    ratios = ratios.flatten()
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)
    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)
    box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
    box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
    box_centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
    box_sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
    return np.concatenate([box_centers - 0.5 * box_sizes, box_centers + 0.5 * box_sizes], axis=1)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides,
                             anchor_stride: int) -> np.ndarray:
    """Anchors of every pyramid level, level by level (scale i goes with level i)."""
    anchors = [generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i],
                                anchor_stride) for i in range(len(scales))]
    return np.concatenate(anchors, axis=0)


# ----------------------------------------------------------------------------- metrics
def trim_zeros(x: np.ndarray) -> np.ndarray:
    """Drop the all-zero rows that pad fixed-size tensors."""
    assert len(x.shape) == 2
    return x[~np.all(x == 0, axis=1)]


def compute_matches(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores,
                    pred_masks, iou_threshold: float = 0.5, score_threshold: float = 0.0):
    """Greedy matching of predictions (by score) to ground truth of the same class.

    Returns ``gt_match`` (index of the matched prediction or -1 per gt), ``pred_match`` (index of
    the matched gt or -1 per prediction) and the [pred, gt] IoU matrix.
    """
    gt_boxes = trim_zeros(np.asarray(gt_boxes).reshape(-1, 4))
    gt_masks = gt_masks[..., :gt_boxes.shape[0]]
    pred_boxes = trim_zeros(np.asarray(pred_boxes).reshape(-1, 4))
    pred_scores = np.asarray(pred_scores)[:pred_boxes.shape[0]]
    indices = np.argsort(pred_scores)[::-1]
    pred_boxes = pred_boxes[indices]
    pred_class_ids = np.asarray(pred_class_ids)[indices]
    pred_scores = pred_scores[indices]
    pred_masks = pred_masks[..., indices]
    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    match_count = 0
    pred_match = -1 * np.ones([pred_boxes.shape[0]])
    gt_match = -1 * np.ones([gt_boxes.shape[0]])
    for i in range(len(pred_boxes)):
        sorted_ixs = np.argsort(overlaps[i])[::-1]
        low_score_idx = np.where(overlaps[i, sorted_ixs] < score_threshold)[0]
        if low_score_idx.size > 0:
            sorted_ixs = sorted_ixs[:low_score_idx[0]]
        for j in sorted_ixs:
            if gt_match[j] > -1:
                continue
            iou = overlaps[i, j]
            if iou < iou_threshold:
                break
            if pred_class_ids[i] == gt_class_ids[j]:
                match_count += 1
                gt_match[j] = i
                pred_match[i] = j
                break
    return gt_match, pred_match, overlaps


def compute_ap(gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores,
               pred_masks, iou_threshold: float = 0.5):
    """Mask average precision at one IoU threshold (VOC-style, all-point interpolation).

    Returns ``mAP, precisions, recalls, overlaps``.
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)
    if len(gt_match) == 0:
        # No ground truth: perfect when nothing is predicted, else zero.
        ap = 1.0 if len(pred_match) == 0 else 0.0
        return ap, np.array([0, 1.0, 0]), np.array([0, 1.0, 1]), overlaps
    precisions = np.cumsum(pred_match > -1) / (np.arange(len(pred_match)) + 1)
    recalls = np.cumsum(pred_match > -1).astype(np.float32) / len(gt_match)
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    for i in range(len(precisions) - 2, -1, -1):
        precisions[i] = np.maximum(precisions[i], precisions[i + 1])
    indices = np.where(recalls[:-1] != recalls[1:])[0] + 1
    mAP = float(np.sum((recalls[indices] - recalls[indices - 1]) * precisions[indices]))
    return mAP, precisions, recalls, overlaps


def compute_recall(pred_boxes: np.ndarray, gt_boxes: np.ndarray, iou: float):
    """Share of ground-truth boxes that some predicted box covers with IoU >= ``iou``."""
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    iou_max = np.max(overlaps, axis=1)
    iou_argmax = np.argmax(overlaps, axis=1)
    positive_ids = np.where(iou_max >= iou)[0]
    matched_gt_boxes = iou_argmax[positive_ids]
    recall = len(set(matched_gt_boxes)) / gt_boxes.shape[0]
    return recall, positive_ids


def mold_image_meta(image_id: int, original_image_shape, image_shape, window, scale: float,
                    active_class_ids) -> np.ndarray:
    """Pack per-image facts into one float vector (matterport's ``compose_image_meta``)."""
    return np.array([image_id] + list(original_image_shape) + list(image_shape)
                    + list(window) + [scale] + list(active_class_ids), dtype=np.float32)


compose_image_meta = mold_image_meta


def parse_image_meta(meta: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of :func:`compose_image_meta` for a [batch, meta] array."""
    return {
        "image_id": meta[:, 0].astype(np.int32),
        "original_image_shape": meta[:, 1:4].astype(np.int32),
        "image_shape": meta[:, 4:7].astype(np.int32),
        "window": meta[:, 7:11].astype(np.int32),
        "scale": meta[:, 11].astype(np.float32),
        "active_class_ids": meta[:, 12:].astype(np.int32),
    }


# ----------------------------------------------------------------------------- downloads
def _download_error(url: str, path: str, error: BaseException) -> ConnectionError:
    reason = error.reason if type(error) is urllib.error.URLError else error
    return ConnectionError(
        f"could not download {url} to {path}: {reason}. Where this machine has no network, "
        f"download the file elsewhere and copy it to {path}.")


def download_trained_weights(coco_model_path: str | os.PathLike, verbose: int = 1,
                             url: str | None = None, timeout: float = 60.0) -> str:
    """Download matterport's COCO-trained weights (``mask_rcnn_coco.h5``) to ``coco_model_path``.

    Matterport's notebooks and samples call this when the file is missing. The download shows a
    progress bar and is written atomically, so an interrupted one leaves nothing behind; a
    network that cannot be reached, or a download cut short, raises ``ConnectionError`` naming
    the address and the destination. ``url`` defaults to the release address of the file.
    """
    if url is None:
        from mrcnn.weights_file import COCO_WEIGHTS_URL   # here: else each import pays h5py (0.1 s)
        url = COCO_WEIGHTS_URL
    path = os.fspath(coco_model_path)
    network_errors = (OSError, http.client.HTTPException)  # URLError and timeouts are OSErrors
    if verbose:
        print(f"Downloading pretrained model to {path} ...")
    try:
        response = urllib.request.urlopen(url, timeout=timeout)
    except network_errors as e:
        raise _download_error(url, path, e) from None
    with response, atomic_path(path) as tmp:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        received = 0
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True,
                                          unit_divisor=1024, disable=not verbose,
                                          desc=os.path.basename(path)) as bar:
            while True:
                try:
                    chunk = response.read(1 << 20)
                except network_errors as e:
                    raise _download_error(url, path, e) from None
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if total is not None and received != total:
            raise _download_error(url, path, ConnectionError(
                f"the connection ended after {received} of {total} bytes"))
    if verbose:
        print("... done downloading pretrained model!")
    return path
