"""Segment any image: a label image and a table with one row per nucleus.

``labels, table = segment(image)`` from Python; ``nucleus segment PATH... --out DIR`` on files,
which writes per image ``<name>_labels.tif`` (what Fiji, napari, QuPath and CellProfiler open as
a label image) and ``<name>_overlay.png`` (the nuclei drawn on the image), and one
``nuclei.csv`` for all images. Big images are detected tile by tile
(:mod:`nucleus.inference.tiling`).
"""
from __future__ import annotations

import functools
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm import tqdm

from nucleus.errors import InputError
from nucleus.formats.image_io import expand_path, grey_intensity, read_image, unique_names
from nucleus.formats.io_utils import atomic_write
from nucleus.formats.nuclei_table import COLUMNS, measure  # noqa: F401  (public here too)
from nucleus.inference.detectors import Detector
from nucleus.inference.tiling import DEFAULT_OVERLAP, predict_tiled

if TYPE_CHECKING:  # pandas is imported when a table is made: `import nucleus` stays cheap
    import pandas as pd

TABLE_NAME = "nuclei.csv"
LABELS_SUFFIX = "_labels.tif"
OVERLAY_SUFFIX = "_overlay.png"


@functools.lru_cache(maxsize=2)
def _default_detector(model: str, weights: str | None, tta: bool) -> Detector:
    from nucleus.inference.nucleus_model import make_detector

    return make_detector(model, weights, tta)


def segment(image: np.ndarray | str | os.PathLike, detector: Detector | None = None, *,
            model: str = "mrcnn", weights: str | None = None, tta: bool = False,
            channel: int | None = None, tile: int | None = None,
            overlap: int = DEFAULT_OVERLAP, name: str | None = None,
            progress: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """Nuclei of one image: ``(labels, table)``.

    ``image`` is an array (grey [H, W], RGB(A) [H, W, 3|4], any data type) or an image file.
    ``channel`` picks one channel of a multi-channel image or file (the nuclear stain).
    Without ``detector`` the one of ``model`` / ``weights`` / ``tta`` is built and kept for the
    next call (the shipped Mask R-CNN by default). ``tile`` None: the detector's own
    (:func:`nucleus.inference.tiling.tile_for`). ``labels`` is uint16 [H, W] (uint32 past
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


def _segment_array(raw: np.ndarray, detector: Detector, tile: int | None, overlap: int,
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


# ---------------------------------------------------------------------------- files
def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """The label image as a zlib-compressed single-page TIFF, written atomically."""
    import tifffile

    if labels.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"labels must be uint16 or uint32, got {labels.dtype}")
    buffer = io.BytesIO()     # compressed, so small beside the label image itself
    tifffile.imwrite(buffer, labels, photometric="minisblack", compression="zlib")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def _palette(n: int) -> np.ndarray:
    """n + 1 bright colours (row 0 unused), neighbours in label order far apart in hue."""
    import colorsys

    hues = (np.arange(n + 1) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.9, 1.0) for h in hues]
    return (np.asarray(rgb) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    """Each nucleus filled lightly and outlined in its own colour over the image (uint8 RGB)."""
    from skimage.segmentation import find_boundaries

    from mrcnn.utils import to_rgb_uint8

    out = to_rgb_uint8(image).copy()
    colours = _palette(int(labels.max()))
    inside = labels > 0
    tint = colours[labels[inside]]
    out[inside] = (out[inside] * (1 - alpha) + tint * alpha + 0.5).astype(np.uint8)
    edge = find_boundaries(labels, mode="inner")
    out[edge] = colours[labels[edge]]
    return out


def write_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray) -> None:
    """:func:`overlay` as a PNG of the image's size, written atomically."""
    from PIL import Image

    with atomic_write(path, "wb") as f:
        Image.fromarray(overlay(image, labels)).save(f, format="PNG", compress_level=3)


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """The nuclei table as CSV, written atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        table.to_csv(f, index=False, float_format="%.9g")


@dataclass
class Summary:
    """What :func:`segment_files` did."""
    images: int = 0
    nuclei: int = 0
    failed: list = field(default_factory=list)     # the files (or PATHs) that gave an error


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
                  overlap: int = DEFAULT_OVERLAP, progress: bool = True,
                  on_error: Callable[[str], None] = print, rois: bool = False,
                  geojson: bool = False) -> Summary:
    """Segment each file into ``out_dir``: ``<name>_labels.tif``, ``<name>_overlay.png`` and,
    for all of them, ``nuclei.csv``; with ``rois`` / ``geojson`` also each image's outlines for
    Fiji (``<name>_rois.zip``) and QuPath (``<name>_nuclei.geojson``),
    :mod:`nucleus.formats.viewer_formats`.

    A file that cannot be read is reported through ``on_error`` (``<file>: <problem>``) and
    skipped; the others go on. The table is written at the end, or at an interruption for the
    images done by then. A TIFF or zarr image of at least
    :data:`nucleus.formats.lazy_io.LAZY_PIXELS` pixels is read and its labels written window by
    window (:mod:`nucleus.inference.large`; no overlay, which would need the whole image in memory).
    """
    import pandas as pd

    from nucleus.formats.viewer_formats import write_viewer_files
    from nucleus.inference.large import is_large, segment_large_here

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = Summary()
    tables = []
    try:
        bar = tqdm(list(zip(files, unique_names(files))), desc="segment", unit="image",
                   disable=not progress)
        for path, name in bar:
            bar.set_postfix_str(path.name)
            try:
                if is_large(path, channel):      # read and written window by window
                    labels = None
                    table = segment_large_here(path, name, out / f"{name}{LABELS_SUFFIX}",
                                               detector, channel=channel, tile=tile,
                                               overlap=overlap, progress=progress)
                else:
                    raw = read_image(path, channel)
                    labels, table, prepared = _segment_array(raw, detector, tile, overlap,
                                                             name, progress)
            except InputError as e:
                message = str(e)
                on_error(message if message.startswith(str(path)) else f"{path}: {message}")
                summary.failed.append(str(path))
                continue
            if labels is not None:
                write_labels(out / f"{name}{LABELS_SUFFIX}", labels)
                write_overlay(out / f"{name}{OVERLAY_SUFFIX}", prepared, labels)
            write_viewer_files(out, name, out / f"{name}{LABELS_SUFFIX}" if labels is None
                               else labels, table, rois=rois, geojson_file=geojson)
            tables.append(table)
            summary.images += 1
            summary.nuclei += len(table)
    finally:
        if tables:
            rows = [t for t in tables if len(t)]
            write_table(out / TABLE_NAME, pd.concat(rows, ignore_index=True) if rows
                        else tables[0])
    return summary
