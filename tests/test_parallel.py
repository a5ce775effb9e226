"""parallel (nucleus/inference/parallel.py): segment on Dask workers equals the serial run, loads
the model once per worker, and loses and rewrites nothing when a worker process is killed mid-run.

A real two-process LocalCluster; the detector is the synthetic threshold one (built by import
path in the workers, slowed down so that there is a run to kill a worker in)."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleus.errors import InputError
from nucleus.formats import lazy_io
from nucleus.inference.parallel import (DetectorSpec, dask_client, detector_builds,
                                        segment_files_dask, worker_detector)
from nucleus.inference.tiling import DEFAULT_TILE, tile_for
from nucleus.sample_data import make_threshold_detector, sample_mosaic
from nucleus.segment import TABLE_NAME, segment_files

LARGE = 1_000_000          # pixels from which an image is cut into tile tasks, in these tests
SPEC = DetectorSpec("nucleus.sample_data:make_threshold_detector", {"delay": 0.25})


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Eight small images, one truncated file and one 'large' tiled TIFF of 16 tiles."""
    folder = tmp_path_factory.mktemp("plate")
    mosaic = sample_mosaic(1800)[..., 0]
    files = []
    for k in range(8):
        path = folder / f"well_{k}.tif"
        tifffile.imwrite(path, mosaic[100 * k:100 * k + 300, 150 * k:150 * k + 400])
        files.append(path)
    bad = folder / "broken.tif"
    tifffile.imwrite(bad, mosaic[:64, :64])
    bad.write_bytes(bad.read_bytes()[:100])
    files.insert(3, bad)
    big = folder / "section.tif"
    tifffile.imwrite(big, mosaic[:1500, :1700], tile=(256, 256), compression="zlib")
    files.append(big)
    return files


@pytest.fixture(scope="module")
def serial(images, tmp_path_factory):
    """The serial run, with the same large-image threshold."""
    out = tmp_path_factory.mktemp("serial")
    errors = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lazy_io, "LAZY_PIXELS", LARGE)
        summary = segment_files(images, out, make_threshold_detector(), progress=False,
                                on_error=errors.append)
    return out, summary, errors


def two_workers():
    """A local cluster of two single-threaded worker processes."""
    from distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                        dashboard_address=":0")


@pytest.fixture(scope="module")
def cluster():
    with two_workers() as cluster:
        yield cluster


def assert_same_outputs(out: Path, reference: Path) -> None:
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(p.name for p in reference.iterdir())     # no temporary files left
    for name in names:
        if name.endswith(".tif"):
            a, b = tifffile.imread(out / name), tifffile.imread(reference / name)
            assert a.dtype == b.dtype, name
            np.testing.assert_array_equal(a, b, err_msg=name)
        elif name.endswith(".png"):
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    pd.testing.assert_frame_equal(pd.read_csv(out / TABLE_NAME),
                                  pd.read_csv(reference / TABLE_NAME))


def run_and_kill(cluster, images, out, when) -> tuple[dict, list]:
    """Run on the cluster in a thread; kill one worker process once ``when(written)``."""
    written, errors, result = [], [], {}

    def run():
        with dask_client(scheduler=cluster.scheduler_address) as client:
            result["summary"] = segment_files_dask(
                images, out, SPEC, client, large_pixels=LARGE, progress=False,
                on_error=errors.append, written=written)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not when(written) and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert thread.is_alive(), "the run ended before a worker could be killed"
    with dask_client(scheduler=cluster.scheduler_address) as client:
        pids = client.run(os.getpid)
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    thread.join(timeout=180)
    assert not thread.is_alive()
    result["errors"] = errors
    result["victim"] = victim
    return result, written


def test_a_worker_killed_among_images_loses_and_rewrites_nothing(cluster, images, serial,
                                                                 tmp_path):
    reference, serial_summary, serial_errors = serial
    result, written = run_and_kill(cluster, images, tmp_path,
                                   lambda w: len(w) >= 4)    # two images written
    summary = result["summary"]
    assert (summary.images, summary.nuclei) == (serial_summary.images, serial_summary.nuclei)
    assert summary.images == 9 and summary.failed == [str(images[3])]
    assert result["errors"] == serial_errors and "broken.tif" in serial_errors[0]
    assert len(written) == len(set(written)) == 8 * 2 + 1 + 1     # each file once
    assert_same_outputs(tmp_path, reference)
    with dask_client(scheduler=cluster.scheduler_address) as client:
        assert result["victim"] not in client.run(os.getpid).values()


def test_a_worker_killed_among_the_tiles_of_a_large_image(cluster, images, serial, tmp_path):
    reference = serial[0]
    assert not (reference / "section_overlay.png").exists()    # the large-image route
    result, written = run_and_kill(cluster, images, tmp_path,
                                   lambda w: len(w) >= 16)   # small ones done: tiles running
    assert result["summary"].images == 9
    assert len(written) == len(set(written))
    assert_same_outputs(tmp_path, reference)


def test_each_worker_builds_the_detector_once(images, tmp_path):
    # A cluster of its own: fresh workers without restarting the shared one (a restart after
    # the kill tests once waited 300 s for a worker that never came back, on a loaded machine).
    with two_workers() as cluster, dask_client(scheduler=cluster.scheduler_address) as client:
        segment_files_dask(images, tmp_path, DetectorSpec("nucleus.sample_data:make_threshold_detector"),
                           client, large_pixels=LARGE, progress=False, on_error=lambda m: None)
        builds = client.run(detector_builds)
    assert len({b["pid"] for b in builds.values()}) == 2
    used = [b["builds"] for b in builds.values() if b["builds"]]
    assert used and all(len(b) == 1 for b in used), builds   # 17 tasks, at most 1 build each


def test_a_local_cluster_of_n_workers(images, serial, tmp_path):
    with dask_client(workers=1) as client:
        assert len(client.scheduler_info()["workers"]) == 1
        segment_files_dask(images, tmp_path, DetectorSpec("nucleus.sample_data:make_threshold_detector"),
                           client, large_pixels=LARGE, progress=False, on_error=lambda m: None)
    assert_same_outputs(tmp_path, serial[0])


def test_bad_cluster_requests_are_input_errors():
    with pytest.raises(InputError, match="--workers 0"):
        with dask_client(workers=0):
            pass
    with pytest.raises(InputError, match="--scheduler tcp://127.0.0.1:9"):
        with dask_client(scheduler="tcp://127.0.0.1:9", timeout="1s"):
            pass


def test_the_detector_is_kept_per_spec_in_this_process():
    spec = DetectorSpec("nucleus.sample_data:make_threshold_detector", {"level": 100})
    first = worker_detector(spec)
    assert worker_detector(DetectorSpec("nucleus.sample_data:make_threshold_detector",
                                        {"level": 100})) is first
    assert worker_detector(DetectorSpec("nucleus.sample_data:make_threshold_detector",
                                        {"level": 101})) is not first
    assert detector_builds()["builds"].count(spec.key) == 1


def test_a_spec_knows_its_detectors_default_tile_without_building_it():
    from nucleus.inference.parallel import _DETECTORS

    built = dict(_DETECTORS)
    # segment's specs are tiled (native resolution); a whole-image one runs "probe"
    assert DetectorSpec(kwargs={"model": "mrcnn", "weights": None, "tiled": True}).crop_sized
    assert not DetectorSpec(kwargs={"model": "mrcnn", "weights": None}).crop_sized
    assert not DetectorSpec(kwargs={"model": "mrcnn", "weights": None, "tta": True}).crop_sized
    assert not DetectorSpec(kwargs={"model": "mrcnn", "weights": None,
                                    "scale": 0.5}).crop_sized
    assert not DetectorSpec(kwargs={"model": "fcn"}).crop_sized
    # settled by TTA: the file is not even looked for
    assert not DetectorSpec(kwargs={"model": "mrcnn", "weights": "no such file.h5",
                                    "tta": True}).crop_sized
    assert _DETECTORS == built                       # no model was built for the answers


def test_the_client_reads_the_weights_file_once(monkeypatch, tmp_path):
    """Planning a Dask run asks the spec for the default tile (crop-sized masks?) and for the
    normalisation of large images: both from one read of the file's attributes; the spec that
    travels to the workers carries no model."""
    import pickle

    from mrcnn import weights_file
    from nucleus.inference.nucleus_model import SHIPPED_WEIGHTS

    reads = []
    real = weights_file.read_attrs
    monkeypatch.setattr(weights_file, "read_attrs", lambda path: reads.append(path) or real(path))
    spec = DetectorSpec(kwargs={"model": "mrcnn", "weights": SHIPPED_WEIGHTS, "tiled": True})
    assert tile_for(spec) == DEFAULT_TILE and spec.crop_sized
    assert spec.normalization == "stretch"
    assert reads == [SHIPPED_WEIGHTS]
    travelled = pickle.loads(pickle.dumps(spec))
    assert "model" not in vars(travelled) and travelled == spec
    assert travelled.key == spec.key
    assert travelled.normalization == "stretch" and reads == [SHIPPED_WEIGHTS] * 2