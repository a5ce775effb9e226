"""k-fold cross-validation of the FCN-8s baseline (the study's figure 4).

Each fold trains from the same starting weights on k-1 parts and is validated on the held-out
part at the checkpoint epochs (foreground pixel IoU and DSB mAP). Results go to
``logs_dir/crossval.csv`` (fold, epoch, pixel_iou, map), ``logs_dir/crossval_summary.csv``
(mean and standard deviation over folds per epoch) and ``logs_dir/crossval.png``. Each fold
trains in ``logs_dir/fold<k>/``; an interrupted run picks up where each fold stopped.
"""
from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Iterable

import keras
import numpy as np

from nucleus.dataset import NucleusDataset
from nucleus.errors import InputError
from nucleus.fcn.detector import DEFAULT_RADIUS, FCN_RUNS
from nucleus.fcn.train import DEFAULT_BATCH_SIZE, train_fcn
from nucleus.formats.io_utils import atomic_write
from nucleus.scoring.plots import save_crossval
from nucleus.split import kfold_split

CROSSVAL_CSV = "crossval.csv"
SUMMARY_CSV = "crossval_summary.csv"
PLOT_PNG = "crossval.png"
SUMMARY_FIELDS = ("epoch", "n_folds", "pixel_iou_mean", "pixel_iou_std", "map_mean", "map_std")


def load_fold(dataset_dir: str | os.PathLike | None, subset: str, fold: int, n_folds: int,
              part: str, limit: int | None = None):
    """The ``part`` ("train" or "val") of fold ``fold`` of ``subset``, prepared.

    ``limit`` keeps only the first N images of the subset (in id order) before the folds are
    dealt, for quick runs.
    """
    dataset = NucleusDataset()
    if limit is None:
        dataset.load_nucleus(dataset_dir, subset, fold=fold, n_folds=n_folds, fold_part=part)
    else:
        dataset.load_nucleus(dataset_dir, subset)
        ids = [info["id"] for info in dataset.image_info[:limit]]
        try:
            train_ids, val_ids = kfold_split(ids, n_folds)[fold]
        except ValueError as error:
            raise InputError(f"{dataset_dir or 'bundled sample'}: cannot make {n_folds} folds "
                             f"of the first {len(ids)} {subset} images ({error})") from error
        keep = set(train_ids if part == "train" else val_ids)
        dataset.image_info = [info for info in dataset.image_info if info["id"] in keep]
    dataset.prepare()
    return dataset


def summarize(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and (population) standard deviation over folds of each metric, per epoch."""
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_epoch.setdefault(int(row["epoch"]), []).append(row)
    summary = []
    for epoch in sorted(by_epoch):
        group = by_epoch[epoch]
        entry: dict[str, Any] = {"epoch": epoch, "n_folds": len(group)}
        for metric in ("pixel_iou", "map"):
            values = np.array([float(r[metric]) for r in group])
            entry[f"{metric}_mean"] = float(values.mean())
            entry[f"{metric}_std"] = float(values.std())
        summary.append(entry)
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: Iterable[str]) -> None:
    with atomic_write(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(fields), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def run_crossval(dataset_dir: str | os.PathLike | None, subset: str = "stage1_train",
                 folds: int = 10, logs_dir: str | os.PathLike = "logs/crossval",
                 epochs: int = 10, steps_per_epoch: int = 100, eval_every: int = 1,
                 weights: str | os.PathLike | None = "imagenet", learning_rate: float = 1e-5,
                 crop_size: int = 256, batch_size: int = DEFAULT_BATCH_SIZE,
                 radius: int = DEFAULT_RADIUS, augment: Any = True,
                 fold_ids: Iterable[int] | None = None, resume: bool = True,
                 keep_checkpoints: int | None = 1, plot: bool = True,
                 limit: int | None = None, **train_kwargs: Any) -> Path:
    """Cross-validate the FCN over ``folds`` folds of ``subset``; returns the per-fold CSV path.

    ``fold_ids`` runs only those folds (e.g. to spread folds over machines); the CSVs and plot
    cover every fold found in ``logs_dir``. With ``resume`` a fold that has checkpoints
    continues from its last one (a finished fold is not retrained). ``keep_checkpoints`` keeps
    only the newest N checkpoint files per fold (None keeps all). ``limit`` uses only the
    first N images of the subset (see :func:`load_fold`). Other keyword arguments go
    to :func:`nucleus.fcn.train.train_fcn` (``fc_width``, ``workers``, ``seed`` ...).
    """
    if folds < 2:
        raise InputError(f"cross-validation needs at least 2 folds, got {folds}")
    fold_ids = list(range(folds)) if fold_ids is None else sorted(set(int(f) for f in fold_ids))
    for fold in fold_ids:
        if not 0 <= fold < folds:
            raise InputError(f"fold {fold} is outside 0..{folds - 1}")
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)

    for fold in fold_ids:
        fold_dir = logs_dir / f"fold{fold}"
        print(f"cross-validation: fold {fold + 1} of {folds} ({fold_dir})")
        train = load_fold(dataset_dir, subset, fold, folds, "train", limit)
        val = load_fold(dataset_dir, subset, fold, folds, "val", limit)
        start = "last" if resume and FCN_RUNS.find_last(fold_dir) is not None else weights
        result = train_fcn(train, val, fold_dir, weights=start, epochs=epochs,
                           steps_per_epoch=steps_per_epoch, learning_rate=learning_rate,
                           augment=augment, crop_size=crop_size, batch_size=batch_size,
                           radius=radius, eval_every=eval_every,
                           keep_checkpoints=keep_checkpoints, **train_kwargs)
        del result
        keras.backend.clear_session()  # free the fold's model before the next one

    rows = collect(logs_dir)
    csv_path = logs_dir / CROSSVAL_CSV
    _write_csv(csv_path, rows, ("fold", "epoch", "pixel_iou", "map"))
    _write_csv(logs_dir / SUMMARY_CSV, summarize(rows), SUMMARY_FIELDS)
    if plot and rows:
        save_crossval(logs_dir / PLOT_PNG, csv_path)
    return csv_path


def collect(logs_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """(fold, epoch, pixel_iou, map) rows of every ``fold<k>`` in ``logs_dir``, fold by fold.

    Each fold's metrics come from the newest run folder that has a ``val_map.csv``.
    """
    rows: list[dict[str, Any]] = []
    logs_dir = Path(logs_dir)
    fold_dirs = [d for d in logs_dir.glob("fold*") if d.is_dir() and d.name[4:].isdigit()]
    for fold_dir in sorted(fold_dirs, key=lambda d: int(d.name[4:])):
        metrics = [run.val_map for run in FCN_RUNS.runs(fold_dir) if os.path.isfile(run.val_map)]
        if not metrics:
            continue
        with open(metrics[-1], newline="") as f:
            for row in csv.DictReader(f):
                rows.append({"fold": int(fold_dir.name[4:]), "epoch": int(row["epoch"]),
                             "pixel_iou": float(row["pixel_iou"]), "map": float(row["map"])})
    return rows
