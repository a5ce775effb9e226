"""Speed and memory of Mask R-CNN training and detection on this machine (never asserts).

Why: the port's claim is that a training step and a ``detect`` call are much cheaper than in
matterport's TF2 fork on the same kind of CPU, and that the backend-agnostic network is no slower
on TensorFlow than before. This script measures both on the study's 512x512 configuration
(``NucleusConfig``, batch 1) under the Keras backend ``KERAS_BACKEND`` selects (TensorFlow or
JAX; under JAX nothing imports TensorFlow):

* the whole training step as ``fit`` runs it (Keras's own trainer, ``train_on_batch`` after
  ``MaskRCNN.compile``) and ``MaskRCNN.detect``: the first call (tracing, or JAX's compilation)
  and the median of the later ones, separately;
* a breakdown of the training step into its stages, forward and forward+backward, each calling
  the library's own stage (``MaskRCNNNet.features``/``rpn``, ``proposals.propose``,
  ``targets.detection_targets``, ``roi_align.pyramid_roi_align``, ``heads.box_head``/
  ``mask_head``, ``losses.*``) compiled on its own (``tf.function`` under TensorFlow, ``jax.jit``
  on the model's variables under JAX) and fed the outputs of the real previous stage;
* each stage's multiply-accumulates, counted from TensorFlow graphs (TensorFlow only: n/a
  under JAX), the machine's own convolution throughput so figures from other machines compare by
  ratio, and peak memory.

It prints markdown tables and can write the same figures as JSON (with the backend and the
versions of Keras, TensorFlow and JAX).

Usage::

    [KERAS_BACKEND=jax] python benchmarks/speed.py [--backbones resnet50 resnet101]
        [--repeats 5] [--warmup 1] [--size 512] [--layers all heads] [--mixed-precision]
        [--mask-head positive|all] [--compare-mask-head] [--no-stages] [--no-detect]
        [--detections N] [--json out.json]

Run it on an otherwise idle machine: every figure is wall time. ``benchmarks/compare_speed.py``
runs it on this code and on an older commit in one go.

Weights are random: speed does not depend on their values, except through the number of
detections, which sets the cost of the inference mask head and of pasting masks. So for
``detect`` the class-logit bias is set to call every ROI a confident nucleus and
``DETECTION_MAX_INSTANCES`` is the number of nuclei in the benchmark image (``--detections``
changes it): the workload of a trained model that finds them all.
"""
from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(_ROOT))

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras import ops  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mrcnn import box_ops, execution, heads, losses, utils  # noqa: E402
from mrcnn.data import build_training_sample  # noqa: E402
from mrcnn.model import LAYER_REGEX, MaskRCNN  # noqa: E402
from mrcnn.proposals import propose  # noqa: E402
from mrcnn.roi_align import pyramid_roi_align  # noqa: E402
from mrcnn.targets import detection_targets, max_positive_rois  # noqa: E402
from nucleus.config import make_config  # noqa: E402
from nucleus.dataset import NucleusDataset  # noqa: E402
from nucleus.formats.io_utils import atomic_write  # noqa: E402

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
ROW_STEP_ALL_FIRST = "train step, layers all: first call, with tracing/compiling (s)"
ROW_STEP_HEADS_FIRST = "train step, layers heads: first call, with tracing/compiling (s)"
ROW_DETECT = "detect, one image (s)"
ROW_DETECT_FIRST = "detect: first call, with tracing/compiling (s)"
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

NOT_COUNTED = "n/a"  # a MAC count under a backend other than TensorFlow

FLOPS_METHOD = (
    "analytic, from the static shapes of every Conv2D, Conv2DBackpropInput (deconv) and MatMul "
    "op in each stage's traced forward TensorFlow graph (TensorFlow backend only): "
    "conv = H_out*W_out*k*k*C_in*C_out, deconv = H_in*W_in*k*k*C_in*C_out, dense = rows*in*out. "
    "1 MAC = 2 FLOPs. ROIAlign, NMS, BatchNorm and elementwise ops are not counted; a backward "
    "pass costs about 2x the forward MACs of the layers it goes through.")

CONV_BENCH_SHAPE = (128, 256)  # 3x3 conv, 256 -> 256 channels, on 128x128: 9.66 GMAC


def backend() -> str:
    return keras.backend.backend()


def is_tensorflow() -> bool:
    return backend() == "tensorflow"


# --------------------------------------------------------------------------- measuring
def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (tracemalloc does not see TF/XLA)."""
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


def timed_calls(fn: Callable[[], Any], repeats: int, warmup: int) -> tuple[float, float]:
    """(seconds of the first call, median seconds of ``repeats`` calls after ``warmup`` more).

    The first call traces (TensorFlow) or compiles (JAX). ``fn`` must return only once its work
    is done (read a small result back, or :func:`block`)."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return first, float(statistics.median(times))


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after the first call and ``warmup``
    more (:func:`timed_calls`)."""
    return timed_calls(fn, repeats, warmup)[1]


def _value(x) -> float:
    """Read a scalar back, which also waits for the computation."""
    return float(ops.convert_to_numpy(x))


def block(outputs) -> None:
    """Wait until ``outputs`` (any nest of backend tensors) are computed. JAX dispatches
    asynchronously; TensorFlow's eager runtime returns from a tf.function call once it ran."""
    if backend() == "jax":
        import jax   # here: JAX backend only (an optional extra)

        jax.block_until_ready(outputs)


# --------------------------------------------------------------------------- compiling per backend
def jit(fn: Callable) -> Callable:
    """``fn`` (no Keras variables) compiled: tf.function without AutoGraph (these small graphs
    have no tensor-dependent Python control flow) under TensorFlow, jax.jit under JAX."""
    if is_tensorflow():
        import tensorflow as tf   # here: TensorFlow backend only (a JAX machine may lack it)

        return tf.function(fn, autograph=False)
    import jax   # here: JAX backend only (an optional extra)

    return jax.jit(fn)


def compile_stage(net: keras.Model, fn: Callable) -> Callable:
    """``fn(*arrays)``, which uses ``net``'s layers, compiled as the network compiles it:
    tf.function under TensorFlow, :func:`mrcnn.execution.compile_stateless` (jax.jit with the
    variables passed in) under JAX."""
    if is_tensorflow():
        return jit(fn)
    return execution.compile_stateless(net, fn)


def _squared_norm(grads) -> Any:
    return sum(ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads if g is not None)


def forward_backward(net: keras.Model, loss_fn: Callable, variables: Sequence,
                     wrt_inputs: bool) -> Callable:
    """Compiled ``f(*inputs) -> scalar``: the forward pass ``loss_fn(*inputs)`` and the
    gradients of its loss with respect to ``variables`` (and the inputs when ``wrt_inputs``,
    as a stage's gradient flows on into the pyramid). ``loss_fn`` returns the loss, or
    ``(loss, extra)`` where ``extra`` is output that gets no gradient (proposals) but must be
    computed. The result is the gradients' global norm (plus the sum of ``extra``), so no
    backward op is pruned; clipping consumes the gradients the same way.

    TensorFlow: a GradientTape in a tf.function. JAX: jax.value_and_grad of the loss over the
    variables' values mapped in by a StatelessScope (what ``stateless_call`` does), jitted.
    """
    variables = list(variables)

    def split(out):
        return out if isinstance(out, tuple) else (out, None)

    def total(grads, extra):
        norm = ops.sqrt(_squared_norm(grads))
        return norm if extra is None else norm + ops.sum(ops.cast(extra, "float32"))

    if is_tensorflow():
        import tensorflow as tf   # here: TensorFlow backend only (a JAX machine may lack it)

        def fb(*inputs):
            with tf.GradientTape() as tape:
                if wrt_inputs:
                    tape.watch(inputs)
                loss, extra = split(loss_fn(*inputs))
            grads = tape.gradient(loss, variables + (list(inputs) if wrt_inputs else []))
            grads = [tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g
                     for g in grads]
            return total(grads, extra)
        return jit(fb)

    import jax   # here: JAX backend only (an optional extra)

    chosen = {id(v) for v in variables}
    others = [v for v in net.variables if id(v) not in chosen]

    def loss_of(values, inputs, other_values):
        mapping = list(zip(variables, values)) + list(zip(others, other_values))
        with keras.StatelessScope(state_mapping=mapping):
            loss, extra = split(loss_fn(*inputs))
        return loss, extra

    grad_fn = jax.grad(loss_of, argnums=(0, 1) if wrt_inputs else 0, has_aux=True)

    @jax.jit
    def fb(values, inputs, other_values):
        grads, extra = grad_fn(values, inputs, other_values)
        return total(jax.tree_util.tree_leaves(grads), extra)

    def run(*inputs):
        return fb([v.value for v in variables], inputs, [v.value for v in others])
    return run


def conv_throughput(dtype: str, repeats: int, warmup: int = 1) -> float:
    """GMAC/s of one 3x3 256->256 convolution on a 128x128 map: the machine's yardstick."""
    size, channels = CONV_BENCH_SHAPE
    rng = np.random.default_rng(0)
    x = ops.cast(rng.standard_normal([1, size, size, channels], np.float32), dtype)
    w = ops.cast(0.05 * rng.standard_normal([3, 3, channels, channels], np.float32), dtype)
    conv = jit(lambda a, b: ops.sum(ops.cast(ops.conv(a, b, 1, "same"), "float32")))
    seconds = median_seconds(lambda: _value(conv(x, w)), max(3, repeats), warmup)
    return size * size * 9 * channels * channels / seconds / 1e9


# --------------------------------------------------------------------------- MACs (TensorFlow)
def _op_macs(op) -> int | None:
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


def graph_gmacs(fn: Callable, *shapes: tuple[Sequence[int | None], str]) -> float | None:
    """GMACs of the conv/deconv/matmul ops of ``fn`` traced as a TensorFlow graph on inputs of
    fixed ``(shape, dtype)``; None when a shape is unknown, or under another backend (the count
    reads TensorFlow's graph)."""
    if not is_tensorflow():
        return None
    import tensorflow as tf   # here: TensorFlow backend only (a JAX machine may lack it)

    specs = [tf.TensorSpec(shape, dtype) for shape, dtype in shapes]
    concrete = tf.function(fn, autograph=False).get_concrete_function(*specs)
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
                       opts: argparse.Namespace) -> tuple[float, float]:
    """(first call, median) seconds of Keras's own training step (``train_on_batch``, the
    step ``fit`` runs) with ``layers`` trainable and the mask head in the given mode."""
    net = model.keras_model
    model.config.MASK_HEAD_POSITIVE_ONLY = positive_only
    model.set_trainable(LAYER_REGEX[layers])
    # a fresh train function: the trainable set and the mask mode changed
    model.compile(model.config.LEARNING_RATE, model.config.LEARNING_MOMENTUM)
    return timed_calls(lambda: net.train_on_batch(batch, return_dict=True)["loss"],
                       opts.repeats, opts.warmup)


def _mean_of(tensors) -> Any:
    return sum(ops.mean(ops.cast(t, "float32")) for t in tensors)


def _layer_variables(layers: dict) -> list:
    return [v for layer in layers.values() for v in layer.trainable_weights]


def stage_breakdown(model: MaskRCNN, batch: dict, opts: argparse.Namespace) -> list[dict]:
    """Forward and forward+backward seconds and forward GMACs of each stage of the training
    step, each stage compiled on its own and fed the outputs of the real previous stage.

    The stages are the ones ``MaskRCNNNet.compute_losses`` chains, called here one by one with
    the same arguments; only the slicing between them is repeated here."""
    config, net = model.config, model.keras_model
    model.set_trainable(LAYER_REGEX["all"])
    reps, warm = opts.repeats, opts.warmup
    images_in_batch, height, width = batch["input_image"].shape[:3]
    image_shape = np.array([height, width], np.int32)
    dtype = net.compute_dtype
    images = ops.convert_to_tensor(batch["input_image"], "float32")
    maps = list(compile_stage(net, lambda x: net.features(ops.cast(x, dtype), False))(images))
    head_maps = maps[:4]
    anchors = utils.norm_boxes(net.train_anchors, (height, width)).astype(np.float32)
    rpn_match, rpn_bbox = batch["input_rpn_match"], batch["input_rpn_bbox"]
    rows = []

    def timings(fwd: Callable, fb: Callable | None, *inputs) -> dict:
        return {"forward_s": median_seconds(lambda: block(fwd(*inputs)), reps, warm),
                "forward_backward_s": None if fb is None else
                median_seconds(lambda: _value(fb(*inputs)), reps, warm)}

    # Backbone + FPN (the image gets no gradient).
    def backbone_loss(x):
        return _mean_of(net.features(ops.cast(x, dtype), True))

    rows.append({
        "stage": STAGE_BACKBONE, "inputs": f"{images_in_batch} image(s) {height}x{width}",
        **timings(compile_stage(net, backbone_loss),
                  forward_backward(net, backbone_loss, net.backbone.trainable_variables, False),
                  images),
        "gmac": graph_gmacs(lambda x: net.features(x, False),
                            ([images_in_batch, height, width, config.IMAGE_CHANNEL_COUNT],
                             "float32")),
        "per_roi_gmac": None})

    # RPN + proposals (proposals get no gradient; the RPN losses do, into the pyramid too).
    def rpn_forward(*feature_maps):
        logits, probs, deltas = net.rpn(list(feature_maps))
        proposals = propose(probs, deltas, anchors, config.POST_NMS_ROIS_TRAINING,
                            config.RPN_NMS_THRESHOLD, config.PRE_NMS_LIMIT,
                            config.RPN_BBOX_STD_DEV)
        return logits, deltas, proposals

    def rpn_loss(*feature_maps):
        logits, deltas, proposals = rpn_forward(*feature_maps)
        loss = (losses.rpn_class_loss(rpn_match, logits)
                + losses.rpn_bbox_loss(rpn_bbox, rpn_match, deltas))
        return loss, ops.stop_gradient(proposals)

    rpn_fwd = compile_stage(net, rpn_forward)
    rows.append({
        "stage": STAGE_RPN, "inputs": f"P2-P6, {config.POST_NMS_ROIS_TRAINING} proposals",
        **timings(rpn_fwd, forward_backward(net, rpn_loss, net.rpn_model.trainable_variables,
                                            True), *maps),
        "gmac": graph_gmacs(lambda *m: net.rpn(list(m)),
                            *[(m.shape, keras.backend.standardize_dtype(m.dtype))
                              for m in maps]),
        "per_roi_gmac": None})
    proposals = rpn_fwd(*maps)[2]

    # ROI sampling: forward only, no weights; the network's own seed generator.
    gt_ids = batch["input_gt_class_ids"]
    gt_boxes = box_ops.norm_boxes(ops.convert_to_tensor(batch["input_gt_boxes"]), image_shape)
    gt_masks = batch["input_gt_masks"]
    targets = compile_stage(net, lambda p: detection_targets(p, gt_ids, gt_boxes, gt_masks,
                                                             config, seed=net.seed_generator))
    rows.append({
        "stage": STAGE_TARGETS, "inputs": f"-> {config.TRAIN_ROIS_PER_IMAGE} ROIs",
        **timings(targets, None, proposals), "gmac": 0.0, "per_roi_gmac": None})
    rois, target_ids, target_deltas, target_masks = [
        ops.convert_to_numpy(t) for t in targets(proposals)]

    # As compute_losses: flat ROIs of the batch, positives among the first max_pos rows of each
    # image.
    num_rois, max_pos = config.TRAIN_ROIS_PER_IMAGE, max_positive_rois(config)
    flat_rois = rois.reshape(-1, 4)
    box_indices = np.repeat(np.arange(images_in_batch, dtype=np.int32), num_rois)
    flat_ids = target_ids.reshape(-1)
    flat_deltas = target_deltas.reshape(-1, 4)
    valid = ops.convert_to_numpy(box_ops.valid_rows(flat_rois))
    n_pos, n_rois = int(np.sum(flat_ids > 0)), len(flat_rois)
    mask_ids = target_ids[:, :max_pos].reshape(-1)
    mask_targets = target_masks.reshape([-1] + list(config.MASK_SHAPE))
    depth = config.TOP_DOWN_PYRAMID_SIZE

    # Box head on every sampled ROI.
    def box_forward(*feature_maps):
        pooled = pyramid_roi_align(flat_rois, box_indices, list(feature_maps), config.POOL_SIZE,
                                   image_shape)
        return heads.box_head(net.box_layers, pooled, True)

    def box_loss(*feature_maps):
        logits, _, deltas = box_forward(*feature_maps)
        return (losses.mrcnn_class_loss(flat_ids, logits, valid)
                + losses.mrcnn_bbox_loss(flat_deltas, flat_ids, deltas))

    box_gmac_per_roi = graph_gmacs(lambda p: heads.box_head(net.box_layers, p, False),
                                   ([1, config.POOL_SIZE, config.POOL_SIZE, depth], dtype))
    rows.append({
        "stage": STAGE_BOX, "inputs": f"{n_rois} ROIs",
        **timings(compile_stage(net, box_forward),
                  forward_backward(net, box_loss, _layer_variables(net.box_layers), True),
                  *head_maps),
        "gmac": _scaled(box_gmac_per_roi, n_rois), "per_roi_gmac": box_gmac_per_roi})

    # Mask head: on the rows that may be positive only, or on all ROIs as matterport does.
    mask_gmac_per_roi = graph_gmacs(
        lambda p: heads.mask_head(net.mask_layers, p, False),
        ([1, config.MASK_POOL_SIZE, config.MASK_POOL_SIZE, depth], dtype))

    def mask_forward(feature_maps, positive_only: bool):
        if positive_only:
            pooled = pyramid_roi_align(rois[:, :max_pos].reshape(-1, 4),
                                       np.repeat(np.arange(images_in_batch, dtype=np.int32),
                                                 max_pos), list(feature_maps),
                                       config.MASK_POOL_SIZE, image_shape)
            return heads.mask_head(net.mask_layers, pooled, True)
        pooled = pyramid_roi_align(flat_rois, box_indices, list(feature_maps),
                                   config.MASK_POOL_SIZE, image_shape)
        pred = heads.mask_head(net.mask_layers, pooled, True)
        pred = ops.reshape(pred, [-1, num_rois] + list(pred.shape[1:]))
        return ops.reshape(pred[:, :max_pos], [-1] + list(pred.shape[2:]))

    for positive_only, label, count in ((True, STAGE_MASK_POSITIVE, images_in_batch * max_pos),
                                        (False, STAGE_MASK_ALL, n_rois)):
        def mask_loss(*feature_maps, positive_only=positive_only):
            pred = mask_forward(feature_maps, positive_only)
            return losses.mrcnn_mask_loss(mask_targets, mask_ids, pred)

        rows.append({
            "stage": label, "inputs": f"{count} ROIs ({n_pos} positive)",
            **timings(compile_stage(net, lambda *m, p=positive_only: mask_forward(m, p)),
                      forward_backward(net, mask_loss, _layer_variables(net.mask_layers), True),
                      *head_maps),
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
def training_batch(samples: Sequence[dict]) -> dict:
    """Samples stacked as the batch a ``DataGenerator`` yields (masks uint8)."""
    batch = {k: np.stack([np.asarray(s[k]) for s in samples]) for k in samples[0]}
    batch["input_gt_masks"] = batch["input_gt_masks"].astype(np.uint8)
    return batch


def bench_training(backbone: str, opts: argparse.Namespace, dataset: NucleusDataset,
                   image_id: int, model_dir: str, bar: tqdm) -> dict:
    config = training_config(backbone, opts)
    model = MaskRCNN("training", config, model_dir=model_dir)
    net = model.keras_model
    sample = build_training_sample(dataset, config, image_id, net.train_anchors)
    if sample is None:
        raise ValueError(f"image {dataset.image_info[image_id]['path']} has no nucleus left at "
                         f"{opts.size}x{opts.size}: choose a larger --size")
    batch = training_batch([sample])
    default_positive = opts.mask_head == "positive"
    out: dict[str, Any] = {}

    for layers in opts.layers:
        bar.set_description(f"{backbone}: train step, layers {layers}")
        out[f"step_{layers}_first"], out[f"step_{layers}"] = train_step_seconds(
            model, batch, layers, default_positive, opts)
        bar.update()
    if opts.compare_mask_head:
        bar.set_description(f"{backbone}: train step, other mask-head mode")
        same = out.get("step_all")
        if same is None:
            same = train_step_seconds(model, batch, "all", default_positive, opts)[1]
        other = train_step_seconds(model, batch, "all", not default_positive, opts)[1]
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
    """First-call and median seconds of ``detect`` on one size x size image, and the median
    of its compiled inference alone (``MaskRCNN.infer_molded``: no molding, no mask pasting)."""
    detections = opts.detections or len(dataset.image_info[image_id]["mask_paths"])
    config = inference_config(backbone, opts, detections)
    model = MaskRCNN("inference", config, model_dir=model_dir)
    force_foreground(model)
    image = utils.resize_image(dataset.load_image(image_id), min_dim=opts.size,
                               max_dim=opts.size, mode="square")[0]
    out: dict[str, Any] = {}
    out["detect_first"], out["detect"] = timed_calls(lambda: model.detect([image]),
                                                     opts.repeats, opts.warmup)
    result = model.detect([image])[0]
    out["detections"] = int(len(result["scores"]))

    molded, _, windows = model.mold_inputs([image])
    out["detect_graph"] = median_seconds(lambda: model.infer_molded(molded[0], windows[0]),
                                         opts.repeats, opts.warmup)
    n_proposals = int(model.infer_molded(molded[0], windows[0])["proposals"].shape[0])
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
    model = None  # (not del: the timing lambdas close over it) freed before the next backbone
    _free()
    return out


def _free() -> None:
    keras.backend.clear_session()
    gc.collect()


# --------------------------------------------------------------------------- report
def _version(package: str) -> str | None:
    """Installed version of ``package`` without importing it (TensorFlow under JAX)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


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
    return {"cpu": model, "cores": cores, "backend": backend(), "keras": keras.__version__,
            "tensorflow": _version("tensorflow"), "jax": _version("jax"),
            "jaxlib": _version("jaxlib"), "numpy": np.__version__,
            "python": platform.python_version(),
            "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def _backend_line(m: dict) -> str:
    name = m.get("backend", "tensorflow")
    versions = f"Keras {m['keras']}"
    if name == "tensorflow":
        versions += f", TF {m.get('tensorflow')}"
    elif name == "jax":
        versions += f", JAX {m.get('jax')} (jaxlib {m.get('jaxlib')})"
    return f"backend {name} ({versions})"


def format_report(results: dict) -> str:
    """Markdown tables of ``results`` (as :func:`run` returns them)."""
    s, m = results["settings"], results["machine"]
    counted = m.get("backend", "tensorflow") == "tensorflow"  # MACs read from TF graphs
    names = list(results["backbones"])
    lines = [f"# Mask R-CNN speed, {s['size']}x{s['size']}, batch 1, "
             f"policy {s['dtype_policy']}, mask head on {s['mask_head']} ROIs",
             "",
             f"Machine: {m['cpu']}, {m['cores']} cores, {_backend_line(m)}; load average at "
             f"start {m['load_average_at_start']}. Median of {s['repeats']} repeat(s) after "
             f"{s['warmup']} warm-up call(s) (plus the first call, which traces or compiles "
             "and is reported on its own).",
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
            if key.endswith("_gmac") and not counted:
                lines.append(f"| {label} | " + " | ".join([NOT_COUNTED] * len(names))
                             + " | | | |")
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
    row(ROW_STEP_ALL_FIRST, "step_all_first")
    row(ROW_STEP_HEADS_FIRST, "step_heads_first")
    row(ROW_STEP_MASK_POSITIVE, "step_all_mask_positive")
    row(ROW_STEP_MASK_ALL, "step_all_mask_all")
    row(ROW_DETECT, "detect", "detect")
    row(ROW_DETECT_FIRST, "detect_first")
    row(ROW_DETECT_GRAPH, "detect_graph")
    row(ROW_DETECTIONS, "detections")
    if any(results["backbones"][n].get("stages") for n in names):
        row(ROW_TRAIN_GMAC, "train_gmac", digits=1)
        row(ROW_INFER_GMAC, "infer_gmac", digits=1)
    row(ROW_RSS, "peak_rss_mb", digits=0)
    lines.append("")
    lines.append(f"Baseline RSS with the backend loaded: {results['baseline_rss_mb']:.0f} MB. "
                 "Peak RSS is per process, so a backbone measured after another includes "
                 "its leftovers: run one backbone at a time for a clean figure.")
    lines.append(f"Image: {s['image']} ({s['image_nuclei']} nuclei), square-resized. detect "
                 f"keeps up to {s['detections']} detections (random weights, every ROI scored "
                 "a nucleus): its time grows with the number of detections.")

    gmac_cell = (lambda v: _fmt(v, 2)) if counted else (lambda v: NOT_COUNTED)
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
                         f"{_fmt(r['forward_backward_s'])} | {gmac_cell(r['gmac'])} |")
    if any(results["backbones"][n].get("stages") for n in names):
        lines += ["", "Data loading runs in DataGenerator threads beside the step. "
                  f"FLOPs: {FLOPS_METHOD}"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- entry points
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] + " The Keras backend is KERAS_BACKEND's.")
    parser.add_argument("--backbones", nargs="+", choices=BACKBONES, default=list(BACKBONES))
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls after the first (tracing/compiling) call")
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
                         "backend": backend(), "dtype_policy": policy,
                         "mask_head": opts.mask_head, "detections": opts.detections},
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
        conv = {"float32": conv_throughput("float32", opts.repeats, opts.warmup)}
        if opts.mixed_precision:
            conv["bfloat16"] = conv_throughput("bfloat16", opts.repeats, opts.warmup)
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
