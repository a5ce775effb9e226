"""benchmarks/speed.py: MAC counting, the per-backend gradient helper, argument checks, the
report's rows, the stage breakdown and a tiny real run.

The MAC counts read TensorFlow graphs and run under TensorFlow only (TensorFlow is imported
inside them); everything else runs under every backend.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from keras import ops

from conftest import TinyConfig

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
_spec = importlib.util.spec_from_file_location("benchmark_speed", _PATH)
speed = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_speed"] = speed
_spec.loader.exec_module(speed)


def _cell(report: str, label: str, column: int = 1) -> str:
    """The ``column``-th cell after the label of the markdown row starting with ``label``."""
    for line in report.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] == label:
            return cells[column]
    raise AssertionError(f"no row {label!r} in:\n{report}")


# --------------------------------------------------------------------------- MACs (TensorFlow)
def test_graph_gmacs_counts_conv_deconv_and_dense():
    import tensorflow as tf

    def fn(x, y, m):
        a = tf.nn.conv2d(x, tf.ones([3, 3, 4, 6]), 1, "SAME")            # 8*8*6 * 3*3*4
        b = tf.nn.conv2d_transpose(y, tf.ones([2, 2, 5, 6]), [1, 8, 8, 5], 2)  # 4*4*6 * 2*2*5
        c = tf.matmul(m, tf.ones([10, 7]))                                  # 3*7 * 10
        return a, b, c

    gmacs = speed.graph_gmacs(fn, ([1, 8, 8, 4], "float32"), ([1, 4, 4, 6], "float32"),
                              ([3, 10], "float32"))
    assert math.isclose(gmacs * 1e9, 8 * 8 * 6 * 36 + 4 * 4 * 6 * 20 + 3 * 7 * 10)
    # An unknown spatial size cannot be counted: say so rather than guess.
    assert speed.graph_gmacs(lambda x: tf.nn.conv2d(x, tf.ones([3, 3, 4, 6]), 1, "SAME"),
                             ([1, None, None, 4], "float32")) is None


def test_mask_head_macs_match_the_layer_shapes():
    """Four 3x3 256->256 convs on 14x14, a 2x2 deconv, a 1x1 conv to K classes."""
    from mrcnn import heads

    layers = heads.build_mask_head(2, False, 256)
    per_roi = speed.graph_gmacs(lambda p: heads.mask_head(layers, p, False),
                                ([1, 14, 14, 256], "float32"))
    expected = 4 * 14 * 14 * 9 * 256 * 256 + 14 * 14 * 4 * 256 * 256 + 28 * 28 * 256 * 2
    assert math.isclose(per_roi * 1e9, expected)


# --------------------------------------------------------------------------- any backend
class _TwoDense(keras.Model):
    def __init__(self):
        super().__init__()
        self.first = keras.layers.Dense(3)
        self.second = keras.layers.Dense(2)
        self.first.build((None, 4))
        self.second.build((None, 3))
        self.built = True


@pytest.mark.backends
@pytest.mark.parametrize("wrt_inputs", [False, True])
def test_forward_backward_is_the_global_norm_of_the_chosen_gradients(wrt_inputs):
    """The backward helper differentiates with respect to the variables it is given (and the
    inputs when asked), through layers whose variables it is not given, and leaves every
    variable as it was."""
    net = _TwoDense()
    rng = np.random.default_rng(1)
    w1, b1 = rng.normal(size=(4, 3)).astype(np.float32), rng.normal(size=3).astype(np.float32)
    w2, b2 = rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)
    net.first.set_weights([w1, b1])
    net.second.set_weights([w2, b2])
    x = rng.normal(size=(5, 4)).astype(np.float32)
    extra = np.array([1.5, 2.0], np.float32)

    def loss_fn(inputs):
        loss = ops.sum(net.second(net.first(inputs)))  # linear: the gradients are constants
        return loss, ops.convert_to_tensor(extra)

    fb = speed.forward_backward(net, loss_fn, net.first.trainable_weights, wrt_inputs)
    # d loss / d hidden[n, j] = sum_k w2[j, k]; hidden = x w1 + b1
    upstream = w2.sum(axis=1)
    grad_w1 = np.outer(x.sum(axis=0), upstream)
    grad_b1 = len(x) * upstream
    squared = np.sum(grad_w1 ** 2) + np.sum(grad_b1 ** 2)
    if wrt_inputs:  # d loss / d x[n, i] = sum_j w1[i, j] upstream[j], for every row n
        squared += len(x) * np.sum((w1 @ upstream) ** 2)
    got = float(ops.convert_to_numpy(fb(x)))
    assert math.isclose(got, math.sqrt(squared) + extra.sum(), rel_tol=1e-5)
    # a scalar loss alone works too
    plain = speed.forward_backward(net, lambda i: loss_fn(i)[0], net.first.trainable_weights,
                                   wrt_inputs)
    assert math.isclose(float(ops.convert_to_numpy(plain(x))), math.sqrt(squared),
                        rel_tol=1e-5)
    for got_w, want in zip(net.first.get_weights() + net.second.get_weights(),
                           [w1, b1, w2, b2]):
        np.testing.assert_array_equal(got_w, want)


@pytest.mark.backends
@pytest.mark.parametrize("argv, message", [
    (["--size", "100"], "multiple of 64"),
    (["--repeats", "0"], "at least 1"),
    (["--detections", "0"], "at least 1"),
    (["--json", "/no/such/folder/out.json"], "does not exist"),
    (["--backbones", "resnet18"], "invalid choice"),
])
def test_bad_arguments_are_refused_with_a_reason(argv, message, capsys):
    with pytest.raises(SystemExit):
        speed.parse_args(argv)
    assert message in capsys.readouterr().err


def _fake_results(backend: str = "tensorflow") -> dict:
    stage_names = [speed.STAGE_DATA_COLD, speed.STAGE_DATA_WARM, speed.STAGE_BACKBONE,
                   speed.STAGE_RPN, speed.STAGE_TARGETS, speed.STAGE_BOX,
                   speed.STAGE_MASK_POSITIVE, speed.STAGE_MASK_ALL]
    counted = backend == "tensorflow"
    stages = [{"stage": n, "inputs": "x", "forward_s": 0.1, "forward_backward_s": 0.3,
               "gmac": 2.0 if counted else None, "per_roi_gmac": None} for n in stage_names]
    one = {"step_all": 1.491, "step_heads": 1.2, "step_all_first": 30.0, "step_heads_first": 20.0,
           "step_all_mask_positive": 1.491, "step_all_mask_all": 2.5, "detect": 0.655,
           "detect_first": 9.5, "detect_graph": 0.5, "detections": 56,
           "train_gmac": 98.0 if counted else None, "infer_gmac": 90.0 if counted else None,
           "peak_rss_mb": 3000.0, "stages": stages}
    return {
        "machine": {"cpu": "cpu", "cores": 2, "backend": backend, "keras": "3",
                    "tensorflow": "2.21" if counted else None, "jax": "0.10", "jaxlib": "0.10",
                    "load_average_at_start": [1.0, 1.0, 1.0]},
        "settings": {"size": 512, "repeats": 5, "warmup": 1, "backend": backend,
                     "dtype_policy": "float32", "mask_head": "positive", "image": "a.png",
                     "image_nuclei": 56, "detections": 56},
        "baseline_rss_mb": 700.0, "conv_gmacs_per_s": {"float32": 50.0},
        "backbones": {"resnet50": one, "resnet101": dict(one, step_all=2.0, stages=None)},
    }


@pytest.mark.backends
def test_report_puts_our_figures_beside_matterports_and_the_targets():
    report = speed.format_report(_fake_results())
    assert _cell(report, speed.ROW_STEP_ALL, 1) == "1.491"
    assert _cell(report, speed.ROW_STEP_ALL, 2) == "2.000"
    assert _cell(report, speed.ROW_STEP_ALL, 3) == "4.97"
    assert _cell(report, speed.ROW_STEP_ALL, 4) == "<= 40% (1.99)"
    assert _cell(report, speed.ROW_STEP_ALL, 5) == "30%"
    assert _cell(report, speed.ROW_STEP_HEADS, 3) == "4.47"
    assert _cell(report, speed.ROW_DETECT, 4) == "<= 60% (0.79)"
    assert _cell(report, speed.ROW_DETECT, 5) == "50%"
    assert _cell(report, speed.ROW_STEP_MASK_ALL, 1) == "2.500"
    assert _cell(report, speed.ROW_DETECTIONS, 1) == "56"
    # the first call (tracing or compiling) is reported apart from the steady state
    assert _cell(report, speed.ROW_STEP_ALL_FIRST, 1) == "30.000"
    assert _cell(report, speed.ROW_DETECT_FIRST, 1) == "9.500"
    assert _cell(report, speed.ROW_TRAIN_GMAC, 1) == "98.0"
    assert "float32 50.0 GMAC/s" in report
    assert "backend tensorflow (Keras 3, TF 2.21)" in report
    # One stage table, for the backbone that has stages.
    assert report.count("## Stages") == 1
    assert _cell(report, speed.STAGE_MASK_ALL, 3) == "0.300"
    assert _cell(report, speed.STAGE_TARGETS, 4) == "2.00"


@pytest.mark.backends
def test_report_under_jax_says_macs_are_not_counted():
    report = speed.format_report(_fake_results("jax"))
    assert "backend jax (Keras 3, JAX 0.10 (jaxlib 0.10))" in report
    assert _cell(report, speed.ROW_STEP_ALL, 1) == "1.491"
    assert _cell(report, speed.ROW_TRAIN_GMAC, 1) == speed.NOT_COUNTED
    assert _cell(report, speed.STAGE_BOX, 4) == speed.NOT_COUNTED
    assert _cell(report, speed.STAGE_BOX, 3) == "0.300"


@pytest.mark.backends
def test_report_flags_a_comparison_at_another_size():
    results = _fake_results()
    results["settings"]["size"] = 256
    assert _cell(speed.format_report(results), speed.ROW_STEP_ALL, 5) == "30% (not at 512)"


def _sample_batch(config, images: int) -> dict:
    from mrcnn.data import build_training_sample
    from mrcnn.network import anchors_for_shape
    from nucleus.dataset import NucleusDataset

    dataset = NucleusDataset()
    dataset.load_nucleus(None, "stage1_train")
    dataset.prepare()
    anchors = anchors_for_shape(config, config.IMAGE_SHAPE)
    busiest = speed.pick_image(dataset)
    ids = [busiest] + [i for i in dataset.image_ids if i != busiest]
    samples = [s for s in (build_training_sample(dataset, config, int(i), anchors)
                           for i in ids[:images + 2]) if s is not None][:images]
    assert len(samples) == images
    return speed.training_batch(samples)


@pytest.mark.backends
def test_stage_breakdown_times_every_stage_of_a_batch(tmp_path):
    """Every stage of the training step, compiled on this backend, on a batch of two images:
    forward (and forward+backward where there are weights) take time, the mask rows cover
    each image's rows that may be positive (or all ROIs), MACs are counted on TensorFlow."""
    from mrcnn.model import MaskRCNN
    from mrcnn.targets import max_positive_rois

    config = type("Two", (TinyConfig,), {"IMAGES_PER_GPU": 2})()
    model = MaskRCNN("training", config, str(tmp_path))
    batch = _sample_batch(config, 2)
    rows = speed.stage_breakdown(model, batch, argparse.Namespace(repeats=1, warmup=0))
    by_stage = {r["stage"]: r for r in rows}
    assert list(by_stage) == [speed.STAGE_BACKBONE, speed.STAGE_RPN, speed.STAGE_TARGETS,
                              speed.STAGE_BOX, speed.STAGE_MASK_POSITIVE, speed.STAGE_MASK_ALL]
    for r in rows:
        assert r["forward_s"] > 0, r
        if r["stage"] == speed.STAGE_TARGETS:
            assert r["forward_backward_s"] is None
        else:
            assert r["forward_backward_s"] > 0, r
    rois = config.TRAIN_ROIS_PER_IMAGE
    assert by_stage[speed.STAGE_BACKBONE]["inputs"] == "2 image(s) 64x64"
    assert by_stage[speed.STAGE_BOX]["inputs"] == f"{2 * rois} ROIs"
    assert by_stage[speed.STAGE_MASK_POSITIVE]["inputs"].startswith(
        f"{2 * max_positive_rois(config)} ROIs (")
    assert by_stage[speed.STAGE_MASK_ALL]["inputs"].startswith(f"{2 * rois} ROIs (")
    if keras.backend.backend() == "tensorflow":
        mask = by_stage[speed.STAGE_MASK_ALL]
        assert mask["gmac"] == pytest.approx(mask["per_roi_gmac"] * 2 * rois)
        assert by_stage[speed.STAGE_BACKBONE]["gmac"] > 0
    else:
        assert all(r["gmac"] in (None, 0.0) for r in rows)


@pytest.mark.backends
def test_tiny_real_run(tmp_path, capsys):
    """The real thing at 128x128, one repeat, one trace/compilation of Keras's training step
    (the slow part): the measured rows have positive figures, the skipped ones say so, and the
    JSON names the backend. Under JAX the run imports no TensorFlow."""
    policy = keras.mixed_precision.global_policy().name
    tensorflow_before = "tensorflow" in sys.modules
    out = tmp_path / "speed.json"
    results = speed.main(["--size", "128", "--repeats", "1", "--warmup", "0", "--backbones",
                          "resnet50", "--layers", "all", "--no-stages", "--no-detect",
                          "--json", str(out)])
    printed = capsys.readouterr().out
    report = results["report"]
    assert report in printed
    for label in (speed.ROW_STEP_ALL, speed.ROW_STEP_ALL_FIRST, speed.ROW_RSS):
        assert float(_cell(report, label, 1)) > 0
    for label in (speed.ROW_STEP_HEADS, speed.ROW_DETECT):  # skipped, and the table says so
        assert _cell(report, label, 1) == "-"
    assert _cell(report, speed.ROW_STEP_ALL, 2) == "4.97"  # one backbone column
    assert "## Stages" not in report
    assert re.search(r"float32 \d+\.\d GMAC/s", report)
    figures = results["backbones"]["resnet50"]
    assert figures["peak_rss_mb"] > results["baseline_rss_mb"] > 0
    saved = json.loads(out.read_text())
    assert saved["backbones"]["resnet50"]["step_all"] == figures["step_all"]
    assert saved["settings"]["size"] == 128
    backend = keras.backend.backend()
    assert saved["settings"]["backend"] == saved["machine"]["backend"] == backend
    assert saved["machine"]["keras"] == keras.__version__
    assert keras.mixed_precision.global_policy().name == policy
    if backend == "jax" and not tensorflow_before:
        assert "tensorflow" not in sys.modules


# --------------------------------------------------------------------------- compare_speed.py
_CPATH = _PATH.parent / "compare_speed.py"
_cspec = importlib.util.spec_from_file_location("benchmark_compare_speed", _CPATH)
compare = importlib.util.module_from_spec(_cspec)
sys.modules["benchmark_compare_speed"] = compare
_cspec.loader.exec_module(compare)


@pytest.mark.backends
def test_compare_interleaves_old_and_new_and_reverses_every_other_round():
    runs = list(compare.RUNS)
    order = compare.schedule(runs, 3)
    names = [run.name for _, run in order]
    assert names[:4] == ["old-tf-float32", "new-tf-float32", "old-tf-bfloat16", "new-tf-bfloat16"]
    assert names[6:12] == names[:6][::-1]          # round 2: ABBA
    assert names[12:] == names[:6]
    assert [r for r, _ in order] == [0] * 6 + [1] * 6 + [2] * 6


@pytest.mark.backends
def test_compare_commands_run_each_codes_own_script(tmp_path):
    opts = compare.parse_args([str(tmp_path), "--before", "/tmp/old", "--size", "128",
                               "--repeats", "1"])
    old = compare.Run("old", "tensorflow", "bfloat16")
    new = compare.Run("new", "jax", "float32")
    cmd = compare.command(old, Path("/tmp/old"), tmp_path / "x.json", opts)
    assert cmd[3] == "/tmp/old/benchmarks/speed.py"
    assert cmd[cmd.index("--size") + 1] == "128" and cmd[cmd.index("--repeats") + 1] == "1"
    assert "--mixed-precision" in cmd and "--no-stages" in cmd
    assert cmd[cmd.index("--layers") + 1:cmd.index("--layers") + 3] == ["all", "heads"]
    assert compare.environment(old, Path("/tmp/old"))["PYTHONPATH"] == "/tmp/old"
    env = compare.environment(new, Path("/tmp/old"))
    assert env["KERAS_BACKEND"] == "jax" and env["PYTHONPATH"] == str(compare.ROOT)
    assert "--mixed-precision" not in compare.command(new, Path("/tmp/old"), tmp_path, opts)


@pytest.mark.backends
def test_compare_table_gives_median_and_range_over_rounds_and_counts_failures():
    def record(run, step, rss=2000.0):
        return {"run": run, "figures": {"step_all": step, "step_heads": 1.0, "detect": 0.5,
                                        "peak_rss_mb": rss, "step_all_first": None,
                                        "detect_first": None}}
    records = [record("old-tf-float32", 2.0), record("old-tf-float32", 2.2),
               record("old-tf-float32", 2.1), record("new-tf-float32", 1.5),
               {"run": "new-tf-float32", "error": "exit status 1"}]
    runs = [compare.Run("old", "tensorflow", "float32"), compare.Run("new", "tensorflow",
                                                                      "float32")]
    table = compare.summary_table(records, "3604c84abc", runs)
    assert _cell(table, "old (3604c84) / tensorflow / float32", 1) == "2.100 (2.000-2.200)"
    assert _cell(table, "old (3604c84) / tensorflow / float32", 4) == "2000 (2000-2000)"
    assert _cell(table, "old (3604c84) / tensorflow / float32", 5) == "-"  # old lacks it
    assert _cell(table, "new / tensorflow / float32", 1) == "1.500"
    assert _cell(table, "new / tensorflow / float32", 7) == "1 (1 failed, see logs)"
    assert compare.ratios(records)[0].startswith(
        "New / old on TensorFlow, float32: train step all 0.71, heads 1.00, detect 1.00")
