"""The nuclei table's measurements (nucleus/formats/nuclei_table.py): regionprops' numbers,
computed for all nuclei at once."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.measure import regionprops_table

from nucleus.formats.nuclei_table import PROPERTIES, measure, measure_regions


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


@pytest.mark.parametrize("seed", range(12))
def test_measurements_are_regionprops(seed):
    labels, intensity = _shapes(seed)
    want = regionprops_table(labels, intensity_image=intensity, properties=PROPERTIES)
    got = measure_regions(labels, intensity)
    assert list(got) == list(want)
    np.testing.assert_array_equal(got["label"], want["label"])
    for key in ("bbox-0", "bbox-1", "bbox-2", "bbox-3", "area"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    for key in ("centroid-0", "centroid-1", "perimeter"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)
    # a circle's l2 / l1 is 1 up to rounding, and sqrt(1 - l2 / l1) magnifies that
    np.testing.assert_allclose(got["eccentricity"], want["eccentricity"], atol=1e-6)
    # regionprops averages float32 intensities in float32; here every mean is float64
    np.testing.assert_allclose(got["intensity_mean"], want["intensity_mean"], rtol=1e-6)


def test_a_nucleus_measures_the_same_on_any_canvas():
    """Values depend on a nucleus's own pixels only: moved, or beside other nuclei, it gets
    the same numbers (shifted by the move), so tiles and whole images agree (exactly, but
    for the rounding of the shift in the centroid)."""
    labels, intensity = _shapes(3)
    alone = measure_regions(labels, intensity)
    big = np.zeros((labels.shape[0] + 40, labels.shape[1] + 25), np.int32)
    big_intensity = np.zeros(big.shape, intensity.dtype)
    big[40:, 25:] = labels
    big_intensity[40:, 25:] = intensity
    big[:10, :10] = labels.max() + 1                       # a neighbour of its own
    moved = measure_regions(big, big_intensity)
    for key in alone:
        shift = 40 if key in ("centroid-0", "bbox-0", "bbox-2") else (
            25 if key in ("centroid-1", "bbox-1", "bbox-3") else 0)
        if key.startswith("centroid"):                    # the shift itself rounds
            np.testing.assert_allclose(moved[key][:-1], alone[key] + shift, rtol=1e-14)
        else:
            np.testing.assert_array_equal(moved[key][:-1], alone[key] + shift, err_msg=key)


def test_no_labels_give_an_empty_table():
    table = measure(np.zeros((5, 6), np.uint16), [], np.zeros((5, 6)), "none")
    assert len(table) == 0 and "perimeter" in table
    with pytest.raises(ValueError, match="2-D"):
        measure_regions(np.zeros((2, 2, 2), np.int32), np.zeros((2, 2, 2)))
