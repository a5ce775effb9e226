"""nucleus.training: the study's schedule, start-weight errors and configs read from weights files.

No model is built: the weight-loading paths under test fail (or succeed) before touching one, and
weights files are written with h5py holding only the root attributes that matter.
"""
from __future__ import annotations

import json
import re
import types

import h5py
import keras
import pytest

from mrcnn import model as modellib
from mrcnn.weights import WeightsError
from nucleus import training
from nucleus.config import (NucleusCPUInferenceConfig, NucleusConfig, NucleusInferenceConfig,
                            make_config)
from nucleus.errors import InputError
from nucleus.training import (Stage, check_start_weights, config_from_weights, default_schedule,
                              load_start_weights)


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

    def load_weights(self, *args, **kwargs):
        raise AssertionError("load_weights must not be reached")


@pytest.fixture
def no_weights_anywhere(tmp_path, monkeypatch):
    """No COCO or ImageNet file in weights/, ~/.keras/models or the working folder."""
    monkeypatch.setattr(training, "REPO_WEIGHTS_DIR", str(tmp_path / "weights"))
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
    assert training.find_coco_weights() == str(no_weights_anywhere / "mask_rcnn_coco.h5")


def test_missing_imagenet_weights_offline_is_a_clear_error(no_weights_anywhere, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("URL fetch failure: no network")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    model = types.SimpleNamespace(
        get_imagenet_weights=lambda: modellib.MaskRCNN.get_imagenet_weights(None),
        load_weights=_NoModel().load_weights)
    with pytest.raises(InputError) as info:
        load_start_weights(model, "imagenet")
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


# ----------------------------------------------------------------------------- config from file
def _weights_file(path, config=None) -> str:
    """An HDF5 file with the root attributes our checkpoints carry (no arrays needed here)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = []
        if config is not None:
            f.attrs["mrcnn_config"] = json.dumps(config.to_dict(), default=str)
            f.attrs["epoch"] = 3
    return str(path)


def test_config_from_weights_restores_cpu_profile_and_network(tmp_path):
    trained = make_config("cpu", overrides={"BACKBONE": "resnet101", "TOP_DOWN_PYRAMID_SIZE": 32,
                                            "RPN_CONV_SIZE": 48, "MASK_HEAD_CONV_SIZE": 16,
                                            "FPN_CLASSIF_FC_LAYERS_SIZE": 64,
                                            "RPN_ANCHOR_SCALES": (4, 8, 16, 32, 64),
                                            "IMAGE_MIN_DIM": 128, "IMAGE_MAX_DIM": 128})
    path = _weights_file(tmp_path / "cpu.h5", trained)
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
    stretched = _weights_file(tmp_path / "new.h5", make_config("cpu"))
    assert config_from_weights(stretched).IMAGE_NORMALIZATION == "stretch"
    plain = _weights_file(tmp_path / "plain.h5",
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
    path = _weights_file(tmp_path / "study.h5",
                         make_config("study", overrides={"BACKBONE": "resnet50"}))
    c = config_from_weights(path, overrides={"DETECTION_MIN_CONFIDENCE": 0.5})
    assert isinstance(c, NucleusInferenceConfig)
    assert c.BACKBONE == "resnet50" and c.DETECTION_MIN_CONFIDENCE == 0.5
    assert c.IMAGE_RESIZE_MODE == "square"


def test_config_from_weights_without_stored_config_uses_the_study(tmp_path):
    path = _weights_file(tmp_path / "matterport.h5")
    c = config_from_weights(path)
    assert isinstance(c, NucleusInferenceConfig) and c.BACKBONE == "resnet101"
    assert isinstance(config_from_weights(path, profile="cpu"), NucleusCPUInferenceConfig)


def test_explicit_profile_wins_over_the_file(tmp_path):
    path = _weights_file(tmp_path / "cpu.h5", make_config("cpu"))
    c = config_from_weights(path, profile="study")
    assert isinstance(c, NucleusConfig)
    assert c.IMAGE_RESIZE_MODE == "square" and c.BACKBONE == "resnet50"  # network from the file


def test_config_from_weights_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        config_from_weights(str(tmp_path / "missing.h5"))
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(WeightsError, match="garbage.h5"):
        config_from_weights(str(garbage))
