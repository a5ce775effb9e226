"""The inspection notebooks run top to bottom in a real Jupyter kernel, on a tiny configuration.

The notebooks read their parameters from their first cell, which the environment variable
``NUCLEUS_NOTEBOOK_PARAMS`` (JSON) can override; the kernel inherits the environment, so the
tests set it with ``monkeypatch``. The model notebook runs twice: with a weights file whose
classifier calls every region a nucleus (so every detection cell has detections to show) and
with a confidence threshold no score can reach (so every cell must cope with none).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
DATA_NOTEBOOK = NOTEBOOKS / "inspect_nucleus_data.ipynb"
MODEL_NOTEBOOK = NOTEBOOKS / "inspect_nucleus_model.ipynb"
CELL_TIMEOUT = 600  # seconds; a cell of the tiny configuration takes a few

# Small network, small images: the notebooks' logic is what is tested, not the model.
TINY = {
    "BACKBONE": "resnet50",
    "IMAGE_RESIZE_MODE": "square",
    "IMAGE_MIN_DIM": 128,
    "IMAGE_MAX_DIM": 128,
    "RPN_ANCHOR_SCALES": [4, 8, 16, 32, 64],
    "TOP_DOWN_PYRAMID_SIZE": 32,
    "RPN_CONV_SIZE": 32,
    "FPN_CLASSIF_FC_LAYERS_SIZE": 64,
    "MASK_HEAD_CONV_SIZE": 32,
    "PRE_NMS_LIMIT": 1000,
    "POST_NMS_ROIS_INFERENCE": 200,
    "TRAIN_ROIS_PER_IMAGE": 64,
    "DETECTION_MAX_INSTANCES": 50,
    "IMAGES_PER_GPU": 1,
    "MIXED_PRECISION": False,
}


def _execute(path: Path, params: dict, monkeypatch) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh python3 kernel; raises CellExecutionError."""
    notebook = nbformat.read(path, as_version=4)
    monkeypatch.setenv("NUCLEUS_NOTEBOOK_PARAMS", json.dumps(params))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
    client = NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return notebook


def _text(notebook) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "stream" and output.name == "stdout":
                parts.append(output.text)
            elif output.output_type in ("display_data", "execute_result"):
                parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def _pictures(notebook) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells for output in cell.get("outputs", []))


def _assert_no_error(notebook) -> None:
    errors = [output for cell in notebook.cells for output in cell.get("outputs", [])
              if output.output_type == "error"]
    assert not errors, errors


@pytest.mark.parametrize("path", [DATA_NOTEBOOK, MODEL_NOTEBOOK], ids=lambda p: p.stem)
def test_notebook_is_committed_clean(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    assert notebook.metadata.kernelspec.name == "python3"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), \
        "commit the notebook without outputs"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", [])
    for name in ("DATASET_DIR", "WEIGHTS", "PROFILE", "OVERRIDES", "NUCLEUS_NOTEBOOK_PARAMS"):
        assert name in first.source
    # Parameters come from that one cell only: no later cell may reassign them.
    for cell in code[1:]:
        assert not re.search(r"^(DATASET_DIR|WEIGHTS|PROFILE|OVERRIDES)\s*=", cell.source,
                             re.MULTILINE)


def test_data_notebook_runs(monkeypatch):
    notebook = _execute(DATA_NOTEBOOK, {"WEIGHTS": "random", "N_IMAGES": 2, "OVERRIDES": TINY},
                        monkeypatch)
    _assert_no_error(notebook)
    text = _text(notebook)
    assert "'N_IMAGES': 2" in text                        # the environment reached the kernel
    assert "resize square 128/128" in text                # ... and the configuration
    assert "images in 'train' of the bundled sample" in text
    positives = re.search(r"anchors: (\d+) positive, (\d+) negative", text)
    assert positives and int(positives.group(1)) > 0 and int(positives.group(2)) > 0
    assert re.search(r"sampled ROIs: [1-9]\d* positive", text)
    assert "randomly initialised" in text
    assert _pictures(notebook) >= 10   # 2 samples + one or more per section


@pytest.fixture(scope="module")
def nucleus_weights(tmp_path_factory) -> Path:
    """A tiny weights file (with its configuration inside) whose box head says "nucleus"
    with probability ~1 for every region, so that detection is never empty."""
    from mrcnn import model as modellib
    from nucleus.config import make_config

    folder = tmp_path_factory.mktemp("weights")
    config = make_config("cpu", inference=True, overrides=TINY)
    model = modellib.MaskRCNN("inference", config, model_dir=str(folder))
    logits = model.keras_model.mrcnn_class_logits
    kernel, bias = logits.get_weights()
    bias[:] = [-10.0, 10.0]
    logits.set_weights([np.zeros_like(kernel), bias])
    path = folder / "mask_rcnn_tiny.h5"
    model.save_weights(str(path))
    return path


def test_model_notebook_runs_with_weights(monkeypatch, nucleus_weights):
    # No OVERRIDES for the network's shape: they come from the file; only sizes and speed.
    overrides = {k: TINY[k] for k in ("IMAGE_RESIZE_MODE", "IMAGE_MIN_DIM", "IMAGE_MAX_DIM",
                                      "PRE_NMS_LIMIT", "POST_NMS_ROIS_INFERENCE",
                                      "DETECTION_MAX_INSTANCES", "MIXED_PRECISION")}
    notebook = _execute(MODEL_NOTEBOOK, {"WEIGHTS": str(nucleus_weights), "N_IMAGES": 2,
                                         "OVERRIDES": overrides}, monkeypatch)
    _assert_no_error(notebook)
    text = _text(notebook)
    assert f"Loaded {nucleus_weights}" in text
    assert "backbone resnet50" in text                    # the configuration of the file
    assert "evaluating 2" in text
    detections = re.search(r"(\d+) detections after the confidence filter and NMS", text)
    assert detections and int(detections.group(1)) > 0
    assert "res4f_out" in text                            # resnet50's last stage-4 block
    assert _pictures(notebook) >= 12


def test_model_notebook_copes_with_no_detection(monkeypatch):
    overrides = dict(TINY, DETECTION_MIN_CONFIDENCE=1.5)  # no score reaches it
    notebook = _execute(MODEL_NOTEBOOK, {"WEIGHTS": "random", "N_IMAGES": 1,
                                         "LAYERS": ["res2c_out", "fpn_p2"],
                                         "OVERRIDES": overrides}, monkeypatch)
    _assert_no_error(notebook)
    text = _text(notebook)
    assert "0 detections after the confidence filter and NMS" in text
    assert "No detections" in text
    assert "mean DSB score over 1 images: 0.000" in text


def test_unknown_parameter_is_refused(monkeypatch):
    with pytest.raises(CellExecutionError, match="NOT_A_PARAMETER"):
        _execute(DATA_NOTEBOOK, {"NOT_A_PARAMETER": 1}, monkeypatch)
