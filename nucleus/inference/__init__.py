"""Inference: the detectors, and detection over flips, scales, tiles and workers.

:mod:`~nucleus.inference.detectors` is the one detector interface (Mask R-CNN, the FCN or any
detect call) and :mod:`~nucleus.inference.model_files` finds the shipped weights and reads a
file's stored configuration. The other modules run a detector beyond one call on one image:
over flips and scales voted together (:mod:`~nucleus.inference.tta`,
:mod:`~nucleus.inference.scales`, with the overlap rule of :mod:`~nucleus.inference.overlap`),
over tiles stitched back (:mod:`~nucleus.inference.tiling`, the one stitcher), over images larger
than memory (:mod:`~nucleus.inference.large`) and over Dask workers
(:mod:`~nucleus.inference.parallel`).
Inference reads and writes through :mod:`nucleus.formats` and never imports training code, so
a detector loads no optimiser, augmentation or schedule. Importing this package imports no
module, and no TensorFlow.
"""
