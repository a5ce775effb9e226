"""The DSB score of a submission file against a Kaggle solution file (``nucleus evaluate
--submission FILE --solution FILE``).

Reading and checking both files is :mod:`nucleus.formats.submission`'s; here they meet the
metric (:mod:`nucleus.scoring.metric`), so the formats never import scoring.
"""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from nucleus.errors import InputError
from nucleus.formats.submission import PathLike, read_solution, read_submission
from nucleus.scoring.metric import ImageScore, THRESHOLDS, image_score


def _missing_score(true_labels: np.ndarray) -> ImageScore:
    """Score of an image absent from the submission: 0, every true object a false negative."""
    n_true = int(np.count_nonzero(np.bincount(true_labels.ravel())[1:]))
    zeros = np.zeros(len(THRESHOLDS), dtype=np.int64)
    return ImageScore(0.0, np.zeros(len(THRESHOLDS)), zeros, zeros.copy(), zeros + n_true)


def score_submission(submission_csv: PathLike, solution_csv: PathLike,
                     progress: bool = False,
                     unscored: list[str] | None = None) -> tuple[float, dict[str, ImageScore]]:
    """(mean DSB score, {image_id: ImageScore}) of a submission against a Kaggle solution file.

    Images of the solution missing from the submission score 0. Images of the submission the
    solution does not label (a solution of part of a set, as Kaggle's released half of stage-1
    test) are not scored, and their ids go to ``unscored`` when a list is given; without it, or
    when the two files share no image at all, they are an error.
    """
    truth = read_solution(solution_csv)
    if not truth:
        raise InputError(f"{solution_csv}: the solution has no images")
    skipped: list[str] | None = [] if unscored is not None else None
    predicted = read_submission(submission_csv, {k: v.shape for k, v in truth.items()}, skipped)
    if skipped:
        if not predicted:
            raise InputError(f"{submission_csv}: none of its {len(skipped)} images is in "
                             f"{solution_csv} (first: {skipped[0]!r})")
        unscored.extend(skipped)
    scores = {}
    for image_id, true_labels in tqdm(truth.items(), desc="scoring", disable=not progress):
        if image_id in predicted:
            scores[image_id] = image_score(true_labels, predicted[image_id])
        else:
            scores[image_id] = _missing_score(true_labels)
    return float(np.mean([s.score for s in scores.values()])), scores
