"""The napari plugin in a real napari viewer, headless (Qt's offscreen platform; the canvas
needs an OpenGL context, which Qt's offscreen platform takes from the X server on DISPLAY:
``tests/test_napari_plugin.py`` starts a private Xvfb for this).

Not collected by ``pytest tests`` (the name does not match ``test_*.py``):
``tests/test_napari_plugin.py`` runs this module in a child process and ends that process with
``os._exit`` after pytest's summary. TensorFlow and a viewer's OpenGL context in one process
abort it at exit on Mesa's software OpenGL (llvmpipe, as under Xvfb), after every test has
passed; the child keeps that away from the main test run, which never opens a viewer. To run it
alone: ``xvfb-run -a python -m pytest tests/napari_viewer_checks.py`` (the result is in the
summary; the exit status may be that abort's, 134).

The widget is opened through napari's plugin manager, as the Plugins menu opens it; runs go
through napari's worker threads and are waited for by processing Qt events.
"""
from __future__ import annotations

import os
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

napari = pytest.importorskip("napari", reason="pip install '.[napari]'")
if not os.environ.get("DISPLAY"):
    pytest.fail("the napari tests need an X display for OpenGL (Xvfb: xvfb-run -a python -m "
                "pytest ...; .ci/run starts one)", pytrace=False)

# TensorFlow first: loaded after an OpenGL context of Mesa's llvmpipe (Xvfb's software GL) it
# crashes on the LLVM both carry (see the README, "napari")
import tensorflow  # noqa: E402,F401
from qtpy.QtWidgets import QApplication  # noqa: E402

from nucleus import cli  # noqa: E402
from nucleus.napari_plugin import widget as widget_module  # noqa: E402
from nucleus.napari_plugin.sample import sample_path  # noqa: E402
from nucleus.formats.segment_outputs import LABELS_SUFFIX, TABLE_NAME  # noqa: E402
from nucleus.sample_data import make_threshold_detector, sample_mosaic  # noqa: E402

PLUGIN = "nucleus-mrcnn"
WIDGET = "Segment nuclei"


def wait_for(widget, timeout: float = 300.0) -> None:
    """Process Qt events until the widget's run has finished (its worker is gone)."""
    end = time.monotonic() + timeout
    while widget.worker is not None:
        QApplication.processEvents()
        assert time.monotonic() < end, "the run did not finish"
        time.sleep(0.01)
    QApplication.processEvents()


def opengl_works() -> bool:
    """Whether Qt can make an OpenGL context here (the viewer's canvas needs one; with Qt's
    offscreen platform it comes from the X server on DISPLAY)."""
    from qtpy.QtGui import QOpenGLContext

    return QOpenGLContext().create()


@pytest.fixture(scope="module")
def viewer():
    viewer = napari.Viewer(show=False)
    if not opengl_works():
        viewer.close()
        pytest.fail(f"no OpenGL context on DISPLAY={os.environ.get('DISPLAY')!r} (platform "
                    f"{os.environ.get('QT_QPA_PLATFORM')!r}): is an X server with GLX running "
                    "there? (Xvfb: xvfb-run -a)", pytrace=False)
    yield viewer
    viewer.close()
    QApplication.processEvents()


@pytest.fixture(scope="module")
def widget(viewer):
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    return widget


@pytest.fixture
def clean(viewer, widget):
    """An empty viewer and the widget's own detector for each test."""
    viewer.layers.clear()
    widget.detector_factory = widget_module.build_detector
    yield viewer, widget
    assert widget.worker is None
    viewer.layers.clear()


@pytest.fixture(scope="module")
def cli_labels(tmp_path_factory):
    """``nucleus segment`` on the sample image: its label TIFF and table."""
    out = tmp_path_factory.mktemp("segment")
    assert cli.main(["segment", str(sample_path()), "--out", str(out)]) == 0
    return out


def test_napari_finds_the_widget_reader_and_sample(viewer):
    from npe2 import PluginManager

    manifest = PluginManager.instance().get_manifest(PLUGIN)
    contributions = manifest.contributions
    assert [w.display_name for w in contributions.widgets] == [WIDGET]
    assert contributions.readers[0].filename_patterns == ["*_labels.tif"]
    assert [s.key for s in contributions.sample_data] == ["nuclei"]


def test_a_run_on_the_sample_gives_the_labels_of_nucleus_segment(clean, cli_labels):
    viewer, widget = clean
    (image,) = viewer.open_sample(PLUGIN, "nuclei")
    assert widget.layer_box.currentText() == image.name
    widget.run()
    assert widget.worker is not None and not widget.run_button.isEnabled()
    wait_for(widget)
    assert widget.last_error is None, widget.last_error
    labels = viewer.layers[f"{image.name} nuclei"]
    expected = tifffile.imread(cli_labels / f"{sample_path().stem}{LABELS_SUFFIX}")
    assert expected.max() >= 5
    np.testing.assert_array_equal(labels.data, expected)
    table = pd.read_csv(cli_labels / TABLE_NAME)
    features = labels.features
    assert list(features["index"]) == list(features["label"]) == list(table["label"])
    np.testing.assert_allclose(features["area"], table["area"])
    np.testing.assert_allclose(features["score"], table["score"], rtol=1e-6)


def test_the_reader_opens_the_labels_with_their_table(clean, cli_labels):
    viewer, _ = clean
    path = cli_labels / f"{sample_path().stem}{LABELS_SUFFIX}"
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert isinstance(layer, napari.layers.Labels)
    np.testing.assert_array_equal(layer.data, tifffile.imread(path))
    table = pd.read_csv(cli_labels / TABLE_NAME)
    np.testing.assert_allclose(layer.features["centroid_x"], table["centroid_x"])
    assert list(layer.features["index"]) == list(table["label"])


def test_cancel_stops_a_long_run(clean):
    viewer, widget = clean
    viewer.add_image(sample_mosaic(2048)[..., 0], name="mosaic")      # 25 tiles of 512 px
    delay = 0.4
    widget.detector_factory = lambda settings: make_threshold_detector(delay=delay)
    start = time.monotonic()
    widget.run()
    while widget.progress.value() < 1:                                # the first tile is done
        QApplication.processEvents()
        assert time.monotonic() - start < 60
    widget.cancel_button.click()
    wait_for(widget, timeout=30)
    assert time.monotonic() - start < 25 * delay / 2                  # well before the end
    assert widget.message.text() == "cancelled" and widget.last_error is None
    assert [layer.name for layer in viewer.layers] == ["mosaic"]
    assert widget.run_button.isEnabled() and not widget.cancel_button.isEnabled()


def assert_refused(viewer, widget, *words: str) -> None:
    """One error message naming what is wrong, no layer added, the widget ready again."""
    before = [layer.name for layer in viewer.layers]
    widget.run()
    wait_for(widget)
    assert widget.last_error is not None
    for word in words:
        assert word in widget.last_error, widget.last_error
    assert widget.message.text() == f"error: {widget.last_error}"
    assert [layer.name for layer in viewer.layers] == before
    assert widget.run_button.isEnabled() and widget.worker is None


def test_bad_input_gets_one_clear_message_and_the_viewer_goes_on(clean, tmp_path):
    viewer, widget = clean
    assert_refused(viewer, widget, "no image layer")
    viewer.add_image(np.random.default_rng(0).random((20, 64, 64)), name="z-stack")
    assert_refused(viewer, widget, "'z-stack'", "stack", "(20, 64, 64)")
    viewer.add_image(np.zeros((64, 64), np.uint16), name="blank")
    assert_refused(viewer, widget, "'blank'", "blank")
    viewer.add_image(np.dstack([np.zeros((64, 64))] * 2 + [np.ones((64, 64))]).transpose(2, 0, 1)
                     * np.arange(64), name="two channels")
    widget.layer_box.setCurrentText("two channels")
    assert_refused(viewer, widget, "'two channels'", "3 channels", "channel box")
    # a file that is not a weights file: the worker's error, shown the same way
    (image,) = viewer.open_sample(PLUGIN, "nuclei")
    widget.layer_box.setCurrentText(image.name)
    fake = tmp_path / "not_weights.h5"
    fake.write_text("these are not weights")
    widget.model_box.setCurrentText(widget_module.WEIGHTS_FILE)
    widget.weights_edit.setText(str(fake))
    try:
        assert_refused(viewer, widget, str(fake), "not a readable HDF5 weights file")
        widget.weights_edit.setText(str(tmp_path / "missing.h5"))
        assert_refused(viewer, widget, "missing.h5", "not found")
    finally:
        widget.model_box.setCurrentText(widget_module.SHIPPED)
    # the viewer and the widget still work: a run on a channel of a multichannel layer
    widget.detector_factory = lambda settings: make_threshold_detector()
    widget.layer_box.setCurrentText("two channels")
    widget.channel_box.setValue(2)
    try:
        widget.run()
        wait_for(widget)
    finally:
        widget.channel_box.setValue(-1)
    assert widget.last_error is None, widget.last_error
    assert viewer.layers[-1].name == "two channels nuclei"
