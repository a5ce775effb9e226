"""Open ``nucleus segment``'s results in napari: ``NAME_labels.tif`` as a Labels layer whose
features are NAME's rows of the ``nuclei.csv`` beside it (area, centroid, score ...)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import pandas as pd
import tifffile

from nucleus.errors import InputError
from nucleus.formats.segment_outputs import LABELS_SUFFIX, TABLE_NAME


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[tuple]] | None:
    """napari's reader hook: :func:`read_labels` for ``*_labels.tif`` files, else None (so
    napari asks the next reader)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if paths and all(str(p).endswith(LABELS_SUFFIX) for p in paths):
        return read_labels
    return None


def read_labels(path: str | list[str]) -> list[tuple]:
    """One Labels layer per label TIFF, named NAME, with its rows of nuclei.csv as features
    (and an ``index`` column that ties each row to its label value, napari's convention)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [_layer(Path(p)) for p in paths]


def _layer(path: Path) -> tuple:
    try:
        labels = tifffile.imread(path)
    except Exception as e:  # tifffile raises several types for bad files
        raise InputError(f"{path}: cannot read the label TIFF ({type(e).__name__}: {e})") from e
    name = path.name[:-len(LABELS_SUFFIX)]
    meta: dict = {"name": name}
    table_path = path.parent / TABLE_NAME
    if table_path.is_file():
        table = pd.read_csv(table_path)
        rows = table[table["image"].astype(str) == name].drop(columns="image")
        meta["features"] = features_of(rows)
        meta["metadata"] = {"table": str(table_path)}
    return labels, meta, "labels"


def features_of(table):
    """A nuclei table as napari Labels features: its columns (``image`` dropped), plus
    ``index``, the label value each row belongs to."""
    features = table.drop(columns=[c for c in ("image",) if c in table]).reset_index(drop=True)
    features.insert(0, "index", features["label"].to_numpy())
    return features
