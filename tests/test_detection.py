"""mrcnn.detection: background and weak scores dropped, per-class NMS, clipping to the window,
a fixed number of rows (zero padded) and the count of real ones.

NumPy inputs, outputs through ``keras.ops.convert_to_numpy``: runs under TensorFlow and JAX.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn.config import Config
from mrcnn.detection import refine_detections

pytestmark = pytest.mark.backends


class DetConfig(Config):
    NUM_CLASSES = 3
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    DETECTION_MAX_INSTANCES = 100


ROIS = np.array([
    [0.1, 0.1, 0.3, 0.3],    # 0: class 1, 0.9, shifted down by its deltas
    [0.11, 0.1, 0.3, 0.3],   # 1: class 1, 0.8, overlaps 0: suppressed
    [0.1, 0.1, 0.3, 0.3],    # 2: class 2, 0.85, same place as 0 but another class: kept
    [0.5, 0.5, 0.7, 0.7],    # 3: background
    [0.6, 0.1, 0.8, 0.3],    # 4: class 1 below the confidence threshold
    [0.7, 0.7, 1.1, 0.95],   # 5: class 2, 0.75, crosses the window's bottom edge
    [0.0, 0.0, 0.0, 0.0],    # 6: zero padding, high score: dropped (no area)
], np.float32)
PROBS = np.array([
    [0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.15, 0.0, 0.85], [0.9, 0.05, 0.05],
    [0.3, 0.6, 0.1], [0.2, 0.05, 0.75], [0.0, 0.99, 0.01],
], np.float32)
WINDOW = np.array([0.0, 0.0, 0.9, 1.0], np.float32)


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def detect(rois, probs, deltas, window, config):
    """(all rows [M, 6], the detections [count, 6]); checks the padding on the way."""
    out, count = refine_detections(rois, probs, deltas, window, config)
    out, count = to_np(out), int(to_np(count))
    assert out.shape == (config.DETECTION_MAX_INSTANCES, 6)
    assert 0 <= count <= config.DETECTION_MAX_INSTANCES
    np.testing.assert_array_equal(out[count:], 0)  # rows after the count are zero padding
    return out, out[:count]


def run(config=None, deltas=None, probs=PROBS):
    deltas = np.zeros((len(ROIS), 3, 4), np.float32) if deltas is None else deltas
    return detect(ROIS, probs, deltas, WINDOW, config or DetConfig())[1]


def test_drops_background_weak_and_empty_and_applies_per_class_nms():
    deltas = np.zeros((len(ROIS), 3, 4), np.float32)
    deltas[0, 1] = [1.0, 0.0, 0.0, 0.0]   # class 1 delta of ROI 0: dy 1 * std 0.1 * h 0.2
    deltas[0, 2] = [0.0, 5.0, 0.0, 0.0]   # another class's delta: must be ignored
    out = run(deltas=deltas)
    assert out.shape == (3, 6)
    np.testing.assert_allclose(out[:, 4], [1, 2, 2])
    np.testing.assert_allclose(out[:, 5], [0.9, 0.85, 0.75], rtol=1e-6)
    np.testing.assert_allclose(out[0, :4], [0.12, 0.1, 0.32, 0.3], atol=1e-6)
    np.testing.assert_allclose(out[1, :4], ROIS[2], atol=1e-6)
    np.testing.assert_allclose(out[2, :4], [0.7, 0.7, 0.9, 0.95], atol=1e-6)  # clipped


def test_size_deltas_use_the_std_dev_and_the_clamp():
    deltas = np.zeros((len(ROIS), 3, 4), np.float32)
    deltas[0, 1] = [0.0, 0.0, np.log(2.0) / 0.2, 0.0]   # doubles the height of ROI 0
    deltas[2, 2] = [0.0, 0.0, 0.0, 1000.0]              # asks for exp(200): clamped, clipped
    out = run(deltas=deltas)
    np.testing.assert_allclose(out[:, 5], [0.9, 0.85, 0.75], rtol=1e-6)
    np.testing.assert_allclose(out[0, :4], [0.0, 0.1, 0.4, 0.3], atol=1e-6)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1, :4], [0.1, 0.0, 0.3, 1.0], atol=1e-6)


def test_without_the_stronger_box_the_duplicate_survives():
    probs = PROBS.copy()
    probs[0] = [0.95, 0.05, 0.0]  # ROI 0 becomes background
    out = run(probs=probs)
    np.testing.assert_allclose(out[:, 5], [0.85, 0.8, 0.75], rtol=1e-6)
    np.testing.assert_allclose(out[1, :4], ROIS[1], atol=1e-6)


def test_max_instances_and_no_confidence_threshold():
    class Loose(DetConfig):
        DETECTION_MIN_CONFIDENCE = 0
        DETECTION_MAX_INSTANCES = 2

    out = run(Loose())
    np.testing.assert_allclose(out[:, 5], [0.9, 0.85], rtol=1e-6)

    class NoLimit(DetConfig):
        DETECTION_MIN_CONFIDENCE = 0

    out = run(NoLimit())
    # The weak class-1 box (0.6) now survives; background and the empty box still do not.
    np.testing.assert_allclose(out[:, 5], [0.9, 0.85, 0.75, 0.6], rtol=1e-6)


def test_rows_are_padded_to_max_instances_and_counted():
    class Five(DetConfig):
        DETECTION_MAX_INSTANCES = 5

    out, count = refine_detections(ROIS, PROBS, np.zeros((len(ROIS), 3, 4), np.float32),
                                   WINDOW, Five())
    out, count = to_np(out), to_np(count)
    assert out.shape == (5, 6) and count.shape == () and int(count) == 3
    np.testing.assert_allclose(out[:3, 5], [0.9, 0.85, 0.75], rtol=1e-6)
    np.testing.assert_array_equal(out[3:], 0)
    # Exactly as many detections as rows: no padding row left, the count is the limit.

    class Three(DetConfig):
        DETECTION_MAX_INSTANCES = 3

    all_rows, kept = detect(ROIS, PROBS, np.zeros((len(ROIS), 3, 4), np.float32), WINDOW,
                            Three())
    assert len(kept) == 3
    np.testing.assert_allclose(all_rows[:, 5], [0.9, 0.85, 0.75], rtol=1e-6)


def test_nothing_to_detect_gives_only_padding():
    background = np.tile([[1.0, 0.0, 0.0]], (len(ROIS), 1)).astype(np.float32)
    out, kept = detect(ROIS, background, np.zeros((len(ROIS), 3, 4), np.float32), WINDOW,
                       DetConfig())
    assert kept.shape == (0, 6)
    assert not out.any()


def test_no_roi_at_all_gives_only_padding():
    # TensorFlow's inference trims the proposals' padding, so an image whose proposals all
    # vanished reaches detection with zero rows
    out, kept = detect(np.zeros((0, 4), np.float32), np.zeros((0, 3), np.float32),
                       np.zeros((0, 3, 4), np.float32), WINDOW, DetConfig())
    assert kept.shape == (0, 6)
    assert not out.any()


def _one_class(rois, scores, config):
    """Detections of class 1 with the given scores, boxes unrefined, the window the whole image."""
    rois = np.asarray(rois, np.float32)
    probs = np.stack([1 - np.asarray(scores), scores, np.zeros(len(scores))], 1).astype(np.float32)
    return detect(rois, probs, np.zeros((len(rois), 3, 4), np.float32),
                  np.array([0.0, 0.0, 1.0, 1.0], np.float32), config)[1]


def test_a_score_equal_to_the_minimum_confidence_is_kept():
    class Exact(DetConfig):
        DETECTION_MIN_CONFIDENCE = float(np.float32(0.7))

    out = _one_class([[0.1, 0.1, 0.3, 0.3], [0.5, 0.5, 0.7, 0.7]],
                     np.array([0.7, np.nextafter(np.float32(0.7), 0)], np.float32), Exact())
    np.testing.assert_allclose(out[:, :4], [[0.1, 0.1, 0.3, 0.3]], atol=1e-6)


def test_nms_keeps_a_box_whose_iou_equals_the_threshold_and_drops_one_above():
    class Quarter(DetConfig):
        DETECTION_NMS_THRESHOLD = 0.25

    best = [0.0, 0.0, 0.5, 0.5]                       # area 1/4; all numbers exact in float32
    at = [0.0, 0.0, 0.5, 0.125]                       # inside it, IoU exactly 1/4
    above = [0.0, 0.0, 0.5, 0.1875]                   # IoU 3/8 (kept by the default 0.5)
    out = _one_class([best, at, above], np.array([0.9, 0.8, 0.85], np.float32), Quarter())
    np.testing.assert_allclose(out[:, 5], [0.9, 0.8], rtol=1e-6)
    np.testing.assert_allclose(out[1, :4], at, atol=1e-6)


def test_classes_never_suppress_each_other_even_for_big_boxes():
    rois = np.array([[0.1, 0.1, 0.9, 0.9], [0.1, 0.1, 0.9, 0.9]], np.float32)
    probs = np.array([[0.1, 0.9, 0.0], [0.2, 0.0, 0.8]], np.float32)
    _, out = detect(rois, probs, np.zeros((2, 3, 4), np.float32),
                    np.array([0.0, 0.0, 1.0, 1.0], np.float32), DetConfig())
    np.testing.assert_allclose(out[:, 4:], [[1, 0.9], [2, 0.8]], rtol=1e-6)


def test_boxes_entirely_outside_the_image_window_are_dropped():
    # Clipped to the window they have no height (below it) or no width (right of it).
    rois = [[0.92, 0.2, 0.98, 0.4], [0.2, 0.1, 0.4, 0.3], [0.3, 0.5, 0.5, 0.6]]
    window = np.array([0.0, 0.0, 0.9, 0.45], np.float32)
    probs = np.array([[0.05, 0.95, 0.0], [0.2, 0.8, 0.0], [0.1, 0.9, 0.0]], np.float32)
    _, out = detect(np.array(rois, np.float32), probs, np.zeros((3, 3, 4), np.float32), window,
                    DetConfig())
    np.testing.assert_allclose(out[:, 5], [0.8], rtol=1e-6)
    np.testing.assert_allclose(out[0, :4], rois[1], atol=1e-6)


def test_refine_detections_runs_inside_jax_jit():
    """Under JAX the stage compiles in ``jax.jit`` (static output shape) with the eager result."""
    deltas = np.zeros((len(ROIS), 3, 4), np.float32)
    deltas[0, 1] = [1.0, 0.0, 0.0, 0.0]
    config = DetConfig()

    def stage(rois, probs, deltas, window):
        return refine_detections(rois, probs, deltas, window, config)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        out, count = jax.jit(stage)(ROIS, PROBS, deltas, WINDOW)
        assert isinstance(out, jax.Array) and isinstance(count, jax.Array)
    else:
        out, count = stage(ROIS, PROBS, deltas, WINDOW)
    out, count = to_np(out), int(to_np(count))
    assert out.shape == (100, 6) and count == 3
    np.testing.assert_allclose(out[:3, 4:], [[1, 0.9], [2, 0.85], [2, 0.75]], rtol=1e-6)
    np.testing.assert_allclose(out[0, :4], [0.12, 0.1, 0.32, 0.3], atol=1e-6)
    np.testing.assert_array_equal(out[3:], 0)
