"""Scaling out ``nucleus segment``: memory and seconds of large images read window by window, and
the speed-up of local Dask workers (never asserts; README "Scaling out" quotes it).

``large``: square tiled TIFFs of ``--sizes`` pixels a side (RGB, written tile by tile from the
bundled sample's fluorescence images, so never held whole; deleted afterwards), each segmented
in its own process by :func:`nucleus.inference.large.segment_large_here`: seconds and peak resident
memory. ``--detector threshold`` is the model-free detector of :mod:`nucleus.sample_data`
(what the window-by-window machinery costs); ``mrcnn`` the shipped model.

``workers``: a folder of images and one large image, segmented by ``--workers`` local Dask
workers each (the shipped model): seconds, and the speed-up over one worker.

    nice -n 10 python benchmarks/scaling.py large --sizes 4096 16384 32768 --detector threshold
    nice -n 10 python benchmarks/scaling.py large --sizes 4096 --detector mrcnn
    nice -n 10 python benchmarks/scaling.py workers --workers 1 2 --images 8 --large 2048
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

TILE = 512


# Imports stay inside the functions here: each measured run is a child process whose peak
# resident memory is the figure, so it imports only what that run needs (TensorFlow, ~600 MB,
# would otherwise weigh on the threshold detector's runs).


def write_square(path: Path, size: int) -> None:
    """A size x size RGB tiled TIFF, tile by tile from a 2048-pixel mosaic (memory: the mosaic)."""
    import numpy as np
    import tifffile

    from nucleus.sample_data import sample_mosaic

    mosaic = sample_mosaic(2048)

    def tiles():
        for y in range(0, size, TILE):
            for x in range(0, size, TILE):
                tile = mosaic[y % 2048:y % 2048 + TILE, x % 2048:x % 2048 + TILE]
                out = np.zeros((TILE, TILE, 3), np.uint8)
                out[:tile.shape[0], :tile.shape[1]] = tile
                yield out

    tifffile.imwrite(path, tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(TILE, TILE),
                     photometric="rgb", compression="zlib", bigtiff=True)


def _detector(name: str):
    if name == "threshold":
        from nucleus.sample_data import make_threshold_detector

        return make_threshold_detector()
    from nucleus.inference.nucleus_model import make_detector

    return make_detector("mrcnn", tiled=True)


def one_large(path: str, detector: str) -> dict:
    """Runs in its own process, so its peak memory is this run's."""
    from nucleus.inference.large import segment_large_here

    built = _detector(detector)
    start = time.perf_counter()
    out = Path(path).with_name("labels.tif")
    table = segment_large_here(path, "large", out, built)      # the default tiles
    seconds = time.perf_counter() - start
    os.unlink(out)
    return {"seconds": round(seconds, 1), "nuclei": len(table),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def cmd_large(args) -> None:
    for size in args.sizes:
        folder = Path(tempfile.mkdtemp(prefix="scaling-", dir=args.tmp))
        try:
            path = folder / f"square{size}.tif"
            start = time.perf_counter()
            write_square(path, size)
            written = time.perf_counter() - start
            proc = subprocess.run([sys.executable, __file__, "_one", str(path), args.detector],
                                  capture_output=True, text=True)
            lines = [x for x in proc.stdout.splitlines() if x.startswith("{")]
            result = json.loads(lines[-1]) if lines else {"error": proc.stderr[-2000:]}
            print(json.dumps({"size": size, "detector": args.detector,
                              "file_mb": round(path.stat().st_size / 2**20),
                              "raw_mb": round(size * size * 3 / 2**20),
                              "write_seconds": round(written, 1), **result}), flush=True)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def cmd_workers(args) -> None:
    import numpy as np
    import tifffile
    from PIL import Image

    from nucleus.cli import main
    from nucleus.sample_data import sample_mosaic

    folder = Path(tempfile.mkdtemp(prefix="scaling-workers-", dir=args.tmp))
    try:
        mosaic = sample_mosaic(2048)
        plate = folder / "plate"
        plate.mkdir()
        for k in range(args.images):
            y, x = (k * 256) % 1536, (k * 384) % 1536
            Image.fromarray(mosaic[y:y + 512, x:x + 512]).save(plate / f"well_{k}.png")
        big = folder / "section"
        big.mkdir()
        tifffile.imwrite(big / "section.tif", np.ascontiguousarray(
            mosaic[:args.large, :args.large]), tile=(256, 256), photometric="rgb")
        from nucleus.formats import lazy_io
        lazy_io.LAZY_PIXELS = min(lazy_io.LAZY_PIXELS, args.large * args.large)
        base = {}
        for what, source in (("folder", plate), ("large image", big)):
            for n in args.workers:
                out = folder / f"out-{n}"
                start = time.perf_counter()
                code = main(["segment", str(source), "--out", str(out), "--workers", str(n)])
                seconds = time.perf_counter() - start
                base.setdefault(what, seconds)
                print(json.dumps({"input": what, "workers": n, "seconds": round(seconds, 1),
                                  "speed_up": round(base[what] / seconds, 2), "exit": code}),
                      flush=True)
                shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(one_large(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("large")
    p.add_argument("--sizes", type=int, nargs="+", default=[4096, 16384, 32768])
    p.add_argument("--detector", choices=("threshold", "mrcnn"), default="threshold")
    p.add_argument("--tmp", default=None, help="folder for the test images (default: /tmp)")
    p = sub.add_parser("workers")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--large", type=int, default=2048, help="side of the large image")
    p.add_argument("--tmp", default=None)
    args = parser.parse_args()
    {"large": cmd_large, "workers": cmd_workers}[args.command](args)


if __name__ == "__main__":
    main()
