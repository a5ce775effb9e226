"""The README's ``docs/images/segment_tiles.png``: the nuclei ``nucleus segment --tile 512``
finds on a 1,024 x 1,024 mosaic of the bundled sample, with the borders of the tiles' cores
dashed (each tile keeps the nuclei whose box centre lies in its core), cropped to the
top-left 768 x 768 pixels (both borders of each axis; 3 tiles of 448 px a side).

    python tools/segment_tiles_picture.py [--out docs/images/segment_tiles.png]

The picture follows the tile plan of the code that makes it
(:func:`nucleus.inference.tiling.plan_tiles`), so it is made again when the plan changes.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SIZE, TILE, OVERLAP, CROP = 1024, 512, 128, 768
DASH = 8
"""Length in pixels of a dash and of the gap after it."""


def core_borders(length: int, tile: int, overlap: int) -> list[int]:
    """Pixel positions of the borders between the tiles' cores along an axis (the plan's own
    cuts, rounded down to the pixel they fall in)."""
    from nucleus.inference.tiling import plan_tiles

    ends = {t.core[2] for t in plan_tiles((length, 1), tile, overlap)}
    return sorted(int(e) for e in ends if e < length)


def dashed(image: np.ndarray, rows: list[int], cols: list[int]) -> np.ndarray:
    """White dashed lines across ``image`` (uint8 RGB) at ``rows`` and ``cols``."""
    out = image.copy()
    on = (np.arange(max(image.shape[:2])) // DASH) % 2 == 0
    for r in rows:
        out[r, on[:image.shape[1]]] = 255
    for c in cols:
        out[on[:image.shape[0]], c] = 255
    return out


def make(out: Path) -> Path:
    from PIL import Image

    from mrcnn.files import atomic_path
    from nucleus.formats.segment_outputs import overlay
    from nucleus.inference.nucleus_model import make_detector
    from nucleus.sample_data import sample_mosaic
    from nucleus.segment import segment

    image = sample_mosaic(SIZE)
    detector = make_detector(tiled=True)
    labels, _ = segment(image, detector, tile=TILE, overlap=OVERLAP)
    borders = core_borders(SIZE, TILE, OVERLAP)
    picture = dashed(overlay(detector.prepare(image), labels), borders, borders)[:CROP, :CROP]
    with atomic_path(out, suffix=".tmp.png") as tmp:
        Image.fromarray(picture).save(tmp)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" /
                        "segment_tiles.png")
    print(make(parser.parse_args(argv).out))


if __name__ == "__main__":
    main()
