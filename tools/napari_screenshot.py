"""A screenshot of napari with an image, its nuclei (``nucleus segment``'s labels, opened with
the plugin's reader) and the plugin's dock widget: the README's ``docs/images/napari.png``.

    xvfb-run -a python tools/napari_screenshot.py [IMAGE] [--out docs/images/napari.png]

Qt's xcb platform is used (a real window on the X server): under the offscreen platform that
the tests use, a window screenshot leaves the canvas blank ("QOpenGLWidget is not supported on
this platform"). xcb needs the system libraries libxcb-cursor0, libxcb-icccm4, libxcb-keysyms1.
The image is segmented first by ``nucleus segment`` in a child process; this process never
loads TensorFlow (it checks), because TensorFlow and a viewer's OpenGL context in one process
crash on Mesa's software OpenGL (llvmpipe, as under Xvfb); see the README, "napari". The
widget's module imports no TensorFlow either (it builds a model only when Run is pressed).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from PIL import Image
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication

from nucleus.formats.image_io import read_image
from nucleus.formats.segment_outputs import LABELS_SUFFIX

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_IMAGE = (ROOT / "nucleus" / "sample" / "stage1_train"
                 / "c04fa1a74a980d790ba6f3e595fd9851f14370bb71c7cbb7846c33ca9d72687f" / "images"
                 / "c04fa1a74a980d790ba6f3e595fd9851f14370bb71c7cbb7846c33ca9d72687f.png")
"""A 256 x 256 fluorescence image of the bundled sample with about 50 nuclei."""
PLUGIN = "nucleus-mrcnn"
WIDGET = "Segment nuclei"
FORBIDDEN = ("tensorflow", "keras", "jax", "torch")


def segment(image: Path, out: Path) -> Path:
    """``nucleus segment IMAGE --out OUT`` in a child process: the label TIFF's path."""
    subprocess.run([sys.executable, "-m", "nucleus", "segment", str(image), "--out", str(out)],
                   check=True, cwd=ROOT)
    return out / f"{image.stem}{LABELS_SUFFIX}"


def screenshot(image: Path, labels: Path, out: Path, size: tuple[int, int],
               widget: bool = True, max_bytes: int = 300_000) -> None:
    viewer = napari.Viewer(show=True)
    try:
        viewer.window.resize(*size)
        data = read_image(image)
        viewer.add_image(data, name=image.stem[:8], rgb=data.ndim == 3)
        (layer,) = viewer.open(str(labels), plugin=PLUGIN)
        layer.name = f"{image.stem[:8]} nuclei"
        layer.opacity = 0.5
        if widget:
            viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
        viewer.layers.selection.active = layer
        settle(QApplication)
        viewer.reset_view()                    # once the dock widget has its room
        settle(QApplication)
        loaded = [m for m in sys.modules if m.split(".")[0] in FORBIDDEN]
        assert not loaded, f"this process must not load {loaded[:3]}"
        out.parent.mkdir(parents=True, exist_ok=True)
        viewer.screenshot(str(out), canvas_only=False, flash=False)
        check_canvas(viewer, out)
    finally:
        viewer.close()
    shrink(out, max_bytes)
    print(f"{out}: {out.stat().st_size // 1000} KB, {len(layer.features)} nuclei")


def check_canvas(viewer, path: Path) -> None:
    """The canvas's part of the window screenshot is not blank (as under Qt's offscreen
    platform, which grabs no OpenGL widget)."""
    native = viewer.window._qt_viewer.canvas.native
    top_left = native.mapTo(viewer.window._qt_window, QPoint(0, 0))
    with Image.open(path) as im:
        shot = np.asarray(im.convert("L"), dtype=float)
    ratio = shot.shape[1] / viewer.window._qt_window.width()
    x, y = round(top_left.x() * ratio), round(top_left.y() * ratio)
    part = shot[y:y + round(native.height() * ratio), x:x + round(native.width() * ratio)]
    assert part.size and part.std() > 2, (
        f"{path}: the canvas is blank in the window screenshot (Qt platform "
        f"{os.environ.get('QT_QPA_PLATFORM')}; use xcb)")


def settle(app, seconds: float = 1.0) -> None:
    """Let Qt lay out and paint."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def shrink(path: Path, max_bytes: int) -> None:
    """Fewer colours (a 256-colour palette) if the PNG is larger than ``max_bytes``."""
    if path.stat().st_size <= max_bytes:
        return
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("image", nargs="?", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--labels", type=Path, help="NAME_labels.tif of nucleus segment "
                        "(default: segment the image now, in a child process)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "napari.png")
    parser.add_argument("--size", type=int, nargs=2, default=(1400, 760), metavar=("W", "H"))
    parser.add_argument("--no-widget", action="store_true", help="leave the dock widget out")
    parser.add_argument("--platform", default="xcb", help="Qt platform (default xcb)")
    args = parser.parse_args(argv)
    os.environ["QT_QPA_PLATFORM"] = args.platform
    if not os.environ.get("DISPLAY"):
        parser.error("needs an X display for OpenGL: xvfb-run -a python tools/napari_screenshot.py")
    with tempfile.TemporaryDirectory() as tmp:
        labels = args.labels or segment(args.image, Path(tmp))
        screenshot(args.image, labels, args.out, tuple(args.size), not args.no_widget)
    # os._exit: napari's Qt objects can take the interpreter's exit down with them
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
