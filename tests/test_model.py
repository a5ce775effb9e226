"""mrcnn.model.MaskRCNN: checkpoints, resuming, layer groups and detect's output format.

The tests marked ``backends`` (training, detect, inference on several image sizes) run again
under ``KERAS_BACKEND=jax``.
"""
from __future__ import annotations

import contextlib
import csv
import os
from types import SimpleNamespace

import h5py
import keras
import numpy as np
import pytest
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
from tensorboard.util.tensor_util import make_ndarray

from mrcnn import model as modellib
from mrcnn import utils
from mrcnn import weights as weights_io
from seeded_weights import set_seeded_weights
from synthetic import EllipseDataset, ellipse_image

from conftest import TinyInferenceConfig

RUN = "tiny20240102T0930"


def touch(path) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb"):
        pass


@pytest.fixture
def fresh(training_model, tmp_path, monkeypatch):
    """The shared training model with its model_dir in tmp_path; state restored afterwards."""
    monkeypatch.setattr(training_model, "model_dir", str(tmp_path))
    training_model.set_log_dir()
    yield training_model
    training_model.set_trainable(".*")
    monkeypatch.undo()
    training_model.set_log_dir()


def unit_names(model):
    return [u.name for u in weights_io.weight_units(model.keras_model)]


# ----------------------------------------------------------------------------- files
def test_find_last_picks_the_last_checkpoint_of_the_latest_run(fresh, tmp_path):
    for epoch in range(1, 6):
        touch(tmp_path / "tiny20240101T0000" / f"mask_rcnn_tiny_{epoch:04d}.h5")
    touch(tmp_path / RUN / "mask_rcnn_tiny_0001.h5")
    touch(tmp_path / RUN / "mask_rcnn_tiny_0002.h5")
    touch(tmp_path / RUN / "mask_rcnn_tiny_0003.h5.tmp4242")   # an interrupted write
    touch(tmp_path / RUN / "events.out.tfevents")
    os.makedirs(tmp_path / "tiny20240103T0000")                  # a run that saved nothing
    touch(tmp_path / "other20250101T0000" / "mask_rcnn_other_0009.h5")
    touch(tmp_path / "tinybig20250101T0000" / "mask_rcnn_tinybig_0009.h5")  # another NAME
    assert fresh.find_last() == str(tmp_path / RUN / "mask_rcnn_tiny_0002.h5")


def test_find_last_without_checkpoints_raises(fresh, tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="tiny"):
        fresh.find_last()
    monkeypatch.setattr(fresh, "model_dir", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="missing"):
        fresh.find_last()


def test_set_log_dir_takes_run_folder_and_epoch_from_a_checkpoint_path(fresh, tmp_path):
    fresh.set_log_dir(str(tmp_path / RUN / "mask_rcnn_tiny_0002.h5"))
    assert fresh.epoch == 2
    assert fresh.log_dir == str(tmp_path / RUN)
    assert fresh.checkpoint_path.format(epoch=3) == str(tmp_path / RUN / "mask_rcnn_tiny_0003.h5")
    fresh.set_log_dir(str(tmp_path / "somewhere" / "weights.h5"))  # not a checkpoint: new run
    assert fresh.epoch == 0
    assert os.path.basename(fresh.log_dir).startswith("tiny")
    assert os.path.dirname(fresh.log_dir) == str(tmp_path)


def test_interrupted_checkpoint_write_leaves_no_file(fresh, tmp_path, monkeypatch):
    good = tmp_path / RUN / "mask_rcnn_tiny_0001.h5"
    fresh.save_weights(str(good))
    fresh.set_log_dir(str(good))
    target = fresh.checkpoint_path.format(epoch=2)
    real_create = h5py.Group.create_dataset
    calls = []

    def failing_create(self, *args, **kwargs):
        calls.append(args[0] if args else kwargs.get("name"))
        if len(calls) > 20:
            raise OSError("disk full (simulated)")
        return real_create(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Group, "create_dataset", failing_create)
    with pytest.raises(OSError, match="simulated"):
        modellib.CheckpointCallback(fresh).on_epoch_end(1)
    monkeypatch.setattr(h5py.Group, "create_dataset", real_create)
    assert len(calls) > 20                       # the write really was under way
    assert not os.path.exists(target)
    assert sorted(os.listdir(tmp_path / RUN)) == ["mask_rcnn_tiny_0001.h5"]  # no temp left
    assert fresh.find_last() == str(good)
    # A temporary file left by a killed process is ignored as well.
    touch(target + ".tmp999")
    assert fresh.find_last() == str(good)


# ----------------------------------------------------------------------------- layer groups
def test_heads_group_freezes_the_resnet(fresh):
    trainable = set(fresh.set_trainable(modellib.LAYER_REGEX["heads"]))
    names = unit_names(fresh)
    for name in names:
        if name.startswith(("mrcnn_", "rpn_", "fpn_")):
            assert name in trainable, name
        else:
            assert name.startswith(("res", "bn", "conv1")) and name not in trainable, name
    assert {"rpn_model", "fpn_p2", "mrcnn_mask", "mrcnn_class_logits"} <= trainable
    expected = sum(len(u.trainable_weights) for u in weights_io.weight_units(fresh.keras_model)
                   if u.name in trainable)
    assert len(fresh.keras_model.trainable_weights) == expected
    frozen = {id(w) for u in weights_io.weight_units(fresh.keras_model)
              if u.name.startswith(("res", "bn")) for w in u.weights}
    assert not [w for w in fresh.keras_model.trainable_weights if id(w) in frozen]


def test_4_plus_group_adds_stages_4_and_5(fresh):
    trainable = set(fresh.set_trainable(modellib.LAYER_REGEX["4+"]))
    assert {"res4a_branch2a", "bn4a_branch2a", "res4f_branch2c", "res5c_branch2c",
            "bn5a_branch1", "fpn_p5", "mrcnn_class_conv1"} <= trainable
    assert not {"conv1", "bn_conv1", "res2a_branch2a", "res3d_branch2c", "bn3a_branch1"} \
        & trainable
    all_ = set(fresh.set_trainable(modellib.LAYER_REGEX["all"]))
    assert all_ == set(unit_names(fresh))


def test_any_regular_expression_selects_layers(fresh):
    trainable = fresh.set_trainable(r"fpn_p[23]|conv1")
    assert sorted(trainable) == ["conv1", "fpn_p2", "fpn_p3"]
    assert len(fresh.keras_model.trainable_weights) == 6


# ----------------------------------------------------------------------------- resuming
@pytest.mark.backends
def test_train_resumes_after_the_checkpoint_epoch(fresh, tmp_path, capsys):
    checkpoint = tmp_path / RUN / "mask_rcnn_tiny_0002.h5"
    fresh.save_weights(str(checkpoint))
    fresh.load_weights(str(checkpoint), by_name=True)
    assert fresh.epoch == 2
    conv1_before = fresh.keras_model.backbone.get_layer("conv1").kernel.numpy()
    bn_before = fresh.keras_model.backbone.get_layer("bn_conv1").moving_mean.numpy()
    head_before = fresh.keras_model.mrcnn_class_conv1.kernel.numpy()

    history = fresh.train(EllipseDataset(8, seed=4), None, learning_rate=0.01, epochs=3,
                          layers="heads", verbose=1)
    printed = capsys.readouterr().out
    assert "Starting at epoch 2. LR=0.01" in printed    # what matterport printed
    assert f"Checkpoint Path: {tmp_path / RUN / 'mask_rcnn_tiny_{epoch:04d}.h5'}" in printed
    assert history.epoch == [2]                  # exactly one epoch: the third
    assert len(history.history["loss"]) == 1
    assert all(np.isfinite(v[0]) for v in history.history.values())
    files = sorted(f for f in os.listdir(tmp_path / RUN) if f.endswith(".h5"))
    assert files == ["mask_rcnn_tiny_0002.h5", "mask_rcnn_tiny_0003.h5"]
    assert fresh.epoch == 3
    assert weights_io.read_attrs(str(tmp_path / RUN / "mask_rcnn_tiny_0003.h5"))["epoch"] == 3
    assert fresh.find_last() == str(tmp_path / RUN / "mask_rcnn_tiny_0003.h5")
    with open(tmp_path / RUN / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [2]
    # TensorBoard's curves, under every backend (the tensorboard package's writer under JAX)
    events = EventAccumulator(str(tmp_path / RUN / "train"))
    events.Reload()
    losses = [(e.step, float(make_ndarray(e.tensor_proto))) for e in events.Tensors("epoch_loss")]
    assert [step for step, _ in losses] == [2]
    np.testing.assert_allclose(losses[0][1], history.history["loss"][0], rtol=1e-6)
    # Only the heads moved.
    np.testing.assert_array_equal(fresh.keras_model.backbone.get_layer("conv1").kernel.numpy(),
                                  conv1_before)
    np.testing.assert_array_equal(
        fresh.keras_model.backbone.get_layer("bn_conv1").moving_mean.numpy(), bn_before)
    assert not np.array_equal(fresh.keras_model.mrcnn_class_conv1.kernel.numpy(), head_before)
    # Asking again for epoch 3 trains nothing.
    listing = sorted(os.listdir(tmp_path / RUN))
    assert fresh.train(EllipseDataset(2, seed=4), None, 0.01, epochs=3, layers="heads") is None
    assert sorted(os.listdir(tmp_path / RUN)) == listing


def test_modes_guard_their_methods(training_model, inference_model):
    with pytest.raises(AssertionError):
        training_model.detect([np.zeros((64, 64, 3), np.uint8)])
    with pytest.raises(AssertionError):
        inference_model.train(None, None, 0.01, 1, "heads")


# ----------------------------------------------------------------------------- detect
@pytest.fixture
def confident(inference_model):
    """The untrained inference model with a classifier that calls every ROI an object.

    Its weights come from a fixed NumPy seed (:mod:`seeded_weights`): with Keras's random
    initialisation the RPN sometimes ranks only anchors in the black padding first, and then
    nothing is detected. Box deltas are zeroed, so detections are the (clipped) anchors that
    survive NMS: an untrained regressor can push every box out. All weights are put back after.
    """
    net = inference_model.keras_model
    saved = net.get_weights()
    set_seeded_weights(net, 0)
    logits = net.mrcnn_class_logits
    zeroed = [net.mrcnn_bbox_fc, net.rpn_model.get_layer("rpn_bbox_pred")]
    for w in list(logits.weights) + [w for layer in zeroed for w in layer.weights]:
        w.assign(np.zeros(w.shape, np.float32))
    logits.bias.assign(np.array([-6.0, 6.0], np.float32))
    yield inference_model
    net.set_weights(saved)


def check_detect_result(r: dict, shape: tuple[int, int], config) -> int:
    """``detect``'s result for one image of ``shape``: matterport's keys, dtypes and shapes,
    scores best first, boxes inside the image, each mask full size and inside its box.
    Returns the number of detections."""
    assert set(r) == {"rois", "class_ids", "scores", "masks"}
    n = len(r["scores"])
    assert n <= config.DETECTION_MAX_INSTANCES
    assert r["rois"].shape == (n, 4) and np.issubdtype(r["rois"].dtype, np.integer)
    assert r["class_ids"].shape == (n,) and np.issubdtype(r["class_ids"].dtype, np.integer)
    assert r["scores"].shape == (n,) and r["scores"].dtype == np.float32
    assert (r["scores"] >= config.DETECTION_MIN_CONFIDENCE).all() and (r["scores"] <= 1).all()
    assert (np.diff(r["scores"]) <= 1e-6).all()  # best first
    assert r["masks"].shape == tuple(shape) + (n,) and r["masks"].dtype == bool
    rois = r["rois"]
    assert (rois[:, :2] >= 0).all() and (rois[:, 2] <= shape[0]).all()
    assert (rois[:, 3] <= shape[1]).all() and (rois[:, 2] > rois[:, 0]).all()
    assert (rois[:, 3] > rois[:, 1]).all()
    for k in range(n):                                   # every mask lies inside its box
        y1, x1, y2, x2 = rois[k]
        outside = r["masks"][..., k].copy()
        outside[y1:y2, x1:x2] = False
        assert not outside.any()
    return n


@pytest.mark.backends
@pytest.mark.parametrize("mode,shape", [("pad64", (50, 70)), ("square", (100, 90))])
def test_detect_returns_original_size_results(confident, monkeypatch, mode, shape):
    monkeypatch.setattr(confident.config, "IMAGE_RESIZE_MODE", mode)
    image, _ = ellipse_image(np.random.default_rng(0), size=max(shape))
    image = image[:shape[0], :shape[1]]
    results = confident.detect([image])
    assert len(results) == 1
    n = check_detect_result(results[0], shape, confident.config)
    assert n > 0
    assert (results[0]["class_ids"] == 1).all()


@pytest.mark.backends
def test_detect_without_detections_returns_empty_results(confident):
    logits = confident.keras_model.mrcnn_class_logits
    logits.bias.assign(np.array([6.0, -6.0], np.float32))   # everything is background now
    r = confident.detect([np.full((40, 100, 3), 30, np.uint8)])[0]
    assert r["rois"].shape == (0, 4) and r["class_ids"].shape == (0,)
    assert r["scores"].shape == (0,)
    assert r["masks"].shape == (40, 100, 0) and r["masks"].dtype == bool
    check_detect_result(r, (40, 100), confident.config)


@contextlib.contextmanager
def jax_compilations():
    """Counts XLA compilations (JAX's own monitoring events) while the block runs; yields a
    list that holds one name per compiled function. Empty on other backends."""
    compiled: list[str] = []
    if keras.backend.backend() != "jax":
        yield compiled
        return
    import jax

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            compiled.append(str(kwargs.get("fun_name")))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield compiled
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)


@pytest.mark.backends
def test_detect_on_images_of_several_sizes(confident, monkeypatch):
    """Each image's result has the image's own size and matterport's format, whatever the
    size. Under JAX images run padded to multiples of INFERENCE_SHAPE_STEP (128 here): the
    padded run gives the RPN scores and proposals of the image padded by hand, in the image's
    own pixels; an image whose padded shape ran before compiles nothing, a new one compiles."""
    config = confident.config
    on_jax = keras.backend.backend() == "jax"
    rng = np.random.default_rng(11)
    # Sizes pad64 leaves as they are: an untrained RPN ranks anchors in black padding as
    # high as any (its scores saturate), so padded images may give no detections to check.
    for shape in [(64, 64), (128, 192), (192, 128)]:
        image, _ = ellipse_image(rng, size=max(shape))
        result = confident.detect([image[:shape[0], :shape[1]]])[0]
        assert check_detect_result(result, shape, config) > 0, shape

    monkeypatch.setattr(config, "INFERENCE_SHAPE_STEP", 128)
    image, _ = ellipse_image(rng, size=60)
    image = image[:50]                                   # 50x60: pad64 makes it 64x64
    out, facts = confident.run_stages(image)
    assert facts["molded_image"].shape[:2] == (64, 64)
    assert tuple(out["molded_shape"]) == ((128, 128) if on_jax else (64, 64))
    by_hand = np.zeros((128, 128, 3), np.uint8)          # black, as the bucket pads
    by_hand[7:57, 2:62] = image                          # where pad64 put the image
    padded, padded_facts = confident.run_stages(by_hand)
    assert padded_facts["molded_image"].shape[:2] == tuple(padded["molded_shape"]) == (128, 128)
    if on_jax:                                           # the same network input
        np.testing.assert_allclose(out["rpn_class"], padded["rpn_class"], atol=1e-5)
        assert len(out["proposals"]) == len(padded["proposals"]) > 0
        np.testing.assert_allclose(denorm(out["proposals"], (64, 64)),
                                   denorm(padded["proposals"], (128, 128)), atol=1e-3)

    # With no detections the mask head always runs on its smallest row bucket, so only the
    # image's shape decides what is compiled.
    confident.keras_model.mrcnn_class_logits.bias.assign(np.array([6.0, -6.0], np.float32))
    blank = {shape: np.full(shape + (3,), 30, np.uint8)
             for shape in [(100, 110), (120, 128), (330, 200)]}
    check_detect_result(confident.detect([blank[(100, 110)]])[0], (100, 110), config)
    with jax_compilations() as same_bucket:              # 128x128 as well
        r = confident.detect([blank[(120, 128)]])[0]
    check_detect_result(r, (120, 128), config)
    with jax_compilations() as new_bucket:               # 384x256: first seen here
        r = confident.detect([blank[(330, 200)]])[0]
    check_detect_result(r, (330, 200), config)
    assert same_bucket == []
    assert bool(new_bucket) == on_jax                    # (so the counter does count)


def test_tiles_run_a_graph_traced_for_their_size(confident, monkeypatch):
    """TensorFlow: ``sized`` calls (the tiles of ``detect_instances``) run the detection stage
    traced for their image size (oneDNN's convolutions are faster with the shape known),
    keeping the SIZED_GRAPHS most recently used; one size always gives the same result,
    whatever ran between (a size traced again included). Whole-image calls, and tiles under
    SIZED_MIN_PIXELS, keep the one graph for any size."""
    import mrcnn.network as network

    net = confident.keras_model
    monkeypatch.setattr(net, "_sized_graphs", {})
    monkeypatch.setattr(network, "SIZED_GRAPHS", 2)
    monkeypatch.setattr(network, "SIZED_MIN_PIXELS", 128 * 128 + 1)
    image, _ = ellipse_image(np.random.default_rng(3), size=128)

    def sizes() -> list:
        return [k[-2:] for k in net._sized_graphs]

    confident.run_stages(image)
    assert sizes() == []                                  # a whole image: any size's graph
    confident.run_stages(image, sized=True)
    assert sizes() == []                                  # under SIZED_MIN_PIXELS: the same
    monkeypatch.setattr(network, "SIZED_MIN_PIXELS", 64 * 64)
    first, _ = confident.run_stages(image, sized=True)
    assert sizes() == [(128, 128)] and len(first["detections"]) > 0
    confident.run_stages(image[:64, :64], sized=True)
    again, _ = confident.run_stages(image, sized=True)
    assert sizes() == [(64, 64), (128, 128)]              # the most recently used last
    confident.run_stages(image[:64, :128], sized=True)
    assert sizes() == [(128, 128), (64, 128)]             # (64, 64) dropped
    confident.run_stages(image[:64, :64], sized=True)
    assert sizes() == [(64, 128), (64, 64)]               # (128, 128) dropped
    retraced, _ = confident.run_stages(image, sized=True)
    for out in (again, retraced):
        for key in ("proposals", "detections", "mrcnn_mask"):
            np.testing.assert_array_equal(out[key], first[key])
    monkeypatch.setattr(confident.config, "DETECTION_MASK_OVERLAP", "confidence")
    boxes, masks, scores = confident.detect_instances(image[:64, :128])
    assert sizes() == [(128, 128), (64, 128)] and len(scores) == len(masks) == len(boxes)


def denorm(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Normalised boxes -> float pixels of an image of ``shape`` (matterport's convention,
    without rounding)."""
    h, w = shape
    return boxes * np.array([h - 1, w - 1, h - 1, w - 1]) + np.array([0, 0, 1, 1])


def test_detect_refuses_crop_mode(confident, monkeypatch):
    monkeypatch.setattr(confident.config, "IMAGE_RESIZE_MODE", "crop")
    with pytest.raises(ValueError, match="crop"):
        confident.detect([np.zeros((64, 64, 3), np.uint8)])


# ----------------------------------------------------------------------------- matterport's API
def test_log_prints_name_shape_range_and_dtype(capsys):
    modellib.log("gt_bbox", np.array([[1, 5], [3, 2]], np.int32))
    modellib.log("empty", np.zeros((0, 4), np.float32))
    modellib.log("plain text")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["gt_bbox", "shape:", "(2,", "2)", "min:", "1.00000", "max:",
                                "5.00000", "int32"]
    assert lines[1].split() == ["empty", "shape:", "(0,", "4)", "min:", "max:", "float32"]
    assert lines[2] == "plain text"


def test_load_image_gt_with_matterports_keywords(tiny_config, monkeypatch):
    ds = EllipseDataset(2, seed=3)
    image, meta, class_ids, bbox, mask = modellib.load_image_gt(ds, tiny_config, 1)
    assert image.shape == (64, 64, 3) and mask.shape == (64, 64, len(class_ids))  # full size
    assert mask.dtype == bool and len(class_ids) > 0
    np.testing.assert_array_equal(modellib.parse_image_meta(meta[None])["image_shape"][0],
                                  image.shape)
    *_, mini = modellib.load_image_gt(ds, tiny_config, 1, use_mini_mask=True)
    assert mini.shape == tuple(tiny_config.MINI_MASK_SHAPE) + (len(class_ids),)
    monkeypatch.setattr(np.random, "randint", lambda *a, **k: 1)  # "augment" flips now
    flipped, _, _, flipped_bbox, flipped_mask = modellib.load_image_gt(ds, tiny_config, 1,
                                                                      augment=True)
    np.testing.assert_array_equal(flipped, image[:, ::-1])
    np.testing.assert_array_equal(flipped_mask, mask[:, ::-1])
    np.testing.assert_array_equal(flipped_bbox[:, [1, 3]], 64 - bbox[:, [3, 1]])


def test_build_rpn_targets_takes_matterports_arguments(tiny_config):
    from mrcnn import data

    ds = EllipseDataset(1, seed=5)
    image, _, class_ids, boxes, _ = modellib.load_image_gt(ds, tiny_config, 0)
    anchors = modellib.anchors_for_shape(tiny_config, image.shape)
    np.random.seed(0)
    match, deltas = modellib.build_rpn_targets(image.shape, anchors, class_ids, boxes,
                                               tiny_config)
    np.random.seed(0)
    expected_match, expected_deltas = data.build_rpn_targets(anchors, class_ids, boxes,
                                                             tiny_config)
    np.testing.assert_array_equal(match, expected_match)
    np.testing.assert_array_equal(deltas, expected_deltas)
    assert (match == 1).sum() > 0


def test_detect_verbose_prints_what_matterport_printed(confident, capsys):
    image, _ = ellipse_image(np.random.default_rng(1), size=64)
    confident.detect([image], verbose=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Processing 1 images"
    assert [line.split()[0] for line in out[1:5]] == ["image", "molded_images", "image_metas",
                                                      "anchors"]
    assert "shape: (64, 64, 3)" in out[1] and out[1].endswith("uint8")
    assert "shape: (1, 64, 64, 3)" in out[2] and out[2].endswith("float32")
    confident.detect([image])
    assert capsys.readouterr().out == ""


def test_mold_inputs_converts_then_normalises_with_the_configurations_hook():
    class Inverted(TinyInferenceConfig):
        def normalize_image(self, image):
            return 255 - image

    deep = np.random.default_rng(0).integers(100, 900, (50, 60)).astype(np.uint16)
    config = Inverted()
    molded, _, windows = modellib.MaskRCNN.mold_inputs(SimpleNamespace(config=config), [deep])
    y0, x0, y1, x1 = windows[0]
    expected = 255 - utils.to_rgb_uint8(deep)
    np.testing.assert_array_equal(modellib.unmold_image(molded[0], config)[y0:y1, x0:x1],
                                  expected)


def test_detect_molded_works_in_the_molded_images_pixels(confident, tiny_config):
    ds = EllipseDataset(1, seed=2, size=50)
    image, meta, *_ = modellib.load_image_gt(ds, confident.config, 0)
    assert image.shape == (64, 64, 3)                # padded from 50x50 (pad64)
    window = modellib.parse_image_meta(meta[None])["window"][0]
    r = confident.detect_molded(image[None], meta[None], verbose=0)[0]
    assert len(r["scores"]) > 0 and r["masks"].shape == (64, 64, len(r["scores"]))
    assert (r["rois"][:, 2] <= window[2]).all() and (r["rois"][:, 3] <= window[3]).all()
    # The same molded image as float (mean subtracted) gives the same detections, and they
    # are detect's on the original image, shifted by the padding.
    again = confident.detect_molded([modellib.mold_image(image, confident.config)], meta[None])
    np.testing.assert_array_equal(again[0]["rois"], r["rois"])
    direct = confident.detect([ds.load_image(0)])[0]
    assert window[0] == window[1] == 7
    np.testing.assert_array_equal(direct["rois"] + 7, r["rois"])
    np.testing.assert_allclose(direct["scores"], r["scores"], rtol=1e-6)


def test_get_layer_knows_matterports_names(confident):
    net = confident.keras_model
    roi = net.get_layer("ROI")
    assert roi.output is roi and roi.name == "ROI"
    with pytest.raises(AttributeError, match="not a Keras layer"):
        roi.weights
    mask = net.get_layer("mrcnn_mask")          # a graph node that is also a layer with weights
    assert mask.output.name == "mrcnn_mask"
    assert [w.shape for w in mask.weights] == [w.shape for w in net.mrcnn_mask.weights]
    assert net.get_layer("res2c_out").name == "res2c_out"        # inside the backbone
    assert net.get_layer("rpn_class_raw").name == "rpn_class_raw"  # inside the RPN model
    with pytest.raises(ValueError, match="No such layer: nothing"):
        net.get_layer("nothing")


def test_run_graph_gives_matterports_outputs_by_name(confident):
    config = confident.config
    net = confident.keras_model
    image, _ = ellipse_image(np.random.default_rng(4), size=64)
    pillar = net.get_layer("ROI").output
    assert confident.ancestor(pillar, "ROI/no_such_tensor:0") is None
    names = ["input_image", "res2c_out", "rpn_class", "ROI", "mrcnn_class", "mrcnn_bbox",
             "mrcnn_detection", "mrcnn_mask"]
    steps = ["pre_nms_anchors", "refined_anchors", "refined_anchors_clipped",
             "rpn_non_max_suppression"]
    outputs = [(n, net.get_layer(n).output) for n in names]
    outputs += [(s, confident.ancestor(pillar, f"ROI/{s}:0")) for s in steps]
    result = confident.run_graph([image], outputs)
    assert list(result) == names + steps
    out, facts = confident.run_stages(image)
    rois, count = config.POST_NMS_ROIS_INFERENCE, config.DETECTION_MAX_INSTANCES
    n_roi, n_det = len(out["proposals"]), len(out["detections"])
    assert 0 < n_roi <= rois and 0 < n_det < count

    np.testing.assert_array_equal(result["input_image"], facts["molded_image"][None])
    expected = confident.debug_model(["res2c_out"]).predict(facts["molded_image"][None],
                                                            verbose=0)
    np.testing.assert_allclose(result["res2c_out"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(result["rpn_class"], out["rpn_class"])
    assert result["ROI"].shape == (1, rois, 4)
    np.testing.assert_array_equal(result["ROI"][0, :n_roi], out["proposals"])
    assert result["mrcnn_class"].shape == (1, rois, config.NUM_CLASSES)
    assert result["mrcnn_bbox"].shape == (1, rois, config.NUM_CLASSES, 4)
    assert result["mrcnn_detection"].shape == (1, count, 6)
    np.testing.assert_array_equal(result["mrcnn_detection"][0, :n_det], out["detections"])
    assert not result["mrcnn_detection"][0, n_det:].any()  # matterport's padding: class id 0
    masks = result["mrcnn_mask"]
    assert masks.shape == (1, count) + tuple(config.MASK_SHAPE) + (config.NUM_CLASSES,)
    ids = out["detections"][:, 4].astype(int)
    np.testing.assert_allclose(masks[0, np.arange(n_det), :, :, ids], out["mrcnn_mask"],
                               atol=1e-5)
    # The proposal layer step by step ends where the ROI output is.
    keep = result["rpn_non_max_suppression"]
    assert result["pre_nms_anchors"].shape[1] == min(config.PRE_NMS_LIMIT,
                                                     len(facts["anchors"]))
    clipped = result["refined_anchors_clipped"][0]
    assert clipped.min() >= 0 and clipped.max() <= 1
    np.testing.assert_allclose(clipped[keep][:n_roi], out["proposals"], atol=1e-6)
    # Molded input with its metas (matterport's RPN cell) gives the same as the raw image.
    again = confident.run_graph(facts["molded_image"][None].copy(),
                                [("detections", net.get_layer("mrcnn_detection"))],
                                image_metas=facts["image_meta"][None])
    np.testing.assert_array_equal(again["detections"], result["mrcnn_detection"])
    with pytest.raises(ValueError, match="'nms' is None"):
        confident.run_graph([image], [("nms", confident.ancestor(pillar, "ROI/nothing:0"))])


@pytest.mark.backends
def test_caps_grow_with_the_image_area(confident, monkeypatch):
    """With INFERENCE_CAP_PIXELS the proposal and detection caps are per that many pixels
    (rounded up to a quarter, never below the configured ones); without it, per image."""
    from mrcnn.network import CAP_NAMES, cap_factor, scaled_caps

    config = confident.config
    assert config.INFERENCE_CAP_PIXELS is None and cap_factor(config, 4000, 4000) == 1
    assert scaled_caps(config, 4000, 4000) is config
    monkeypatch.setattr(config, "INFERENCE_CAP_PIXELS", 64 * 64)
    monkeypatch.setattr(config, "POST_NMS_ROIS_INFERENCE", 10)
    monkeypatch.setattr(confident.keras_model, "_infer_fns", {})   # compiled with other caps
    assert [cap_factor(config, *shape) for shape in [(32, 32), (64, 64), (64, 65), (96, 96),
                                                     (128, 128)]] == [1, 1, 1.25, 2.25, 4]
    scaled = scaled_caps(config, 96, 96)
    assert [getattr(scaled, n) for n in CAP_NAMES] == [
        int(np.ceil(getattr(config, n) * 2.25)) for n in CAP_NAMES]
    assert config.POST_NMS_ROIS_INFERENCE == 10           # the model's own left as it was
    image = np.random.default_rng(4).integers(0, 255, (128, 128, 3)).astype(np.uint8)
    small, _ = confident.run_stages(image[:64, :64])
    big, _ = confident.run_stages(image)
    assert len(small["proposals"]) == 10 and len(big["proposals"]) == 40
    # with a floor, a smaller input gets fewer, down to that share (rounded up to a quarter)
    monkeypatch.setattr(config, "INFERENCE_CAP_FLOOR", 0.5)
    assert [cap_factor(config, *shape) for shape in [(16, 16), (32, 32), (48, 48), (64, 64),
                                                     (96, 96)]] == [0.5, 0.5, 0.75, 1, 2.25]
    assert scaled_caps(config, 32, 32).POST_NMS_ROIS_INFERENCE == 5
    monkeypatch.setattr(config, "INFERENCE_CAP_PIXELS", 128 * 128)  # 64 x 64: a quarter
    monkeypatch.setattr(confident.keras_model, "_infer_fns", {})   # JAX: traced per shape
    tiny, _ = confident.run_stages(image[:64, :64])
    assert len(tiny["proposals"]) == 5


@pytest.mark.backends
def test_the_mask_head_in_batches_gives_the_same_masks(confident, monkeypatch):
    """Detections go through the mask head DETECTION_MASK_BATCH at a time (memory flat
    however many there are): each mask is its own crop's, so the batches change nothing."""
    image, _ = ellipse_image(np.random.default_rng(2), size=128)
    whole, _ = confident.run_stages(image)
    count = len(whole["detections"])
    assert count > 5 and whole["mrcnn_mask"].shape == (count, 28, 28)
    monkeypatch.setattr(confident.config, "DETECTION_MASK_BATCH", 3)
    batched, _ = confident.run_stages(image)
    np.testing.assert_array_equal(batched["detections"], whole["detections"])
    np.testing.assert_allclose(batched["mrcnn_mask"], whole["mrcnn_mask"], atol=1e-6)


# ----------------------------------------------------------------------------- folding
@pytest.mark.backends
def test_folded_batch_norms_detect_the_same(tmp_path):
    """Folding every BatchNorm into its convolution changes no output beyond float rounding
    (on BatchNorm statistics far from the identity), is done once, and leaves a model that
    refuses to load or save weights, whose values no longer mean what the file's do."""
    from conftest import TinyInferenceConfig
    from seeded_weights import set_detecting_weights

    model = modellib.MaskRCNN("inference", TinyInferenceConfig(), str(tmp_path))
    net = model.keras_model
    set_detecting_weights(net, 3)
    rng = np.random.default_rng(5)
    batch_norms = net._batch_norm_layers()
    for bn in batch_norms:
        gamma, beta, mean, variance = bn.get_weights()
        bn.set_weights([rng.uniform(0.8, 1.2, gamma.shape).astype(np.float32),
                        rng.normal(0, 0.05, beta.shape).astype(np.float32),
                        rng.normal(0, 0.05, mean.shape).astype(np.float32),
                        rng.uniform(0.8, 1.25, variance.shape).astype(np.float32)])
    image, _ = ellipse_image(np.random.default_rng(0), size=64)
    molded = model.mold_inputs([image])[0][0][None].astype(np.float32)
    pyramid = [np.asarray(p) for p in net.features(molded, False)]
    before = model.run_stages(image)[0]
    assert model.fold_batch_norms() == len(batch_norms) > 50
    after = model.run_stages(image)[0]
    for level, (old, new) in enumerate(zip(pyramid, net.features(molded, False)), start=2):
        np.testing.assert_allclose(np.asarray(new), old, rtol=1e-4,
                                   atol=1e-4 * np.abs(old).max(), err_msg=f"P{level}")
    for key in ("rpn_class", "rpn_bbox"):
        np.testing.assert_allclose(after[key], before[key], atol=1e-4, err_msg=key)
    # The detections come from sorting and NMS, where the near ties of an untrained network
    # may fall either way: all but two are the same boxes with the same scores.
    found, same = before["detections"], 0
    assert len(found) > 10
    for row in after["detections"]:
        same += bool(np.any(np.all(np.abs(found - row) < 1e-3, axis=1)))
    assert same >= len(found) - 2 and abs(len(after["detections"]) - len(found)) <= 2
    assert model.fold_batch_norms() == 0                 # nothing left to fold
    with pytest.raises(ValueError, match="folded"):
        model.save_weights(str(tmp_path / "folded.h5"))
    with pytest.raises(ValueError, match="folded"):
        model.load_weights(str(tmp_path / "any.h5"))
    assert not (tmp_path / "folded.h5").exists()


def test_batch_norms_fold_only_at_inference(training_model):
    with pytest.raises(ValueError, match="inference"):
        training_model.fold_batch_norms()
    assert not any(bn.folded for bn in training_model.keras_model._batch_norm_layers())


def test_a_batch_norm_folds_into_its_own_convolution_only():
    from mrcnn.backbone import BatchNorm
    from mrcnn.network import conv_of_batch_norm

    assert conv_of_batch_norm("bn_conv1") == "conv1"
    assert conv_of_batch_norm("bn4a_branch2b") == "res4a_branch2b"
    assert conv_of_batch_norm("mrcnn_mask_bn3") == "mrcnn_mask_conv3"
    assert conv_of_batch_norm("mrcnn_class_bn1") == "mrcnn_class_conv1"
    with pytest.raises(ValueError, match="fpn_p2"):
        conv_of_batch_norm("fpn_p2")
    bn = BatchNorm(name="bn_x")
    bn.build((None, 4, 4, 3))
    no_bias = keras.layers.Conv2D(3, 1, use_bias=False)
    no_bias.build((None, 4, 4, 2))
    with pytest.raises(ValueError, match="no bias"):
        bn.fold_into(no_bias)
    wider = keras.layers.Conv2D(5, 1)
    wider.build((None, 4, 4, 2))
    with pytest.raises(ValueError, match="3 channels"):
        bn.fold_into(wider)
    conv = keras.layers.Conv2D(3, 1)
    conv.build((None, 4, 4, 2))
    x = np.random.default_rng(1).normal(size=(1, 4, 4, 2)).astype(np.float32)
    bn.set_weights([np.array([0.5, 2.0, 1.0], np.float32), np.array([0.1, -0.2, 0.3], np.float32),
                    np.array([1.0, 0.0, -1.0], np.float32), np.array([4.0, 1.0, 0.25], np.float32)])
    expected = np.asarray(bn(conv(x), training=False))
    bn.fold_into(conv)
    np.testing.assert_allclose(np.asarray(bn(conv(x), training=False)), expected, atol=1e-5)
    with pytest.raises(ValueError, match="already folded"):
        bn.fold_into(conv)
