"""DSB mAP of a detector on a labelled dataset, and the callback that tracks it while training."""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from typing import Callable

import keras
import numpy as np
from tqdm import tqdm

from nucleus import metric
from nucleus.overlap import eliminate_overlaps


@dataclass
class Evaluation:
    """Scores of one dataset: the DSB mAP and what makes it up."""
    map: float
    image_ids: list = field(default_factory=list)
    scores: list = field(default_factory=list)         # metric.ImageScore per image
    seconds_per_image: float = 0.0

    @property
    def precisions(self) -> np.ndarray:
        return metric.mean_precisions(self.scores)

    def precision_at(self, t: float) -> float:
        i = int(np.argmin(np.abs(metric.THRESHOLDS - t)))
        return float(self.precisions[i])

    def mean_counts(self, t: float = 0.5) -> tuple[float, float, float]:
        """Mean true positives, false positives and misses per image at IoU threshold ``t``."""
        i = int(np.argmin(np.abs(metric.THRESHOLDS - t)))
        tp = np.mean([s.tp[i] for s in self.scores])
        fp = np.mean([s.fp[i] for s in self.scores])
        fn = np.mean([s.fn[i] for s in self.scores])
        return float(tp), float(fp), float(fn)


def raw_detections(model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks [H, W, N] (they may overlap) and scores of a Mask R-CNN on one image."""
    result = model.detect([image], verbose=0)[0]
    return result["masks"], np.asarray(result["scores"])


def detect_instances(model, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks [H, W, N] without overlaps (the biggest mask keeps shared pixels) and their scores."""
    masks, scores = raw_detections(model, image)
    masks, kept = eliminate_overlaps(masks)
    return masks, scores[kept]


def evaluate_dataset(detect_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dataset,
                     limit: int | None = None, progress: bool = True,
                     on_image: Callable | None = None) -> Evaluation:
    """Run ``detect_fn(image) -> (masks, scores)`` over a labelled dataset and score it."""
    ids = list(dataset.image_ids)[:limit]
    scores, seconds = [], 0.0
    for image_id in tqdm(ids, desc="evaluate", disable=not progress):
        image = dataset.load_image(image_id)
        gt, _ = dataset.load_mask(image_id)
        start = time.perf_counter()
        pred, pred_scores = detect_fn(image)
        seconds += time.perf_counter() - start
        s = metric.image_score(gt, pred)
        scores.append(s)
        if on_image is not None:
            on_image(image_id, image, gt, pred, pred_scores, s)
    mean = float(np.mean([s.score for s in scores])) if scores else 0.0
    return Evaluation(mean, [dataset.image_info[i]["id"] for i in ids], scores,
                      seconds / max(len(ids), 1))


class MapCallback(keras.callbacks.Callback):
    """Validation DSB mAP every ``every`` epochs from epoch ``first`` (1-based), written to
    ``val_map.csv`` beside the checkpoints, to TensorBoard, and as a PNG curve."""

    def __init__(self, training_model, inference_model, dataset, every: int = 10,
                 first: int = 5, limit: int | None = None):
        super().__init__()
        self.training_model = training_model
        self.inference_model = inference_model
        self.dataset = dataset
        self.every = every
        self.first = first
        self.limit = limit
        self.start = time.time()
        self.hours_before: float | None = None

    def due(self, epoch: int) -> bool:
        return epoch >= self.first and (epoch - self.first) % self.every == 0

    def on_epoch_end(self, epoch, logs=None):
        epoch = epoch + 1
        if not self.due(epoch):
            return
        self.inference_model.keras_model.set_weights(self.training_model.keras_model.get_weights())
        result = evaluate_dataset(lambda im: detect_instances(self.inference_model, im),
                                  self.dataset, limit=self.limit, progress=False)
        log_dir = self.training_model.log_dir
        path = os.path.join(log_dir, "val_map.csv")
        new = not os.path.exists(path)
        if self.hours_before is None:  # a resumed run continues the hours of the first
            self.hours_before = _last_hours(path)
        hours = self.hours_before + (time.time() - self.start) / 3600
        with open(path, "a", newline="") as f:  # append-only log; a row is written whole
            w = csv.writer(f)
            if new:
                w.writerow(["epoch", "map", "hours", "ap50", "ap75"])
            w.writerow([epoch, f"{result.map:.4f}", f"{hours:.3f}",
                        f"{result.precision_at(0.5):.4f}", f"{result.precision_at(0.75):.4f}"])
        if logs is not None:
            logs["val_map"] = result.map
        try:
            import tensorflow as tf
            with tf.summary.create_file_writer(os.path.join(log_dir, "val_map")).as_default():
                tf.summary.scalar("val_map", result.map, step=epoch)
        except Exception:  # TensorBoard is optional for the curve
            pass
        try:
            from nucleus.plots import save_map_curve
            save_map_curve(os.path.join(log_dir, "val_map.png"), path)
        except Exception as e:  # a plotting problem must not stop training
            print(f"could not draw val_map.png: {e}")
        print(f"\nepoch {epoch}: validation DSB mAP {result.map:.4f}")


def _last_hours(path: str) -> float:
    """Training hours recorded on the last row of an existing ``val_map.csv`` (0 if none)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["hours"]) if rows else 0.0
    except (OSError, KeyError, ValueError):
        return 0.0
