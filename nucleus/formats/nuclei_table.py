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


def measure(labels: np.ndarray, scores: Sequence[float], intensity: np.ndarray,
            name: str = "image") -> pd.DataFrame:
    """One row per label (:data:`COLUMNS`), from ``skimage.measure.regionprops_table``."""
    # here: pandas and regionprops (SciPy) add 0.3-0.5 s to `import nucleus`, which imports
    # this module through nucleus.segment
    import pandas as pd
    from skimage.measure import regionprops_table

    props = regionprops_table(labels, intensity_image=intensity, properties=PROPERTIES)
    table = pd.DataFrame(props).rename(columns=RENAME)
    scores = np.asarray(scores, np.float64)
    table["score"] = scores[table["label"].to_numpy(np.int64) - 1] if len(table) else []
    table.insert(0, "image", name)
    return table[list(COLUMNS)]
