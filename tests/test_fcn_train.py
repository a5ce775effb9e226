"""FCN training on synthetic bright disks: it learns, checkpoints, resumes, evaluates, detects."""
from __future__ import annotations

import csv
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from mrcnn.utils import Dataset
from nucleus.errors import InputError
from nucleus.fcn import model as fcn_model
from nucleus.fcn.model import VGG_MEAN_BGR, predict_foreground
from nucleus.fcn.detector import FCNDetector, find_last
from nucleus.fcn.opening import label_by_opening
from nucleus.fcn.train import (evaluate_fcn, make_crop_dataset, merged_foreground, random_crop,
                               train_fcn, tune_radius)
from nucleus.inference.nucleus_model import NucleusModel
from nucleus.scoring.metric import image_score

FC_WIDTH = 16
EPOCHS = 4


class Disks(Dataset):
    """Bright non-touching disks on a dark noisy background, one instance mask each."""

    def __init__(self, n: int, size: int, seed: int, radii: tuple[float, float] = (6, 12)):
        super().__init__()
        self.add_class("disks", 1, "disk")
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[:size, :size]
        self.items = []
        for i in range(n):
            masks = []
            for _ in range(6):
                r = rng.uniform(*radii)
                cy, cx = rng.uniform(r, size - r, 2)
                disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                grown = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 2) ** 2
                if not masks or not np.any(np.any(masks, axis=0) & grown):
                    masks.append(disk)
            masks = np.stack(masks, axis=-1)
            image = np.full((size, size, 3), 25.0)
            image[masks.any(axis=-1)] = 190.0
            image = np.clip(image + rng.normal(0, 10, image.shape), 0, 255).astype(np.uint8)
            self.items.append((image, masks))
            self.add_image("disks", i, None)
        self.prepare()

    def load_image(self, image_id):
        return self.items[image_id][0]

    def load_mask(self, image_id):
        masks = self.items[image_id][1]
        return masks, np.ones(masks.shape[-1], np.int32)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    logs = tmp_path_factory.mktemp("logs")
    keras.utils.set_random_seed(0)
    train, val = Disks(8, 96, seed=0, radii=(10, 18)), Disks(4, 96, seed=1, radii=(10, 18))
    # From scratch, 1e-5 (the fine-tuning default) would take far too long: use 2e-4.
    result = train_fcn(train, val, logs, weights=None, epochs=EPOCHS, steps_per_epoch=12,
                       learning_rate=2e-4, augment=True, crop_size=64, batch_size=4, radius=1,
                       eval_every=2, fc_width=FC_WIDTH, seed=0, verbose=0)
    return result, logs, train, val


def test_training_from_scratch_learns_the_foreground(trained):
    result, logs, _, _ = trained
    run_dir = result["run_dir"]
    assert run_dir.parent == logs and run_dir.name.startswith("fcn")
    assert result["epoch"] == EPOCHS
    assert result["checkpoint"] == run_dir / f"fcn_{EPOCHS:04d}.weights.h5"
    files = sorted(f.name for f in run_dir.iterdir())
    checkpoints = [f"fcn_{e:04d}.weights.h5" for e in range(1, EPOCHS + 1)]
    assert files == checkpoints + ["history.csv", "val_map.csv"], files  # no temporary file

    losses = read_csv(run_dir / "history.csv")      # epochs from 0, as Keras's CSVLogger
    assert [int(r["epoch"]) for r in losses] == list(range(EPOCHS))
    assert float(losses[-1]["loss"]) < float(losses[0]["loss"])

    val = read_csv(run_dir / "val_map.csv")
    assert [int(r["epoch"]) for r in val] == [2, 4]  # every 2 epochs
    assert list(val[0]) == ["epoch", "pixel_iou", "map"]
    assert float(val[-1]["pixel_iou"]) > 0.8
    assert result["val_metrics"][-1]["pixel_iou"] == pytest.approx(float(val[-1]["pixel_iou"]))


def direct_scores(model, dataset, radius: int) -> dict[str, float]:
    """Pixel IoU and mAP computed from the network's foreground and the opening directly, as
    validation computed them before it went through the model object's detector."""
    intersection = union = 0
    scores = []
    for image_id in dataset.image_ids:
        truth = dataset.load_mask(image_id)[0]
        predicted = predict_foreground(model, dataset.load_image(image_id)) > 0.5
        intersection += int((truth.any(axis=-1) & predicted).sum())
        union += int((truth.any(axis=-1) | predicted).sum())
        scores.append(image_score(truth, label_by_opening(predicted, radius)).score)
    return {"pixel_iou": intersection / union, "map": float(np.mean(scores))}


def test_evaluate_and_detect(trained):
    result, _, _, val = trained
    model = result["model"]
    metrics = evaluate_fcn(NucleusModel.of_fcn_training().detector_of(model, radius=1), val)
    assert set(metrics) == {"pixel_iou", "map"}
    assert metrics["pixel_iou"] > 0.8
    assert metrics["map"] > 0.3  # separated disks: the instances follow the foreground
    assert metrics == pytest.approx(direct_scores(model, val, radius=1), abs=1e-12)
    assert metrics["map"] != direct_scores(model, val, radius=8)["map"]   # the radius counts

    image = val.load_image(0)
    (r,) = FCNDetector(model, radius=1).detect([image])
    masks, scores = r["masks"], r["scores"]
    n = masks.shape[-1]
    assert masks.dtype == bool and masks.shape[:2] == image.shape[:2] and n >= 1
    assert masks.sum(axis=-1).max() <= 1
    assert scores.shape == (n,) and np.all(scores > 0.5) and np.all(scores <= 1)
    assert np.all(np.diff(scores) <= 0)
    assert r["rois"].shape == (n, 4) and np.all(r["class_ids"] == 1)
    for k in range(n):
        ys, xs = np.nonzero(masks[..., k])
        assert tuple(r["rois"][k]) == (ys.min(), xs.min(), ys.max() + 1, xs.max() + 1)
    with pytest.raises(ValueError):
        FCNDetector(model).detect(image)
    masks2, scores2 = FCNDetector(model, radius=1).detect_with_scores(image)
    np.testing.assert_array_equal(masks2, masks)
    np.testing.assert_array_equal(scores2, scores)

    best, scores_by_radius = tune_radius(NucleusModel.of_fcn_training().detector_of(model),
                                         val, radii=[2, 0, 1])
    assert set(scores_by_radius) == {0, 1, 2}
    assert best == min(r for r, s in scores_by_radius.items()   # the best, the smallest of ties
                       if s == max(scores_by_radius.values()))
    assert scores_by_radius[1] == pytest.approx(metrics["map"])  # the same score as evaluate's


def test_validation_scores_the_detector_the_model_object_builds(trained, tmp_path, monkeypatch):
    """Training validates through NucleusModel.detector_of around the network it trains, so its
    numbers are those evaluate_fcn gives that detector (and evaluate, segment, its checkpoint)."""
    _, _, train, val = trained
    built = []
    real = NucleusModel.detector_of

    def spy(self, network, *args, **kwargs):
        built.append((self, network, kwargs))
        return real(self, network, *args, **kwargs)

    monkeypatch.setattr(NucleusModel, "detector_of", spy)
    keras.utils.set_random_seed(1)
    result = train_fcn(train, val, tmp_path, weights=None, epochs=1, steps_per_epoch=2,
                       learning_rate=2e-4, augment=False, crop_size=64, batch_size=2, radius=3,
                       min_size=5, fc_width=FC_WIDTH, seed=1, verbose=0)
    ((validation, network, kwargs),) = built
    assert validation.kind == "fcn" and validation.weights is None
    assert network is result["model"] and kwargs == {"radius": 3, "min_size": 5}
    (row,) = read_csv(result["run_dir"] / "val_map.csv")
    again = evaluate_fcn(real(validation, network, radius=3, min_size=5), val)
    assert float(row["pixel_iou"]) == pytest.approx(again["pixel_iou"], abs=1e-12)
    assert float(row["map"]) == pytest.approx(again["map"], abs=1e-12)


def test_a_checkpoints_detector_is_the_validation_detector(trained, monkeypatch):
    """NucleusModel.load(checkpoint, kind="fcn").detector() finds what validation's detector
    around the same weights finds."""
    result, _, _, val = trained
    real_load = fcn_model.load_fcn
    monkeypatch.setattr(fcn_model, "load_fcn",   # the tests' FCN is narrower than the paper's
                        lambda weights: real_load(weights, fc_width=FC_WIDTH))
    loaded = NucleusModel.load(result["checkpoint"], kind="fcn")
    assert loaded.epoch == EPOCHS and loaded.run_folder.path == str(result["run_dir"])
    detector = loaded.detector(radius=1)
    assert detector.name == "FCN-8s" and detector.detect.radius == 1
    validation = NucleusModel.of_fcn_training().detector_of(result["model"], radius=1)
    for image_id in val.image_ids:
        masks, scores = detector(val.load_image(image_id))
        same_masks, same_scores = validation(val.load_image(image_id))
        assert masks.shape[-1] >= 1
        np.testing.assert_array_equal(masks, same_masks)
        np.testing.assert_allclose(scores, same_scores, rtol=1e-6)
    assert evaluate_fcn(detector, val) == pytest.approx(evaluate_fcn(validation, val))


def test_evaluation_takes_an_fcn_detector_on_images_as_they_are(trained):
    result, _, _, val = trained
    model = NucleusModel.of_fcn_training()
    with pytest.raises(ValueError, match="without TTA"):
        evaluate_fcn(model.detector_of(result["model"], tta=True), val)
    with pytest.raises(ValueError, match="without TTA"):
        tune_radius(model.detector_of(result["model"], scale=0.5), val)
    from nucleus.inference.detectors import Detector

    with pytest.raises(ValueError, match="not an FCN"):
        evaluate_fcn(Detector(lambda image: (np.zeros(image.shape[:2] + (0,), bool),
                                             np.zeros(0))), val)


def test_resume_from_last_checkpoint(trained):
    result, logs, train, val = trained
    found = find_last(logs)
    assert found == (result["run_dir"] / f"fcn_{EPOCHS:04d}.weights.h5", EPOCHS)

    done = train_fcn(train, val, logs, weights="last", epochs=EPOCHS, fc_width=FC_WIDTH,
                     verbose=0)
    assert done["epoch"] == EPOCHS and done["run_dir"] == result["run_dir"]

    more = train_fcn(train, None, logs, weights="last", epochs=EPOCHS + 1, steps_per_epoch=1,
                     learning_rate=1e-4, augment=False, crop_size=64, batch_size=2,
                     fc_width=FC_WIDTH, verbose=0)
    assert more["run_dir"] == result["run_dir"] and more["epoch"] == EPOCHS + 1
    assert (result["run_dir"] / f"fcn_{EPOCHS + 1:04d}.weights.h5").is_file()
    epochs = [int(r["epoch"]) for r in read_csv(result["run_dir"] / "history.csv")]
    assert epochs == list(range(EPOCHS + 1))
    assert find_last(logs)[1] == EPOCHS + 1


def test_bad_weights(tmp_path, trained):
    result, _, train, _ = trained
    assert find_last(tmp_path) is None
    with pytest.raises(InputError, match="no FCN checkpoint"):
        train_fcn(train, None, tmp_path, weights="last", epochs=1, fc_width=FC_WIDTH)
    checkpoint = result["run_dir"] / "fcn_0001.weights.h5"
    with pytest.raises(InputError, match="fcn_0001.weights.h5"):
        train_fcn(train, None, tmp_path, weights=checkpoint, epochs=1, fc_width=FC_WIDTH * 2)
    with pytest.raises(ValueError, match="multiple of 32"):
        train_fcn(train, None, tmp_path, weights=None, epochs=1, crop_size=50,
                  fc_width=FC_WIDTH)


def test_random_crop_pads_small_images():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (40, 50, 3), dtype=np.uint8)
    foreground = rng.random((40, 50)) > 0.5
    crop, fg = random_crop(image, foreground, 64, rng)
    assert crop.shape == (64, 64, 3) and fg.shape == (64, 64)
    np.testing.assert_array_equal(crop[:40, :50], image)
    np.testing.assert_array_equal(fg[:40, :50], foreground)
    assert not crop[40:].any() and not fg[:, 50:].any()
    big = rng.integers(0, 256, (100, 90, 3), dtype=np.uint8)
    crop, fg = random_crop(big, big[..., 0] > 128, 32, rng)
    assert crop.shape == (32, 32, 3)
    np.testing.assert_array_equal(fg, crop[..., 0] > 128)  # image and target cut alike


def test_crop_batches_keep_image_and_target_aligned_under_augmentation():
    from nucleus.training.augment import build_augmentation

    data = Disks(3, 64, seed=5)
    assert merged_foreground(data, 0).shape == (64, 64)
    crops = make_crop_dataset(data, batch_size=3, crop_size=32, steps=4,
                              augmenter=build_augmentation(), seed=1, workers=2)
    assert len(crops) == 4
    seen = []
    for index in range(len(crops)):
        x, y = crops[index]
        assert x.shape == (3, 32, 32, 3) and x.dtype == np.float32
        assert y.shape == (3, 32, 32) and set(np.unique(y)) <= {0, 1}
        grey = (x + VGG_MEAN_BGR).mean(axis=-1)  # back to pixel values
        if y.any() and (~y.astype(bool)).any():
            assert grey[y == 1].mean() > grey[y == 0].mean() + 80
        seen.append(x)
    assert not np.array_equal(crops[0][0], seen[0])  # every request draws new crops
