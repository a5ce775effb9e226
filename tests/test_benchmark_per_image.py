"""benchmarks/per_image.py: one row per image with sizes, scores and the auto factor."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "per_image.py"
_spec = importlib.util.spec_from_file_location("benchmark_per_image", _PATH)
per_image = importlib.util.module_from_spec(_spec)
sys.modules["benchmark_per_image"] = per_image
_spec.loader.exec_module(per_image)


def test_rows_per_image_and_means(tmp_path, capsys):
    out = tmp_path / "table.md"
    assert per_image.main(["--subset", "val", "--limit", "2", "--scale", "1",
                           "--out", str(out)]) == 0
    lines = out.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| image")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == 10
        true, found = int(cells[3]), int(cells[4])
        assert true > 0 and found > 0
        assert 0 <= float(cells[7]) <= 1 and 0 <= float(cells[9]) <= 1
        assert 0.25 <= float(cells[8]) <= 4
    assert any(line.startswith("mean: ") and "(2 images)" in line for line in lines)
