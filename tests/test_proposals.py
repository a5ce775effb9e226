"""mrcnn.proposals: top-k, refinement, clipping, NMS and zero padding of RPN proposals.

NumPy inputs, outputs through ``keras.ops.convert_to_numpy``: runs under TensorFlow and JAX.
"""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn.box_ops import MAX_LOG_SIZE_DELTA
from mrcnn.proposals import propose, top_anchors

pytestmark = pytest.mark.backends

STD = np.array([0.1, 0.1, 0.2, 0.2])
ANCHORS = np.array([
    [0.1, 0.1, 0.4, 0.4],
    [0.1, 0.1, 0.4, 0.41],   # near duplicate of anchor 0
    [0.6, 0.6, 0.9, 0.9],
    [0.5, 0.0, 0.7, 0.2],
    [0.8, 0.8, 1.2, 1.1],    # sticks out of the image
], np.float32)


def to_np(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x))


def probs_for(scores):
    scores = np.asarray(scores, np.float32)
    return np.stack([1 - scores, scores], -1)[None]


def run(scores, deltas=None, count=6, nms=0.7, pre_nms=100):
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32) if deltas is None else deltas
    return to_np(propose(probs_for(scores), deltas, ANCHORS, count, nms, pre_nms, STD))[0]


def test_nms_removes_the_duplicate_and_pads_to_count():
    out = run([0.9, 0.8, 0.7, 0.6, 0.05])
    assert out.shape == (6, 4)
    expected = [ANCHORS[0], ANCHORS[2], ANCHORS[3], [0.8, 0.8, 1.0, 1.0]]
    np.testing.assert_allclose(out[:4], expected, atol=1e-6)
    np.testing.assert_array_equal(out[4:], 0)


def test_higher_scoring_duplicate_wins():
    out = run([0.8, 0.9, 0.7, 0.6, 0.05])
    np.testing.assert_allclose(out[0], ANCHORS[1], atol=1e-6)
    assert not np.any(np.all(np.isclose(out, ANCHORS[0]), axis=1))


def test_duplicate_survives_when_the_threshold_is_above_its_iou():
    # IoU of anchors 0 and 1 is 0.3 * 0.3 / (0.3 * 0.31) = 0.968: kept under a 0.99 threshold.
    out = run([0.9, 0.8, 0.7, 0.6, 0.05], nms=0.99)
    np.testing.assert_allclose(out[:5], [ANCHORS[0], ANCHORS[1], ANCHORS[2], ANCHORS[3],
                                         [0.8, 0.8, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(out[5:], 0)


def test_count_and_pre_nms_limit_cut_the_list():
    out = run([0.9, 0.8, 0.7, 0.6, 0.05], count=2)
    np.testing.assert_allclose(out, ANCHORS[[0, 2]], atol=1e-6)
    out = run([0.9, 0.8, 0.7, 0.6, 0.05], pre_nms=2)  # only the two duplicates are looked at
    np.testing.assert_allclose(out[0], ANCHORS[0], atol=1e-6)
    np.testing.assert_array_equal(out[1:], 0)


def test_deltas_are_scaled_by_the_std_dev_and_applied():
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32)
    deltas[0, 2] = [1.0, -1.0, 0.0, np.log(0.5) / 0.2]  # moves 0.03 down/left, halves width
    out = run([0.1, 0.1, 0.9, 0.1, 0.1], deltas=deltas, count=1)
    np.testing.assert_allclose(out[0], [0.63, 0.645, 0.93, 0.795], atol=1e-5)


def test_huge_size_deltas_are_clamped_and_clipped_not_infinite():
    # An untrained RPN can ask for exp(500): the box coder clamps it, clipping does the rest.
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32)
    deltas[0, 3] = [0.0, 0.0, 500.0, 500.0]
    out = run([0.1, 0.1, 0.1, 0.9, 0.1], deltas=deltas, count=1)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[0], [0.0, 0.0, 1.0, 1.0], atol=1e-6)
    # A delta that asks for exactly a 4x larger box (within the clamp) is applied as asked.
    deltas[0, 3] = [0.0, 0.0, np.log(4.0) / 0.2, 0.0]
    assert np.log(4.0) < MAX_LOG_SIZE_DELTA
    out = run([0.1, 0.1, 0.1, 0.9, 0.1], deltas=deltas, count=1)
    np.testing.assert_allclose(out[0], [0.2, 0.0, 1.0, 0.2], atol=1e-5)


def test_each_image_of_the_batch_is_separate():
    probs = np.concatenate([probs_for([0.9, 0.1, 0.1, 0.1, 0.1]),
                            probs_for([0.1, 0.1, 0.1, 0.9, 0.1])])
    deltas = np.zeros((2, len(ANCHORS), 4), np.float32)
    out = to_np(propose(probs, deltas, ANCHORS, 1, 0.7, 100, STD))
    np.testing.assert_allclose(out[:, 0], ANCHORS[[0, 3]], atol=1e-6)


def test_batch_images_are_padded_each_to_their_own_count():
    # Image 0 keeps 4 boxes (anchor 1 is a duplicate), image 1 only 2 (pre_nms 2 of 5 anchors
    # with different scores: anchors 2 and 3 are the best two and do not overlap).
    probs = np.concatenate([probs_for([0.9, 0.8, 0.7, 0.6, 0.5]),
                            probs_for([0.1, 0.2, 0.9, 0.8, 0.3])])
    deltas = np.zeros((2, len(ANCHORS), 4), np.float32)
    out = to_np(propose(probs, deltas, ANCHORS, 5, 0.7, 2, STD))
    assert out.shape == (2, 5, 4)
    np.testing.assert_allclose(out[0, 0], ANCHORS[0], atol=1e-6)
    np.testing.assert_array_equal(out[0, 1:], 0)
    np.testing.assert_allclose(out[1, :2], ANCHORS[[2, 3]], atol=1e-6)
    np.testing.assert_array_equal(out[1, 2:], 0)


def test_top_anchors_sorts_refines_and_clips():
    scores = np.array([[0.2, 0.9, 0.1, 0.5, 0.7]], np.float32)
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32)
    deltas[0, 4] = [0.1, 0.0, 0.0, 0.0]  # already scaled: moves anchor 4 down by 0.04
    top, pre_nms, refined, clipped = (to_np(t) for t in top_anchors(scores, deltas, ANCHORS, 3))
    np.testing.assert_allclose(top, [[0.9, 0.7, 0.5]])
    np.testing.assert_allclose(pre_nms[0], ANCHORS[[1, 4, 3]])
    np.testing.assert_allclose(refined[0], [ANCHORS[1], [0.84, 0.8, 1.24, 1.1], ANCHORS[3]],
                               atol=1e-6)
    np.testing.assert_allclose(clipped[0], [ANCHORS[1], [0.84, 0.8, 1.0, 1.0], ANCHORS[3]],
                               atol=1e-6)
    # A limit above the number of anchors takes them all.
    top, pre_nms, _, _ = (to_np(t) for t in top_anchors(scores, deltas, ANCHORS, 100))
    np.testing.assert_allclose(top, [[0.9, 0.7, 0.5, 0.2, 0.1]])
    np.testing.assert_allclose(pre_nms[0], ANCHORS[[1, 4, 3, 0, 2]])


def test_propose_runs_inside_jax_jit():
    """Under JAX the stage compiles in ``jax.jit`` (static shapes) and gives the eager result."""
    probs = np.concatenate([probs_for([0.9, 0.8, 0.7, 0.6, 0.05]),
                            probs_for([0.1, 0.1, 0.1, 0.9, 0.1])])
    deltas = np.zeros((2, len(ANCHORS), 4), np.float32)
    deltas[1, 3] = [0.0, 0.0, 500.0, 0.0]

    def stage(probs, deltas, anchors):
        return propose(probs, deltas, anchors, 6, 0.7, 100, STD)

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        out = jax.jit(stage)(probs, deltas, ANCHORS)
        assert isinstance(out, jax.Array)
    else:
        out = stage(probs, deltas, ANCHORS)
    out = to_np(out)
    assert out.shape == (2, 6, 4)
    np.testing.assert_allclose(out[0, :4], [ANCHORS[0], ANCHORS[2], ANCHORS[3],
                                            [0.8, 0.8, 1.0, 1.0]], atol=1e-6)
    np.testing.assert_array_equal(out[0, 4:], 0)
    np.testing.assert_allclose(out[1, 0], [0.0, 0.0, 1.0, 0.2], atol=1e-6)
