"""Reading microscope image files and preparing them as the models see them
(nucleus/formats/image_io.py), on files and images made in the tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from mrcnn.utils import to_rgb_uint8
from nucleus.errors import InputError
from nucleus.formats.image_io import (apply_stretch, expand_path, grey_intensity, normalize_image,
                                      prepare_image, read_image, stretch_table, unique_names)

H, W = 40, 50
RNG = np.random.default_rng(7)


def _deep(dtype=np.uint16, high=4000) -> np.ndarray:
    return RNG.integers(100, high, (H, W)).astype(dtype)


# ----------------------------------------------------------------------------- TIFF
def test_two_channel_16bit_tiff_needs_a_channel_and_gives_it(tmp_path):
    dapi, actin = _deep(), _deep(high=60000)
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, np.stack([actin, dapi]), imagej=True, metadata={"axes": "CYX"})
    with pytest.raises(InputError, match=r"two\.tif: has 2 channels.*--channel N \(0\.\.1\)"):
        read_image(path)
    plane = read_image(path, channel=1)
    assert plane.dtype == np.uint16
    np.testing.assert_array_equal(plane, dapi)
    with pytest.raises(InputError, match=r"--channel 2, but the image has 2 channels"):
        read_image(path, channel=2)


def test_multi_page_tiff_pages_are_channels(tmp_path):
    path = tmp_path / "pages.tif"
    pages = [np.full((H, W), 10 * i, np.uint8) for i in range(3)]
    with tifffile.TiffWriter(path) as tif:
        for page in pages:
            tif.write(page, metadata=None)
    with pytest.raises(InputError, match="3 pages"):
        read_image(path)
    np.testing.assert_array_equal(read_image(path, channel=2), pages[2])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.float32])
def test_grey_tiffs_of_every_depth_keep_their_values(tmp_path, dtype):
    image = _deep(dtype, high=250 if dtype == np.uint8 else 70000 if dtype == np.uint32
                  else 4000)
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, image)
    out = read_image(path)
    assert out.dtype == dtype
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(read_image(path, channel=0), image)  # channel 0 of a grey one
    with pytest.raises(InputError, match="one channel"):
        read_image(path, channel=1)


def test_rgb_tiff_is_colour_and_minisblack_samples_are_channels(tmp_path):
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "rgb.tif"), rgb)
    tifffile.imwrite(tmp_path / "chan.tif", rgb, photometric="minisblack", planarconfig="contig")
    with pytest.raises(InputError, match="3 channels"):
        read_image(tmp_path / "chan.tif")


def test_a_stack_is_refused_with_advice(tmp_path):
    path = tmp_path / "zstack.tif"
    tifffile.imwrite(path, np.zeros((2, 2, H, W), np.uint16), metadata={"axes": "ZCYX"})
    with pytest.raises(InputError, match=r"zstack\.tif: a stack .*ZCYX.*one plane"):
        read_image(path, channel=0)


def test_lzw_compressed_tiff(tmp_path):
    image = _deep()
    tifffile.imwrite(tmp_path / "lzw.tif", image, compression="lzw")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), image)


# ----------------------------------------------------------------------------- PNG, JPEG, BMP
def test_rgba_png_loses_its_alpha(tmp_path):
    rgba = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png"), rgba[..., :3])
    np.testing.assert_array_equal(read_image(tmp_path / "rgba.png", channel=2), rgba[..., 2])


def test_grey_alpha_png_is_grey(tmp_path):
    la = RNG.integers(0, 256, (H, W, 2), dtype=np.uint8)
    Image.fromarray(la, mode="LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_image(tmp_path / "la.png"), la[..., 0])


def test_16bit_png_jpeg_and_bmp(tmp_path):
    deep = _deep()
    Image.fromarray(deep).save(tmp_path / "deep.png")
    np.testing.assert_array_equal(read_image(tmp_path / "deep.png"), deep)
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[10:30, 10:40] = (200, 100, 50)
    Image.fromarray(rgb).save(tmp_path / "c.jpg", quality=95)
    out = read_image(tmp_path / "c.jpg")
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb).mean() < 3             # lossy, but close
    Image.fromarray(rgb[..., 0]).save(tmp_path / "g.bmp")
    np.testing.assert_array_equal(read_image(tmp_path / "g.bmp"), rgb[..., 0])


@pytest.mark.parametrize("name, write", [
    ("cut.png", lambda p: Image.fromarray(_deep(np.uint8, 250)).save(p)),
    ("cut.tif", lambda p: tifffile.imwrite(p, _deep())),
])
def test_truncated_and_empty_files_name_the_file(tmp_path, name, write):
    path = tmp_path / name
    write(path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match=rf"{name}: cannot read"):
        read_image(path)
    path.write_bytes(b"")
    with pytest.raises(InputError, match=rf"{name}: empty file"):
        read_image(path)
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="is a folder"):
        read_image(tmp_path)


# ----------------------------------------------------------------------------- preparation
def test_normalize_image_none_is_the_identity():
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3)).astype(np.uint8)
    assert normalize_image(image, None) is image


def test_stretch_brightens_a_dim_fluorescence_image():
    image = np.full((64, 64, 3), 4, np.uint8)
    image[10:30, 10:30] = 40                       # dim nuclei on a dark background
    out = normalize_image(image, "stretch")
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert out[20, 20, 0] == 255 and out[0, 0, 0] == 0
    # a bright copy of the same scene comes out the same
    np.testing.assert_array_equal(normalize_image(image * 6, "stretch"), out)


def test_stretch_inverts_light_backgrounds_with_one_map_for_all_channels():
    image = np.full((64, 64, 3), (230, 220, 225), np.uint8)
    image[20:40, 20:40] = (90, 40, 120)             # dark purple nucleus on light tissue
    out = normalize_image(image, "stretch")
    assert out[30, 30].mean() > out[0, 0].mean()   # the nucleus is now the bright thing
    assert out[0, 0].max() <= 10
    nucleus = out[30, 30].astype(int)
    assert nucleus[2] < nucleus[0] < nucleus[1]    # one map for all channels: the purple's
                                                   # channel order, reversed by the inversion
    flat = np.full((8, 8, 3), 77, np.uint8)
    np.testing.assert_array_equal(normalize_image(flat, "stretch"), flat)
    with pytest.raises(ValueError, match="IMAGE_NORMALIZATION"):
        normalize_image(flat, "zscore")


@pytest.mark.parametrize("invert, lo, hi", [(False, 3.2, 200.7), (True, 17.25, 18.5),
                                             (False, -4.0, 300.0), (True, 10.0, 10.5),
                                             (False, 0.0, 255.0)])
def test_the_stretch_looked_up_is_the_stretch_computed(invert, lo, hi):
    """The per-level table gives, pixel for pixel, the float32 arithmetic on every pixel
    (rounding, clipping, the flat-image case), for RGB and grey images."""
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 30, 3)).astype(np.uint8)
    rgb[0, :3] = [[0, 1, 2], [127, 128, 254], [255, 255, 255]]

    def computed(image):
        out = image.astype(np.float32)
        out = 255.0 - out if invert else out
        if hi - lo < 1.0:
            return np.clip(out, 0, 255).astype(np.uint8)
        out = (out - np.float64(lo)) * (255.0 / (np.float64(hi) - np.float64(lo)))
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)

    for image in (rgb, rgb[..., 1]):
        got = apply_stretch(image, invert, lo, hi)
        assert got.dtype == np.uint8 and got.shape == image.shape
        np.testing.assert_array_equal(got, computed(image))
    np.testing.assert_array_equal(stretch_table(invert, lo, hi),
                                  computed(np.arange(256, dtype=np.uint8)))


def test_prepare_image_converts_then_normalises():
    deep = RNG.integers(40000, 60000, (H, W)).astype(np.uint16)   # a light 16-bit image
    deep[10:20, 10:20] = 1000                                      # with a dark nucleus
    rgb = to_rgb_uint8(deep)
    np.testing.assert_array_equal(prepare_image(deep, None), rgb)
    prepared = prepare_image(deep, "stretch")
    np.testing.assert_array_equal(prepared, normalize_image(rgb, "stretch"))
    assert prepared[15, 15, 0] == 255                              # inverted: now bright


def test_grey_intensity_is_the_plane_or_the_rgb_mean():
    grey = _deep()
    assert grey_intensity(grey) is grey
    rgb = np.stack([grey, grey + 3, grey + 6], axis=-1)
    np.testing.assert_allclose(grey_intensity(rgb), grey + 3.0)


# ----------------------------------------------------------------------------- paths
def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(path, format="PNG")
    return path


def test_folders_globs_and_files(tmp_path):
    b = _touch(tmp_path / "b.png")
    a = _touch(tmp_path / "a.TIF")
    _touch(tmp_path / ".hidden.png")
    (tmp_path / "notes.csv").write_text("x")
    deep = _touch(tmp_path / "sub" / "c.png")
    assert expand_path(tmp_path) == [a, b]                      # not recursive, sorted
    assert expand_path(str(tmp_path / "*.png")) == [b]
    assert expand_path(str(tmp_path / "**" / "*.png")) == [b, deep]
    assert expand_path(tmp_path / "notes.csv") == [tmp_path / "notes.csv"]  # named: tried
    with pytest.raises(InputError, match="file not found"):
        expand_path(tmp_path / "nope.png")
    with pytest.raises(InputError, match="no image files match"):
        expand_path(str(tmp_path / "*.jpg"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files in this folder"):
        expand_path(tmp_path / "empty")


def test_unique_names():
    paths = [Path("x/img.tif"), Path("y/img.png"), Path("z/other.png"), Path("w/img.tif")]
    assert unique_names(paths) == ["img", "img_2", "other", "img_3"]
