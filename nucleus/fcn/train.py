"""Training and evaluation of the FCN-8s baseline (detection: :mod:`nucleus.fcn.detector`).

The FCN learns the merged foreground of each image (any nucleus pixel) with a softmax
cross-entropy over background / foreground; instances come afterwards from
:func:`nucleus.fcn.opening.label_by_opening`. Batches are random crops (so images of any size
stack), fed by a thread-based ``keras.utils.PyDataset``: multiprocessing is what makes
matterport's training hang at "Epoch 1".

Each run writes into ``logs_dir/fcn<timestamp>/`` (:data:`nucleus.fcn.detector.FCN_RUNS`), as a
Mask R-CNN run does: ``fcn_<epoch:04d>.weights.h5`` checkpoints, ``history.csv`` (the losses,
epochs counted from 0 as Keras's ``CSVLogger`` counts them) and ``val_map.csv`` (epoch, pixel_iou,
map), all written atomically; ``nucleus curves`` draws them.
"""
from __future__ import annotations

import csv
import itertools
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import keras
import numpy as np
from tqdm import tqdm

from mrcnn.augmentation import apply_augmentation
from mrcnn.runs import RunFolder
from nucleus.errors import InputError
from nucleus.fcn.detector import DEFAULT_RADIUS, FCN_RUNS
from nucleus.fcn.model import (build_fcn8s, load_fcn, load_fcn_weights, predict_foreground,
                               preprocess_image, save_fcn_weights)
from nucleus.fcn.opening import DEFAULT_MIN_SIZE, label_by_opening, pick_radius
from nucleus.formats.io_utils import atomic_write
from nucleus.inference.nucleus_model import NucleusModel
from nucleus.scoring.metric import image_score
from nucleus.training.augment import build_augmentation

DEFAULT_BATCH_SIZE = 4
VAL_FIELDS = ("epoch", "pixel_iou", "map")


# ----------------------------------------------------------------------------- data
def merged_foreground(dataset, image_id: int) -> np.ndarray:
    """Bool [H, W]: pixels of any instance mask of the image (the FCN's target)."""
    if hasattr(dataset, "load_labels"):  # NucleusDataset: a label image, no [H, W, N] stack
        return np.asarray(dataset.load_labels(image_id)) > 0
    masks = np.asarray(dataset.load_mask(image_id)[0], dtype=bool)
    if masks.ndim != 3 or masks.shape[0] == 0:  # no instance and no shape: take the image's
        return np.zeros(dataset.load_image(image_id).shape[:2], dtype=bool)
    return masks.any(axis=-1)


def random_crop(image: np.ndarray, foreground: np.ndarray, size: int,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop at a random place; smaller sides are zero-padded first."""
    h, w = image.shape[:2]
    pad_h, pad_w = max(size - h, 0), max(size - w, 0)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
        foreground = np.pad(foreground, ((0, pad_h), (0, pad_w)))
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return image[y:y + size, x:x + size], foreground[y:y + size, x:x + size]


def _resolve_augmenter(augment: Any):
    """``True`` -> the study's flips + brightness; ``False``/``None`` -> none; else an imgaug augmenter."""
    if augment is True:
        return build_augmentation(flip=True, brightness=(0.8, 1.5))
    if augment is False or augment is None:
        return None
    return augment


def make_crop_dataset(dataset, batch_size: int, crop_size: int, steps: int, augmenter=None,
                      seed: int | None = None, workers: int = 2, cache: bool = True):
    """A ``keras.utils.PyDataset`` of (preprocessed crops [B, S, S, 3], labels [B, S, S]).

    Threads only (``use_multiprocessing=False``). Every batch draws new crops; images and
    foregrounds are cached in memory after the first load when ``cache`` is true (loading the
    many per-nucleus mask files is the slow part).
    """
    class _Crops(keras.utils.PyDataset):
        def __init__(self):
            super().__init__(workers=workers, use_multiprocessing=False,
                             max_queue_size=max(2 * workers, 2))
            self.ids = np.asarray(dataset.image_ids)
            if len(self.ids) == 0:
                raise InputError("the training dataset has no images")
            self.seed = int(np.random.SeedSequence(seed).entropy % (2 ** 63))
            # Every batch draws from its own stream, numbered in request order: worker threads
            # prefetch across epoch ends, so (epoch, index) would repeat crops.
            self._draws = itertools.count()
            self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            self._cache_lock = threading.Lock()
            self._augment_lock = threading.Lock()

        def __len__(self) -> int:
            return steps

        def _load(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
            with self._cache_lock:
                if image_id in self._cache:
                    return self._cache[image_id]
            image = dataset.load_image(image_id)
            foreground = merged_foreground(dataset, image_id)
            if foreground.shape != image.shape[:2]:
                raise InputError(f"{dataset.image_reference(image_id)}: mask shape "
                                 f"{foreground.shape} != image shape {image.shape[:2]}")
            if cache:
                with self._cache_lock:
                    self._cache[image_id] = (image, foreground)
            return image, foreground

        def __getitem__(self, index: int):
            with self._cache_lock:
                draw = next(self._draws)
            rng = np.random.default_rng([self.seed, draw])
            images, labels = [], []
            for image_id in rng.choice(self.ids, size=batch_size):
                image, foreground = self._load(int(image_id))
                image, foreground = random_crop(image, foreground, crop_size, rng)
                if augmenter is not None:
                    with self._augment_lock:  # imgaug's random state is not thread-safe
                        image, mask = apply_augmentation(augmenter, image, foreground[..., None])
                    foreground = np.asarray(mask)[..., 0]
                images.append(preprocess_image(image))
                labels.append(foreground.astype(np.int32))
            return np.stack(images), np.stack(labels)

    return _Crops()


# ----------------------------------------------------------------------------- run files
def _read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV this module wrote, epoch as int and the other columns as float."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        try:
            return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items() if v != ""}
                    for row in csv.DictReader(f)]
        except (TypeError, ValueError) as error:
            raise InputError(f"{path}: not a CSV written by FCN training ({error})") from error


def _write_csv(path: Path, rows: Sequence[dict[str, Any]], fields: Sequence[str]) -> None:
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _callbacks(run: RunFolder, initial_epoch: int, epochs: int, keep_checkpoints: int | None,
               val_dataset, radius: int, min_size: int, eval_every: int,
               val_rows: list[dict[str, Any]]):
    """Keras callbacks: validation metrics, loss CSV and atomic checkpoints (in that order)."""
    # history.csv counts epochs from 0, as Keras's CSVLogger does in a Mask R-CNN run
    loss_rows = [r for r in _read_csv(Path(run.history)) if int(r["epoch"]) < initial_epoch]

    class Epochly(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = dict(logs or {})
            number = epoch + 1  # checkpoints and val_map.csv count epochs from 1, like matterport
            if (val_dataset is not None and eval_every > 0
                    and (number % eval_every == 0 or number == epochs)):
                metrics = evaluate_fcn(self.model, val_dataset, radius, min_size=min_size)
                val_rows.append({"epoch": number, **metrics})
                _write_csv(Path(run.val_map), val_rows, VAL_FIELDS)
                print(f"\nepoch {number}: val pixel IoU {metrics['pixel_iou']:.4f}, "
                      f"mAP {metrics['map']:.4f}")
            loss_rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
            fields = ["epoch"] + sorted({k for r in loss_rows for k in r} - {"epoch"})
            _write_csv(Path(run.history), loss_rows, fields)
            self._save(number)

        def _save(self, number: int) -> None:
            save_fcn_weights(self.model, run.checkpoint(number))
            if keep_checkpoints:
                for _, path in run.checkpoints()[:-keep_checkpoints]:
                    os.remove(path)

    return [Epochly()]


# ----------------------------------------------------------------------------- training
def train_fcn(train_dataset, val_dataset, logs_dir: str | os.PathLike,
              weights: str | os.PathLike | None = "imagenet", epochs: int = 1,
              steps_per_epoch: int = 100, learning_rate: float = 1e-5, augment: Any = True,
              crop_size: int = 256, batch_size: int = DEFAULT_BATCH_SIZE,
              radius: int = DEFAULT_RADIUS, eval_every: int = 1,
              min_size: int = DEFAULT_MIN_SIZE, workers: int = 2, seed: int | None = None,
              fc_width: int = 4096, dropout: float = 0.5,
              keep_checkpoints: int | None = None, verbose: int = 1) -> dict[str, Any]:
    """Train the FCN-8s on the merged masks of ``train_dataset`` until epoch ``epochs``.

    ``weights``: ``"imagenet"``, a VGG16 no-top file, an FCN checkpoint (``.weights.h5``),
    ``"last"`` (resume the newest run in ``logs_dir`` at its epoch, in its folder) or ``None``.
    ``epochs`` is the final epoch number, so a resumed run trains the remaining ones.
    Validation (foreground pixel IoU, DSB mAP with instances by opening of ``radius``) runs every
    ``eval_every`` epochs and at the last one (``eval_every=0`` or no ``val_dataset``: never).
    ``crop_size`` must be a multiple of 32. ``keep_checkpoints`` keeps only the newest N files.
    Returns ``{"model", "run_dir", "checkpoint", "epoch", "val_metrics"}``.
    """
    if crop_size <= 0 or crop_size % 32:
        raise ValueError(f"crop_size must be a positive multiple of 32, got {crop_size}")
    initial_epoch = 0
    if weights == "last":
        last = NucleusModel.load("last", kind="fcn", logs=logs_dir)
        initial_epoch, run = last.epoch, last.run_folder
        model = build_fcn8s(None, dropout=dropout, fc_width=fc_width)
        load_fcn_weights(model, last.weights)
    else:
        model = load_fcn(weights, dropout=dropout, fc_width=fc_width)
        run = FCN_RUNS.folder(logs_dir, unique=True)
    run_dir = Path(run.path)
    run_dir.mkdir(parents=True, exist_ok=True)

    val_rows = [r for r in _read_csv(Path(run.val_map)) if int(r["epoch"]) <= initial_epoch]
    result: dict[str, Any] = {"model": model, "run_dir": run_dir, "epoch": initial_epoch,
                              "checkpoint": None, "val_metrics": val_rows}
    if initial_epoch >= epochs:
        result["checkpoint"] = Path(run.checkpoint(initial_epoch))
        return result

    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    crops = make_crop_dataset(train_dataset, batch_size, crop_size, steps_per_epoch,
                              augmenter=_resolve_augmenter(augment), seed=seed, workers=workers)
    callbacks = _callbacks(run, initial_epoch, epochs, keep_checkpoints, val_dataset,
                           radius, min_size, eval_every, val_rows)
    model.fit(crops, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
              verbose=verbose)
    result.update(epoch=epochs, checkpoint=Path(run.checkpoint(epochs)))
    return result


# ----------------------------------------------------------------------------- evaluation
def predict_foregrounds(model, dataset, threshold: float = 0.5,
                        desc: str = "FCN foreground") -> list[np.ndarray]:
    """Bool foreground [H, W] of every image of ``dataset`` (probability > ``threshold``)."""
    return [predict_foreground(model, dataset.load_image(i)) > threshold
            for i in tqdm(dataset.image_ids, desc=desc, leave=False)]


def _true_instances(dataset, image_id: int) -> np.ndarray:
    """The truth as a label image when the dataset has one (cheaper), else a bool stack."""
    if hasattr(dataset, "load_labels"):
        return np.asarray(dataset.load_labels(image_id))
    return np.asarray(dataset.load_mask(image_id)[0], dtype=bool)


def evaluate_fcn(model, dataset, radius: int = DEFAULT_RADIUS,
                 min_size: int = DEFAULT_MIN_SIZE) -> dict[str, float]:
    """Foreground pixel IoU (over all pixels of the dataset) and DSB mAP (mean over images).

    Instances come from opening with ``radius``; they cannot overlap, so no overlap elimination
    is needed. An empty dataset -> InputError.
    """
    if len(dataset.image_ids) == 0:
        raise InputError("evaluate_fcn: the dataset has no images")
    intersection = union = 0
    scores = []
    for image_id in tqdm(dataset.image_ids, desc="FCN evaluation", leave=False):
        truth = _true_instances(dataset, image_id)
        predicted = predict_foreground(model, dataset.load_image(image_id)) > 0.5
        true_fg = truth > 0 if truth.ndim == 2 else truth.any(axis=-1)
        if true_fg.shape != predicted.shape:
            raise InputError(f"{dataset.image_reference(image_id)}: mask shape "
                             f"{true_fg.shape} != image shape {predicted.shape}")
        intersection += int((true_fg & predicted).sum())
        union += int((true_fg | predicted).sum())
        labels = label_by_opening(predicted, radius, min_size)
        scores.append(image_score(truth, labels).score)
    pixel_iou = intersection / union if union else 1.0
    return {"pixel_iou": float(pixel_iou), "map": float(np.mean(scores))}


def tune_radius(model, dataset, radii: Sequence[int] = tuple(range(0, 9)),
                min_size: int = DEFAULT_MIN_SIZE) -> tuple[int, dict[int, float]]:
    """Best opening radius on ``dataset`` by DSB mAP (see :func:`nucleus.fcn.opening.pick_radius`)."""
    foregrounds = predict_foregrounds(model, dataset)
    truths = [_true_instances(dataset, i) for i in dataset.image_ids]
    return pick_radius(foregrounds, truths, radii, min_size=min_size)
