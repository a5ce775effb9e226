"""The one detector interface (nucleus/inference/detectors.py): preparing images, overlaps, TTA,
building."""
from __future__ import annotations

import numpy as np
import pytest

from nucleus.dataset import load_subset
from nucleus.errors import InputError
from nucleus.formats.image_io import normalize_image
from nucleus.inference.detectors import Detector, raw_detections, returns_crop_sized
from nucleus.inference.nucleus_model import SHIPPED_WEIGHTS, NucleusModel, make_detector


def _square(shape, y0, x0, y1, x1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


class Spy:
    """A raw detector that records the images it is given and returns two overlapping masks."""

    def __init__(self):
        self.seen = []

    def __call__(self, image):
        self.seen.append(image.copy())
        shape = image.shape[:2]
        masks = np.stack([_square(shape, 2, 2, 6, 6), _square(shape, 4, 4, 12, 12)], axis=-1)
        return masks, np.array([0.9, 0.7], np.float32)


def test_overlaps_go_to_the_biggest_mask_and_scores_follow():
    spy = Spy()
    masks, scores = Detector(spy)(np.zeros((16, 16, 3), np.uint8))
    assert masks.shape == (16, 16, 2) and scores.tolist() == pytest.approx([0.9, 0.7])
    assert not (masks[..., 0] & masks[..., 1]).any()
    assert masks[..., 1].sum() == 64 and masks[..., 0].sum() == 16 - 4


def test_prepare_converts_then_normalises_once():
    rng = np.random.default_rng(0)
    deep = rng.integers(200, 3000, (32, 40)).astype(np.uint16)
    spy = Spy()
    detector = Detector(spy, normalization="stretch")
    prepared = detector.prepare(deep)
    assert prepared.shape == (32, 40, 3) and prepared.dtype == np.uint8
    detector(deep)
    np.testing.assert_array_equal(spy.seen[-1], prepared)
    # detect_prepared takes the image as it is: tiles of one image share one intensity scale.
    tile = prepared[:16, :16]
    detector.detect_prepared(tile)
    np.testing.assert_array_equal(spy.seen[-1], tile)
    # uint8 RGB is normalised as the model's configuration would do it.
    rgb = rng.integers(0, 60, (32, 40, 3)).astype(np.uint8)
    np.testing.assert_array_equal(detector.prepare(rgb), normalize_image(rgb, "stretch"))
    np.testing.assert_array_equal(Detector(spy).prepare(rgb), rgb)


def test_tta_runs_the_four_flips_of_the_prepared_image():
    spy = Spy()
    image = np.random.default_rng(1).integers(0, 255, (16, 20, 3)).astype(np.uint8)
    masks, scores = Detector(spy, tta=True)(image)
    assert len(spy.seen) == 4
    np.testing.assert_array_equal(spy.seen[1], image[:, ::-1])
    np.testing.assert_array_equal(spy.seen[2], image[::-1])
    # The spy's masks do not follow the flips, so only the ones the flips agree on survive.
    assert masks.shape[:2] == (16, 20) and len(scores) == masks.shape[2]


def test_bad_models_and_weights(tmp_path):
    with pytest.raises(InputError, match="unknown model 'unet'"):
        make_detector("unet")
    with pytest.raises(InputError, match="missing.h5: weights file not found"):
        make_detector("mrcnn", str(tmp_path / "missing.h5"))
    with pytest.raises(InputError, match="no FCN checkpoint found"):
        make_detector("fcn", None, logs=tmp_path)


def test_shipped_model_gives_what_the_network_gave_when_it_normalised_itself(tmp_path):
    """The detector normalises whole images itself; the result is the same as before, when
    the network's configuration did it inside ``detect``."""
    from mrcnn import model as modellib
    from nucleus.inference.nucleus_model import config_from_weights

    # masks as the network draws them (the boundary stage has its own tests)
    detector = make_detector("mrcnn", logs=tmp_path, overrides={"MASK_GROWTH_REACH": 0})
    assert detector.normalization == "stretch" and not detector.tta and detector.grow == 0
    assert make_detector("mrcnn", logs=tmp_path).grow == 1      # the CPU profile's default
    weights = SHIPPED_WEIGHTS
    config = config_from_weights(weights, inference=True)
    assert config.IMAGE_NORMALIZATION == "stretch"
    network = modellib.MaskRCNN("inference", config, str(tmp_path))
    network.load_weights(weights, by_name=True)
    network.fold_batch_norms()              # as make_detector does: the same rounding
    ds = load_subset(None, "val", limit=2)
    for image_id in ds.image_ids:
        image = ds.load_image(image_id)
        masks, scores = detector(image)
        # the network normalises the image itself; the detector only removes overlaps
        old_masks, old_scores = Detector(lambda im: raw_detections(network, im)).detect_prepared(
            image)
        assert masks.shape[2] > 3
        np.testing.assert_array_equal(masks, old_masks)
        np.testing.assert_array_equal(scores, old_scores)


def test_a_model_trained_at_one_nucleus_size_detects_at_its_scale_by_default(tmp_path):
    """A weights file whose configuration holds OBJECT_DIAMETER gets "auto" scale towards that
    diameter unless the caller picks a scale; a file without it runs whole images at its
    profile's INFERENCE_SCALE ("probe" for the CPU profile) and tiles at native resolution."""
    import json
    import shutil

    import h5py

    sized = tmp_path / "sized.h5"
    shutil.copy(SHIPPED_WEIGHTS, sized)
    with h5py.File(sized, "r+") as f:
        config = json.loads(f.attrs["mrcnn_config"])
        config["OBJECT_DIAMETER"] = 24.0
        f.attrs["mrcnn_config"] = json.dumps(config)
        plain = tmp_path / "plain.h5"
    shutil.copy(sized, plain)
    with h5py.File(plain, "r+") as f:
        config.pop("OBJECT_DIAMETER")
        f.attrs["mrcnn_config"] = json.dumps(config)
    detector = make_detector("mrcnn", str(sized), logs=tmp_path)
    assert detector.scale == "auto" and detector.diameter == 24.0
    assert make_detector("mrcnn", str(sized), logs=tmp_path, scale=1.0).scale == 1.0
    whole = make_detector("mrcnn", str(plain), logs=tmp_path)
    assert whole.scale == "probe" and whole.diameter is None
    native = make_detector("mrcnn", str(plain), logs=tmp_path, tiled=True)
    assert native.scale == 1.0 and native.diameter is None
    # a one-size model keeps "auto" for tiles too; the study profile runs whole images at 1
    assert make_detector("mrcnn", str(sized), logs=tmp_path, tiled=True).scale == "auto"
    assert NucleusModel.load(str(plain), profile="study").default_scale() == 1.0
    # the model object tells, without a network, what these detectors say (crop-sized masks
    # only at scale 1); "last" is looked up under the logs given, as make_detector does.
    at_one = make_detector("mrcnn", str(sized), logs=tmp_path, scale=1.0)
    assert (detector.crop_sized, at_one.crop_sized, native.crop_sized, whole.crop_sized) == (
        False, True, True, False)
    assert NucleusModel.load(str(sized)).crop_sized() is False
    assert NucleusModel.load(str(sized)).crop_sized(scale=1.0) is True
    assert NucleusModel.load(str(plain)).crop_sized() is False
    assert NucleusModel.load(str(plain)).crop_sized(tiled=True) is True
    run = tmp_path / "runs" / "nucleus20260101T1200"
    run.mkdir(parents=True)
    shutil.copy(plain, run / "mask_rcnn_nucleus_0001.h5")
    assert NucleusModel.load("last", logs=tmp_path / "runs").crop_sized(tiled=True) is True
    # the auto factor aims at the model's diameter and is reported
    image = load_subset(None, "val", limit=1).load_image(0)
    detector(image)
    measured, factor = detector.last_scale
    assert measured is not None and measured > 0
    assert factor == 1.0 or factor == pytest.approx(min(max(24.0 / measured, 0.25), 4.0))


def test_probe_scale_is_a_detector_choice_and_reports_its_factor():
    spy = Spy()
    detector = Detector(spy, scale="probe")
    masks, scores = detector(np.zeros((32, 32, 3), np.uint8))
    # the spy's nuclei are 5-9 px across: halving them would go below the smallest training
    # size (8.5 px), so only native runs (the other factors: tests/test_scales.py)
    assert [s.shape[:2] for s in spy.seen] == [(32, 32)]
    assert detector.last_scale == (None, 1.0)
    assert masks.shape[:2] == (32, 32) and len(scores) == masks.shape[2]
    with pytest.raises(InputError, match="'auto' or 'probe'"):
        Detector(spy, scale="sometimes")


def test_detect_instances_takes_the_sparse_call_only_where_it_gives_the_same():
    """At scale 1 without TTA a detector with ``detect_sparse`` returns its crop-sized nuclei
    (shifted by the offset); with TTA or another scale it goes through the full-size path.
    Both give what :meth:`Detector.detect_prepared` gives, empty masks left out."""
    from nucleus.inference.tiling import instances_of

    calls = []

    def sparse(image):
        calls.append(image.shape)
        masks, scores = Detector(Spy()).detect_prepared(image)
        found = instances_of(masks, scores)
        return (np.array([i.box for i in found]), [i.mask for i in found],
                np.array([i.score for i in found]))

    image = np.zeros((16, 16, 3), np.uint8)
    plain = Detector(Spy(), detect_sparse=sparse)
    got = plain.detect_instances(image, offset=(100, 200))
    want = instances_of(*Detector(Spy()).detect_prepared(image), (100, 200))
    assert calls == [(16, 16, 3)] and len(got) == len(want) == 2
    for a, b in zip(got, want):
        assert a.box == b.box and a.score == pytest.approx(b.score)
        np.testing.assert_array_equal(a.mask, b.mask)
    for other in (Detector(Spy(), tta=True, detect_sparse=sparse),
                  Detector(Spy(), scale=0.5, detect_sparse=sparse)):
        want = instances_of(*other.detect_prepared(image))
        got = other.detect_instances(image)
        assert [i.box for i in got] == [i.box for i in want] and len(got) > 0
    assert len(calls) == 1                   # neither used the sparse call


def test_the_crop_sized_rule():
    """Crop-sized masks need the sparse call, scale 1 (a number), no TTA and no scale vote."""
    assert returns_crop_sized(True) and returns_crop_sized(True, scale=1)
    assert not returns_crop_sized(False)
    assert not returns_crop_sized(True, tta=True)
    assert not returns_crop_sized(True, scale=0.5)
    assert not returns_crop_sized(True, scale="auto")
    assert not returns_crop_sized(True, scale="probe")
    assert not returns_crop_sized(True, scales=(1.0, 0.5))
