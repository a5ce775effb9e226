"""Which Keras backend runs, and TensorBoard logging that needs no TensorFlow.

TensorFlow is the default backend, but the model also runs under JAX (``KERAS_BACKEND=jax``) on
machines that have no TensorFlow installed. Keras's own TensorBoard callback writes through
``tf.summary``, so under any other backend the curves go through TensorBoard's own event-file
writer instead (the ``tensorboard`` package, which does not need TensorFlow); the files look
the same to TensorBoard: ``train/`` and ``validation/`` folders with ``epoch_<metric>`` tags.
"""
from __future__ import annotations

import os
import sys
import time
import types
from typing import Mapping

import keras
from tensorboard.compat.proto import event_pb2, summary_pb2


def name() -> str:
    """The Keras backend of this process (``tensorflow``, ``jax``, ...)."""
    return keras.backend.backend()


def is_tensorflow() -> bool:
    """Whether Keras runs on TensorFlow (the default): ``tf.distribute`` and ``tf.summary``
    exist only then."""
    return name() == "tensorflow"


def require_tensorflow(feature: str) -> None:
    """Stop with a clear message when ``feature`` needs the TensorFlow backend.

    Raises ValueError (the setting ``KERAS_BACKEND`` is what is wrong), which the command line
    reports as one ``error:`` line.
    """
    if not is_tensorflow():
        raise ValueError(f"{feature} needs the TensorFlow backend, but Keras runs on "
                         f"{name()} (KERAS_BACKEND={os.environ.get('KERAS_BACKEND', '')!r}); "
                         "unset KERAS_BACKEND or set it to tensorflow")


def _event_writer(log_dir: str):
    """TensorBoard's event-file writer, kept away from TensorFlow under other backends.

    TensorBoard reaches files through ``tensorboard.compat.tf``, which imports TensorFlow when
    it is installed; the (empty) module ``tensorboard.compat.notf`` is TensorBoard's own switch
    to its TensorFlow-free stub, so it is set before the first use under a non-TF backend.
    """
    if not is_tensorflow():
        sys.modules.setdefault("tensorboard.compat.notf",
                               types.ModuleType("tensorboard.compat.notf"))
    # here, after the switch above: the writer's module resolves TensorBoard's TensorFlow
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    return EventFileWriter(log_dir)


def _scalar_event(scalars: Mapping[str, float], step: int):
    values = [summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
              for tag, value in scalars.items()]
    return event_pb2.Event(wall_time=time.time(), step=int(step),
                           summary=summary_pb2.Summary(value=values))


def write_scalars(log_dir: str, scalars: Mapping[str, float], step: int) -> None:
    """Append ``scalars`` (tag -> value) at ``step`` to TensorBoard event files in ``log_dir``,
    under any backend (a new events file each call; TensorBoard reads them all)."""
    writer = _event_writer(log_dir)
    try:
        writer.add_event(_scalar_event(scalars, step))
    finally:
        writer.close()


class EpochScalars(keras.callbacks.Callback):
    """The epoch curves of Keras's TensorBoard callback, written without TensorFlow.

    Training metrics go to ``<log_dir>/train``, ``val_*`` ones to ``<log_dir>/validation``
    (prefix dropped), each as ``epoch_<metric>`` at the 0-based epoch, as Keras names them.
    """

    def __init__(self, log_dir: str):
        super().__init__()
        self.log_dir = log_dir
        self._writers: dict[str, object] = {}

    def _writer(self, subdir: str):
        if subdir not in self._writers:
            self._writers[subdir] = _event_writer(os.path.join(self.log_dir, subdir))
        return self._writers[subdir]

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        groups = {"train": {f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_")},
                  "validation": {f"epoch_{k[4:]}": v for k, v in logs.items()
                                 if k.startswith("val_")}}
        for subdir, scalars in groups.items():
            if scalars:
                writer = self._writer(subdir)
                writer.add_event(_scalar_event(scalars, epoch))
                writer.flush()

    def on_train_end(self, logs: dict | None = None) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def training_callbacks_for_logging(log_dir: str) -> list[keras.callbacks.Callback]:
    """TensorBoard logging for ``fit``: Keras's TensorBoard callback under TensorFlow (as
    before), :class:`EpochScalars` under other backends, where that callback would need
    TensorFlow."""
    if is_tensorflow():
        return [keras.callbacks.TensorBoard(log_dir=log_dir, histogram_freq=0,
                                            write_graph=False, profile_batch=0)]
    return [EpochScalars(log_dir)]
