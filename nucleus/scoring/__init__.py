"""Scoring: the DSB metric, evaluation of a detector on a dataset, and the plots of both.

:mod:`~nucleus.scoring.metric` is the Kaggle DSB 2018 score (IoU matching, precision over the
thresholds) on label images or mask stacks; :mod:`~nucleus.scoring.evaluation` runs a detector
over a labelled subset and scores it (and is the validation-mAP callback of training);
:mod:`~nucleus.scoring.plots` draws overlays, curves and comparisons. Scoring uses inference (to
detect) and formats, never training or the command line, so an evaluation loads no training
code (importing this package imports no module, and no TensorFlow).
"""
