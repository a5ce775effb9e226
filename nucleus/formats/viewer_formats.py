"""Nuclei as outlines the image viewers open: an ImageJ/Fiji ROI set and QuPath's GeoJSON.

``nucleus segment --rois`` writes ``<name>_rois.zip`` (one polygon ROI per nucleus, named by its
label value, for Fiji's ROI Manager) and ``--geojson`` writes ``<name>_nuclei.geojson`` (one
QuPath detection per nucleus, its row of ``nuclei.csv`` as measurements). Both come from the
label image, so they name the same nuclei as ``<name>_labels.tif`` and ``nuclei.csv``.

Each outline is the 0.5 level line of the nucleus's mask (``skimage.measure.find_contours``):
it passes between every inside and outside pixel centre, so a pixel-centre fill of the polygon
(what Fiji and QuPath do) gives back exactly the nucleus's pixels. Coordinates are those of
both viewers: x right, y down, pixel (0, 0) covering [0, 1) x [0, 1), so the centre of pixel
(row i, column j) is (j + 0.5, i + 0.5). Pixels that touch only at a corner count as one piece
(the contour runs through their shared corner); a nucleus in several pieces (a mask cut by a
neighbour) is outlined by its largest piece; holes are filled.
"""
from __future__ import annotations

import io
import json
import math
import os
import zipfile
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import roifile
import tifffile
from skimage.measure import find_contours

from nucleus.formats.io_utils import atomic_write

if TYPE_CHECKING:
    import pandas as pd

ROIS_SUFFIX = "_rois.zip"
GEOJSON_SUFFIX = "_nuclei.geojson"
_MEASUREMENTS = ("area", "perimeter", "eccentricity", "mean_intensity", "score", "centroid_x",
                 "centroid_y")
"""Columns of ``nuclei.csv`` that go into each QuPath detection's measurements."""


def outline(mask: np.ndarray) -> np.ndarray:
    """The outline of the largest 8-connected piece of ``mask`` as [N, 2] (x, y) vertices in
    viewer coordinates (pixel corners at integers), relative to the mask's top-left corner.

    An empty mask raises ValueError: there is nothing to outline.
    """
    padded = np.pad(np.asarray(mask, bool), 1)   # a closed contour even at the mask's edge
    if not padded.any():
        raise ValueError("empty mask")
    contours = find_contours(padded.astype(np.uint8), 0.5, fully_connected="high")
    rows_cols = max(contours, key=_area)         # the largest piece; holes are inner lines
    # find_contours repeats the first vertex at the end; drop it (the formats close the ring)
    rows_cols = rows_cols[:-1] if np.array_equal(rows_cols[0], rows_cols[-1]) else rows_cols
    # padded index i is pixel i - 1, whose centre lies at i - 1 + 0.5 in viewer coordinates
    return rows_cols[:, ::-1] - 0.5


def _area(vertices: np.ndarray) -> float:
    y, x = vertices[:, 0], vertices[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


def outlines(labels: Any, table: pd.DataFrame) -> Iterator[tuple[int, np.ndarray]]:
    """``(label, vertices)`` for each row of ``table`` (its ``label`` and ``bbox_*`` columns),
    in image coordinates. ``labels`` is anything sliceable as [rows, columns]: an array, or a
    zarr view of a large label TIFF (only each nucleus's box is read)."""
    height, width = labels.shape[:2]
    for row in table.itertuples(index=False):
        label = int(row.label)
        y0, x0 = max(int(row.bbox_y0), 0), max(int(row.bbox_x0), 0)
        y1, x1 = min(int(row.bbox_y1), height), min(int(row.bbox_x1), width)
        crop = np.asarray(labels[y0:y1, x0:x1])
        try:
            vertices = outline(crop == label)
        except ValueError:
            raise ValueError(f"label {label}: no pixels in its box {(y0, x0, y1, x1)}") from None
        yield label, vertices + (x0, y0)


def imagej_rois(labels: Any, table: pd.DataFrame) -> list:
    """One ``roifile.ImagejRoi`` polygon per nucleus, named by its label value."""
    rois = []
    for label, vertices in outlines(labels, table):
        roi = roifile.ImagejRoi.frompoints(vertices.astype(np.float32), name=str(label))
        roi.roitype = roifile.ROI_TYPE.POLYGON     # frompoints makes a freehand line
        rois.append(roi)
    return rois


def write_rois(path: str | os.PathLike, labels: Any, table: pd.DataFrame) -> int:
    """The ImageJ ROI set of :func:`imagej_rois` as a zip Fiji's ROI Manager opens (entries
    ``<label>.roi`` in label order), written atomically; the number of ROIs."""
    rois = imagej_rois(labels, table)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for roi in rois:
            zf.writestr(f"{roi.name}.roi", roi.tobytes())
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())
    return len(rois)


def _number(value: Any) -> float | int | None:
    """A JSON-safe number (NaN and infinities, which JSON lacks, become null)."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def geojson(labels: Any, table: pd.DataFrame) -> dict:
    """QuPath's GeoJSON: a FeatureCollection with one detection per nucleus (a closed polygon),
    named by its label value, its ``nuclei.csv`` row as measurements."""
    rows = {int(r.label): r for r in table.itertuples(index=False)}
    features = []
    for label, vertices in outlines(labels, table):
        ring = np.vstack([vertices, vertices[:1]]).round(3).tolist()   # GeoJSON rings close
        row = rows[label]
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [ring]},
            "properties": {
                "objectType": "detection",
                "name": str(label),
                "label": label,
                "classification": {"name": "Nucleus"},
                "measurements": {name: _number(getattr(row, name)) for name in _MEASUREMENTS},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def write_geojson(path: str | os.PathLike, labels: Any, table: pd.DataFrame) -> int:
    """:func:`geojson` as a file QuPath imports (File > Import objects), written atomically;
    the number of detections."""
    collection = geojson(labels, table)
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(collection, f, separators=(",", ":"))
    return len(collection["features"])


def read_label_tiff(path: str | os.PathLike) -> Any:
    """A label TIFF as a sliceable array that reads only what is sliced (a zarr view), for the
    outlines of a large image that does not fit in memory."""
    import zarr   # here: 0.2-0.3 s that `import nucleus` (segment, this module) would pay

    store = tifffile.imread(path, aszarr=True)
    return zarr.open(store, mode="r")


def write_viewer_files(out_dir: str | os.PathLike, name: str, labels: Any, table: pd.DataFrame,
                       *, rois: bool = False, geojson_file: bool = False) -> list[str]:
    """The outline files asked for, of one image, into ``out_dir``: ``<name>_rois.zip`` and
    ``<name>_nuclei.geojson``. ``labels`` is the label array or the path of its TIFF (a large
    image's, read box by box). The paths written."""
    if not (rois or geojson_file):
        return []
    if isinstance(labels, (str, os.PathLike)):
        labels = read_label_tiff(labels)
    written = []
    if rois:
        path = os.path.join(out_dir, f"{name}{ROIS_SUFFIX}")
        write_rois(path, labels, table)
        written.append(path)
    if geojson_file:
        path = os.path.join(out_dir, f"{name}{GEOJSON_SUFFIX}")
        write_geojson(path, labels, table)
        written.append(path)
    return written


