from __future__ import annotations

import re

import numpy as np
import pytest

from nucleus.errors import InputError
from nucleus.scoring.metric import (THRESHOLDS, as_labels, dataset_score, dataset_scores,
                                    image_score, iou_matrix, labels_to_masks, masks_to_labels,
                                    match, mean_precisions, precision_at)


def square(shape, y, x, size, label=1):
    out = np.zeros(shape, dtype=np.int32)
    out[y:y + size, x:x + size] = label
    return out


def test_thresholds():
    np.testing.assert_allclose(THRESHOLDS, [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95])
    assert not THRESHOLDS.flags.writeable


def test_perfect_match_scores_one():
    labels = square((20, 20), 2, 2, 5, 1) + square((20, 20), 10, 10, 4, 2)
    s = image_score(labels, labels)
    assert s.score == 1.0
    assert (s.tp == 2).all() and (s.fp == 0).all() and (s.fn == 0).all()
    assert s.n_true == 2 and s.n_pred == 2
    # Label values don't matter, only the partition.
    assert image_score(labels, labels * 7).score == 1.0
    assert image_score(labels_to_masks(labels), labels[:, :, None].repeat(1, 2) == [1, 2]).score == 1.0


def test_iou_exactly_half_does_not_match_at_050():
    true = square((10, 10), 0, 0, 2)            # 4 pixels
    pred = np.zeros((10, 10), np.int32)
    pred[0, 0:2] = 1                            # 2 of them: IoU = 2/4 = 0.5
    assert iou_matrix(true, pred)[0, 0] == 0.5
    s = image_score(true, pred)
    assert s.score == 0.0
    assert (s.tp == 0).all() and (s.fp == 1).all() and (s.fn == 1).all()


@pytest.mark.parametrize("k", range(10, 21))
def test_strict_inequality_at_every_threshold(k):
    # Truth: 20 pixels; prediction: k of them, so IoU = k/20 exactly equals a threshold for k >= 10.
    true = np.zeros((4, 5), np.int32)
    true[:] = 1
    pred = np.zeros(20, np.int32)
    pred[:k] = 1
    pred = pred.reshape(4, 5)
    s = image_score(true, pred)
    expected = THRESHOLDS < k / 20
    np.testing.assert_array_equal(s.tp, expected.astype(int))
    np.testing.assert_array_equal(s.precisions, expected.astype(float))


def test_shifted_objects():
    true = square((12, 12), 2, 2, 4)              # 16 pixels
    half = square((12, 12), 2, 4, 4)              # shift by 2: inter 8, union 24
    assert iou_matrix(true, half)[0, 0] == pytest.approx(1 / 3)
    assert image_score(true, half).score == 0.0
    one = square((12, 12), 2, 3, 4)               # shift by 1: inter 12, union 20 -> 0.6
    s = image_score(true, one)
    np.testing.assert_array_equal(s.precisions, [1, 1] + [0] * 8)
    assert s.score == pytest.approx(0.2)


def test_mixed_case_counts():
    shape = (30, 30)
    true = square(shape, 0, 0, 5, 1) + square(shape, 10, 10, 5, 2)
    pred = (square(shape, 0, 0, 5, 1)             # perfect
            + square(shape, 10, 11, 5, 3)         # inter 20 / union 30 = 0.667
            + square(shape, 22, 22, 3, 9))        # spurious
    s = image_score(true, pred)
    low = THRESHOLDS < 2 / 3
    np.testing.assert_array_equal(s.tp, np.where(low, 2, 1))
    np.testing.assert_array_equal(s.fp, np.where(low, 1, 2))
    np.testing.assert_array_equal(s.fn, np.where(low, 0, 1))
    np.testing.assert_allclose(s.precisions, np.where(low, 2 / 3, 1 / 4))
    assert low.sum() == 4 and s.score == pytest.approx((4 * 2 / 3 + 6 / 4) / 10)


def test_empty_cases():
    empty = np.zeros((8, 8), np.int32)
    obj = square((8, 8), 1, 1, 3)
    assert image_score(empty, empty).score == 1.0
    assert image_score(obj, empty).score == 0.0
    assert image_score(empty, obj).score == 0.0
    assert image_score(np.zeros((8, 8, 0), bool), np.zeros((8, 8, 0), bool)).score == 1.0
    s = image_score(obj, empty)
    assert (s.fn == 1).all() and (s.fp == 0).all()
    assert iou_matrix(obj, empty).shape == (1, 0)
    assert precision_at(np.zeros((0, 0)), 0.5) == (1.0, 0, 0, 0)


def test_iou_matrix_orders_and_skips_absent_labels():
    shape = (10, 10)
    true = square(shape, 0, 0, 2, 5) + square(shape, 5, 5, 2, 2)
    pred = square(shape, 5, 5, 2, 1)
    iou = iou_matrix(true, pred)
    assert iou.shape == (2, 1)
    np.testing.assert_array_equal(iou[:, 0], [1.0, 0.0])   # label 2 is the first row
    big = true.astype(np.int64) * 10**12                   # huge labels take the sorting path
    np.testing.assert_array_equal(iou_matrix(big, pred), iou)


def test_stack_with_empty_mask_is_ignored():
    masks = np.zeros((6, 6, 3), bool)
    masks[0:2, 0:2, 0] = True
    masks[3:5, 3:5, 2] = True
    assert iou_matrix(masks, masks).shape == (2, 2)
    assert image_score(masks, masks).score == 1.0


def test_conversions_round_trip_and_errors():
    rng = np.random.default_rng(0)
    labels = random_labels(rng, (16, 16), 6)
    masks = labels_to_masks(labels)
    assert masks.dtype == bool and masks.shape[:2] == (16, 16)
    back = masks_to_labels(masks)
    assert image_score(labels, back).score == 1.0
    np.testing.assert_array_equal(back > 0, labels > 0)
    np.testing.assert_array_equal(as_labels(labels), labels)
    overlapping = np.ones((4, 4, 2), bool)
    with pytest.raises(InputError, match="overlap on 16 pixels"):
        masks_to_labels(overlapping)
    with pytest.raises(InputError, match="integer dtype"):
        as_labels(np.ones((4, 4), bool))
    with pytest.raises(InputError, match="negative"):
        as_labels(-np.ones((4, 4), int))
    with pytest.raises(InputError, match="shape"):
        iou_matrix(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(InputError, match="stack"):
        masks_to_labels(np.zeros((4, 4), bool))


def test_match_is_one_to_one_for_degenerate_matrices():
    iou = np.array([[0.9, 0.8], [0.85, 0.0]])
    # Greedy by best IoU (as COCO does): (0, 0) wins, which blocks both other candidates.
    np.testing.assert_array_equal(match(iou, 0.5), [[0, 0]])
    np.testing.assert_array_equal(match(iou, 0.95), np.zeros((0, 2)))
    assert precision_at(iou, 0.5) == (1 / 3, 1, 1, 1)
    # Duplicates: two predictions equal to one truth -> one TP, one FP.
    assert precision_at(np.array([[1.0, 1.0]]), 0.5) == (0.5, 1, 1, 0)


def test_dataset_score_and_mean_precisions():
    a = square((10, 10), 0, 0, 4)
    pairs = [(a, a), (a, np.zeros_like(a)), (a, square((10, 10), 0, 1, 4))]   # 1, 0, 0.6 IoU
    scores = dataset_scores(pairs)
    assert [s.score for s in scores] == pytest.approx([1.0, 0.0, 0.2])
    assert dataset_score(iter(pairs), progress=True) == pytest.approx(0.4)
    mp = mean_precisions(scores)
    np.testing.assert_allclose(mp, [2 / 3, 2 / 3] + [1 / 3] * 8)
    assert mp.mean() == pytest.approx(0.4)
    with pytest.raises(InputError):
        dataset_score([])
    with pytest.raises(InputError):
        mean_precisions([])


# ----------------------------------------------------------------------------- brute force
def random_labels(rng, shape, n):
    """Non-overlapping label image from painted rectangles (later ones cover earlier ones)."""
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        h, w = rng.integers(1, 8, size=2)
        y, x = rng.integers(0, shape[0] - 1), rng.integers(0, shape[1] - 1)
        labels[y:y + h, x:x + w] = k
    return labels


def perturb(rng, labels):
    """A plausible prediction: objects shifted a little, some dropped, some added, relabelled."""
    out = np.zeros_like(labels)
    for k in np.unique(labels[labels > 0]):
        if rng.random() < 0.15:
            continue
        dy, dx = rng.integers(-1, 2, size=2)
        ys, xs = np.nonzero(labels == k)
        ys, xs = np.clip(ys + dy, 0, labels.shape[0] - 1), np.clip(xs + dx, 0, labels.shape[1] - 1)
        out[ys, xs] = k * 3 + 1
    extra = random_labels(rng, labels.shape, int(rng.integers(0, 3)))
    out[extra > 0] = extra[extra > 0] + 1000
    return out


def brute_force_score(true, pred):
    t_ids = [k for k in np.unique(true) if k > 0]
    p_ids = [k for k in np.unique(pred) if k > 0]
    ious = {}
    for i in t_ids:
        for j in p_ids:
            a, b = true == i, pred == j
            ious[i, j] = (a & b).sum() / (a | b).sum()
    precisions = []
    for t in [0.5 + 0.05 * k for k in range(10)]:
        t = round(t, 2)
        tp = 0
        used = set()
        for i in t_ids:
            for j in p_ids:
                if j not in used and ious[i, j] > t:
                    tp += 1
                    used.add(j)
                    break
        fp, fn = len(p_ids) - tp, len(t_ids) - tp
        precisions.append(1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn))
    return sum(precisions) / len(precisions), precisions


def test_matches_brute_force_on_random_masks():
    rng = np.random.default_rng(2018)
    seen = []
    for _ in range(30):
        true = random_labels(rng, (24, 24), int(rng.integers(0, 9)))
        pred = perturb(rng, true)
        expected, expected_p = brute_force_score(true, pred)
        got = image_score(true, pred)
        assert got.score == pytest.approx(expected, abs=1e-12)
        np.testing.assert_allclose(got.precisions, expected_p, atol=1e-12)
        # Stack input gives the same answer as label input.
        assert image_score(labels_to_masks(true), labels_to_masks(pred)).score == pytest.approx(expected)
        seen.append(expected)
    assert 0 < np.mean(seen) < 1 and len(set(np.round(seen, 6))) > 10   # the cases are varied


# ----------------------------------------------------------------------------- edge cases
def test_huge_labels_without_background_keep_every_object():
    # No pixel is 0 and the labels are too big for a lookup table: the sorting path must still
    # see two (then three) objects.
    labels = np.array([[10**12, 10**12], [3 * 10**12, 3 * 10**12]], np.int64)
    iou = iou_matrix(labels, labels)
    np.testing.assert_array_equal(iou, np.eye(2))
    assert image_score(labels, labels).n_true == 2
    labels[0, 0] = 1
    assert iou_matrix(labels, labels).shape == (3, 3)
    with_background = labels.copy()
    with_background[1, 1] = 0
    assert iou_matrix(with_background, labels).shape == (3, 3)


def test_mask_stacks_as_read_from_png_files():
    masks = np.zeros((6, 6, 2), np.uint8)              # 0/255 masks, as Kaggle's PNGs hold them
    masks[0:2, 0:2, 0] = 255
    masks[3:6, 3:6, 1] = 255
    labels = masks_to_labels(masks)
    expected = np.zeros((6, 6), np.int32)
    expected[0:2, 0:2] = 1                             # mask k gets label k + 1
    expected[3:6, 3:6] = 2
    np.testing.assert_array_equal(labels, expected)
    assert image_score(masks, expected).score == 1.0


def test_overlap_error_counts_only_the_shared_pixels():
    masks = np.zeros((4, 4, 2), bool)
    masks[0, 0:3, 0] = True
    masks[0, 1:4, 1] = True                            # 4 pixels covered, 2 shared
    with pytest.raises(InputError) as info:
        masks_to_labels(masks)
    assert str(info.value) == ("masks_to_labels: masks overlap on 2 pixels; remove overlaps first "
                               "(nucleus.inference.overlap.eliminate_overlaps)")


def test_error_messages_name_the_function_and_the_problem():
    def message(call, *args):
        with pytest.raises(InputError) as info:
            call(*args)
        return str(info.value)

    assert message(as_labels, np.ones((4, 4), bool)) == (
        "as_labels: a label image must have an integer dtype, got bool; "
        "pass bool masks as a [H, W, N] stack")
    assert message(as_labels, np.ones((4, 4), np.float32)).startswith(
        "as_labels: a label image must have an integer dtype, got float32")
    assert message(labels_to_masks, np.zeros(4, int)) == (
        "labels_to_masks: expected a label image [H, W], got shape (4,)")
    assert message(precision_at, np.zeros(3), 0.5) == (
        "precision_at: IoU matrix must be 2-D, got shape (3,)")
    assert message(dataset_score, []) == "dataset_score: no images given"
    assert message(mean_precisions, []) == "mean_precisions: no image scores given"


def test_an_image_of_no_pixels_has_nothing_to_find():
    assert image_score(np.zeros((0, 0), int), np.zeros((0, 0), int)).score == 1.0
    assert image_score(np.zeros((0, 0, 0), bool), np.zeros((0, 0, 0), bool)).score == 1.0


def test_two_truths_on_one_prediction_give_one_match():
    # Rows are unique but the column is not: still one-to-one.
    np.testing.assert_array_equal(match(np.array([[0.9], [0.8]]), 0.5), [[0, 0]])
    assert precision_at(np.array([[0.9], [0.8]]), 0.5) == (0.5, 1, 0, 1)


def _greedy(iou, threshold):
    """Reference: best IoU first, ties by (row, column)."""
    cells = sorted(((-iou[r, c], r, c) for r, c in np.argwhere(iou > threshold)))
    rows, cols, pairs = set(), set(), []
    for _, r, c in cells:
        if r not in rows and c not in cols:
            rows.add(r)
            cols.add(c)
            pairs.append((r, c))
    return np.array(pairs, np.int64).reshape(-1, 2)


def test_greedy_matching_with_many_candidates_and_ties():
    iou = np.array([[0.9, 0.8, 0.0], [0.85, 0.0, 0.0], [0.0, 0.7, 0.6]])
    np.testing.assert_array_equal(match(iou, 0.5), [[0, 0], [2, 1]])
    rng = np.random.default_rng(7)
    for _ in range(20):
        iou = rng.choice([0.0, 0.3, 0.6, 0.7], size=(7, 7))   # ties everywhere
        np.testing.assert_array_equal(match(iou, 0.5), _greedy(iou, 0.5))


def test_progress_shows_only_when_asked(capsys):
    a = square((10, 10), 0, 0, 4)
    dataset_score([(a, a)])
    dataset_scores([(a, a)])
    assert capsys.readouterr().err == ""
    dataset_score([(a, a)], progress=True)
    assert re.search(r"(^|\r)scoring: ", capsys.readouterr().err)
    dataset_scores([(a, a)], progress=True)
    assert re.search(r"(^|\r)scoring: ", capsys.readouterr().err)
