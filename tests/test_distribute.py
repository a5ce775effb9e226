"""GPU_COUNT=2 trains under tf.distribute.MirroredStrategy on two logical CPU devices.

Logical devices can only be configured before TensorFlow initialises its runtime, so the
training runs in a fresh interpreter; it prints one JSON line that the test checks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

SCRIPT = r'''
import json, os, sys
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
sys.path[:0] = [REPO, TESTS]

from conftest import TinyConfig
from mrcnn import model as modellib
from synthetic import EllipseDataset


class TwoReplicas(TinyConfig):
    GPU_COUNT = 2
    IMAGES_PER_GPU = 1
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0


config = TwoReplicas()
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
    script = tmp_path / "distribute_two_cpus.py"
    script.write_text(f"REPO = {REPO!r}\nTESTS = {TESTS!r}\nLOG_DIR = {str(tmp_path)!r}\n"
                      + SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=1200, env=env, cwd=str(tmp_path))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["strategy"] == "MirroredStrategy"
    assert result["replicas"] == 2 and result["batch_size"] == 2
    assert "Mirrored" in result["variable"] and result["per_replica"] == 2
    assert result["replicas_agree"] and result["moved"]
    assert result["epochs"] == [0]
    for name in ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
                 "mrcnn_bbox_loss", "mrcnn_mask_loss"):
        assert np.isfinite(result["losses"][name]).all(), (name, result["losses"])
    assert result["checkpoint"] == "mask_rcnn_tiny_0001.h5"
