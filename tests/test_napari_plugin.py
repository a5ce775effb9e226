"""The napari plugin in a real, headless napari viewer, run in a child process.

The checks themselves are in ``napari_viewer_checks.py`` (the plugin found through napari's
plugin manager; a run's labels equal ``nucleus segment``'s; Cancel stops a long run; bad input
gets one clear message and the viewer goes on; the reader and the sample). They need TensorFlow
and a viewer's OpenGL context in one process, and on Mesa's software OpenGL (llvmpipe, as under
Xvfb) such a process aborts at exit (``free(): invalid pointer``, status 134) after every test
has passed; TensorFlow loaded after the viewer's GL context even crashes. So this module runs
them in a child Python that ends itself with ``os._exit`` right after pytest's summary, and
this process never opens a viewer: the exit status of ``pytest tests`` stays the tests' own.

The child needs an X display for OpenGL (``.ci/run`` starts Xvfb; by hand: ``xvfb-run -a``);
without one it fails with a message saying so.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHECKS = HERE / "napari_viewer_checks.py"
TIMEOUT = 1200
"""Seconds for the whole child run (two builds of the shipped model and a few segmentations
take about a minute on two CPU cores)."""

CHILD = """\
import os, sys, pytest
rc = pytest.main(sys.argv[1:])
sys.stdout.flush()
sys.stderr.flush()
os._exit(int(rc))   # not Python's exit: TensorFlow with a viewer's GL context aborts there
"""


def check_names() -> list[str]:
    """The test functions of the checks module, read from its source (not imported here)."""
    tree = ast.parse(CHECKS.read_text())
    return [node.name for node in tree.body
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]


def test_the_plugin_in_a_headless_napari_viewer(tmp_path):
    if importlib.util.find_spec("napari") is None:
        pytest.skip("napari is not installed: pip install '.[napari]'")
    report = tmp_path / "checks.xml"
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    command = [sys.executable, "-c", CHILD, str(CHECKS), "-q", "-rfE", "--disable-warnings",
               "-p", "no:cacheprovider",
               f"--basetemp={tmp_path / 'tmp'}", f"--junitxml={report}"]
    try:
        done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                         for part in (e.stdout, e.stderr))
        pytest.fail(f"the napari viewer checks ran past {TIMEOUT} s; their output:\n"
                    f"{output[-20000:]}", pytrace=False)
    output = (done.stdout + done.stderr)[-20000:]
    if done.returncode != 0:
        pytest.fail(f"the napari viewer checks ({CHECKS.name}) failed in their child process, "
                    f"exit status {done.returncode}; their output:\n{output}", pytrace=False)
    # exit status 0 also for checks that were all skipped: every check must have passed
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    passed = [case.get("name") for case in suite.iter("testcase") if len(case) == 0]
    assert passed == check_names(), f"checks not passed:\n{output}"
    print(output)


def test_this_process_opens_no_viewer():
    """No Qt application here, so no OpenGL context beside TensorFlow in the main run (napari's
    own pytest plugin imports Qt, but creates no application)."""
    qt = sys.modules.get("PyQt6.QtWidgets")
    assert qt is None or qt.QApplication.instance() is None
