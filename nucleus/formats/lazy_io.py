"""Images larger than memory: read window by window, prepared window by window.

A scanned tissue section can be 50,000 pixels wide (7.5 GB as RGB): it is never read whole.
:func:`open_lazy` opens a TIFF through tifffile's zarr view (a tiled TIFF then reads only the
tiles a window touches) or a zarr store, and :class:`LazyImage` hands out windows of the one
plane :func:`nucleus.formats.image_io.read_image` would have made (same channel choice, alpha
dropped).

A detector prepares a whole image at once (:func:`nucleus.formats.image_io.prepare_image`: a deep
image is stretched by its percentiles, then ``IMAGE_NORMALIZATION`` inverts and stretches it by
the percentiles of its grey levels). :func:`plan_preparation` measures those numbers once by
streaming over the image in bands (a histogram of the 766 possible grey sums of a uint8 RGB
image gives the exact percentiles NumPy would compute on the whole), and
:func:`prepare_window` applies them to any window, so the tiles of a lazily read image are
exactly the tiles of the prepared whole image.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import zarr

from mrcnn.utils import deep_range, deep_sample_step, scale_to_uint8
from nucleus.errors import InputError
from nucleus.formats.image_io import TIFF_SUFFIXES, apply_stretch, check_normalization

LAZY_PIXELS = 4096 * 4096
"""Images with at least this many pixels (a 4096 x 4096 square) that can be read lazily (TIFF,
zarr) are segmented window by window (:mod:`nucleus.inference.large`) rather than read whole."""
ZARR_SUFFIX = ".zarr"
_BAND = 512
"""Rows read at a time while measuring an image's intensity (even, so that every-other-pixel
samples line up with the whole image's)."""


class LazyImage:
    """One 2-D plane of a TIFF or zarr file: ``shape`` (H, W) or (H, W, 3), ``dtype``, and
    :meth:`window` to read part of it."""

    def __init__(self, path: Path, array: Any, index: tuple, move: list[int], shape: tuple,
                 dtype: np.dtype, handle: Any = None):
        self.path = path
        self._array = array          # zarr array of the file's full dimensions
        self._index = index          # per file axis: "Y", "X", an int, or a slice
        self._move = move            # file axes order of the result (Y, X, [samples])
        self.shape = shape
        self.dtype = dtype
        self._handle = handle

    @property
    def pixels(self) -> int:
        return int(self.shape[0]) * int(self.shape[1])

    def window(self, y0: int, x0: int, y1: int, x1: int, step: int = 1) -> np.ndarray:
        """Rows y0..y1 and columns x0..x1 (ends exclusive), every ``step``-th pixel."""
        index = tuple(slice(y0, y1, step) if i == "Y" else slice(x0, x1, step) if i == "X"
                      else i for i in self._index)
        data = np.asarray(self._array[index])
        return np.ascontiguousarray(np.transpose(data, self._move)) if self._move else data

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        ys, xs = key[:2]
        return self.window(ys.start or 0, xs.start or 0, self.shape[0] if ys.stop is None
                           else ys.stop, self.shape[1] if xs.stop is None else xs.stop)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def lazily_readable(path: str | os.PathLike) -> bool:
    """Whether :func:`open_lazy` can try the file (a TIFF or a zarr store)."""
    p = Path(path)
    return p.suffix.lower() in TIFF_SUFFIXES or (p.suffix.lower() == ZARR_SUFFIX and p.is_dir())


def open_lazy(path: str | os.PathLike, channel: int | None = None) -> LazyImage | None:
    """The plane :func:`~nucleus.formats.image_io.read_image` would return, unread; ``None`` when
    the file has a layout only ``read_image`` handles (and explains, when it is wrong), or is not
    a TIFF or zarr store. A wrong ``channel`` raises InputError naming the file."""
    path = Path(path)
    if not lazily_readable(path):
        return None
    handle = None
    try:
        if path.suffix.lower() == ZARR_SUFFIX:
            array = zarr.open(str(path), mode="r")
            if isinstance(array, zarr.Group):
                arrays = sorted(array.arrays())
                if not arrays:
                    raise InputError(f"{path}: zarr store holds no array")
                array = arrays[0][1]
            ndim = array.ndim
            axes = "YX" if ndim == 2 else "YXS" if ndim == 3 and array.shape[2] <= 4 else None
            if axes is None:
                return None
        else:
            handle = tifffile.TiffFile(path)
            if not handle.series:
                handle.close()
                return None
            series = handle.series[0]
            axes = series.axes
            if "S" in axes and series.keyframe.photometric.name not in ("RGB", "YCBCR"):
                axes = axes.replace("S", "C")
            array = zarr.open(series.aszarr(level=0), mode="r")
            if isinstance(array, zarr.Group):
                array = array["0"]
    except InputError:
        raise
    except Exception:       # not readable this way: read_image says what is wrong
        if handle is not None:
            handle.close()
        return None
    plan = _plan_axes(path, axes, tuple(array.shape), channel)
    if plan is None or np.dtype(array.dtype).kind not in "biuf":
        if handle is not None:
            handle.close()
        return None
    index, move, shape = plan
    return LazyImage(path, array, index, move, shape, np.dtype(array.dtype), handle)


def _plan_axes(path: Path, axes: str, shape: tuple, channel: int | None):
    """How to index the file's array for :func:`read_image`'s plane: (index, axis order,
    shape), or None for layouts left to ``read_image``."""
    if "Y" not in axes or "X" not in axes or len(axes) != len(shape):
        return None
    extra = [i for i, a in enumerate(axes) if a not in "YX" and shape[i] > 1]
    if len(extra) > 1:
        return None
    index: list = ["Y" if a == "Y" else "X" if a == "X" else 0 for a in axes]
    kept = [axes.index("Y"), axes.index("X")]
    height, width = shape[kept[0]], shape[kept[1]]
    if not extra:
        if channel not in (None, 0):
            raise InputError(f"{path}: --channel {channel}, but the image has one channel")
        return tuple(index), _order(kept, axes), (height, width)
    i = extra[0]
    n = shape[i]
    if channel is not None:
        if not 0 <= channel < n:
            kind = {"S": "colour samples", "C": "channels"}.get(axes[i], "pages")
            raise InputError(f"{path}: --channel {channel}, but the image has {n} {kind} "
                             f"(0..{n - 1})")
        index[i] = channel
        return tuple(index), _order(kept, axes), (height, width)
    if axes[i] == "S" and n in (3, 4):
        index[i] = slice(0, 3)
        return tuple(index), _order(kept + [i], axes), (height, width, 3)
    if axes[i] == "S" and n == 2:
        index[i] = 0
        return tuple(index), _order(kept, axes), (height, width)
    return None


def _order(kept: list[int], axes: str) -> list[int]:
    """Transpose order that brings the kept axes (Y, X, samples) into that order once the
    integer-indexed axes are gone; [] when they already are."""
    remaining = sorted(kept)
    order = [remaining.index(k) for k in kept]
    return [] if order == sorted(order) else order


# ----------------------------------------------------------------------------- preparation
@dataclass(frozen=True)
class Preparation:
    """What :meth:`Detector.prepare` does to one whole image, as numbers: the percentile
    ``stretch`` (lo, hi) of a deep image (None for uint8), and the normalisation (``invert``
    and ``lo``/``hi`` of the grey levels, :func:`nucleus.formats.image_io.apply_stretch`)."""
    stretch: tuple[float, float] | None
    zeros: bool = False                    # a deep image with no finite value: all black
    normalize: bool = False
    invert: bool = False
    lo: float = 0.0
    hi: float = 0.0


def _uint8_plane(window: np.ndarray, prep: Preparation) -> np.ndarray:
    """A window as uint8 with the whole image's stretch, grey left grey (2-D)."""
    if window.dtype == bool:
        window = window.astype(np.uint8) * 255
    if window.dtype != np.uint8:
        window = (np.zeros(window.shape, np.uint8) if prep.zeros
                  else scale_to_uint8(window, *prep.stretch))
    return window


def prepare_window(window: np.ndarray, prep: Preparation) -> np.ndarray:
    """The detector's prepared image (uint8 RGB) over ``window``, a window of the raw plane:
    equal to the same window of ``detector.prepare(whole image)``
    (:func:`mrcnn.utils.to_rgb_uint8`, then the normalisation). A grey window is mapped before
    it is made RGB: the map is per level, so a third of the work gives the same pixels."""
    image = _uint8_plane(window, prep)
    if prep.normalize:
        image = apply_stretch(image, prep.invert, prep.lo, prep.hi)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


def plan_preparation(image: LazyImage | np.ndarray, normalization: str | None) -> Preparation:
    """Measure what ``Detector(normalization=...).prepare`` would do to the whole image,
    reading it in bands (memory: one band and a subsample of at most 4 million pixels)."""
    check_normalization(normalization)
    window = image.window if isinstance(image, LazyImage) else _array_window(image)
    height, width = int(image.shape[0]), int(image.shape[1])
    dtype = np.dtype(image.dtype)
    stretch, zeros = None, False
    if dtype != np.uint8 and dtype != bool:
        step = deep_sample_step(height, width)
        stretch = deep_range(window(0, 0, height, width, step))
        zeros = stretch is None
    prep = Preparation(stretch, zeros)
    if normalization is None:
        return prep
    # image_io.normalize_image: grey = mean of R, G, B over every other pixel of big images.
    step = 2 if height * width > 65536 else 1
    counts = np.zeros(766, np.int64)              # sums of three uint8 channels: 0..765
    for y0 in range(0, height, _BAND):
        plane = _uint8_plane(window(y0, 0, min(y0 + _BAND, height), width), prep)
        plane = plane[::step, ::step]
        # the sum of R, G and B of the RGB image a grey one becomes is three times its level
        sums = (plane.astype(np.int64) * 3 if plane.ndim == 2
                else plane.sum(axis=-1, dtype=np.int64))
        counts += np.bincount(sums.ravel(), minlength=766)
    grey = np.arange(766, dtype=np.float64) / 3   # what ndarray.mean(axis=-1) gives
    median = _quantile_from_counts(grey, counts, 0.5, median=True)
    invert = bool(median > 127.5)
    if invert:
        grey = 255.0 - grey
    lo = _quantile_from_counts(grey, counts, np.true_divide(0.5, 100))
    hi = _quantile_from_counts(grey, counts, np.true_divide(99.5, 100))
    return Preparation(stretch, zeros, True, invert, float(lo), float(hi))


def _array_window(array: np.ndarray):
    def window(y0, x0, y1, x1, step=1):
        return np.asarray(array[y0:y1:step, x0:x1:step])
    return window


def _quantile_from_counts(values: np.ndarray, counts: np.ndarray, q: float,
                          median: bool = False) -> np.float64:
    """``np.percentile`` (method "linear") or ``np.median`` of the multiset that holds
    ``counts[i]`` copies of ``values[i]``, with NumPy's own arithmetic."""
    order = np.argsort(values, kind="stable")
    sorted_values, cum = values[order], np.cumsum(counts[order])
    n = int(cum[-1])

    def at(i: int) -> np.float64:
        return sorted_values[int(np.searchsorted(cum, i, side="right"))]

    if median:
        if n % 2:
            return at(n // 2)
        return np.mean([at(n // 2 - 1), at(n // 2)])
    virtual = (n - 1) * np.float64(q)
    below = int(np.floor(virtual))
    a, b = at(below), at(min(below + 1, n - 1))
    t = virtual - np.floor(virtual)
    diff = b - a
    return b - diff * (1 - t) if t >= 0.5 else a + diff * t


def cached_open(path: str | os.PathLike, channel: int | None) -> LazyImage:
    """:func:`open_lazy` kept open for the next window of the same file (a few per process;
    a file rewritten since is opened again)."""
    stat = os.stat(path)
    return _cached_open(str(path), channel, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _cached_open(path: str, channel: int | None, mtime_ns: int, size: int) -> LazyImage:
    image = open_lazy(path, channel)
    if image is None:
        raise InputError(f"{path}: cannot be read window by window (a TIFF or zarr store of "
                         "one 2-D plane is needed)")
    return image
