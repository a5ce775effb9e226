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
        import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

        class MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
            """MultiWorkerMirroredStrategy whose ``reduce`` also takes nested values.

            Keras builds a model before ``fit`` by averaging a first batch with
            ``strategy.reduce``; across workers that reduce takes one tensor only, and the
            batches here are dicts (keras-team/keras#20329). Each tensor of the structure is
            reduced on its own, in the structure's (sorted, so every worker's) order; integer
            tensors as float32 (collectives cannot average them) and cast back.
            """

            def reduce(self, reduce_op, value, axis):
                def one(v):
                    dtype = self.experimental_local_results(v)[0].dtype
                    if dtype.is_floating:
                        return super(MultiWorkerStrategy, self).reduce(reduce_op, v, axis)
                    as_float = self.run(lambda x: tf.cast(x, tf.float32), args=(v,))
                    reduced = super(MultiWorkerStrategy, self).reduce(reduce_op, as_float, axis)
                    return tf.cast(reduced, dtype)

                return tf.nest.map_structure(one, value)

        _STRATEGY = MultiWorkerStrategy()
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


def distributed_batches(batches, strategy) -> tf.distribute.DistributedDataset:
    """This worker's batches (a Keras ``PyDataset`` yielding ``(dict,)``, each this worker's
    share of the global batch) as the dataset ``fit`` takes under ``strategy``.

    Keras would distribute the PyDataset itself: slicing the global batch of one generator
    across workers (each worker loading images the others use), through a multi-device iterator
    that prefetches with the Python generator; before the first epoch Keras reads one batch and
    drops that iterator, and dropping it waits for a prefetch that waits for the Python lock the
    dropping thread holds. Here each worker loads only its own images, fetched on the host.
    """
    import tensorflow as tf   # here: TensorFlow only (JAX machines may lack it)

    (first,) = batches[0]
    signature = {k: tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for k, v in first.items()}

    def generate():
        while True:
            for i in range(len(batches)):
                (batch,) = batches[i]
                yield batch
            batches.on_epoch_end()

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(
            batches.batch_size * context.num_input_pipelines)
        if per_replica != batches.batch_size:
            devices = strategy.num_replicas_in_sync // context.num_input_pipelines
            raise ValueError(f"a worker with {devices} devices cannot split "
                             f"{batches.batch_size} images per batch evenly")
        return tf.data.Dataset.from_generator(generate, output_signature=signature)

    return strategy.distribute_datasets_from_function(
        dataset_fn, tf.distribute.InputOptions(experimental_fetch_to_device=False))


def worker_count() -> int:
    """How many workers ``TF_CONFIG`` names (1 without a multi-worker strategy)."""
    if _STRATEGY is None:
        return 1
    return len(tf_config()["cluster"]["worker"])
