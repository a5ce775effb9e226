"""Inference: the detectors, and detection over flips, scales, tiles and workers.

:mod:`~nucleus.inference.detectors` is the one detector interface (Mask R-CNN, the FCN or any
detect call) and :mod:`~nucleus.inference.nucleus_model` the model object that builds it: which
weights file a name means (the shipped one, the last checkpoint, a path), the configuration
stored beside the weights and the run folder. The other modules run a detector beyond one call
on one image: over flips and scales voted together (:mod:`~nucleus.inference.tta`,
:mod:`~nucleus.inference.scales`, with the overlap rule of :mod:`~nucleus.inference.overlap`),
over tiles stitched back (:mod:`~nucleus.inference.tiling`, the one stitcher), over images larger
than memory (:mod:`~nucleus.inference.large`) and over Dask workers
(:mod:`~nucleus.inference.parallel`).
Inference reads and writes through :mod:`nucleus.formats` and never imports training code, so
a detector loads no optimiser, augmentation or schedule. Importing this package imports no
module, and no TensorFlow.
"""
