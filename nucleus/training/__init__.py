"""Training: the Mask R-CNN training run, its options, augmentation, sampling and sweeps.

:mod:`~nucleus.training.train` holds :func:`~nucleus.training.train.train_nucleus`, the staged
schedule and the start weights; :mod:`~nucleus.training.train_options` describes every option
of a run once (defaults, flags, sweep names); :mod:`~nucleus.training.augment` and
:mod:`~nucleus.training.sampling` decide what each step sees; :mod:`~nucleus.training.sweep`
trains one run per combination of settings and compares them. Training sits on top: it uses
inference and scoring (validation mAP), and only the command line and the FCN's training
(:mod:`nucleus.fcn.train`, for the augmentation) import it, so detecting never loads training
code (importing this package imports no module, and no TensorFlow).
"""
