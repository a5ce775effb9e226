"""The nuclei table: one row per label of a label image, the columns ``nuclei.csv`` has.

``nucleus segment`` measures whole images with :func:`measure`; the window-by-window path
(:mod:`nucleus.inference.large`) measures tile by tile with the same properties and renames
(:data:`PROPERTIES`, :data:`RENAME`), so both write the same table.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # pandas is imported when a table is made: `import nucleus` stays cheap
    import pandas as pd

COLUMNS: tuple[str, ...] = ("image", "label", "centroid_y", "centroid_x", "bbox_y0", "bbox_x0",
                            "bbox_y1", "bbox_x1", "area", "perimeter", "eccentricity",
                            "mean_intensity", "score")
"""The table: centroid and box in pixels (row y, column x; box ends exclusive, as in
``skimage.measure.regionprops``), area in pixels, perimeter in pixels, eccentricity 0 (circle)
to 1, mean intensity in the file's own units (the chosen channel; the mean of R, G and B for a
colour image), score the detector's confidence."""
PROPERTIES = ("label", "centroid", "bbox", "area", "perimeter", "eccentricity",
              "intensity_mean")
"""What ``skimage.measure.regionprops_table`` is asked for."""
RENAME = {"centroid-0": "centroid_y", "centroid-1": "centroid_x", "bbox-0": "bbox_y0",
          "bbox-1": "bbox_x0", "bbox-2": "bbox_y1", "bbox-3": "bbox_x1",
          "intensity_mean": "mean_intensity"}
"""regionprops' column names -> the table's."""


PERIMETER_WEIGHTS = np.zeros(50, np.float64)
"""Length of a border pixel by its neighbourhood code (1 for itself, 2 for each 4-neighbour and
10 for each diagonal neighbour that is a border pixel of the same nucleus): the estimator of
Benkrid and Crookes, which ``skimage.measure.perimeter`` (4-connectivity) also uses."""
PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2.0)
PERIMETER_WEIGHTS[[13, 23]] = (1.0 + np.sqrt(2.0)) / 2.0

_FOUR = ((-1, 0), (1, 0), (0, -1), (0, 1))
_DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))


def measure_regions(labels: np.ndarray, intensity: np.ndarray) -> dict[str, np.ndarray]:
    """``skimage.measure.regionprops_table(labels, intensity, properties=PROPERTIES)``,
    computed for all labels at once over the labelled pixels (regionprops takes each region
    in turn: 0.3 ms a nucleus, the largest cost of a tile after the network).

    Columns by regionprops' names, one row per label present, in label order. Each nucleus's
    values are computed from its own pixels (mask and intensities, in raster order, in the
    coordinates of its box), so a nucleus measured on a tile's canvas or on the whole image
    gets the same numbers (the centroid up to the rounding of the box's position). They
    equal regionprops' to float rounding (``tests/test_nuclei_table.py``); mean intensities
    are summed in float64 (regionprops sums float32 images in float32).
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a 2-D label image, got shape {labels.shape}")
    height, width = labels.shape
    where = np.flatnonzero(labels)
    lab = labels.ravel()[where].astype(np.int64)
    boxes = ndimage.find_objects(labels)
    present = np.array([b is not None for b in boxes], bool)
    ids = np.flatnonzero(present) + 1                        # labels present, ascending
    index = np.cumsum(np.concatenate([[0], present])) - 1    # label -> row
    row = index[lab]
    n = len(ids)
    y0 = np.array([boxes[i - 1][0].start for i in ids], np.int64)
    x0 = np.array([boxes[i - 1][1].start for i in ids], np.int64)
    y1 = np.array([boxes[i - 1][0].stop for i in ids], np.int64)
    x1 = np.array([boxes[i - 1][1].stop for i in ids], np.int64)
    ys, xs = np.divmod(where, width)
    ly = (ys - y0[row]).astype(np.float64)                 # coordinates in the nucleus's box
    lx = (xs - x0[row]).astype(np.float64)
    area = np.bincount(row, minlength=n).astype(np.float64)
    cy = np.bincount(row, ly, minlength=n) / np.maximum(area, 1)
    cx = np.bincount(row, lx, minlength=n) / np.maximum(area, 1)
    dy, dx = ly - cy[row], lx - cx[row]
    mu20 = np.bincount(row, dy * dy, minlength=n)
    mu02 = np.bincount(row, dx * dx, minlength=n)
    mu11 = np.bincount(row, dy * dx, minlength=n)
    values = np.asarray(intensity).ravel()[where].astype(np.float64)
    return {
        "label": ids,
        "centroid-0": cy + y0, "centroid-1": cx + x0,
        "bbox-0": y0, "bbox-1": x0, "bbox-2": y1, "bbox-3": x1,
        "area": area,
        "perimeter": _perimeters(labels, where, lab, row, n),
        "eccentricity": _eccentricities(mu20, mu02, mu11, area),
        "intensity_mean": np.bincount(row, values, minlength=n) / np.maximum(area, 1),
    }


def _eccentricities(mu20: np.ndarray, mu02: np.ndarray, mu11: np.ndarray,
                    area: np.ndarray) -> np.ndarray:
    """sqrt(1 - l2 / l1) of the inertia tensor's eigenvalues l1 >= l2 (clipped at 0), 0 where
    l1 is 0, as regionprops defines it."""
    a, c, b = mu02 / area, mu20 / area, -mu11 / area
    mean, spread = (a + c) / 2, np.sqrt(((a - c) / 2) ** 2 + b * b)
    l1, l2 = np.maximum(mean + spread, 0), np.maximum(mean - spread, 0)
    out = np.zeros_like(l1)
    positive = l1 > 0
    out[positive] = np.sqrt(np.maximum(1 - l2[positive] / l1[positive], 0))
    return out


def _perimeters(labels: np.ndarray, where: np.ndarray, lab: np.ndarray, row: np.ndarray,
                n: int) -> np.ndarray:
    """Each region's perimeter (:data:`PERIMETER_WEIGHTS`): its border pixels are those with
    a 4-neighbour outside it; each is weighed by which of its 8 neighbours are border pixels
    of the same region."""
    height, width = labels.shape
    stride = width + 2
    padded = np.zeros((height + 2) * stride, labels.dtype)    # a frame of background
    padded.reshape(height + 2, stride)[1:-1, 1:-1] = labels
    ys, xs = np.divmod(where, width)
    at = (ys + 1) * stride + xs + 1                            # positions in ``padded``
    inner = np.ones(len(at), bool)
    for dy, dx in _FOUR:
        inner &= padded[at + dy * stride + dx] == lab
    at, lab, row = at[~inner], lab[~inner], row[~inner]
    border = np.zeros(len(padded), bool)
    border[at] = True
    code = np.ones(len(at), np.int64)
    for weight, offsets in ((2, _FOUR), (10, _DIAGONAL)):
        for dy, dx in offsets:
            near = at + dy * stride + dx
            code += weight * (border[near] & (padded[near] == lab))
    counts = np.bincount(row * 50 + code, minlength=n * 50).reshape(n, 50)
    total = np.zeros(n, np.float64)
    for k in np.flatnonzero(PERIMETER_WEIGHTS):   # one order for every nucleus on any canvas
        total += counts[:, k] * PERIMETER_WEIGHTS[k]
    return total


def measure(labels: np.ndarray, scores: Sequence[float], intensity: np.ndarray,
            name: str = "image") -> pd.DataFrame:
    """One row per label (:data:`COLUMNS`), from :func:`measure_regions` (regionprops'
    properties)."""
    # here: pandas adds 0.3-0.5 s to `import nucleus`, which imports this module through
    # nucleus.segment
    import pandas as pd

    props = measure_regions(labels, intensity)
    table = pd.DataFrame(props).rename(columns=RENAME)
    scores = np.asarray(scores, np.float64)
    table["score"] = scores[table["label"].to_numpy(np.int64) - 1] if len(table) else []
    table.insert(0, "image", name)
    return table[list(COLUMNS)]
