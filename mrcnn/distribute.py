"""Training across machines: tf.distribute.MultiWorkerMirroredStrategy from ``TF_CONFIG``.

Each machine (worker) runs the same training command with ``TF_CONFIG`` naming every worker's
``host:port`` and its own index; gradients are all-reduced between them after every step, so
they train one model with a global batch of ``IMAGES_PER_GPU`` x workers. The strategy must be
made before TensorFlow runs any operation in the process, so :func:`use_multi_worker` is
called first; :class:`mrcnn.model.MaskRCNN` then builds and trains under it. Only the chief
(worker 0) writes checkpoints and logs; a run stopped on any worker resumes from the chief's last
checkpoint when all workers are started again (``--weights last``).

``tf.distribute`` is TensorFlow's: under another Keras backend (JAX) this module still imports
(without TensorFlow), and :func:`use_multi_worker` says that multi-worker training needs the
TensorFlow backend.
"""
from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING

from mrcnn import backend

if TYPE_CHECKING:
    import tensorflow as tf

_STRATEGY: tf.distribute.Strategy | None = None


def tf_config() -> dict:
    """``TF_CONFIG`` parsed, with a clear error when it is missing or not a worker cluster."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise ValueError("TF_CONFIG is not set: multi-worker training needs "
                         '{"cluster": {"worker": ["host:port", ...]}, '
                         '"task": {"type": "worker", "index": N}}')
    try:
        conf = json.loads(text)
        workers = conf["cluster"]["worker"]
        task = conf["task"]
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"TF_CONFIG: not a worker cluster ({type(e).__name__}: {e})") from None
    if task.get("type") != "worker" or not 0 <= int(task.get("index", -1)) < len(workers):
        raise ValueError(f"TF_CONFIG: task {task} is not one of the {len(workers)} workers")
    return conf


def use_multi_worker() -> tf.distribute.MultiWorkerMirroredStrategy:
    """Make (once) the strategy every model of this process trains under."""
    global _STRATEGY
    if _STRATEGY is None:
        backend.require_tensorflow("multi-worker training (tf.distribute)")
        tf_config()
        import tensorflow as tf

        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGY


def active() -> tf.distribute.Strategy | None:
    """The multi-worker strategy, when :func:`use_multi_worker` made one."""
    return _STRATEGY


def is_chief() -> bool:
    """Whether this process writes checkpoints and logs: always, unless it is a multi-worker
    run's worker other than index 0."""
    if _STRATEGY is None:
        return True
    return int(tf_config()["task"]["index"]) == 0
