"""The output folder of ``nucleus segment``, written by one object for the serial and the Dask runs.

Per image: ``<name>_labels.tif`` (what Fiji, napari, QuPath and CellProfiler open as a label
image), ``<name>_overlay.png`` (the nuclei drawn on the image; not for images segmented window
by window, whose label TIFF :mod:`nucleus.inference.large` streams to
:meth:`OutputFolder.labels_path` itself) and the outline files asked for (:mod:`nucleus.formats.viewer_formats`); for all images
``nuclei.csv``, rows in input order whatever order the images finish in, written when the folder
is closed, an interrupted run included. Every file is written atomically, so an interruption
never leaves a half-written one.
"""
from __future__ import annotations

import colorsys
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import tifffile
from PIL import Image

from nucleus.formats.io_utils import atomic_write
from nucleus.formats.viewer_formats import write_viewer_files

if TYPE_CHECKING:  # pandas is imported when a table is made: `import nucleus` stays cheap
    import pandas as pd

TABLE_NAME = "nuclei.csv"
LABELS_SUFFIX = "_labels.tif"
OVERLAY_SUFFIX = "_overlay.png"


def write_labels(path: str | os.PathLike, labels: np.ndarray) -> None:
    """The label image as a zlib-compressed single-page TIFF, written atomically."""
    if labels.dtype not in (np.uint16, np.uint32):
        raise ValueError(f"labels must be uint16 or uint32, got {labels.dtype}")
    buffer = io.BytesIO()     # compressed, so small beside the label image itself
    tifffile.imwrite(buffer, labels, photometric="minisblack", compression="zlib")
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())


def _palette(n: int) -> np.ndarray:
    """n + 1 bright colours (row 0 unused), neighbours in label order far apart in hue."""
    hues = (np.arange(n + 1) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.9, 1.0) for h in hues]
    return (np.asarray(rgb) * 255).astype(np.uint8)


def overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.3) -> np.ndarray:
    """Each nucleus filled lightly and outlined in its own colour over the image (uint8 RGB)."""
    # here, not at the top: scikit-image's segmentation and mrcnn.utils (SciPy) add about
    # 0.5 s to `import nucleus`, which imports this module through nucleus.segment
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


def overlay_png(image: np.ndarray, labels: np.ndarray) -> bytes:
    """:func:`overlay` encoded as PNG (compression level 3: fast, a little larger), the bytes
    :meth:`OutputFolder.add_image` writes; made where the image is (a Dask worker sends these
    rather than the image)."""
    png = io.BytesIO()
    Image.fromarray(overlay(image, labels)).save(png, format="PNG", compress_level=3)
    return png.getvalue()


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """The nuclei table as CSV, written atomically."""
    with atomic_write(path, "w", newline="", encoding="utf-8") as f:
        table.to_csv(f, index=False, float_format="%.9g")


@dataclass
class Summary:
    """What a ``nucleus segment`` run did."""
    images: int = 0
    nuclei: int = 0
    failed: list = field(default_factory=list)     # the files (or PATHs) that gave an error


class OutputFolder:
    """The one writer of ``nucleus segment``'s outputs into ``out_dir`` (made if missing).

    :meth:`add_image` and :meth:`add_large` write one image's files and keep its table under its
    position among the inputs; :meth:`fail` reports a file through ``on_error`` and lists it in
    :attr:`summary`; :meth:`close` (or leaving a ``with`` block, also on an error or an
    interruption) writes ``nuclei.csv`` of the images done. ``written`` collects the path of
    each file written (a test shows none is written twice)."""

    def __init__(self, out_dir: str | os.PathLike, *, rois: bool = False, geojson: bool = False,
                 on_error: Callable[[str], None] = print, written: list | None = None):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.rois, self.geojson, self.on_error = rois, geojson, on_error
        self.written = [] if written is None else written
        self.summary = Summary()
        self.tables: dict[int, pd.DataFrame] = {}

    def labels_path(self, name: str) -> Path:
        """Where the label image of ``name`` goes."""
        return self.out / f"{name}{LABELS_SUFFIX}"

    def add_image(self, index: int, name: str, labels: np.ndarray, table: pd.DataFrame,
                  png: bytes) -> None:
        """An image segmented whole: its label TIFF, overlay PNG (the bytes of
        :func:`overlay_png`), outline files and table."""
        write_labels(self.labels_path(name), labels)
        overlay_path = self.out / f"{name}{OVERLAY_SUFFIX}"
        with atomic_write(overlay_path, "wb") as f:
            f.write(png)
        self.written += [self.labels_path(name), overlay_path]
        self._finish(index, name, labels, table)

    def add_large(self, index: int, name: str, table: pd.DataFrame) -> None:
        """An image segmented window by window, whose label TIFF is already at
        :meth:`labels_path`: its outline files (read from that TIFF box by box) and table."""
        self.written.append(self.labels_path(name))
        self._finish(index, name, self.labels_path(name), table)

    def _finish(self, index: int, name: str, labels: np.ndarray | Path,
                table: pd.DataFrame) -> None:
        self.written += [Path(p) for p in write_viewer_files(
            self.out, name, labels, table, rois=self.rois, geojson_file=self.geojson)]
        self.tables[index] = table
        self.summary.images += 1
        self.summary.nuclei += len(table)

    def fail(self, path: str | os.PathLike, message: str) -> None:
        """Report that ``path`` gave an error (``<path>: <problem>``) and list it as failed."""
        self.on_error(message if message.startswith(str(path)) else f"{path}: {message}")
        self.summary.failed.append(str(path))

    def close(self) -> None:
        """Write ``nuclei.csv``: the tables of the images done, in input order (the first
        one's empty table when no image has nuclei; no file when no image was done)."""
        if not self.tables:
            return
        import pandas as pd  # here, not at the top: pandas adds about 0.2 s to `import nucleus`

        tables = [self.tables[i] for i in sorted(self.tables)]
        rows = [t for t in tables if len(t)]
        write_table(self.out / TABLE_NAME, pd.concat(rows, ignore_index=True) if rows
                    else tables[0])
        self.written.append(self.out / TABLE_NAME)

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
