"""Megapixels a second of ``nucleus segment`` on big fluorescence mosaics (never asserts).

Why: whole slides and mosaics are what microscopy users bring, and the time of a 1-gigapixel
slide is set by the marginal rate, not by the start-up. This script builds square mosaics of
the stage-1 test images of the fluorescence kind (grey, random order, seeded; written once as
tiled TIFFs under ``--work``), runs the real command line (``python -m nucleus segment MOSAIC
--out DIR`` plus any ``--args``) on each in its own process, and prints per mosaic: seconds,
megapixels a second (whole: pixels / seconds; marginal: the extra pixels over the previous
size / the extra seconds, which leaves out the start-up), the CPU seconds of the process (all
threads; steadier than wall time on a shared machine), the process's peak resident memory,
the nuclei found, and the fraction of the FLOP floor: the seconds the backbone, FPN and RPN of
the model need at the machine's own bfloat16 convolution throughput (both measured here, the
multiply-accumulates counted from TensorFlow's graph at 1024 x 1024) over the marginal seconds.

    python benchmarks/segment_speed.py --dataset ~/.cache/dsb2018 --sizes 2048 4096 8192
    python benchmarks/segment_speed.py --dataset ~/.cache/dsb2018 --sizes 2048 4096 \\
        --args "--tile 512" --json before.json

Run it on an otherwise idle machine: every figure but the CPU seconds is wall time.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(_ROOT))

from mrcnn.files import atomic_path  # noqa: E402
from nucleus.formats.image_io import read_image  # noqa: E402
from nucleus.kinds import image_kind  # noqa: E402

MOSAIC_SEED = 0
FLOOR_SIZE = 1024


def fluorescence_images(dataset: Path) -> list[np.ndarray]:
    """The grey planes of the stage-1 test images of the fluorescence kind, in name order."""
    folder = Path(dataset).expanduser() / "stage1_test"
    if not folder.is_dir():
        raise SystemExit(f"{folder}: not found; unpack stage1_test_images there")
    planes = []
    for entry in sorted(folder.iterdir()):
        files = sorted((entry / "images").glob("*.png"))
        if not files:
            continue
        image = read_image(files[0])
        if image.ndim == 3:
            image = image[..., :3]
        if image_kind(image) == "fluorescence":
            planes.append(image if image.ndim == 2 else image[..., 0])
    if not planes:
        raise SystemExit(f"{folder}: no fluorescence images found")
    return planes


def mosaic_layout(shapes: list[tuple[int, int]], size: int,
                  seed: int = MOSAIC_SEED) -> list[tuple[int, int, int]]:
    """Where the pieces of a ``size`` x ``size`` mosaic go: ``(piece index, y, x)`` for rows of
    pieces drawn at random (seeded) from ``shapes``, left to right, each row as tall as its
    tallest piece, the last ones cut at the edges."""
    rng = np.random.default_rng(seed)
    placed = []
    y = 0
    while y < size:
        x, row_height = 0, 0
        while x < size:
            k = int(rng.integers(len(shapes)))
            placed.append((k, y, x))
            h, w = shapes[k]
            x += w
            row_height = max(row_height, h)
        y += row_height
    return placed


def mosaic(planes: list[np.ndarray], size: int, seed: int = MOSAIC_SEED) -> np.ndarray:
    """A ``size`` x ``size`` uint8 mosaic: rows of randomly drawn images, cut at the edges."""
    out = np.zeros((size, size), np.uint8)
    for k, y, x in mosaic_layout([p.shape for p in planes], size, seed):
        out[y:y + planes[k].shape[0], x:x + planes[k].shape[1]] = planes[k][:size - y, :size - x]
    return out


def mosaic_file(work: Path, dataset: Path, size: int) -> Path:
    """The mosaic of ``size`` as a tiled TIFF under ``work``, made on first use."""
    path = work / f"fluorescence_mosaic_{size}.tif"
    if not path.exists():
        work.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".tmp.tif") as tmp:
            tifffile.imwrite(tmp, mosaic(fluorescence_images(dataset), size), tile=(512, 512),
                             photometric="minisblack")
    return path


def run_segment(path: Path, extra: list[str], labels: bool = False) -> dict:
    """``nucleus segment`` on one file in a child process: seconds, CPU seconds (user + system,
    all its threads: steadier than wall time when other jobs share the cores), peak RSS,
    nuclei; with ``labels`` also the label image it wrote (``"labels"``)."""
    out = Path(tempfile.mkdtemp(prefix="segment-speed-"))
    try:
        command = [sys.executable, "-m", "nucleus", "segment", str(path), "--out", str(out),
                   *extra]
        start = time.perf_counter()
        proc = subprocess.Popen(command, cwd=_ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        stderr = proc.stderr.read()
        proc.stderr.close()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n"
                             f"{stderr[-3000:]}")
        with open(out / "nuclei.csv", newline="") as f:
            nuclei = sum(1 for _ in csv.DictReader(f))
        result = {"seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "peak_rss_mb": usage.ru_maxrss / 1024, "nuclei": nuclei}
        if labels:
            result["labels"] = tifffile.imread(out / f"{path.stem}_labels.tif")
        return result
    finally:
        shutil.rmtree(out, ignore_errors=True)


def floor_seconds_per_mp(weights: str | None) -> dict:
    """GMAC per megapixel of the model's backbone, FPN and RPN, and the machine's bfloat16 and
    float32 3x3 convolution throughput (``benchmarks/speed.py``'s yardstick)."""
    # here: these load TensorFlow and Keras (about 1 GB and several seconds), which --no-floor
    # exists to skip; the measured runs are child processes either way
    from benchmarks.speed import conv_throughput, graph_gmacs
    from mrcnn.network import MaskRCNNNet
    from nucleus.inference.nucleus_model import NucleusModel

    config = NucleusModel.load(weights).config
    net = MaskRCNNNet(config)

    def backbone_fpn_rpn(images):
        return net.rpn(net.features(images, False))

    gmacs = graph_gmacs(backbone_fpn_rpn, ([1, FLOOR_SIZE, FLOOR_SIZE, 3], "float32"))
    per_mp = gmacs / (FLOOR_SIZE * FLOOR_SIZE / 1e6)
    bf16 = conv_throughput("bfloat16", 3)
    f32 = conv_throughput("float32", 3)
    return {"gmac_per_mp": per_mp, "gmacs_bfloat16": bf16, "gmacs_float32": f32,
            "floor_s_per_mp": per_mp / bf16}


def report(rows: list[dict], floor: dict | None) -> str:
    lines = ["| mosaic | megapixels | seconds | MP/s whole | MP/s marginal | CPU seconds "
             "| peak memory (GB) | nuclei | FLOP floor / marginal time |",
             "|---|---|---|---|---|---|---|---|---|"]
    previous = None
    for row in rows:
        mp = row["size"] ** 2 / 1e6
        marginal, fraction = "", ""
        if previous is not None and row["seconds"] > previous["seconds"]:
            extra_mp = mp - previous["size"] ** 2 / 1e6
            rate = extra_mp / (row["seconds"] - previous["seconds"])
            row["mp_per_s_marginal"] = rate
            marginal = f"{rate:.2f}"
            if floor:
                fraction = f"{floor['floor_s_per_mp'] * rate:.0%}"
        cpu = f"{row['cpu_seconds']:.1f}" if "cpu_seconds" in row else ""
        lines.append(f"| {row['size']} x {row['size']} | {mp:.1f} | {row['seconds']:.1f} | "
                     f"{mp / row['seconds']:.2f} | {marginal} | {cpu} | "
                     f"{row['peak_rss_mb'] / 1024:.2f} | {row['nuclei']} | {fraction} |")
        previous = row
    if floor:
        lines.append("")
        lines.append(f"Backbone + FPN + RPN: {floor['gmac_per_mp']:.0f} GMAC per megapixel; "
                     f"3x3 convolutions here: {floor['gmacs_bfloat16']:.0f} GMAC/s bfloat16, "
                     f"{floor['gmacs_float32']:.0f} float32; floor "
                     f"{floor['floor_s_per_mp']:.2f} s per megapixel in bfloat16.")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="~/.cache/dsb2018",
                        help="folder holding stage1_test/ (default ~/.cache/dsb2018)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096, 8192],
                        help="mosaic sides in pixels, ascending")
    parser.add_argument("--work", default="~/.cache/nucleus_segment_speed",
                        help="folder for the mosaic TIFFs (kept for the next run)")
    parser.add_argument("--args", default="", help="extra arguments to `nucleus segment`, "
                        "quoted, e.g. \"--tile 512 --overlap 128\"")
    parser.add_argument("--weights", default=None, help="for the FLOP count (default: shipped)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip counting the FLOP floor (saves loading TensorFlow here)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    opts = parse_args(argv)
    if opts.sizes != sorted(opts.sizes):
        raise SystemExit("--sizes must be ascending (the marginal rate compares neighbours)")
    work, dataset = Path(opts.work).expanduser(), Path(opts.dataset).expanduser()
    extra = shlex.split(opts.args)
    rows = []
    for size in opts.sizes:
        path = mosaic_file(work, dataset, size)
        result = run_segment(path, extra)
        rows.append({"size": size, **result})
        print(json.dumps(rows[-1]), flush=True)
    floor = floor_seconds_per_mp(opts.weights) if opts.floor else None
    print(report(rows, floor))
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump({"args": opts.args, "rows": rows, "floor": floor}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
