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

from mrcnn.backend import write_scalars
from mrcnn.runs import RunFolder
from nucleus.formats.io_utils import atomic_write
from nucleus.inference.nucleus_model import NucleusModel
from nucleus.kinds import KINDS, image_kind
from nucleus.scoring import metric
from nucleus.scoring.plots import save_map_curve

VAL_MAP_COLUMNS: tuple[str, ...] = ("epoch", "map", "hours", "ap50", "ap75",
                                    *(f"map_{kind}" for kind in KINDS))
"""Columns of ``val_map.csv``; ``map_<kind>`` is empty when the validation set has no image of
that kind. Files written before the per-kind columns existed hold the first five only."""


@dataclass
class Evaluation:
    """Scores of one dataset: the DSB mAP and what makes it up."""
    map: float
    image_ids: list = field(default_factory=list)
    scores: list = field(default_factory=list)         # metric.ImageScore per image
    seconds_per_image: float = 0.0
    kinds: list = field(default_factory=list)          # nucleus.kinds kind per image

    def by_kind(self) -> dict[str, tuple[int, float]]:
        """kind -> (number of images, their DSB mAP), for the kinds present, in KINDS order.

        The overall mAP hides how a model fares on the rare kinds (bright-field, stained
        tissue); this is the same score split by :func:`nucleus.kinds.image_kind`.
        """
        out = {}
        for kind in KINDS:
            values = [s.score for s, k in zip(self.scores, self.kinds) if k == kind]
            if values:
                out[kind] = (len(values), float(np.mean(values)))
        return out

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


def evaluate_dataset(detect_fn: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], dataset,
                     limit: int | None = None, progress: bool = True,
                     on_image: Callable | None = None) -> Evaluation:
    """Run ``detect_fn(image) -> (masks, scores)`` over a labelled dataset and score it.

    Each image's kind (:func:`nucleus.kinds.image_kind`) is read from the image already loaded
    and kept in its ``image_info`` entry, so :meth:`Evaluation.by_kind` costs nothing more.
    """
    ids = list(dataset.image_ids)[:limit]
    scores, kinds, seconds = [], [], 0.0
    for image_id in tqdm(ids, desc="evaluate", disable=not progress):
        image = dataset.load_image(image_id)
        info = dataset.image_info[image_id]
        if "kind" not in info:
            info["kind"] = image_kind(image)
        kinds.append(info["kind"])
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
                      seconds / max(len(ids), 1), kinds)


class MapCallback(keras.callbacks.Callback):
    """Validation DSB mAP every ``every`` epochs from epoch ``first`` (1-based), written to
    ``val_map.csv`` beside the checkpoints (overall and per image kind, :data:`VAL_MAP_COLUMNS`),
    to TensorBoard, and as a PNG curve.

    ``validation`` is the run's validation model (:meth:`NucleusModel.of_training`): the callback
    builds its network once, copies the training weights into it at each due epoch and scores
    it through the detector :meth:`NucleusModel.detector_of` builds, so at the scale it was
    trained for when it was trained at one nucleus size (``OBJECT_DIAMETER``)."""

    def __init__(self, training_model, validation: NucleusModel, dataset, every: int = 10,
                 first: int = 5, limit: int | None = None):
        super().__init__()
        self.training_model = training_model
        self.validation = validation
        self.inference_model = validation.network()
        # Built as every command builds its detector (NucleusModel.detector_of): the same
        # image preparation, scale and overlap rule as ``evaluate`` on the run's checkpoints.
        self.detector = validation.detector_of(self.inference_model)
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
        result = evaluate_dataset(self.detector, self.dataset, limit=self.limit,
                                  progress=False)
        log_dir = self.training_model.log_dir
        path = RunFolder(log_dir).val_map
        if self.hours_before is None:  # a resumed run continues the hours of the first
            self.hours_before = _last_hours(path)
        hours = self.hours_before + (time.time() - self.start) / 3600
        by_kind = result.by_kind()
        row = {"epoch": epoch, "map": f"{result.map:.4f}", "hours": f"{hours:.3f}",
               "ap50": f"{result.precision_at(0.5):.4f}",
               "ap75": f"{result.precision_at(0.75):.4f}",
               **{f"map_{kind}": f"{m:.4f}" for kind, (_, m) in by_kind.items()}}
        append_val_map_row(path, row)
        if logs is not None:
            logs["val_map"] = result.map
        try:  # TensorBoard's own writer: no TensorFlow needed under the JAX backend
            write_scalars(os.path.join(log_dir, "val_map"),
                          {"val_map": result.map,
                           **{f"val_map_{kind}": m for kind, (_, m) in by_kind.items()}}, epoch)
        except Exception as e:  # TensorBoard is optional: the CSV and PNG curve remain
            print(f"could not write val_map to TensorBoard: {e}")
        try:
            save_map_curve(os.path.join(log_dir, "val_map.png"), path)
        except Exception as e:  # a plotting problem must not stop training
            print(f"could not draw val_map.png: {e}")
        kinds = ", ".join(f"{kind} {m:.4f} ({n})" for kind, (n, m) in by_kind.items())
        print(f"\nepoch {epoch}: validation DSB mAP {result.map:.4f} ({kinds})")


def append_val_map_row(path: str, row: dict) -> None:
    """Add one row to ``val_map.csv``, upgrading a file from before the per-kind columns.

    A file whose header already holds every column of :data:`VAL_MAP_COLUMNS` gets the row
    appended (a row is written whole). An older file is rewritten atomically with the new
    columns added (its old rows keep empty cells there), so a resumed run continues one
    readable table.
    """
    columns, rows = list(VAL_MAP_COLUMNS), []
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            old = list(reader.fieldnames or [])
            if set(columns) <= set(old):
                rows = None
            else:
                rows = list(reader)
        if rows is None:
            with open(path, "a", newline="") as f:
                csv.DictWriter(f, old, restval="").writerow(row)
            return
        columns = old + [c for c in columns if c not in old]
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)
        w.writerow(row)


def _last_hours(path: str) -> float:
    """Training hours recorded on the last row of an existing ``val_map.csv`` (0 if none)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return float(rows[-1]["hours"]) if rows else 0.0
    except (OSError, KeyError, ValueError):
        return 0.0
