"""mrcnn/heads.py: the box and mask heads, and the two layers they compute as products
(whole-input conv, stride-2 deconv), which must equal the Keras layers they stand for, since
the weights (matterport's and ours) are those layers' kernels."""
from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import ops

from mrcnn import backend_ops, heads

pytestmark = pytest.mark.backends


def _numpy(x) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(x), np.float32)


def test_whole_input_conv_equals_the_valid_conv_layer():
    rng = np.random.default_rng(0)
    layer = keras.layers.Conv2D(32, 5, padding="valid", activation="relu")
    x = rng.normal(size=(6, 5, 5, 8)).astype(np.float32)
    expected = _numpy(layer(x))                 # builds it, with random kernel and zero bias
    layer.bias.assign(rng.normal(size=32).astype(np.float32))
    expected = _numpy(layer(x))
    got = _numpy(heads.whole_input_conv(layer, x))
    assert got.shape == expected.shape == (6, 1, 1, 32)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("generic", [True, False])
def test_stride_two_deconv_equals_the_transposed_conv_layer(monkeypatch, generic):
    rng = np.random.default_rng(1)
    layer = keras.layers.Conv2DTranspose(16, 2, strides=2, activation="relu")
    x = rng.normal(size=(3, 4, 5, 8)).astype(np.float32)
    layer.build(x.shape)
    layer.bias.assign(rng.normal(size=16).astype(np.float32))
    expected = _numpy(layer(x))
    monkeypatch.setattr(backend_ops, "uses_fused_kernels", lambda generic_=None: not generic)
    got = _numpy(heads.stride_two_deconv(layer, x))
    assert got.shape == expected.shape == (3, 8, 10, 16)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    # each input pixel fills its own 2x2 block: a change at (1, 2) moves only rows 2-3, cols 4-5
    x2 = x.copy()
    x2[:, 1, 2] += 1.0
    changed = np.any(_numpy(heads.stride_two_deconv(layer, x2)) != got, axis=(0, 3))
    assert set(zip(*np.nonzero(changed))) <= {(2, 4), (2, 5), (3, 4), (3, 5)}


def test_products_build_unbuilt_layers_and_follow_the_dtype_policy():
    layer = keras.layers.Conv2D(4, 3, padding="valid", dtype="mixed_bfloat16")
    x = np.ones((2, 3, 3, 5), np.float32)
    y = heads.whole_input_conv(layer, x)
    assert layer.built and tuple(layer.kernel.shape) == (3, 3, 5, 4)
    assert keras.backend.standardize_dtype(y.dtype) == "bfloat16"


def test_heads_give_shapes_and_dtypes_of_the_stages_table():
    box = heads.build_box_head(num_classes=3, fc_size=64, pool_size=7, train_bn=False)
    mask = heads.build_mask_head(num_classes=3, train_bn=False, conv_size=32)
    rng = np.random.default_rng(2)
    logits, probs, deltas = heads.box_head(box, rng.normal(size=(5, 7, 7, 16)).astype(
        np.float32), False)
    assert tuple(logits.shape) == (5, 3) and tuple(deltas.shape) == (5, 3, 4)
    np.testing.assert_allclose(_numpy(ops.sum(probs, axis=1)), 1.0, rtol=1e-5)
    masks = heads.mask_head(mask, rng.normal(size=(4, 14, 14, 16)).astype(np.float32), False)
    assert tuple(masks.shape) == (4, 28, 28, 3) and keras.backend.standardize_dtype(masks.dtype) == "float32"
    values = _numpy(masks)
    assert values.min() >= 0.0 and values.max() <= 1.0
