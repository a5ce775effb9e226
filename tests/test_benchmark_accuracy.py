"""benchmarks/accuracy.py: the table, with a DSB mAP column per image kind present."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from nucleus.scoring.evaluation import Evaluation
from nucleus.scoring.metric import ImageScore

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
_spec = importlib.util.spec_from_file_location("benchmark_accuracy", _PATH)
accuracy = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_accuracy"] = accuracy
_spec.loader.exec_module(accuracy)


def _score(value: float) -> ImageScore:
    full = np.full(10, value)
    return ImageScore(value, full, np.ones(10), np.zeros(10), np.zeros(10))


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def test_table_has_a_column_per_kind_with_its_image_count():
    kinds = ["fluorescence", "colour", "fluorescence", "fluorescence"]
    a = Evaluation(0.55, list("abcd"), [_score(v) for v in (0.6, 0.2, 0.7, 0.7)],
                   seconds_per_image=0.5, kinds=kinds)
    b = Evaluation(0.25, list("abcd"), [_score(v) for v in (0.3, 0.0, 0.3, 0.4)],
                   seconds_per_image=0.25, kinds=kinds)
    lines = accuracy.table([("Mask R-CNN", a), ("FCN-8s", b)])
    assert _cells(lines[0]) == ["model", "DSB mAP", "fluorescence (3)", "colour (1)", "P@0.5",
                                "P@0.75", "TP/image", "FP/image", "s/image"]
    assert len(_cells(lines[1])) == 9
    assert _cells(lines[2]) == ["Mask R-CNN", "0.5500", "0.6667", "0.2000", "0.5500", "0.5500",
                                "1.0", "0.0", "0.500"]
    assert _cells(lines[3])[:4] == ["FCN-8s", "0.2500", "0.3333", "0.0000"]
