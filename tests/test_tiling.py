"""Tiled prediction and stitching (nucleus/inference/tiling.py): every nucleus found once and
whole."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.measure

from nucleus.inference.tiling import (DEFAULT_OVERLAP, MIN_OVERLAP, Instance, Tile, detect_tile,
                                      instances_of, labels_from_masks, overlap_for, owned,
                                      centre_tile, plan_tiles, predict_tiled, stitch, tile_side)
from nucleus.sample_data import sample_mosaic, threshold_detector


# ----------------------------------------------------------------------------- the plan
@pytest.mark.parametrize("shape, tile, overlap", [
    ((1000, 700), 256, 64), ((512, 512), 256, 0), ((300, 2000), 512, 128),
    ((100, 90), 256, 64), ((257, 256), 256, 255), ((3000, 3000), 1024, 128)])
def test_tile_cores_partition_the_image(shape, tile, overlap):
    tiles = plan_tiles(shape, tile, overlap)
    owners = np.zeros(shape, np.int32)
    sides = {(t.box[2] - t.box[0], t.box[3] - t.box[1]) for t in tiles}
    assert len(sides) == 1                                  # one shape: one traced graph
    (side_y, side_x), = sides
    assert side_y <= min(tile, shape[0]) and side_x <= min(tile, shape[1])
    for t in tiles:
        y0, x0, y1, x1 = t.box
        assert 0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]
        cy0, cx0, cy1, cx1 = t.core
        assert y0 <= cy0 < cy1 <= y1 and x0 <= cx0 < cx1 <= x1
        ys = np.arange(shape[0]) + 0.5                   # pixel centres
        xs = np.arange(shape[1]) + 0.5
        inside = ((ys >= cy0) & (ys < cy1))[:, None] & ((xs >= cx0) & (xs < cx1))[None, :]
        owners += inside
    assert (owners == 1).all()
    # Neighbours overlap by at least `overlap`, and a core stays overlap/2 from inner edges.
    for t in tiles:
        y0, x0, y1, x1 = t.box
        cy0, cx0, cy1, cx1 = t.core
        for edge, core_edge, limit in ((y0, cy0, 0), (x0, cx0, 0)):
            assert edge == limit or core_edge - edge >= overlap / 2
        for edge, core_edge, limit in ((y1, cy1, shape[0]), (x1, cx1, shape[1])):
            assert edge == limit or edge - core_edge >= overlap / 2


@pytest.mark.parametrize("length, tile, overlap, side, count", [
    (4096, 1024, 128, 960, 5),       # full tiles: 5 of 1,024 with the last moved back
    (8192, 1024, 128, 1024, 9),      # 9 x 1,024 - 8 x 128 is 8,192: nothing to save
    (8192, 1280, 128, 1280, 7),
    (3000, 1024, 128, 896, 4),
    (2048, 1280, 128, 1088, 2),
    (1100, 1024, 128, 640, 2),
    (160, 100, 40, 100, 2),          # a side that is no multiple of 64 stays at most the tile
    (1000, 1000, 100, 1000, 1)])
def test_tiles_are_spread_evenly_in_multiples_of_64(length, tile, overlap, side, count):
    """As many tiles as full ``tile``s would need, each as small as covers the side with the
    overlap, rounded up to 64 (the network's padding); starts evenly spread, the last at the
    end, neighbours overlapping by at least ``overlap``."""
    assert tile_side(length, tile, overlap) == side
    tiles = plan_tiles((length, 50), tile, overlap)
    starts = [t.box[0] for t in tiles]
    assert len(starts) == count and starts[0] == 0 and starts[-1] + side == length
    steps = np.diff(starts)
    assert (side - steps >= overlap).all()
    assert count == 1 or steps.max() - steps.min() <= 1
    full = -(-(length - tile) // (tile - overlap)) + 1 if length > tile else 1
    assert count == full                      # as many tiles as full-size tiles need


def test_small_images_are_one_tile_and_bad_settings_are_refused():
    (only,) = plan_tiles((200, 300), 512, 128)
    assert only.box == (0, 0, 200, 300) and only.core == (0, 0, 200, 300)
    with pytest.raises(ValueError, match="smaller than the tile"):
        plan_tiles((10, 10), 64, 64)
    with pytest.raises(ValueError, match="tile must be"):
        plan_tiles((10, 10), 0, 0)


# ----------------------------------------------------------------------------- stitching
def _blobs(shape, centres, radius=6) -> np.ndarray:
    image = np.zeros(shape + (3,), np.uint8)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    for cy, cx in centres:
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = 200
    return image


def _scattered(seed: int, shape: tuple[int, int], count: int, radius: int):
    """Blobs at random centres, the threshold detector, and what it finds on the whole image."""
    rng = np.random.default_rng(seed)
    margin = radius + 3
    centres = [(rng.integers(margin, shape[0] - margin), rng.integers(margin, shape[1] - margin))
               for _ in range(count)]
    image = _blobs(shape, centres, radius=radius)
    detect = threshold_detector()
    return image, detect, labels_from_masks(*detect(image))


def test_tiled_equals_whole_image_on_a_small_image():
    image, detect, direct = _scattered(3, (300, 400), 60, radius=5)
    whole = predict_tiled(image, detect, tile=512, overlap=64)          # one tile
    tiled = predict_tiled(image, detect, tile=96, overlap=40)           # 5 x 7 tiles
    assert len(plan_tiles(image.shape, 96, 40)) == 35
    assert max(r.bbox[2] - r.bbox[0] for r in skimage.measure.regionprops(direct[0])) < 40
    for labels, scores in (whole, tiled):
        np.testing.assert_array_equal(labels, direct[0])
        np.testing.assert_array_equal(scores, direct[1])
    # Raster numbering: the labels are skimage's connected components, in the same order.
    np.testing.assert_array_equal(direct[0], skimage.measure.label(image[..., 0] > 128))


def test_a_3000_pixel_mosaic_of_the_sample_tiled_equals_direct():
    image = sample_mosaic(3000)
    expected = skimage.measure.label(image[..., 0] > 128)   # what a whole-image run finds
    assert expected.max() > 1000
    sizes = [max(r.bbox[2] - r.bbox[0], r.bbox[3] - r.bbox[1])
             for r in skimage.measure.regionprops(expected)]
    assert max(sizes) < 128                                # the overlap's condition holds
    labels, scores = predict_tiled(image, threshold_detector(), tile=512, overlap=128)
    assert labels.dtype == np.uint16 and labels.shape == (3000, 3000)
    np.testing.assert_array_equal(labels, expected)
    means = skimage.measure.regionprops_table(expected, image[..., 0],
                                              properties=("intensity_mean",))
    np.testing.assert_allclose(scores, means["intensity_mean"] / 255, rtol=1e-5)


def _boxed(*sides) -> list[Instance]:
    return [Instance((10, 10, 10 + h, 10 + w), np.ones((h, w), bool), 1.0) for h, w in sides]


def test_the_overlap_follows_the_largest_nucleus_the_pilot_finds():
    tiles = plan_tiles((3000, 200), 512, 64)
    assert centre_tile(tiles, (3000, 200)) == tiles[3]              # 7 tiles: the 4th, at 1244
    assert overlap_for([], 1024) == DEFAULT_OVERLAP                 # nothing to go by
    assert overlap_for([], 200) == 100                              # at most half the tile
    assert overlap_for(_boxed((20, 30), (12, 12)), 1024) == MIN_OVERLAP
    assert overlap_for(_boxed((20, 30), (90, 40)), 1024) == 128      # 1.25 x 90 = 112.5 -> 128
    assert overlap_for(_boxed((20, 30), (40, 101)), 1024) == 128     # 126.25 -> 128
    assert overlap_for(_boxed((20, 30), (40, 103)), 1024) == 144     # 128.75 -> 144
    assert overlap_for(_boxed((600, 600)), 1024) == 512


def test_automatic_overlap_is_measured_on_the_centre_and_keeps_every_nucleus():
    image, detect, direct = _scattered(5, (1200, 1400), 400, radius=9)
    calls = []

    def counted(crop):
        calls.append(crop.shape[:2])
        return detect(crop)
    labels, scores = predict_tiled(image, counted, tile=512, overlap=None)
    # blobs (and merged pairs) are under 52 px: 64 px of overlap, so 3 x 3 tiles (3 x 4 at 128),
    # the centre one detected first and not again
    tiles = plan_tiles(image.shape, 512, MIN_OVERLAP)
    assert len(tiles) == 9 and len(calls) == 9
    assert calls[0] == tuple(np.subtract(tiles[4].box[2:], tiles[4].box[:2]))
    np.testing.assert_array_equal(labels, direct[0])
    np.testing.assert_array_equal(scores, direct[1])
    calls.clear()
    predict_tiled(image[:400, :500], counted, tile=512, overlap=None)
    assert calls == [(400, 500)]                                     # one tile: no pilot


def test_big_nuclei_at_the_centre_plan_the_image_again():
    image, detect, direct = _scattered(6, (1200, 1400), 60, radius=9)
    yy, xx = np.mgrid[:1200, :1400]
    image[(yy - 600) ** 2 + (xx - 700) ** 2 <= 45 ** 2] = 200       # a 91-px nucleus at the centre
    direct = labels_from_masks(*detect(image))
    calls = []

    def counted(crop):
        calls.append(crop.shape[:2])
        return detect(crop)
    labels, _ = predict_tiled(image, counted, tile=512, overlap=None)
    tiles = plan_tiles(image.shape, 512, 128)                        # 1.25 x 91 -> 128
    assert len(calls) == 1 + len(tiles) == 13                        # the pilot, then all again
    np.testing.assert_array_equal(labels, direct[0])


def test_a_nucleus_on_a_seam_is_found_once_and_whole():
    # Tiles of 100 with overlap 40 start at 0 and 60; the seam (core border) is at 80.
    image = _blobs((100, 160), [(50, 80), (50, 61), (50, 99)], radius=8)
    tiles = plan_tiles(image.shape, 100, 40)
    assert [t.box[1] for t in tiles] == [0, 60] and tiles[0].core[3] == 80
    labels, _ = predict_tiled(image, threshold_detector(), tile=100, overlap=40)
    expected = skimage.measure.label(image[..., 0] > 128)
    np.testing.assert_array_equal(labels, expected)
    per_tile = [detect_tile(image, t, threshold_detector()) for t in tiles]
    assert sum(map(len, per_tile)) == expected.max()      # each owned by exactly one tile


def test_a_tile_drops_what_its_neighbour_owns():
    tile = Tile(0, (0, 0, 100, 100), (0.0, 0.0, 80.0, 80.0))
    inside = Instance((10, 10, 20, 20), np.ones((10, 10), bool), 0.9)
    across = Instance((75, 10, 90, 20), np.ones((15, 10), bool), 0.9)   # centre y 82.5
    assert owned(inside, tile) and not owned(across, tile)


def test_conflicting_pixels_go_to_the_first_and_duplicates_are_dropped():
    a = Instance((0, 0, 10, 10), np.ones((10, 10), bool), 0.9)
    b = Instance((0, 6, 10, 16), np.ones((10, 10), bool), 0.8)      # loses 4 of 10 columns
    dup = Instance((1, 1, 9, 9), np.ones((8, 8), bool), 0.95)       # inside a: a duplicate
    labels, scores = stitch((12, 20), [a, b, dup])
    assert labels.max() == 2
    assert (labels[:10, :10] == 1).all() and (labels[:10, 10:16] == 2).all()
    np.testing.assert_allclose(scores, [0.9, 0.8])
    # b first this time: b keeps its pixels, a keeps the 6 columns left (more than half);
    # the numbers follow the raster order of first pixels, not the order of pasting.
    labels, scores = stitch((12, 20), [b, a])
    assert (labels[:10, 6:16] == 2).all() and (labels[:10, :6] == 1).all()
    np.testing.assert_allclose(scores, [0.9, 0.8])


def reference_stitch(shape, instances):
    """The pasting rule written the plain way: paste in order (a pixel to the first that claims
    it, an instance left with less than half of its pixels dropped), then renumber in raster
    order of first pixels."""
    pasted = np.zeros(shape, np.int64)
    scores = []
    for inst in instances:
        y0, x0, y1, x1 = inst.box
        region = pasted[y0:y1, x0:x1]
        free = inst.mask & (region == 0)
        if free.sum() and 2 * free.sum() >= inst.mask.sum():
            scores.append(inst.score)
            region[free] = len(scores)
    firsts = {}
    for index, value in enumerate(pasted.ravel()):
        if value and value not in firsts:
            firsts[value] = index
    order = sorted(firsts, key=firsts.get)
    relabel = np.zeros(len(scores) + 1, np.int64)
    relabel[order] = np.arange(1, len(order) + 1)
    return relabel[pasted], np.array([scores[k - 1] for k in order], np.float32)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stitch_is_the_plain_rule_for_instances_in_any_order(seed):
    rng = np.random.default_rng(seed)
    shape = (120, 150)
    instances = []
    for _ in range(300):                     # crowded: many overlaps, duplicates, dropped ones
        h, w = rng.integers(1, 30, 2)
        y, x = rng.integers(0, shape[0] - h + 1), rng.integers(0, shape[1] - w + 1)
        mask = rng.random((h, w)) < 0.6
        instances.append(Instance((int(y), int(x), int(y + h), int(x + w)), mask,
                                  float(rng.random())))
    want, want_scores = reference_stitch(shape, instances)
    labels, scores = stitch(shape, instances)
    assert labels.dtype == np.uint16 and 50 < labels.max() < 300
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(scores, want_scores)


def test_labels_grow_to_uint32_past_65535_nuclei():
    height, width = 256, 300
    one = np.ones((1, 1), bool)
    instances = [Instance((y, x, y + 1, x + 1), one, 0.5)
                 for y in range(height) for x in range(width)][::-1]     # pasted last first
    assert len(instances) > 2**16
    labels, scores = stitch((height, width), instances)
    assert labels.dtype == np.uint32 and labels.max() == len(instances) == len(scores)
    np.testing.assert_array_equal(labels.ravel(), np.arange(1, height * width + 1))
    small, _ = stitch((height, width), instances[:2**16 - 1])
    assert small.dtype == np.uint16 and small.max() == 2**16 - 1


def test_instances_of_shifts_boxes_and_skips_empty_masks():
    masks = np.zeros((20, 30, 3), bool)
    masks[2:5, 3:9, 0] = True
    masks[10:12, 20:21, 2] = True
    found = instances_of(masks, [0.9, 0.8, 0.7], offset=(100, 200))
    assert [i.box for i in found] == [(102, 203, 105, 209), (110, 220, 112, 221)]
    assert [i.score for i in found] == pytest.approx([0.9, 0.7])
    assert found[0].mask.shape == (3, 6) and found[0].mask.all()
    with pytest.raises(ValueError, match="scores"):
        instances_of(masks, [0.9])


def test_the_default_tile_follows_the_detectors_masks():
    """Crop-sized masks (Mask R-CNN at scale 1 without TTA) take the big default tile; a
    detector of full-size mask stacks, or any plain call, the small one."""
    from nucleus.inference.detectors import Detector
    from nucleus.inference.tiling import DEFAULT_TILE, FULL_MASK_TILE, tile_for

    def sparse(image):
        return np.zeros((0, 4), np.int64), [], np.zeros(0)

    def dense(image):
        return np.zeros(image.shape[:2] + (0,), bool), np.zeros(0)

    assert DEFAULT_TILE > FULL_MASK_TILE
    assert tile_for(Detector(dense, detect_sparse=sparse)) == DEFAULT_TILE
    assert tile_for(Detector(dense, tta=True, detect_sparse=sparse)) == FULL_MASK_TILE
    assert tile_for(Detector(dense, scale="auto", detect_sparse=sparse)) == FULL_MASK_TILE
    assert tile_for(Detector(dense)) == FULL_MASK_TILE
    assert tile_for(dense) == FULL_MASK_TILE
