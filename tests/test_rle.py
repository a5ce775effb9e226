from __future__ import annotations

import numpy as np
import pytest

from nucleus.errors import InputError
from nucleus.formats.rle import parse_rle, rle_decode, rle_encode, runs_to_indices


def test_hand_worked_example():
    # Column-major numbering of a 3x3 image: 1 2 3 down the first column, 4 5 6 down the second.
    # Pixels (0,0)=1, (1,0)=2, (2,1)=6 -> runs (1, 2) and (6, 1).
    mask = np.zeros((3, 3), bool)
    mask[0, 0] = mask[1, 0] = mask[2, 1] = True
    assert rle_encode(mask) == "1 2 6 1"
    np.testing.assert_array_equal(rle_decode("1 2 6 1", (3, 3)), mask)


def test_non_square_and_column_wrap():
    # 2 rows x 3 columns; a run may continue from the bottom of one column to the top of the next.
    mask = np.array([[0, 1, 1],
                     [1, 1, 0]], bool)
    # numbers: (1,0)=2, (0,1)=3, (1,1)=4, (0,2)=5 -> one run 2..5
    assert rle_encode(mask) == "2 4"
    np.testing.assert_array_equal(rle_decode("2 4", (2, 3)), mask)
    full = np.ones((2, 3), bool)
    assert rle_encode(full) == "1 6"
    assert rle_encode(np.zeros((4, 4), bool)) == ""
    assert not rle_decode("", (4, 4)).any() and rle_decode("  ", (4, 4)).shape == (4, 4)
    assert rle_encode(np.array([[0, 2], [3, 0]])) == "2 2"          # nonzero = foreground


def test_round_trip_random_masks():
    rng = np.random.default_rng(3)
    for _ in range(50):
        shape = tuple(int(v) for v in rng.integers(1, 40, size=2))
        mask = rng.random(shape) < rng.random()
        rle = rle_encode(mask)
        decoded = rle_decode(rle, shape)
        assert decoded.dtype == bool
        np.testing.assert_array_equal(decoded, mask)
        starts, lengths = parse_rle(rle, shape)
        assert (np.diff(starts) > 0).all() and (lengths > 0).all()
        assert lengths.sum() == mask.sum()
        # runs are maximal: the encoder never emits touching runs
        assert (starts[1:] > starts[:-1] + lengths[:-1]).all()


def test_touching_runs_are_accepted():
    np.testing.assert_array_equal(rle_decode("1 1 2 1", (3, 1)), [[True], [True], [False]])


def test_runs_to_indices():
    np.testing.assert_array_equal(runs_to_indices([1, 6], [2, 1]), [0, 1, 5])
    assert runs_to_indices([], []).shape == (0,)


@pytest.mark.parametrize("rle, message", [
    ("1 2 3", "odd number"),
    ("1 x", "'x' is not a non-negative integer"),
    ("1.5 2", "not a non-negative integer"),
    ("-1 2", "not a non-negative integer"),
    ("0 1", "start 0 < 1"),
    ("1 0", "length 0 is not positive"),
    ("9 2", "ends at pixel 10, outside the 3x3 image"),
    ("10 1", "outside"),
    ("5 1 2 1", "run 2 .start 2. is before run 1"),
    ("1 3 3 1", "run 2 .start 3. overlaps run 1"),
    ("1 1 1 1", "overlaps"),
    ("1" + "0" * 30 + " 1", "too large"),
])
def test_malformed_strings_raise(rle, message):
    with pytest.raises(InputError, match=message):
        rle_decode(rle, (3, 3))


def test_encode_rejects_non_2d():
    with pytest.raises(InputError, match="shape"):
        rle_encode(np.zeros((2, 2, 2), bool))
    with pytest.raises(InputError, match="string"):
        rle_decode(None, (2, 2))


def _error(rle, shape=(3, 3)) -> str:
    with pytest.raises(InputError) as info:
        rle_decode(rle, shape)
    return str(info.value)


def test_errors_in_later_runs_name_the_run_and_its_neighbour():
    assert _error("1 2 5 0") == "RLE run 2 (start 5): length 0 is not positive"
    assert _error("1 2 0 1") == "RLE run 2: start 0 < 1 (pixel numbers start at 1)"
    assert _error("1 2 4 1 0 1") == "RLE run 3: start 0 < 1 (pixel numbers start at 1)"
    # Run 3 overlaps run 2 only; run 1 is far away.
    assert _error("1 1 4 3 5 1") == (
        "RLE run 3 (start 5) overlaps run 2 (start 4, length 3); runs must be sorted and disjoint")
    assert _error("7 2 2 1") == (
        "RLE run 2 (start 2) is before run 1 (start 7, length 2); runs must be sorted and disjoint")


def test_a_run_ending_on_the_last_pixel_fits():
    np.testing.assert_array_equal(rle_decode("8 2", (3, 3)).ravel(order="F"),
                                  [False] * 7 + [True] * 2)
    assert _error("8 3") == ("RLE run 1 (start 8, length 3) ends at pixel 10, outside the 3x3 "
                             "image (9 pixels)")
    # Out of order, and ending exactly on the last pixel: the order is the problem.
    assert "is before run 1" in _error("5 1 2 8")


def test_value_length_limit():
    assert "outside" in _error("1" + "0" * 17 + " 1")          # 18 digits: parsed, too far
    big = "9" * 19                                             # 19 digits: refused as too large
    assert _error(f"{big} 1") == f"RLE value {big}... is too large"
    huge = "1234567890" * 3
    assert _error(f"1 {huge}") == f"RLE value {huge[:20]}... is too large"


def test_non_string_names_its_type():
    with pytest.raises(InputError, match="^RLE must be a string, got int$"):
        parse_rle(12, (3, 3))
