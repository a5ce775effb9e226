"""Nucleus instance segmentation: Mask R-CNN and the FCN-8s baseline (see README.md).

``from nucleus import segment``; ``labels, table = segment(image)`` segments one image with the
shipped model (:mod:`nucleus.segment`). Note that ``nucleus.segment`` is then this function:
reach the module's other names with ``from nucleus.segment import NAME``.
"""
from nucleus.segment import segment

__all__ = ["segment"]
