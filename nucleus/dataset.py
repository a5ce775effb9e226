"""The DSB 2018 nucleus data in Kaggle's folder layout, as a ``mrcnn.utils.Dataset``.

Layout (matterport's convention: ``dataset_dir`` holds the stage folders)::

    <dataset_dir>/stage1_train/<id>/images/<id>.png
    <dataset_dir>/stage1_train/<id>/masks/*.png        one PNG per nucleus, 0 / 255
    <dataset_dir>/stage1_test/<id>/images/<id>.png     (no masks)
    <dataset_dir>/stage2_test_final/<id>/images/<id>.png

Subsets ``train`` and ``val`` are the fixed 603 / 67 split of stage1_train (:mod:`nucleus.split`).

The layout StarDist and Cellpose users keep their annotations in is recognised too: a folder
with ``images/`` beside ``masks/`` (or ``labels/``), one label image per image under the same
file name (0 background, one value per nucleus; PNG or TIFF, any bit depth)::

    <dataset_dir>/images/a.tif   <dataset_dir>/masks/a.tif      subsets all, train, val
    <dataset_dir>/<subset>/images/a.png  <dataset_dir>/<subset>/masks/a.png   (e.g. train, test)

In the first form ``train`` and ``val`` are a fixed seeded split (a tenth for validation).
Masks are read once per image into a label image kept in a bounded cache, because an image has
up to 375 mask files and training reads every image many times.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image
from skimage.measure import label as connected
from skimage.segmentation import relabel_sequential
from tqdm import tqdm

from mrcnn.utils import Dataset, to_rgb_uint8
from nucleus.errors import InputError
from nucleus.formats.image_io import IMAGE_SUFFIXES, read_image, read_png
from nucleus.formats.submission import read_solution
from nucleus.split import SPLIT_SEED, kfold_split, load_split, make_split

log = logging.getLogger(__name__)

SAMPLE_DIR = str(Path(__file__).resolve().parent / "sample")
"""The bundled sample (25 real images in the Kaggle layout); ``dataset_dir=None`` means this."""

SOURCE = "nucleus"
SUBSETS = ("train", "val", "stage1_train", "stage1_test", "stage2_test_final")
_FOLDER = {"train": "stage1_train", "val": "stage1_train"}
_LABELLED = {"train", "val", "stage1_train"}
LABEL_FOLDERS = ("masks", "labels")
FOLDER_SUBSETS = ("all", "train", "val")
"""Subsets of a folder that holds images/ and masks/ itself."""
VAL_FRACTION = 0.1
DEFAULT_LABEL_CACHE = 1024
"""Label images kept in memory: all 670 of stage1_train fit (about 200 MB as uint16)."""


def _image_size(path: str) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as e:
        raise InputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    return height, width


def _read_mask(path: str, shape: tuple[int, int]) -> np.ndarray:
    """One mask file as bool [H, W]: any non-zero colour value is foreground."""
    array = read_png(path)
    if array.ndim == 3:
        colour = array[..., :1] if array.shape[-1] == 2 else array[..., :3]
        array = colour.max(axis=-1)
    if array.shape != shape:
        raise InputError(f"{path}: mask is {array.shape[0]}x{array.shape[1]} (HxW) but its "
                         f"image is {shape[0]}x{shape[1]}")
    mask = array > 0
    if not mask.any():
        raise InputError(f"{path}: mask is empty (no foreground pixel)")
    return mask


def _fold(ids: list[str], folder: Path, subset: str, fold: int | None, n_folds: int,
          fold_part: str) -> list[str]:
    """The ``fold_part`` of k-fold part ``fold`` of ``ids`` (all of them without a fold)."""
    if fold is None:
        return ids
    if not 0 <= fold < n_folds:
        raise InputError(f"fold must be in 0..{n_folds - 1}, got {fold}")
    try:
        train_ids, val_ids = kfold_split(ids, n_folds)[fold]
    except ValueError as e:
        raise InputError(f"{folder}: cannot make {n_folds} folds of {len(ids)} "
                         f"{subset} images ({e})") from e
    return train_ids if fold_part == "train" else val_ids


def _files_by_stem(folder: Path) -> dict[str, Path]:
    """Image files of a folder by name without suffix; two files of one name are an error."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES \
                and not path.name.startswith("."):
            if path.stem in found:
                raise InputError(f"{path}: {found[path.stem].name} has the same name; which "
                                 "one is meant?")
            found[path.stem] = path
    return found


def _read_label_image(image_path: str, label_path: str | None) -> np.ndarray:
    """A label image file as uint16 labels 1..N (int32 past 65535), checked against its image."""
    shape = read_image(image_path).shape[:2]
    if label_path is None:
        return np.zeros(shape, np.uint16)
    raw = read_image(label_path)
    if raw.ndim == 3:
        if not (raw == raw[..., :1]).all():
            raise InputError(f"{label_path}: a label image has one channel (a value per "
                             "nucleus); this one has colours")
        raw = raw[..., 0]
    if raw.shape != shape:
        raise InputError(f"{label_path}: label image is {raw.shape[0]}x{raw.shape[1]} (HxW) but "
                         f"its image is {shape[0]}x{shape[1]}")
    if raw.dtype.kind == "f" and not np.array_equal(raw, np.round(raw)):
        raise InputError(f"{label_path}: label values must be whole numbers")
    if raw.dtype.kind in "if" and raw.min() < 0:
        raise InputError(f"{label_path}: negative label values")
    values = raw.astype(np.int64)
    labels, _, _ = relabel_sequential(values)
    n = int(labels.max())
    if n == 1 and int(connected(labels > 0).max()) > 1:
        raise InputError(f"{label_path}: a binary mask (one value, "
                         f"{int(connected(labels > 0).max())} separate regions), not a label "
                         "image; save one value per nucleus")
    return labels.astype(np.uint16 if n < 2**16 else np.int32)


class NucleusDataset(Dataset):
    """Nucleus images and their instance masks; one class, "nucleus" (id 1)."""

    def __init__(self, class_map: dict | None = None,
                 label_cache_size: int = DEFAULT_LABEL_CACHE):
        super().__init__(class_map)
        if label_cache_size < 0:
            raise ValueError(f"label_cache_size must be >= 0, got {label_cache_size}")
        self.label_cache_size = label_cache_size
        self._labels: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        # Worker processes and copies (copy.copy: nucleus.training.sampling) get an empty cache
        # (and a fresh lock) rather than a copy of it.
        state = self.__dict__.copy()
        state["_labels"] = OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------- loading
    def load_nucleus(self, dataset_dir: str | os.PathLike | None, subset: str,
                     fold: int | None = None, n_folds: int = 10,
                     fold_part: str = "train") -> None:
        """Register the images of ``subset`` found under ``dataset_dir`` (None: the sample).

        ``train`` / ``val`` take the ids of stage1_train that are in the fixed split's train /
        val list; ids in neither list count as train. With ``fold`` set, only the ``fold_part``
        ("train" or "val") of that k-fold part of the subset is kept (:func:`kfold_split`).
        """
        if fold_part not in ("train", "val"):
            raise InputError(f"fold_part must be 'train' or 'val', got {fold_part!r}")
        root = Path(SAMPLE_DIR if dataset_dir is None else dataset_dir)
        if not root.is_dir():
            raise InputError(f"{root}: dataset folder does not exist or is not a folder")
        if not any(root.iterdir()):
            raise InputError(f"{root}: dataset folder is empty")
        if (root / "images").is_dir():
            return self._load_image_folder(root, subset, True, fold, n_folds, fold_part)
        if (root / subset / "images").is_dir():
            return self._load_image_folder(root / subset, subset, False, fold, n_folds,
                                           fold_part)
        if subset not in SUBSETS:
            raise InputError(f"unknown subset {subset!r}; expected one of {', '.join(SUBSETS)}"
                             f" (or a folder {root / subset}/images)")
        folder = root / _FOLDER.get(subset, subset)
        subsets_here = sorted(p.name for p in root.iterdir() if (p / "images").is_dir())
        if not folder.is_dir() and subsets_here:
            raise InputError(f"{root / subset}/images: no such folder, so no subset {subset!r} "
                             f"(this dataset's subsets: {', '.join(subsets_here)})")
        if not folder.is_dir():
            raise InputError(f"{folder}: subset folder missing (subset {subset!r} expects "
                             f"{folder.name}/<id>/images/<id>.png under {root})")
        ids = sorted(p.name for p in folder.iterdir()
                     if p.is_dir() and not p.name.startswith("."))
        if not ids:
            raise InputError(f"{folder}: no image folders in it")

        if subset in ("train", "val"):
            _, val_ids = load_split()
            val_set = set(val_ids)
            ids = [i for i in ids if (i in val_set) == (subset == "val")]
            if not ids:
                raise InputError(f"{folder}: none of its image folders belongs to the "
                                 f"{subset!r} part of the fixed split")
        ids = _fold(ids, folder, subset, fold, n_folds, fold_part)

        self.add_class(SOURCE, 1, "nucleus")
        for image_id in tqdm(ids, desc=f"scan {subset}", unit="image", disable=None, leave=False):
            image_path = folder / image_id / "images" / f"{image_id}.png"
            if not image_path.is_file():
                raise InputError(f"{image_path}: image file missing")
            mask_dir = folder / image_id / "masks"
            mask_paths = (sorted((p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"),
                                 key=lambda p: p.name)
                          if mask_dir.is_dir() else [])
            if subset in _LABELLED and not mask_paths:
                raise InputError(f"{mask_dir}: no mask PNG for labelled image {image_id}")
            self.add_image(SOURCE, image_id=image_id, path=str(image_path), subset=subset,
                           mask_paths=tuple(str(p) for p in mask_paths))

    def _load_image_folder(self, folder: Path, subset: str, split: bool, fold: int | None,
                           n_folds: int, fold_part: str) -> None:
        """Register ``folder/images/*`` with their label images in ``folder/masks`` (or
        ``labels``); ``split``: ``subset`` is all, train or val of the folder."""
        images_dir = folder / "images"
        label_dirs = [folder / name for name in LABEL_FOLDERS if (folder / name).is_dir()]
        if len(label_dirs) > 1:
            raise InputError(f"{folder}: holds both masks/ and labels/; keep the label images "
                             "in one of them")
        images = _files_by_stem(images_dir)
        if not images:
            raise InputError(f"{images_dir}: no image files in it ({', '.join(IMAGE_SUFFIXES)})")
        labels = _files_by_stem(label_dirs[0]) if label_dirs else {}
        ids = sorted(images)
        if split:
            if subset not in FOLDER_SUBSETS:
                raise InputError(f"unknown subset {subset!r} for {folder} (images/ and masks/ "
                                 f"in one folder): expected one of {', '.join(FOLDER_SUBSETS)}")
            if subset != "all":
                if len(ids) < 2:
                    raise InputError(f"{images_dir}: one image cannot be split into train and "
                                     "val; use --subset all")
                n_val = min(max(1, round(VAL_FRACTION * len(ids))), len(ids) - 1)
                train_ids, val_ids = make_split(ids, n_val, SPLIT_SEED)
                ids = train_ids if subset == "train" else val_ids
        ids = _fold(ids, images_dir, subset, fold, n_folds, fold_part)
        if label_dirs:
            missing = [i for i in ids if i not in labels]
            if missing:
                raise InputError(f"{images[missing[0]]}: no label image for it in "
                                 f"{label_dirs[0]} (expected the same file name; "
                                 f"{len(missing)} images lack one)")
        self.add_class(SOURCE, 1, "nucleus")
        for image_id in ids:
            self.add_image(SOURCE, image_id=image_id, path=str(images[image_id]), subset=subset,
                           mask_paths=(), layout="folder",
                           label_path=str(labels[image_id]) if image_id in labels else None)

    def load_image(self, image_id: int) -> np.ndarray:
        """uint8 RGB [H, W, 3] (:func:`mrcnn.utils.to_rgb_uint8`): alpha dropped, grey
        stacked, deep images stretched by their percentiles, as ``nucleus segment`` reads them,
        so that a model is trained and evaluated on what it later segments."""
        return to_rgb_uint8(read_image(self.image_info[image_id]["path"]))

    # ------------------------------------------------------------------------- masks
    def load_labels(self, image_id: int) -> np.ndarray:
        """Label image [H, W] (uint16; int32 past 65535 masks): 0 background, k the k-th mask.

        Masks are numbered in file-name order; a pixel claimed by several masks goes to the
        first, and the overlap is reported with ``logging.warning``. The result is cached
        (read-only) for ``label_cache_size`` images, least recently used dropped first.
        """
        with self._lock:
            labels = self._labels.get(image_id)
            if labels is not None:
                self._labels.move_to_end(image_id)
                return labels
        labels = self._read_labels(image_id)
        labels.setflags(write=False)
        if self.label_cache_size:
            with self._lock:
                self._labels[image_id] = labels
                while len(self._labels) > self.label_cache_size:
                    self._labels.popitem(last=False)
        return labels

    def label_with_solution(self, labels: Mapping[str, np.ndarray], source: str) -> None:
        """Keep only the images ``labels`` (image id -> label image [H, W], e.g.
        :func:`nucleus.formats.submission.read_solution`) holds, and take their masks from there.

        This is how a test set whose answer key is a Kaggle solution file (the labelled half of
        stage1_test) is scored like a labelled subset. Call before :meth:`prepare`. An image the
        solution names but the dataset lacks, or whose size differs, is an error naming
        ``source``.
        """
        known = {info["id"]: info for info in self.image_info}
        missing = sorted(set(labels) - set(known))
        if missing:
            raise InputError(f"{source}: {len(missing)} of its images are not in this subset "
                             f"(first: {missing[0]}); pick the subset the solution labels")
        kept = []
        for info in self.image_info:
            if info["id"] not in labels:
                continue
            label_image = np.asarray(labels[info["id"]])
            shape = _image_size(info["path"])
            if label_image.shape != tuple(shape):
                raise InputError(f"{source}: image {info['id']}: solution size "
                                 f"{label_image.shape} differs from the image's {tuple(shape)}")
            info["solution_labels"] = label_image
            kept.append(info)
        self.image_info = kept
        with self._lock:
            self._labels.clear()

    def _read_labels(self, image_id: int) -> np.ndarray:
        info = self.image_info[image_id]
        if "solution_labels" in info:
            labels, _, _ = relabel_sequential(info["solution_labels"])
            return labels.astype(np.uint16 if labels.max() < 2**16 else np.int32)
        if info.get("layout") == "folder":
            return _read_label_image(info["path"], info.get("label_path"))
        shape = _image_size(info["path"])
        paths = info.get("mask_paths", ())
        labels = np.zeros(shape, np.uint16 if len(paths) < 2**16 else np.int32)
        overlap = np.zeros(shape, bool)
        for k, path in enumerate(paths, start=1):
            mask = _read_mask(path, shape)
            taken = mask & (labels != 0)
            overlap |= taken
            labels[mask & ~taken] = k
        n_overlap = int(overlap.sum())
        if n_overlap:
            lost = len(paths) - (len(np.unique(labels)) - 1)
            log.warning("image %s: %d pixels belong to more than one mask; each goes to the "
                        "first mask in file-name order%s", info["id"], n_overlap,
                        f" ({lost} masks entirely covered and dropped)" if lost else "")
        return labels

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks bool [H, W, N] (file-name order, no overlaps) and class ids int32 [N].

        Images without mask files (test sets) give an empty [H, W, 0] stack.
        """
        labels = self.load_labels(image_id)
        counts = np.bincount(labels.ravel())
        present = np.flatnonzero(counts[1:]) + 1
        channel = np.zeros(len(counts), np.int64)
        channel[present] = np.arange(len(present))
        ys, xs = np.nonzero(labels)
        masks = np.zeros(labels.shape + (len(present),), dtype=bool)
        masks[ys, xs, channel[labels[ys, xs]]] = True
        return masks, np.ones(len(present), np.int32)


def load_subset(dataset_dir: str | os.PathLike | None, subset: str,
                limit: int | None = None,
                label_cache_size: int = DEFAULT_LABEL_CACHE,
                solution: str | os.PathLike | None = None) -> NucleusDataset:
    """A prepared dataset of ``subset`` (its first ``limit`` images); an empty one is an error.
    ``label_cache_size`` 0 reads each label image afresh (a single pass over the images).
    ``solution``: a Kaggle solution CSV; only the images it labels are kept, with its masks
    (:meth:`NucleusDataset.label_with_solution`)."""
    dataset = NucleusDataset(label_cache_size=label_cache_size)
    dataset.load_nucleus(dataset_dir, subset)
    if solution is not None:
        dataset.label_with_solution(read_solution(solution), str(solution))
    if limit is not None:
        dataset.image_info = dataset.image_info[:limit]
    dataset.prepare()
    if not dataset.image_ids.size:
        raise InputError(f"{dataset_dir or 'bundled sample'}: subset '{subset}' has no images")
    return dataset


def load_labelled_folder(folder: str | os.PathLike) -> NucleusDataset:
    """Every labelled image of ``folder``, whichever layout it has: ``images/`` beside
    ``masks/`` or ``labels/`` (subset all), or Kaggle's ``stage1_train/<id>/`` (all of it).

    For training on more than one set (``train --extra-train``); a folder of neither layout,
    or one whose images lack labels, is an error naming it.
    """
    root = Path(folder)
    if (root / "images").is_dir():
        if not any((root / name).is_dir() for name in LABEL_FOLDERS):
            raise InputError(f"{root}: has images/ but no masks/ or labels/ folder; training "
                             "images need their label images")
        return load_subset(root, "all")
    if (root / "stage1_train").is_dir():
        return load_subset(root, "stage1_train")
    raise InputError(f"{root}: expected labelled images in images/ beside masks/ (or labels/), "
                     "or Kaggle's stage1_train/<id>/images + masks")
