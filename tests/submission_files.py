"""Small Kaggle submission and solution files for the tests of writing, reading and scoring
them (tests/test_submission.py, tests/test_submission_score.py)."""
from __future__ import annotations

import numpy as np

from nucleus.formats.rle import rle_encode
from nucleus.scoring.metric import labels_to_masks


def random_labels(rng, shape, n):
    labels = np.zeros(shape, np.int32)
    for k in range(1, n + 1):
        y, x = rng.integers(0, shape[0] - 2), rng.integers(0, shape[1] - 2)
        h, w = rng.integers(2, 7, size=2)
        labels[y:y + h, x:x + w] = k
    return labels


def synthetic_images() -> dict[str, np.ndarray]:
    """Three synthetic label images of different sizes, one of them without nuclei."""
    rng = np.random.default_rng(11)
    return {"aaa": random_labels(rng, (20, 30), 6),
            "bbb": random_labels(rng, (16, 16), 3),
            "ccc": np.zeros((10, 12), np.int32)}


def write_solution(path, images, usage=True):
    lines = ["ImageId,EncodedPixels,Height,Width" + (",Usage" if usage else "")]
    for image_id, labels in images.items():
        masks = labels_to_masks(labels)
        rles = [rle_encode(masks[:, :, k]) for k in range(masks.shape[2])] or [""]
        for rle in rles:
            lines.append(f"{image_id},{rle},{labels.shape[0]},{labels.shape[1]}"
                         + (",Public" if usage else ""))
    path.write_text("\n".join(lines) + "\n")


def write_rows(path, *rows, header="ImageId,EncodedPixels"):
    path.write_text("\n".join([header, *rows]) + "\n")
    return path
