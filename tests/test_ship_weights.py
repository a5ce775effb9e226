"""tools/ship_weights.py: a checkpoint becomes a float16 file that keeps its configuration."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from mrcnn import model as modellib
from mrcnn.errors import WeightsError
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


def test_average_of_checkpoints(tmp_path, capsys):
    """--average ships the mean of the checkpoints' weights, and refuses another network."""
    model = modellib.MaskRCNN("training", SizedTiny(), str(tmp_path))
    paths = []
    rng = np.random.default_rng(0)
    for i in range(3):
        model.keras_model.set_weights([rng.normal(size=w.shape).astype(w.dtype)
                                       for w in model.keras_model.get_weights()])
        paths.append(tmp_path / f"epoch{i}.h5")
        model.save_weights(str(paths[-1]))
    out = tmp_path / "averaged.h5"
    assert ship_weights.main([str(paths[0]), str(out), "--average",
                              str(paths[1]), str(paths[2])]) == 0
    each = [_float_arrays(p) for p in paths]
    after = _float_arrays(out)
    assert after.keys() == each[0].keys()
    for name, value in after.items():
        mean = np.mean([e[name] for e in each], axis=0)
        np.testing.assert_allclose(value.astype(np.float32), mean, rtol=2e-3, atol=2e-3)
    assert "mean of 3 checkpoints" in capsys.readouterr().out

    class Wider(SizedTiny):
        NAME = "tiny"
        TOP_DOWN_PYRAMID_SIZE = 2 * SizedTiny.TOP_DOWN_PYRAMID_SIZE
    other = tmp_path / "other.h5"
    modellib.MaskRCNN("training", Wider(), str(tmp_path)).save_weights(str(other))
    with pytest.raises((SystemExit, WeightsError), match="other.h5"):
        ship_weights.main([str(paths[0]), str(tmp_path / "bad.h5"), "--average", str(other)])
    assert not (tmp_path / "bad.h5").exists()
