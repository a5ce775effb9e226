"""Accuracy benchmark: DSB mAP and friends of Mask R-CNN weights (and the FCN-8s baseline) on a
labelled subset, printed as one table.

    python benchmarks/accuracy.py --dataset ~/.cache/dsb2018 [--weights W] [--fcn-weights F]
                                  [--tta] [--subset stage1_test --solution SOLUTION_CSV]

``--tta`` adds a row for Mask R-CNN with flip test-time augmentation (nucleus/inference/tta.py).

Columns: DSB mAP (IoU 0.50-0.95), then the DSB mAP of each image kind present (dark-background
fluorescence, bright-field grey, colour tissue; ``nucleus.kinds.image_kind``; the header gives
how many images of the kind there are), precision at IoU 0.5 and 0.75 (DSB definition,
TP / (TP + FP + FN)), mean true and false positives per image at IoU 0.5, seconds per image
(detection and post-processing, image loading excluded).
"""
from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nucleus.cli import load_dataset, make_detector  # noqa: E402
from nucleus.kinds import KINDS  # noqa: E402
from nucleus.scoring.evaluation import evaluate_dataset  # noqa: E402


def table(rows) -> list[str]:
    """Markdown lines: one row per (name, nucleus.scoring.evaluation.Evaluation), all on one
    dataset."""
    counts: dict[str, int] = {}
    for _, result in rows:
        for kind, (n, _) in result.by_kind().items():
            counts[kind] = n
    kinds = [k for k in KINDS if k in counts]
    lines = ["| model | DSB mAP | " + "".join(f"{k} ({counts[k]}) | " for k in kinds)
             + "P@0.5 | P@0.75 | TP/image | FP/image | s/image |",
             "|---" * (7 + len(kinds)) + "|"]
    for name, result in rows:
        tp, fp, _ = result.mean_counts(0.5)
        by_kind = result.by_kind()
        lines.append(f"| {name} | {result.map:.4f} | "
                     + "".join(f"{by_kind[k][1]:.4f} | " if k in by_kind else "- | "
                               for k in kinds)
                     + f"{result.precision_at(0.5):.4f} | {result.precision_at(0.75):.4f} | "
                       f"{tp:.1f} | {fp:.1f} | {result.seconds_per_image:.3f} |")
    return lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=None, help="folder with stage1_train/ (default: sample)")
    p.add_argument("--subset", default="val")
    p.add_argument("--solution", default=None, metavar="CSV",
                   help="score the subset's images this Kaggle solution labels, e.g. "
                        "--subset stage1_test --solution stage1_test_dev_solution.csv")
    p.add_argument("--scale", default=None,
                   help="Mask R-CNN scale: a number, auto or probe (default: the model's own)")
    p.add_argument("--weights", default=None,
                   help="Mask R-CNN weights (default: weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--fcn-weights", default=None, help="FCN-8s checkpoint for the baseline row")
    p.add_argument("--radius", type=int, default=None, help="FCN erosion radius")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--tta", action="store_true", help="also Mask R-CNN voted over 4 flips")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="inference configuration values, e.g. DETECTION_MIN_CONFIDENCE=0.5")
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset, args.subset, args.limit, solution=args.solution)
    rows = []
    common = dict(dataset=args.dataset, subset=args.subset, logs="logs", profile=None,
                  mixed_precision=False, set=args.set, radius=args.radius, limit=args.limit)
    name = "Mask R-CNN " + os.path.basename(args.weights or "mask_rcnn_nucleus.h5")
    scale = args.scale if args.scale in (None, "auto", "probe") else float(args.scale)
    mrcnn = argparse.Namespace(model="mrcnn", weights=args.weights, tta=False, scale=scale,
                               **common)
    rows.append((name, evaluate_dataset(make_detector(mrcnn), ds)))
    if args.tta:
        mrcnn.tta = True
        rows.append((name + " + flip TTA", evaluate_dataset(make_detector(mrcnn), ds)))
    if args.fcn_weights:
        fcn = argparse.Namespace(model="fcn", weights=args.fcn_weights, **common)
        rows.append(("FCN-8s " + os.path.basename(args.fcn_weights),
                     evaluate_dataset(make_detector(fcn), ds)))
    labelled = f", labelled by {os.path.basename(args.solution)}" if args.solution else ""
    print(f"\n{len(ds.image_ids)} images of subset '{args.subset}' "
          f"({args.dataset or 'bundled sample'}{labelled})\n")
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
