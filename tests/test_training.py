"""nucleus.training.train: the study's schedule, start weights (errors and loads) and resuming.

Weights files are written with h5py holding only what each test needs; the loads that must reach a
network use the shared tiny model of conftest.py.
"""
from __future__ import annotations

import os
import re
import types

import h5py
import keras
import numpy as np
import pytest

from mrcnn import model as modellib
from mrcnn import weights as weights_io
from nucleus.errors import InputError
from nucleus.inference import nucleus_model
from nucleus.training import train as training
from nucleus.training.train import Stage, check_start_weights, default_schedule, load_start_weights


# ----------------------------------------------------------------------------- schedule
def test_schedule_from_coco_is_heads_then_4plus():
    assert default_schedule("coco") == [Stage("heads", 100), Stage("4+", 150)]
    assert default_schedule("imagenet") == [Stage("heads", 100), Stage("4+", 150)]


def test_schedule_from_scratch_or_own_checkpoint_trains_everything():
    assert default_schedule("none") == [Stage("all", 150)]
    assert default_schedule("last") == [Stage("all", 150)]
    assert default_schedule("logs/run/mask_rcnn_nucleus_0042.h5") == [Stage("all", 150)]


def test_epochs_truncate_or_extend_the_schedule():
    assert default_schedule("coco", epochs=1) == [Stage("heads", 1)]
    assert default_schedule("coco", epochs=100) == [Stage("heads", 100)]
    assert default_schedule("coco", epochs=120) == [Stage("heads", 100), Stage("4+", 120)]
    assert default_schedule("coco", epochs=200) == [Stage("heads", 100), Stage("4+", 200)]
    assert default_schedule("none", epochs=3) == [Stage("all", 3)]


def test_lr_drop_splits_the_stage_that_spans_it():
    stages = default_schedule("none", 50)
    assert training._with_lr_drop(stages, 0.01, None) == [(Stage("all", 50), 0.01)]
    assert training._with_lr_drop(stages, 0.01, 41) == [(Stage("all", 40), 0.01),
                                                        (Stage("all", 50), 0.001)]
    assert training._with_lr_drop(stages, 0.01, 1) == [(Stage("all", 50), 0.001)]
    assert training._with_lr_drop(stages, 0.01, 60) == [(Stage("all", 50), 0.01)]
    coco = default_schedule("coco", 150)
    assert training._with_lr_drop(coco, 0.01, 121) == [
        (Stage("heads", 100), 0.01), (Stage("4+", 120), 0.01), (Stage("4+", 150), 0.001)]
    assert training._with_lr_drop(coco, 0.01, 101) == [
        (Stage("heads", 100), 0.01), (Stage("4+", 150), 0.001)]
    with pytest.raises(InputError, match="lr-drop"):
        training._with_lr_drop(stages, 0.01, 0)


def test_layers_force_one_stage():
    assert default_schedule("coco", layers="all") == [Stage("all", 150)]
    assert default_schedule("coco", epochs=7, layers="heads") == [Stage("heads", 7)]
    assert default_schedule("none", epochs=2, layers="3+") == [Stage("3+", 2)]
    assert default_schedule("none", layers=r"(mrcnn\_.*)") == [Stage(r"(mrcnn\_.*)", 150)]


# ----------------------------------------------------------------------------- start weights
class _NoModel:
    """Stands in for a MaskRCNN where loading must fail before the model is used."""
    model_dir, config = "logs", types.SimpleNamespace(NAME="nucleus")

    def load_weights(self, *args, **kwargs):
        raise AssertionError("load_weights must not be reached")


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """No COCO or ImageNet file in weights/, ~/.keras/models or the working folder."""
    monkeypatch.setattr(nucleus_model, "REPO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_missing_coco_weights_say_where_to_get_them(no_weights_anywhere):
    with pytest.raises(InputError) as info:
        load_start_weights(_NoModel(), "coco")
    message = str(info.value)
    assert "mask_rcnn_coco.h5" in message
    assert str(no_weights_anywhere / "weights") in message
    assert "https://github.com/matterport/Mask_RCNN/releases" in message
    with pytest.raises(InputError, match="mask_rcnn_coco.h5"):
        check_start_weights("coco")


def test_coco_weights_found_in_the_working_folder(no_weights_anywhere):
    (no_weights_anywhere / "mask_rcnn_coco.h5").write_bytes(b"")
    assert nucleus_model.find_coco_weights() == str(no_weights_anywhere / "mask_rcnn_coco.h5")


def test_missing_imagenet_weights_offline_is_a_clear_error(no_weights_anywhere, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(InputError) as info:
        load_start_weights(_NoModel(), "imagenet")
    message = str(info.value)
    assert "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in message
    assert "~/.keras/models" in message
    assert "could not be downloaded" in message


def test_missing_or_garbage_start_file(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(InputError, match=re.escape(str(missing)) + ".*not found"):
        check_start_weights(str(missing))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not an HDF5 file at all" * 10)
    with pytest.raises(InputError, match=re.escape(str(garbage)) + ".*not a readable HDF5"):
        check_start_weights(str(garbage))
    check_start_weights("none")  # nothing to check
    check_start_weights("last")  # resolved once the model knows its run folder


def test_none_loads_nothing():
    assert load_start_weights(_NoModel(), "none") is None


# ----------------------------------------------------------------------------- starts that load
@pytest.fixture
def tiny(inference_model, tmp_path, monkeypatch):
    """The shared tiny model, with its own logs folder here; weights and run state put back."""
    saved = inference_model.keras_model.get_weights()
    for name in ("model_dir", "epoch", "log_dir", "checkpoint_path"):
        monkeypatch.setattr(inference_model, name, getattr(inference_model, name))
    inference_model.model_dir = str(tmp_path / "logs")
    monkeypatch.setattr(nucleus_model, "REPO_WEIGHTS_DIR", str(tmp_path / "weights"))
    yield inference_model
    inference_model.keras_model.set_weights(saved)


def _unit(model, name):
    return next(u for u in weights_io.weight_units(model.keras_model) if u.name == name)


def _coco_file(model, path, rng) -> dict:
    """conv1 as the model has it, and the heads as COCO's 81 classes shape them."""
    values = {}
    with h5py.File(path, "w") as f:
        units = {u.name for u in weights_io.weight_units(model.keras_model)}
        names = ["conv1"] + [n for n in training.COCO_EXCLUDE if n in units]  # mrcnn_bbox: none
        f.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            weights = _unit(model, name).weights
            shapes = [w.shape for w in weights]
            if name != "conv1":  # the class axis: 81 classes, 4 box numbers each for the box head
                shapes = [s[:-1] + (s[-1] // model.config.NUM_CLASSES * 81,) for s in shapes]
            wnames = [f"{name}/{w}:0" for w in ("kernel", "bias")][:len(weights)]
            values[name] = [rng.normal(0, 0.1, s).astype(np.float32) for s in shapes]
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([n.encode() for n in wnames])
            for wname, value in zip(wnames, values[name]):
                g.create_dataset(wname, data=value)
    return values


def test_coco_start_loads_the_backbone_keeps_fresh_heads_and_starts_a_new_run(tiny, tmp_path):
    os.makedirs(nucleus_model.REPO_WEIGHTS_DIR)
    coco = os.path.join(nucleus_model.REPO_WEIGHTS_DIR, "mask_rcnn_coco.h5")
    values = _coco_file(tiny, coco, np.random.default_rng(0))
    fresh = {name: [w.numpy() for w in _unit(tiny, name).weights]
             for name in values if name != "conv1"}
    assert sorted(fresh) == ["mrcnn_bbox_fc", "mrcnn_class_logits", "mrcnn_mask"]
    tiny.set_log_dir(str(tmp_path / "logs" / "tiny20260101T1200" / "mask_rcnn_tiny_0042.h5"))
    assert tiny.epoch == 42                            # the model was in the middle of a run
    assert load_start_weights(tiny, "coco") == coco
    np.testing.assert_array_equal(_unit(tiny, "conv1").kernel.numpy(), values["conv1"][0])
    for name, before in fresh.items():                 # 81-class heads can't fit: left fresh
        for w, old in zip(_unit(tiny, name).weights, before):
            np.testing.assert_array_equal(w.numpy(), old, err_msg=name)
    assert tiny.epoch == 0 and "tiny20260101T1200" not in tiny.log_dir


def test_last_resumes_the_latest_checkpoint_of_the_run_not_the_coco_file(tiny, tmp_path):
    os.makedirs(nucleus_model.REPO_WEIGHTS_DIR)
    _coco_file(tiny, os.path.join(nucleus_model.REPO_WEIGHTS_DIR, "mask_rcnn_coco.h5"),
               np.random.default_rng(1))
    run = tmp_path / "logs" / "tiny20260102T0930"
    kernel = _unit(tiny, "conv1").kernel
    kernel.assign(kernel.numpy() + 1.0)
    weights_io.save_weights(tiny.keras_model, str(run / "mask_rcnn_tiny_0006.h5"))
    kernel.assign(kernel.numpy() + 1.0)
    weights_io.save_weights(tiny.keras_model, str(run / "mask_rcnn_tiny_0007.h5"))
    saved = kernel.numpy()
    kernel.assign(np.zeros_like(saved))
    assert load_start_weights(tiny, "last") == str(run / "mask_rcnn_tiny_0007.h5")
    np.testing.assert_array_equal(kernel.numpy(), saved)
    assert tiny.epoch == 7 and tiny.log_dir == str(run)   # training goes on in that run


class _MidRun:
    """A model with matterport's API, at epoch 42 of a run, whose ``load_weights`` only loads."""
    model_dir, config = "logs", types.SimpleNamespace(NAME="nucleus")

    def __init__(self):
        self.epoch, self.log_dir, self.loads = 42, "old run", []

    def load_weights(self, path, by_name=False, exclude=None):
        self.loads.append((path, by_name, list(exclude or [])))

    def set_log_dir(self, model_path=None):
        self.epoch, self.log_dir = 0, "new run"


def test_coco_and_imagenet_starts_begin_a_new_run_whatever_load_weights_does(
        no_weights_anywhere, monkeypatch):
    coco = no_weights_anywhere / "mask_rcnn_coco.h5"
    coco.write_bytes(b"")
    monkeypatch.setattr(weights_io, "get_imagenet_weights", lambda: "resnet50.h5")
    for start, path, exclude in (("coco", str(coco), training.COCO_EXCLUDE),
                                 ("imagenet", "resnet50.h5", [])):
        model = _MidRun()
        assert load_start_weights(model, start) == path
        assert model.loads == [(path, True, exclude)]
        assert (model.epoch, model.log_dir) == (0, "new run")
    model = _MidRun()                                 # a checkpoint: the run state is its own
    checkpoint = no_weights_anywhere / "mask_rcnn_nucleus_0042.h5"
    checkpoint.write_bytes(b"")
    load_start_weights(model, str(checkpoint))
    assert (model.epoch, model.log_dir) == (42, "old run")


# ----------------------------------------------------------------------------- resuming
def _checkpoint(folder, epoch: int, run: str = "nucleus_cpu20260101T1200"):
    path = folder / run / f"mask_rcnn_nucleus_cpu_{epoch:04d}.h5"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")
    return str(path)


class _RecordingModel:
    """Stands in for MaskRCNN in train_nucleus: records what it loads and trains."""
    made: list = []

    def __init__(self, mode, config, model_dir):
        self.model_dir, self.config, self.epoch, self.log_dir = model_dir, config, 0, model_dir
        self.loaded, self.stages = [], []
        _RecordingModel.made.append(self)

    def load_weights(self, path, by_name=False, exclude=None):
        self.loaded.append((path, exclude))
        self.epoch = int(re.search(r"_(\d+)\.h5$", path).group(1))

    def set_log_dir(self):
        self.epoch = 0

    def train(self, train_ds, val_ds, learning_rate, epochs, layers, **kwargs):
        self.trained_on = train_ds
        if self.epoch < epochs:
            self.stages.append((layers, self.epoch, epochs))
            self.epoch = epochs


def test_resume_continues_the_last_checkpoint_with_the_schedule_of_the_start_weights(
        tmp_path, monkeypatch):
    monkeypatch.setattr(modellib, "MaskRCNN", _RecordingModel)
    monkeypatch.setattr(training, "check_images", lambda dataset, subset: None)
    _RecordingModel.made = []
    args = dict(dataset_dir=None, subset="train", weights="coco", logs=str(tmp_path),
                epochs=120, profile="cpu", val_subset="", limit=2, resume=True)
    # Without a checkpoint, resume starts from the start weights (COCO must then exist).
    with pytest.raises(InputError, match="mask_rcnn_coco.h5"):
        monkeypatch.setattr(nucleus_model, "REPO_WEIGHTS_DIR", str(tmp_path / "no_weights"))
        monkeypatch.setenv("HOME", str(tmp_path / "home"))
        monkeypatch.chdir(tmp_path)
        training.train_nucleus(**args)
    last = _checkpoint(tmp_path, 40)
    training.train_nucleus(**args)
    model = _RecordingModel.made[-1]
    assert model.loaded == [(last, None)]                 # no COCO file needed, none loaded
    # A run started from COCO keeps its two stages: heads to 100, then 4+.
    assert model.stages == [("heads", 40, 100), ("4+", 100, 120)]


def test_options_come_as_one_object_or_as_keywords(tmp_path, monkeypatch):
    from nucleus.training.train_options import TrainOptions

    monkeypatch.setattr(modellib, "MaskRCNN", _RecordingModel)
    monkeypatch.setattr(training, "check_images", lambda dataset, subset: None)
    _RecordingModel.made = []
    args = dict(dataset_dir=None, subset="train", weights="none", logs=str(tmp_path),
                profile="cpu", limit=2)
    options = TrainOptions(epochs=6, lr_drop=4, val_subset="", steps_per_epoch=3)
    training.train_nucleus(options=options, **args)
    model = _RecordingModel.made[-1]
    assert model.stages == [("all", 0, 3), ("all", 3, 6)]        # the drop splits the stage
    assert model.config.STEPS_PER_EPOCH == 3
    # A keyword replaces that option; an explicit configuration value wins over the options'.
    training.train_nucleus(options=options, epochs=2, overrides={"STEPS_PER_EPOCH": 5}, **args)
    model = _RecordingModel.made[-1]
    assert model.stages == [("all", 0, 2)] and model.config.STEPS_PER_EPOCH == 5
    with pytest.raises(TypeError, match="unknown training option 'epoch'"):
        training.train_nucleus(epoch=2, **args)


def test_extra_training_folders_join_the_training_set_and_are_checked(tmp_path, monkeypatch):
    from test_dataset import _flat

    monkeypatch.setattr(modellib, "MaskRCNN", _RecordingModel)
    _RecordingModel.made = []
    _flat(tmp_path / "mine", ("a", "b", "c"))
    args = dict(dataset_dir=None, subset="train", weights="none", logs=str(tmp_path / "logs"),
                profile="cpu", limit=2, epochs=1, val_subset="")
    training.train_nucleus(extra_train=[str(tmp_path / "mine")], **args)
    paths = [info["path"] for info in _RecordingModel.made[-1].trained_on.image_info]
    assert len(paths) == 5
    assert [os.path.basename(p) for p in paths[2:]] == ["a.tif", "b.tif", "c.tif"]
    # Oversampling counts the added images by their kind (grey fluorescence here).
    training.train_nucleus(extra_train=[str(tmp_path / "mine")],
                           oversample_kinds={"fluorescence": 2}, **args)
    paths = [info["path"] for info in _RecordingModel.made[-1].trained_on.image_info]
    mine = str(tmp_path / "mine")
    assert sorted(os.path.basename(p) for p in paths if p.startswith(mine)) == [
        "a.tif", "a.tif", "b.tif", "b.tif", "c.tif", "c.tif"]
    # The check before the run fills the cache of the set that trains: no mask is read again.
    trained_on = _RecordingModel.made[-1].trained_on
    assert sorted(trained_on._labels) == list(trained_on.image_ids)
    # An unreadable extra image stops the run before it starts, naming the file.
    (tmp_path / "mine" / "images" / "b.tif").write_bytes(b"not an image")
    with pytest.raises(InputError, match=r"b\.tif"):
        training.train_nucleus(extra_train=[str(tmp_path / "mine")], **args)
