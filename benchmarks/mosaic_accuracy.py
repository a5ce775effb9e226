"""DSB mAP of ``nucleus segment`` on big labelled mosaics: what tiling costs in accuracy
(never asserts).

Why: the images of ``val`` and of the labelled half of stage-1 test are smaller than one tile,
so their scores say nothing about the seams, the overlap and the stitching of a big image. This
script builds a square mosaic of the fluorescence images of ``val`` (labels from their masks)
or of the stage-1 test images a solution file labels (random order, seeded, cut at the edges,
written once under ``--work`` with its label image), runs the real command line on it
(``python -m nucleus segment MOSAIC --out DIR`` plus any ``--args``) in its own process, and
scores the label image it writes against the mosaic's labels as one image: DSB mAP, the
precision at each IoU threshold, TP / FP / FN at 0.5, the nuclei found and the seconds.

    python benchmarks/mosaic_accuracy.py --dataset ~/.cache/dsb2018 --subset val --size 4096
    python benchmarks/mosaic_accuracy.py --dataset ~/.cache/dsb2018 --subset stage1_test \\
        --solution stage1_test_dev_solution.csv --args "--overlap 128"

Only the difference between two settings on the same mosaic means anything: a mosaic's score
is not an image's (nuclei cut at the pieces' edges count too).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import numpy as np
import tifffile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(_ROOT))

from benchmarks.segment_speed import mosaic_layout, run_segment  # noqa: E402
from mrcnn.files import atomic_path  # noqa: E402
from nucleus.formats.image_io import read_image  # noqa: E402
from nucleus.kinds import image_kind  # noqa: E402

MOSAIC_SEED = 7


def brightness(image: np.ndarray) -> np.ndarray:
    """A fluorescence image as one uint8 plane: the brightest channel at each pixel (grey
    images give their grey; a single-colour stain its colour)."""
    image = np.asarray(image)
    return image if image.ndim == 2 else image[..., :3].max(axis=-1)


def val_pairs(dataset: Path | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """(plane, labels) of the ``val`` images of the fluorescence kind (``dataset`` None: the
    bundled sample's)."""
    from nucleus.dataset import NucleusDataset

    data = NucleusDataset()
    data.load_nucleus(None if dataset is None else str(dataset), "val")
    data.prepare()
    pairs = []
    for i in data.image_ids:
        image = data.load_image(i)
        if image_kind(image) != "fluorescence":
            continue
        masks, _ = data.load_mask(i)
        labels = np.zeros(image.shape[:2], np.int32)
        for k in range(masks.shape[-1]):
            labels[masks[..., k] > 0] = k + 1
        pairs.append((brightness(image), labels))
    return pairs


def solution_pairs(dataset: Path, subset: str,
                   solution: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(plane, labels) of the images of ``subset`` that ``solution`` labels, of the
    fluorescence kind, in name order."""
    from nucleus.formats.submission import read_solution

    pairs = []
    for image_id, labels in sorted(read_solution(solution).items()):
        files = sorted((dataset / subset / image_id / "images").glob("*.png"))
        if not files:
            raise SystemExit(f"{dataset / subset / image_id}: no image for this solution row")
        image = read_image(files[0])
        if image.ndim == 3:
            image = image[..., :3]
        if image_kind(image) == "fluorescence":
            pairs.append((brightness(image), np.asarray(labels, np.int32)))
    return pairs


def labelled_mosaic(pairs: list[tuple[np.ndarray, np.ndarray]], size: int,
                    seed: int = MOSAIC_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` uint8 mosaic of rows of randomly drawn images, cut at the edges,
    and its labels: each piece's nuclei numbered apart from every other piece's (the same
    image drawn twice gives two sets), consecutive from 1, nuclei cut to nothing left out."""
    from skimage.segmentation import relabel_sequential

    if not pairs:
        raise SystemExit("no labelled fluorescence images to build a mosaic from")
    image = np.zeros((size, size), np.uint8)
    labels = np.zeros((size, size), np.int64)
    offset = 0
    for k, y, x in mosaic_layout([plane.shape for plane, _ in pairs], size, seed):
        plane, truth = pairs[k]
        h, w = plane.shape
        image[y:y + h, x:x + w] = plane[:size - y, :size - x]
        piece = truth[:size - y, :size - x].astype(np.int64)
        labels[y:y + h, x:x + w] = np.where(piece > 0, piece + offset, 0)
        offset += int(truth.max())
    return image, relabel_sequential(labels)[0].astype(np.int32)


def mosaic_files(work: Path, name: str, pairs_of, size: int) -> tuple[Path, Path]:
    """The mosaic TIFF and its labels (.npy) under ``work``, made on first use."""
    image_path, labels_path = work / f"{name}_{size}.tif", work / f"{name}_{size}_labels.npy"
    if not (image_path.exists() and labels_path.exists()):
        work.mkdir(parents=True, exist_ok=True)
        image, labels = labelled_mosaic(pairs_of(), size)
        with atomic_path(labels_path, suffix=".tmp.npy") as tmp:
            np.save(tmp, labels)
        with atomic_path(image_path, suffix=".tmp.tif") as tmp:
            tifffile.imwrite(tmp, image, tile=(512, 512), photometric="minisblack")
    return image_path, labels_path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="~/.cache/dsb2018",
                        help="folder holding stage1_train/ and stage1_test/")
    parser.add_argument("--subset", default="val",
                        help="val, or a folder of the dataset with --solution")
    parser.add_argument("--solution", help="Kaggle solution CSV labelling --subset's images")
    parser.add_argument("--size", type=int, default=4096, help="mosaic side in pixels")
    parser.add_argument("--work", default="~/.cache/nucleus_mosaic_accuracy",
                        help="folder for the mosaics (kept for the next run)")
    parser.add_argument("--args", default="", help="extra arguments to `nucleus segment`, "
                        "quoted, e.g. \"--overlap 128\"")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    from nucleus.scoring.metric import image_score

    opts = parse_args(argv)
    dataset, work = Path(opts.dataset).expanduser(), Path(opts.work).expanduser()
    if opts.solution:
        solution = Path(opts.solution).expanduser()
        name = solution.stem
        pairs_of = lambda: solution_pairs(dataset, opts.subset, solution)  # noqa: E731
    elif opts.subset == "val":
        name, pairs_of = "val", lambda: val_pairs(dataset)  # noqa: E731
    else:
        raise SystemExit(f"--subset {opts.subset}: give --solution to label it (or use val)")
    image_path, labels_path = mosaic_files(work, name, pairs_of, opts.size)
    truth = np.load(labels_path)
    run = run_segment(image_path, shlex.split(opts.args), labels=True)
    found, seconds = run["labels"], run["seconds"]
    score = image_score(truth, found)
    row = {"mosaic": name, "size": opts.size, "args": opts.args, "map": float(score.score),
           "precisions": [round(float(p), 4) for p in score.precisions],
           "tp_05": int(score.tp[0]), "fp_05": int(score.fp[0]), "fn_05": int(score.fn[0]),
           "true": int(truth.max()), "found": int(found.max()), "seconds": round(seconds, 1)}
    print(json.dumps(row))
    print(f"{name} {opts.size} x {opts.size} [{opts.args}]: DSB mAP {row['map']:.4f}, "
          f"{row['found']} nuclei found of {row['true']}, at IoU 0.5 TP {row['tp_05']} "
          f"FP {row['fp_05']} FN {row['fn_05']}, {seconds:.1f} s")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(row, f, indent=1)
    return row


if __name__ == "__main__":
    main()
