"""lazy_io (nucleus/formats/lazy_io.py): windows of TIFFs and zarr stores read lazily are the
planes read_image makes, and prepared window by window they equal the detector's whole-image
preparation, bit for bit."""
from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from nucleus.errors import InputError
from nucleus.formats.image_io import read_image
from nucleus.formats.lazy_io import (_quantile_from_counts, cached_open, open_lazy,
                                     plan_preparation, prepare_window)
from nucleus.inference.detectors import Detector

RNG = np.random.default_rng(0)
IMAGES = {
    "deep grey": RNG.integers(0, 4000, (700, 900)).astype(np.uint16),
    "bright RGB": (255 - RNG.integers(0, 80, (513, 301, 3))).astype(np.uint8),
    "dim grey": RNG.integers(0, 200, (300, 1001)).astype(np.uint8),
    "float": RNG.normal(size=(400, 401)).astype(np.float32),
    "small RGB": RNG.integers(0, 255, (100, 120, 3)).astype(np.uint8),
    "flat": np.full((300, 300), 7, np.uint8),
}


@pytest.mark.parametrize("name", sorted(IMAGES))
@pytest.mark.parametrize("normalization", [None, "stretch"])
def test_windows_prepared_alone_equal_the_whole_image_prepared(tmp_path, name, normalization):
    image = IMAGES[name]
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, image, tile=(128, 128),
                     photometric="rgb" if image.ndim == 3 else "minisblack")
    lazy = open_lazy(path)
    assert lazy.shape == image.shape and lazy.dtype == image.dtype
    whole = Detector(None, normalization).prepare(image)
    prep = plan_preparation(lazy, normalization)
    for y0, x0, y1, x1 in [(0, 0, *image.shape[:2]), (50, 60, 90, 100), (99, 0, 100, 7)]:
        window = prepare_window(lazy.window(y0, x0, y1, x1), prep)
        np.testing.assert_array_equal(window, whole[y0:y1, x0:x1])
    lazy.close()


def test_quantiles_from_counts_are_numpys():
    for n in (1, 2, 3, 10, 1001, 65537):
        sums = RNG.integers(0, 766, n)
        values = np.arange(766, dtype=np.float64) / 3
        counts = np.bincount(sums, minlength=766)
        sample = values[sums]
        for q in (0.5, 99.5, 0.1, 50):
            assert _quantile_from_counts(values, counts, np.true_divide(q, 100)) == \
                np.percentile(sample, q)
        assert _quantile_from_counts(values, counts, 0.5, median=True) == np.median(sample)
        flipped = 255.0 - values
        assert _quantile_from_counts(flipped, counts, 0.005) == np.percentile(255.0 - sample,
                                                                             0.5)


def test_planes_are_read_images(tmp_path):
    image = RNG.integers(0, 60000, (3, 200, 300)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "cyx.tif", image, imagej=True, metadata={"axes": "CYX"})
    rgba = RNG.integers(0, 255, (120, 130, 4)).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    for path, channel in [(tmp_path / "cyx.tif", 2), (tmp_path / "cyx.tif", 0),
                          (tmp_path / "rgba.tif", None), (tmp_path / "rgba.tif", 3)]:
        lazy = open_lazy(path, channel)
        np.testing.assert_array_equal(lazy.window(0, 0, *lazy.shape[:2]),
                                      read_image(path, channel))
        np.testing.assert_array_equal(lazy[10:20, 30:45], read_image(path, channel)[10:20, 30:45])
    with pytest.raises(InputError, match=r"cyx.tif: --channel 3, but the image has 3 channels"):
        open_lazy(tmp_path / "cyx.tif", 3)
    assert open_lazy(tmp_path / "cyx.tif") is None       # read_image explains: choose one


def test_zarr_stores_and_other_files(tmp_path):
    data = RNG.integers(0, 255, (300, 200, 3)).astype(np.uint8)
    store = zarr.open_array(str(tmp_path / "slide.zarr"), mode="w", shape=data.shape,
                            chunks=(64, 64, 3), dtype=data.dtype)
    store[:] = data
    lazy = open_lazy(tmp_path / "slide.zarr")
    assert lazy.shape == (300, 200, 3)
    np.testing.assert_array_equal(lazy.window(10, 20, 70, 90), data[10:70, 20:90])
    Image.fromarray(data).save(tmp_path / "photo.png")
    assert open_lazy(tmp_path / "photo.png") is None
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    assert open_lazy(tmp_path / "broken.tif") is None     # read_image says what is wrong


def test_a_rewritten_file_is_opened_again(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(path, np.zeros((40, 50), np.uint8))
    assert cached_open(path, None).shape == (40, 50)
    tifffile.imwrite(path, np.ones((60, 70), np.uint16))
    assert cached_open(path, None).shape == (60, 70)
    with pytest.raises(InputError, match="a.tif: --channel 1, but the image has one channel"):
        cached_open(path, 1)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "b.png")
    with pytest.raises(InputError, match="b.png: cannot be read window by window"):
        cached_open(tmp_path / "b.png", None)
