"""tools/mutation.py: the kill-rate table README reports, read from mutmut's result files.

mutmut itself is not needed here (it is an optional extra); its ``*.py.meta`` files are written
by hand in the layout mutmut 3 uses.
"""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections import Counter
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "tools" / "mutation.py"
_spec = importlib.util.spec_from_file_location("tools_mutation", _PATH)
mutation = importlib.util.module_from_spec(_spec)
sys.modules["tools_mutation"] = mutation
_spec.loader.exec_module(mutation)


def _meta(path: Path, codes: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {}}))


@pytest.fixture
def results(tmp_path):
    _meta(tmp_path / "nucleus" / "formats" / "rle.py.meta", {
        "nucleus.formats.rle.x_rle_encode__mutmut_1": 1,
        "nucleus.formats.rle.x_rle_encode__mutmut_2": 1,
        "nucleus.formats.rle.x_parse_rle__mutmut_1": 3,
        "nucleus.formats.rle.x_parse_rle__mutmut_2": 0})
    _meta(tmp_path / "nucleus" / "formats" / "submission.py.meta", {
        "nucleus.formats.submission.xǁSubmissionWriterǁadd__mutmut_1": 1,
        "nucleus.formats.submission.xǁSubmissionWriterǁadd__mutmut_2": 36,
        "nucleus.formats.submission.x_read_solution__mutmut_1": 33,
        "nucleus.formats.submission.x_read_solution__mutmut_2": None})
    (tmp_path / "nucleus" / "formats" / "rle.py").write_text("# a mutated copy, not a result\n")
    return mutation.read_results(tmp_path)


def test_results_are_read_from_every_meta_file(results):
    assert len(results) == 8
    assert results["nucleus.formats.rle.x_parse_rle__mutmut_2"] == 0


def test_counts_and_kill_rate_per_module(results):
    table = mutation.summarize(results)
    assert list(table) == ["nucleus.formats.rle", "nucleus.formats.submission", "total"]
    assert table["nucleus.formats.rle"] == Counter(killed=3, survived=1)
    # Methods carry no dot in their mangled names; a timeout counts as noticed, a mutant that
    # no test reaches as not killed, one not run yet not at all.
    assert table["nucleus.formats.submission"] == Counter({"killed": 1, "timeout": 1,
                                                           "no tests": 1, "not run": 1})
    assert mutation.kill_rate(table["nucleus.formats.rle"]) == 0.75
    assert mutation.kill_rate(table["nucleus.formats.submission"]) == pytest.approx(2 / 3)
    assert mutation.kill_rate(table["total"]) == pytest.approx(5 / 7)
    assert math.isnan(mutation.kill_rate(Counter({"not run": 2})))
    assert mutation.status(-11) == "other"


def test_markdown_table_and_survivors(results):
    lines = mutation.markdown_table(mutation.summarize(results)).splitlines()
    assert lines[0] == ("| module | mutants | killed | timeout | survived | no tests | not run "
                        "| other | kill rate |")
    assert lines[2] == "| nucleus.formats.rle | 4 | 3 | 0 | 1 | 0 | 0 | 0 | 75.0% |"
    assert lines[-1] == "| total | 8 | 4 | 1 | 1 | 1 | 1 | 0 | 71.4% |"
    assert mutation.survivors(results) == ["nucleus.formats.rle.x_parse_rle__mutmut_2",
                                           "nucleus.formats.submission.x_read_solution__mutmut_1"]
