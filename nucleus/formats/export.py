"""Export a labelled dataset as one image plus one label image per image (``export-labels``).

Kaggle's layout keeps one PNG per nucleus (about 30,000 files for the 670 stage-1 training
images); StarDist, Cellpose and :class:`nucleus.dataset.NucleusDataset` also read the compact
layout this module writes, one folder per subset::

    <out>/<subset>/images/<name>.png     the source image file, copied byte for byte
    <out>/<subset>/masks/<name>.png      uint16 label image: 0 background, nuclei 1..N

so ``NucleusDataset().load_nucleus(out, subset)`` gives the same images and masks as the source
did under the same subset name (``train`` and ``val`` keep the fixed split because each is its
own folder).

Choices, and why:

- Images are copied, not decoded and re-encoded, so bit depth, alpha and every pixel value are
  the source's (nothing is normalised); a source that is not PNG keeps its own format and suffix.
- Label values follow the dataset's mask order (Kaggle layout: mask file names, sorted); a pixel
  claimed by several masks goes to the first of them (:meth:`NucleusDataset.load_labels`), and a
  mask whose every pixel is claimed by earlier ones is dropped, so labels are 1..N without gaps.
  Past 65535 nuclei the label image is a uint32 TIFF (``<name>.tif``), PNG having no deeper grey.
- A run is all or nothing: every subset is built in a hidden folder beside its target and moved
  into place only after all images of all subsets were read and written (each file itself with
  :func:`nucleus.formats.io_utils.atomic_write`). Bad input (an unreadable image or mask) ends
  the run with an error naming the file, and the target folders are left as they were.
- An existing ``<out>/<subset>`` is never merged into: the run refuses, or with ``overwrite``
  replaces the whole folder, so no file of an earlier export survives next to the new ones.
"""
from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
from PIL import Image
from tqdm import tqdm

from nucleus.dataset import load_subset
from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_write

IMAGES = "images"
MASKS = "masks"
"""Folder names of the export; ``masks`` is the first of :data:`nucleus.dataset.LABEL_FOLDERS`."""
PNG_MAX_LABEL = 2**16 - 1
_STAGING_PREFIX = ".export-"


@dataclass
class SubsetExport:
    """What one subset's export wrote."""
    subset: str
    folder: Path
    images: int = 0
    nuclei: int = 0
    files: int = 0
    bytes: int = 0
    dropped: int = 0
    """Masks entirely covered by earlier masks, so absent from the label images."""


@dataclass
class ExportSummary:
    """What a whole ``export_labels`` run wrote."""
    out: Path
    subsets: list[SubsetExport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return sum(s.images for s in self.subsets)

    @property
    def nuclei(self) -> int:
        return sum(s.nuclei for s in self.subsets)

    @property
    def files(self) -> int:
        return sum(s.files for s in self.subsets)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.subsets)

    def lines(self) -> list[str]:
        """The command's printed summary: one line per subset, then the totals."""
        out = [f"{s.subset}: {s.images} images, {s.nuclei} nuclei, {s.files} files, "
               f"{s.bytes / 1e6:.1f} MB -> {s.folder}"
               + (f" ({s.dropped} masks wholly covered by others, dropped)" if s.dropped else "")
               for s in self.subsets]
        out.append(f"total: {self.images} images, {self.nuclei} nuclei, {self.files} files, "
                   f"{self.bytes} bytes ({self.bytes / 1e6:.1f} MB) written to {self.out} in "
                   f"{self.seconds:.1f} s")
        return out


def parse_subsets(text: str) -> list[str]:
    """``train,val`` -> ["train", "val"]; empty or repeated names are an error."""
    names = [t.strip() for t in text.split(",")]
    if not all(names):
        raise InputError(f"--subset {text!r}: expected names separated by commas, e.g. train,val")
    if len(set(names)) != len(names):
        raise InputError(f"--subset {text!r}: a subset is named twice")
    return names


def sequential_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels renumbered 1..N in the order of their values (gaps closed), and N.

    uint16 while N fits a 16-bit PNG, uint32 past it.
    """
    present = np.flatnonzero(np.bincount(labels.ravel()))
    present = present[present > 0]
    n = len(present)
    lookup = np.zeros(int(labels.max()) + 1 if labels.size else 1, np.uint32)
    lookup[present] = np.arange(1, n + 1, dtype=np.uint32)
    out = lookup[labels]
    return out.astype(np.uint16 if n <= PNG_MAX_LABEL else np.uint32), n


def write_label_image(path_stem: Path, labels: np.ndarray) -> Path:
    """Write ``labels`` as ``<stem>.png`` (uint16) or, past 65535 nuclei, ``<stem>.tif``
    (uint32), atomically; returns the path written."""
    if labels.dtype == np.uint16:
        path = path_stem.with_name(path_stem.name + ".png")
        with atomic_write(path, "wb") as f:
            Image.fromarray(labels).save(f, format="PNG")
    else:
        path = path_stem.with_name(path_stem.name + ".tif")
        buffer = io.BytesIO()     # tifffile wants a named file; atomic_write's handle has none
        tifffile.imwrite(buffer, labels.astype(np.uint32), compression="zlib")
        with atomic_write(path, "wb") as f:
            f.write(buffer.getvalue())
    return path


def _copy_file(source: str, target: Path) -> None:
    try:
        with open(source, "rb") as src, atomic_write(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except FileNotFoundError:
        raise InputError(f"{source}: file not found") from None


def _is_labelled(info: dict) -> bool:
    return bool(info.get("mask_paths")) or info.get("label_path") is not None


def _export_subset(dataset, subset: str, staging: Path, report: SubsetExport,
                   progress: bool) -> None:
    """Write every image of ``dataset`` and its label image under ``staging``."""
    labelled = any(_is_labelled(info) for info in dataset.image_info)
    (staging / IMAGES).mkdir()
    if labelled:
        (staging / MASKS).mkdir()
    for image_id in tqdm(dataset.image_ids, desc=f"export {subset}", unit="image",
                         disable=not progress):
        info = dataset.image_info[image_id]
        source = info["path"]
        # Decode once so that a truncated or unreadable image fails here, naming the file,
        # rather than in a training run on the other machine.
        dataset.load_image(image_id)
        image_path = staging / IMAGES / f"{info['id']}{Path(source).suffix}"
        _copy_file(source, image_path)
        report.files += 1
        report.bytes += image_path.stat().st_size
        if labelled:
            raw = dataset.load_labels(image_id)
            labels, n = sequential_labels(raw)
            report.dropped += max(0, len(info.get("mask_paths", ())) - n)
            label_path = write_label_image(staging / MASKS / info["id"], labels)
            report.nuclei += n
            report.files += 1
            report.bytes += label_path.stat().st_size
        report.images += 1


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def export_labels(dataset_dir: str | os.PathLike | None, subsets: Sequence[str],
                  out: str | os.PathLike, overwrite: bool = False, limit: int | None = None,
                  progress: bool = True) -> ExportSummary:
    """Write ``subsets`` of the dataset at ``dataset_dir`` (None: the bundled sample) to
    ``out/<subset>/images`` and ``out/<subset>/masks`` (see the module docstring).

    Raises InputError, naming the file, for bad input or an existing ``out/<subset>`` (unless
    ``overwrite``); then no target folder has changed.
    """
    start = time.perf_counter()
    out = Path(out)
    if not subsets:
        raise InputError("no subset to export")
    if limit is not None and limit < 1:
        raise InputError(f"--limit {limit}: expected a positive number of images")
    if len(set(subsets)) != len(subsets):
        raise InputError(f"subsets {', '.join(subsets)}: a subset is named twice")
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    # Every subset is found and checked before anything is written.
    # each label image is read once here: no cache (it would hold them all)
    datasets = {subset: load_subset(dataset_dir, subset, limit, label_cache_size=0)
                for subset in subsets}
    for subset, dataset in datasets.items():
        target = out / subset
        if target.exists() and not target.is_dir():
            raise InputError(f"{target}: exists and is not a folder")
        if target.is_dir() and any(target.iterdir()) and not overwrite:
            raise InputError(f"{target}: already exists (an earlier export?); pass --overwrite "
                             "to replace the whole folder, or choose another --out")
        for info in dataset.image_info:
            if _inside(Path(info["path"]), target):
                raise InputError(f"{target}: holds the images being exported ({info['path']}); "
                                 "choose an --out outside the dataset")
    out.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(out=out)
    staged: dict[str, Path] = {}
    try:
        for subset, dataset in datasets.items():
            staging = Path(tempfile.mkdtemp(dir=out, prefix=f"{_STAGING_PREFIX}{subset}-"))
            staged[subset] = staging
            report = SubsetExport(subset=subset, folder=out / subset)
            _export_subset(dataset, subset, staging, report, progress)
            summary.subsets.append(report)
        for subset, staging in staged.items():
            _move_into_place(staging, out / subset)
        staged.clear()
    finally:
        for staging in staged.values():
            shutil.rmtree(staging, ignore_errors=True)
    summary.seconds = time.perf_counter() - start
    return summary


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` folder to ``target``; an existing target is renamed
    away first and deleted after (the target is missing only between the two renames)."""
    os.chmod(staging, 0o777 & ~_umask())       # mkdtemp made it private (0o700)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{_STAGING_PREFIX}old-"))
        old.rmdir()
        os.rename(target, old)
    os.rename(staging, target)
    if old is not None:
        shutil.rmtree(old)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
