"""mrcnn.utils on hand-made cases: anchors, boxes, IoU, masks, uint8 RGB, resizing, AP,
Dataset, files."""
from __future__ import annotations

import http.server
import os
import socket
import threading

import numpy as np
import pytest

from mrcnn import files, utils


def ellipse(shape, center, radii) -> np.ndarray:
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return ((yy - center[0]) / radii[0]) ** 2 + ((xx - center[1]) / radii[1]) ** 2 <= 1.0


def rect_masks(shape, *boxes) -> np.ndarray:
    out = np.zeros((*shape, len(boxes)), bool)
    for k, (y1, x1, y2, x2) in enumerate(boxes):
        out[y1:y2, x1:x2, k] = True
    return out


# ----------------------------------------------------------------------------- anchors
def test_anchor_count_centres_and_sizes_on_one_level():
    ratios = [0.5, 1, 2]
    anchors = utils.generate_anchors(32, ratios, (3, 5), feature_stride=16, anchor_stride=1)
    assert anchors.shape == (3 * 5 * 3, 4)
    heights = anchors[:, 2] - anchors[:, 0]
    widths = anchors[:, 3] - anchors[:, 1]
    centres_y = (anchors[:, 0] + anchors[:, 2]) / 2
    centres_x = (anchors[:, 1] + anchors[:, 3]) / 2
    # Centres sit on the stride grid, every grid point once per ratio.
    np.testing.assert_allclose(centres_y, np.round(centres_y / 16) * 16, atol=1e-9)
    np.testing.assert_allclose(centres_x, np.round(centres_x / 16) * 16, atol=1e-9)
    points = {(round(y), round(x)) for y, x in zip(centres_y, centres_x)}
    assert points == {(16 * i, 16 * j) for i in range(3) for j in range(5)}
    # Area is scale^2 and width/height is the ratio.
    np.testing.assert_allclose(heights * widths, 32 ** 2)
    np.testing.assert_allclose(sorted(set(np.round(widths / heights, 6))), ratios)
    # The three anchors of a location come together, in ratio order.
    np.testing.assert_allclose(widths[:3] / heights[:3], ratios)
    np.testing.assert_allclose(centres_y[:3], 0)


def test_anchor_stride_two_skips_every_other_cell():
    anchors = utils.generate_anchors(8, [1], (4, 4), feature_stride=4, anchor_stride=2)
    assert anchors.shape == (4, 4)
    centres = {((a[0] + a[2]) / 2, (a[1] + a[3]) / 2) for a in anchors}
    assert centres == {(0, 0), (0, 8), (8, 0), (8, 8)}


def test_pyramid_anchors_go_level_by_level():
    shapes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    strides = [4, 8, 16, 32, 64]
    scales = (8, 16, 32, 64, 128)
    anchors = utils.generate_pyramid_anchors(scales, [0.5, 1, 2], shapes, strides, 1)
    counts = [h * w * 3 for h, w in shapes]
    assert anchors.shape == (sum(counts), 4)
    start = 0
    for (h, w), stride, scale, n in zip(shapes, strides, scales, counts):
        level = anchors[start:start + n]
        area = (level[:, 2] - level[:, 0]) * (level[:, 3] - level[:, 1])
        np.testing.assert_allclose(area, scale ** 2)
        assert ((level[:, 0] + level[:, 2]) / 2).max() == pytest.approx((h - 1) * stride)
        start += n


# ----------------------------------------------------------------------------- boxes
def test_box_refinement_and_apply_box_deltas_invert_each_other():
    rng = np.random.default_rng(0)
    y1, x1 = rng.uniform(0, 50, (2, 20))
    boxes = np.stack([y1, x1, y1 + rng.uniform(2, 30, 20), x1 + rng.uniform(2, 30, 20)], 1)
    y1, x1 = rng.uniform(0, 50, (2, 20))
    gt = np.stack([y1, x1, y1 + rng.uniform(2, 30, 20), x1 + rng.uniform(2, 30, 20)], 1)
    deltas = utils.box_refinement(boxes, gt)
    np.testing.assert_allclose(utils.apply_box_deltas(boxes, deltas), gt, rtol=1e-4, atol=1e-3)


def test_box_refinement_known_values():
    box = np.array([[0, 0, 10, 20]])
    gt = np.array([[5, 0, 25, 10]])  # centre moves 10 down and 5 left; height x2, width x0.5
    np.testing.assert_allclose(utils.box_refinement(box, gt),
                               [[1.0, -0.25, np.log(2), np.log(0.5)]], rtol=1e-6)
    np.testing.assert_allclose(utils.apply_box_deltas(box, np.zeros((1, 4))), box)


def test_compute_iou_and_overlaps_on_known_boxes():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [0, 5, 10, 15], [20, 20, 30, 30],
                  [2, 2, 4, 4]])
    expected = [1.0, 25 / 175, 50 / 150, 0.0, 4 / 100]
    area_a = 100.0
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    np.testing.assert_allclose(utils.compute_iou(a[0], b, area_a, area_b), expected)
    overlaps = utils.compute_overlaps(a, b)
    assert overlaps.shape == (2, 5)
    np.testing.assert_allclose(overlaps, [expected, expected])
    np.testing.assert_allclose(utils.compute_overlaps(b, a), overlaps.T)


def test_compute_overlaps_masks_known_values():
    m1 = rect_masks((10, 10), (0, 0, 4, 4), (0, 0, 10, 10))
    m2 = rect_masks((10, 10), (0, 0, 4, 4), (0, 2, 4, 6), (6, 6, 8, 8))
    iou = utils.compute_overlaps_masks(m1, m2)
    np.testing.assert_allclose(iou, [[1.0, 8 / 24, 0.0], [16 / 100, 16 / 100, 4 / 100]])
    assert utils.compute_overlaps_masks(m1, np.zeros((10, 10, 0), bool)).shape == (2, 0)


def test_extract_bboxes_is_tight_and_exclusive_and_zero_for_empty():
    masks = rect_masks((12, 12), (2, 3, 5, 9), (0, 0, 12, 12), (0, 0, 0, 0))
    masks[7, 1, 0] = True  # a stray pixel extends the first box
    np.testing.assert_array_equal(utils.extract_bboxes(masks),
                                  [[2, 1, 8, 9], [0, 0, 12, 12], [0, 0, 0, 0]])


def test_norm_and_denorm_boxes_round_trip():
    shape = (64, 48)
    boxes = np.array([[0, 0, 64, 48], [10, 5, 20, 30], [63, 47, 64, 48]])
    norm = utils.norm_boxes(boxes, shape)
    np.testing.assert_allclose(norm[0], [0, 0, 1, 1])
    np.testing.assert_allclose(norm[1], [10 / 63, 5 / 47, 19 / 63, 29 / 47], rtol=1e-6)
    np.testing.assert_array_equal(utils.denorm_boxes(norm, shape), boxes)


def test_non_max_suppression_drops_duplicates():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]])
    scores = np.array([0.6, 0.9, 0.5, 0.1])
    np.testing.assert_array_equal(utils.non_max_suppression(boxes, scores, 0.5), [1, 2])


# ----------------------------------------------------------------------------- masks
def test_minimize_then_expand_mask_recovers_an_ellipse():
    shape = (80, 100)
    masks = np.stack([ellipse(shape, (30, 40), (20, 30)), ellipse(shape, (65, 80), (8, 5))], -1)
    boxes = utils.extract_bboxes(masks)
    mini = utils.minimize_mask(boxes, masks, (28, 28))
    assert mini.shape == (28, 28, 2) and mini.dtype == bool
    back = utils.expand_mask(boxes, mini, shape)
    assert back.shape == masks.shape
    iou = np.diag(utils.compute_overlaps_masks(masks, back))
    assert (iou > 0.9).all(), iou
    assert not back[:boxes[0, 0], :, 0].any()  # nothing outside the box


# ----------------------------------------------------------------------------- resizing
def striped_image(h, w) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = (np.arange(w) * 5 % 256)[None, :]
    image[..., 1] = (np.arange(h) * 3 % 256)[:, None]
    image[..., 2] = 200
    return image


# ----------------------------------------------------------------------------- to uint8 RGB
def test_uint8_is_kept_and_grey_stacked():
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    assert utils.to_rgb_uint8(rgb) is rgb                  # what the stage-1 PNGs are
    grey = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    for image in (grey, grey[..., None], np.stack([grey, 255 - grey], axis=-1)):  # + alpha
        out = utils.to_rgb_uint8(image)
        assert out.shape == (40, 50, 3) and out.dtype == np.uint8
        assert all(np.array_equal(out[..., c], grey) for c in range(3))
    rgba = rng.integers(0, 256, (40, 50, 4), dtype=np.uint8)
    np.testing.assert_array_equal(utils.to_rgb_uint8(rgba), rgba[..., :3])


def test_deep_images_are_stretched_by_percentiles():
    # Dim nuclei (grey levels 100-900 of 65535) plus one hot pixel: a plain division by the
    # maximum would leave the nuclei within 4 grey levels of black.
    rng = np.random.default_rng(7)
    image = rng.integers(100, 900, (200, 200)).astype(np.uint16)
    image[0, 0] = 65535
    out = utils.to_rgb_uint8(image)[..., 0]
    lo, hi = np.percentile(image, utils.DEEP_PERCENTILES)
    expected = np.clip((image - lo) * 255 / (hi - lo) + 0.5, 0, 255).astype(np.uint8)
    assert np.abs(out.astype(int) - expected).max() <= 1
    assert out.max() == 255 and out.min() == 0
    assert 100 < np.median(out) < 155
    # one map for all channels: a deep RGB image keeps its channels' order
    rgb = np.stack([image, image // 2, image // 4], axis=-1)
    out = utils.to_rgb_uint8(rgb)
    assert (out[..., 0] >= out[..., 1]).all() and (out[..., 1] >= out[..., 2]).all()


def test_flat_nan_bool_and_bad_shapes():
    assert utils.to_rgb_uint8(np.full((5, 5), 1000, np.uint16)).max() == 0
    f = np.linspace(0, 1, 25, dtype=np.float32).reshape(5, 5)
    f[0, 0] = np.nan
    out = utils.to_rgb_uint8(f)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255
    assert not utils.to_rgb_uint8(np.full((3, 3), np.nan)).any()
    b = np.eye(5, dtype=bool)
    np.testing.assert_array_equal(utils.to_rgb_uint8(b)[..., 1], b * 255)
    for shape in ((4, 4, 5), (4,), (2, 4, 4, 3)):
        with pytest.raises(ValueError, match="shape"):
            utils.to_rgb_uint8(np.zeros(shape, np.uint8))


def test_deep_range_then_scale_is_to_rgb_uint8_in_two_steps():
    assert utils.deep_sample_step(2000, 2000) == 1
    assert utils.deep_sample_step(8000, 8000) == 4
    image = np.arange(16 * 8, dtype=np.uint16).reshape(16, 8)
    lo, hi = utils.deep_range(image)
    np.testing.assert_array_equal(utils.scale_to_uint8(image, lo, hi),
                                  utils.to_rgb_uint8(image)[..., 0])


def test_resize_mode_none_returns_the_image_untouched():
    image = striped_image(30, 50)
    out, window, scale, padding, crop = utils.resize_image(image, 64, 128, mode="none")
    assert out is image
    assert window == (0, 0, 30, 50) and scale == 1 and crop is None
    assert padding == [(0, 0), (0, 0), (0, 0)]


def test_resize_mode_square_scales_the_long_side_and_centres():
    image = striped_image(50, 100)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=16, max_dim=64,
                                                           mode="square")
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert scale == pytest.approx(0.64)
    assert window == (16, 0, 48, 64)
    assert padding == [(16, 16), (0, 0), (0, 0)]
    assert crop is None
    assert not out[:16].any() and not out[48:].any()
    assert (out[16:48, :, 2] >= 199).all()  # the constant channel survives inside the window
    # The content in the window is the scaled image.
    expected = utils.resize(image, (32, 64), preserve_range=True).astype(np.uint8)
    np.testing.assert_array_equal(out[16:48], expected)


def test_resize_mode_square_upscales_to_min_dim():
    image = striped_image(20, 30)
    out, window, scale, _, _ = utils.resize_image(image, min_dim=40, max_dim=64, mode="square")
    assert scale == pytest.approx(2.0)
    assert out.shape == (64, 64, 3)
    assert window == (12, 2, 52, 62)


def test_resize_mode_pad64_pads_to_multiples_of_64_without_scaling():
    image = striped_image(50, 130)
    out, window, scale, padding, crop = utils.resize_image(image, mode="pad64")
    assert out.shape == (64, 192, 3)
    assert scale == 1
    assert padding == [(7, 7), (31, 31), (0, 0)]
    assert window == (7, 31, 57, 161)
    np.testing.assert_array_equal(out[7:57, 31:161], image)
    assert out.sum() == image.astype(np.int64).sum()  # padding is zero
    same, window, _, padding, _ = utils.resize_image(striped_image(64, 128), mode="pad64")
    assert same.shape == (64, 128, 3) and window == (0, 0, 64, 128)


def test_resize_mode_crop_takes_a_window_of_the_image():
    image = striped_image(100, 120)
    np.random.seed(1)
    out, window, scale, padding, crop = utils.resize_image(image, min_dim=64, mode="crop")
    assert out.shape == (64, 64, 3)
    assert window == (0, 0, 64, 64) and scale == 1
    y, x, h, w = crop
    assert (h, w) == (64, 64)
    np.testing.assert_array_equal(out, image[y:y + 64, x:x + 64])


@pytest.mark.parametrize("mode,kwargs", [
    ("square", dict(min_dim=16, max_dim=64)),
    ("square", dict(min_dim=80, max_dim=128)),
    ("pad64", dict()),
    ("crop", dict(min_dim=32)),
    ("none", dict()),
])
def test_resize_mask_follows_resize_image(mode, kwargs):
    image = np.zeros((50, 70, 3), np.uint8)
    masks = rect_masks((50, 70), (10, 12, 30, 40), (35, 50, 45, 66))
    image[masks.any(-1)] = 255
    np.random.seed(5)
    out, window, scale, padding, crop = utils.resize_image(image, mode=mode, **kwargs)
    resized = utils.resize_mask(masks, scale, padding, crop)
    assert resized.shape[:2] == out.shape[:2] and resized.dtype == bool
    bright = out[..., 0] > 127
    agreement = (bright == resized.any(-1)).mean()
    assert agreement > 0.97, agreement
    if mode != "crop":
        y1, x1, y2, x2 = window
        assert not resized[:y1].any() and not resized[y2:].any()
        assert not resized[:, :x1].any() and not resized[:, x2:].any()


# ----------------------------------------------------------------------------- AP
def ap_case(gt_boxes, pred_boxes, pred_scores, shape=(20, 20), pred_classes=None):
    gt_masks = rect_masks(shape, *gt_boxes)
    pred_masks = rect_masks(shape, *pred_boxes)
    pred_classes = np.ones(len(pred_boxes), np.int32) if pred_classes is None else pred_classes
    return utils.compute_ap(np.array(gt_boxes).reshape(-1, 4), np.ones(len(gt_boxes), np.int32),
                            gt_masks, np.array(pred_boxes).reshape(-1, 4), pred_classes,
                            np.array(pred_scores, float), pred_masks, iou_threshold=0.5)


A, B, C = (0, 0, 5, 5), (10, 10, 16, 16), (0, 10, 4, 18)


def test_compute_ap_perfect_is_one():
    ap, precisions, recalls, overlaps = ap_case([A, B], [B, A], [0.9, 0.8])
    assert ap == pytest.approx(1.0)
    assert overlaps.shape == (2, 2)


def test_compute_ap_one_missed_object_halves_it():
    ap, *_ = ap_case([A, B], [A], [0.9])
    assert ap == pytest.approx(0.5)


def test_compute_ap_false_positive_before_the_hit_halves_it():
    ap, precisions, recalls, _ = ap_case([A], [C, A], [0.9, 0.8])
    assert ap == pytest.approx(0.5)
    ap_after, *_ = ap_case([A], [A, C], [0.9, 0.8])  # ranked after the hit: no cost
    assert ap_after == pytest.approx(1.0)


def test_compute_ap_mixed_case():
    # Ranking hit, miss, hit over three objects: precision 1 to recall 1/3, 2/3 to recall 2/3.
    ap, *_ = ap_case([A, B, (12, 0, 19, 6)], [A, C, B], [0.9, 0.8, 0.7])
    assert ap == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)


def test_compute_ap_wrong_class_or_low_iou_is_not_a_hit():
    ap, *_ = ap_case([A], [A], [0.9], pred_classes=np.array([2]))
    assert ap == pytest.approx(0.0)
    ap, *_ = ap_case([(0, 0, 10, 10)], [(0, 0, 10, 4)], [0.9])  # IoU 0.4
    assert ap == pytest.approx(0.0)


def test_compute_ap_without_predictions_or_ground_truth():
    ap, *_ = ap_case([A, B], [], [])
    assert ap == 0.0
    ap, *_ = ap_case([], [], [])
    assert ap == 1.0
    ap, *_ = ap_case([], [A], [0.5])
    assert ap == 0.0


# ----------------------------------------------------------------------------- Dataset
class TwoSourceDataset(utils.Dataset):
    def load(self):
        self.add_class("cells", 1, "nucleus")
        self.add_class("cells", 1, "nucleus")  # duplicates are ignored
        self.add_class("coco", 1, "person,human")
        self.add_class("coco", 3, "car")
        self.add_image("cells", "img-a", "/data/a.png", height=10, width=20)
        self.add_image("coco", 42, "/data/b.jpg")
        self.add_image("cells", "img-c", "/data/c.png")


def test_dataset_ids_names_and_source_maps():
    ds = TwoSourceDataset()
    ds.load()
    ds.prepare()
    assert ds.num_classes == 4
    assert ds.class_names == ["BG", "nucleus", "person", "car"]
    np.testing.assert_array_equal(ds.class_ids, [0, 1, 2, 3])
    np.testing.assert_array_equal(ds.image_ids, [0, 1, 2])
    assert ds.num_images == 3
    assert ds.map_source_class_id("coco.3") == 3
    assert ds.map_source_class_id("cells.1") == 1
    assert ds.get_source_class_id(2, "coco") == 1
    assert ds.image_from_source_map["coco.42"] == 1
    assert ds.image_from_source_map["cells.img-c"] == 2
    assert ds.sources == ["", "cells", "coco"]
    assert ds.source_class_ids["coco"] == [0, 2, 3]
    assert ds.source_class_ids["cells"] == [0, 1]
    assert ds.image_info[0]["height"] == 10 and ds.image_info[0]["path"] == "/data/a.png"
    assert ds.image_reference(1) == "/data/b.jpg"
    with pytest.raises(AssertionError):
        ds.add_class("bad.source", 1, "x")


def test_dataset_reads_image_files_as_rgb(tmp_path):
    import skimage.io

    grey = (np.arange(12 * 9).reshape(12, 9) % 256).astype(np.uint8)
    skimage.io.imsave(tmp_path / "g.png", grey, check_contrast=False)
    ds = utils.Dataset()
    ds.add_image("x", 0, str(tmp_path / "g.png"))
    ds.prepare()
    image = ds.load_image(0)
    assert image.shape == (12, 9, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[..., 1], grey)
    masks, ids = ds.load_mask(0)
    assert masks.shape[-1] == 0 and ids.shape == (0,)


# ----------------------------------------------------------------------------- files
def test_atomic_path_is_still_importable_from_utils():
    assert utils.atomic_path is files.atomic_path


class _Server:
    """A thread serving ``body`` on 127.0.0.1, announcing ``length`` bytes."""

    def __init__(self, body: bytes, length: int | None = None):
        body_, length_ = body, len(body) if length is None else length

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(length_))
                self.end_headers()
                self.wfile.write(body_)

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mask_rcnn_coco.h5"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_trained_weights_writes_the_file_atomically(tmp_path, capsys):
    body = os.urandom(3 * 1024 * 1024 + 17)  # several chunks
    target = tmp_path / "weights" / "mask_rcnn_coco.h5"
    previous = os.umask(0o022)
    try:
        with _Server(body) as server:
            assert utils.download_trained_weights(target, url=server.url) == str(target)
    finally:
        os.umask(previous)
    assert target.read_bytes() == body
    assert os.stat(target).st_mode & 0o777 == 0o644
    assert os.listdir(target.parent) == ["mask_rcnn_coco.h5"]
    captured = capsys.readouterr()
    assert f"Downloading pretrained model to {target} ..." in captured.out
    assert "done downloading pretrained model" in captured.out
    assert "100%" in captured.err  # tqdm's progress bar


def test_download_trained_weights_fails_clearly_without_a_network(tmp_path):
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}/mask_rcnn_coco.h5"
    target = tmp_path / "mask_rcnn_coco.h5"
    with pytest.raises(ConnectionError) as error:
        utils.download_trained_weights(target, verbose=0, url=url, timeout=5)
    assert url in str(error.value) and str(target) in str(error.value)
    assert os.listdir(tmp_path) == []


def test_download_cut_short_leaves_no_file(tmp_path):
    target = tmp_path / "mask_rcnn_coco.h5"
    with _Server(b"x" * 100, length=1000) as server:
        with pytest.raises(ConnectionError, match=str(target)):
            utils.download_trained_weights(target, verbose=0, url=server.url, timeout=5)
    assert os.listdir(tmp_path) == []


def test_download_trained_weights_defaults_to_the_coco_release(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    from mrcnn.weights import COCO_WEIGHTS_URL

    asked = []

    def offline(url, timeout):
        asked.append(url)
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ConnectionError, match="Name or service not known") as error:
        utils.download_trained_weights(tmp_path / "mask_rcnn_coco.h5", verbose=0)
    assert asked == [COCO_WEIGHTS_URL] and COCO_WEIGHTS_URL in str(error.value)
    assert COCO_WEIGHTS_URL.endswith("/mask_rcnn_coco.h5")
