"""Weights-only HDF5 files in the Keras 2 layout, read and written with h5py.

The layout is the one of matterport's ``mask_rcnn_coco.h5``: the root attribute ``layer_names``
lists the layers, each layer is a group whose attribute ``weight_names`` lists its arrays in order.
Keras 3 ``.weights.h5`` files of the same model (what ``keras_model.save_weights`` writes) are
read too, matched by the layer names Keras 3 stores with each layer's arrays.
Reading never executes anything from the file (no pickles, no Lambda layers), writing goes to a
temporary file that is renamed into place, so an interrupted save leaves no broken checkpoint.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Iterable

import h5py
import keras
import ml_dtypes
import numpy as np

from mrcnn.errors import WeightsError  # noqa: F401  (raised here; public name)
from mrcnn.files import atomic_path

# Nested models that matterport's files store as one layer group.
UNIT_MODELS = ("rpn_model",)

COCO_WEIGHTS_URL = "https://github.com/matterport/Mask_RCNN/releases/download/v2.0/mask_rcnn_coco.h5"
IMAGENET_RESNET50_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_RESNET50_URL = ("https://github.com/fchollet/deep-learning-models/releases/download/"
                         "v0.2/" + IMAGENET_RESNET50_FILE)


def get_imagenet_weights() -> str:
    """Path of the ImageNet ResNet-50 file (Keras 2 layout, matterport's layer names).

    Looked up in ``~/.keras/models``; fetched from its usual release address when missing.
    """
    local = os.path.join(os.path.expanduser("~"), ".keras", "models", IMAGENET_RESNET50_FILE)
    if os.path.exists(local):
        return local
    try:
        return keras.utils.get_file(IMAGENET_RESNET50_FILE, IMAGENET_RESNET50_URL,
                                    cache_subdir="models")
    except Exception as e:  # no network: say what to fetch and where to put it
        raise FileNotFoundError(
            f"{local}: ImageNet ResNet-50 weights not found and could not be downloaded "
            f"({type(e).__name__}). Download {IMAGENET_RESNET50_URL} into "
            "~/.keras/models/ or pass the file's path.") from None


def weight_units(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers that own weights, in order, as a weights file keys them.

    Nested models are walked into, except those in :data:`UNIT_MODELS`, which count as one unit.
    """
    units = []
    for layer in model.layers:
        if isinstance(layer, keras.Model) and layer.name not in UNIT_MODELS:
            units.extend(weight_units(layer))
        elif layer.weights:
            units.append(layer)
    return units


def _leaf_layers(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    if isinstance(layer, keras.Model):
        out = []
        for sub in layer.layers:
            out.extend(_leaf_layers(sub))
        return out
    return [layer] if layer.weights else []


def _weight_names(unit: keras.layers.Layer) -> list[str]:
    names = []
    for leaf in _leaf_layers(unit):
        names.extend(f"{leaf.name}/{w.name}:0" for w in leaf.weights)
    return names


def save_weights(model: keras.Model, filepath: str, dtype: str | None = None,
                 attrs: dict | None = None) -> None:
    """Write the model's weights atomically (``dtype="float16"`` halves the file size).

    An array with a value beyond ``dtype``'s range keeps its own precision: a BatchNorm
    moving variance above 65504 would become infinite in float16 and silence its channel
    (seen on a trained model: val DSB mAP 0.547 -> 0.543).
    """
    units = weight_units(model)
    with atomic_path(filepath) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["layer_names"] = np.array([u.name.encode("utf8") for u in units])
            # informational only (the arrays are the same on every backend; loading
            # ignores it): the Keras backend that wrote the file
            f.attrs["backend"] = keras.backend.backend().encode("utf8")
            f.attrs["keras_version"] = keras.__version__.encode("utf8")
            for key, value in (attrs or {}).items():
                f.attrs[key] = value
            for unit in units:
                g = f.create_group(unit.name)
                names = _weight_names(unit)
                g.attrs["weight_names"] = np.array([n.encode("utf8") for n in names])
                for name, w in zip(names, unit.weights):
                    value = keras.ops.convert_to_numpy(w)
                    if dtype is not None and _fits(value, dtype):
                        value = value.astype(dtype)
                    g.create_dataset(name, data=value)


def _fits(value: np.ndarray, dtype: str) -> bool:
    """Whether a floating array can be stored as ``dtype`` without overflowing it."""
    if not np.issubdtype(value.dtype, np.floating):
        return False
    return value.size == 0 or float(np.max(np.abs(value))) <= float(np.finfo(dtype).max)


def read_attrs(filepath: str) -> dict:
    """Root attributes of a weights file (e.g. the stored configuration and epoch)."""
    with _open(filepath) as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}


def _open(filepath: str) -> h5py.File:
    filepath = os.fspath(filepath)
    if not os.path.exists(filepath):
        raise FileNotFoundError(f"{filepath}: weights file not found")
    try:
        return h5py.File(filepath, "r")
    except OSError as e:
        raise WeightsError(f"{filepath}: not a readable HDF5 weights file ({e})") from None


def _decode(names: Iterable) -> list[str]:
    return [n.decode("utf8") if isinstance(n, bytes) else str(n) for n in names]


def _keras2_layers(root: h5py.Group) -> tuple[list[str], Callable[[str], list[np.ndarray]]]:
    """Layer names of a Keras 2 layout file, in file order, and a reader of a layer's arrays."""
    names = [n for n in _decode(root.attrs["layer_names"])
             if len(root[n].attrs.get("weight_names", [])) > 0]

    def read(name: str) -> list[np.ndarray]:
        group = root[name]
        return [np.asarray(group[w]) for w in _decode(group.attrs["weight_names"])]

    return names, read


def _keras3_layers(filepath: str, f: h5py.File, units: list[keras.layers.Layer]
                   ) -> tuple[list[str], Callable[[str], list[np.ndarray]]]:
    """The same for a Keras 3 ``.weights.h5`` file (what ``keras_model.save_weights`` writes).

    Keras 3 keys groups by object path (``backbone/layers/conv2d_53/vars``) with the layer's
    name as an attribute of its ``vars`` group and the arrays as "0", "1" ...; the names in the
    result are those of the model's units whose layers are all in the file, in model order.
    """
    groups: dict[str, h5py.Group] = {}

    def visit(path: str, obj) -> None:
        if isinstance(obj, h5py.Group) and path.rsplit("/", 1)[-1] == "vars" and len(obj):
            if "name" not in obj.attrs:
                raise WeightsError(
                    f"{filepath}: a Keras 3 weights file without layer names (Keras before "
                    "3.10 wrote none), so its layers cannot be matched by name; load it with "
                    "keras_model.load_weights(path) into the same model")
            groups.setdefault(_decode([obj.attrs["name"]])[0], obj)

    f.visititems(visit)
    if not groups:
        raise WeightsError(f"{filepath}: neither a Keras 2 'layer_names' attribute nor Keras 3 "
                           "layer groups; not a Keras HDF5 weights file")
    by_name = {u.name: u for u in units}

    def arrays(group: h5py.Group) -> list[np.ndarray]:
        out = []
        for key in sorted(group, key=int):
            dataset = group[key]
            if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16"):  # as Keras reads it
                out.append(np.array(dataset, dtype=ml_dtypes.bfloat16))
            else:
                out.append(np.asarray(dataset))
        return out

    def read(name: str) -> list[np.ndarray]:
        return [a for leaf in _leaf_layers(by_name[name]) for a in arrays(groups[leaf.name])]

    names = [u.name for u in units if all(leaf.name in groups for leaf in _leaf_layers(u))]
    return names, read


def load_weights(model: keras.Model, filepath: str, by_name: bool = False,
                 exclude: Iterable[str] | None = None) -> list[str]:
    """Load a weights file into ``model``; returns the names of the layers loaded.

    Reads the Keras 2 layout (matterport's files, ours) and Keras 3 ``.weights.h5`` files of
    this model (``keras_model.save_weights``). ``by_name`` matches file layers to model layers
    by name (missing ones are skipped, as Keras 2 did); otherwise a Keras 2 file's layers are
    matched in order and their count must agree, and a Keras 3 file must hold every layer.
    ``exclude`` lists layer names (or regular expressions) to leave untouched. A shape that
    does not fit raises :class:`WeightsError` naming the file, the layer and both shapes.
    """
    exclude = list(exclude or [])

    def excluded(name: str) -> bool:
        return any(name == e or re.fullmatch(e, name) for e in exclude)

    filepath = os.fspath(filepath)
    units = weight_units(model)
    with _open(filepath) as f:
        root = f["model_weights"] if "model_weights" in f and "layer_names" not in f.attrs else f
        keras2 = "layer_names" in root.attrs
        if keras2:
            file_names, read = _keras2_layers(root)
        else:
            file_names, read = _keras3_layers(filepath, f, units)
        if by_name:
            by = {u.name: u for u in units}
            pairs = [(n, by[n]) for n in file_names if n in by and not excluded(n)]
        elif keras2:
            if len(file_names) != len(units):
                raise WeightsError(
                    f"{filepath}: holds {len(file_names)} layers with weights, the model has "
                    f"{len(units)}; load with by_name=True to match layers by name")
            pairs = [(n, u) for n, u in zip(file_names, units) if not excluded(u.name)]
        else:
            missing = [u.name for u in units if u.name not in set(file_names)]
            if missing:
                raise WeightsError(
                    f"{filepath}: the model's layers {', '.join(missing[:5])}"
                    f"{' ...' if len(missing) > 5 else ''} are not in the file; load with "
                    "by_name=True to load the layers it has")
            pairs = [(u.name, u) for u in units if not excluded(u.name)]
        assignments = []
        for name, unit in pairs:
            values = read(name)
            targets = unit.weights
            if len(values) != len(targets):
                raise WeightsError(f"{filepath}: layer '{name}' has {len(values)} weights in the "
                                   f"file, the model's layer expects {len(targets)}")
            for value, var in zip(values, targets):
                if tuple(value.shape) != tuple(var.shape):
                    raise WeightsError(
                        f"{filepath}: layer '{name}', weight '{var.name}': shape "
                        f"{tuple(value.shape)} in the file, {tuple(var.shape)} in the model "
                        f"(exclude this layer to skip it)")
                assignments.append((var, value))
        # Assign only once every shape has been checked: a bad file changes nothing.
        for var, value in assignments:
            var.assign(value.astype(var.dtype))
    return [name for name, _ in pairs]


def config_attrs(config) -> dict:
    """The configuration as a JSON root attribute, so a weights file says how to rebuild it."""
    return {"mrcnn_config": json.dumps(config.to_dict(), default=str)}
