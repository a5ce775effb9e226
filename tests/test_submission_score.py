"""nucleus.scoring.submission_score: a submission file scored against a solution file."""
from __future__ import annotations

import re

import numpy as np
import pytest

from nucleus.errors import InputError
from nucleus.formats.submission import read_solution, write_submission
from nucleus.scoring.submission_score import score_submission
from submission_files import synthetic_images, write_rows, write_solution


@pytest.fixture
def images():
    """Three synthetic images of different sizes, one of them without nuclei."""
    return synthetic_images()


def test_score_submission(tmp_path, images):
    write_solution(tmp_path / "sol.csv", images)
    write_submission(tmp_path / "perfect.csv", images.items())
    mean, per_image = score_submission(tmp_path / "perfect.csv", tmp_path / "sol.csv")
    assert mean == 1.0 and set(per_image) == set(images)
    assert all(s.score == 1.0 for s in per_image.values())

    # Drop image bbb, and give ccc (no nuclei) a false positive.
    spurious = np.zeros((10, 12), bool)
    spurious[0:2, 0:2] = True
    write_submission(tmp_path / "partial.csv", [("aaa", images["aaa"]), ("ccc", spurious[:, :, None])])
    mean, per_image = score_submission(tmp_path / "partial.csv", tmp_path / "sol.csv", progress=True)
    assert per_image["aaa"].score == 1.0 and per_image["bbb"].score == 0.0
    assert per_image["ccc"].score == 0.0 and (per_image["ccc"].fp == 1).all()
    assert (per_image["bbb"].fn == 3).all() and per_image["bbb"].n_pred == 0
    assert mean == pytest.approx(1 / 3)

    write_rows(tmp_path / "bad.csv", "zzz,1 1")
    with pytest.raises(InputError, match="bad.csv:2: unknown image id 'zzz'"):
        score_submission(tmp_path / "bad.csv", tmp_path / "sol.csv")
    with pytest.raises(InputError, match="none of its 1 images is in"):
        score_submission(tmp_path / "bad.csv", tmp_path / "sol.csv", unscored=[])


def test_a_solution_of_part_of_the_set_scores_that_part(tmp_path, images):
    """A submission of a whole set against the solution of half of it (Kaggle's released
    stage-1 test labels): the labelled images are scored, the others listed, not scored."""
    write_solution(tmp_path / "sol.csv", {k: images[k] for k in ("aaa", "bbb")})
    write_submission(tmp_path / "all.csv", images.items())
    unscored = []
    mean, per_image = score_submission(tmp_path / "all.csv", tmp_path / "sol.csv",
                                       unscored=unscored)
    assert mean == 1.0 and set(per_image) == {"aaa", "bbb"} and unscored == ["ccc"]
    write_rows(tmp_path / "nosol.csv", header="ImageId,EncodedPixels,Height,Width")
    with pytest.raises(InputError, match="no images"):
        score_submission(tmp_path / "perfect.csv", tmp_path / "nosol.csv")


def test_one_pixel_high_images_and_scores_of_missing_images(tmp_path):
    p = write_rows(tmp_path / "sol.csv", "a,1 2,1,3", "b,1 1,2,2",
                   header="ImageId,EncodedPixels,Height,Width")
    truth = read_solution(p)
    np.testing.assert_array_equal(truth["a"], [[1, 1, 0]])
    write_rows(tmp_path / "sub.csv", "a,1 2")
    mean, scores = score_submission(tmp_path / "sub.csv", p)
    assert mean == 0.5
    missing = scores["b"]
    assert missing.tp.dtype.kind == missing.fp.dtype.kind == missing.fn.dtype.kind == "i"
    from nucleus.scoring.metric import mean_precisions
    np.testing.assert_allclose(mean_precisions(list(scores.values())), np.full(10, 0.5))


def test_progress_shows_only_when_asked(tmp_path, images, capsys):
    write_solution(tmp_path / "sol.csv", images)
    write_submission(tmp_path / "s.csv", images.items())
    score_submission(tmp_path / "s.csv", tmp_path / "sol.csv")
    assert capsys.readouterr().err == ""
    write_submission(tmp_path / "s.csv", images.items(), progress=True)
    assert re.search(r"(^|\r)submission: ", capsys.readouterr().err)
    score_submission(tmp_path / "s.csv", tmp_path / "sol.csv", progress=True)
    assert re.search(r"(^|\r)scoring: ", capsys.readouterr().err)
