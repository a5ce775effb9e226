"""The study's semantic baseline: FCN-8s foreground, split into nuclei by morphological opening.

``model`` builds the network, ``opening`` turns a foreground into instances, ``train`` trains,
evaluates and detects, ``crossval`` runs k-fold cross-validation. Keras is imported only when a
model is built, so importing this package is cheap.
"""
from __future__ import annotations

from nucleus.fcn.crossval import run_crossval
from nucleus.fcn.model import build_fcn8s, load_fcn, predict_foreground, preprocess_image
from nucleus.fcn.opening import instances_by_opening, label_by_opening, pick_radius
from nucleus.fcn.train import (FCNDetector, evaluate_fcn, find_last, train_fcn,
                               tune_radius)

__all__ = ["FCNDetector", "build_fcn8s", "evaluate_fcn", "find_last", "instances_by_opening",
           "label_by_opening", "load_fcn", "pick_radius", "predict_foreground",
           "preprocess_image", "run_crossval", "train_fcn", "tune_radius"]
