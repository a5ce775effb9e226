"""The napari plugin in a real, headless napari viewer, run in a child process.

The checks themselves are in ``napari_viewer_checks.py`` (the plugin found through napari's
plugin manager; a run's labels equal ``nucleus segment``'s; Cancel stops a long run; bad input
gets one clear message and the viewer goes on; the reader and the sample). They need TensorFlow
and a viewer's OpenGL context in one process, and on Mesa's software OpenGL (llvmpipe, as under
Xvfb) such a process aborts at exit (``free(): invalid pointer``, status 134) after every test
has passed; TensorFlow loaded after the viewer's GL context even crashes. So this module runs
them in a child Python that ends itself with ``os._exit`` right after pytest's summary, and
this process never opens a viewer: the exit status of ``pytest tests`` stays the tests' own.

The child needs an X server for OpenGL. Where ``Xvfb`` is installed the test starts its own,
on a display number Xvfb picks as free (``-displayfd``), and gives the child that DISPLAY, so an
inherited DISPLAY that points at no server (or at one without OpenGL) cannot fail the checks;
without Xvfb it uses the inherited DISPLAY, and without any it fails with a message saying so.
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CHECKS = HERE / "napari_viewer_checks.py"
TIMEOUT = 1200
"""Seconds for the whole child run (two builds of the shipped model and a few segmentations
take about a minute on two CPU cores)."""
NO_OPENGL = "no OpenGL context"
"""What the checks' viewer fixture says when Qt got no OpenGL context from the display."""
XVFB_START = 30
"""Seconds Xvfb gets to say which display it serves."""

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


def answers(number: int, deadline: float) -> bool:
    """Whether the X server of display ``number`` completes a connection setup before
    ``deadline`` (``time.monotonic()``): Xvfb names its display before it serves clients, and
    Qt asked too early settles for no OpenGL at all (a loaded CI machine showed that)."""
    path = f"/tmp/.X11-unix/X{number}"
    # X11 connection setup: little-endian, protocol 11.0, no authorisation; reply byte 1 = success
    request = struct.pack("<cxHHHHxx", b"l", 11, 0, 0, 0)
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(max(0.1, deadline - time.monotonic()))
                client.connect(path)
                client.sendall(request)
                if client.recv(1) == b"\x01":
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


@contextlib.contextmanager
def own_display() -> Iterator[str | None]:
    """A private Xvfb's DISPLAY (``":N"``) while the block runs, or the inherited DISPLAY
    (``None`` if unset) where Xvfb is not installed. Xvfb writes the display number it chose to
    a pipe (``-displayfd``), so no number is guessed or raced for; the block starts once that
    server answers a client (:func:`answers`)."""
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        yield os.environ.get("DISPLAY")
        return
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
        pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    try:
        number = b""
        end = time.monotonic() + XVFB_START
        while not number.endswith(b"\n") and time.monotonic() < end:
            ready, _, _ = select.select([read_end], [], [], max(0.0, end - time.monotonic()))
            chunk = os.read(read_end, 16) if ready else b""
            if ready and not chunk:    # Xvfb closed the pipe: it exited without a display
                break
            number += chunk
        if not number.strip().isdigit() or not answers(int(number), end):
            server.kill()
            _, errors = server.communicate()
            pytest.fail(f"{xvfb} did not serve a display within {XVFB_START} s (display "
                        f"{number.strip().decode() or '-'}, exit status {server.returncode}); "
                        f"its output:\n{errors[-4000:]}", pytrace=False)
        yield f":{int(number)}"
    finally:
        os.close(read_end)
        if server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        if server.stderr is not None:
            server.stderr.close()


def test_the_plugin_in_a_headless_napari_viewer(tmp_path):
    if importlib.util.find_spec("napari") is None:
        pytest.skip("napari is not installed: pip install '.[napari]'")
    # A second private display if the first gave the child no OpenGL context (the display's
    # fault, not the plugin's: seen once on a loaded CI machine); any other failure is final.
    for attempt in (1, 2):
        with own_display() as display:
            failure = run_checks(tmp_path / f"run{attempt}", display)
        if failure is None:
            return
        if NO_OPENGL not in failure or attempt == 2:
            pytest.fail(failure, pytrace=False)


def test_own_display_serves_x_clients():
    """The private Xvfb answers a client on the display it reports, and is gone after."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    with own_display() as display:
        number = int(display.lstrip(":"))
        socket_path = Path(f"/tmp/.X11-unix/X{number}")
        assert answers(number, time.monotonic() + 5)
    assert not answers(number + 1000, time.monotonic() + 0.3)     # no server there: no answer
    deadline = time.monotonic() + 10
    while socket_path.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not socket_path.exists(), "Xvfb left running after the block"


def run_checks(tmp_path: Path, display: str | None) -> str | None:
    """The checks module in a child Python on ``display``: None when every check passed, else
    what went wrong with the child's output."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    report = tmp_path / "checks.xml"
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    if display is None:
        env.pop("DISPLAY", None)
    else:
        env["DISPLAY"] = display
    command = [sys.executable, "-c", CHILD, str(CHECKS), "-q", "-rfE", "--disable-warnings",
               "-p", "no:cacheprovider",
               f"--basetemp={tmp_path / 'tmp'}", f"--junitxml={report}"]
    try:
        done = subprocess.run(command, cwd=HERE.parent, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        output = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part or ""
                         for part in (e.stdout, e.stderr))
        return f"the napari viewer checks ran past {TIMEOUT} s; their output:\n{output[-20000:]}"
    output = (done.stdout + done.stderr)[-20000:]
    if done.returncode != 0:
        return (f"the napari viewer checks ({CHECKS.name}) failed in their child process on "
                f"DISPLAY={display!r}, exit status {done.returncode}; their output:\n{output}")
    # exit status 0 also for checks that were all skipped: every check must have passed
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    passed = [case.get("name") for case in suite.iter("testcase") if len(case) == 0]
    if passed != check_names():
        return f"checks not passed: {sorted(set(check_names()) - set(passed))}\n{output}"
    print(output)
    return None


def test_this_process_opens_no_viewer():
    """No Qt application here, so no OpenGL context beside TensorFlow in the main run (napari's
    own pytest plugin imports Qt, but creates no application)."""
    qt = sys.modules.get("PyQt6.QtWidgets")
    assert qt is None or qt.QApplication.instance() is None
