"""nucleus.inference.nucleus_model: one object for a trained model, Mask R-CNN or the FCN: which
weights file a name means, the configuration stored beside the weights (read once), the epoch, the
run folder and the detector; and the run folders both kinds of training write.

Weights files are written with h5py holding only the attributes a test needs, or by the smallest
network that the tests of a detector load; none comes from outside the repository.
"""
from __future__ import annotations

import csv
import datetime
import json
import os
import re

import h5py
import numpy as np
import pytest
from conftest import run_fresh_python

from mrcnn import weights as weights_io
from mrcnn import weights_file as attrs_io
from mrcnn.runs import RunFolder, mask_rcnn_layout
from nucleus.config import (NucleusConfig, NucleusCPUInferenceConfig, NucleusInferenceConfig,
                            make_config)
from nucleus.errors import InputError
from nucleus.fcn.detector import FCN_RUNS
from nucleus.inference import nucleus_model
from nucleus.inference.nucleus_model import (NETWORK_SHAPE_KEYS, SHIPPED_WEIGHTS, NucleusModel,
                                             config_from_weights, make_detector,
                                             run_inference_config)


# The network of the smallest model a detector is built from (seconds, not minutes), trained
# at one nucleus size and under a NAME that is not a profile's.
TINY = {"NAME": "cells", "BACKBONE": "resnet50", "TOP_DOWN_PYRAMID_SIZE": 32,
        "RPN_CONV_SIZE": 32, "FPN_CLASSIF_FC_LAYERS_SIZE": 64, "MASK_HEAD_CONV_SIZE": 32,
        "RPN_ANCHOR_SCALES": (4, 8, 16, 32, 64), "OBJECT_DIAMETER": 18.0,
        "IMAGE_NORMALIZATION": None, "MIXED_PRECISION": None, "POST_NMS_ROIS_INFERENCE": 100,
        "DETECTION_MAX_INSTANCES": 50}


def data(value):
    """A configuration value as plain data, to compare stored and rebuilt values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def weights_file(path, config=None, epoch: int | None = None) -> str:
    """An HDF5 file with the root attributes of our checkpoints (no arrays)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = []
        if config is not None:
            values = config if isinstance(config, dict) else config.to_dict()
            f.attrs["mrcnn_config"] = json.dumps(values, default=str)
        if epoch is not None:
            f.attrs["epoch"] = epoch
    return str(path)


@pytest.fixture
def count_reads(monkeypatch):
    """The paths mrcnn.weights_file.read_attrs is called with."""
    calls = []
    real = attrs_io.read_attrs

    def counted(path):
        calls.append(path)
        return real(path)

    monkeypatch.setattr(attrs_io, "read_attrs", counted)
    return calls


def test_reading_a_model_imports_no_keras():
    """NucleusModel.load reads the file's attributes with h5py alone: no Keras, no TensorFlow
    (4 s and more of start-up) before a network is built. mrcnn.weights keeps the names."""
    code = ("import sys\n"
            "from nucleus.inference.nucleus_model import NucleusModel\n"
            "model = NucleusModel.load()\n"
            "print(model.config.NAME, model.epoch, sorted(m for m in ('keras', 'tensorflow',\n"
            "      'jax', 'mrcnn.weights') if m in sys.modules))\n")
    done = run_fresh_python(code)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[2:] == ["[]"], done.stdout
    assert done.stdout.split()[:2] == [NucleusModel.load().config.NAME,
                                      str(NucleusModel.load().epoch)]
    for name in ("read_attrs", "open_weights", "COCO_WEIGHTS_URL", "IMAGENET_RESNET50_FILE",
                 "IMAGENET_RESNET50_URL"):
        assert getattr(weights_io, name) is getattr(attrs_io, name), name


# ----------------------------------------------------------------------------- the shipped file
def test_the_shipped_file_gives_the_configuration_it_gave_before_the_model_object(count_reads):
    """The values config_from_weights gave for weights/mask_rcnn_nucleus.h5 before this module
    existed (the file stores no PROFILE: its NAME says the CPU profile)."""
    with h5py.File(SHIPPED_WEIGHTS, "r") as f:
        stored_epoch = int(f.attrs["epoch"])         # the shipped file records its epoch
    model = NucleusModel.load()
    assert count_reads == [SHIPPED_WEIGHTS]
    assert (model.kind, model.weights, model.epoch) == ("mrcnn", SHIPPED_WEIGHTS, stored_epoch)
    assert stored_epoch > 0
    assert (model.profile, model.run_folder, model.normalization) == ("cpu", None, "stretch")
    config = model.config
    assert isinstance(config, NucleusCPUInferenceConfig)
    assert {k: data(getattr(config, k)) for k in (
        "NAME", "BACKBONE", "RPN_ANCHOR_SCALES", "TOP_DOWN_PYRAMID_SIZE", "RPN_CONV_SIZE",
        "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CONV_SIZE", "TRAIN_BN", "MEAN_PIXEL",
        "IMAGE_NORMALIZATION", "OBJECT_DIAMETER", "IMAGE_RESIZE_MODE", "IMAGE_MIN_DIM",
        "DETECTION_MIN_CONFIDENCE", "DETECTION_NMS_THRESHOLD", "DETECTION_MAX_INSTANCES",
        "DETECTION_MASK_OVERLAP", "POST_NMS_ROIS_INFERENCE", "PRE_NMS_LIMIT",
        "MIXED_PRECISION", "BATCH_SIZE")} == {
        "NAME": "nucleus_cpu", "BACKBONE": "resnet50", "RPN_ANCHOR_SCALES": [8, 16, 32, 64, 128],
        "TOP_DOWN_PYRAMID_SIZE": 128, "RPN_CONV_SIZE": 256, "FPN_CLASSIF_FC_LAYERS_SIZE": 512,
        "MASK_HEAD_CONV_SIZE": 128, "TRAIN_BN": True, "MEAN_PIXEL": [123.7, 116.8, 103.9],
        "IMAGE_NORMALIZATION": "stretch", "OBJECT_DIAMETER": None, "IMAGE_RESIZE_MODE": "pad64",
        "IMAGE_MIN_DIM": None, "DETECTION_MIN_CONFIDENCE": 0.7, "DETECTION_NMS_THRESHOLD": 0.2,
        "DETECTION_MAX_INSTANCES": 1000, "DETECTION_MASK_OVERLAP": "confidence",
        "POST_NMS_ROIS_INFERENCE": 2000, "PRE_NMS_LIMIT": 4000,
        "MIXED_PRECISION": "mixed_bfloat16", "BATCH_SIZE": 1}
    assert model.crop_sized(tiled=True) and not model.crop_sized(tta=True, tiled=True)
    assert model.default_scale() == "probe" and not model.crop_sized()
    assert len(count_reads) == 1                     # everything above came from one read
    study = NucleusModel.load(profile="study", overrides={"DETECTION_MIN_CONFIDENCE": 0.5})
    assert isinstance(study.config, NucleusInferenceConfig)
    assert (study.config.BACKBONE, study.config.IMAGE_RESIZE_MODE,
            study.config.DETECTION_MIN_CONFIDENCE) == ("resnet50", "square", 0.5)


# ----------------------------------------------------------------------------- resolution
def test_weights_resolve_to_the_shipped_file_the_last_checkpoint_or_a_path(tmp_path):
    assert NucleusModel.resolve(None) == SHIPPED_WEIGHTS
    logs = tmp_path / "logs"
    layout = mask_rcnn_layout("nucleus_cpu")
    older = layout.folder(logs, datetime.datetime(2026, 1, 1, 12, 0))
    newer = layout.folder(logs, datetime.datetime(2026, 1, 2, 12, 0))
    weights_file(older.checkpoint(5), make_config("cpu"), 5)
    weights_file(newer.checkpoint(1), make_config("cpu"), 1)
    last = weights_file(newer.checkpoint(2), make_config("cpu"), 2)
    model = NucleusModel.load("last", logs=logs, profile="cpu")
    assert (model.weights, model.epoch, model.run_folder) == (last, 2, newer)
    assert model.run_folder.val_map == os.path.join(newer.path, "val_map.csv")
    # "last" looks for runs of the profile's NAME: the study's are nucleus<timestamp>
    with pytest.raises(InputError, match=re.escape(str(logs)) + r": no Mask R-CNN checkpoint "
                                         r"found \(nucleus<timestamp>/mask_rcnn_nucleus_NNNN"):
        NucleusModel.resolve("last", logs=logs)
    assert NucleusModel.resolve("last", logs=logs, name="nucleus_cpu") == last
    assert NucleusModel.resolve(last) == last


def test_a_missing_or_unreadable_file_is_an_input_error_naming_it(tmp_path):
    missing = tmp_path / "missing.h5"
    with pytest.raises(InputError, match=re.escape(str(missing)) + ": weights file not found"):
        NucleusModel.load(missing)
    with pytest.raises(InputError, match=re.escape(str(missing)) + ": weights file not found"):
        make_detector("fcn", missing)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00 not an HDF5 file " * 40)
    with pytest.raises(InputError, match=re.escape(str(garbage)) + ": not a readable HDF5"):
        NucleusModel.load(garbage)
    with pytest.raises(InputError, match="unknown model 'unet'"):
        NucleusModel.load(kind="unet")
    with pytest.raises(InputError, match="coco: weights file not found"):
        NucleusModel.resolve("coco")                 # a start name only where a run starts


def test_where_a_training_run_starts(tmp_path, monkeypatch):
    monkeypatch.setattr(nucleus_model, "REPO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert NucleusModel.resolve("none", start=True) is None
    with pytest.raises(InputError, match="mask_rcnn_coco.h5: COCO weights not found"):
        NucleusModel.resolve("coco", start=True)
    coco = weights_file(tmp_path / "weights" / "mask_rcnn_coco.h5")
    assert NucleusModel.resolve("coco", start=True) == coco
    monkeypatch.setattr(weights_io, "get_imagenet_weights", lambda: "resnet50.h5")
    assert NucleusModel.resolve("imagenet", start=True) == "resnet50.h5"


def test_the_fcn_resolves_to_its_newest_checkpoint(tmp_path):
    with pytest.raises(InputError, match=r"no FCN checkpoint found \(fcn<timestamp>/"
                                         r"fcn_NNNN\.weights\.h5\)"):
        NucleusModel.load(kind="fcn", logs=tmp_path)
    older = FCN_RUNS.folder(tmp_path, datetime.datetime(2026, 1, 1, 12, 0, 0))
    newer = FCN_RUNS.folder(tmp_path, datetime.datetime(2026, 1, 1, 12, 0, 1))
    weights_file(older.checkpoint(9))
    weights_file(newer.checkpoint(3))
    for weights in (None, "last"):
        model = NucleusModel.load(weights, kind="fcn", logs=tmp_path)
        assert (model.weights, model.epoch, model.run_folder) == (newer.checkpoint(3), 3, newer)
        assert model.config is None and model.normalization is None and not model.crop_sized()
    assert NucleusModel.load(older.checkpoint(9), kind="fcn").run_folder == older


# ----------------------------------------------------------------------------- stored configuration
def test_config_from_weights_restores_cpu_profile_and_network(tmp_path):
    trained = make_config("cpu", overrides={"BACKBONE": "resnet101", "TOP_DOWN_PYRAMID_SIZE": 32,
                                            "RPN_CONV_SIZE": 48, "MASK_HEAD_CONV_SIZE": 16,
                                            "FPN_CLASSIF_FC_LAYERS_SIZE": 64,
                                            "RPN_ANCHOR_SCALES": (4, 8, 16, 32, 64),
                                            "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128})
    path = weights_file(tmp_path / "cpu.h5", trained)
    c = config_from_weights(path)
    assert isinstance(c, NucleusCPUInferenceConfig)
    assert c.NAME == "nucleus_cpu"
    assert c.BACKBONE == "resnet101"
    assert (c.TOP_DOWN_PYRAMID_SIZE, c.RPN_CONV_SIZE, c.MASK_HEAD_CONV_SIZE,
            c.FPN_CLASSIF_FC_LAYERS_SIZE) == (32, 48, 16, 64)
    assert tuple(c.RPN_ANCHOR_SCALES) == (4, 8, 16, 32, 64)
    # Inference keeps the profile's whole-image resize, not the training crop size.
    assert c.IMAGE_RESIZE_MODE == "pad64" and c.BATCH_SIZE == 1
    training_config = config_from_weights(path, inference=False)
    assert training_config.IMAGE_RESIZE_MODE == "crop"


def test_config_from_weights_keeps_the_normalisation_the_weights_were_trained_with(tmp_path):
    assert make_config("cpu").IMAGE_NORMALIZATION == "stretch"
    assert make_config("study").IMAGE_NORMALIZATION is None
    stretched = weights_file(tmp_path / "new.h5", make_config("cpu"))
    assert config_from_weights(stretched).IMAGE_NORMALIZATION == "stretch"
    plain = weights_file(tmp_path / "plain.h5",
                          make_config("cpu", overrides={"IMAGE_NORMALIZATION": None}))
    assert config_from_weights(plain).IMAGE_NORMALIZATION is None
    # A file written before the option existed was trained on raw images.
    old = make_config("cpu").to_dict()
    del old["IMAGE_NORMALIZATION"]
    with h5py.File(tmp_path / "old.h5", "w") as f:
        f.attrs["layer_names"] = []
        f.attrs["mrcnn_config"] = json.dumps(old, default=str)
    assert config_from_weights(str(tmp_path / "old.h5")).IMAGE_NORMALIZATION is None


def test_config_from_weights_study_profile_and_overrides(tmp_path):
    path = weights_file(tmp_path / "study.h5",
                         make_config("study", overrides={"BACKBONE": "resnet50"}))
    c = config_from_weights(path, overrides={"DETECTION_MIN_CONFIDENCE": 0.5})
    assert isinstance(c, NucleusInferenceConfig)
    assert c.BACKBONE == "resnet50" and c.DETECTION_MIN_CONFIDENCE == 0.5
    assert c.IMAGE_RESIZE_MODE == "square"


def test_config_from_weights_without_stored_config_uses_the_study(tmp_path):
    path = weights_file(tmp_path / "matterport.h5")
    c = config_from_weights(path)
    assert isinstance(c, NucleusInferenceConfig) and c.BACKBONE == "resnet101"
    assert isinstance(config_from_weights(path, profile="cpu"), NucleusCPUInferenceConfig)


def test_explicit_profile_wins_over_the_file(tmp_path):
    path = weights_file(tmp_path / "cpu.h5", make_config("cpu"))
    c = config_from_weights(path, profile="study")
    assert isinstance(c, NucleusConfig)
    assert c.IMAGE_RESIZE_MODE == "square" and c.BACKBONE == "resnet50"  # network from the file


def test_config_from_weights_bad_files(tmp_path):
    with pytest.raises(InputError, match="missing.h5"):
        config_from_weights(str(tmp_path / "missing.h5"))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(InputError, match="garbage.h5.*not a readable HDF5"):
        config_from_weights(str(garbage))


def test_the_profile_is_stored_and_the_name_only_guesses_for_older_files(tmp_path):
    renamed = make_config("cpu", overrides={"NAME": "mycells"})
    assert renamed.to_dict()["PROFILE"] == "cpu"
    path = weights_file(tmp_path / "new.h5", renamed)
    assert isinstance(config_from_weights(path), NucleusCPUInferenceConfig)
    older = {k: v for k, v in renamed.to_dict().items() if k != "PROFILE"}
    assert isinstance(config_from_weights(weights_file(tmp_path / "old.h5", older)),
                      NucleusInferenceConfig)          # NAME does not say cpu: the study
    older["NAME"] = "nucleus_cpu"
    assert isinstance(config_from_weights(weights_file(tmp_path / "old_cpu.h5", older)),
                      NucleusCPUInferenceConfig)
    with pytest.raises(InputError, match="--profile"):
        make_config("study", overrides={"PROFILE": "cpu"})


def test_a_key_the_file_lacks_has_the_librarys_default(tmp_path):
    from mrcnn.config import Config

    stored = make_config("cpu").to_dict()
    for key in ("RPN_ANCHOR_STRIDE", "IMAGE_CHANNEL_COUNT", "BBOX_STD_DEV", "OBJECT_DIAMETER"):
        del stored[key]
    stored["RPN_BBOX_STD_DEV"] = [0.2, 0.2, 0.4, 0.4]
    config = config_from_weights(weights_file(tmp_path / "w.h5", stored))
    assert config.RPN_ANCHOR_STRIDE == Config.RPN_ANCHOR_STRIDE
    np.testing.assert_array_equal(config.BBOX_STD_DEV, Config.BBOX_STD_DEV)
    assert isinstance(config.RPN_BBOX_STD_DEV, np.ndarray)       # the configuration's type
    np.testing.assert_array_equal(config.RPN_BBOX_STD_DEV, [0.2, 0.2, 0.4, 0.4])


# The validation model's configuration before run_inference_config: the run's overrides less
# these, over the profile's inference class.
OLD_SKIP = {"IMAGE_RESIZE_MODE", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM", "IMAGES_PER_GPU",
            "STEPS_PER_EPOCH", "VALIDATION_STEPS", "LEARNING_RATE", "TRAIN_ROIS_PER_IMAGE",
            "RPN_TRAIN_ANCHORS_PER_IMAGE", "POST_NMS_ROIS_TRAINING"}
FLAGS = [[], ["--backbone", "resnet50"], ["--image-size", "256"], ["--images-per-gpu", "4"],
         ["--gpu-count", "2"], ["--rpn-anchors", "128"], ["--rpn-nms", "0.8"], ["--rois", "64"],
         ["--positive-ratio", "0.5"], ["--detection-nms", "0.4"], ["--min-confidence", "0.6"],
         ["--max-detections", "300"], ["--learning-rate", "0.02"], ["--validation-steps", "3"],
         ["--mixed-precision"], ["--steps-per-epoch", "7"], ["--set", "OBJECT_DIAMETER=18"],
         ["--set", "TOP_DOWN_PYRAMID_SIZE=64", "--set", "POST_NMS_ROIS_INFERENCE=500"],
         ["--set", "IMAGE_RESIZE_MODE=crop", "--set", "MINI_MASK_SHAPE=(14, 14)"]]


@pytest.mark.parametrize("profile", ["study", "cpu"])
def test_the_validation_model_of_a_training_run_is_configured_as_before(profile):
    from nucleus.cli import build_parser, overrides_from_args
    from nucleus.training.train_options import TrainOptions

    for flags in FLAGS:
        args = build_parser().parse_args(["train", "--profile", profile, *flags])
        overrides = {**TrainOptions.from_args(args).overrides(), **overrides_from_args(args)}
        new = run_inference_config(make_config(profile, overrides=overrides), overrides, profile)
        old = make_config(profile, inference=True,
                          overrides={k: v for k, v in overrides.items() if k not in OLD_SKIP})
        assert type(new).__name__ == type(old).__name__, flags
        assert ({k: data(v) for k, v in new.to_dict().items()}
                == {k: data(v) for k, v in old.to_dict().items()}), flags


# ----------------------------------------------------------------------------- a written model
@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> tuple[str, object]:
    """A checkpoint of the smallest cpu-profile network, where training would write its third
    epoch, and the training configuration it was written with."""
    from mrcnn import model as modellib

    logs = tmp_path_factory.mktemp("logs")
    config = make_config("cpu", overrides=TINY)
    model = modellib.MaskRCNN("training", config, str(logs))
    model.epoch = 3
    path = model.run_folder.checkpoint(3)
    model.save_weights(path)
    return path, config


def test_a_written_configuration_reads_back(tiny_checkpoint, count_reads):
    path, written = tiny_checkpoint
    model = NucleusModel.load(path)
    assert count_reads == [path]
    assert {k: data(getattr(model.config, k)) for k in NETWORK_SHAPE_KEYS} == {
        k: data(getattr(written, k)) for k in NETWORK_SHAPE_KEYS}
    assert model.profile == "cpu" and isinstance(model.config, NucleusCPUInferenceConfig)
    assert model.config.IMAGE_RESIZE_MODE == "pad64"          # the profile's inference input
    assert model.epoch == 3
    assert model.run_folder == RunFolder(os.path.dirname(path), mask_rcnn_layout("cells"))
    assert os.path.basename(path) == "mask_rcnn_cells_0003.h5"


def test_the_detector_is_built_from_one_read_of_the_file(tiny_checkpoint, count_reads):
    path, _ = tiny_checkpoint
    detector = make_detector("mrcnn", path)
    assert count_reads == [path]
    assert (detector.scale, detector.diameter, detector.normalization) == ("auto", 18.0, None)
    masks, scores = detector(np.zeros((64, 64, 3), np.uint8))
    assert masks.shape[:2] == (64, 64) and len(scores) == masks.shape[2]
    model = NucleusModel.load(path)
    assert model.detector(scale=1.0).crop_sized == model.crop_sized(scale=1.0) is True
    assert model.config.IMAGE_NORMALIZATION is None             # building left it as it was


def test_the_validation_model_is_the_model_of_the_runs_checkpoints(tiny_checkpoint,
                                                                  count_reads):
    """Training validates the model its checkpoints hold (:meth:`NucleusModel.of_training`):
    the same configuration, normalisation, profile and detector settings as ``evaluate`` gets
    for the checkpoint with the run's configuration flags (:meth:`NucleusModel.load`), without
    reading a file."""
    path, training_config = tiny_checkpoint
    validation = NucleusModel.of_training(training_config, TINY, "cpu",
                                          os.path.dirname(os.path.dirname(path)))
    assert count_reads == []
    loaded = NucleusModel.load(path, overrides=TINY)
    assert ({k: data(v) for k, v in validation.config.to_dict().items()}
            == {k: data(v) for k, v in loaded.config.to_dict().items()})
    assert type(validation.config).__name__ == type(loaded.config).__name__
    assert (validation.kind, validation.profile, validation.normalization) == (
        loaded.kind, loaded.profile, loaded.normalization)
    assert validation.crop_sized() == loaded.crop_sized()
    assert validation.weights is None
    with pytest.raises(ValueError, match="no weights file"):
        validation.detector()
    # the network both build takes prepared images: normalisation is the detector's
    network = validation.network()
    assert network.config.IMAGE_NORMALIZATION is None and network.mode == "inference"
    detector = validation.detector_of(network)
    assert (detector.scale, detector.diameter, detector.normalization) == ("auto", 18.0, None)


# ----------------------------------------------------------------------------- run folders
def test_mask_rcnn_and_fcn_runs_have_the_same_layout(tmp_path):
    started = datetime.datetime(2026, 1, 2, 9, 30, 0)
    runs = {"mrcnn": mask_rcnn_layout("nucleus_cpu").folder(tmp_path / "m", started),
            "fcn": FCN_RUNS.folder(tmp_path / "f", started)}
    for kind, run in runs.items():
        assert os.path.relpath(run.history, run.path) == "history.csv"
        assert os.path.relpath(run.val_map, run.path) == "val_map.csv"
        for epoch in (1, 2):
            weights_file(run.checkpoint(epoch))
        assert run.layout.find_last(os.path.dirname(run.path)) == (run.checkpoint(2), 2)
        model = NucleusModel.load("last", kind=kind, logs=os.path.dirname(run.path),
                                  profile="cpu")
        assert model.run_folder == run and model.epoch == 2, kind


def test_an_fcn_run_writes_what_curves_reads(tmp_path, capsys):
    """FCN training writes history.csv (epochs from 0, as Keras's CSVLogger in a Mask R-CNN
    run) and val_map.csv (epochs from 1) beside its checkpoints; `nucleus curves` draws them."""
    from nucleus.cli import main
    from nucleus.fcn.train import train_fcn
    from synthetic import EllipseDataset

    result = train_fcn(EllipseDataset(4, seed=1), EllipseDataset(2, seed=2), tmp_path,
                       weights=None, epochs=1, steps_per_epoch=2, crop_size=32, batch_size=2,
                       fc_width=16, eval_every=1, workers=1, augment=False, verbose=0)
    run = RunFolder(str(result["run_dir"]))
    with open(run.history, newline="") as f:
        assert [row["epoch"] for row in csv.DictReader(f)] == ["0"]
    with open(run.val_map, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["1"] and "map" in rows[0]
    capsys.readouterr()
    assert main(["curves", run.path]) == 0
    assert capsys.readouterr().out.strip() == run.curves and os.path.getsize(run.curves) > 0
    assert main(["curves", str(tmp_path)]) == 2                   # not a run folder
    assert "no training history" in capsys.readouterr().err
