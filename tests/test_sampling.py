"""nucleus.training.sampling: which training images a run sees, by kind (oversampling,
leave-a-kind-out)."""
from __future__ import annotations

import numpy as np
import pytest

from nucleus.dataset import NucleusDataset, load_subset
from nucleus.errors import InputError
from nucleus.training.sampling import combined, exclude_kinds, kind_counts, oversample
from test_kinds import CountingDataset, brightfield, fluorescence, stained


@pytest.fixture
def mixed() -> CountingDataset:
    """Three fluorescence, two colour, one bright-field image."""
    return CountingDataset([fluorescence(), stained(), fluorescence(), brightfield(),
                            stained(), fluorescence()])


def _kinds_of(ds) -> list[str]:
    return [info["kind"] for info in ds.image_info]


def test_kind_counts_lists_every_kind(mixed):
    assert kind_counts(mixed) == {"fluorescence": 3, "brightfield": 1, "colour": 2}
    only_grey = CountingDataset([fluorescence()])
    assert kind_counts(only_grey) == {"fluorescence": 1, "brightfield": 0, "colour": 0}


def test_oversample_repeats_rare_kinds_and_keeps_the_original(mixed):
    more = oversample(mixed, {"colour": 3, "brightfield": 2})
    assert kind_counts(more) == {"fluorescence": 3, "brightfield": 2, "colour": 6}
    assert len(more.image_ids) == 11
    # Each image is read once to find its kind, however many copies the result holds.
    assert mixed.reads == [1] * 6
    # Repeats are the same images (same ids and paths), loadable through the copy.
    assert sorted({info["id"] for info in more.image_info}) == sorted(
        info["id"] for info in mixed.image_info)
    colour_ids = [i for i, k in enumerate(_kinds_of(more)) if k == "colour"]
    np.testing.assert_array_equal(more.load_image(colour_ids[0]), stained())
    assert len(mixed.image_ids) == 6 and kind_counts(mixed)["colour"] == 2


def test_exclude_kinds_leaves_a_kind_out(mixed):
    grey = exclude_kinds(mixed, ["colour"])
    assert kind_counts(grey) == {"fluorescence": 3, "brightfield": 1, "colour": 0}
    only_fluo = exclude_kinds(mixed, ["colour", "brightfield"])
    assert set(_kinds_of(only_fluo)) == {"fluorescence"} and len(only_fluo.image_ids) == 3


def test_given_kinds_save_reading_the_images(mixed):
    kinds = {i: "fluorescence" for i in range(6)}
    kinds[1] = "colour"
    assert len(oversample(mixed, {"colour": 4}, kinds).image_ids) == 9
    assert len(exclude_kinds(mixed, ["fluorescence"], kinds).image_ids) == 1
    assert kind_counts(mixed, kinds)["colour"] == 1
    assert mixed.reads == [0] * 6


@pytest.mark.parametrize("call, message", [
    (lambda ds: oversample(ds, {"phase-contrast": 2}), "unknown image kind phase-contrast"),
    (lambda ds: exclude_kinds(ds, ["he"]), "unknown image kind he"),
    (lambda ds: oversample(ds, {"colour": 0}), "whole number >= 1"),
    (lambda ds: oversample(ds, {"colour": 1.5}), "whole number >= 1"),
    (lambda ds: exclude_kinds(ds, ["fluorescence", "brightfield", "colour"]), "no training image"),
])
def test_bad_requests_are_clear_errors(mixed, call, message):
    with pytest.raises(InputError, match=message):
        call(mixed)


def test_a_nucleus_dataset_copy_loads_images_and_masks_on_its_own():
    train = load_subset(None, "train")
    doubled = oversample(train, {"colour": 2})
    assert isinstance(doubled, NucleusDataset)
    assert kind_counts(doubled)["colour"] == 2 * kind_counts(train)["colour"]
    assert doubled._labels is not train._labels            # its own label cache
    last = len(doubled.image_ids) - 1
    image = doubled.load_image(last)
    masks, class_ids = doubled.load_mask(last)
    assert masks.shape[:2] == image.shape[:2] and masks.shape[2] == len(class_ids) > 0


def test_combined_adds_the_images_of_other_sets_and_oversampling_counts_them(mixed):
    more = CountingDataset([stained(), fluorescence()])
    kind_counts(mixed), kind_counts(more)     # this test double loads by position: kinds first
    both = combined(mixed, more)
    assert len(both.image_ids) == 8 and len(mixed.image_ids) == 6     # the original unchanged
    assert kind_counts(both) == {"fluorescence": 4, "brightfield": 1, "colour": 3}
    assert both.image_info[6:] == more.image_info
    assert kind_counts(oversample(both, {"colour": 2}))["colour"] == 6
    assert combined(mixed).image_info == mixed.image_info


def test_combined_nucleus_datasets_load_each_image_from_where_it_lies():
    val, train = load_subset(None, "val"), load_subset(None, "train")
    both = combined(val, train)
    last, own_last = len(both.image_ids) - 1, len(train.image_ids) - 1
    assert both.image_info[last]["path"] == train.image_info[own_last]["path"]
    np.testing.assert_array_equal(both.load_image(last), train.load_image(own_last))
    masks, class_ids = both.load_mask(last)
    assert masks.shape[2] == len(class_ids) == train.load_mask(own_last)[0].shape[2]
