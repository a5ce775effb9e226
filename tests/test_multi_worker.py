"""Multi-worker training (mrcnn/distribute.py): two worker processes on localhost train one tiny
model under MultiWorkerMirroredStrategy from TF_CONFIG; only the chief writes checkpoints; after
a worker is killed mid-run, starting both again resumes from the chief's last checkpoint."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

SCRIPT = r'''
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path[:0] = [REPO, TESTS]
from mrcnn import distribute
strategy = distribute.use_multi_worker()          # before any other TensorFlow operation

import numpy as np
import keras
import tensorflow as tf
from conftest import TinyConfig
from mrcnn import model as modellib
from synthetic import EllipseDataset


class Config(TinyConfig):
    IMAGES_PER_GPU = 1
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 0


class Pause(keras.callbacks.Callback):
    """Seconds of sleep after each epoch (a window to kill a worker in)."""
    def on_epoch_end(self, epoch, logs=None):
        print(f"EPOCH {epoch + 1}", flush=True)
        time.sleep(PAUSE)


config = Config()
model = modellib.MaskRCNN("training", config, LOG_DIR)
if RESUME:
    model.load_weights(model.find_last(), by_name=True)
start = model.epoch
kernel = model.keras_model.mrcnn_class_conv1.kernel
history = model.train(EllipseDataset(6, seed=1), None, config.LEARNING_RATE, epochs=EPOCHS,
                      layers="all", verbose=0, custom_callbacks=[Pause()])
print("RESULT " + json.dumps({
    "multi_worker": isinstance(model.strategy, tf.distribute.MultiWorkerMirroredStrategy),
    "replicas": model.strategy.num_replicas_in_sync,
    "batch_size": config.BATCH_SIZE,
    "chief": distribute.is_chief(),
    "start": start,
    "epochs": history.epoch,
    "loss": [float(x) for x in history.history["loss"]],
    "kernel_sum": float(np.asarray(kernel.value).sum()),
}), flush=True)
'''


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(tmp_path, epochs: int, resume: bool, pause: float) -> list[subprocess.Popen]:
    script = tmp_path / "worker.py"
    script.write_text(f"REPO = {REPO!r}\nTESTS = {TESTS!r}\nLOG_DIR = {str(tmp_path / 'logs')!r}\n"
                      f"EPOCHS = {epochs}\nRESUME = {resume}\nPAUSE = {pause}\n" + SCRIPT)
    workers = [f"localhost:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
               "TF_NUM_INTRAOP_THREADS": "1",
               "TF_CONFIG": json.dumps({"cluster": {"worker": workers},
                                        "task": {"type": "worker", "index": index}})}
        procs.append(subprocess.Popen([sys.executable, str(script)], env=env, cwd=str(tmp_path),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs


def results(procs) -> list[dict]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=600)
        lines = [x for x in stdout.splitlines() if x.startswith("RESULT ")]
        assert proc.returncode == 0 and lines, stdout[-3000:] + stderr[-5000:]
        out.append(json.loads(lines[-1][len("RESULT "):]))
    return out


def checkpoints(tmp_path) -> list[str]:
    logs = tmp_path / "logs"
    return sorted(str(p.relative_to(logs)) for p in logs.rglob("*.h5")) if logs.exists() else []


def test_two_workers_train_one_model_and_a_killed_run_resumes(tmp_path):
    # Run 1: two epochs, killed on worker 1 after the first epoch's checkpoint.
    procs = start_workers(tmp_path, epochs=2, resume=False, pause=6.0)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(p.endswith("_0001.h5")
                                                 for p in checkpoints(tmp_path)):
        assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
        time.sleep(0.2)
    (first,) = checkpoints(tmp_path)
    assert first.endswith("mask_rcnn_tiny_0001.h5")
    procs[1].send_signal(signal.SIGKILL)
    procs[1].wait()
    procs[0].kill()                 # the chief would wait for its peer forever
    procs[0].wait()
    assert checkpoints(tmp_path) == [first]          # epoch 2 never finished
    # Run 2: both workers started again resume from the chief's checkpoint of epoch 1.
    a, b = results(start_workers(tmp_path, epochs=2, resume=True, pause=0.0))
    for r in (a, b):
        assert r["multi_worker"] and r["replicas"] == 2
        assert r["batch_size"] == 2 and r["start"] == 1 and r["epochs"] == [1]
    assert a["chief"] and not b["chief"]
    assert a["kernel_sum"] == pytest.approx(b["kernel_sum"], rel=1e-6)   # one model
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    run = first.split("/")[0]
    assert checkpoints(tmp_path) == [first, f"{run}/mask_rcnn_tiny_0002.h5"]   # chief only


def test_tf_config_is_checked_before_any_training(monkeypatch, capsys):
    from mrcnn.distribute import tf_config
    from nucleus.cli import main

    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert main(["train", "--multi-worker", "--dataset", "nowhere"]) == 2
    assert "TF_CONFIG is not set" in capsys.readouterr().err
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1", "b:2"]}, '
                                    '"task": {"type": "worker", "index": 2}}')
    with pytest.raises(ValueError, match="not one of the 2 workers"):
        tf_config()
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG: not a worker cluster"):
        tf_config()
    assert main(["train", "--multi-worker", "--model", "fcn", "--dataset", "nowhere"]) == 2
