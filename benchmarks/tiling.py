"""Tile size and overlap of ``nucleus segment``: seconds, peak memory and DSB mAP (never asserts).

Why: the defaults of ``--tile`` and ``--overlap`` trade speed (small tiles repeat the overlap
more often and pay a fixed cost per call) against memory (a call's masks and feature maps grow
with the tile) and must not cost accuracy. Two measurements:

``speed``: one big image tiled from the bundled sample's fluorescence images (``--size``), each
tile size in its own process (so peak memory is that run's): seconds for the detection and
stitching, peak resident memory, nuclei found. ``--tiles 0`` is the whole image in one call.

``accuracy``: DSB mAP of a labelled subset detected whole and tiled, so that tiling is seen to
cost nothing (images smaller than a tile are one tile either way).

    python benchmarks/tiling.py speed --size 4096 --tiles 512 1024 2048 --overlap 128
    python benchmarks/tiling.py accuracy --dataset ~/.cache/dsb2018 --subset val \
        --tiles 256 512 --overlap 64 128
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _one_speed_run(size: int, tile: int, overlap: int, weights: str | None) -> dict:
    """Runs in a child process: build the detector, segment the mosaic once, report."""
    # here, not at the top: the child's peak memory is the measurement, so it imports only
    # what this run needs (accuracy's evaluation and plots would add to it)
    from nucleus.inference.nucleus_model import make_detector
    from nucleus.inference.tiling import predict_tiled
    from nucleus.sample_data import sample_mosaic

    image = sample_mosaic(size)
    detector = make_detector("mrcnn", weights, tiled=True)
    detector(image[:256, :256])                               # trace the graph once
    before = _peak_mb()
    start = time.perf_counter()
    prepared = detector.prepare(image)
    labels, _ = predict_tiled(prepared, detector.detect_prepared, tile or size + 1, overlap)
    seconds = time.perf_counter() - start
    return {"size": size, "tile": tile, "overlap": overlap, "seconds": round(seconds, 1),
            "peak_mb": round(_peak_mb()), "peak_before_mb": round(before),
            "nuclei": int(labels.max())}


def speed(args) -> None:
    rows = []
    for tile in args.tiles:
        command = [sys.executable, __file__, "_speed_child", str(args.size), str(tile),
                   str(args.overlap), args.weights or ""]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            rows.append({"tile": tile, "error": done.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    print(f"\n{args.size}x{args.size} mosaic of the bundled sample, overlap {args.overlap}\n")
    print("| tile | seconds | s/megapixel | peak memory (MB) | before detection (MB) | nuclei |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['tile'] or 'whole'} | failed: {r['error']} | | | | |")
            continue
        mp = r["size"] ** 2 / 1e6
        print(f"| {r['tile'] or 'whole'} | {r['seconds']} | {r['seconds'] / mp:.2f} | "
              f"{r['peak_mb']} | {r['peak_before_mb']} | {r['nuclei']} |")


def accuracy(args) -> None:
    # here: see _one_speed_run (this module also runs as the speed child)
    from nucleus.cli import load_dataset
    from nucleus.inference.nucleus_model import make_detector
    from nucleus.inference.tiling import predict_tiled
    from nucleus.scoring.evaluation import evaluate_dataset

    ds = load_dataset(args.dataset, args.subset, args.limit)
    detector = make_detector("mrcnn", args.weights, tiled=True)
    rows = []
    settings = [(0, 0)] + [(t, o) for t in args.tiles for o in args.overlap if o < t]
    for tile, overlap in settings:
        def detect(image, tile=tile, overlap=overlap):
            prepared = detector.prepare(image)
            size = tile or max(image.shape[:2]) + 1
            labels, scores = predict_tiled(prepared, detector.detect_prepared, size, overlap)
            return labels, scores
        result = evaluate_dataset(detect, ds, progress=False)
        rows.append((tile, overlap, result))
        print(tile, overlap, f"{result.map:.4f}", flush=True)
    print(f"\n{len(ds.image_ids)} images of '{args.subset}'\n")
    print("| tile | overlap | DSB mAP | P@0.5 | s/image |")
    print("|---|---|---|---|---|")
    for tile, overlap, r in rows:
        print(f"| {tile or 'whole image'} | {overlap if tile else ''} | {r.map:.4f} | "
              f"{r.precision_at(0.5):.4f} | {r.seconds_per_image:.2f} |")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_speed_child":
        size, tile, overlap, weights = argv[1:5]
        print(json.dumps(_one_speed_run(int(size), int(tile), int(overlap), weights or None)))
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--size", type=int, default=4096)
    s.add_argument("--tiles", type=int, nargs="+", default=[512, 1024, 2048])
    s.add_argument("--overlap", type=int, default=128)
    s.add_argument("--weights", default=None)
    a = sub.add_parser("accuracy")
    a.add_argument("--dataset", default=None)
    a.add_argument("--subset", default="val")
    a.add_argument("--limit", type=int, default=None)
    a.add_argument("--tiles", type=int, nargs="+", default=[256, 512])
    a.add_argument("--overlap", type=int, nargs="+", default=[64, 128])
    a.add_argument("--weights", default=None)
    args = p.parse_args(argv)
    speed(args) if args.what == "speed" else accuracy(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
