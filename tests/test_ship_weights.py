"""tools/ship_weights.py: a checkpoint becomes a float16 file that keeps its configuration."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np

from mrcnn import model as modellib
from mrcnn.weights import read_attrs

from conftest import TinyConfig

_PATH = Path(__file__).resolve().parents[1] / "tools" / "ship_weights.py"
_spec = importlib.util.spec_from_file_location("ship_weights", _PATH)
ship_weights = importlib.util.module_from_spec(_spec)
sys.modules["ship_weights"] = ship_weights
_spec.loader.exec_module(ship_weights)


class SizedTiny(TinyConfig):
    OBJECT_DIAMETER = 20.0


def _float_arrays(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) and obj.dtype.kind == "f" else None)
    return out


def test_checkpoint_to_shipped_file(tmp_path, capsys):
    model = modellib.MaskRCNN("training", SizedTiny(), str(tmp_path))
    checkpoint = tmp_path / "checkpoint.h5"
    model.save_weights(str(checkpoint))
    out = tmp_path / "shipped.h5"
    assert ship_weights.main([str(checkpoint), str(out), "--epoch", "7"]) == 0
    attrs = read_attrs(str(out))
    assert int(attrs["epoch"]) == 7
    config = json.loads(attrs["mrcnn_config"])
    assert config["OBJECT_DIAMETER"] == 20.0 and config["NAME"] == "tiny"
    before, after = _float_arrays(checkpoint), _float_arrays(out)
    assert before.keys() == after.keys()
    assert {a.dtype for a in after.values()} == {np.dtype(np.float16)}
    for name, value in before.items():
        np.testing.assert_allclose(after[name].astype(np.float32), value, rtol=2e-3,
                                   atol=1e-4)
    assert "OBJECT_DIAMETER 20.0" in capsys.readouterr().out
