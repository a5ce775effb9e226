"""mrcnn.weights: Keras 2 layout HDF5 files (matterport's COCO file, ImageNet ResNet-50, ours).

The Keras 2 files are written here with h5py directly, so the test does not trust the writer it
is testing the reader against. The tests marked ``backends`` (matterport's COCO layout, the round
trip, the shipped nucleus model) run again under ``KERAS_BACKEND=jax``.
"""
from __future__ import annotations

import os

import h5py
import keras
import numpy as np
import pytest

from mrcnn import utils
from mrcnn import weights as weights_io
from mrcnn.weights import WeightsError
from seeded_weights import set_detecting_weights
from synthetic import EllipseDataset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(REPO, "weights", "mask_rcnn_nucleus.h5")

COCO_HEADS_EXCLUDE = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]
RPN_WEIGHT_NAMES = ["rpn_conv_shared/kernel:0", "rpn_conv_shared/bias:0",
                    "rpn_class_raw/kernel:0", "rpn_class_raw/bias:0",
                    "rpn_bbox_pred/kernel:0", "rpn_bbox_pred/bias:0"]
BN_NAMES = ["gamma", "beta", "moving_mean", "moving_variance"]


@pytest.fixture(scope="module")
def model(inference_model):
    """The shared tiny model; its weights are put back after this module."""
    saved = inference_model.keras_model.get_weights()
    yield inference_model
    inference_model.keras_model.set_weights(saved)


def layer(model, name):
    for unit in weights_io.weight_units(model.keras_model):
        if unit.name == name:
            return unit
    raise KeyError(name)


def values_of(model, name):
    return [w.numpy() for w in layer(model, name).weights]


def keras2_names(model, name) -> list[str]:
    """Weight names as Keras 2 wrote them ('conv1/kernel:0', 'bn_conv1/moving_mean:0' ...)."""
    if name == "rpn_model":
        return RPN_WEIGHT_NAMES
    unit = layer(model, name)
    if len(unit.weights) == 4:
        return [f"{name}/{w}:0" for w in BN_NAMES]
    return [f"{name}/kernel:0", f"{name}/bias:0"][:len(unit.weights)]


def random_like(rng, shapes, names):
    out = []
    for shape, wname in zip(shapes, names):
        v = rng.normal(0, 0.05, shape).astype(np.float32)
        if "variance" in wname:
            v = np.abs(v) + 0.5
        out.append(v)
    return out


def write_keras2(path, layers: list[tuple[str, list[str], list[np.ndarray]]]) -> None:
    """A weights file exactly as Keras 2's ``save_weights`` laid it out."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode("utf8") for n, _, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, wnames, values in layers:
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([w.encode("utf8") for w in wnames])
            for wname, value in zip(wnames, values):
                g.create_dataset(wname, data=value)  # "conv1/kernel:0" nests as Keras 2 did


LOADED = ["conv1", "bn_conv1", "res2a_branch2a", "fpn_p2", "rpn_model", "mrcnn_class_conv1",
          "mrcnn_mask_conv1"]
EXCLUDED = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"]


def coco_like_file(model, path, seed=0, overrides=None):
    """Model layers (loaded and excluded ones), layers the model lacks, a weightless layer."""
    rng = np.random.default_rng(seed)
    overrides = overrides or {}
    layers, expected = [], {}
    for name in LOADED + EXCLUDED:
        wnames = keras2_names(model, name)
        shapes = overrides.get(name, [w.shape for w in layer(model, name).weights])
        values = random_like(rng, shapes, wnames)
        layers.append((name, wnames, values))
        expected[name] = values
    layers.insert(1, ("input_image", [], []))
    layers.append(("mrcnn_bbox", [], []))
    layers.append(("extra_dense", ["extra_dense/kernel:0", "extra_dense/bias:0"],
                   [np.ones((3, 5), np.float32), np.ones(5, np.float32)]))
    layers.append(("res4w_branch2a", ["res4w_branch2a/kernel:0"],
                   [np.ones((1, 1, 8, 8), np.float32)]))
    write_keras2(path, layers)
    return expected


@pytest.mark.backends
def test_keras2_file_loads_by_name_into_the_right_layers(model, tmp_path):
    path = tmp_path / "mask_rcnn_coco_like.h5"
    expected = coco_like_file(model, path)
    before = {name: values_of(model, name) for name in EXCLUDED}
    loaded = model.load_weights(str(path), by_name=True, exclude=COCO_HEADS_EXCLUDE)
    assert sorted(loaded) == sorted(LOADED)
    for name in LOADED:
        for got, want in zip(values_of(model, name), expected[name]):
            np.testing.assert_array_equal(got, want, err_msg=name)
    bn = layer(model, "bn_conv1")
    np.testing.assert_array_equal(bn.moving_mean.numpy(), expected["bn_conv1"][2])
    np.testing.assert_array_equal(bn.moving_variance.numpy(), expected["bn_conv1"][3])
    rpn = model.keras_model.rpn_model
    np.testing.assert_array_equal(rpn.get_layer("rpn_bbox_pred").kernel.numpy(),
                                  expected["rpn_model"][4])
    for name in EXCLUDED:
        for got, old in zip(values_of(model, name), before[name]):
            np.testing.assert_array_equal(got, old, err_msg=f"{name} should be untouched")


def test_exclude_accepts_regular_expressions(model, tmp_path):
    path = tmp_path / "w.h5"
    expected = coco_like_file(model, path, seed=3)
    before = values_of(model, "mrcnn_class_conv1")
    loaded = model.load_weights(str(path), by_name=True, exclude=[r"mrcnn_.*"])
    assert sorted(loaded) == ["bn_conv1", "conv1", "fpn_p2", "res2a_branch2a", "rpn_model"]
    np.testing.assert_array_equal(values_of(model, "conv1")[0], expected["conv1"][0])
    np.testing.assert_array_equal(values_of(model, "mrcnn_class_conv1")[0], before[0])


def test_shape_mismatch_names_file_and_layer_and_changes_nothing(model, tmp_path):
    path = tmp_path / "bad.h5"
    kernel, bias = [w.shape for w in layer(model, "fpn_p2").weights]
    coco_like_file(model, path, seed=1,
                   overrides={"fpn_p2": [(3, 3, kernel[2], kernel[3] + 1), (bias[0] + 1,)]})
    before = model.keras_model.get_weights()
    with pytest.raises(WeightsError) as info:
        model.load_weights(str(path), by_name=True, exclude=COCO_HEADS_EXCLUDE)
    message = str(info.value)
    assert str(path) in message and "fpn_p2" in message
    after = model.keras_model.get_weights()
    assert len(after) == len(before)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a, b)  # conv1 etc. came first in the file, yet unchanged


def test_missing_coco_file_says_where_to_get_it(model, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        model.load_weights(str(tmp_path / "mask_rcnn_coco.h5"), by_name=True)
    assert "mask_rcnn_coco.h5" in str(info.value)
    assert weights_io.COCO_WEIGHTS_URL in str(info.value)


def test_not_a_weights_file_is_a_weights_error(model, tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not hdf5")
    with pytest.raises(WeightsError, match="notes.h5"):
        model.load_weights(str(path))
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError, match="layer_names"):
        model.load_weights(str(tmp_path / "empty.h5"))


def perturb(model, seed):
    rng = np.random.default_rng(seed)
    model.keras_model.set_weights([rng.normal(0, 0.01, w.shape).astype(w.dtype) + 0.5
                                   for w in model.keras_model.get_weights()])


def detections(model, images) -> list[dict]:
    return [model.detect([image])[0] for image in images]


def assert_same_detections(got: list[dict], want: list[dict]) -> None:
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w)
        for key in w:
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)


@pytest.mark.backends
def test_save_load_round_trip_float32_exact_and_float16(model, tmp_path):
    set_detecting_weights(model.keras_model, 3)
    images = [EllipseDataset(2, seed=9).load_image(i) for i in range(2)]
    before = detections(model, images)
    assert all(len(r["scores"]) > 0 for r in before)
    assert len(np.unique(np.concatenate([r["scores"] for r in before]))) > 5   # not all alike
    original = model.keras_model.get_weights()
    path32, path16 = tmp_path / "w32.h5", tmp_path / "w16.h5"
    model.save_weights(str(path32))
    model.save_weights(str(path16), dtype="float16")
    assert os.path.getsize(path16) < 0.6 * os.path.getsize(path32)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]

    set_detecting_weights(model.keras_model, 4)
    other = detections(model, images)                 # the weights do decide the detections
    assert any(len(o["scores"]) != len(b["scores"]) or not np.array_equal(o["rois"], b["rois"])
               for o, b in zip(other, before))
    model.load_weights(str(path32))          # by_name=False: matched in order
    for got, want in zip(model.keras_model.get_weights(), original):
        np.testing.assert_array_equal(got, want)
    assert_same_detections(detections(model, images), before)

    perturb(model, 12)
    model.load_weights(str(path16), by_name=True)
    for got, want in zip(model.keras_model.get_weights(), original):
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want.astype(np.float16).astype(np.float32))

    attrs = weights_io.read_attrs(str(path32))
    assert "mrcnn_config" in attrs and '"NAME": "tiny"' in attrs["mrcnn_config"]


def test_float16_file_keeps_values_float16_cannot_hold(model, tmp_path):
    """A trained BatchNorm's moving variance can pass float16's largest value (65504): such an
    array stays float32 in the file (an infinite variance would silence its channel), the
    others are halved."""
    saved = values_of(model, "bn_conv1")
    try:
        variance = layer(model, "bn_conv1").moving_variance
        big = keras.ops.convert_to_numpy(variance).copy()
        big[0] = 69200.0
        variance.assign(big)
        path = tmp_path / "w16.h5"
        model.save_weights(str(path), dtype="float16")
        with h5py.File(path, "r") as f:
            group = f["bn_conv1"]
            stored = {n.decode(): group[n.decode()] for n in group.attrs["weight_names"]}
            kinds = {n.rsplit("/", 1)[-1]: d.dtype for n, d in stored.items()}
            assert kinds["moving_variance:0"] == np.float32
            assert kinds["gamma:0"] == np.float16
        perturb(model, 13)
        model.load_weights(str(path), by_name=True)
        got = keras.ops.convert_to_numpy(layer(model, "bn_conv1").moving_variance)
        assert np.isfinite(got).all() and got[0] == 69200.0
    finally:
        for weight, value in zip(layer(model, "bn_conv1").weights, saved):
            weight.assign(value)


def test_saved_file_has_keras2_layout_and_no_pickled_objects(model, tmp_path):
    path = tmp_path / "w.h5"
    model.save_weights(str(path))
    datasets, attributes = [], []
    with h5py.File(path, "r") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert names == [u.name for u in weights_io.weight_units(model.keras_model)]
        assert "conv1" in names and "rpn_model" in names and "mrcnn_mask" in names
        rpn_names = [n.decode() for n in f["rpn_model"].attrs["weight_names"]]
        assert rpn_names == RPN_WEIGHT_NAMES
        assert [n.decode() for n in f["bn_conv1"].attrs["weight_names"]] == \
            [f"bn_conv1/{w}:0" for w in BN_NAMES]
        assert f["conv1"]["conv1/kernel:0"].shape == (7, 7, 3, 64)

        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                datasets.append((name, obj.dtype))
            attributes.extend((name, k, v) for k, v in obj.attrs.items())

        f.visititems(visit)
        attributes.extend(("/", k, v) for k, v in f.attrs.items())
    assert len(datasets) == len(model.keras_model.weights)
    for name, dtype in datasets:
        assert dtype.kind in "fiu", (name, dtype)  # plain numbers: nothing to unpickle
    for name, key, value in attributes:
        value = np.asarray(value)
        assert value.dtype.kind in "SUfiub", (name, key, value.dtype)


def test_by_name_false_needs_the_same_layer_count(model, tmp_path):
    path = tmp_path / "few.h5"
    coco_like_file(model, path)
    with pytest.raises(WeightsError, match="by_name=True"):
        model.load_weights(str(path), by_name=False)


def test_imagenet_resnet50_file_loads_into_the_backbone_by_name(model, tmp_path):
    """Keras 2 ResNet-50 'notop' layout: conv1, bn_conv1, res2a_branch2a ... res5c_branch2c."""
    backbone = [u for u in model.keras_model.backbone.layers
                if u.weights and not u.name.startswith("fpn_")]
    assert len(backbone) == 53 * 2  # 53 convolutions, each with its BatchNorm
    rng = np.random.default_rng(5)
    layers = [("input_1", [], []), ("zero_padding2d_1", [], [])]
    expected = {}
    for unit in backbone:
        wnames = keras2_names(model, unit.name)
        values = random_like(rng, [w.shape for w in unit.weights], wnames)
        layers.append((unit.name, wnames, values))
        expected[unit.name] = values
    layers.append(("avg_pool", [], []))
    path = tmp_path / weights_io.IMAGENET_RESNET50_FILE
    write_keras2(path, layers)
    fpn_before = values_of(model, "fpn_p2")
    loaded = model.load_weights(str(path), by_name=True)
    assert sorted(loaded) == sorted(expected)
    for name in ("conv1", "bn_conv1", "res2a_branch2a", "res3b_branch2b", "bn4f_branch2c",
                 "res5c_branch2c", "res5a_branch1"):
        for got, want in zip(values_of(model, name), expected[name]):
            np.testing.assert_array_equal(got, want, err_msg=name)
    for got, old in zip(values_of(model, "fpn_p2"), fpn_before):
        np.testing.assert_array_equal(got, old)


def test_the_imagenet_file_is_found_locally_or_fetched_or_said_where_to_get(tmp_path,
                                                                           monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    local = tmp_path / ".keras" / "models" / weights_io.IMAGENET_RESNET50_FILE
    fetched = []

    def get_file(name, url, cache_subdir):
        fetched.append((name, url, cache_subdir))
        if len(fetched) > 1:
            raise OSError("no network")
        return "downloaded.h5"

    monkeypatch.setattr(keras.utils, "get_file", get_file)
    assert weights_io.get_imagenet_weights() == "downloaded.h5"
    assert fetched == [(weights_io.IMAGENET_RESNET50_FILE, weights_io.IMAGENET_RESNET50_URL,
                        "models")]
    with pytest.raises(FileNotFoundError) as info:
        weights_io.get_imagenet_weights()
    message = str(info.value)
    assert message.startswith(f"{local}: ImageNet ResNet-50 weights not found")
    assert "(OSError)" in message and weights_io.IMAGENET_RESNET50_URL in message
    local.parent.mkdir(parents=True)
    local.write_bytes(b"")
    assert weights_io.get_imagenet_weights() == str(local)
    assert len(fetched) == 2                          # a local file is not fetched again


# ----------------------------------------------------------------------------- Keras 3 files
def test_keras3_weights_file_of_our_model_loads_by_name_and_with_exclude(model, tmp_path):
    perturb(model, 20)
    units = [u.name for u in weights_io.weight_units(model.keras_model)]
    saved = {name: values_of(model, name) for name in units}
    path = tmp_path / "mine.weights.h5"
    model.keras_model.save_weights(str(path))        # what matterport's users write
    with h5py.File(path, "r") as f:
        assert "layer_names" not in f.attrs            # Keras 3's own layout, not ours

    def check(names, expected):
        for name in names:
            for got, want in zip(values_of(model, name), expected[name]):
                np.testing.assert_array_equal(got, want, err_msg=name)

    perturb(model, 21)
    assert sorted(model.load_weights(str(path), by_name=True)) == sorted(units)
    check(units, saved)

    perturb(model, 22)
    skipped = EXCLUDED + ["rpn_model"]
    before = {name: values_of(model, name) for name in skipped}
    loaded = model.load_weights(str(path), by_name=True,
                                exclude=COCO_HEADS_EXCLUDE + ["rpn_model"])
    assert sorted(loaded) == sorted(set(units) - set(skipped))
    check(loaded, saved)
    check(skipped, before)

    perturb(model, 23)
    model.load_weights(str(path))                     # by_name=False: every layer is there
    check(units, saved)


def test_keras3_file_layers_are_matched_by_name(model, tmp_path):
    fan_in, classes = layer(model, "mrcnn_class_logits").weights[0].shape
    other = keras.Sequential([keras.Input((fan_in,)),
                              keras.layers.Dense(classes, name="mrcnn_class_logits"),
                              keras.layers.Dense(3, name="not_in_mask_rcnn")])
    path = tmp_path / "other.weights.h5"
    other.save_weights(str(path))
    conv1 = values_of(model, "conv1")
    assert model.load_weights(str(path), by_name=True) == ["mrcnn_class_logits"]
    np.testing.assert_array_equal(values_of(model, "mrcnn_class_logits")[0],
                                  other.layers[0].kernel.numpy())
    np.testing.assert_array_equal(values_of(model, "conv1")[0], conv1[0])
    with pytest.raises(WeightsError, match="by_name=True") as info:
        model.load_weights(str(path))
    assert "conv1" in str(info.value) and str(path) in str(info.value)

    def strip_name(name, obj) -> None:                # as Keras before 3.10 wrote it
        if "name" in obj.attrs:
            del obj.attrs["name"]

    with h5py.File(path, "a") as f:
        f.visititems(strip_name)
        assert not [n for n in f if "name" in f[n].attrs]
    with pytest.raises(WeightsError, match="without layer names"):
        model.load_weights(str(path), by_name=True)


def test_in_order_loading_also_leaves_excluded_layers_alone(model, tmp_path):
    """by_name=False matches layers by position; ``exclude`` must still hold (both layouts)."""
    perturb(model, 30)
    conv1 = values_of(model, "conv1")
    keras2, keras3 = tmp_path / "ours.h5", tmp_path / "keras3.weights.h5"
    model.save_weights(str(keras2))
    model.keras_model.save_weights(str(keras3))
    for path in (keras2, keras3):
        perturb(model, 31)
        before = {name: values_of(model, name) for name in EXCLUDED}
        loaded = model.load_weights(str(path), exclude=[r"mrcnn_(class_logits|bbox_fc|mask)"])
        assert not set(EXCLUDED) & set(loaded) and "conv1" in loaded
        for name in EXCLUDED:
            for got, old in zip(values_of(model, name), before[name]):
                np.testing.assert_array_equal(got, old, err_msg=f"{path.name}: {name}")
        np.testing.assert_array_equal(values_of(model, "conv1")[0], conv1[0])


@pytest.mark.backends
def test_read_attrs_gives_text_for_text_attributes(model, tmp_path):
    path = tmp_path / "w.h5"
    model.save_weights(str(path))                     # backend, keras_version: byte strings
    attrs = weights_io.read_attrs(str(path))
    assert attrs["backend"] == keras.backend.backend()  # the backend that wrote it
    assert attrs["keras_version"] == keras.__version__
    with h5py.File(path, "a") as f:                   # fixed-length, as h5py 2 wrote Keras 2's
        f.attrs["keras_version"] = np.bytes_(b"2.2.4")
    assert weights_io.read_attrs(str(path))["keras_version"] == "2.2.4"
    assert isinstance(attrs["mrcnn_config"], str) and '"NAME": "tiny"' in attrs["mrcnn_config"]


@pytest.mark.backends
def test_loading_ignores_which_backend_wrote_the_file(model, tmp_path):
    """The arrays are the same on every backend: a file another backend wrote (its name in the
    ``backend`` attribute, as ours and Keras 2's files record it) loads the same."""
    perturb(model, 40)
    original = model.keras_model.get_weights()
    ours = keras.backend.backend()
    for writer in ("tensorflow", "jax", "torch", "theano"):
        path = tmp_path / f"{writer}.h5"
        model.save_weights(str(path))
        assert weights_io.read_attrs(str(path))["backend"] == ours
        with h5py.File(path, "a") as f:
            f.attrs["backend"] = writer.encode()
        perturb(model, 41)
        model.load_weights(str(path), by_name=writer == "jax")
        assert weights_io.read_attrs(str(path))["backend"] == writer
        for got, want in zip(model.keras_model.get_weights(), original):
            np.testing.assert_array_equal(got, want)


def test_keras3_file_without_layer_names_says_how_to_load_it(model, tmp_path):
    path = tmp_path / "old.weights.h5"
    model.keras_model.save_weights(str(path))

    def strip_name(name, obj) -> None:
        obj.attrs.pop("name", None)

    with h5py.File(path, "a") as f:
        f.visititems(strip_name)
    with pytest.raises(WeightsError) as info:
        model.load_weights(str(path), by_name=True)
    assert str(info.value) == (
        f"{path}: a Keras 3 weights file without layer names (Keras before 3.10 wrote none), "
        "so its layers cannot be matched by name; load it with keras_model.load_weights(path) "
        "into the same model")


def test_not_a_weights_file_message(model, tmp_path):
    with h5py.File(tmp_path / "data.h5", "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsError) as info:
        model.load_weights(str(tmp_path / "data.h5"))
    assert str(info.value) == (
        f"{tmp_path / 'data.h5'}: neither a Keras 2 'layer_names' attribute nor Keras 3 layer "
        "groups; not a Keras HDF5 weights file")


def test_keras3_layer_with_more_than_ten_variables_keeps_their_order(tmp_path):
    """Keras 3 numbers a layer's arrays "0", "1" ... "11": "10" must not come before "2"."""
    class Many(keras.layers.Layer):
        def build(self, input_shape):
            self.parts = [self.add_weight(shape=(k + 1,), initializer="zeros", name=f"w{k}")
                          for k in range(12)]

        def call(self, x):
            return x

    def network():
        inputs = keras.Input((3,))
        return keras.Model(inputs, Many(name="many")(inputs))

    source, target = network(), network()
    for k, w in enumerate(source.get_layer("many").parts):
        w.assign(np.full(k + 1, float(k), np.float32))
    path = tmp_path / "many.weights.h5"
    source.save_weights(str(path))
    assert weights_io.load_weights(target, str(path), by_name=True) == ["many"]
    for k, w in enumerate(target.get_layer("many").parts):
        np.testing.assert_array_equal(w.numpy(), np.full(k + 1, float(k)))


def test_file_errors_name_the_file_and_the_problem(model, tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError) as info:
        weights_io.read_attrs(str(missing))
    assert str(info.value) == f"{missing}: weights file not found"
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5" * 20)
    with pytest.raises(WeightsError) as info:
        weights_io.read_attrs(str(garbage))
    assert str(info.value).startswith(f"{garbage}: not a readable HDF5 weights file (")
    few = tmp_path / "few.h5"
    coco_like_file(model, few)
    n_units = len(weights_io.weight_units(model.keras_model))
    with pytest.raises(WeightsError) as info:
        model.load_weights(str(few))
    assert str(info.value) == (
        f"{few}: holds 12 layers with weights, the model has {n_units}; load with "
        "by_name=True to match layers by name")
    with pytest.raises(WeightsError, match="by_name=True"):       # in order unless asked
        weights_io.load_weights(model.keras_model, str(few))


def test_a_layer_with_the_wrong_number_of_arrays_is_refused(model, tmp_path):
    path = tmp_path / "short.h5"
    kernel = layer(model, "conv1").weights[0].numpy()
    write_keras2(path, [("conv1", ["conv1/kernel:0"], [kernel])])   # no bias
    with pytest.raises(WeightsError) as info:
        model.load_weights(str(path), by_name=True)
    assert str(info.value) == (f"{path}: layer 'conv1' has 1 weights in the file, the model's "
                               "layer expects 2")


def test_keras2_whole_model_file_loads_its_weights(model, tmp_path):
    """``model.save`` in Keras 2 put the weights under a ``model_weights`` group."""
    path = tmp_path / "whole.h5"
    rng = np.random.default_rng(8)
    kernel = rng.normal(0, 0.1, layer(model, "conv1").weights[0].shape).astype(np.float32)
    bias = np.full(layer(model, "conv1").weights[1].shape, 0.25, np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["model_config"] = b"{}"
        g = f.create_group("model_weights")
        g.attrs["layer_names"] = np.array([b"conv1"])
        layer_group = g.create_group("conv1")
        layer_group.attrs["weight_names"] = np.array([b"conv1/kernel:0", b"conv1/bias:0"])
        layer_group.create_dataset("conv1/kernel:0", data=kernel)
        layer_group.create_dataset("conv1/bias:0", data=bias)
    assert model.load_weights(str(path), by_name=True) == ["conv1"]
    np.testing.assert_array_equal(values_of(model, "conv1")[0], kernel)
    np.testing.assert_array_equal(values_of(model, "conv1")[1], bias)


def test_keras3_bfloat16_weights_load_as_keras_reads_them(tmp_path):
    def network():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(3, dtype="bfloat16", name="d")(inputs))

    source, target = network(), network()
    kernel = np.arange(12, dtype=np.float32).reshape(4, 3) / 8     # exact in bfloat16
    source.get_layer("d").kernel.assign(kernel)
    path = tmp_path / "bf16.weights.h5"
    source.save_weights(str(path))
    assert weights_io.load_weights(target, str(path), by_name=True) == ["d"]
    np.testing.assert_array_equal(np.asarray(target.get_layer("d").kernel.numpy(), np.float32),
                                  kernel)

    def as_bytes(name, obj) -> None:                  # the marker as a byte string
        if obj.attrs.get("dtype") == "bfloat16":
            obj.attrs["dtype"] = np.bytes_(b"bfloat16")

    with h5py.File(path, "a") as f:
        f.visititems(as_bytes)
    target.get_layer("d").kernel.assign(np.zeros_like(kernel))
    weights_io.load_weights(target, str(path), by_name=True)
    np.testing.assert_array_equal(np.asarray(target.get_layer("d").kernel.numpy(), np.float32),
                                  kernel)


def test_saved_arrays_keep_their_dtype_unless_floats_are_halved(tmp_path):
    class Counted(keras.layers.Layer):
        def build(self, input_shape):
            self.scale = self.add_weight(shape=(3,), initializer="ones", name="scale")
            self.count = self.add_weight(shape=(), initializer="zeros", dtype="int32",
                                         trainable=False, name="count")

        def call(self, x):
            return x * self.scale

    inputs = keras.Input((3,))
    network = keras.Model(inputs, Counted(name="counted")(inputs))
    network.get_layer("counted").count.assign(7)
    for dtype, float_kind in ((None, np.float32), ("float16", np.float16)):
        path = tmp_path / f"{dtype}.h5"
        weights_io.save_weights(network, str(path), dtype=dtype)
        with h5py.File(path, "r") as f:
            group = f["counted"]
            names = [n.decode() for n in group.attrs["weight_names"]]
            assert group[names[0]].dtype == float_kind
            assert group[names[1]].dtype == np.int32 and group[names[1]][()] == 7


def test_keras3_file_missing_layers_are_named_five_at_most(model, tmp_path):
    path = tmp_path / "part.weights.h5"
    model.keras_model.save_weights(str(path))
    plain = [u.name for u in weights_io.weight_units(model.keras_model)
             if not isinstance(u, keras.Model)][-6:]
    for gone in (plain[:5], plain):
        part = tmp_path / f"part{len(gone)}.weights.h5"
        part.write_bytes(path.read_bytes())
        with h5py.File(part, "a") as f:
            doomed = []
            f.visititems(lambda name, obj: doomed.append(name)
                         if obj.attrs.get("name") in gone else None)
            for name in doomed:
                del f[name]
        with pytest.raises(WeightsError) as info:
            model.load_weights(str(part))
        listed = ", ".join(gone[:5]) + (" ..." if len(gone) > 5 else "")
        assert str(info.value) == (f"{part}: the model's layers {listed} are not in the file; "
                                   "load with by_name=True to load the layers it has")


def test_a_layer_called_model_weights_does_not_hide_the_root_list(model, tmp_path):
    path = tmp_path / "odd.h5"
    kernel = np.full(layer(model, "conv1").weights[0].shape, 0.5, np.float32)
    bias = np.zeros(layer(model, "conv1").weights[1].shape, np.float32)
    write_keras2(path, [("model_weights", [], []),
                        ("conv1", ["conv1/kernel:0", "conv1/bias:0"], [kernel, bias])])
    assert model.load_weights(str(path), by_name=True) == ["conv1"]
    np.testing.assert_array_equal(values_of(model, "conv1")[0], kernel)


# ----------------------------------------------------------------------------- the shipped model
@pytest.mark.backends
def test_shipped_nucleus_weights_load_exactly_and_find_nuclei(tmp_path):
    """``weights/mask_rcnn_nucleus.h5`` rebuilds its network from the configuration it carries,
    loads every layer (float16 in the file, exactly those values in float32 variables), and
    finds the nuclei of two bundled validation images (mask AP@0.5 measured 0.67 and 0.77 on
    TensorFlow and JAX alike)."""
    from mrcnn import model as modellib
    from nucleus.dataset import load_subset
    from nucleus.inference.nucleus_model import config_from_weights

    config = config_from_weights(SHIPPED, inference=True)
    assert config.IMAGE_NORMALIZATION == "stretch"
    network = modellib.MaskRCNN("inference", config, str(tmp_path))
    units = weights_io.weight_units(network.keras_model)
    assert sorted(network.load_weights(SHIPPED, by_name=True)) == sorted(u.name for u in units)
    net = network.keras_model
    with h5py.File(SHIPPED, "r") as f:
        for name, variable in [("conv1", net.backbone.get_layer("conv1").kernel),
                               ("bn5c_branch2c", net.backbone.get_layer("bn5c_branch2c")
                                .moving_variance),
                               ("fpn_p2", net.get_layer("fpn_p2").kernel),
                               ("rpn_model", net.rpn_model.get_layer("rpn_class_raw").kernel),
                               ("mrcnn_mask", net.mrcnn_mask.kernel)]:
            group = f[name]
            leaf = variable.path.split("/")[-2]
            stored = [n.decode() for n in group.attrs["weight_names"]
                      if n.decode().startswith(f"{leaf}/{variable.name}")]
            assert len(stored) == 1, (name, stored)
            value = group[stored[0]][()]
            assert value.dtype == np.float16
            np.testing.assert_array_equal(variable.numpy(), value.astype(np.float32))

    dataset = load_subset(None, "val", limit=2)
    aps = []
    for image_id in dataset.image_ids:
        gt_masks, gt_class_ids = dataset.load_mask(image_id)
        r = network.detect([dataset.load_image(image_id)])[0]
        assert len(r["scores"]) >= len(gt_class_ids) // 2
        ap, *_ = utils.compute_ap(utils.extract_bboxes(gt_masks), gt_class_ids, gt_masks,
                                  r["rois"], r["class_ids"], r["scores"], r["masks"],
                                  iou_threshold=0.5)
        aps.append(ap)
    assert np.mean(aps) >= 0.6, aps
