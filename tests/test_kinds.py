"""nucleus.kinds: the image kind (fluorescence, bright-field, colour) read from pixels alone.

Synthetic images stand in for each kind and each way a file can store it (8-bit and 16-bit grey,
grey saved as RGB or RGBA, floats); the bundled sample checks the rule on real images.
"""
from __future__ import annotations

import numpy as np
import pytest

from mrcnn import utils
from nucleus.dataset import load_subset
from nucleus.kinds import KINDS, dataset_kinds, image_kind


def _nuclei(size: int = 96, seed: int = 0) -> np.ndarray:
    """Where a few round nuclei lie in a size x size image (bool)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(6):
        cy, cx = rng.integers(12, size - 12, 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(30, 80)
    return mask


def fluorescence(size: int = 96) -> np.ndarray:
    """Grey, dark background (~20), bright nuclei (~190), uint8 [H, W]."""
    rng = np.random.default_rng(1)
    image = rng.normal(20, 5, (size, size))
    image[_nuclei(size)] = rng.normal(190, 10, _nuclei(size).sum())
    return image.clip(0, 255).astype(np.uint8)


def brightfield(size: int = 96) -> np.ndarray:
    """Grey, light background (~210), dark nuclei (~70), uint8 [H, W]."""
    rng = np.random.default_rng(2)
    image = rng.normal(210, 6, (size, size))
    image[_nuclei(size)] = rng.normal(70, 10, _nuclei(size).sum())
    return image.clip(0, 255).astype(np.uint8)


def stained(size: int = 96) -> np.ndarray:
    """H&E-like tissue: pink background, purple nuclei, uint8 [H, W, 3]."""
    rng = np.random.default_rng(3)
    image = np.empty((size, size, 3))
    image[:] = (235, 175, 205)                    # eosin pink
    image[_nuclei(size)] = (95, 55, 140)          # haematoxylin purple
    image += rng.normal(0, 4, image.shape)
    return image.clip(0, 255).astype(np.uint8)


def as_rgb(grey: np.ndarray) -> np.ndarray:
    return np.stack([grey] * 3, axis=-1)


# ----------------------------------------------------------------------------- image_kind
@pytest.mark.parametrize("image, kind", [
    (fluorescence(), "fluorescence"),
    (brightfield(), "brightfield"),
    (stained(), "colour"),
])
def test_each_kind_is_recognised(image, kind):
    assert image_kind(image) == kind


def test_grey_saved_as_rgb_or_rgba_is_still_grey():
    for grey, kind in ((fluorescence(), "fluorescence"), (brightfield(), "brightfield")):
        rgb = as_rgb(grey)
        assert image_kind(rgb) == kind
        alpha = np.full(grey.shape + (1,), 255, np.uint8)
        assert image_kind(np.concatenate([rgb, alpha], axis=-1)) == kind
        assert image_kind(grey[..., None]) == kind          # [H, W, 1]


def test_alpha_channel_does_not_make_an_image_colour_or_light():
    # A transparent alpha (0) far from the grey levels must be ignored, not averaged in.
    rgba = np.concatenate([as_rgb(fluorescence()), np.zeros(fluorescence().shape + (1,),
                                                           np.uint8)], axis=-1)
    assert image_kind(rgba) == "fluorescence"
    rgba = np.concatenate([stained(), np.full(stained().shape[:2] + (1,), 255, np.uint8)],
                          axis=-1)
    assert image_kind(rgba) == "colour"


def test_16_bit_grey_is_judged_on_its_own_range():
    # A 16-bit fluorescence image has levels in the thousands: far above 127.5, yet dark for
    # its range. Scaled to 16 bits, each kind keeps its kind.
    assert image_kind(fluorescence().astype(np.uint16) * 257) == "fluorescence"
    assert image_kind(brightfield().astype(np.uint16) * 257) == "brightfield"
    assert image_kind(as_rgb(brightfield().astype(np.uint16) * 257)) == "brightfield"
    assert image_kind(stained().astype(np.uint16) * 257) == "colour"


def test_float_images_are_judged_on_their_values():
    assert image_kind(fluorescence() / 255.0) == "fluorescence"
    assert image_kind(brightfield() / 255.0) == "brightfield"
    assert image_kind(stained() / 255.0) == "colour"
    assert image_kind(np.zeros((8, 8), np.float32)) == "fluorescence"  # all black: no crash


def test_faint_colour_cast_stays_grey_and_pale_stain_is_colour():
    # Grey with a tint of 1 level per channel (JPEG-like noise) is below the threshold ...
    tinted = as_rgb(brightfield()).astype(np.int16) + np.array([1, 0, -1])
    assert image_kind(tinted.clip(0, 255).astype(np.uint8)) == "brightfield"
    # ... a pale stain a few levels apart per channel is above it.
    pale = as_rgb(brightfield()).astype(np.int16) + np.array([8, -2, 6])
    assert image_kind(pale.clip(0, 255).astype(np.uint8)) == "colour"


def test_large_images_are_subsampled_to_the_same_answer():
    big = np.tile(brightfield(), (12, 12))               # 1152 x 1152, > 250k pixels
    assert image_kind(big) == "brightfield"
    assert image_kind(np.tile(stained(), (12, 12, 1))) == "colour"


@pytest.mark.parametrize("bad, message", [
    (np.zeros((4, 4, 2), np.uint8), "shape"),
    (np.zeros((4,), np.uint8), "shape"),
    (np.zeros((2, 3, 4, 3), np.uint8), "shape"),
    (np.zeros((0, 5), np.uint8), "empty"),
])
def test_bad_shapes_are_refused(bad, message):
    with pytest.raises(ValueError, match=message):
        image_kind(bad)


def test_the_sample_images_get_the_kinds_they_look_like():
    # nucleus/sample/README.md: the train and val sample holds grey fluorescence images and
    # seven colour (stained or tinted) ones; the test sample two grey and one colour.
    train = load_subset(None, "stage1_train")
    kinds = dataset_kinds(train)
    counts = {k: list(kinds.values()).count(k) for k in KINDS}
    assert counts == {"fluorescence": 15, "brightfield": 0, "colour": 7}
    test = dataset_kinds(load_subset(None, "stage1_test"))
    assert sorted(test.values()) == ["colour", "fluorescence", "fluorescence"]


# ----------------------------------------------------------------------------- dataset_kinds
class CountingDataset(utils.Dataset):
    """Images in memory; counts how often each is read."""

    def __init__(self, images: list[np.ndarray]):
        super().__init__()
        self.add_class("nucleus", 1, "nucleus")
        self.images = images
        self.reads = [0] * len(images)
        for i in range(len(images)):
            self.add_image("nucleus", image_id=f"img{i}", path=None)
        self.prepare()

    def load_image(self, image_id: int) -> np.ndarray:
        self.reads[image_id] += 1
        return self.images[image_id]


def test_dataset_kinds_reads_each_image_once_and_caches_in_image_info():
    ds = CountingDataset([fluorescence(), stained(), brightfield()])
    assert dataset_kinds(ds) == {0: "fluorescence", 1: "colour", 2: "brightfield"}
    assert ds.reads == [1, 1, 1]
    assert [info["kind"] for info in ds.image_info] == ["fluorescence", "colour", "brightfield"]
    assert dataset_kinds(ds) == {0: "fluorescence", 1: "colour", 2: "brightfield"}
    assert ds.reads == [1, 1, 1]                          # second call: from image_info


def test_dataset_kinds_of_some_images_only():
    ds = CountingDataset([fluorescence(), stained(), brightfield()])
    assert dataset_kinds(ds, [2]) == {2: "brightfield"}
    assert ds.reads == [0, 0, 1]
