"""GPU_COUNT=2 trains on two logical CPU devices: tf.distribute.MirroredStrategy under
TensorFlow, Keras's DataParallel distribution under JAX.

Logical devices can only be configured before the backend initialises its runtime, so each
training runs in a fresh interpreter; it prints one JSON line that the test checks. TensorFlow
is imported only there, so this module also collects where only JAX is installed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
LOSSES = ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
          "mrcnn_mask_loss")


def run_script(tmp_path, name: str, script: str, env: dict) -> dict:
    """Run ``script`` in a fresh interpreter; returns the JSON of its ``RESULT`` line."""
    path = tmp_path / name
    path.write_text(f"REPO = {REPO!r}\nTESTS = {TESTS!r}\nLOG_DIR = {str(tmp_path)!r}\n"
                    + script)
    proc = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
                          cwd=str(tmp_path))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):])

SCRIPT = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path[:0] = [REPO, TESTS]

from conftest import TwoReplicaConfig
from mrcnn import model as modellib
from synthetic import EllipseDataset


config = TwoReplicaConfig()
model = modellib.MaskRCNN("training", config, LOG_DIR)
kernel = model.keras_model.mrcnn_class_conv1.kernel
before = kernel.numpy().copy()
history = model.train(EllipseDataset(6, seed=1), None, config.LEARNING_RATE, epochs=1,
                      layers="all", verbose=0)
replica_values = [np.asarray(v) for v in kernel.value.values]
print("RESULT " + json.dumps({
    "strategy": type(model.strategy).__name__,
    "replicas": model.strategy.num_replicas_in_sync,
    "batch_size": config.BATCH_SIZE,
    "variable": type(kernel.value).__name__,
    "per_replica": len(replica_values),
    "replicas_agree": all(np.array_equal(replica_values[0], v) for v in replica_values),
    "moved": bool(np.abs(replica_values[0] - before).max() > 0),
    "epochs": history.epoch,
    "losses": {k: [float(x) for x in v] for k, v in history.history.items()},
    "checkpoint": os.path.basename(model.find_last()),
}))
'''


def test_two_replica_mirrored_training_on_logical_cpus(tmp_path):
    result = run_script(tmp_path, "distribute_two_cpus.py", SCRIPT,
                        {"KERAS_BACKEND": "tensorflow"})
    assert result["strategy"] == "MirroredStrategy"
    assert result["replicas"] == 2 and result["batch_size"] == 2
    assert "Mirrored" in result["variable"] and result["per_replica"] == 2
    assert result["replicas_agree"] and result["moved"]
    assert result["epochs"] == [0]
    for name in LOSSES:
        assert np.isfinite(result["losses"][name]).all(), (name, result["losses"])
    assert result["checkpoint"] == "mask_rcnn_tiny_0001.h5"


JAX_SCRIPT = r'''
import json, os, sys
import numpy as np
import jax

sys.path[:0] = [REPO, TESTS]
import keras
from conftest import TwoReplicaConfig
from mrcnn import model as modellib
from synthetic import EllipseDataset

# Keras hands every batch to JAX through this public function: record what it makes.
fed = []
make_array = jax.make_array_from_process_local_data


def recording(sharding, local_data, *args, **kwargs):
    array = make_array(sharding, local_data, *args, **kwargs)
    fed.append(array)
    return array


jax.make_array_from_process_local_data = recording


config = TwoReplicaConfig()
model = modellib.MaskRCNN("training", config, LOG_DIR)
distribution = keras.distribution.distribution()
variables = model.keras_model.variables
kernel = model.keras_model.mrcnn_class_conv1.kernel
before = np.asarray(kernel.value).copy()
history = model.train(EllipseDataset(6, seed=1), None, config.LEARNING_RATE, epochs=1,
                      layers="all", verbose=0)


def devices(array):
    return sorted(str(d) for d in array.sharding.device_set)


images = [a for a in fed if a.ndim == 4 and a.shape[-1] == 3]
shards = [np.asarray(s.data) for s in kernel.value.addressable_shards]
print("RESULT " + json.dumps({
    "jax_devices": [str(d) for d in jax.devices()],
    "distribution": type(distribution).__name__,
    "mesh_devices": [str(d) for d in distribution.device_mesh.devices.flat],
    "replicas": model.strategy.num_replicas_in_sync,
    "batch_size": config.BATCH_SIZE,
    "variables_replicated": all(v.value.sharding.is_fully_replicated for v in variables),
    "variable_devices": sorted({tuple(devices(v.value)) for v in variables}),
    "kernel_shards": len(shards),
    "shards_agree": all(np.array_equal(shards[0], s) for s in shards),
    "moved": bool(np.abs(shards[0] - before).max() > 0),
    "batches": len(images),
    "batch_shapes": [list(a.shape) for a in images],
    "batch_devices": sorted({tuple(devices(a)) for a in images}),
    "batch_shard_shapes": sorted({tuple(tuple(s.data.shape) for s in a.addressable_shards)
                                  for a in images}),
    "inputs_split_on_axis_0": all(a.sharding.spec[0] == distribution.batch_dim_name
                                  for a in fed),
    "epochs": history.epoch,
    "losses": {k: [float(x) for x in v] for k, v in history.history.items()},
    "checkpoint": os.path.basename(model.find_last()),
    "tensorflow": "tensorflow" in sys.modules,
}))
'''


@pytest.mark.backends
def test_two_replica_data_parallel_training_under_jax(tmp_path):
    """GPU_COUNT=2 under JAX: Keras's DataParallel over two host devices; every variable is
    replicated on both, every training batch (two images) is split one image per device, two
    steps train with finite losses, and TensorFlow is never imported."""
    result = run_script(tmp_path, "data_parallel_two_cpus.py", JAX_SCRIPT, {
        "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert len(result["jax_devices"]) == 2
    assert result["distribution"] == "DataParallel"
    assert len(result["mesh_devices"]) == 2
    assert result["replicas"] == 1             # no TensorFlow strategy: Keras distributes
    assert result["batch_size"] == 2           # IMAGES_PER_GPU x GPU_COUNT, the global batch
    assert result["variables_replicated"]
    assert [len(d) for d in result["variable_devices"]] == [2]
    assert result["kernel_shards"] == 2 and result["shards_agree"] and result["moved"]
    assert result["batches"] == 2              # STEPS_PER_EPOCH batches fed to the step
    assert all(shape == [2, 64, 64, 3] for shape in result["batch_shapes"])
    assert [len(d) for d in result["batch_devices"]] == [2]
    assert result["batch_shard_shapes"] == [[[1, 64, 64, 3], [1, 64, 64, 3]]]
    assert result["inputs_split_on_axis_0"]
    assert result["epochs"] == [0]
    for name in LOSSES:
        assert np.isfinite(result["losses"][name]).all(), (name, result["losses"])
    assert result["checkpoint"] == "mask_rcnn_tiny_0001.h5"
    assert not result["tensorflow"]
