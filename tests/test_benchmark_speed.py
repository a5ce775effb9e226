"""benchmarks/speed.py: MAC counting, argument checks, the report's rows, and a tiny real run."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import pytest
import tensorflow as tf

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


def test_graph_gmacs_counts_conv_deconv_and_dense():
    def fn(x, y, m):
        a = tf.nn.conv2d(x, tf.ones([3, 3, 4, 6]), 1, "SAME")            # 8*8*6 * 3*3*4
        b = tf.nn.conv2d_transpose(y, tf.ones([2, 2, 5, 6]), [1, 8, 8, 5], 2)  # 4*4*6 * 2*2*5
        c = tf.matmul(m, tf.ones([10, 7]))                                  # 3*7 * 10
        return a, b, c

    gmacs = speed.graph_gmacs(fn, tf.TensorSpec([1, 8, 8, 4]), tf.TensorSpec([1, 4, 4, 6]),
                              tf.TensorSpec([3, 10]))
    assert math.isclose(gmacs * 1e9, 8 * 8 * 6 * 36 + 4 * 4 * 6 * 20 + 3 * 7 * 10)
    # An unknown spatial size cannot be counted: say so rather than guess.
    assert speed.graph_gmacs(lambda x: tf.nn.conv2d(x, tf.ones([3, 3, 4, 6]), 1, "SAME"),
                             tf.TensorSpec([1, None, None, 4])) is None


def test_mask_head_macs_match_the_layer_shapes():
    """Four 3x3 256->256 convs on 14x14, a 2x2 deconv, a 1x1 conv to K classes."""
    from mrcnn import heads

    layers = heads.build_mask_head(2, False, 256)
    per_roi = speed.graph_gmacs(lambda p: heads.mask_head(layers, p, False),
                                tf.TensorSpec([1, 14, 14, 256]))
    expected = 4 * 14 * 14 * 9 * 256 * 256 + 14 * 14 * 4 * 256 * 256 + 28 * 28 * 256 * 2
    assert math.isclose(per_roi * 1e9, expected)


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


def _fake_results() -> dict:
    stage_names = [speed.STAGE_DATA_COLD, speed.STAGE_DATA_WARM, speed.STAGE_BACKBONE,
                   speed.STAGE_RPN, speed.STAGE_TARGETS, speed.STAGE_BOX,
                   speed.STAGE_MASK_POSITIVE, speed.STAGE_MASK_ALL]
    stages = [{"stage": n, "inputs": "x", "forward_s": 0.1, "forward_backward_s": 0.3,
               "gmac": 2.0, "per_roi_gmac": None} for n in stage_names]
    one = {"step_all": 1.491, "step_heads": 1.2, "step_all_mask_positive": 1.491,
           "step_all_mask_all": 2.5, "detect": 0.655, "detect_graph": 0.5, "detections": 56,
           "train_gmac": 98.0, "infer_gmac": 90.0, "peak_rss_mb": 3000.0, "stages": stages}
    return {
        "machine": {"cpu": "cpu", "cores": 2, "tensorflow": "2", "keras": "3",
                    "load_average_at_start": [1.0, 1.0, 1.0]},
        "settings": {"size": 512, "repeats": 5, "warmup": 1, "dtype_policy": "float32",
                     "mask_head": "positive", "image": "a.png", "image_nuclei": 56,
                     "detections": 56},
        "baseline_rss_mb": 700.0, "conv_gmacs_per_s": {"float32": 50.0},
        "backbones": {"resnet50": one, "resnet101": dict(one, step_all=2.0, stages=None)},
    }


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
    assert "float32 50.0 GMAC/s" in report
    # One stage table, for the backbone that has stages.
    assert report.count("## Stages") == 1
    assert _cell(report, speed.STAGE_MASK_ALL, 3) == "0.300"
    assert _cell(report, speed.STAGE_TARGETS, 4) == "2.00"


def test_report_flags_a_comparison_at_another_size():
    results = _fake_results()
    results["settings"]["size"] = 256
    assert _cell(speed.format_report(results), speed.ROW_STEP_ALL, 5) == "30% (not at 512)"


def test_tiny_real_run(tmp_path, capsys):
    """The real thing at 128x128, one repeat, one trace of the training step (the slow part):
    the measured rows have positive figures, the skipped ones say so."""
    policy = keras.mixed_precision.global_policy().name
    out = tmp_path / "speed.json"
    results = speed.main(["--size", "128", "--repeats", "1", "--warmup", "0", "--backbones",
                          "resnet50", "--layers", "all", "--no-stages", "--no-detect",
                          "--json", str(out)])
    printed = capsys.readouterr().out
    report = results["report"]
    assert report in printed
    for label in (speed.ROW_STEP_ALL, speed.ROW_RSS):
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
    assert keras.mixed_precision.global_policy().name == policy
