"""File > Open Sample > Nucleus Mask R-CNN: a fluorescence image of the bundled sample."""
from __future__ import annotations

from pathlib import Path

from nucleus.dataset import SAMPLE_DIR
from nucleus.formats.image_io import read_image

SAMPLE_ID = "08ae2741df2f5ac815c0f272a8c532b5167ee853be9b939b9b8b7fa93560868a"
"""A 256 x 256 stage-1 training image (fluorescence, a few dozen nuclei)."""


def sample_path() -> Path:
    """The sample image's file, so that tests and users can run ``nucleus segment`` on it."""
    return Path(SAMPLE_DIR) / "stage1_train" / SAMPLE_ID / "images" / f"{SAMPLE_ID}.png"


def sample_nuclei() -> list[tuple]:
    """The sample as napari layer data: the image as ``nucleus segment`` reads the file."""
    image = read_image(sample_path())
    return [(image, {"name": "nuclei (sample)", "rgb": image.ndim == 3}, "image")]
