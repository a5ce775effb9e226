"""The dock widget: segment an image layer into a Labels layer, off the GUI thread.

The run is the one ``nucleus segment`` makes (:func:`nucleus.segment.segment`: the
detector's ``prepare``, the tiles of :mod:`nucleus.inference.tiling`, the table of
:func:`nucleus.segment.measure`), driven tile by tile here so that napari's worker thread can
report progress and stop between tiles when the user cancels. The labels therefore equal the
command line's for the same image and settings.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error
from qtpy.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QFormLayout,
                            QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton, QSpinBox,
                            QVBoxLayout, QWidget)

from nucleus.errors import InputError
from nucleus.formats.image_io import grey_intensity
from nucleus.inference.nucleus_model import NucleusModel, make_detector
from nucleus.inference.tiling import (DEFAULT_TILE, FULL_MASK_TILE, plan_for, stitch,
                                      tile_results)
from nucleus.napari_plugin.reader import features_of
from nucleus.segment import measure

if TYPE_CHECKING:
    import napari

    from nucleus.inference.detectors import Detector

SHIPPED = "shipped Mask R-CNN"
WEIGHTS_FILE = "weights file..."
SCALES = ("model default", "auto", "probe", "0.5", "1", "2")
"""Scale choices; "model default" is ``make_detector``'s own (auto for a model trained at one
nucleus size, native resolution for the shipped one), the others as ``nucleus segment
--scale``."""
MIN_CONFIDENCE = 0.7
"""The shipped CPU profile's DETECTION_MIN_CONFIDENCE (README, "Configurations")."""
MAX_CHANNELS = 8
"""A non-RGB 3-D layer with at most this many planes on its first or last axis is taken as
channels (one chosen with the channel box); a longer axis makes it a z-stack or time series."""


@dataclass(frozen=True)
class Settings:
    """What the user chose: the detector's settings and the tiles."""
    weights: str | None = None          # None: the shipped model
    min_confidence: float = MIN_CONFIDENCE
    scale: float | str | None = None    # None: the model's own choice
    tta: bool = False
    tile: int | None = None             # None: the detector's own (inference.tiling.tile_for)
    overlap: int | None = None         # None: from the nuclei (inference.tiling.auto_plan)


_DETECTORS: dict[tuple, Detector] = {}
_LOCK = threading.Lock()


def build_detector(settings: Settings) -> Detector:
    """The Mask R-CNN of ``settings``, built once per weights file and settings and kept (a
    model takes seconds to build; the user runs many images with one)."""
    key = (settings.weights, settings.min_confidence, settings.scale, settings.tta)
    with _LOCK:
        if key not in _DETECTORS:
            try:
                _DETECTORS[key] = make_detector(
                    "mrcnn", settings.weights, settings.tta, scale=settings.scale, tiled=True,
                    overrides={"DETECTION_MIN_CONFIDENCE": settings.min_confidence})
            except InputError:
                raise
            except Exception as e:    # h5py, Keras: a file that is not this model's weights
                raise InputError(f"{settings.weights}: not a weights file of this model "
                                 f"({type(e).__name__}: {e})") from e
        return _DETECTORS[key]


def layer_plane(layer, channel: int | None) -> np.ndarray:
    """The 2-D grey plane or RGB image of an image layer that the detector takes, or an
    InputError naming the layer and what is wrong with it."""
    name = f"layer {layer.name!r}"
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(data.shape)
    if 0 in shape or len(shape) < 2:
        raise InputError(f"{name} is empty (shape {shape}): open an image in it first")
    if layer.rgb:
        image = np.asarray(data)
        if image.ndim != 3:
            raise InputError(f"{name}: a stack of RGB images (shape {shape}); segment takes "
                             "one 2-D image: pick one plane first")
        if channel is not None:
            if not 0 <= channel < image.shape[-1]:
                raise InputError(f"{name}: channel {channel}, but it has {image.shape[-1]}")
            return image[..., channel]
        return image[..., :3]
    if len(shape) == 2:
        return np.asarray(data)
    if len(shape) == 3 and min(shape[0], shape[-1]) <= MAX_CHANNELS:
        axis = 0 if shape[0] <= shape[-1] else 2
        n = shape[axis]
        if channel is None or not 0 <= channel < n:
            raise InputError(f"{name}: has {n} channels (shape {shape}); choose the nuclear "
                             f"stain with the channel box (0..{n - 1})")
        return np.asarray(np.take(data, channel, axis=axis))
    raise InputError(f"{name}: a {len(shape)}-D stack of shape {shape}; segment takes one 2-D "
                     "image (grey, RGB or a few channels): pick a plane or make a projection "
                     "first")


def run_segmentation(raw: np.ndarray, detector: Detector | Callable[[], Detector],
                     settings: Settings, name: str) -> Iterator:
    """The segmentation of one plane as a generator for napari's ``thread_worker``: yields
    ``(tiles done, tiles)`` after each tile (the worker can stop between tiles), returns
    ``(labels, table)``. ``detector`` may be a function that builds it, so that the model is
    built off the GUI thread too."""
    yield 0, 0                                   # "working": the model may take a while
    if not hasattr(detector, "detect_prepared"):
        detector = detector()
    try:
        prepared = detector.prepare(raw)
    except ValueError as e:
        raise InputError(f"{name}: {e}") from e
    tiles, _, known = plan_for(prepared, detector, settings.tile, settings.overlap)
    found = []
    yield 0, len(tiles)
    for k, owned in enumerate(tile_results(prepared, tiles, detector, known)):
        found.extend(owned)
        yield k + 1, len(tiles)
    labels, scores = stitch(np.shape(prepared), found)
    return labels, measure(labels, scores, grey_intensity(raw), name)


class SegmentWidget(QWidget):
    """Segment nuclei: image layer (and channel), model, minimum confidence, scale, tiles, TTA;
    Run adds a Labels layer with the per-nucleus table as its features. Errors are shown in the
    widget (one line naming the layer or file) and as a napari notification."""

    def __init__(self, napari_viewer: napari.Viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.detector_factory: Callable[[Settings], Detector] = build_detector
        """What builds the detector of the chosen settings (tests put a stand-in here)."""
        self.last_error: str | None = None

        self.layer_box = QComboBox()
        self.channel_box = QSpinBox()
        self.channel_box.setRange(-1, 64)
        self.channel_box.setSpecialValueText("all (grey or RGB)")
        self.channel_box.setValue(-1)
        self.model_box = QComboBox()
        self.model_box.addItems([SHIPPED, WEIGHTS_FILE])
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText("path of a .h5 weights file")
        self.browse_button = QPushButton("Browse...")
        self.confidence_box = QDoubleSpinBox()
        self.confidence_box.setRange(0.0, 1.0)
        self.confidence_box.setSingleStep(0.05)
        self.confidence_box.setValue(MIN_CONFIDENCE)
        self.scale_box = QComboBox()
        self.scale_box.setEditable(True)
        self.scale_box.addItems(SCALES)
        self.tile_box = QSpinBox()
        self.tile_box.setRange(63, 8192)
        self.tile_box.setSpecialValueText(f"auto ({DEFAULT_TILE}, or {FULL_MASK_TILE} with TTA "
                                          "or a scale)")
        self.tile_box.setValue(63)                   # the minimum: "auto"
        self.tta_box = QCheckBox("vote over the 4 flips (4x slower)")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.message = QLabel("")
        self.message.setWordWrap(True)

        form = QFormLayout()
        form.addRow("image", self.layer_box)
        form.addRow("channel", self.channel_box)
        form.addRow("model", self.model_box)
        weights_row = QHBoxLayout()
        weights_row.addWidget(self.weights_edit)
        weights_row.addWidget(self.browse_button)
        form.addRow("weights", weights_row)
        form.addRow("min confidence", self.confidence_box)
        form.addRow("scale", self.scale_box)
        form.addRow("tile (px)", self.tile_box)
        form.addRow("TTA", self.tta_box)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.message)
        layout.addStretch()

        self.model_box.currentTextChanged.connect(self._model_changed)
        self.browse_button.clicked.connect(self._browse)
        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()
        self._model_changed(self.model_box.currentText())

    # ------------------------------------------------------------------------ choices
    def _image_layers(self) -> list:
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)]

    def _refresh_layers(self, event=None) -> None:
        """The image layers in the layer box; a newly added image is chosen (the one the user
        most likely wants to segment next)."""
        current = self.layer_box.currentText()
        if event is not None and event.type == "inserted" and isinstance(event.value, Image):
            current = event.value.name
        self.layer_box.clear()
        names = [layer.name for layer in self._image_layers()]
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)

    def _model_changed(self, text: str) -> None:
        own = text == WEIGHTS_FILE
        self.weights_edit.setEnabled(own)
        self.browse_button.setEnabled(own)

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Mask R-CNN weights", "",
                                              "Keras weights (*.h5);;All files (*)")
        if path:
            self.weights_edit.setText(path)
            self.model_box.setCurrentText(WEIGHTS_FILE)

    def settings(self) -> Settings:
        """The chosen settings, or an InputError saying which choice is wrong."""
        weights = None
        if self.model_box.currentText() == WEIGHTS_FILE:
            weights = self.weights_edit.text().strip()
            if not weights:
                raise InputError("model: choose a weights file (Browse...)")
        text = self.scale_box.currentText().strip()
        if text == SCALES[0]:
            scale = None
        elif text in ("auto", "probe"):
            scale = text
        else:
            try:
                scale = float(text)
            except ValueError:
                scale = -1.0
            if not scale > 0:
                raise InputError(f"scale {text!r}: a positive number, auto, probe or "
                                 f"'{SCALES[0]}'")
        tile = self.tile_box.value()
        if tile == self.tile_box.minimum():
            return Settings(weights, round(self.confidence_box.value(), 4), scale,
                            self.tta_box.isChecked(), None, None)
        return Settings(weights, round(self.confidence_box.value(), 4), scale,
                        self.tta_box.isChecked(), tile, None)

    # ------------------------------------------------------------------------ running
    def _fail(self, message: str) -> None:
        self.last_error = message
        self.message.setText(f"error: {message}")
        show_error(message)

    def run(self) -> None:
        """Check the input here (errors at once, in the widget), then segment in a worker."""
        if self.worker is not None:
            return
        self.last_error = None
        try:
            layers = {layer.name: layer for layer in self._image_layers()}
            layer = layers.get(self.layer_box.currentText())
            if layer is None:
                raise InputError("no image layer: open an image (or File > Open Sample)")
            channel = self.channel_box.value()
            raw = layer_plane(layer, None if channel < 0 else channel)
            if raw.min() == raw.max():
                raise InputError(f"layer {layer.name!r} is blank (every pixel "
                                 f"{raw.flat[0]}): nothing to segment")
            settings = self.settings()
            if settings.weights is not None:
                NucleusModel.resolve(settings.weights)    # a missing file is an error now
        except InputError as e:
            self._fail(str(e))
            return
        factory = self.detector_factory
        self.worker = create_worker(run_segmentation, raw, lambda: factory(settings), settings,
                                    layer.name, _start_thread=False, _ignore_errors=True)
        self.worker.yielded.connect(self._progressed)
        self.worker.returned.connect(lambda result: self._done(layer, result))
        self.worker.errored.connect(self._errored)
        self.worker.aborted.connect(lambda: self.message.setText("cancelled"))
        self.worker.finished.connect(self._finished)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setRange(0, 0)
        self.message.setText(f"segmenting {layer.name!r}...")
        self.worker.start()

    def cancel(self) -> None:
        """Stop the run after the tile in progress."""
        if self.worker is not None:
            self.message.setText("cancelling after this tile...")
            self.worker.quit()

    def _progressed(self, value: tuple[int, int]) -> None:
        done, total = value
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _errored(self, error: Exception) -> None:
        self._fail(str(error) if isinstance(error, InputError)
                   else f"{type(error).__name__}: {error}")

    def _done(self, layer, result) -> None:
        labels, table = result
        self.viewer.add_labels(labels, name=f"{layer.name} nuclei",
                               features=features_of(table), scale=layer.scale[-2:],
                               translate=layer.translate[-2:])
        self.message.setText(f"{len(table)} nuclei in {layer.name!r}")

    def _finished(self) -> None:
        self.worker = None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
