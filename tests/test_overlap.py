from __future__ import annotations

import numpy as np
import pytest

from nucleus.errors import InputError
from nucleus.inference.overlap import clean_detections, disjoint_labels, eliminate_overlaps


def stack(shape, *boxes):
    """[H, W, N] bool stack, one rectangle (y1, x1, y2, x2) per mask."""
    out = np.zeros((*shape, len(boxes)), bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        out[y1:y2, x1:x2, k] = True
    return out


def test_biggest_keeps_overlap_and_order_is_preserved():
    masks = stack((12, 12), (0, 0, 4, 4), (2, 2, 8, 8))       # small first, big second
    cleaned, kept = eliminate_overlaps(masks)
    np.testing.assert_array_equal(kept, [0, 1])
    np.testing.assert_array_equal(cleaned[:, :, 1], masks[:, :, 1])       # big untouched
    np.testing.assert_array_equal(cleaned[:, :, 0], masks[:, :, 0] & ~masks[:, :, 1])
    assert cleaned[:, :, 0].sum() == 16 - 4
    assert cleaned.dtype == bool


def test_contained_mask_is_dropped_and_ties_go_to_lower_index():
    masks = stack((10, 10), (1, 1, 3, 3), (0, 0, 6, 6), (0, 0, 6, 6))
    cleaned, kept = eliminate_overlaps(masks)
    np.testing.assert_array_equal(kept, [1])                   # 2 ties with 1 and loses everything
    np.testing.assert_array_equal(cleaned[:, :, 0], masks[:, :, 1])
    a = stack((6, 8), (0, 0, 4, 4), (0, 2, 4, 6))              # equal areas, half overlap
    cleaned, kept = eliminate_overlaps(a)
    np.testing.assert_array_equal(kept, [0, 1])
    assert cleaned[:, :, 0].sum() == 16 and cleaned[:, :, 1].sum() == 8
    cleaned_rev, _ = eliminate_overlaps(a[:, :, ::-1])         # lower index wins again
    assert cleaned_rev[:, :, 0].sum() == 16 and cleaned_rev[:, :, 1].sum() == 8


def test_rank_uses_original_area():
    # A (30 px) covers most of B (25 px); B keeps its overlap with C (20 px) even though what
    # is left of B after A is smaller than C.
    masks = stack((20, 20), (0, 0, 5, 6), (1, 3, 6, 8), (2, 7, 6, 12))
    assert list(masks.sum(axis=(0, 1))) == [30, 25, 20]
    cleaned, kept = eliminate_overlaps(masks)
    np.testing.assert_array_equal(kept, [0, 1, 2])
    overlap_bc = masks[:, :, 1] & masks[:, :, 2] & ~masks[:, :, 0]
    assert overlap_bc.sum() > 0
    assert (cleaned[:, :, 1][overlap_bc]).all() and not (cleaned[:, :, 2][overlap_bc]).any()


def test_min_area_empty_and_errors():
    masks = stack((10, 10), (0, 0, 5, 5), (0, 4, 5, 6), (8, 8, 8, 8))  # 2nd keeps 5 px, 3rd empty
    _, kept = eliminate_overlaps(masks)
    np.testing.assert_array_equal(kept, [0, 1])
    _, kept = eliminate_overlaps(masks, min_area=6)
    np.testing.assert_array_equal(kept, [0])
    _, kept = eliminate_overlaps(masks, min_area=0)
    np.testing.assert_array_equal(kept, [0, 1])
    cleaned, kept = eliminate_overlaps(np.zeros((4, 5, 0), bool))
    assert cleaned.shape == (4, 5, 0) and kept.shape == (0,)
    cleaned, kept = eliminate_overlaps(masks.astype(np.uint8))
    assert cleaned.dtype == bool and len(kept) == 2
    with pytest.raises(InputError, match="stack"):
        eliminate_overlaps(np.zeros((4, 4), bool))


def reference(masks, min_area=1):
    """Straightforward version: walk masks biggest first, subtracting what is already taken."""
    areas = [int(masks[:, :, k].sum()) for k in range(masks.shape[2])]
    order = sorted(range(len(areas)), key=lambda k: (-areas[k], k))
    taken = np.zeros(masks.shape[:2], bool)
    out = {}
    for k in order:
        out[k] = masks[:, :, k] & ~taken
        taken |= out[k]
    kept = [k for k in range(len(areas)) if out[k].sum() >= max(min_area, 1)]
    return np.stack([out[k] for k in kept], axis=2) if kept else np.zeros((*masks.shape[:2], 0), bool), kept


def test_matches_reference_on_random_stacks():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(0, 12))
        boxes = []
        for _ in range(n):
            y, x = rng.integers(0, 20, size=2)
            h, w = rng.integers(1, 9, size=2)
            boxes.append((y, x, y + h, x + w))
        masks = stack((24, 24), *boxes)
        min_area = int(rng.integers(0, 4))
        cleaned, kept = eliminate_overlaps(masks, min_area=min_area)
        ref_masks, ref_kept = reference(masks, min_area)
        np.testing.assert_array_equal(kept, ref_kept)
        np.testing.assert_array_equal(cleaned, ref_masks)
        assert cleaned.sum(axis=2).max(initial=0) <= 1                     # disjoint
        assert not (cleaned & ~masks[:, :, kept]).any()                    # only removes pixels
        labels, same_kept = disjoint_labels(masks, min_area=min_area)      # as a label image
        np.testing.assert_array_equal(same_kept, kept)
        expected = np.zeros((24, 24), np.int32)
        for k in range(len(kept)):
            expected[cleaned[:, :, k]] = k + 1
        np.testing.assert_array_equal(labels, expected)


def test_clean_detections_keeps_big_mask_even_with_lowest_score():
    masks = stack((16, 16), (0, 0, 10, 10), (5, 5, 12, 12), (2, 2, 4, 4))
    result = {"rois": np.array([[0, 0, 10, 10], [5, 5, 12, 12], [2, 2, 4, 4]], np.int32),
              "class_ids": np.array([1, 1, 1], np.int32),
              "scores": np.array([0.71, 0.99, 0.95], np.float32),
              "masks": masks, "extra": "kept as is"}
    out = clean_detections(result)
    np.testing.assert_array_equal(out["scores"], np.array([0.71, 0.99], np.float32))
    np.testing.assert_array_equal(out["class_ids"], [1, 1])
    np.testing.assert_array_equal(out["masks"][:, :, 0], masks[:, :, 0])   # biggest wins
    assert out["masks"][:, :, 1].sum() == 49 - 25
    np.testing.assert_array_equal(out["rois"], [[0, 0, 10, 10], [5, 5, 12, 12]])
    assert out["rois"].dtype == np.int32 and out["extra"] == "kept as is"
    assert result["masks"] is masks and result["scores"].shape == (3,)     # input not modified
    # A trimmed mask gets a tighter box.
    trimmed = clean_detections({"rois": np.zeros((2, 4), np.int32),
                                "masks": stack((10, 10), (0, 0, 6, 6), (0, 4, 3, 8))})
    np.testing.assert_array_equal(trimmed["rois"], [[0, 0, 6, 6], [0, 6, 3, 8]])
    with pytest.raises(InputError, match="'scores' has 2 entries"):
        clean_detections({"masks": masks, "scores": np.zeros(2)})


def test_single_pixel_masks_are_kept_by_default():
    masks = stack((6, 6), (0, 0, 1, 1), (3, 3, 5, 5))
    cleaned, kept = eliminate_overlaps(masks)
    np.testing.assert_array_equal(kept, [0, 1])
    np.testing.assert_array_equal(cleaned, masks)
    out = clean_detections({"masks": masks, "scores": np.array([0.9, 0.8])})
    np.testing.assert_array_equal(out["scores"], [0.9, 0.8])
    out = clean_detections({"masks": masks, "scores": np.array([0.9, 0.8])}, min_area=2)
    np.testing.assert_array_equal(out["scores"], [0.8])


def test_no_detections_give_an_empty_bool_stack_and_usable_indices():
    cleaned, kept = eliminate_overlaps(np.zeros((4, 5, 0), bool))
    assert cleaned.dtype == bool and kept.dtype.kind == "i"
    assert np.zeros(0, np.float32)[kept].shape == (0,)    # scores[kept] works
    out = clean_detections({"masks": np.zeros((4, 5, 0), bool), "scores": np.zeros(0)})
    assert out["masks"].shape == (4, 5, 0) and out["scores"].shape == (0,)


def test_clean_detections_without_masks_says_so():
    with pytest.raises(InputError) as info:
        clean_detections({"scores": np.zeros(1)})
    assert str(info.value) == "clean_detections: the result has no 'masks' entry"


def test_many_equal_areas_still_go_to_the_lower_index():
    rng = np.random.default_rng(11)
    for _ in range(5):
        boxes = []
        for _ in range(30):                            # two sizes only: ties everywhere
            y, x = rng.integers(0, 16, size=2)
            size = int(rng.choice([3, 4]))
            boxes.append((y, x, y + size, x + size))
        masks = stack((20, 20), *boxes)
        cleaned, kept = eliminate_overlaps(masks)
        ref_masks, ref_kept = reference(masks)
        np.testing.assert_array_equal(kept, ref_kept)
        np.testing.assert_array_equal(cleaned, ref_masks)
