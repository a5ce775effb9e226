"""mrcnn.data: ground truth loading, RPN targets and the training batch generator."""
from __future__ import annotations

import numpy as np
import pytest

from mrcnn import data, utils
from synthetic import EllipseDataset

from conftest import TinyConfig


def tiny_anchors(config) -> np.ndarray:
    shapes = [(64 // s, 64 // s) for s in config.BACKBONE_STRIDES]
    return utils.generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                          shapes, config.BACKBONE_STRIDES,
                                          config.RPN_ANCHOR_STRIDE)


GT = np.array([[10, 10, 30, 25], [40, 40, 50, 58], [5, 50, 8, 53]])  # the last one is tiny


def test_every_gt_box_gets_a_positive_anchor_and_deltas_invert(tiny_config):
    config = tiny_config
    anchors = tiny_anchors(config)
    np.random.seed(0)
    match, bbox = data.build_rpn_targets(anchors, np.ones(3, np.int32), GT, config)
    assert match.shape == (len(anchors),) and bbox.shape == (64, 4)
    positive = np.where(match == 1)[0]
    overlaps = utils.compute_overlaps(anchors, GT)
    best_gt = overlaps[positive].argmax(1)
    assert set(best_gt) == {0, 1, 2}
    # Positives: IoU >= 0.7 or the best anchor of some gt box; negatives: IoU < 0.3.
    best_of_gt = set(np.where((overlaps == overlaps.max(0)).any(1))[0])  # ties included
    assert all(overlaps[i].max() >= 0.7 or i in best_of_gt for i in positive)
    assert (overlaps[match == -1].max(1) < 0.3).all()
    n = len(positive)
    refined = utils.apply_box_deltas(anchors[positive], bbox[:n] * config.RPN_BBOX_STD_DEV)
    np.testing.assert_allclose(refined, GT[best_gt], atol=1e-3)
    np.testing.assert_array_equal(bbox[n:], 0)


def test_anchor_counts_respect_rpn_train_anchors_per_image():
    class Few(TinyConfig):
        RPN_TRAIN_ANCHORS_PER_IMAGE = 8

    config = Few()
    anchors = tiny_anchors(config)
    big = np.array([[0, 0, 64, 64], [0, 0, 48, 48], [16, 16, 64, 64], [0, 16, 48, 64]])
    for seed in range(5):
        np.random.seed(seed)
        match, bbox = data.build_rpn_targets(anchors, np.ones(4, np.int32), big, config)
        positives = (match == 1).sum()
        assert 1 <= positives <= 4            # at most half the sample
        assert (match != 0).sum() == 8        # filled up with negatives
        assert bbox.shape == (8, 4)
        np.testing.assert_array_equal(bbox[positives:], 0)
    np.random.seed(0)
    match, _ = data.build_rpn_targets(anchors, np.ones(3, np.int32), GT, TinyConfig())
    assert (match != 0).sum() == 64 and (match == 1).sum() <= 32


def test_image_without_objects_gets_negatives_only(tiny_config):
    config = tiny_config
    anchors = tiny_anchors(config)
    match, bbox = data.build_rpn_targets(anchors, np.zeros(0, np.int32), np.zeros((0, 4)),
                                         config)
    assert (match == -1).sum() == 64 and (match == 1).sum() == 0
    assert not bbox.any()


def test_load_image_gt_resizes_and_stores_mini_masks():
    class Big(TinyConfig):
        IMAGE_MIN_DIM = 128
        IMAGE_MAX_DIM = 128

    config = Big()
    ds = EllipseDataset(2, seed=7)
    image, meta, class_ids, bbox, mask = data.load_image_gt(ds, config, 1)
    original_masks, original_ids = ds.load_mask(1)
    n = original_masks.shape[-1]
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(class_ids, original_ids)
    assert bbox.shape == (n, 4) and mask.shape == (28, 28, n) and mask.dtype == bool
    # Boxes are the scaled originals (within a pixel of rounding).
    np.testing.assert_allclose(bbox, utils.extract_bboxes(original_masks) * 2, atol=2)
    parsed = utils.parse_image_meta(meta[None])
    assert parsed["image_id"][0] == 1
    np.testing.assert_array_equal(parsed["original_image_shape"][0], [64, 64, 3])
    np.testing.assert_array_equal(parsed["image_shape"][0], [128, 128, 3])
    np.testing.assert_array_equal(parsed["window"][0], [0, 0, 128, 128])
    assert parsed["scale"][0] == 2.0
    # The mini masks expand back to the resized masks.
    full = utils.expand_mask(bbox, mask, image.shape)
    resized = utils.resize_mask(original_masks, 2.0, [(0, 0)] * 3)
    assert (np.diag(utils.compute_overlaps_masks(full, resized)) > 0.85).all()


def test_load_image_gt_normalises_with_the_configurations_hook():
    class Inverted(TinyConfig):
        IMAGE_NORMALIZATION = "invert"

        def normalize_image(self, image):
            return 255 - image

    ds = EllipseDataset(1, seed=7)
    plain, *_ = data.load_image_gt(ds, TinyConfig(), 0)
    inverted, *_ = data.load_image_gt(ds, Inverted(), 0)
    np.testing.assert_array_equal(inverted, 255 - plain)
    with pytest.raises(ValueError, match="IMAGE_NORMALIZATION 'invert'"):
        data.load_image_gt(ds, type("Unknown", (TinyConfig,), {"IMAGE_NORMALIZATION": "invert"})(),
                           0)


def test_load_image_gt_use_mini_mask_overrides_the_configuration(tiny_config):
    ds = EllipseDataset(1, seed=7)
    *_, bbox, stored = data.load_image_gt(ds, tiny_config, 0)          # USE_MINI_MASK
    *_, full = data.load_image_gt(ds, tiny_config, 0, use_mini_mask=False)
    n = len(bbox)
    assert stored.shape == (28, 28, n) and full.shape == (64, 64, n)
    np.testing.assert_array_equal(full, ds.load_mask(0)[0])  # 64x64 "square": unchanged
    np.testing.assert_array_equal(utils.extract_bboxes(full), bbox)


def test_load_image_gt_augment_flips_left_right_half_of_the_time(tiny_config):
    ds = EllipseDataset(1, seed=7)
    image, *_ = data.load_image_gt(ds, tiny_config, 0)
    np.random.seed(1)
    flips = [np.array_equal(data.load_image_gt(ds, tiny_config, 0, augment=True)[0],
                            image[:, ::-1]) for _ in range(40)]
    assert 10 < sum(flips) < 30


def test_mold_and_unmold_image(tiny_config):
    config = tiny_config
    image = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    molded = data.mold_image(image, config)
    assert molded.dtype == np.float32
    np.testing.assert_allclose(molded[0, 0], image[0, 0] - config.MEAN_PIXEL, rtol=1e-5)
    np.testing.assert_array_equal(data.unmold_image(molded, config), image)


def test_mold_image_equals_converting_then_subtracting(tiny_config):
    """Molding in one pass gives the float32 values of ``astype(float32) - mean`` exactly,
    for uint8 images and for the float images augmentation may produce."""
    rng = np.random.default_rng(1)
    mean = np.asarray(tiny_config.MEAN_PIXEL, np.float32)
    for image in (rng.integers(0, 256, (2, 9, 7, 3)).astype(np.uint8),
                  rng.uniform(0, 255, (9, 7, 3))):
        molded = data.mold_image(image, tiny_config)
        assert molded.dtype == np.float32
        np.testing.assert_array_equal(molded, image.astype(np.float32) - mean)


class SparseEllipses(EllipseDataset):
    """Even images have no objects: the generator must replace them."""

    def load_mask(self, image_id):
        mask, ids = super().load_mask(image_id)
        if image_id % 2 == 0:
            return mask[..., :0], ids[:0]
        return mask, ids


def test_data_generator_batches_have_fixed_shapes_and_dtypes(tiny_config):
    config = tiny_config
    anchors = tiny_anchors(config)
    dataset = SparseEllipses(6, seed=2)
    gen = data.DataGenerator(dataset, config, anchors, steps=3, seed=0)
    assert len(gen) == 3
    (batch,) = gen[1]
    b, g, a = config.BATCH_SIZE, config.MAX_GT_INSTANCES, len(anchors)
    expected = {
        "input_image": ((b, 64, 64, 3), np.float32),
        "input_rpn_match": ((b, a, 1), np.int32),
        "input_rpn_bbox": ((b, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), np.float32),
        "input_gt_class_ids": ((b, g), np.int32),
        "input_gt_boxes": ((b, g, 4), np.float32),
        "input_gt_masks": ((b, 28, 28, g), np.uint8),
    }
    assert set(batch) == set(expected)                 # what the training graph reads, only
    for key, (shape, dtype) in expected.items():
        assert batch[key].shape == shape, key
        assert batch[key].dtype == dtype, key
    # Every image of the batch has objects (empty ones were replaced) with matching masks.
    molded = {i: data.mold_image(data.load_image_gt(dataset, config, i)[0], config)
              for i in dataset.image_ids}
    for image in batch["input_image"]:
        found = [i for i, m in molded.items() if np.array_equal(m, image)]
        assert found and all(i % 2 == 1 for i in found)
    for i in range(b):
        n = int((batch["input_gt_class_ids"][i] > 0).sum())
        assert n > 0
        assert batch["input_gt_masks"][i, ..., :n].any(axis=(0, 1)).all()
        assert not batch["input_gt_masks"][i, ..., n:].any()
        assert not batch["input_gt_boxes"][i, n:].any()
    gen.on_epoch_end()
    assert len(gen) == 3


def test_data_generator_order_follows_numpys_global_seed(tiny_config):
    """Unseeded generators draw their order from NumPy's global generator: a run seeded with
    ``keras.utils.set_random_seed`` sees the same batches again, an unseeded one new ones."""
    anchors = tiny_anchors(tiny_config)
    dataset = SparseEllipses(40, seed=2)

    def order(global_seed):
        np.random.seed(global_seed)
        gen = data.DataGenerator(dataset, tiny_config, anchors, steps=20)
        first = list(gen._order)
        gen.on_epoch_end()
        return first, list(gen._order)

    assert order(3) == order(3)
    assert order(3)[0] != order(4)[0]
    first, second = order(3)
    assert first != second                      # each epoch a new order


def test_a_batch_is_the_same_whichever_thread_builds_it_and_when(tiny_config):
    """Each batch draws its crops, flips and anchor samples from a generator of its own
    (seed, epoch, index): built in another order, or again, it is the same batch."""
    anchors = tiny_anchors(tiny_config)
    dataset = SparseEllipses(12, seed=2)
    one = data.DataGenerator(dataset, tiny_config, anchors, steps=3, seed=7)
    two = data.DataGenerator(dataset, tiny_config, anchors, steps=3, seed=7)
    forwards = [one[i][0] for i in range(3)]
    backwards = [two[i][0] for i in (2, 1, 0)][::-1]
    for a, b in zip(forwards, backwards):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    np.random.seed(0)                           # NumPy's global generator plays no part
    np.testing.assert_array_equal(one[1][0]["input_rpn_match"], forwards[1]["input_rpn_match"])
    one.on_epoch_end()
    assert not np.array_equal(one[1][0]["input_rpn_match"], forwards[1]["input_rpn_match"])


def test_data_generator_refuses_an_empty_dataset():
    empty = utils.Dataset()
    empty.prepare()
    with pytest.raises(ValueError, match="no images"):
        data.DataGenerator(empty, TinyConfig(), np.zeros((1, 4)), steps=1)


# ----------------------------------------------------------------------------- object sizes
def _discs(shape=(120, 160), radius=9, centres=((30, 40), (80, 110), (60, 70))):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = np.stack([(yy - y) ** 2 + (xx - x) ** 2 <= radius ** 2 for y, x in centres], -1)
    image = np.zeros(shape + (3,), np.uint8)
    image[mask.any(-1)] = 200
    return image, mask


def test_object_scale_brings_the_median_nucleus_to_the_diameter():
    _, mask = _discs(radius=18)                      # equivalent diameter ~36
    factor = data.object_scale(mask, 18.0)
    assert factor == pytest.approx(18 / utils.median_diameter(mask))
    assert factor == pytest.approx(0.5, rel=0.03)
    rng = np.random.default_rng(0)
    draws = [data.object_scale(mask, 18.0, (0.5, 2.0), rng) / factor for _ in range(400)]
    assert 0.5 <= min(draws) < 0.6 and 1.8 < max(draws) <= 2.0
    # log-uniform: as many draws below 1 as above
    assert 0.4 < np.mean(np.array(draws) < 1) < 0.6


def test_object_scale_without_objects_and_limits():
    assert data.object_scale(np.zeros((10, 10, 0), bool), 18.0) == 1.0
    _, tiny = _discs(radius=1)
    assert data.object_scale(tiny, 100.0) == data.SCALE_LIMITS[1]
    with pytest.raises(ValueError, match="jitter"):
        data.object_scale(tiny, 18.0, (2.0, 1.0))


def test_scaled_crop_enlarges_image_and_masks_together():
    image, mask = _discs(radius=6)
    np.random.seed(1)
    crop, crop_mask, window, scale = data.scaled_crop(image, mask, 2.0, 64)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    assert scale == 2.0 and window == (0, 0, 64, 64)
    assert crop_mask.dtype == bool and crop_mask.shape[:2] == (64, 64)
    assert crop_mask.shape[-1] >= 1 and crop_mask.any(axis=(0, 1)).all()
    # the masks still cover the bright pixels of the enlarged image, and they are twice as wide
    bright = crop[..., 0] > 100
    union = crop_mask.any(-1)
    assert (bright == union).mean() > 0.97
    whole = [m for m in np.moveaxis(crop_mask, -1, 0)
             if not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())]
    for m in whole:
        assert utils.median_diameter(m[..., None]) == pytest.approx(26, rel=0.1)


def test_scaled_crop_takes_hundreds_of_masks():
    """More masks than OpenCV resizes in one call (a crowded image holds 300 and more)."""
    centres = [(4 + 8 * (k // 20), 4 + 8 * (k % 20)) for k in range(300)]
    image, mask = _discs(shape=(200, 160), radius=3, centres=centres)
    np.random.seed(0)
    crop, crop_mask, _, _ = data.scaled_crop(image, mask, 0.8, 160)
    assert crop_mask.shape[-1] == 300 and crop_mask.any(axis=(0, 1)).all()


def test_scaled_crop_of_a_shrunk_small_image_is_padded():
    image, mask = _discs(shape=(60, 80), radius=10, centres=((30, 40),))
    crop, crop_mask, window, scale = data.scaled_crop(image, mask, 0.5, 64)
    assert crop.shape == (64, 64, 3) and window == (0, 0, 30, 40) and scale == 0.5
    assert not crop[30:].any() and not crop[:, 40:].any()
    assert crop_mask.shape[-1] == 1
    assert utils.median_diameter(crop_mask) == pytest.approx(10, rel=0.15)


def test_load_image_gt_normalises_object_sizes(tiny_config):
    from mrcnn.config import Config

    class Sized(type(tiny_config)):
        IMAGE_RESIZE_MODE = "crop"
        IMAGE_MIN_DIM = 64
        IMAGE_MAX_DIM = 64
        OBJECT_DIAMETER = 12.0
        OBJECT_SCALE_JITTER = (1.0, 1.0)
        USE_MINI_MASK = False

    class Big:
        """One image of large discs (diameter ~40)."""
        image_info = [{"id": "big"}]

        def load_image(self, image_id):
            return _discs(radius=20, centres=((40, 40), (80, 110)))[0]

        def load_mask(self, image_id):
            mask = _discs(radius=20, centres=((40, 40), (80, 110)))[1]
            return mask, np.ones(mask.shape[-1], np.int32)

    assert Config.OBJECT_DIAMETER is None      # the library default keeps native sizes
    config = Sized()
    np.random.seed(3)
    for _ in range(5):
        image, _, class_ids, boxes, mask = data.load_image_gt(Big(), config, 0,
                                                              use_mini_mask=False)
        assert image.shape[:2] == (64, 64)
        sides = boxes[:, 2:] - boxes[:, :2]
        whole = [(s, m) for s, m, b in zip(sides, np.moveaxis(mask, -1, 0), boxes)
                 if b[0] > 0 and b[1] > 0 and b[2] < 64 and b[3] < 64]
        for side, _ in whole:
            assert side.max() == pytest.approx(12, abs=2)
