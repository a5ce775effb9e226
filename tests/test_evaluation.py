"""nucleus.scoring.evaluation: dataset mAP with stand-in detectors, and the validation-mAP callback.

The detectors here are plain functions over the ground truth, so the expected scores are known
exactly and no network is built.
"""
from __future__ import annotations

import csv
import types

import h5py
import numpy as np
import pytest

from mrcnn.weights import config_attrs
from nucleus.config import make_config
from nucleus.inference.nucleus_model import NucleusModel, make_detector
from nucleus.scoring.evaluation import (VAL_MAP_COLUMNS, Evaluation, MapCallback,
                                        append_val_map_row, evaluate_dataset)
from nucleus.scoring.metric import ImageScore
from synthetic import EllipseDataset


@pytest.fixture(scope="module")
def dataset() -> EllipseDataset:
    return EllipseDataset(5, seed=11)


def _truth_lookup(dataset):
    """detect(image) -> the image's own ground-truth masks, score 1 each."""
    truth = {}
    for image_id in dataset.image_ids:
        masks, _ = dataset.load_mask(image_id)
        truth[dataset.load_image(image_id).tobytes()] = masks

    def detect(image):
        masks = truth[image.tobytes()]
        return masks, np.ones(masks.shape[-1])
    return detect


def test_ground_truth_scores_one(dataset):
    seen = []
    result = evaluate_dataset(_truth_lookup(dataset), dataset, progress=False,
                              on_image=lambda image_id, image, gt, pred, scores, s:
                              seen.append((image_id, s.score, gt.shape == pred.shape)))
    assert isinstance(result, Evaluation)
    assert result.map == 1.0
    assert [s.score for s in result.scores] == [1.0] * 5
    np.testing.assert_array_equal(result.precisions, np.ones(10))
    assert result.precision_at(0.5) == 1.0 and result.precision_at(0.95) == 1.0
    n_true = np.mean([dataset.load_mask(i)[0].shape[-1] for i in dataset.image_ids])
    assert result.mean_counts(0.5) == (pytest.approx(n_true), 0.0, 0.0)
    assert result.image_ids == [dataset.image_info[i]["id"] for i in dataset.image_ids]
    assert seen == [(i, 1.0, True) for i in dataset.image_ids]
    assert result.seconds_per_image >= 0


def test_no_detections_score_zero_and_limit(dataset):
    def nothing(image):
        return np.zeros(image.shape[:2] + (0,), bool), np.zeros(0)

    result = evaluate_dataset(nothing, dataset, limit=2, progress=False)
    assert result.map == 0.0
    assert len(result.scores) == 2 and len(result.image_ids) == 2
    tp, fp, fn = result.mean_counts(0.5)
    assert tp == 0 and fp == 0 and fn > 0


def test_half_the_objects_found(dataset):
    """One image, only its first object detected: precision 1/n at every threshold."""
    detect_all = _truth_lookup(dataset)
    masks, _ = dataset.load_mask(0)
    n = masks.shape[-1]
    assert n >= 2, "the seed must give an image with several ellipses"

    def first_only(image):
        found, scores = detect_all(image)
        return found[..., :1], scores[:1]

    result = evaluate_dataset(first_only, dataset, limit=1, progress=False)
    assert result.map == pytest.approx(1 / n)
    assert result.mean_counts(0.5) == (1.0, 0.0, n - 1.0)


class _KindedDataset(EllipseDataset):
    """The ellipse images, the odd ones turned into dark-on-light (bright-field) images."""

    def load_image(self, image_id):
        image = super().load_image(image_id)
        return 255 - image if image_id % 2 else image


def test_scores_by_image_kind():
    dataset = _KindedDataset(5, seed=11)
    truth = _truth_lookup(EllipseDataset(5, seed=11))
    reads = []

    def found_on_fluorescence_only(image):
        reads.append(1)
        if image.mean() > 127:   # bright-field: nothing found
            return np.zeros(image.shape[:2] + (0,), bool), np.zeros(0)
        return truth(image)

    result = evaluate_dataset(found_on_fluorescence_only, dataset, progress=False)
    assert result.kinds == ["fluorescence", "brightfield"] * 2 + ["fluorescence"]
    assert result.by_kind() == {"fluorescence": (3, 1.0), "brightfield": (2, 0.0)}
    assert result.map == pytest.approx(3 / 5)
    # The kinds are kept in image_info (nucleus.kinds.dataset_kinds reads them from there).
    assert [info["kind"] for info in dataset.image_info] == result.kinds
    assert evaluate_dataset(found_on_fluorescence_only, dataset, limit=2,
                            progress=False).by_kind() == {"fluorescence": (1, 1.0),
                                                          "brightfield": (1, 0.0)}


def test_by_kind_lists_kinds_in_a_fixed_order_and_means_per_kind():
    def score(value):
        return ImageScore(value, np.zeros(10), np.zeros(10), np.zeros(10), np.zeros(10))

    result = Evaluation(0.5, ["a", "b", "c", "d"], [score(0.2), score(0.9), score(0.4),
                                                      score(0.5)],
                        kinds=["colour", "fluorescence", "colour", "brightfield"])
    assert list(result.by_kind()) == ["fluorescence", "brightfield", "colour"]
    assert result.by_kind()["colour"] == (2, pytest.approx(0.3))
    assert Evaluation(0.0).by_kind() == {}


# ----------------------------------------------------------------------------- callback
class _FakeKerasModel:
    def __init__(self, weights):
        self.weights = weights

    def get_weights(self):
        return list(self.weights)

    def set_weights(self, weights):
        self.weights = list(weights)


def stand_in_model(network, training_config=None) -> NucleusModel:
    """A training run's validation model (:meth:`NucleusModel.of_training`) whose network is
    ``network``, a stand-in with ``detect``: no TensorFlow model is built."""
    class StandIn(NucleusModel):
        def network(self):
            return network

    return StandIn.of_training(training_config or make_config("study"))


def stand_in_network(detect=None):
    """A network with Mask R-CNN's ``detect`` (``detect(image) -> (masks, scores)``)."""
    def model_detect(images, verbose=0):
        masks, scores = detect(images[0])
        return [{"masks": masks, "scores": scores}]

    return types.SimpleNamespace(keras_model=_FakeKerasModel([]), detect=model_detect,
                                 detect_instances=None)


def test_due_every_ten_from_five():
    callback = MapCallback(None, stand_in_model(stand_in_network()), None, every=10, first=5)
    due = [epoch for epoch in range(1, 60) if callback.due(epoch)]
    assert due == [5, 15, 25, 35, 45, 55]
    every_epoch = MapCallback(None, stand_in_model(stand_in_network()), None, every=1, first=1)
    assert all(every_epoch.due(e) for e in range(1, 5))
    assert not every_epoch.due(0)


@pytest.mark.backends
def test_callback_writes_val_map_csv_at_due_epochs(dataset, tmp_path):
    detect = _truth_lookup(dataset)
    training_model = types.SimpleNamespace(keras_model=_FakeKerasModel([1, 2]),
                                           log_dir=str(tmp_path))

    inference_model = stand_in_network(detect)
    # the study's profile: no normalisation, native scale, so the images reach ``detect`` as
    # the dataset holds them
    callback = MapCallback(training_model, stand_in_model(inference_model), dataset, every=10,
                           first=5, limit=3)
    logs_by_epoch = {}
    for index in range(16):  # Keras passes 0-based epoch indices
        logs_by_epoch[index + 1] = logs = {}
        callback.on_epoch_end(index, logs)
    assert inference_model.keras_model.weights == [1, 2]  # the training weights were copied
    with open(tmp_path / "val_map.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "map", "hours", "ap50", "ap75", "map_fluorescence",
                       "map_brightfield", "map_colour"]
    assert [r[0] for r in rows[1:]] == ["5", "15"]
    assert [r[1] for r in rows[1:]] == ["1.0000", "1.0000"]
    # The ellipses are bright on a dark grey background: fluorescence only.
    assert [r[3:] for r in rows[1:]] == [["1.0000", "1.0000", "1.0000", "", ""]] * 2
    assert logs_by_epoch[5] == {"val_map": 1.0} and logs_by_epoch[15] == {"val_map": 1.0}
    assert logs_by_epoch[6] == {}
    assert (tmp_path / "val_map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # TensorBoard's curves, under every backend (no TensorFlow needed under JAX)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "val_map"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("val_map")] == [(5, 1.0), (15, 1.0)]
    assert [e.step for e in events.Scalars("val_map_fluorescence")] == [5, 15]
    assert "val_map_colour" not in events.Tags()["scalars"]  # no colour image validated


def test_val_map_rows_append_and_old_files_are_upgraded(tmp_path):
    path = tmp_path / "val_map.csv"
    append_val_map_row(str(path), {"epoch": 5, "map": "0.3000", "hours": "0.100",
                                   "ap50": "0.5", "ap75": "0.2", "map_colour": "0.1000"})
    append_val_map_row(str(path), {"epoch": 15, "map": "0.4000", "hours": "0.200",
                                   "ap50": "0.6", "ap75": "0.3"})
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["5", "15"]
    assert [r["map_colour"] for r in rows] == ["0.1000", ""]
    # A file from before the per-kind columns: rewritten whole with the new header, its
    # rows kept, and the hours of its last row still found by a resumed run.
    old = tmp_path / "old.csv"
    old.write_text("epoch,map,hours,ap50,ap75\n5,0.2500,1.500,0.4,0.1\n")
    append_val_map_row(str(old), {"epoch": 15, "map": "0.3500", "hours": "2.500",
                                  "ap50": "0.5", "ap75": "0.2", "map_fluorescence": "0.4000"})
    with open(old, newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == list(VAL_MAP_COLUMNS)
    assert [(r["epoch"], r["map"], r["map_fluorescence"]) for r in rows] == [
        ("5", "0.2500", ""), ("15", "0.3500", "0.4000")]
    assert not list(tmp_path.glob(".*.tmp"))


def test_callback_scores_a_size_normalised_model_at_its_own_scale(dataset, tmp_path):
    """A model trained at one nucleus size (OBJECT_DIAMETER) is validated as ``evaluate`` runs
    it: rescaled to that size ("auto"); any other model at native resolution."""
    training_model = types.SimpleNamespace(keras_model=_FakeKerasModel([]), log_dir=str(tmp_path))
    sized = MapCallback(training_model, stand_in_model(
        stand_in_network(), make_config("study", overrides={"OBJECT_DIAMETER": 24.0})),
        dataset).detector
    assert sized.scale == "auto" and sized.diameter == 24.0
    native = MapCallback(training_model, stand_in_model(stand_in_network()), dataset).detector
    assert native.scale == 1.0 and native.diameter is None


class _RecordingNetwork:
    """A Mask R-CNN stand-in that records every image ``detect`` is given and finds the bright
    blobs of it (so that "auto" scale measures nuclei and rescales)."""

    def __init__(self):
        self.seen: list[np.ndarray] = []
        self.keras_model = _FakeKerasModel([])
        self.detect_instances = None

    def load_weights(self, path, by_name=False):
        pass

    def fold_batch_norms(self):
        return 0

    def detect(self, images, verbose=0):
        import skimage.measure

        image = images[0]
        self.seen.append(image.copy())
        labels = skimage.measure.label(image.mean(axis=-1) > 100)
        masks = np.stack([labels == i for i in range(1, labels.max() + 1)], axis=-1) \
            if labels.max() else np.zeros(image.shape[:2] + (0,), bool)
        return [{"masks": masks, "scores": np.linspace(0.9, 0.8, masks.shape[-1])}]


@pytest.mark.parametrize("diameter", [None, 20.0])
def test_callback_prepares_and_detects_as_evaluate_does(diameter, tmp_path, monkeypatch):
    """Validation during training scores a model as ``evaluate`` scores the run's checkpoint:
    the network is given the same images (normalised as the model was trained: the light
    images inverted and stretched by the cpu profile's ``"stretch"``; rescaled the same way
    when the model was trained at one nucleus size), and the scores are the same."""
    networks: list[_RecordingNetwork] = []

    def network(self):
        assert self.config.IMAGE_NORMALIZATION == "stretch"   # the model's, not the network's
        networks.append(_RecordingNetwork())
        return networks[-1]

    monkeypatch.setattr(NucleusModel, "network", network)
    overrides = {"OBJECT_DIAMETER": diameter, "DETECTION_MIN_CONFIDENCE": 0.5}
    training_config = make_config("cpu", overrides=overrides)
    checkpoint = tmp_path / "mask_rcnn_nucleus_cpu_0005.h5"   # what the run would write
    with h5py.File(checkpoint, "w") as f:
        f.attrs.update({**config_attrs(training_config), "epoch": 5})
    dataset = _KindedDataset(6, seed=3)                         # fluorescence and bright-field
    evaluated = evaluate_dataset(make_detector("mrcnn", str(checkpoint)), dataset,
                                 progress=False)
    training_model = types.SimpleNamespace(keras_model=_FakeKerasModel([]), log_dir=str(tmp_path))
    callback = MapCallback(training_model, NucleusModel.of_training(
        training_config, overrides, "cpu", tmp_path), dataset, every=1, first=1)
    validated = evaluate_dataset(callback.detector, dataset, progress=False)
    by_evaluate, by_callback = networks
    assert len(by_callback.seen) == len(by_evaluate.seen) >= len(dataset.image_ids)
    if diameter:                                                 # rescaled: a second pass
        assert len(by_evaluate.seen) > len(dataset.image_ids)
    for ours, theirs in zip(by_callback.seen, by_evaluate.seen):
        np.testing.assert_array_equal(ours, theirs)
    # the light images reached the network inverted: the preparation ran
    assert by_evaluate.seen[1].mean() < dataset.load_image(1).mean() - 50
    assert [s.score for s in validated.scores] == [s.score for s in evaluated.scores]
    assert validated.map == evaluated.map > 0
