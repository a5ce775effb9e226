"""Command line: ``python nucleus.py COMMAND``: train, sweep, detect, evaluate, submit, crossval,
pick-radius, curves, compare, segment, export-labels.

Also reachable as ``python -m nucleus`` and as the installed ``nucleus`` command. Every bad input
ends in one line ``error: <file>: <problem>`` and exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from tqdm import tqdm

from mrcnn.errors import WeightsError
from mrcnn.runs import RunFolder
from nucleus.config import parse_value
from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_path
from nucleus.formats.submission import SubmissionWriter, check_submission
from nucleus.inference.nucleus_model import NucleusModel
from nucleus.inference.nucleus_model import make_detector as model_detector
from nucleus.inference.tiling import (DEFAULT_OVERLAP, DEFAULT_TILE, FULL_MASK_TILE,
                                      MIN_OVERLAP, OVERLAP_MARGIN)
from nucleus.scoring import metric
from nucleus.scoring.submission_score import score_submission
from nucleus.segment import TABLE_NAME, collect_files, segment_files
from nucleus.training.train_options import TrainOptions, add_flags, config_overrides_from_args

# Each command imports inside its function what only it needs, so that `nucleus --help` and a
# bad flag stay at about 0.2 s: TensorFlow costs ~4 s to import, matplotlib, scikit-image with
# SciPy, h5py and Dask 0.2 to 1 s each (python -X importtime, 2026-12-06, on the 2-core machine).
MODELS = ("mrcnn", "fcn")

# Command-line spellings of configuration values: flag -> (Config attribute, type).
CONFIG_FLAGS: dict[str, tuple[str, Callable]] = {
    "--backbone": ("BACKBONE", str),
    "--image-size": ("IMAGE_MAX_DIM", int),
    "--images-per-gpu": ("IMAGES_PER_GPU", int),
    "--gpu-count": ("GPU_COUNT", int),
    "--rpn-anchors": ("RPN_TRAIN_ANCHORS_PER_IMAGE", int),
    "--rpn-nms": ("RPN_NMS_THRESHOLD", float),
    "--rois": ("TRAIN_ROIS_PER_IMAGE", int),
    "--positive-ratio": ("ROI_POSITIVE_RATIO", float),
    "--detection-nms": ("DETECTION_NMS_THRESHOLD", float),
    "--min-confidence": ("DETECTION_MIN_CONFIDENCE", float),
    "--max-detections": ("DETECTION_MAX_INSTANCES", int),
    "--learning-rate": ("LEARNING_RATE", float),
    "--validation-steps": ("VALIDATION_STEPS", int),
}


def _add_common(p: argparse.ArgumentParser, subset: str | None, weights_help: str) -> None:
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="folder holding stage1_train/, stage1_test/ ... (default: the bundled "
                        "sample)")
    if subset is not None:
        p.add_argument("--subset", default=subset,
                       help=f"train, val, stage1_train, stage1_test, stage2_test_final "
                            f"(default: {subset})")
    p.add_argument("--weights", default=None, help=weights_help)
    p.add_argument("--model", choices=MODELS, default="mrcnn",
                   help="mrcnn (Mask R-CNN, default) or fcn (the FCN-8s baseline)")
    p.add_argument("--logs", default="logs", metavar="DIR",
                   help="folder for run folders with checkpoints and logs (default: ./logs)")
    p.add_argument("--profile", choices=("study", "cpu"), default=None,
                   help="configuration: the study's (ResNet-101, 512x512) or the CPU one; "
                        "default: study for training, the weights file's own for inference")
    for flag, (attr, typ) in CONFIG_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=f"config {attr}")
    p.add_argument("--mixed-precision", action="store_true",
                   help="compute in bfloat16 (CPUs with AVX512-BF16/AMX)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other configuration value, e.g. --set POST_NMS_ROIS_INFERENCE=1000")
    p.add_argument("--radius", type=int, default=None,
                   help="FCN: erosion radius of the instance split (default 2; choose one with "
                        "pick-radius)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _add_tta(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tta", action="store_true",
                   help="detect on the 4 flips of each image and keep the nuclei most agree on "
                        "(4x slower)")
    p.add_argument("--scale", type=_scale, default=None, metavar="FACTOR",
                   help="detect on the image resized by FACTOR; auto: by the factor that brings "
                        "the nuclei a first pass finds to the size the model was trained at; probe: "
                        "by whichever of 1, 0.5 and 0.25 gives the most confident nuclei, not "
                        "shrinking those found below 8.5 px (for nuclei far bigger than the "
                        "training set's) "
                        "(default: auto for a model trained at one nucleus size, OBJECT_DIAMETER; "
                        "else the profile's INFERENCE_SCALE for whole images, probe for the "
                        "shipped model, and 1 for segment's tiles)")
    p.add_argument("--tta-scales", type=_scale_list, default=None, metavar="S1,S2,...",
                   help="detect at each of these scales and keep the nuclei most agree on")


def _scale(text: str) -> float | str:
    """``--scale`` values: a positive number, "auto" or "probe"."""
    if text in ("auto", "probe"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, auto or probe, got {text!r}")
    return value


def _scale_list(text: str) -> tuple[float, ...]:
    """``--tta-scales`` values: comma-separated positive numbers."""
    values = tuple(_scale(v) for v in text.split(","))
    if "auto" in values:
        raise argparse.ArgumentTypeError("--tta-scales takes numbers only")
    return values


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    """Flags of a training run, shared by ``train`` and ``sweep``: one per
    :class:`nucleus.training.train_options.TrainOptions` field."""
    add_flags(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nucleus", description="Nucleus instance segmentation: Mask R-CNN and the FCN-8s "
                                    "baseline on the Kaggle 2018 Data Science Bowl data.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (staged schedule of the study)")
    _add_common(p, "train", "coco | imagenet | last | none | PATH (default: none for the CPU "
                            "profile, coco otherwise; FCN: imagenet | none | last | PATH)")
    _add_train_flags(p)
    p.add_argument("--crop-size", type=int, default=256, help="FCN: training crop size")
    p.add_argument("--batch-size", type=int, default=4, help="FCN: crops per step")
    p.add_argument("--multi-worker", action="store_true",
                   help="Mask R-CNN: train across machines under MultiWorkerMirroredStrategy; "
                        "run the same command on each with TF_CONFIG naming all workers and its "
                        "own index (worker 0 writes the checkpoints; resume with --weights last)")

    p = sub.add_parser("sweep", help="train one Mask R-CNN run per combination of settings "
                                     "(resumable), then compare their validation mAP curves")
    _add_common(p, "train", "where each combination starts: coco | imagenet | none | PATH "
                            "(default: none for the CPU profile, coco otherwise)")
    axis = next(a for a in p._actions if a.dest == "set")
    axis.metavar = "NAME=V1,V2,..."
    axis.help = ("an axis of the sweep (repeat for more; every combination is one run; one "
                 "value fixes NAME for all); NAME is a configuration value or AUGMENT, "
                 "ROTATE90, APPEARANCE, SCALE, LR_DROP, EXCLUDE_KIND, e.g. --set "
                 "RPN_TRAIN_ANCHORS_PER_IMAGE=128,256,512 --set AUGMENT=True,False; "
                 "--set EXCLUDE_KIND=None,colour is leave-a-kind-out")
    p.add_argument("--name", default=None,
                   help="sweep folder under --logs (default: sweep_ and the swept names); "
                        "the same command again resumes it")
    _add_train_flags(p)

    p = sub.add_parser("detect", help="write overlay PNGs of the detected nuclei")
    _add_common(p, "stage1_test", "weights file (default: weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--out", default="detections", metavar="DIR", help="output folder")
    _add_tta(p)

    p = sub.add_parser("evaluate", help="DSB mAP of a labelled subset, or of a submission CSV")
    _add_common(p, "val", "weights file (default: weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--submission", default=None, metavar="CSV",
                   help="score this submission against --solution instead of running a model "
                        "(its images the solution does not label are counted, not scored)")
    p.add_argument("--solution", default=None, metavar="CSV",
                   help="Kaggle solution (ImageId,EncodedPixels,Height,Width[,Usage]): the "
                        "labels of the --subset images it holds, e.g. the labelled half of "
                        "stage1_test; only those images are scored")
    p.add_argument("--plots", default=None, metavar="DIR",
                   help="write ground truth beside prediction per image (TP/FP/misses)")
    _add_tta(p)

    p = sub.add_parser("submit", help="write a Kaggle submission CSV for a subset")
    _add_common(p, "stage1_test", "weights file (default: weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--out", default="submission.csv", metavar="CSV", help="output CSV")
    _add_tta(p)

    p = sub.add_parser("crossval", help="k-fold cross-validation (FCN baseline)")
    _add_common(p, "stage1_train", "imagenet | none | PATH (default: imagenet)")
    p.add_argument("--folds", type=int, default=10)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=1)
    p.add_argument("--crop-size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)

    p = sub.add_parser("pick-radius", help="FCN: choose the erosion radius by validation mAP")
    _add_common(p, "val", "FCN checkpoint (default: last under --logs)")
    p.add_argument("--radii", default="0,1,2,3,4,5,6", help="comma-separated radii to try")

    p = sub.add_parser("curves", help="PNG of losses and validation mAP from a run folder")
    p.add_argument("run", help="run folder of Mask R-CNN or the FCN (holds history.csv and "
                               "val_map.csv)")
    p.add_argument("--out", default=None, help="PNG path (default: RUN/training_curves.png)")

    p = sub.add_parser("compare", help="FCN vs Mask R-CNN vs ground truth on the same images")
    _add_common(p, "val", "Mask R-CNN weights (default: weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--fcn-weights", required=True, help="FCN checkpoint")
    p.add_argument("--out", default="comparison", metavar="DIR")
    _add_tta(p)

    _add_segment(sub)
    _add_export_labels(sub)
    return parser


def _add_export_labels(sub) -> None:
    p = sub.add_parser("export-labels", help="write a dataset as images/ plus masks/ (one uint16 "
                                             "label PNG per image), the layout StarDist, "
                                             "Cellpose and --dataset read")
    p.add_argument("--dataset", default=None, metavar="DIR",
                   help="folder holding stage1_train/ ... or images/ and masks/ (default: the "
                        "bundled sample)")
    p.add_argument("--subset", default="train,val", metavar="S1,S2,...",
                   help="subsets to export, each to OUT/SUBSET: train, val, stage1_train, "
                        "stage1_test, stage2_test_final (an images/ + masks/ folder: all, "
                        "train, val) (default: train,val, the fixed split)")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output folder: OUT/SUBSET/images/NAME.png (the image file copied as "
                        "it is) and OUT/SUBSET/masks/NAME.png (0 background, nuclei 1..N in "
                        "mask-file order; a pixel of several masks goes to the first)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT/SUBSET folder (without it, the command refuses)")
    p.add_argument("--limit", type=int, default=None, help="export only the first N images")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


def _add_segment(sub) -> None:
    p = sub.add_parser("segment", help="label image, overlay and a table of nuclei for any image "
                                       "files (PNG, TIFF, JPEG, BMP)")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="image files, folders of them, or glob patterns (quoted)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: NAME_labels.tif, NAME_overlay.png, nuclei.csv")
    p.add_argument("--rois", action="store_true",
                   help="also write NAME_rois.zip: an ImageJ ROI set for Fiji's ROI Manager, a "
                        "polygon per nucleus named by its label")
    p.add_argument("--geojson", action="store_true",
                   help="also write NAME_nuclei.geojson: QuPath detections (File > Import "
                        "objects), a polygon per nucleus with its nuclei.csv measurements")
    p.add_argument("--channel", type=int, default=None, metavar="N",
                   help="channel (or page) of the nuclear stain in multi-channel images, from 0")
    p.add_argument("--tile", type=int, default=None,
                   help=f"images wider or taller than this are detected in tiles of at most "
                        f"this side, spread evenly (default {DEFAULT_TILE} for Mask R-CNN at "
                        f"scale 1 without TTA, else {FULL_MASK_TILE})")
    p.add_argument("--overlap", type=_overlap, default=None, metavar="PIXELS",
                   help=f"overlap of neighbouring tiles in pixels, or auto; must exceed the "
                        f"largest nucleus. Default auto: {OVERLAP_MARGIN:g} times the largest "
                        f"nucleus in the tile at the image's centre (detected first), at least "
                        f"{MIN_OVERLAP} ({DEFAULT_OVERLAP} if it holds none)")
    p.add_argument("--weights", default=None,
                   help="weights file (default: weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--model", choices=MODELS, default="mrcnn",
                   help="mrcnn (Mask R-CNN, default) or fcn (the FCN-8s baseline)")
    _add_tta(p)
    p.add_argument("--radius", type=int, default=None,
                   help="FCN: erosion radius of the instance split (default 2)")
    p.add_argument("--profile", choices=("study", "cpu"), default=None,
                   help="configuration (default: the weights file's own)")
    for flag in ("--detection-nms", "--min-confidence", "--max-detections"):
        p.add_argument(flag, type=CONFIG_FLAGS[flag][1], default=None,
                       help=f"config {CONFIG_FLAGS[flag][0]}")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="any other configuration value")
    p.add_argument("--logs", default="logs", metavar="DIR",
                   help="where --weights last looks for checkpoints (default: ./logs)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=None, metavar="N",
                       help="spread images and the tiles of large images over N local Dask "
                            "worker processes (each loads the model once)")
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="spread them over the workers of a running dask.distributed "
                            "scheduler, e.g. tcp://host:8786 (files must be at the same paths "
                            "there)")
    p.add_argument("-v", "--verbose", action="store_true", help="log more")


# ---------------------------------------------------------------------------- helpers
def overrides_from_args(args) -> dict[str, Any]:
    """Configuration values given on the command line."""
    values: dict[str, Any] = {}
    for flag, (attr, _) in CONFIG_FLAGS.items():
        v = getattr(args, flag[2:].replace("-", "_"), None)
        if v is not None:
            values[attr] = v
    if getattr(args, "image_size", None):
        values["IMAGE_MIN_DIM"] = args.image_size
    if getattr(args, "mixed_precision", False):
        values["MIXED_PRECISION"] = "mixed_bfloat16"
    values.update(config_overrides_from_args(args))    # --steps-per-epoch
    for item in getattr(args, "set", []) or []:
        if "=" not in item:
            raise InputError(f"--set {item}: expected NAME=VALUE")
        name, text = item.split("=", 1)
        values[name.strip().upper()] = parse_value(text.strip())
    return values


def load_dataset(dataset_dir: str | None, subset: str, limit: int | None = None,
                 solution: str | None = None):
    from nucleus.dataset import load_subset   # here: scikit-image, SciPy (~0.25 s)

    return load_subset(dataset_dir, subset, limit, solution=solution)


def make_detector(args):
    """The detector of --model, --weights and --tta
    (:func:`nucleus.inference.nucleus_model.make_detector`), with the configuration values given
    on the command line."""
    return model_detector(**_detector_kwargs(args))


def _detector_kwargs(args) -> dict[str, Any]:
    """:func:`nucleus.inference.nucleus_model.make_detector`'s keywords from the command line."""
    return dict(model=args.model, weights=args.weights, tta=getattr(args, "tta", False),
                radius=getattr(args, "radius", None), profile=getattr(args, "profile", None),
                overrides=overrides_from_args(args), logs=getattr(args, "logs", "logs"),
                scale=getattr(args, "scale", None), scales=getattr(args, "tta_scales", None),
                tiled=getattr(args, "command", None) == "segment")


def _detector_spec(args):
    """What a Dask worker needs to build the detector itself: the same keywords, with the
    weights file resolved here (so a missing file is reported before any worker starts)."""
    from nucleus.inference.parallel import DetectorSpec   # here: Dask, pandas (~0.8 s)

    kwargs = _detector_kwargs(args)
    kwargs["weights"] = os.path.abspath(NucleusModel.resolve(
        args.weights, kind=args.model, logs=kwargs["logs"], profile=kwargs["profile"]))
    return DetectorSpec(kwargs=kwargs)


# ---------------------------------------------------------------------------- commands
def cmd_train(args) -> int:
    if getattr(args, "multi_worker", False):
        if args.model != "mrcnn":
            raise InputError("--multi-worker trains Mask R-CNN only")
        from mrcnn.distribute import use_multi_worker   # here: TensorFlow

        try:
            use_multi_worker()      # before TensorFlow runs anything else in this process
        except ValueError as e:
            raise InputError(str(e)) from None
    if args.model == "fcn":
        from nucleus.fcn.train import train_fcn   # here: Keras (TensorFlow), imgaug

        train_ds = load_dataset(args.dataset, args.subset, args.limit)
        val_ds = load_dataset(args.dataset, args.val_subset) if args.val_subset else None
        result = train_fcn(train_ds, val_ds, args.logs, weights=args.weights or "imagenet",
                           epochs=args.epochs or 10, steps_per_epoch=args.steps_per_epoch or 100,
                           learning_rate=args.learning_rate or 1e-5,
                           augment=not args.no_augment, crop_size=args.crop_size,
                           batch_size=args.batch_size, eval_every=args.eval_every,
                           **({} if args.radius is None else {"radius": args.radius}))
        print(result)
        _print_run_curves(result["run_dir"])
        return 0
    from nucleus.training.train import train_nucleus   # here: TensorFlow, imgaug

    overrides = overrides_from_args(args)
    model = train_nucleus(logs=args.logs, options=TrainOptions.from_args(args),
                          **_mrcnn_train_kwargs(args, overrides))
    _print_run_curves(model.log_dir)
    print(f"checkpoints: {model.log_dir}")
    return 0


def _print_run_curves(run_dir: str | os.PathLike) -> None:
    """Draw a finished run's training curves (when it has a history) and say where."""
    from nucleus.scoring.plots import save_run_curves   # here: matplotlib, pandas (~0.5 s)

    png = save_run_curves(run_dir)
    if png is not None:
        print(f"training curves: {png}")


def _mrcnn_train_kwargs(args, overrides: dict[str, Any]) -> dict[str, Any]:
    """train_nucleus keywords besides ``logs`` and the options
    (:class:`nucleus.training.train_options.TrainOptions`) from the flags of ``train`` /
    ``sweep``."""
    profile = args.profile or "study"
    return dict(dataset_dir=args.dataset, subset=args.subset,
                weights=args.weights or ("none" if profile == "cpu" else "coco"),
                profile=profile, overrides=overrides, limit=args.limit)


def cmd_sweep(args) -> int:
    if args.model != "mrcnn":
        raise InputError("sweep: only --model mrcnn is supported")
    from nucleus.training.sweep import parse_axes, run_sweep, summary   # here: TensorFlow

    axes = parse_axes(args.set, parse_value)
    # --set NAME=V1,V2 is an axis; the configuration flags hold for all combinations.
    fixed = overrides_from_args(argparse.Namespace(**{**vars(args), "set": []}))
    result = run_sweep(axes, args.logs, args.name, options=TrainOptions.from_args(args),
                       **_mrcnn_train_kwargs(args, fixed))
    print("\n".join(summary(result)))
    print(f"table: {result.table}")
    print(f"figure: {result.figure or '(none: no validation mAP recorded yet)'}")
    return 0


def cmd_detect(args) -> int:
    from nucleus.scoring.plots import save_overlay   # here: matplotlib (~0.5 s)

    ds = load_dataset(args.dataset, args.subset, args.limit)
    detect = make_detector(args)
    os.makedirs(args.out, exist_ok=True)
    for image_id in tqdm(ds.image_ids, desc="detect"):
        image = ds.load_image(image_id)
        masks, scores = detect(image)
        name = ds.image_info[image_id]["id"]
        save_overlay(os.path.join(args.out, f"{name}.png"), image, masks, scores)
    print(f"{len(ds.image_ids)} overlays written to {args.out}")
    return 0


def cmd_evaluate(args) -> int:
    if args.submission:
        if not args.solution:
            raise InputError("evaluate: --submission needs --solution")
        unscored: list[str] = []
        mean, per_image = score_submission(args.submission, args.solution, progress=True,
                                           unscored=unscored)
        _print_precisions(metric.mean_precisions(list(per_image.values())))
        if unscored:
            print(f"not scored: {len(unscored)} images of the submission that the solution "
                  "does not label")
        print(f"images: {len(per_image)}")
        print(f"mAP: {mean:.4f}")
        return 0
    from nucleus.scoring.evaluation import evaluate_dataset   # here: Keras (TensorFlow)

    ds = load_dataset(args.dataset, args.subset, args.limit, solution=args.solution)
    detect = make_detector(args)
    on_image = None
    if args.plots:
        from nucleus.scoring.plots import save_evaluation   # here: matplotlib (~0.5 s)

        os.makedirs(args.plots, exist_ok=True)

        def save_plot(image_id, image, gt, pred, scores, s):
            name = ds.image_info[image_id]["id"]
            # The plot adds the DSB score; a 64-character id would not fit the title.
            save_evaluation(os.path.join(args.plots, f"{name}.png"), image, gt, pred, scores,
                            title=name[:12])
        on_image = save_plot
    result = evaluate_dataset(detect, ds, on_image=on_image)
    _print_precisions(result.precisions)
    tp, fp, fn = result.mean_counts(0.5)
    print(f"images: {len(result.scores)}  seconds/image: {result.seconds_per_image:.3f}  "
          f"per image at IoU 0.5: TP {tp:.1f} FP {fp:.1f} FN {fn:.1f}")
    _print_by_kind(result.by_kind())
    print(f"mAP: {result.map:.4f}")
    return 0


def _print_by_kind(by_kind: dict[str, tuple[int, float]]) -> None:
    """mAP of each image kind present (nucleus.kinds), with its number of images."""
    print("image kind     images  mAP")
    for kind, (count, value) in by_kind.items():
        print(f"{kind:<13} {count:>7}  {value:.4f}")


def _print_precisions(precisions: Sequence[float]) -> None:
    print("IoU threshold  precision")
    for t, p in zip(metric.THRESHOLDS, precisions):
        print(f"    {t:.2f}       {p:.4f}")


def cmd_submit(args) -> int:
    ds = load_dataset(args.dataset, args.subset, args.limit)
    detect = make_detector(args)
    out_dir = os.path.dirname(os.path.abspath(args.out))
    if not os.path.isdir(out_dir) or os.path.isdir(args.out):
        raise InputError(f"{args.out}: cannot write the submission there (no such folder, or it "
                         "is a folder)")
    shapes = {}
    # Write and validate a side file first, so a bad run never replaces a good submission.
    with atomic_path(args.out, suffix=".pending") as pending:
        with SubmissionWriter(pending) as writer:
            for image_id in tqdm(ds.image_ids, desc="submit"):
                image = ds.load_image(image_id)
                masks, _ = detect(image)
                name = ds.image_info[image_id]["id"]
                shapes[name] = image.shape[:2]
                writer.add(name, masks)
        check_submission(pending, shapes)
    print(f"submission written and validated: {args.out} ({len(shapes)} images)")
    return 0


def cmd_crossval(args) -> int:
    if args.model != "fcn":
        raise InputError("crossval: only --model fcn is supported (Mask R-CNN folds would take "
                         "days on a CPU)")
    from nucleus.fcn.crossval import run_crossval   # here: Keras (TensorFlow), matplotlib

    kwargs = {} if args.radius is None else {"radius": args.radius}
    out = run_crossval(args.dataset, args.subset, args.folds, args.logs, epochs=args.epochs,
                       steps_per_epoch=args.steps_per_epoch, eval_every=args.eval_every,
                       weights=args.weights or "imagenet", crop_size=args.crop_size,
                       batch_size=args.batch_size, learning_rate=args.learning_rate or 1e-5,
                       limit=args.limit, **kwargs)
    print(out)
    return 0


def cmd_pick_radius(args) -> int:
    from nucleus.fcn.train import tune_radius   # here: Keras (TensorFlow)

    model = NucleusModel.load(args.weights, kind="fcn", logs=args.logs)
    ds = load_dataset(args.dataset, args.subset, args.limit)
    radii = [int(r) for r in args.radii.split(",")]
    best, scores = tune_radius(model.detector(), ds, radii)
    for r in radii:
        print(f"radius {r}: mAP {scores[r]:.4f}")
    print(f"best radius: {best}")
    return 0


def cmd_curves(args) -> int:
    from nucleus.scoring.plots import save_run_curves   # here: matplotlib, pandas (~0.5 s)

    png = save_run_curves(args.run, args.out)
    if png is None:
        raise InputError(f"{RunFolder(args.run).history}: no training history in this run "
                         "folder")
    print(png)
    return 0


def _overlap(text: str) -> int | None:
    """``--overlap``: pixels, or ``auto`` (None: :func:`nucleus.inference.tiling.overlap_for`)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels or auto, got {text!r}") \
            from None


def cmd_segment(args) -> int:
    smallest = args.tile if args.tile is not None else FULL_MASK_TILE
    if smallest < 1 or (args.overlap is not None and not 0 <= args.overlap < smallest):
        raise InputError(f"--tile {args.tile} --overlap {args.overlap}: the overlap must be at "
                         "least 0 and smaller than the tile")

    def report(message: str) -> None:
        tqdm.write(f"error: {message}", file=sys.stderr)

    files, failed = collect_files(args.paths, args.out, report)
    summary = None
    if files and (args.workers or args.scheduler):
        from nucleus.inference.parallel import dask_client, segment_files_dask   # here: Dask

        spec = _detector_spec(args)
        with dask_client(args.workers, args.scheduler) as client:
            summary = segment_files_dask(files, args.out, spec, client, channel=args.channel,
                                         tile=args.tile, overlap=args.overlap, on_error=report,
                                         rois=args.rois, geojson=args.geojson)
    elif files:
        summary = segment_files(files, args.out, make_detector(args), channel=args.channel,
                                tile=args.tile, overlap=args.overlap, on_error=report,
                                rois=args.rois, geojson=args.geojson)
    if summary is not None:
        failed += summary.failed
        if summary.images:
            print(f"{summary.images} images, {summary.nuclei} nuclei: label images and overlays "
                  f"in {args.out}, table {os.path.join(args.out, TABLE_NAME)}")
    if failed:
        print(f"{len(failed)} of {len(failed) + (summary.images if summary else 0)} inputs "
              "failed (see the error lines above)", file=sys.stderr)
        return 2
    return 0


def cmd_export_labels(args) -> int:
    from nucleus.formats.export import export_labels, parse_subsets   # here: scikit-image

    summary = export_labels(args.dataset, parse_subsets(args.subset), args.out,
                            overwrite=args.overwrite, limit=args.limit)
    print("\n".join(summary.lines()))
    return 0


def cmd_compare(args) -> int:
    from nucleus.scoring.plots import save_comparison   # here: matplotlib (~0.5 s)

    ds = load_dataset(args.dataset, args.subset, args.limit)
    mrcnn_detect = make_detector(args)
    fcn_args = argparse.Namespace(**{**vars(args), "model": "fcn", "weights": args.fcn_weights})
    fcn_detect = make_detector(fcn_args)
    os.makedirs(args.out, exist_ok=True)
    for image_id in tqdm(ds.image_ids, desc="compare"):
        image = ds.load_image(image_id)
        gt, _ = ds.load_mask(image_id)
        name = ds.image_info[image_id]["id"]
        save_comparison(os.path.join(args.out, f"{name}.png"), image,
                        {"Ground truth": gt, "FCN-8s": fcn_detect(image)[0],
                         "Mask R-CNN": mrcnn_detect(image)[0]}, reference="Ground truth")
    print(f"{len(ds.image_ids)} comparisons written to {args.out}")
    return 0


COMMANDS = {"train": cmd_train, "sweep": cmd_sweep, "detect": cmd_detect,
            "evaluate": cmd_evaluate, "submit": cmd_submit, "crossval": cmd_crossval,
            "pick-radius": cmd_pick_radius, "curves": cmd_curves, "compare": cmd_compare,
            "segment": cmd_segment, "export-labels": cmd_export_labels}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")

    try:
        return COMMANDS[args.command](args)
    except (InputError, WeightsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())


def reference_markdown() -> str:
    """Every command and flag as Markdown (the README's command reference is this text)."""
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    lines = []
    for name, command in sub.choices.items():
        lines += [f"### `{name}`: {helps.get(name, '')}", "", "| flag | meaning |", "|---|---|"]
        for action in command._actions:
            if not action.option_strings or "-h" in action.option_strings:
                continue
            flag = ", ".join(action.option_strings)
            if action.metavar or (action.nargs != 0 and not isinstance(
                    action, argparse._StoreTrueAction)):
                flag += f" {action.metavar or action.dest.upper()}"
            text = (action.help or "").replace("|", "\\|")
            if action.choices:
                choices = " \\| ".join(map(str, action.choices))
                text += f" ({choices})"
            lines.append(f"| `{flag}` | {text} |")
        for action in command._actions:
            if not action.option_strings and action.dest != "help":
                lines.append(f"| `{action.dest}` (positional) | {action.help} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
