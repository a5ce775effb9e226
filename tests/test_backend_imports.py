"""Under ``KERAS_BACKEND=jax`` nothing here needs TensorFlow (GPU machines may have JAX only).

Each check runs in a fresh interpreter with ``KERAS_BACKEND=jax``: TensorFlow is installed beside
JAX in the test environment, so only ``sys.modules`` tells whether something imported it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.backends

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)

TF_FREE_MODULES: tuple[str, ...] = (
    # the sub-packages themselves (a docstring each)
    "nucleus.formats", "nucleus.inference", "nucleus.training", "nucleus.scoring",
    # the command line and everything it reaches without the Mask R-CNN model
    "nucleus.cli", "nucleus.scoring.evaluation", "nucleus.segment", "nucleus.inference.detectors",
    "nucleus.training.sweep", "nucleus.dataset", "nucleus.training.augment", "nucleus.config",
    "nucleus.inference.large", "nucleus.inference.tta", "nucleus.inference.scales",
    "nucleus.formats.submission", "nucleus.scoring.plots", "nucleus.inference.parallel",
    "nucleus.nucleus", "nucleus.training.train_options", "nucleus.fcn.model",
    "nucleus.fcn.detector", "nucleus.fcn.train", "nucleus.fcn.crossval",
    # mrcnn outside the network: configuration, data pipeline, weights I/O, drawing, logging
    "mrcnn.config", "mrcnn.utils", "mrcnn.data", "mrcnn.augmentation", "mrcnn.weights",
    "mrcnn.visualize", "mrcnn.distribute", "mrcnn.backend", "mrcnn.backbone", "mrcnn.rpn",
    # the Mask R-CNN model on keras.ops: its stages, their backend dispatch, the network, the
    # matterport facade and the training driver
    "mrcnn.box_ops", "mrcnn.proposals", "mrcnn.targets", "mrcnn.roi_align", "mrcnn.heads",
    "mrcnn.detection", "mrcnn.losses", "mrcnn.backend_ops", "mrcnn.execution",
    "mrcnn.network", "mrcnn.model", "nucleus.training.train",
)
"""Modules that must import under JAX without TensorFlow."""


def run_under_jax(code: str) -> dict:
    """Run ``code`` in a fresh interpreter on the JAX backend; it prints one ``RESULT`` JSON
    line, returned here."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": os.pathsep.join([REPO, TESTS, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env, cwd=REPO)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-5000:]
    return json.loads(lines[-1][len("RESULT "):])


IMPORTS = r'''
import importlib, json, sys
culprit = None
for name in MODULES:
    importlib.import_module(name)
    if culprit is None and "tensorflow" in sys.modules:
        culprit = name          # the first module after which TensorFlow was loaded
import keras
print("RESULT " + json.dumps({"backend": keras.backend.backend(), "culprit": culprit,
                              "tensorflow": "tensorflow" in sys.modules}))
'''


def test_modules_import_without_tensorflow_under_jax():
    result = run_under_jax(f"MODULES = {list(TF_FREE_MODULES)!r}\n" + IMPORTS)
    assert result["backend"] == "jax"
    assert result["culprit"] is None and not result["tensorflow"], result


COMMAND_LINE = r'''
import contextlib, io, json, os, sys
import nucleus.cli as cli
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        cli.main(["--help"])
    except SystemExit as e:
        help_status = e.code
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]},
                                      "task": {"type": "worker", "index": 0}})
with contextlib.redirect_stderr(err):
    status = cli.main(["train", "--multi-worker"])
print("RESULT " + json.dumps({"help_status": help_status, "help": out.getvalue(),
                              "status": status, "error": err.getvalue(),
                              "tensorflow": "tensorflow" in sys.modules}))
'''


def test_command_line_runs_and_multi_worker_says_it_needs_tensorflow():
    result = run_under_jax(COMMAND_LINE)
    assert result["help_status"] == 0 and "evaluate" in result["help"]
    # tf.distribute is TensorFlow's: a clear error line and status 2, before any training
    assert result["status"] == 2
    assert result["error"].startswith("error: multi-worker training (tf.distribute) needs the "
                                      "TensorFlow backend, but Keras runs on jax"), result
    assert not result["tensorflow"]


FCN = r'''
import csv, json, os, sys
import numpy as np
from nucleus.fcn.model import build_fcn8s, predict_foreground
from nucleus.fcn.train import train_fcn
from synthetic import EllipseDataset

# (no keras.utils.set_random_seed: it imports TensorFlow whenever it is installed, to seed it)
model = build_fcn8s(None, fc_width=16)
image = np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8)
prob = predict_foreground(model, image)
result = train_fcn(EllipseDataset(4, seed=1), None, LOGS, weights=None, epochs=1,
                   steps_per_epoch=2, crop_size=32, batch_size=2, fc_width=16, eval_every=0,
                   workers=1, augment=False, verbose=0)
with open(result["run_dir"] / "history.csv", newline="") as f:
    losses = [float(row["loss"]) for row in csv.DictReader(f)]
print("RESULT " + json.dumps({"shape": list(prob.shape), "finite": bool(np.isfinite(prob).all()),
                              "in_unit": bool(((prob >= 0) & (prob <= 1)).all()),
                              "checkpoint": os.path.basename(result["checkpoint"]),
                              "saved": result["checkpoint"].is_file(), "losses": losses,
                              "tensorflow": "tensorflow" in sys.modules}))
'''


def test_fcn_baseline_predicts_and_trains_under_jax(tmp_path):
    result = run_under_jax(f"LOGS = {str(tmp_path)!r}\n" + FCN)
    assert result["shape"] == [40, 52] and result["finite"] and result["in_unit"]
    assert result["checkpoint"] == "fcn_0001.weights.h5" and result["saved"]
    assert len(result["losses"]) == 1 and 0 < result["losses"][0] < 10, result["losses"]
    assert not result["tensorflow"]


def _requirements(name: str) -> list[str]:
    with open(os.path.join(REPO, name)) as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


def test_jax_requirements_are_the_default_ones_less_tensorflow_plus_jax():
    default, jax_only = _requirements("requirements.txt"), _requirements("requirements-jax.txt")
    assert any(r.startswith("tensorflow") for r in default)  # TensorFlow stays the default
    assert [r for r in default if not r.startswith("tensorflow")] == \
        [r for r in jax_only if not r.startswith("jax")]
    assert [r for r in jax_only if r.startswith("jax")] == ["jax[cpu]>=0.10"]
