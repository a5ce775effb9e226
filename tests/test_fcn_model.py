"""FCN-8s model: layer names and shapes, bilinear upsampling, preprocessing, weight loading."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py
import keras
import numpy as np
import pytest

from nucleus.errors import InputError
from nucleus.fcn import model as fcn_model
from nucleus.fcn.model import (VGG16_NOTOP_FILE, bilinear_kernel, build_fcn8s, load_fcn,
                               load_fcn_weights, predict_foreground, preprocess_image)

SMALL = 16  # fc6/fc7 width for fast tests

pytestmark = pytest.mark.backends  # plain Keras: holds under TensorFlow and JAX alike


@pytest.fixture(scope="module")
def small_model():
    keras.utils.set_random_seed(0)
    return build_fcn8s(None, fc_width=SMALL)


def write_vgg16_notop_file(path) -> keras.Model:
    """Write a random VGG16 no-top in the Keras 2 HDF5 layout keras.applications downloads."""
    vgg = keras.applications.VGG16(include_top=False, weights=None, input_shape=(None, None, 3))
    with h5py.File(path, "w") as f:
        f.attrs["backend"] = "tensorflow"
        f.attrs["keras_version"] = "2.1.5"
        f.attrs["layer_names"] = np.array([layer.name.encode() for layer in vgg.layers])
        for layer in vgg.layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{kind}:0" for kind in ("kernel", "bias")][:len(layer.weights)]
            group.attrs["weight_names"] = np.array([n.encode() for n in names], dtype="S")
            for name, value in zip(names, layer.get_weights()):
                group.create_dataset(name, data=value)
    return vgg


def _datasets(group):
    found = []
    group.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_preprocess_matches_keras_vgg16_convention():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    expected = keras.applications.vgg16.preprocess_input(image.astype(np.float32).copy())
    np.testing.assert_allclose(preprocess_image(image), expected, atol=1e-4)
    assert preprocess_image(image).dtype == np.float32
    with pytest.raises(ValueError):
        preprocess_image(np.zeros((4, 4, 4), np.uint8))


def test_layers_names_and_output_shape(small_model):
    names = {layer.name for layer in small_model.layers}
    for block, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3)):
        assert {f"block{block}_conv{i}" for i in range(1, n + 1)} <= names
        assert f"block{block}_pool" in names
    assert {"fc6", "fc7", "score_fr", "score_pool4", "score_pool3",
            "upscore2", "upscore_pool4", "upscore8"} <= names
    assert small_model.get_layer("fc6").kernel.shape == (7, 7, 512, SMALL)
    assert small_model.get_layer("fc7").kernel.shape == (1, 1, SMALL, SMALL)
    for name in ("score_fr", "score_pool4", "score_pool3"):
        assert small_model.get_layer(name).kernel.shape[-1] == 2
        assert not np.any(small_model.get_layer(name).get_weights()[0])
    out = small_model(np.zeros((2, 64, 96, 3), np.float32), training=False)
    assert tuple(out.shape) == (2, 64, 96, 2)
    assert not small_model.get_layer("upscore8").trainable
    assert small_model.get_layer("upscore2").trainable


def test_default_fc_width_is_the_papers():
    model = build_fcn8s(None)
    assert model.get_layer("fc6").kernel.shape == (7, 7, 512, 4096)
    assert model.get_layer("fc7").kernel.shape == (1, 1, 4096, 4096)
    assert model.get_layer("drop6").rate == 0.5


@pytest.mark.parametrize("factor", [2, 8])
def test_bilinear_kernel_upsamples_like_bilinear_resize(factor):
    rng = np.random.default_rng(factor)
    small = rng.normal(size=(1, 6, 5, 2)).astype(np.float32)
    size = 2 * factor
    layer = keras.layers.Conv2DTranspose(2, size, strides=factor, padding="same", use_bias=False)
    layer.build(small.shape)
    layer.set_weights([bilinear_kernel(size, 2)])
    up = keras.ops.convert_to_numpy(layer(small))
    ref = keras.ops.convert_to_numpy(keras.ops.image.resize(
        small, (6 * factor, 5 * factor), interpolation="bilinear"))
    assert up.shape == ref.shape
    inner = slice(factor, -factor)  # borders differ: the deconvolution sees zeros outside
    np.testing.assert_allclose(up[:, inner, inner], ref[:, inner, inner], atol=1e-5)


def test_predict_foreground_any_size(small_model):
    image = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    prob = predict_foreground(small_model, image)
    assert prob.shape == (50, 70) and prob.dtype == np.float32
    # Score layers start at zero: both classes tie everywhere.
    np.testing.assert_allclose(prob, 0.5, atol=1e-6)


def test_vgg16_weights_load_from_file(tmp_path):
    path = tmp_path / VGG16_NOTOP_FILE
    vgg = write_vgg16_notop_file(path)
    model = build_fcn8s(path, fc_width=SMALL)
    for name in ("block1_conv1", "block3_conv2", "block5_conv3"):
        for got, want in zip(model.get_layer(name).get_weights(),
                             vgg.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)
    # str paths work the same way
    model2 = build_fcn8s(str(path), fc_width=SMALL)
    np.testing.assert_array_equal(model2.get_layer("block2_conv1").get_weights()[0],
                                  vgg.get_layer("block2_conv1").get_weights()[0])


def test_vgg16_bad_paths(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(InputError, match="nope.h5"):
        build_fcn8s(missing, fc_width=SMALL)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(InputError, match="junk.h5"):
        build_fcn8s(junk, fc_width=SMALL)


def test_imagenet_download_failure_says_what_to_do(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(InputError) as info:
        build_fcn8s("imagenet", fc_width=SMALL)
    message = str(info.value)
    assert VGG16_NOTOP_FILE in message
    assert "~/.keras/models" in message
    assert "--weights" in message


def test_checkpoint_round_trip_and_mismatch(tmp_path, small_model):
    rng = np.random.default_rng(2)
    for layer in ("score_fr", "score_pool3"):
        kernel, bias = small_model.get_layer(layer).get_weights()
        small_model.get_layer(layer).set_weights([rng.normal(size=kernel.shape), bias])
    path = tmp_path / "fcn_0003.weights.h5"
    small_model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="mse")
    small_model.optimizer.build(small_model.trainable_variables)
    assert fcn_model.save_fcn_weights(small_model, path) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fcn_0003.weights.h5"]
    with h5py.File(path, "r") as f:  # the optimizer's state is left out
        assert "optimizer" not in f or not any(True for _ in _datasets(f["optimizer"]))
    assert fcn_model.is_fcn_checkpoint(path)

    loaded = load_fcn(path, fc_width=SMALL)
    image = rng.integers(0, 256, (32, 64, 3), dtype=np.uint8)
    np.testing.assert_allclose(predict_foreground(loaded, image),
                               predict_foreground(small_model, image), atol=1e-6)
    assert not np.allclose(predict_foreground(loaded, image), 0.5)

    other = build_fcn8s(None, fc_width=SMALL * 2)
    with pytest.raises(InputError, match="fcn_0003.weights.h5"):
        load_fcn_weights(other, path)
    with pytest.raises(InputError, match="missing.weights.h5"):
        load_fcn_weights(other, tmp_path / "missing.weights.h5")
    with pytest.raises(ValueError, match="weights.h5"):
        fcn_model.save_fcn_weights(small_model, tmp_path / "fcn.h5")


def test_vgg_file_is_not_an_fcn_checkpoint(tmp_path):
    path = tmp_path / VGG16_NOTOP_FILE
    write_vgg16_notop_file(path)
    assert not fcn_model.is_fcn_checkpoint(path)
    model = load_fcn(path, fc_width=SMALL)  # goes to the backbone, not the whole model
    assert model.get_layer("fc6").kernel.shape[-1] == SMALL


def test_weights_none_from_the_command_line_means_random_initialisation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no file called "none" anywhere to be found
    keras.utils.set_random_seed(3)
    model = load_fcn("none", fc_width=SMALL)
    kernel = model.get_layer("block1_conv1").kernel.numpy()
    assert kernel.shape == (3, 3, 3, 64) and kernel.std() > 0  # He normal, not loaded
    assert os.listdir(tmp_path) == []
