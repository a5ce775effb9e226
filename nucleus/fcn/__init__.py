"""The study's semantic baseline: FCN-8s foreground, split into nuclei by morphological opening.

``model`` builds the network, ``opening`` turns a foreground into instances, ``detector``
detects with a trained network (and finds the newest checkpoint), ``train`` trains and
evaluates, ``crossval`` runs k-fold cross-validation. The names below are imported from those
modules on first use, so importing this package (as importing any of its modules does) loads
none of them: inference (``nucleus.fcn.detector``) never loads the training code.
"""
from __future__ import annotations

from typing import Any

__all__ = ["FCNDetector", "build_fcn8s", "evaluate_fcn", "find_last", "instances_by_opening",
           "label_by_opening", "load_fcn", "pick_radius", "predict_foreground",
           "preprocess_image", "run_crossval", "train_fcn", "tune_radius"]


def __getattr__(name: str) -> Any:
    # here, on first use: see the module docstring
    if name in ("FCNDetector", "find_last"):
        from nucleus.fcn import detector as module
    elif name in ("build_fcn8s", "load_fcn", "predict_foreground", "preprocess_image"):
        from nucleus.fcn import model as module
    elif name in ("instances_by_opening", "label_by_opening", "pick_radius"):
        from nucleus.fcn import opening as module
    elif name in ("evaluate_fcn", "train_fcn", "tune_radius"):
        from nucleus.fcn import train as module
    elif name == "run_crossval":
        from nucleus.fcn import crossval as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
