"""Speed and memory of Mask R-CNN training and detection on this machine (never asserts).

Why: the port's claim is that a training step and a ``detect`` call are much cheaper than in
matterport's TF2 fork on the same kind of CPU. This script measures both on the study's 512x512
configuration (``NucleusConfig``, batch 1), breaks the training step into stages (forward and
forward+backward, each compiled on its own), counts each stage's multiply-accumulates, measures
the machine's own convolution throughput so figures from other machines compare by ratio, and
records peak memory. It prints markdown tables and can write the same figures as JSON.

Usage::

    python benchmarks/speed.py [--backbones resnet50 resnet101] [--repeats 5] [--warmup 1]
        [--size 512] [--layers all heads] [--mixed-precision] [--mask-head positive|all]
        [--compare-mask-head] [--no-stages] [--no-detect] [--detections N] [--json out.json]

Run it on an otherwise idle machine: every figure is wall time.

Weights are random: speed does not depend on their values, except through the number of
detections, which sets the cost of the inference mask head and of pasting masks. So for
``detect`` the class-logit bias is set to call every ROI a confident nucleus and
``DETECTION_MAX_INSTANCES`` is the number of nuclei in the benchmark image (``--detections``
changes it): the workload of a trained model that finds them all.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mrcnn import box_ops, heads, losses, utils  # noqa: E402
from mrcnn.data import build_training_sample  # noqa: E402
from mrcnn.model import LAYER_REGEX, MaskRCNN  # noqa: E402
from mrcnn.proposals import propose  # noqa: E402
from mrcnn.roi_align import pyramid_roi_align  # noqa: E402
from mrcnn.targets import detection_targets  # noqa: E402
from nucleus.config import make_config  # noqa: E402
from nucleus.dataset import NucleusDataset  # noqa: E402
from nucleus.io_utils import atomic_write  # noqa: E402

BACKBONES = ("resnet50", "resnet101")
BACKBONE_TITLES = {"resnet50": "ResNet-50", "resnet101": "ResNet-101"}

# matterport's TF2 fork on this kind of machine (ResNet-50, 512x512, batch 1), from the issue,
# and the share of it we aim for.
REFERENCE_SECONDS = {"step_all": 4.97, "step_heads": 4.47, "detect": 1.31}
TARGET_SHARE = {"step_all": 0.40, "step_heads": 0.40, "detect": 0.60}
REFERENCE_SIZE, REFERENCE_BACKBONE = 512, "resnet50"

# Row labels of the summary table (tests look for them).
ROW_STEP_ALL = "train step, layers all (s)"
ROW_STEP_HEADS = "train step, layers heads (s)"
ROW_STEP_MASK_POSITIVE = "train step, layers all, mask head on positive ROIs (s)"
ROW_STEP_MASK_ALL = "train step, layers all, mask head on all ROIs (s)"
ROW_DETECT = "detect, one image (s)"
ROW_DETECT_GRAPH = "detect: inference graph only (s)"
ROW_DETECTIONS = "detections per image"
ROW_TRAIN_GMAC = "training forward (GMAC)"
ROW_INFER_GMAC = "inference forward (GMAC)"
ROW_RSS = "peak RSS so far (MB)"

# Stage labels of the breakdown table.
STAGE_DATA_COLD = "data loading, first read"
STAGE_DATA_WARM = "data loading, labels cached"
STAGE_BACKBONE = "backbone + FPN"
STAGE_RPN = "RPN + proposals"
STAGE_TARGETS = "ROI sampling (detection targets)"
STAGE_BOX = "box head (+ ROIAlign)"
STAGE_MASK_POSITIVE = "mask head, positive ROIs (+ ROIAlign)"
STAGE_MASK_ALL = "mask head, all ROIs (+ ROIAlign)"
STAGE_BOX_INFER = "box head, inference proposals"
STAGE_MASK_INFER = "mask head, inference detections"

FLOPS_METHOD = (
    "analytic, from the static shapes of every Conv2D, Conv2DBackpropInput (deconv) and MatMul "
    "op in each stage's traced forward graph: conv = H_out*W_out*k*k*C_in*C_out, "
    "deconv = H_in*W_in*k*k*C_in*C_out, dense = rows*in*out. 1 MAC = 2 FLOPs. ROIAlign, NMS, "
    "BatchNorm and elementwise ops are not counted; a backward pass costs about 2x the forward "
    "MACs of the layers it goes through.")

CONV_BENCH_SHAPE = (128, 256)  # 3x3 conv, 256 -> 256 channels, on 128x128: 9.66 GMAC


# --------------------------------------------------------------------------- measuring
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (tracemalloc does not see TF)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2 ** 20 if sys.platform == "darwin" else peak / 1024  # bytes vs KB


def current_rss_mb() -> float | None:
    """Resident set size now, in MB (Linux only; None elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _compile(fn: Callable) -> Callable:
    """tf.function without AutoGraph: these small graphs have no tensor-dependent Python
    control flow, and AutoGraph cannot read the source of lambdas."""
    return tf.function(fn, autograph=False)


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after one tracing call and ``warmup``
    more. ``fn`` must return only once its work is done (read a small result back)."""
    fn()  # traces and compiles tf.functions
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(statistics.median(times))


def _value(x) -> float:
    """Read a scalar tensor back, which also waits for the computation."""
    return float(np.asarray(x))


def conv_throughput(dtype: tf.DType, repeats: int, warmup: int = 1) -> float:
    """GMAC/s of one 3x3 256->256 convolution on a 128x128 map: the machine's yardstick."""
    size, channels = CONV_BENCH_SHAPE
    x = tf.cast(tf.random.normal([1, size, size, channels]), dtype)
    w = tf.cast(tf.random.normal([3, 3, channels, channels], stddev=0.05), dtype)
    conv = _compile(lambda a, b: tf.reduce_sum(tf.cast(tf.nn.conv2d(a, b, 1, "SAME"),
                                                          tf.float32)))
    seconds = median_seconds(lambda: _value(conv(x, w)), max(3, repeats), warmup)
    return size * size * 9 * channels * channels / seconds / 1e9


def _op_macs(op: tf.Operation) -> int | None:
    """Multiply-accumulates of one conv/deconv/matmul op, or None when a shape is unknown."""
    if op.type == "Conv2D":
        out, kernel = op.outputs[0].shape, op.inputs[1].shape
        dims = list(out) + list(kernel[:3])
        if any(d is None for d in dims):
            return None
        return int(np.prod(out)) * kernel[0] * kernel[1] * kernel[2]
    if op.type == "Conv2DBackpropInput":  # transposed conv: every input cell hits k*k*C_out
        grad, kernel = op.inputs[2].shape, op.inputs[1].shape
        dims = list(grad) + list(kernel)
        if any(d is None for d in dims):
            return None
        return int(np.prod(grad)) * kernel[0] * kernel[1] * kernel[2]
    if op.type in ("MatMul", "BatchMatMulV2"):
        a, out = op.inputs[0].shape, op.outputs[0].shape
        adjoint = op.get_attr("transpose_a" if op.type == "MatMul" else "adj_x")
        inner = a[-2] if adjoint else a[-1]
        if inner is None or any(d is None for d in out):
            return None
        return int(np.prod(out)) * inner
    return 0


def _scaled(per_roi: float | None, count: int) -> float | None:
    return None if per_roi is None else per_roi * count


def graph_gmacs(fn: Callable, *specs) -> float | None:
    """GMACs of the conv/deconv/matmul ops of ``fn`` traced on fixed-shape ``specs``."""
    concrete = _compile(fn).get_concrete_function(*specs)
    total = 0
    for op in concrete.graph.get_operations():
        macs = _op_macs(op)
        if macs is None:
            return None
        total += macs
    return total / 1e9


# --------------------------------------------------------------------------- configuration
def _overrides(backbone: str, opts: argparse.Namespace) -> dict:
    values = {"BACKBONE": backbone, "IMAGES_PER_GPU": 1, "IMAGE_MIN_DIM": opts.size,
              "IMAGE_MAX_DIM": opts.size, "MASK_HEAD_POSITIVE_ONLY": opts.mask_head == "positive"}
    if opts.mixed_precision:
        values["MIXED_PRECISION"] = "mixed_bfloat16"
    return values


def training_config(backbone: str, opts: argparse.Namespace):
    """The study's configuration at ``opts.size``, batch 1, with ``backbone``."""
    return make_config("study", overrides=_overrides(backbone, opts))


def inference_config(backbone: str, opts: argparse.Namespace, detections: int):
    """Inference twin of :func:`training_config` keeping at most ``detections`` boxes."""
    values = _overrides(backbone, opts)
    values["DETECTION_MAX_INSTANCES"] = detections
    return make_config("study", inference=True, overrides=values)


def pick_image(dataset: NucleusDataset) -> int:
    """The bundled sample image with the most nuclei (stage1_train averages ~44 per image):
    a busy image, so positive ROIs and detections are plentiful rather than flattering."""
    counts = [len(dataset.image_info[i]["mask_paths"]) for i in dataset.image_ids]
    return int(dataset.image_ids[int(np.argmax(counts))])


# --------------------------------------------------------------------------- training step
def train_step_seconds(model: MaskRCNN, batch: dict, layers: str, positive_only: bool,
                       opts: argparse.Namespace) -> float:
    """Median seconds of the real ``train_step`` (compiled) with ``layers`` trainable."""
    net = model.keras_model
    model.config.MASK_HEAD_POSITIVE_ONLY = positive_only
    model.set_trainable(LAYER_REGEX[layers])
    model.compile(model.config.LEARNING_RATE, model.config.LEARNING_MOMENTUM)
    net.optimizer.build(net.trainable_variables)
    step = tf.function(net.train_step)  # a fresh trace: trainable set and mask mode changed
    return median_seconds(lambda: _value(step((batch,))["loss"]), opts.repeats, opts.warmup)


def _mean_of(tensors) -> tf.Tensor:
    return tf.add_n([tf.reduce_mean(tf.cast(t, tf.float32)) for t in tensors])


def _grad_norm(grads) -> tf.Tensor:
    """Consume every gradient (so no backward op is pruned) the way clipping does."""
    return tf.linalg.global_norm([tf.cast(g, tf.float32) for g in grads if g is not None])


def _layer_variables(layers: dict) -> list:
    return [v for layer in layers.values() for v in layer.trainable_weights]


def stage_breakdown(model: MaskRCNN, batch: dict, opts: argparse.Namespace) -> list[dict]:
    """Forward and forward+backward seconds and forward GMACs of each stage of the training
    step, each stage compiled on its own and fed the outputs of the real previous stage."""
    config, net = model.config, model.keras_model
    model.set_trainable(LAYER_REGEX["all"])
    reps, warm = opts.repeats, opts.warmup
    size = opts.size
    image_shape = tf.constant([size, size], tf.int32)
    images = tf.cast(batch["input_image"], tf.float32)
    maps = [tf.identity(m) for m in net.features(images, False)]
    head_maps = maps[:4]
    anchors = tf.constant(utils.norm_boxes(net.train_anchors, (size, size)), tf.float32)
    rpn_match, rpn_bbox = batch["input_rpn_match"], tf.cast(batch["input_rpn_bbox"], tf.float32)
    dtype = net.compute_dtype
    rows = []

    # Backbone + FPN.
    def backbone_fb(x):
        with tf.GradientTape() as tape:
            loss = _mean_of(net.features(x, True))
        return _grad_norm(tape.gradient(loss, net.backbone.trainable_variables))

    fwd = _compile(lambda x: _mean_of(net.features(x, True)))
    fb = _compile(backbone_fb)
    rows.append({
        "stage": STAGE_BACKBONE, "inputs": f"1 image {size}x{size}",
        "forward_s": median_seconds(lambda: _value(fwd(images)), reps, warm),
        "forward_backward_s": median_seconds(lambda: _value(fb(images)), reps, warm),
        "gmac": graph_gmacs(lambda x: net.features(x, False),
                            tf.TensorSpec([1, size, size, config.IMAGE_CHANNEL_COUNT])),
        "per_roi_gmac": None})

    # RPN + proposals (proposals get no gradient; the RPN losses do, into the pyramid too).
    def rpn_forward(feature_maps):
        logits, probs, deltas = net.rpn(feature_maps)
        proposals = propose(probs, deltas, anchors, config.POST_NMS_ROIS_TRAINING,
                            config.RPN_NMS_THRESHOLD, config.PRE_NMS_LIMIT,
                            config.RPN_BBOX_STD_DEV)
        return logits, deltas, proposals

    def rpn_fb(feature_maps):
        variables = net.rpn_model.trainable_variables
        with tf.GradientTape() as tape:
            tape.watch(feature_maps)
            logits, deltas, proposals = rpn_forward(feature_maps)
            loss = (losses.rpn_class_loss(rpn_match, logits)
                    + losses.rpn_bbox_loss(rpn_bbox, rpn_match, deltas))
        grads = tape.gradient(loss, variables + list(feature_maps))
        return _grad_norm(grads) + tf.reduce_sum(proposals)

    rpn_fwd = _compile(rpn_forward)
    fb = _compile(rpn_fb)
    rows.append({
        "stage": STAGE_RPN, "inputs": f"P2-P6, {config.POST_NMS_ROIS_TRAINING} proposals",
        "forward_s": median_seconds(lambda: _value(tf.reduce_sum(rpn_fwd(maps)[2])), reps, warm),
        "forward_backward_s": median_seconds(lambda: _value(fb(maps)), reps, warm),
        "gmac": graph_gmacs(lambda *m: net.rpn(list(m)),
                            *[tf.TensorSpec(m.shape, m.dtype) for m in maps]),
        "per_roi_gmac": None})
    proposals = rpn_fwd(maps)[2]

    # ROI sampling: forward only, no weights.
    gt_ids = tf.cast(batch["input_gt_class_ids"], tf.int32)
    gt_boxes = box_ops.norm_boxes(tf.cast(batch["input_gt_boxes"], tf.float32), image_shape)
    gt_masks = tf.cast(batch["input_gt_masks"], tf.float32)
    targets = _compile(lambda p: detection_targets(p, gt_ids, gt_boxes, gt_masks, config))
    rows.append({
        "stage": STAGE_TARGETS, "inputs": f"-> {config.TRAIN_ROIS_PER_IMAGE} ROIs",
        "forward_s": median_seconds(lambda: _value(tf.reduce_sum(targets(proposals)[0])),
                                    reps, warm),
        "forward_backward_s": None, "gmac": 0.0, "per_roi_gmac": None})
    rois, target_ids, target_deltas, target_masks = targets(proposals)
    flat_rois = tf.reshape(rois, [-1, 4])
    box_indices = tf.zeros([tf.shape(flat_rois)[0]], tf.int32)
    flat_ids = tf.reshape(target_ids, [-1])
    flat_deltas = tf.reshape(target_deltas, [-1, 4])
    valid = tf.reduce_sum(tf.abs(flat_rois), axis=1) > 0
    positive = tf.where(flat_ids > 0)[:, 0]
    n_pos, n_rois = int(positive.shape[0]), int(flat_rois.shape[0])
    pos_ids = tf.gather(flat_ids, positive)
    pos_masks = tf.gather(tf.reshape(target_masks, [-1] + list(config.MASK_SHAPE)), positive)
    depth = config.TOP_DOWN_PYRAMID_SIZE

    # Box head on every sampled ROI.
    def box_forward(feature_maps):
        pooled = pyramid_roi_align(flat_rois, box_indices, feature_maps, config.POOL_SIZE,
                                   image_shape)
        return heads.box_head(net.box_layers, pooled, True)

    def box_fb(feature_maps):
        variables = _layer_variables(net.box_layers)
        with tf.GradientTape() as tape:
            tape.watch(feature_maps)
            logits, _, deltas = box_forward(feature_maps)
            loss = (losses.mrcnn_class_loss(flat_ids, logits, valid)
                    + losses.mrcnn_bbox_loss(flat_deltas, flat_ids, deltas))
        return _grad_norm(tape.gradient(loss, variables + list(feature_maps)))

    fwd = _compile(lambda m: tf.reduce_sum(box_forward(m)[0]))
    fb = _compile(box_fb)
    box_gmac_per_roi = graph_gmacs(lambda p: heads.box_head(net.box_layers, p, False),
                                   tf.TensorSpec([1, config.POOL_SIZE, config.POOL_SIZE, depth],
                                                 dtype))
    rows.append({
        "stage": STAGE_BOX, "inputs": f"{n_rois} ROIs",
        "forward_s": median_seconds(lambda: _value(fwd(head_maps)), reps, warm),
        "forward_backward_s": median_seconds(lambda: _value(fb(head_maps)), reps, warm),
        "gmac": _scaled(box_gmac_per_roi, n_rois), "per_roi_gmac": box_gmac_per_roi})

    # Mask head: on the positive ROIs only, or on all of them as matterport does.
    mask_gmac_per_roi = graph_gmacs(
        lambda p: heads.mask_head(net.mask_layers, p, False),
        tf.TensorSpec([1, config.MASK_POOL_SIZE, config.MASK_POOL_SIZE, depth], dtype))

    def mask_forward(feature_maps, positive_only: bool):
        if positive_only:
            pooled = pyramid_roi_align(tf.gather(flat_rois, positive),
                                       tf.gather(box_indices, positive), feature_maps,
                                       config.MASK_POOL_SIZE, image_shape)
            return heads.mask_head(net.mask_layers, pooled, True)
        pooled = pyramid_roi_align(flat_rois, box_indices, feature_maps, config.MASK_POOL_SIZE,
                                   image_shape)
        return tf.gather(heads.mask_head(net.mask_layers, pooled, True), positive)

    for positive_only, label, count in ((True, STAGE_MASK_POSITIVE, n_pos),
                                        (False, STAGE_MASK_ALL, n_rois)):
        def mask_fb(feature_maps, positive_only=positive_only):
            variables = _layer_variables(net.mask_layers)
            with tf.GradientTape() as tape:
                tape.watch(feature_maps)
                pred = mask_forward(feature_maps, positive_only)
                loss = losses.mrcnn_mask_loss(pos_masks, pos_ids, pred)
            return _grad_norm(tape.gradient(loss, variables + list(feature_maps)))

        fwd = _compile(lambda m, p=positive_only: tf.reduce_sum(mask_forward(m, p)))
        fb = _compile(mask_fb)
        rows.append({
            "stage": label, "inputs": f"{count} ROIs ({n_pos} positive)",
            "forward_s": median_seconds(lambda: _value(fwd(head_maps)), reps, warm),
            "forward_backward_s": median_seconds(lambda: _value(fb(head_maps)), reps, warm),
            "gmac": _scaled(mask_gmac_per_roi, count), "per_roi_gmac": mask_gmac_per_roi})
    return rows


def data_loading_rows(dataset: NucleusDataset, config, anchors: np.ndarray,
                      opts: argparse.Namespace) -> list[dict]:
    """Seconds per ``build_training_sample``: first read of an image (masks decoded from PNG),
    then again with its label image cached (every later epoch)."""
    ids = list(dataset.image_ids)[:max(3, opts.repeats)]
    rows = []
    for label in (STAGE_DATA_COLD, STAGE_DATA_WARM):
        times = []
        for image_id in ids:
            start = time.perf_counter()
            build_training_sample(dataset, config, int(image_id), anchors)
            times.append(time.perf_counter() - start)
        rows.append({"stage": label, "inputs": f"median of {len(ids)} sample images",
                     "forward_s": float(statistics.median(times)), "forward_backward_s": None,
                     "gmac": None, "per_roi_gmac": None})
    return rows


# --------------------------------------------------------------------------- per backbone
def bench_training(backbone: str, opts: argparse.Namespace, dataset: NucleusDataset,
                   image_id: int, model_dir: str, bar: tqdm) -> dict:
    config = training_config(backbone, opts)
    model = MaskRCNN("training", config, model_dir=model_dir)
    net = model.keras_model
    sample = build_training_sample(dataset, config, image_id, net.train_anchors)
    if sample is None:
        raise ValueError(f"image {dataset.image_info[image_id]['path']} has no nucleus left at "
                         f"{opts.size}x{opts.size}: choose a larger --size")
    batch = {k: tf.constant(v[None]) for k, v in sample.items()}
    default_positive = opts.mask_head == "positive"
    out: dict[str, Any] = {}

    for layers in opts.layers:
        bar.set_description(f"{backbone}: train step, layers {layers}")
        out[f"step_{layers}"] = train_step_seconds(model, batch, layers, default_positive, opts)
        bar.update()
    if opts.compare_mask_head:
        bar.set_description(f"{backbone}: train step, other mask-head mode")
        same = out.get("step_all")
        if same is None:
            same = train_step_seconds(model, batch, "all", default_positive, opts)
        other = train_step_seconds(model, batch, "all", not default_positive, opts)
        out["step_all_mask_positive"] = same if default_positive else other
        out["step_all_mask_all"] = other if default_positive else same
        model.config.MASK_HEAD_POSITIVE_ONLY = default_positive
    bar.update()
    if opts.stages:
        bar.set_description(f"{backbone}: stage breakdown")
        out["stages"] = (data_loading_rows(dataset, config, net.train_anchors, opts)
                         + stage_breakdown(model, batch, opts))
        gmac = {r["stage"]: r["gmac"] for r in out["stages"]}
        mask = STAGE_MASK_POSITIVE if default_positive else STAGE_MASK_ALL
        parts = [gmac[STAGE_BACKBONE], gmac[STAGE_RPN], gmac[STAGE_BOX], gmac[mask]]
        out["train_gmac"] = None if None in parts else sum(parts)
    bar.update()
    out["peak_rss_mb_training"] = peak_rss_mb()
    del model, net, batch
    _free()
    return out


def force_foreground(model: MaskRCNN, margin: float = 10.0) -> None:
    """Bias the class logits so every ROI is a confident non-background class: random weights
    would otherwise give anywhere from zero to hundreds of detections, and detection count is
    what the inference mask head's cost depends on."""
    layer = model.keras_model.box_layers["mrcnn_class_logits"]
    kernel, bias = layer.get_weights()
    bias = np.full_like(bias, margin)
    bias[0] = -margin
    layer.set_weights([np.zeros_like(kernel), bias])


def bench_detect(backbone: str, opts: argparse.Namespace, dataset: NucleusDataset,
                 image_id: int, model_dir: str, stages: list[dict] | None) -> dict:
    """Median seconds of ``detect`` on one size x size image, and of its graph alone."""
    detections = opts.detections or len(dataset.image_info[image_id]["mask_paths"])
    config = inference_config(backbone, opts, detections)
    model = MaskRCNN("inference", config, model_dir=model_dir)
    force_foreground(model)
    image = utils.resize_image(dataset.load_image(image_id), min_dim=opts.size,
                               max_dim=opts.size, mode="square")[0]
    out: dict[str, Any] = {}
    out["detect"] = median_seconds(lambda: model.detect([image]), opts.repeats, opts.warmup)
    result = model.detect([image])[0]
    out["detections"] = int(len(result["scores"]))

    molded, _, windows = model.mold_inputs([image])
    window = tf.constant(utils.norm_boxes(np.array(windows[0], np.float32), molded[0].shape[:2]),
                         tf.float32)
    anchors = tf.constant(model.get_anchors(molded[0].shape))
    molded = tf.constant(molded[0][None])
    infer = model.keras_model.infer
    out["detect_graph"] = median_seconds(
        lambda: infer(molded, anchors, window)["detections"].numpy(), opts.repeats, opts.warmup)
    n_proposals = int(infer(molded, anchors, window)["proposals"].shape[0])
    out["proposals"] = n_proposals
    if stages:
        rows = {r["stage"]: r for r in stages}
        box, mask = rows[STAGE_BOX]["per_roi_gmac"], rows[STAGE_MASK_POSITIVE]["per_roi_gmac"]
        extra = [{"stage": STAGE_BOX_INFER, "inputs": f"{n_proposals} ROIs", "forward_s": None,
                  "forward_backward_s": None, "gmac": _scaled(box, n_proposals),
                  "per_roi_gmac": box},
                 {"stage": STAGE_MASK_INFER, "inputs": f"{out['detections']} ROIs",
                  "forward_s": None, "forward_backward_s": None,
                  "gmac": _scaled(mask, out["detections"]), "per_roi_gmac": mask}]
        stages.extend(extra)
        parts = [rows[STAGE_BACKBONE]["gmac"], rows[STAGE_RPN]["gmac"], extra[0]["gmac"],
                 extra[1]["gmac"]]
        out["infer_gmac"] = None if None in parts else sum(parts)
    out["peak_rss_mb"] = peak_rss_mb()
    del model
    _free()
    return out


def _free() -> None:
    keras.backend.clear_session()
    gc.collect()


# --------------------------------------------------------------------------- report
def machine_info() -> dict:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    return {"cpu": model, "cores": cores, "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def format_report(results: dict) -> str:
    """Markdown tables of ``results`` (as :func:`run` returns them)."""
    s, m = results["settings"], results["machine"]
    names = list(results["backbones"])
    lines = [f"# Mask R-CNN speed, {s['size']}x{s['size']}, batch 1, "
             f"policy {s['dtype_policy']}, mask head on {s['mask_head']} ROIs",
             "",
             f"Machine: {m['cpu']}, {m['cores']} cores, TF {m['tensorflow']}, Keras "
             f"{m['keras']}; load average at start {m['load_average_at_start']}. Median of "
             f"{s['repeats']} repeat(s) after {s['warmup']} warm-up call(s) (plus the tracing "
             "call).",
             ""]
    conv = results["conv_gmacs_per_s"]
    lines.append("Convolution throughput (3x3, 256->256, 128x128): "
                 + ", ".join(f"{k} {v:.1f} GMAC/s" for k, v in conv.items())
                 + ". Divide another machine's figure by its ratio to compare.")
    lines.append("")
    comparable = s["size"] == REFERENCE_SIZE and REFERENCE_BACKBONE in names
    header = ["measurement"] + [BACKBONE_TITLES.get(n, n) for n in names]
    header += ["matterport TF2, R50 @512", "target", "R50 / matterport"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))

    def row(label: str, key: str, ref_key: str | None = None, digits: int = 3) -> None:
        values = [results["backbones"][n].get(key) for n in names]
        if all(v is None for v in values) and key not in ("step_all", "step_heads", "detect"):
            return
        cells = [label] + [_fmt(v, digits) for v in values]
        if ref_key:
            ref = REFERENCE_SECONDS[ref_key]
            ours = results["backbones"].get(REFERENCE_BACKBONE, {}).get(key)
            ratio = "-" if ours is None else f"{ours / ref:.0%}"
            if ours is not None and not comparable:
                ratio += " (not at 512)"
            cells += [f"{ref:.2f}", f"<= {TARGET_SHARE[ref_key]:.0%} "
                      f"({ref * TARGET_SHARE[ref_key]:.2f})", ratio]
        else:
            cells += ["", "", ""]
        lines.append("| " + " | ".join(cells) + " |")

    row(ROW_STEP_ALL, "step_all", "step_all")
    row(ROW_STEP_HEADS, "step_heads", "step_heads")
    row(ROW_STEP_MASK_POSITIVE, "step_all_mask_positive")
    row(ROW_STEP_MASK_ALL, "step_all_mask_all")
    row(ROW_DETECT, "detect", "detect")
    row(ROW_DETECT_GRAPH, "detect_graph")
    row(ROW_DETECTIONS, "detections")
    row(ROW_TRAIN_GMAC, "train_gmac", digits=1)
    row(ROW_INFER_GMAC, "infer_gmac", digits=1)
    row(ROW_RSS, "peak_rss_mb", digits=0)
    lines.append("")
    lines.append(f"Baseline RSS with TensorFlow loaded: {results['baseline_rss_mb']:.0f} MB. "
                 "Peak RSS is per process, so a backbone measured after another includes "
                 "its leftovers: run one backbone at a time for a clean figure.")
    lines.append(f"Image: {s['image']} ({s['image_nuclei']} nuclei), square-resized. detect "
                 f"keeps up to {s['detections']} detections (random weights, every ROI scored "
                 "a nucleus): its time grows with the number of detections.")

    for name in names:
        stages = results["backbones"][name].get("stages")
        if not stages:
            continue
        lines += ["", f"## Stages, {BACKBONE_TITLES.get(name, name)} (training step unless "
                  "marked inference)", "",
                  "| stage | inputs | forward (s) | forward+backward (s) | forward GMAC |",
                  "|---|---|---|---|---|"]
        for r in stages:
            lines.append(f"| {r['stage']} | {r['inputs']} | {_fmt(r['forward_s'])} | "
                         f"{_fmt(r['forward_backward_s'])} | {_fmt(r['gmac'], 2)} |")
    if any(results["backbones"][n].get("stages") for n in names):
        lines += ["", "Data loading runs in DataGenerator threads beside the step. "
                  f"FLOPs: {FLOPS_METHOD}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls after the tracing call")
    parser.add_argument("--size", type=int, default=512, help="image side (multiple of 64)")
    parser.add_argument("--layers", nargs="+", choices=("all", "heads"), default=["all", "heads"],
                        help="trainable layer groups to time the training step with")
    parser.add_argument("--mixed-precision", action="store_true",
                        help='MIXED_PRECISION="mixed_bfloat16" (and a bfloat16 conv yardstick)')
    parser.add_argument("--mask-head", choices=("positive", "all"), default="positive",
                        help="training mask head on positive ROIs only or on all (matterport)")
    parser.add_argument("--compare-mask-head", action="store_true",
                        help="time the layers-all step with the mask head both ways")
    parser.add_argument("--no-stages", dest="stages", action="store_false",
                        help="skip the per-stage breakdown")
    parser.add_argument("--no-detect", dest="detect", action="store_false",
                        help="skip the detect timing")
    parser.add_argument("--detections", type=int, default=None,
                        help="detections per detect call (default: the image's nucleus count)")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    opts = parser.parse_args(argv)
    if opts.size < 64 or opts.size % 64:
        parser.error(f"--size must be a positive multiple of 64, got {opts.size}")
    if opts.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {opts.repeats}")
    if opts.detections is not None and opts.detections < 1:
        parser.error(f"--detections must be at least 1, got {opts.detections}")
    if opts.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {opts.warmup}")
    if opts.json:
        folder = Path(opts.json).resolve().parent
        if not folder.is_dir():
            parser.error(f"--json {opts.json}: folder {folder} does not exist")
    return opts


def run(opts: argparse.Namespace) -> dict:
    """Every measurement for the backbones in ``opts``; a JSON-ready dict."""
    policy = "mixed_bfloat16" if opts.mixed_precision else "float32"
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        results: dict[str, Any] = {
            "machine": machine_info(),
            "settings": {"size": opts.size, "repeats": opts.repeats, "warmup": opts.warmup,
                         "dtype_policy": policy, "mask_head": opts.mask_head,
                         "detections": opts.detections},
            "baseline_rss_mb": current_rss_mb() or peak_rss_mb(),
            "reference_seconds": REFERENCE_SECONDS, "target_share": TARGET_SHARE,
            "flops_method": FLOPS_METHOD, "backbones": {}}
        dataset = NucleusDataset()
        dataset.load_nucleus(None, "stage1_train")
        dataset.prepare()
        image_id = pick_image(dataset)
        results["settings"]["image"] = Path(dataset.image_info[image_id]["path"]).name
        results["settings"]["image_nuclei"] = len(dataset.image_info[image_id]["mask_paths"])
        results["settings"]["detections"] = (opts.detections
                                             or results["settings"]["image_nuclei"])
        conv = {"float32": conv_throughput(tf.float32, opts.repeats, opts.warmup)}
        if opts.mixed_precision:
            conv["bfloat16"] = conv_throughput(tf.bfloat16, opts.repeats, opts.warmup)
        results["conv_gmacs_per_s"] = conv
        with tempfile.TemporaryDirectory() as model_dir, \
                tqdm(total=(len(opts.layers) + 3) * len(opts.backbones), desc="speed", unit="part",
                     leave=False) as bar:
            for backbone in opts.backbones:
                out = bench_training(backbone, opts, dataset, image_id, model_dir, bar)
                if opts.detect:
                    bar.set_description(f"{backbone}: detect")
                    out.update(bench_detect(backbone, opts, dataset, image_id, model_dir,
                                            out.get("stages")))
                else:
                    out["peak_rss_mb"] = peak_rss_mb()
                bar.update()
                results["backbones"][backbone] = out
        return results
    finally:
        keras.mixed_precision.set_global_policy(previous)


def main(argv: list[str] | None = None) -> dict:
    """Command line: measure, print the markdown report, optionally write JSON; returns the
    results with the report under ``"report"``."""
    opts = parse_args(argv)
    results = run(opts)
    report = format_report(results)
    print(report)
    if opts.json:
        with atomic_write(opts.json) as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    results["report"] = report
    return results


if __name__ == "__main__":
    main()
