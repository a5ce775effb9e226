"""Read any microscope image file into one plane, and prepare it as the models see it.

Microscopes write 8-, 16- and 32-bit TIFFs with several channels or pages; cameras and web
tools write PNG, JPEG and BMP. :func:`read_image` turns each into a grey plane (one channel)
or an RGB image in the file's own data type, so that intensity measurements keep the file's
units. :func:`prepare_image` then makes what a model takes: the uint8 RGB of
:func:`mrcnn.utils.to_rgb_uint8` (deep images stretched by their percentiles), normalised per
image as the model was trained (:func:`normalize_image`, the configurations'
``IMAGE_NORMALIZATION``). Training, evaluation and every segment path prepare images so.
"""
from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import tifffile
from PIL import Image

from nucleus.errors import InputError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
TIFF_SUFFIXES = (".tif", ".tiff")
NORMALIZATIONS = (None, "stretch")
"""The values of ``IMAGE_NORMALIZATION`` the nucleus configurations know."""


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


def prepare_image(image: np.ndarray, normalization: str | None) -> np.ndarray:
    """uint8 RGB [H, W, 3] of a grey or RGB(A) image of any data type, normalised as a model
    trained with ``IMAGE_NORMALIZATION = normalization`` expects."""
    from mrcnn.utils import to_rgb_uint8   # here: SciPy, scikit-image: 0.25 s on `import nucleus`

    return normalize_image(to_rgb_uint8(image), normalization)


def check_normalization(mode: str | None) -> None:
    """Raise ValueError unless ``mode`` is one of :data:`NORMALIZATIONS`."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown IMAGE_NORMALIZATION {mode!r}: use None or 'stretch'")


def normalize_image(image: np.ndarray, mode: str | None) -> np.ndarray:
    """Per-image intensity normalisation of a uint8 RGB image, before resizing.

    ``None`` returns the image as it is (matterport's behaviour). ``"stretch"`` makes images of
    one kind look alike: an image whose median grey level is above the middle (bright-field,
    stained tissue: dark objects on a light background) is inverted, then the grey levels
    between the 0.5th and 99.5th percentiles are stretched linearly to 0-255 (one map for all
    channels, so the differences between channels survive). Dim fluorescence images and light
    ones then reach the network on the same scale. Big images are measured on every other pixel.
    """
    check_normalization(mode)
    if mode is None:
        return image
    image = np.asarray(image)
    big = image.shape[0] * image.shape[1] > 65536
    sample = (image[::2, ::2] if big else image).mean(axis=-1)
    invert = bool(np.median(sample) > 127.5)
    if invert:
        sample = 255.0 - sample
    lo, hi = np.percentile(sample, (0.5, 99.5))
    return apply_stretch(image, invert, lo, hi)


def apply_stretch(image: np.ndarray, invert: bool, lo: float, hi: float) -> np.ndarray:
    """The ``"stretch"`` map of a uint8 image (RGB or grey) whose (inverted) grey levels ``lo``
    and ``hi`` go to 0 and 255; apart from :func:`normalize_image`, which measures them, so that
    an image measured once can be mapped tile by tile.

    The map sends each of the 256 levels to one level, so it is computed once on the levels
    (:func:`stretch_table`) and looked up: a tenth of the time of the arithmetic on every
    pixel of a big tile, with the same result."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        return _stretch_pixels(image, invert, lo, hi)
    return stretch_table(invert, lo, hi)[image]


def stretch_table(invert: bool, lo: float, hi: float) -> np.ndarray:
    """The ``"stretch"`` map of :func:`apply_stretch` for each uint8 level, [256] uint8."""
    return _stretch_pixels(np.arange(256, dtype=np.uint8), invert, lo, hi)


def _stretch_pixels(image: np.ndarray, invert: bool, lo: float, hi: float) -> np.ndarray:
    """The map itself, pixel by pixel (float32, then rounded to uint8)."""
    out = image.astype(np.float32)
    if invert:
        out = 255.0 - out
    lo, hi = np.float64(lo), np.float64(hi)
    if hi - lo < 1.0:  # flat image: nothing to stretch
        return np.clip(out, 0, 255).astype(np.uint8)
    out = (out - lo) * (255.0 / (hi - lo))
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
