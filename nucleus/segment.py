"""Segment any image: a label image and a table with one row per nucleus.

``labels, table = segment(image)`` from Python; ``nucleus segment PATH... --out DIR`` on files,
which writes per image ``<name>_labels.tif`` (what Fiji, napari, QuPath and CellProfiler open as
a label image) and ``<name>_overlay.png`` (the nuclei drawn on the image), and one
``nuclei.csv`` for all images (:mod:`nucleus.formats.segment_outputs`, which the Dask run of
:mod:`nucleus.inference.parallel` writes through too). Big images are detected tile by tile
(:mod:`nucleus.inference.tiling`).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm import tqdm

from nucleus.errors import InputError
from nucleus.formats.image_io import expand_path, grey_intensity, read_image, unique_names
from nucleus.formats.nuclei_table import COLUMNS, measure  # noqa: F401  (public here too)
from nucleus.formats.segment_outputs import TABLE_NAME  # noqa: F401  (public here too)
from nucleus.formats.segment_outputs import (LABELS_SUFFIX, OVERLAY_SUFFIX, OutputFolder, Summary,
                                             overlay_png)
from nucleus.inference.detectors import Detector
from nucleus.inference.nucleus_model import make_detector
from nucleus.inference.tiling import predict_tiled

if TYPE_CHECKING:  # pandas is imported when a table is made: `import nucleus` stays cheap
    import pandas as pd


@functools.lru_cache(maxsize=2)
def _default_detector(model: str, weights: str | None, tta: bool) -> Detector:
    return make_detector(model, weights, tta, tiled=True)


def segment(image: np.ndarray | str | os.PathLike, detector: Detector | None = None, *,
            model: str = "mrcnn", weights: str | None = None, tta: bool = False,
            channel: int | None = None, tile: int | None = None,
            overlap: int | None = None, name: str | None = None,
            progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Nuclei of one image: ``(labels, table)``.

    ``image`` is an array (grey [H, W], RGB(A) [H, W, 3|4], any data type) or an image file.
    ``channel`` picks one channel of a multi-channel image or file (the nuclear stain).
    Without ``detector`` the one of ``model`` / ``weights`` / ``tta`` is built and kept for the
    next call (the shipped Mask R-CNN by default). ``tile`` None: the detector's own
    (:func:`nucleus.inference.tiling.tile_for`); ``overlap`` None: from the size of the nuclei
    at the image's centre (:func:`nucleus.inference.tiling.overlap_for`). ``labels`` is uint16 [H, W] (uint32 past
    65535 nuclei), 0 the background; ``table`` has one row per label (:data:`COLUMNS`).
    """
    if isinstance(image, (str, os.PathLike)):
        name = name or Path(image).stem
        raw = read_image(image, channel)
    else:
        raw = np.asarray(image)
        if channel is not None:
            if raw.ndim != 3 or not 0 <= channel < raw.shape[-1]:
                raise InputError(f"channel {channel}: the image has shape {raw.shape}")
            raw = raw[..., channel]
        elif raw.ndim == 3 and raw.shape[-1] in (2, 4):     # alpha is not intensity
            raw = raw[..., 0] if raw.shape[-1] == 2 else raw[..., :3]
    if detector is None:
        detector = _default_detector(model, weights, tta)
    labels, table, _ = _segment_array(raw, detector, tile, overlap, name or "image", progress)
    return labels, table


def _segment_array(raw: np.ndarray, detector: Detector, tile: int | None, overlap: int | None,
                   name: str,
                   progress: bool) -> tuple[np.ndarray, pd.DataFrame, np.ndarray]:
    """Labels, table and the prepared (normalised uint8 RGB) image the detector saw."""
    if raw.ndim not in (2, 3) or min(raw.shape[:2]) < 1:
        raise InputError(f"expected a grey or RGB image, got shape {raw.shape}")
    try:
        prepared = detector.prepare(raw)
    except ValueError as e:
        raise InputError(str(e)) from e
    labels, scores = predict_tiled(prepared, detector, tile, overlap, progress)
    return labels, measure(labels, scores, grey_intensity(raw), name), prepared


def segment_file(path: str | os.PathLike, name: str, detector: Detector, *,
                 channel: int | None = None, tile: int | None = None,
                 overlap: int | None = None,
                 progress: bool = False) -> tuple[np.ndarray, pd.DataFrame, bytes]:
    """One image file read whole: its labels, table and overlay PNG, what
    :meth:`nucleus.formats.segment_outputs.OutputFolder.add_image` writes (the serial run and
    each Dask worker make them here)."""
    raw = read_image(path, channel)
    labels, table, prepared = _segment_array(raw, detector, tile, overlap, name, progress)
    return labels, table, overlay_png(prepared, labels)


# ---------------------------------------------------------------------------- files
def collect_files(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                  on_error: Callable[[str], None]) -> tuple[list[Path], list[str]]:
    """The image files the command line's PATHs name, without this command's own outputs in
    ``out_dir``; PATHs that name nothing are reported and returned as failures."""
    out_dir = Path(out_dir).resolve()
    files, failed, seen = [], [], set()
    for path in paths:
        try:
            found = expand_path(path)
        except InputError as e:
            on_error(str(e))
            failed.append(str(path))
            continue
        for f in found:
            key = f.resolve()
            if key in seen or (key.parent == out_dir and f.name.endswith(
                    (LABELS_SUFFIX, OVERLAY_SUFFIX))):
                continue
            seen.add(key)
            files.append(f)
    return files, failed


def segment_files(files: Sequence[Path], out_dir: str | os.PathLike, detector: Detector, *,
                  channel: int | None = None, tile: int | None = None,
                  overlap: int | None = None, progress: bool = True,
                  on_error: Callable[[str], None] = print, rois: bool = False,
                  geojson: bool = False) -> Summary:
    """Segment each file into ``out_dir``: ``<name>_labels.tif``, ``<name>_overlay.png`` and,
    for all of them, ``nuclei.csv``; with ``rois`` / ``geojson`` also each image's outlines for
    Fiji (``<name>_rois.zip``) and QuPath (``<name>_nuclei.geojson``),
    :mod:`nucleus.formats.viewer_formats`. The files are those of
    :class:`nucleus.formats.segment_outputs.OutputFolder`.

    A file that cannot be read is reported through ``on_error`` (``<file>: <problem>``) and
    skipped; the others go on. The table is written at the end, or at an interruption for the
    images done by then. A TIFF or zarr image of at least
    :data:`nucleus.formats.lazy_io.LAZY_PIXELS` pixels is read and its labels written window by
    window (:mod:`nucleus.inference.large`; no overlay, which would need the whole image in memory).
    """
    # here, not at the top: nucleus.inference.large (through lazy_io: mrcnn.utils, SciPy,
    # scikit-image) adds 0.25 s or more to `import nucleus`
    from nucleus.inference.large import is_large, segment_large_here

    with OutputFolder(out_dir, rois=rois, geojson=geojson, on_error=on_error) as folder:
        bar = tqdm(list(enumerate(zip(files, unique_names(files)))), desc="segment",
                   unit="image", disable=not progress)
        for index, (path, name) in bar:
            bar.set_postfix_str(path.name)
            try:
                large = is_large(path, channel)      # read and written window by window
                if large:
                    table = segment_large_here(path, name, folder.labels_path(name), detector,
                                               channel=channel, tile=tile, overlap=overlap,
                                               progress=progress)
                else:
                    labels, table, png = segment_file(path, name, detector, channel=channel,
                                                      tile=tile, overlap=overlap,
                                                      progress=progress)
            except InputError as e:
                folder.fail(path, str(e))
                continue
            if large:
                folder.add_large(index, name, table)
            else:
                folder.add_image(index, name, labels, table, png)
    return folder.summary
