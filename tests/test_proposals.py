"""mrcnn.proposals: top-k, refinement, clipping, NMS and zero padding of RPN proposals."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from mrcnn.proposals import propose

STD = np.array([0.1, 0.1, 0.2, 0.2])
ANCHORS = np.array([
    [0.1, 0.1, 0.4, 0.4],
    [0.1, 0.1, 0.4, 0.41],   # near duplicate of anchor 0
    [0.6, 0.6, 0.9, 0.9],
    [0.5, 0.0, 0.7, 0.2],
    [0.8, 0.8, 1.2, 1.1],    # sticks out of the image
], np.float32)


def probs_for(scores):
    scores = np.asarray(scores, np.float32)
    return np.stack([1 - scores, scores], -1)[None]


def run(scores, deltas=None, count=6, nms=0.7, pre_nms=100):
    deltas = np.zeros((1, len(ANCHORS), 4), np.float32) if deltas is None else deltas
    return propose(tf.constant(probs_for(scores)), tf.constant(deltas), tf.constant(ANCHORS),
                   count, nms, pre_nms, STD).numpy()[0]


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


def test_each_image_of_the_batch_is_separate():
    probs = np.concatenate([probs_for([0.9, 0.1, 0.1, 0.1, 0.1]),
                            probs_for([0.1, 0.1, 0.1, 0.9, 0.1])])
    deltas = np.zeros((2, len(ANCHORS), 4), np.float32)
    out = propose(tf.constant(probs), tf.constant(deltas), tf.constant(ANCHORS), 1, 0.7, 100,
                  STD).numpy()
    np.testing.assert_allclose(out[:, 0], ANCHORS[[0, 3]], atol=1e-6)
