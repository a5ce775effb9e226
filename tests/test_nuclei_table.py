"""The nuclei table (nucleus/formats/nuclei_table.py, and large.TileTable, which measures tile
by tile): regionprops' numbers under the table's names, the same for the whole label image and
for the nuclei measured on the canvas around them."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops_table

from nucleus.formats.nuclei_table import COLUMNS, PROPERTIES, RENAME, measure
from nucleus.inference.large import Found, stitch_found
from nucleus.inference.tiling import Instance, plan_tiles, stitch


def _shapes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Touching, overlapping-then-overwritten, holed, one-pixel, line and box-filling regions
    with label gaps, on a canvas they touch the edges of; and an intensity image."""
    rng = np.random.default_rng(seed)
    height, width = rng.integers(1, 90, 2)
    labels = np.zeros((height, width), np.int32)
    yy, xx = np.ogrid[:height, :width]
    for _ in range(rng.integers(1, 30)):
        y, x = rng.integers(0, height), rng.integers(0, width)
        ry, rx = rng.integers(0, 12, 2) + 0.5
        kind = rng.integers(0, 4)
        if kind == 0:
            region = (yy - y) ** 2 / ry ** 2 + (xx - x) ** 2 / rx ** 2 <= 1
        elif kind == 1:
            region = (abs(yy - y) <= ry) & (abs(xx - x) <= rx)
        elif kind == 2:
            d = (yy - y) ** 2 + (xx - x) ** 2
            region = (d <= ry ** 2 + 9) & (d >= ry ** 2 / 4)           # a ring
        else:
            region = (yy == y) & (abs(xx - x) <= rx)                    # a line
        labels[region] = rng.integers(1, 50)
    labels[rng.integers(0, height), rng.integers(0, width)] = 77          # one pixel
    if seed % 2:
        intensity = rng.random((height, width)).astype(np.float32) * 255
    else:
        intensity = rng.integers(0, 65535, (height, width)).astype(np.uint16)
    return labels, intensity


@pytest.mark.parametrize("seed", range(6))
def test_table_is_regionprops_under_the_tables_names(seed):
    labels, intensity = _shapes(seed)
    scores = np.random.default_rng(seed).random(int(labels.max()))
    table = measure(labels, scores, intensity, "img")
    want = regionprops_table(labels, intensity_image=intensity, properties=PROPERTIES)
    assert list(table.columns) == list(COLUMNS)
    assert (table["image"] == "img").all()
    for key, values in want.items():
        np.testing.assert_array_equal(table[RENAME.get(key, key)], values, err_msg=key)
    np.testing.assert_array_equal(table["score"], scores[want["label"] - 1])


def test_a_rectangle_by_hand():
    labels = np.zeros((6, 8), np.uint16)
    labels[1:4, 2:6] = 3                                  # 3 x 4 pixels
    intensity = np.arange(48, dtype=np.float64).reshape(6, 8)
    row = measure(labels, [0.1, 0.2, 0.9], intensity).iloc[0]
    assert (row["label"], row["area"], row["score"]) == (3, 12, 0.9)
    assert (row["bbox_y0"], row["bbox_x0"], row["bbox_y1"], row["bbox_x1"]) == (1, 2, 4, 6)
    assert (row["centroid_y"], row["centroid_x"]) == (2.0, 3.5)
    assert row["mean_intensity"] == pytest.approx(intensity[1:4, 2:6].mean())
    # the inertia tensor's eigenvalues of a 3 x 4 grid: (16 - 1) / 12 and (9 - 1) / 12
    assert row["eccentricity"] == pytest.approx(np.sqrt(1 - 8 / 15))


@pytest.mark.parametrize("seed", range(6, 12))
def test_measured_by_tile_is_regionprops_of_the_whole_image(seed):
    """The nuclei of a label image given as instances (box and mask) and measured as the
    window-by-window path measures them (on the canvas around the kept ones) get the numbers
    regionprops gives them in the whole label image."""
    labels, intensity = _shapes(seed)
    shape = labels.shape
    instances = []
    for k in np.unique(labels[labels > 0]):
        ys, xs = np.nonzero(labels == k)
        y0, x0, y1, x1 = ys.min(), xs.min(), ys.max() + 1, xs.max() + 1
        instances.append(Instance((int(y0), int(x0), int(y1), int(x1)),
                                  labels[y0:y1, x0:x1] == k, float(k) / 100))
    found = [Found(i, intensity[i.box[0]:i.box[2], i.box[1]:i.box[3]]) for i in instances]
    (tile,) = plan_tiles(shape, max(shape) + 1, 0)
    count, table = stitch_found(shape, [(tile, found)], lambda y0, rows: None, "img")
    whole, scores = stitch(shape, instances)
    want = measure(whole, scores, intensity, "img")
    assert count == len(instances) == len(table)
    for column in ("image", "label", "score", "area", "bbox_y0", "bbox_x0", "bbox_y1",
                   "bbox_x1", "perimeter", "eccentricity", "mean_intensity"):
        np.testing.assert_array_equal(table[column], want[column], err_msg=column)
    for column in ("centroid_y", "centroid_x"):                # the canvas's offset rounds
        np.testing.assert_allclose(table[column], want[column], rtol=1e-12, err_msg=column)


def test_no_labels_give_an_empty_table():
    table = measure(np.zeros((5, 6), np.uint16), [], np.zeros((5, 6)), "none")
    assert len(table) == 0 and list(table.columns) == list(COLUMNS)
