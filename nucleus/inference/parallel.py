"""Spread ``nucleus segment`` over Dask workers: the images of a folder, and the tiles of a large
image, each one task; the model is loaded once per worker process.

Tasks carry file paths and tile windows, never pixels: each worker reads what it needs (large
images window by window, :mod:`nucleus.formats.lazy_io`) and sends back results: a small image's
label image, overlay PNG and table; a tile's nuclei. Only this process (the client) writes files,
each once, atomically, from those results, through the serial run's
:class:`nucleus.formats.segment_outputs.OutputFolder`; so a worker that dies mid-run has its tasks
redone by Dask's scheduler and nothing is lost or written twice. Tiles are stitched here in tile
order by :class:`nucleus.inference.tiling.BandStitcher`, the rule the serial run uses, so the
result equals it.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from dask.base import tokenize
from distributed import Client, LocalCluster, as_completed
from tqdm import tqdm

from nucleus.errors import InputError
from nucleus.formats.image_io import unique_names
from nucleus.formats.segment_outputs import OutputFolder, Summary
from nucleus.inference.detectors import Detector, returns_crop_sized
from nucleus.inference.large import Found, detect_file_tile, is_large, segment_large
from nucleus.inference.nucleus_model import NucleusModel, model_of
from nucleus.inference.tiling import Tile, tile_for
from nucleus.segment import segment_file

if TYPE_CHECKING:
    from nucleus.formats.lazy_io import Preparation


@dataclass(frozen=True)
class DetectorSpec:
    """How a worker builds the detector: ``factory`` ("module:function") called with
    ``kwargs``. The default is :func:`nucleus.inference.nucleus_model.make_detector`; a worker
    keeps what it built for every later task with the same spec. The client asks the spec what
    it needs to plan (:attr:`crop_sized`, :attr:`normalization`) from one read of the weights
    file (:attr:`model`)."""
    factory: str = "nucleus.inference.nucleus_model:make_detector"
    kwargs: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> str:
        return tokenize(self.factory, self.kwargs)

    def build(self) -> Detector:
        module, _, name = self.factory.partition(":")
        return getattr(importlib.import_module(module), name)(**self.kwargs)

    @functools.cached_property
    def model(self) -> NucleusModel:
        """The model the default factory's keywords name (:func:`model_of`): the weights file's
        attributes are read once, here in the client, for the tile side and the normalisation;
        no network is built. Left out when the spec travels to a worker (:meth:`__getstate__`)."""
        if self.factory != DetectorSpec.factory:
            raise ValueError(f"{self.factory}: only the default factory names a model")
        return model_of(**self.kwargs)

    def __getstate__(self) -> dict:
        """The spec without the client's :attr:`model`: a worker builds its own detector."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}

    @property
    def crop_sized(self) -> bool:
        """Whether the workers' detector returns crop-sized masks (its default tile is then
        :data:`nucleus.inference.tiling.DEFAULT_TILE`): from the model's configuration, no
        network built; where TTA, a vote over scales or a scale other than 1 settle it, without
        reading the weights file."""
        if self.factory != DetectorSpec.factory:
            return worker_detector(self).crop_sized
        kwargs = self.kwargs
        tta, scale, scales = (kwargs.get("tta", False), kwargs.get("scale"),
                              kwargs.get("scales"))
        if kwargs.get("model", "mrcnn") == "fcn" or not returns_crop_sized(
                True, tta, 1.0 if scale is None else scale, scales):
            return False
        return self.model.crop_sized(tta, scale, scales, kwargs.get("tiled", False))

    @property
    def normalization(self) -> str | None:
        """The detector's intensity normalisation, which the client needs to plan a large
        image: the model's (:attr:`model`), no network built."""
        if self.factory != DetectorSpec.factory:
            return worker_detector(self).normalization
        return self.model.normalization


_DETECTORS: dict[str, Any] = {}
_BUILDS: list[str] = []          # every build in this process, to show each happens once
_LOCK = threading.Lock()


def worker_detector(spec: DetectorSpec) -> Detector:
    """The detector of ``spec``, built once per process (a Dask worker loads its model once)."""
    key = spec.key
    with _LOCK:
        if key not in _DETECTORS:
            _DETECTORS[key] = spec.build()
            _BUILDS.append(key)
        return _DETECTORS[key]


def detector_builds() -> dict[str, Any]:
    """This process's id and the detectors it built (``client.run`` it on the workers)."""
    return {"pid": os.getpid(), "builds": list(_BUILDS)}


# ----------------------------------------------------------------------------- tasks
def segment_file_task(path: str, name: str, spec: DetectorSpec, channel: int | None,
                      tile: int, overlap: int | None) -> dict:
    """One image on a worker: its labels, overlay PNG bytes and table
    (:func:`nucleus.segment.segment_file`), or its error."""
    try:
        labels, table, png = segment_file(path, name, worker_detector(spec), channel=channel,
                                          tile=tile, overlap=overlap)
    except InputError as e:
        return {"error": str(e)}
    return {"labels": labels, "overlay": png, "table": table}


def tile_task(path: str, channel: int | None, prep: Preparation, spec: DetectorSpec,
              tile: Tile) -> list[Found]:
    """One tile of a large image on a worker: the nuclei it owns."""
    return detect_file_tile(path, channel, prep, tile, worker_detector(spec))


def dask_tiles(client: Client, spec: DetectorSpec):
    """A ``detect_tiles`` for :func:`nucleus.inference.large.segment_large` that maps the tiles over
    the workers and yields their results in tile order."""
    def detect_tiles(path: str, channel: int | None, prep: Preparation,
                     tiles: Sequence[Tile]) -> Iterator[list[Found]]:
        # keyed by the box too: a pilot tile planned again (auto overlap) is another task
        keys = [f"tile-{Path(path).name}-{t.index}-" + "-".join(map(str, t.box)) for t in tiles]
        futures = client.map(functools.partial(tile_task, path, channel, prep, spec), tiles,
                             key=keys)
        try:
            for k in range(len(futures)):
                yield futures[k].result()
                futures[k] = None              # let the worker forget it
        finally:
            client.cancel([f for f in futures if f is not None])
    return detect_tiles


# ----------------------------------------------------------------------------- clusters
@contextlib.contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None,
                timeout: str = "30s") -> Iterator[Client]:
    """A client of the running scheduler at ``scheduler`` (waiting up to ``timeout`` for it),
    or of a local cluster of ``workers`` processes (one thread each; TensorFlow's threads
    shared out among them)."""
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except OSError as e:
            raise InputError(f"--scheduler {scheduler}: cannot reach a Dask scheduler "
                             f"({e})") from None
        with client:
            yield client
        return
    if not workers or workers < 1:
        raise InputError(f"--workers {workers}: must be 1 or more")
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    env = {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
           "OMP_NUM_THREADS": threads, "TF_CPP_MIN_LOG_LEVEL": "2"}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                      dashboard_address=":0", silence_logs=logging.ERROR, env=env) as cluster, \
            Client(cluster) as client:
        yield client


# ----------------------------------------------------------------------------- files
def segment_files_dask(files: Sequence[Path], out_dir: str | os.PathLike, spec: DetectorSpec,
                       client: Client, *, channel: int | None = None,
                       tile: int | None = None,
                       overlap: int | None = None, large_pixels: int | None = None,
                       progress: bool = True, on_error: Callable[[str], None] = print,
                       written: list | None = None, rois: bool = False,
                       geojson: bool = False) -> Summary:
    """:func:`nucleus.segment.segment_files` on Dask workers, with the same outputs, written
    here by the same :class:`nucleus.formats.segment_outputs.OutputFolder` (the outline files
    of ``rois`` / ``geojson`` from the label images).

    Small images are one task each; images of at least ``large_pixels`` pixels (default
    :data:`nucleus.formats.lazy_io.LAZY_PIXELS`) that can be read lazily are one task per tile.
    ``tile`` None: the detector's own (:func:`nucleus.inference.tiling.tile_for`).
    ``written`` collects each path written (a test shows none is written twice).
    """
    tile = tile or tile_for(spec)
    with OutputFolder(out_dir, rois=rois, geojson=geojson, on_error=on_error,
                      written=written) as folder:
        small, large = [], []
        for i, (path, name) in enumerate(zip(files, unique_names(files))):
            try:
                (large if is_large(path, channel, large_pixels) else small).append((i, path,
                                                                                    name))
            except InputError as e:
                folder.fail(path, str(e))
        futures = {client.submit(segment_file_task, str(path), name, spec, channel, tile,
                                 overlap, key=f"segment-{i}-{name}"): (i, path, name)
                   for i, path, name in small}
        bar = tqdm(total=len(small) + len(large), desc="segment", unit="image",
                   disable=not progress)
        for future in as_completed(futures):
            i, path, name = futures.pop(future)
            result = future.result()
            future.release()
            bar.update()
            if "error" in result:
                folder.fail(path, result["error"])
                continue
            folder.add_image(i, name, result["labels"], result["table"], result["overlay"])
        if large:
            normalization = spec.normalization
        for i, path, name in large:
            bar.set_postfix_str(Path(path).name)
            table = segment_large(path, name, folder.labels_path(name), normalization,
                                  dask_tiles(client, spec), channel=channel, tile=tile,
                                  overlap=overlap, progress=progress)
            folder.add_large(i, name, table)
            bar.update()
    return folder.summary
