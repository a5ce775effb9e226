"""mrcnn/backend.py: which backend runs, and TensorBoard curves written under every backend.

Marked ``backends``: the README's test command runs these under TensorFlow and again under JAX,
where the files must come out the same without TensorFlow.
"""
from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from mrcnn import backend

pytestmark = pytest.mark.backends


def read_scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the TensorBoard event files in ``folder``: tag -> [(step, value)].

    TensorBoard's own reader, which sees ``simple_value`` and tensor summaries (what Keras's
    callback writes under TensorFlow) alike."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def test_is_tensorflow_follows_keras_backend_setting():
    expected = os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow"
    assert backend.is_tensorflow() is expected
    assert backend.name() == keras.backend.backend()


def test_require_tensorflow_names_the_feature_and_the_backend():
    if backend.is_tensorflow():
        backend.require_tensorflow("multi-worker training")  # nothing to say
    else:
        with pytest.raises(ValueError, match=r"multi-worker training needs the TensorFlow "
                                             r"backend, but Keras runs on jax"):
            backend.require_tensorflow("multi-worker training")


def test_write_scalars_appends_steps_tensorboard_reads(tmp_path):
    backend.write_scalars(str(tmp_path), {"val_map": 0.25, "val_map_colour": 0.5}, step=5)
    backend.write_scalars(str(tmp_path), {"val_map": np.float32(0.375)}, step=15)
    scalars = read_scalars(tmp_path)
    assert scalars["val_map"] == [(5, 0.25), (15, 0.375)]
    assert scalars["val_map_colour"] == [(5, 0.5)]


def test_logging_callbacks_write_keras_tensorboard_layout(tmp_path):
    callbacks = backend.training_callbacks_for_logging(str(tmp_path))
    kind = keras.callbacks.TensorBoard if backend.is_tensorflow() else backend.EpochScalars
    assert [type(c) for c in callbacks] == [kind]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    x = np.arange(24, dtype="float32").reshape(8, 3) / 24
    y = x.sum(axis=1, keepdims=True)
    history = model.fit(x, y, validation_data=(x[:4], y[:4]), epochs=2, batch_size=4,
                        verbose=0, callbacks=callbacks)
    train, validation = read_scalars(tmp_path / "train"), read_scalars(tmp_path / "validation")
    assert [s for s, _ in train["epoch_loss"]] == [0, 1]
    np.testing.assert_allclose([v for _, v in train["epoch_loss"]], history.history["loss"],
                               rtol=1e-6)
    np.testing.assert_allclose([v for _, v in validation["epoch_loss"]],
                               history.history["val_loss"], rtol=1e-6)
    assert not any(tag.startswith("epoch_val_") for tag in train)


def test_epoch_scalars_keep_appending_after_a_resumed_fit(tmp_path):
    callback = backend.EpochScalars(str(tmp_path))
    callback.on_epoch_end(0, {"loss": 2.0, "val_loss": 3.0})
    callback.on_train_end()
    callback.on_epoch_end(1, {"loss": 1.0})  # a second fit with the same callback
    callback.on_train_end()
    assert read_scalars(tmp_path / "train")["epoch_loss"] == [(0, 2.0), (1, 1.0)]
    assert read_scalars(tmp_path / "validation") == {"epoch_loss": [(0, 3.0)]}
