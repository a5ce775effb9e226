"""benchmarks/backend_ops.py: its inputs, argument check, and one real run on this backend."""
from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.backends

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "backend_ops.py"
_spec = importlib.util.spec_from_file_location("benchmark_backend_ops", _PATH)
bench = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_backend_ops"] = bench
_spec.loader.exec_module(bench)


def test_inputs_have_the_stated_sizes():
    rng = np.random.default_rng(0)
    boxes, scores = bench.nms_inputs(rng)
    assert boxes.shape == (2, 4000, 4) and scores.shape == (2, 4000)
    assert (boxes[..., 2:] > boxes[..., :2]).all()  # real boxes, each with an area
    image, crop_boxes, box_indices = bench.crop_inputs(rng)
    assert image.shape == (2, 64, 64, 128) and crop_boxes.shape == (256, 4)
    assert (crop_boxes[:, 2:] >= crop_boxes[:, :2]).all() and set(box_indices) == {0, 1}


def test_rejects_zero_repeats():
    with pytest.raises(SystemExit):
        bench.main(["--repeats", "0"])


def test_one_run_prints_every_row(capsys):
    assert bench.main(["--repeats", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if re.match(r"\| (NMS|crop)", line)]
    expected = 8 if keras.backend.backend() == "tensorflow" else 3
    assert len(rows) == expected
    assert all(float(row.rstrip(" |").rsplit("|", 1)[1]) > 0 for row in rows)
    # Every path keeps the same number of boxes: they are one algorithm.
    kept = ast.literal_eval(out.split("boxes kept by NMS per image: ")[1].splitlines()[0])
    assert len({tuple(v) for v in kept.values()}) == 1
