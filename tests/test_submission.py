from __future__ import annotations

import numpy as np
import pytest

from nucleus.errors import InputError
from nucleus.formats.submission import (SubmissionWriter, check_submission, read_solution,
                                        read_submission, validate_submission,
                                        write_submission)
from nucleus.scoring.metric import image_score, labels_to_masks
from submission_files import synthetic_images, write_rows, write_solution


@pytest.fixture
def images():
    """Three synthetic images of different sizes, one of them without nuclei."""
    return synthetic_images()


def shapes_of(images):
    return {k: v.shape for k, v in images.items()}


def test_write_validate_read_round_trip(tmp_path, images):
    path = tmp_path / "sub.csv"
    # Three accepted forms: a stack, a list of masks, a label image (and an empty list).
    rows = [("aaa", labels_to_masks(images["aaa"])),
            ("bbb", list(labels_to_masks(images["bbb"]).transpose(2, 0, 1))),
            ("ccc", [])]
    write_submission(path, rows, progress=True)
    text = path.read_text()
    assert text.startswith("ImageId,EncodedPixels\n")
    assert "\r" not in text and text.count("\nccc,\n") == 1 and text.endswith("ccc,\n")
    assert validate_submission(path, shapes_of(images)) == []
    check_submission(path, shapes_of(images))
    back = read_submission(path, shapes_of(images))
    assert set(back) == set(images)
    for image_id, labels in images.items():
        assert back[image_id].dtype == np.int32
        assert image_score(labels, back[image_id]).score == 1.0
        n = len(np.unique(labels)) - 1
        assert back[image_id].max() == n
    path2 = tmp_path / "sub2.csv"
    write_submission(path2, [(k, v) for k, v in images.items()])        # label images
    assert path2.read_text() == text


def test_writer_skips_empty_masks_and_rejects_bad_input(tmp_path):
    with SubmissionWriter(tmp_path / "s.csv") as writer:
        assert writer.add("x", np.zeros((4, 4, 2), bool)) == 1         # all empty -> one empty row
        masks = np.zeros((4, 4, 3), bool)
        masks[0, 0, 0] = masks[3, 3, 2] = True
        assert writer.add("y", masks) == 2
        with pytest.raises(InputError, match="added twice"):
            writer.add("x", [])
        overlapping = np.ones((4, 4, 2), bool)
        with pytest.raises(InputError, match="image z: masks overlap on 16 pixels"):
            writer.add("z", overlapping)
        with pytest.raises(InputError, match="bad image id"):
            writer.add(" w", [])
        with pytest.raises(InputError, match="expected a .H, W, N. mask stack"):
            writer.add("w", np.ones((4, 4), bool))
        with pytest.raises(InputError, match="mask 1 has shape"):
            writer.add("w", [np.ones((4, 4), bool), np.ones((4, 5), bool)])
    assert (tmp_path / "s.csv").read_text() == "ImageId,EncodedPixels\nx,\ny,1 1\ny,16 1\n"
    with pytest.raises(RuntimeError, match="closed"):
        writer.add("q", [])


def test_interrupted_write_leaves_existing_file(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text("precious\n")
    with pytest.raises(RuntimeError, match="crash"):
        with SubmissionWriter(path) as writer:
            writer.add("a", np.ones((3, 3, 1), bool))
            raise RuntimeError("crash")
    assert path.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]

    def rows():
        yield "a", np.ones((3, 3, 1), bool)
        raise KeyError("generator failed")
    with pytest.raises(KeyError):
        write_submission(path, rows())
    assert path.read_text() == "precious\n"


SHAPES = {"a": (3, 3), "b": (4, 2), "c": (2, 2)}


@pytest.mark.parametrize("rows, expected", [
    (["a,1 2 6 1", "b,1 1", "c,"], []),
    (["a,1 2", "b,1 1", "c,", "d,1 1"], [":5: unknown image id 'd'"]),
    (["a,1 2", "b,1 1"], ["image c is missing"]),
    (["a,1 2 3", "b,1 1", "c,"], [":2: image a: RLE has an odd number"]),
    (["a,5 1 1 1", "b,1 1", "c,"], [":2: image a: RLE run 2 (start 1) is before run 1"]),
    (["a,1 0", "b,1 1", "c,"], ["length 0 is not positive"]),
    (["a,9 2", "b,1 1", "c,"], ["outside the 3x3 image"]),
    (["a,1 x", "b,1 1", "c,"], ["'x' is not a non-negative integer"]),
    (["a,1 3", "b,1 1", "a,3 2", "c,"], [":4: image a: mask overlaps the mask on line 2"]),
    (["a,1 2", "b,1 1", "c,", "c,1 1"], [":4: image c has an empty row and 1 non-empty row(s)"]),
    (["a,1 2", "b,1 1", "c,", "c,"], [":5: image c has 2 empty rows"]),
    (["a,1 2,extra", "b,1 1", "c,"], [":2: expected 2 fields, found 3", "image a is missing"]),
    (["a,1 x", "b,1 1", "b,1 2", "c,", "e,"], [":2: image a: RLE value 'x'",
                                               ":6: unknown image id 'e'",
                                               ":4: image b: mask overlaps the mask on line 3"]),
])
def test_validator_catches_each_problem(tmp_path, rows, expected):
    problems = validate_submission(write_rows(tmp_path / "s.csv", *rows), SHAPES)
    assert len(problems) == len(expected), problems
    for problem, fragment in zip(problems, expected):
        assert str(tmp_path / "s.csv") in problem and fragment in problem


def test_validator_header_and_file_problems(tmp_path):
    p = write_rows(tmp_path / "h.csv", "a,1 1", header="ImageId,Pixels")
    assert validate_submission(p, SHAPES) == [
        f"{p}:1: header is 'ImageId,Pixels', expected 'ImageId,EncodedPixels'"]
    p.write_text("\ufeffImageId,EncodedPixels\na,1 1\n")            # a BOM is not the header
    assert "header is" in validate_submission(p, SHAPES)[0]
    (tmp_path / "e.csv").write_text("")
    assert "empty file" in validate_submission(tmp_path / "e.csv", SHAPES)[0]
    assert "file not found" in validate_submission(tmp_path / "none.csv", SHAPES)[0]
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00bad")
    assert "not a UTF-8" in validate_submission(tmp_path / "bin.csv", SHAPES)[0]


def test_overlap_detection_between_several_rows(tmp_path):
    # Row on line 4 starts inside the long run of line 2, after line 3's run ended.
    p = write_rows(tmp_path / "o.csv", "a,1 8", "a,9 1", "a,5 1", "b,1 1", "c,")
    assert [q.split(": ", 1)[1] for q in validate_submission(p, SHAPES)] == [
        "image a: mask overlaps the mask on line 2"]
    assert ":4:" in validate_submission(p, SHAPES)[0]


def test_check_submission_raises_with_first_problems(tmp_path):
    shapes = {f"img{k}": (2, 2) for k in range(15)}
    p = write_rows(tmp_path / "s.csv", "img0,")
    with pytest.raises(InputError) as info:
        check_submission(p, shapes)
    message = str(info.value)
    assert message.startswith(f"{p}: 14 problem(s)") and "img1 is missing" in message
    assert "... and 4 more" in message
    check_submission(p, {"img0": (2, 2)})


def test_read_submission_errors(tmp_path):
    with pytest.raises(InputError, match=r"s.csv:3: unknown image id 'zz'"):
        read_submission(write_rows(tmp_path / "s.csv", "a,1 1", "zz,1 1"), SHAPES)
    with pytest.raises(InputError, match=r"s.csv:2: image a: RLE run 1 .* outside the 3x3 image"):
        read_submission(write_rows(tmp_path / "s.csv", "a,9 5"), SHAPES)
    with pytest.raises(InputError, match=r"s.csv:3: image a: mask overlaps the mask on line 2"):
        read_submission(write_rows(tmp_path / "s.csv", "a,1 3", "a,2 1"), SHAPES)
    with pytest.raises(InputError, match=r"s.csv:1: missing column\(s\) EncodedPixels"):
        read_submission(write_rows(tmp_path / "s.csv", "a,1 1", header="ImageId,Pixels"), SHAPES)
    with pytest.raises(InputError, match=r"s.csv:2: expected 2 fields, found 1"):
        read_submission(write_rows(tmp_path / "s.csv", "a"), SHAPES)
    with pytest.raises(InputError, match="file not found"):
        read_submission(tmp_path / "missing.csv", SHAPES)
    labels = read_submission(write_rows(tmp_path / "s.csv", "a,1 2 6 1", "a,9 1", "c,"), SHAPES)
    np.testing.assert_array_equal(labels["a"], [[1, 0, 0], [1, 0, 0], [0, 1, 2]])
    assert labels["c"].shape == (2, 2) and not labels["c"].any() and "b" not in labels


def test_read_solution(tmp_path, images):
    write_solution(tmp_path / "sol.csv", images)
    truth = read_solution(tmp_path / "sol.csv")
    assert list(truth) == ["aaa", "bbb", "ccc"]
    for image_id, labels in images.items():
        assert truth[image_id].shape == labels.shape
        assert image_score(labels, truth[image_id]).score == 1.0
    write_solution(tmp_path / "nousage.csv", images, usage=False)
    assert read_solution(tmp_path / "nousage.csv").keys() == truth.keys()


@pytest.mark.parametrize("rows, message", [
    (["a,1 1,3"], ":2: expected 4 fields, found 3"),
    (["a,1 1,3,x"], ":2: image a: Height and Width must be positive integers"),
    (["a,1 1,0,3"], "must be positive"),
    (["a,1 1,3,3", "a,5 1,4,3"], ":3: image a: size (4, 3) differs from (3, 3)"),
    (["a,1 2,3,3", "a,2 2,3,3"], ":3: image a: mask overlaps the mask on line 2"),
    (["a,1 -2,3,3"], ":2: image a: RLE value '-2'"),
])
def test_read_solution_errors(tmp_path, rows, message):
    p = write_rows(tmp_path / "sol.csv", *rows, header="ImageId,EncodedPixels,Height,Width")
    with pytest.raises(InputError) as info:
        read_solution(p)
    assert str(info.value).startswith(str(p)) and message in str(info.value)


def test_read_solution_missing_columns(tmp_path):
    p = write_rows(tmp_path / "sol.csv", "a,1 1,3", header="ImageId,EncodedPixels,Height")
    with pytest.raises(InputError, match=r"sol.csv:1: missing column\(s\) Width"):
        read_solution(p)


# ----------------------------------------------------------------------------- exact messages
def _input_error(call, *args) -> str:
    with pytest.raises(InputError) as info:
        call(*args)
    return str(info.value)


def test_header_messages_say_what_is_missing_and_what_was_found(tmp_path):
    p = write_rows(tmp_path / "sol.csv", "a,1 1,3", header="ImageId,EncodedPixels,Height")
    assert _input_error(read_solution, p) == (
        f"{p}:1: missing column(s) Width; header is 'ImageId,EncodedPixels,Height', expected "
        "ImageId,EncodedPixels,Height,Width")
    p = write_rows(tmp_path / "sub.csv", "a,1 1", header="Id,Pixels")
    assert _input_error(read_submission, p, SHAPES) == (
        f"{p}:1: missing column(s) ImageId, EncodedPixels; header is 'Id,Pixels', expected "
        "ImageId,EncodedPixels")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert _input_error(read_solution, empty) == (
        f"{empty}: empty file, expected a header ImageId,EncodedPixels,Height,Width")
    assert validate_submission(empty, SHAPES) == [
        f"{empty}: empty file, expected the header ImageId,EncodedPixels"]


def test_a_field_too_long_for_csv_is_a_malformed_file(tmp_path):
    p = write_rows(tmp_path / "s.csv", "a," + "1 " * 70000)
    message = _input_error(read_submission, p, SHAPES)
    assert message.startswith(f"{p}: malformed CSV: field larger than field limit")


def test_mask_shape_messages(tmp_path):
    writer = SubmissionWriter(tmp_path / "s.csv")
    assert _input_error(writer.add, "w", [np.ones((4, 4, 2), bool)]) == (
        "image w: mask 0 has shape (4, 4, 2), expected [H, W]")
    assert _input_error(writer.add, "w", [np.ones((4, 4), bool), np.ones((4, 5), bool)]) == (
        "image w: mask 1 has shape (4, 5), expected (4, 4)")
    assert _input_error(writer.add, "w", np.ones((4, 4), np.float32)) == (
        "image w: expected a [H, W, N] mask stack, a list of [H, W] masks or an integer label "
        "image, got float32 (4, 4)")
    assert _input_error(writer.add, 7, []) == f"{tmp_path / 's.csv'}: bad image id 7"
    masks = np.zeros((4, 4, 2), bool)
    masks[0, 0:3, 0] = masks[0, 1:4, 1] = True
    assert _input_error(writer.add, "z", masks) == (
        f"{tmp_path / 's.csv'}: image z: masks overlap on 2 pixels; run "
        "nucleus.inference.overlap.eliminate_overlaps first")
    writer.abort()


def test_aborted_writer_writes_nothing_even_if_closed(tmp_path):
    writer = SubmissionWriter(tmp_path / "s.csv")
    writer.add("a", [])
    writer.abort()
    writer.close()
    assert not (tmp_path / "s.csv").exists()
    with pytest.raises(RuntimeError, match="closed"):
        writer.add("b", [])


def test_file_uses_unix_line_ends(tmp_path):
    write_submission(tmp_path / "s.csv", [("a", [np.eye(3, dtype=bool)])])
    assert (tmp_path / "s.csv").read_bytes() == b"ImageId,EncodedPixels\na,1 1 5 1 9 1\n"


def test_overlaps_are_reported_against_the_right_line(tmp_path):
    # The first mask is apart; the third overlaps the second only.
    p = write_rows(tmp_path / "s.csv", "a,1 1", "a,4 3", "a,5 1", "b,1 1", "c,")
    assert validate_submission(p, SHAPES) == [
        f"{p}:4: image a: mask overlaps the mask on line 3"]
    # Line 4 overlaps both earlier masks, which end on the same pixel: the first is named.
    p = write_rows(tmp_path / "s.csv", "a,1 6", "a,3 4", "a,5 1", "b,1 1", "c,")
    assert validate_submission(p, SHAPES) == [
        f"{p}:3: image a: mask overlaps the mask on line 2",
        f"{p}:4: image a: mask overlaps the mask on line 2"]
    # Reading names the mask that owns the first shared pixel.
    p = write_rows(tmp_path / "s.csv", "a,4 2", "a,1 1", "a,3 2")
    assert _input_error(read_submission, p, SHAPES) == (
        f"{p}:4: image a: mask overlaps the mask on line 2")


def test_validation_goes_on_after_an_unknown_id_and_names_it_once(tmp_path):
    p = write_rows(tmp_path / "s.csv", "zz,1 1", "zz,2 1", "a,1 x", "b,1 1", "c,")
    assert validate_submission(p, SHAPES) == [
        f"{p}:2: unknown image id 'zz'",
        f"{p}:4: image a: RLE value 'x' is not a non-negative integer"]
    p = write_rows(tmp_path / "s.csv", "a,1 1", "b,1 1")
    assert validate_submission(p, SHAPES) == [
        f"{p}: image c is missing (give it one row with empty EncodedPixels if it has no "
        "nucleus)"]


def test_check_submission_message_layout(tmp_path):
    p = write_rows(tmp_path / "s.csv", "a,1 1")
    shapes = {"a": (3, 3), "b": (2, 2), "c": (2, 2)}
    with pytest.raises(InputError) as info:
        check_submission(p, shapes, max_shown=1)
    assert str(info.value) == (
        f"{p}: 2 problem(s) in the submission:\n"
        f"  {p}: image b is missing (give it one row with empty EncodedPixels if it has no "
        "nucleus)\n  ... and 1 more")
    with pytest.raises(InputError) as info:
        check_submission(p, shapes, max_shown=2)
    assert str(info.value) == (
        f"{p}: 2 problem(s) in the submission:\n"
        f"  {p}: image b is missing (give it one row with empty EncodedPixels if it has no "
        "nucleus)\n"
        f"  {p}: image c is missing (give it one row with empty EncodedPixels if it has no "
        "nucleus)")


def test_overlap_with_two_identical_masks_names_the_first_among_many_rows(tmp_path):
    # 14 single pixels out of start order, then two identical masks and one inside both: the
    # sort of the runs by start must keep the identical ones in line order.
    singles = [f"a,{start} 1" for start in range(100, 72, -2)]
    p = write_rows(tmp_path / "s.csv", *singles, "a,1 10", "a,1 10", "a,5 1")
    assert validate_submission(p, {"a": (10, 12)}) == [
        f"{p}:17: image a: mask overlaps the mask on line 16",
        f"{p}:18: image a: mask overlaps the mask on line 16"]


def test_files_are_utf8_whatever_the_locale(tmp_path):
    """An image id beyond ASCII, written and read back under the plain C locale."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import nucleus

    mask = np.zeros((3, 3, 1), bool)
    mask[0, 0] = True
    write_submission(tmp_path / "here.csv", [("noyau-\u00e9", mask)])   # this process's locale
    assert list(read_submission(tmp_path / "here.csv", {"noyau-\u00e9": (3, 3)})) == [
        "noyau-\u00e9"]
    script = (
        "import numpy as np, sys\n"
        "from nucleus.formats.submission import read_submission, write_submission\n"
        "mask = np.zeros((3, 3, 1), bool); mask[0, 0] = True\n"
        "write_submission(sys.argv[1], [('noyau-\\u00e9', mask)])\n"
        "labels = read_submission(sys.argv[1], {'noyau-\\u00e9': (3, 3)})\n"
        "print(ascii(sorted(labels)))\n")
    env = dict(os.environ, LC_ALL="C", LANG="C", PYTHONUTF8="0", PYTHONCOERCECLOCALE="0",
               PYTHONPATH=str(Path(nucleus.__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "s.csv")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['noyau-\\xe9']"
    assert (tmp_path / "s.csv").read_bytes() == "ImageId,EncodedPixels\nnoyau-\u00e9,1 1\n".encode()
