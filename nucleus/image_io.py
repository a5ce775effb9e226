"""Read any microscope image file into one plane the detectors take.

Microscopes write 8-, 16- and 32-bit TIFFs with several channels or pages; cameras and web
tools write PNG, JPEG and BMP. :func:`read_image` turns each into a grey plane (one channel)
or an RGB image in the file's own data type, so that intensity measurements keep the file's
units; :func:`to_uint8_rgb` then makes the uint8 RGB the models were trained on.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image

from nucleus.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
STRETCH_PERCENTILES = (0.1, 99.9)
"""Grey levels of deep images mapped to 0 and 255: wide enough that the models' own stretch
(0.5-99.5th percentiles, ``IMAGE_NORMALIZATION = "stretch"``) still finds every level it uses,
narrow enough that a few hot pixels do not push the nuclei into a handful of dark levels."""
_SAMPLE_PIXELS = 4_000_000
"""Percentiles of bigger images are measured on a regular subsample of about this many pixels."""


def read_image(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """One image file as [H, W] (grey, or the ``channel``-th channel or page) or [H, W, 3] (RGB).

    The data type is the file's (uint8, uint16, uint32, float32 ...). An RGBA image loses its
    alpha, a grey + alpha one its alpha. An image with channels other than RGB (a fluorescence
    TIFF with a DAPI channel, a multi-page TIFF with one channel a page) needs ``channel``.
    Raises InputError naming the file and the problem.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image file")
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    if path.suffix.lower() in TIFF_SUFFIXES:
        array, axes = _read_tiff(path)
    else:
        array, axes = _read_pil(path)
    return _one_plane(path, array, axes, channel)


def _read_tiff(path: Path) -> tuple[np.ndarray, str]:
    """The first image series of a TIFF and its axes (tifffile's letters: Y, X, C, S, Z ...)."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise InputError(f"{path}: TIFF holds no image")
            series = tif.series[0]
            axes = series.axes
            if "S" in axes and series.keyframe.photometric.name not in ("RGB", "YCBCR"):
                axes = axes.replace("S", "C")   # samples that are channels, not colours
            return series.asarray(), axes
    except InputError:
        raise
    except Exception as e:  # tifffile raises TiffFileError, ValueError, KeyError ... for bad files
        raise InputError(f"{path}: cannot read TIFF ({type(e).__name__}: {e})") from e


def read_png(path: str | os.PathLike) -> np.ndarray:
    """Decode any image file Pillow reads (PNG, JPEG, BMP ...) into an array.

    Palette images become RGB(A), exotic modes RGB. Raises InputError naming the file and the
    problem, so that one bad file in a data set says which it is.
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise InputError(f"{path}: empty file (0 bytes)")
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode not in ("1", "L", "LA", "RGB", "RGBA", "I", "I;16", "I;16B", "F"):
                im = im.convert("RGB")
            return np.asarray(im)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... for bad files
        raise InputError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e


def _read_pil(path: Path) -> tuple[np.ndarray, str]:
    array = read_png(path)
    return array, "YX" if array.ndim == 2 else "YXS"


def _one_plane(path: Path, array: np.ndarray, axes: str, channel: int | None) -> np.ndarray:
    if "Y" not in axes or "X" not in axes or len(axes) != array.ndim:
        raise InputError(f"{path}: no 2-D image in it (axes {axes!r}, shape {array.shape})")
    # Axes of length one say nothing; drop them.
    keep = [i for i, a in enumerate(axes) if a in "YX" or array.shape[i] > 1]
    array = array.reshape([array.shape[i] for i in keep])
    axes = "".join(axes[i] for i in keep)
    extra = [a for a in axes if a not in "YX"]
    if len(extra) > 1:
        raise InputError(f"{path}: a stack of shape {array.shape} (axes {axes}); segment takes "
                         "one 2-D image: save one plane or channel (or a projection) first")
    array = np.moveaxis(array, [axes.index("Y"), axes.index("X")], [0, 1])
    if not extra:
        if channel not in (None, 0):
            raise InputError(f"{path}: --channel {channel}, but the image has one channel")
        return _real(path, array)
    n = array.shape[2]
    kind = {"S": "colour samples", "C": "channels"}.get(extra[0], "pages")
    if channel is not None:
        if not 0 <= channel < n:
            raise InputError(f"{path}: --channel {channel}, but the image has {n} {kind} "
                             f"(0..{n - 1})")
        return _real(path, array[..., channel])
    if extra[0] == "S" and n in (3, 4):
        return _real(path, array[..., :3])   # RGB; alpha dropped
    if extra[0] == "S" and n == 2:
        return _real(path, array[..., 0])    # grey + alpha
    raise InputError(f"{path}: has {n} {kind} (axes {axes}); choose the nuclear stain with "
                     f"--channel N (0..{n - 1})")


def _real(path: Path, array: np.ndarray) -> np.ndarray:
    if np.iscomplexobj(array) or array.dtype.kind not in "biuf":
        raise InputError(f"{path}: pixel type {array.dtype} is not an intensity image")
    return np.ascontiguousarray(array)


def to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a grey or RGB(A) image of any data type (alpha dropped).

    uint8 stays as it is (grey is copied into the three channels). Deeper or floating-point
    images are stretched so that their :data:`STRETCH_PERCENTILES` become 0 and 255, one map
    for all channels: a 16-bit image whose nuclei use grey levels 100-900 of 65535 would
    otherwise be black after a plain division.
    """
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (1, 2):   # grey, grey + alpha
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] == 4:      # RGBA
        image = image[..., :3]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(f"expected a grey [H, W] or RGB(A) [H, W, 3|4] image, got shape "
                         f"{image.shape}")
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.dtype != np.uint8:
        image = _stretch(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return image


def _stretch(image: np.ndarray) -> np.ndarray:
    step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / _SAMPLE_PIXELS)))
    sample = image[::step, ::step].astype(np.float64)
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return np.zeros(image.shape, np.uint8)
    lo, hi = np.percentile(finite, STRETCH_PERCENTILES)
    if hi - lo <= 0:
        hi = lo + 1.0                             # a flat image stays flat (and dark)
    out = (image.astype(np.float32) - np.float32(lo)) * np.float32(255.0 / (hi - lo))
    out = np.nan_to_num(out, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def grey_intensity(image: np.ndarray) -> np.ndarray:
    """The plane intensities are measured on: the image itself, or the mean of R, G and B."""
    image = np.asarray(image)
    return image.mean(axis=-1, dtype=np.float32) if image.ndim == 3 else image


def expand_path(path: str | os.PathLike) -> list[Path]:
    """The image files a command-line PATH names: the file itself, the image files of a folder
    (by suffix, sorted, hidden files skipped, not recursive), or the matches of a glob pattern
    (``**`` for any depth of folders).

    Raises InputError when nothing is found, so that a mistyped path never passes in silence.
    """
    text = str(path)
    p = Path(text)
    if p.is_dir() and p.suffix.lower() == ".zarr":     # a zarr store is one image
        return [p]
    if p.is_dir():
        found = sorted(f for f in p.iterdir()
                       if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                       and not f.name.startswith("."))
        if not found:
            raise InputError(f"{p}: no image files in this folder "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        return found
    if p.exists():
        return [p]
    if glob.has_magic(text):
        found = sorted(Path(m) for m in glob.glob(text, recursive=True)
                       if Path(m).is_file() and Path(m).suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise InputError(f"{text}: no image files match this pattern")
        return found
    raise InputError(f"{p}: file not found")


def unique_names(paths: Iterable[Path]) -> list[str]:
    """An output name per input file: its stem, with ``_2``, ``_3`` ... where stems repeat
    (``a/img.tif`` and ``b/img.tif`` must not overwrite each other's results)."""
    names, taken = [], set()
    for path in paths:
        name, k = path.stem, 1
        while name in taken:
            k += 1
            name = f"{path.stem}_{k}"
        taken.add(name)
        names.append(name)
    return names
