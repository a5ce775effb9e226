"""Segment an image larger than memory: tiles read lazily, detected anywhere, stitched in bands.

The tiles of :func:`nucleus.inference.tiling.plan_tiles` are read and prepared one at a time
(:mod:`nucleus.formats.lazy_io`) and detected here or on Dask workers
(:mod:`nucleus.inference.parallel`); each returns only the nuclei it owns.
:class:`nucleus.inference.tiling.BandStitcher`, the rule :func:`nucleus.inference.tiling.stitch`
applies to a whole image, pastes them in tile order keeping only one band of rows in memory, and
:class:`TileTable` measures the nuclei it keeps tile by tile. Finished rows go to a zarr store on
disk and then into a tiled BigTIFF, tile by tile, so memory stays flat as the image grows.
"""
from __future__ import annotations

import os
import shutil
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import tifffile
from skimage.measure import regionprops_table
from tqdm import tqdm

from nucleus.formats import lazy_io
from nucleus.formats.image_io import grey_intensity
from nucleus.formats.io_utils import atomic_path
from nucleus.formats.lazy_io import (LazyImage, Preparation, cached_open, open_lazy,
                                     plan_preparation, prepare_window)
from nucleus.formats.nuclei_table import COLUMNS, PROPERTIES, RENAME, measure
from nucleus.inference.tiling import (DEFAULT_OVERLAP, DEFAULT_TILE, BandStitcher, Instance,
                                      Pasted, Tile, auto_plan, owned, plan_tiles, tile_for,
                                      tile_instances, with_known)

if TYPE_CHECKING:
    from nucleus.inference.detectors import Detector

TIFF_TILE = 512
"""Tile side of the written label TIFF (and chunk side of the zarr store behind it)."""


@dataclass
class Found:
    """A nucleus a tile owns, with the raw intensities under its box (for the table)."""
    instance: Instance
    intensity: np.ndarray


def detect_window(image: LazyImage, prep: Preparation, tile: Tile,
                  detector: Detector) -> list[Found]:
    """The nuclei ``tile`` owns (:func:`nucleus.inference.tiling.detect_tile`) and their
    intensities."""
    y0, x0, y1, x1 = tile.box
    raw = image.window(y0, x0, y1, x1)
    found = tile_instances(detector, prepare_window(raw, prep), (y0, x0))
    intensity = grey_intensity(raw)
    out = []
    for inst in found:
        if owned(inst, tile):
            b = inst.box
            out.append(Found(inst, np.ascontiguousarray(
                intensity[b[0] - y0:b[2] - y0, b[1] - x0:b[3] - x0])))
    return out


def detect_file_tile(path: str, channel: int | None, prep: Preparation, tile: Tile,
                     detector: Detector) -> list[Found]:
    """:func:`detect_window` on a file, opened once per process (the task a worker runs)."""
    return detect_window(cached_open(path, channel), prep, tile, detector)


class TileTable:
    """The nuclei table of an image stitched tile by tile (:class:`BandStitcher`), measured on
    each tile's kept nuclei as :func:`nucleus.formats.nuclei_table.measure` measures the whole
    label image."""

    def __init__(self, name: str = "image"):
        self.name = name
        self.rows: list[dict] = []           # measurements per tile, by temporary id

    def add(self, tile: Tile, found: Sequence[Found], kept: Sequence[Pasted]) -> None:
        """Measure the nuclei of ``found`` that the stitcher kept with ``regionprops_table``, on
        a canvas of the box around them: regionprops measures each label on its own box, so
        a nucleus gets the numbers it gets in the whole label image (the centroid up to the
        rounding of the canvas's offset)."""
        if not kept:
            return
        boxes = np.array([found[index].instance.box for _, index, _ in kept], np.int64)
        cy0, cx0 = boxes[:, 0].min(), boxes[:, 1].min()
        cy1, cx1 = boxes[:, 2].max(), boxes[:, 3].max()
        labels = np.zeros((cy1 - cy0, cx1 - cx0), np.int32)
        dtype = np.result_type(*(found[index].intensity.dtype for _, index, _ in kept))
        intensity = np.zeros(labels.shape, dtype)
        for k, (box, (_, index, free)) in enumerate(zip(boxes, kept), start=1):
            y0, x0, y1, x1 = box - (cy0, cx0, cy0, cx0)
            labels[y0:y1, x0:x1][free] = k
            intensity[y0:y1, x0:x1][free] = found[index].intensity[free]
        props = regionprops_table(labels, intensity_image=intensity, properties=PROPERTIES)
        props["label"] = np.array([tid for tid, _, _ in kept], np.int64)[props["label"] - 1]
        for key, off in (("centroid-0", cy0), ("centroid-1", cx0), ("bbox-0", cy0),
                         ("bbox-1", cx0), ("bbox-2", cy0), ("bbox-3", cx0)):
            props[key] = props[key] + off
        self.rows.append(props)

    def table(self, stitcher: BandStitcher) -> pd.DataFrame:
        """One row per label of the finished ``stitcher``, as
        :func:`nucleus.formats.nuclei_table.measure` makes it."""
        if not self.rows:
            return measure(np.zeros((1, 1), np.uint16), [], np.zeros((1, 1)), self.name)
        table = pd.concat([pd.DataFrame(p) for p in self.rows], ignore_index=True)
        tids = table["label"].to_numpy(np.int64)
        labels = stitcher.labels(tids).astype(np.int64)
        table["label"] = labels
        table["score"] = stitcher.label_scores()[labels - 1].astype(np.float64)
        table = table.rename(columns=RENAME).sort_values("label", ignore_index=True)
        table.insert(0, "image", self.name)
        return table[list(COLUMNS)]


def stitch_found(shape: Sequence[int], tiles_found: Iterable[tuple[Tile, Sequence[Found]]],
                 sink: Callable[[int, np.ndarray], None],
                 name: str = "image") -> tuple[int, pd.DataFrame]:
    """Stitch each tile's :class:`Found` nuclei in tile order, finished rows of labels to
    ``sink(y0, rows)`` (:class:`BandStitcher`), measuring the kept ones as they come; the number
    of nuclei and their table."""
    stitcher = BandStitcher(shape, sink)
    measured = TileTable(name)
    for tile, found in tiles_found:
        measured.add(tile, found, stitcher.add_tile(tile, [f.instance for f in found]))
    count = stitcher.finish()
    return count, measured.table(stitcher)


# ----------------------------------------------------------------------------- label files
class LabelStore:
    """Rows of labels streamed to a temporary zarr store, then written as a tiled BigTIFF
    (uint16, or uint32 past 65535 nuclei, as
    :func:`nucleus.formats.segment_outputs.write_labels` chooses)."""

    def __init__(self, path: Path, shape: Sequence[int]):
        import zarr  # here: 0.3 to 0.6 s to import, paid only when a large image is segmented

        self.path = Path(path)
        self.scratch = self.path.parent / f".{self.path.name}.zarr.tmp"
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.chunk = (min(TIFF_TILE, shape[0]), min(TIFF_TILE, shape[1]))
        self.array = zarr.open_array(str(self.scratch), mode="w", shape=tuple(shape[:2]),
                                     chunks=self.chunk, dtype=np.uint32, fill_value=0)
        # rows below the last whole row of chunks, held until the rest of their chunks come
        self.held = np.empty((self.chunk[0], int(shape[1])), np.uint32)
        self.held_y0 = 0
        self.held_rows = 0

    def write_rows(self, y0: int, rows: np.ndarray) -> None:
        """Store the next rows (``y0`` follows the rows given before). Only whole rows of
        chunks go to the store, each chunk written once: rows that end part of the way down
        a chunk would make zarr read that chunk back and write it again with the next rows
        (an 8,192 mosaic's labels: 1.6 -> 0.5 s of CPU). The rest waits in :attr:`held`,
        at most a chunk's height of rows."""
        if y0 != self.held_y0 + self.held_rows:
            raise ValueError(f"rows must come in order: expected row "
                             f"{self.held_y0 + self.held_rows}, got {y0}")
        step = self.chunk[0]
        at = 0
        while at < len(rows):
            if self.held_rows == 0 and len(rows) - at >= step:
                whole = (len(rows) - at) // step * step       # straight from the caller's rows
                self.array[y0 + at:y0 + at + whole] = rows[at:at + whole]
                at += whole
                self.held_y0 = y0 + at
                continue
            take = min(step - self.held_rows, len(rows) - at)
            self.held[self.held_rows:self.held_rows + take] = rows[at:at + take]
            self.held_rows += take
            at += take
            if self.held_rows == step:
                self._write_held()

    def _write_held(self) -> None:
        if self.held_rows:
            self.array[self.held_y0:self.held_y0 + self.held_rows] = self.held[:self.held_rows]
        self.held_y0 += self.held_rows
        self.held_rows = 0

    def _tiles(self, dtype) -> Iterator[np.ndarray]:
        """The TIFF's tiles in its order, each read from the one chunk of the store it is (not
        a band of the image's width, which would grow with the image)."""
        height, width = self.array.shape
        for y in range(0, height, TIFF_TILE):
            for x in range(0, width, TIFF_TILE):
                tile = np.zeros((TIFF_TILE, TIFF_TILE), dtype)
                part = self.array[y:y + TIFF_TILE, x:x + TIFF_TILE]
                tile[:part.shape[0], :part.shape[1]] = part
                yield tile

    def close(self, count: int) -> None:
        """Write the TIFF atomically and remove the scratch store."""
        dtype = np.uint16 if count < 2**16 else np.uint32
        # tifffile needs a named file to write tiles from a generator: the project's one
        # atomic writer for path-taking writers gives it one, renamed over the target at the end.
        try:
            self._write_held()
            with atomic_path(self.path) as tmp:
                tifffile.imwrite(tmp, self._tiles(dtype), shape=self.array.shape, dtype=dtype,
                                 tile=(TIFF_TILE, TIFF_TILE), photometric="minisblack",
                                 compression="zlib", bigtiff=True)
        finally:
            self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


DETECT_AHEAD = 2
"""Tiles the Mask R-CNN's crop-sized path (:attr:`Detector.crop_sized`) detects at once in
:func:`serial_tiles`, each in its own thread. The network runs one call at a time
(``MaskRCNN.infer_molded`` holds a lock), so the second thread adds no network memory: it
reads, prepares and molds its tile, and unmolds and pastes its masks, while the other tile is
in the network, taking that work off the network's path. Other detectors (the FCN-8s, test
detectors) keep one thread: nothing says they may be called from two."""


def serial_tiles(path: str, channel: int | None, prep: Preparation, tiles: Sequence[Tile],
                 detector: Detector) -> Iterator[list[Found]]:
    """Each tile's nuclei in turn, detected in this process, in threads working ahead
    (:data:`DETECT_AHEAD`), so that reading, detecting and pasting the next tiles run while
    the caller stitches, measures and writes this one (the model's kernels release the GIL)."""
    workers = DETECT_AHEAD if getattr(detector, "crop_sized", False) else 1
    with ThreadPoolExecutor(workers, thread_name_prefix="detect") as pool:
        ahead: deque = deque()
        try:
            for tile in tiles:
                ahead.append(pool.submit(detect_file_tile, path, channel, prep, tile, detector))
                if len(ahead) > workers:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()
        finally:
            for future in ahead:
                future.cancel()


def segment_large(path: str | os.PathLike, name: str, labels_path: str | os.PathLike,
                  normalization: str | None,
                  detect_tiles: Callable[[str, int | None, Preparation, list[Tile]],
                                         Iterable[list[Found]]],
                  *, channel: int | None = None, tile: int = DEFAULT_TILE,
                  overlap: int | None = DEFAULT_OVERLAP,
                  progress: bool = False) -> pd.DataFrame:
    """Segment one lazily readable image into the label TIFF ``labels_path``; its table.

    ``detect_tiles(path, channel, prep, tiles)`` yields each tile's :class:`Found` nuclei in
    tile order (:func:`serial_tiles` here; Dask workers in :mod:`nucleus.inference.parallel`).
    ``overlap`` None: from the nuclei ``detect_tiles`` finds in the tile at the image's centre,
    detected first (:func:`nucleus.inference.tiling.auto_plan`).
    """
    path = str(path)
    image = cached_open(path, channel)
    prep = plan_preparation(image, normalization)
    known = None
    if overlap is None:
        def pilot(t: Tile) -> tuple[list[Found], list[Instance]]:
            (found,) = list(detect_tiles(path, channel, prep, [t]))
            return found, [f.instance for f in found]
        tiles, overlap, known = auto_plan(image.shape, tile, pilot)
    else:
        tiles = plan_tiles(image.shape, tile, overlap)
    store = LabelStore(Path(labels_path), image.shape)
    try:
        found = with_known(tiles, known, lambda rest: detect_tiles(path, channel, prep, rest))
        bar = tqdm(found, total=len(tiles),
                   desc=f"tiles (overlap {overlap})",
                   unit="tile", leave=False, disable=not progress)
        count, table = stitch_found(image.shape, zip(tiles, bar), store.write_rows, name)
    except BaseException:
        store.discard()
        raise
    store.close(count)
    return table


def is_large(path: str | os.PathLike, channel: int | None = None,
             large_pixels: int | None = None) -> bool:
    """Whether the file is segmented window by window: a zarr store, or a TIFF of one plane
    with at least ``large_pixels`` pixels (default :data:`nucleus.formats.lazy_io.LAZY_PIXELS`,
    read when called)."""
    image = open_lazy(path, channel)
    if image is None:
        return False
    image.close()
    return (Path(path).suffix.lower() == lazy_io.ZARR_SUFFIX
            or image.pixels >= (lazy_io.LAZY_PIXELS if large_pixels is None else large_pixels))


def segment_large_here(path: str | os.PathLike, name: str, labels_path: str | os.PathLike,
                       detector: Detector, *, channel: int | None = None,
                       tile: int | None = None,
                       overlap: int | None = DEFAULT_OVERLAP,
                       progress: bool = False) -> pd.DataFrame:
    """:func:`segment_large` with every tile detected in this process."""
    def detect_tiles(path, channel, prep, tiles):
        return serial_tiles(path, channel, prep, tiles, detector)

    return segment_large(path, name, labels_path, detector.normalization, detect_tiles,
                         channel=channel, tile=tile or tile_for(detector), overlap=overlap,
                         progress=progress)
