"""Per-image report of a Mask R-CNN on a labelled subset: where it wins and loses, and what the
automatic scale does to each image.

    python benchmarks/per_image.py --dataset ~/.cache/dsb2018 --subset stage1_test \
        --solution stage1_test_dev_solution.csv [--weights W] [--out table.md]

One Markdown row per image: size, kind, true and found nuclei, the median equivalent diameter of
the true and of the found nuclei (pixels), the DSB score at the model's default scale, then the
factor ``--scale auto`` picks from the found nuclei and the score at that factor. The last lines
give the mean of both columns overall and per kind.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from nucleus.dataset import load_subset  # noqa: E402
from nucleus.inference import scales  # noqa: E402
from nucleus.inference.detectors import Detector  # noqa: E402
from nucleus.inference.nucleus_model import make_detector  # noqa: E402
from nucleus.kinds import image_kind  # noqa: E402
from nucleus.scoring import metric  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default=None, help="folder with stage1_train/ (default: sample)")
    p.add_argument("--subset", default="val")
    p.add_argument("--solution", default=None, help="Kaggle solution CSV labelling the subset")
    p.add_argument("--weights", default=None, help="Mask R-CNN weights (default: shipped)")
    p.add_argument("--scale", default=None,
                   help="default scale (a number or auto; default: the model's own)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", default=None, help="also write the table to this Markdown file")
    args = p.parse_args(argv)
    scale = args.scale if args.scale in (None, "auto") else float(args.scale)
    dataset = load_subset(args.dataset, args.subset, args.limit, solution=args.solution)
    detector = make_detector("mrcnn", args.weights, scale=scale)
    lines = ["| image | size | kind | true | found | true diameter | found diameter | score | "
             "auto factor | score (auto) |", "|---" * 10 + "|"]
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for image_id in dataset.image_ids:
        image = dataset.load_image(image_id)
        truth, _ = dataset.load_mask(image_id)
        prepared = detector.prepare(image)
        masks, _ = detector.detect_prepared(prepared)
        score = metric.image_score(truth, masks).score
        found = scales.median_diameter(masks)
        if detector.scale == "auto":             # the default run is the auto run
            factor, auto_score = detector.last_scale[1], score
        else:
            factor = scales.choose_scale(found, detector.diameter or scales.TRAINING_DIAMETER)
            auto_score = score
            if factor != 1:
                fixed = Detector(detector.detect, tta=detector.tta, scale=factor)
                auto_masks, _ = fixed.detect_prepared(prepared)
                auto_score = metric.image_score(truth, auto_masks).score
        kind = image_kind(image)
        by_kind.setdefault(kind, []).append((score, auto_score))
        true_d = scales.median_diameter(truth)
        lines.append(f"| {dataset.image_info[image_id]['id'][:8]} | {image.shape[0]}x"
                     f"{image.shape[1]} | {kind} | {truth.shape[-1]} | {masks.shape[-1]} | "
                     f"{true_d or 0:.1f} | {found or 0:.1f} | {score:.3f} | {factor:.2f} | "
                     f"{auto_score:.3f} |")
        print(lines[-1], flush=True)
    every = [pair for pairs in by_kind.values() for pair in pairs]
    summary = [f"mean: {np.mean([a for a, _ in every]):.4f} at the default scale, "
               f"{np.mean([b for _, b in every]):.4f} with the auto factor ({len(every)} images)"]
    summary += [f"  {kind} ({len(pairs)}): {np.mean([a for a, _ in pairs]):.4f} / "
                f"{np.mean([b for _, b in pairs]):.4f}" for kind, pairs in by_kind.items()]
    print("\n".join(summary))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines + [""] + summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
