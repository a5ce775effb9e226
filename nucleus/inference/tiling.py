"""Tiled prediction of big images, stitched so that no nucleus is cut or counted twice.

A whole-image detector needs memory in proportion to the image (a 26-megapixel image does not
fit a 24 GB machine) and finds at most ``DETECTION_MAX_INSTANCES`` nuclei an image. Here the
image is cut into overlapping square tiles, each tile is detected on its own, and the results
are pasted into one label image:

- the tiles are spread evenly, consecutive ones overlapping by at least ``overlap`` pixels; the
  border between two tiles is the middle of their overlap, so the tiles' *cores* partition the
  image;
- a tile keeps only the nuclei whose bounding-box centre lies in its core. A nucleus smaller
  than the overlap lies wholly inside the tile that owns it, and every other tile that sees it
  (whole or cut by its edge) computes a centre outside its own core, so it is found once and
  never cut;
- pixels that two kept nuclei both claim (a nucleus bigger than the overlap, or two models'
  disagreement at a seam) go to the one pasted first (tile order, then score order); a nucleus
  left with less than half of its pixels is a duplicate and is dropped.

Labels are numbered in raster order of each nucleus's first pixel, so the same nuclei give the
same label image however the image was tiled. :func:`plan_tiles`, :func:`detect_tile` and
:class:`BandStitcher` are separate so that tiles can be detected independently (in parallel, from a
lazily read image) and stitched afterwards; :func:`predict_tiled` runs the three in turn.
:class:`BandStitcher` is the one implementation of the pasting rule: :func:`stitch` is it over
one band of the whole image, :mod:`nucleus.inference.large` over bands of tile rows written out
as they are finished.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

DEFAULT_TILE = 1024
"""Largest tile side in pixels for detectors that return crop-sized masks (the shipped Mask
R-CNN at scale 1 without TTA, :attr:`nucleus.inference.detectors.Detector.crop_sized`)
(docs/segment_speed.md): the overlap is computed twice, so the bigger the tile the fewer pixels
are computed per output pixel (1.27 on an 8,192 mosaic, 1.72 at 512), and a tile's cost follows
its area; but the network's memory does too: 1,280-px tiles took an 8,192 mosaic's peak to
1.75-1.99 GB in three runs, 1,024-px ones to 1.5-1.7 GB. The CPU profile allows 1,000
detections a call per 1,024 x 1,024 pixels (``INFERENCE_CAP_PIXELS``)."""
FULL_MASK_TILE = 512
"""Tile side for detectors that return full-size mask stacks (the FCN-8s, TTA, other scales):
their time per pixel grows with the tile (a [1024, 1024, N] stack is 4x the pixels times about
4x the nuclei of a [512, 512, N] one): the synthetic threshold detector took 292 s on an 8,192
mosaic in 1,024-px tiles, against about 92 s expected at 512."""
DEFAULT_OVERLAP = 128
"""Overlap of neighbouring tiles: must exceed the largest nucleus (139 px in DSB stage-1 train,
99.9% of them under 103 px). What ``overlap=None`` (``segment``'s default, "auto") falls back
to when the pilot tile finds no nucleus (:func:`auto_plan`)."""
MIN_OVERLAP = 64
"""The least overlap ``overlap=None`` picks: with 1,024-px tiles a 16,384-px square computes
1.13 pixels per output pixel at 64 px against 1.41 at 128, a 4,096-px one 1.20 against 1.37;
where both round to the same tile side (a multiple of :data:`TILE_ALIGN`), as at 8,192 px,
nothing changes (docs/segment_speed.md)."""
OVERLAP_MARGIN = 1.25
"""``overlap=None`` makes the overlap this many times the largest nucleus the pilot tile found
(:func:`auto_plan`): it sees a sample of the image, so a bigger nucleus may lie elsewhere."""

Detect = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Tile:
    """One tile: ``box`` is the part of the image it reads, ``core`` the part whose nuclei it
    keeps; both (y0, x0, y1, x1) with the ends exclusive (the core's borders may be halves)."""
    index: int
    box: tuple[int, int, int, int]
    core: tuple[float, float, float, float]


@dataclass
class Instance:
    """One nucleus in image coordinates: its bounding box, the mask inside it, its score."""
    box: tuple[int, int, int, int]
    mask: np.ndarray
    score: float


TILE_ALIGN = 64
"""Tile sides are chosen in multiples of this (where the tile allows): the network pads its
input to a multiple of 64, so a side between two multiples would cost the next one anyway."""


def tile_side(length: int, tile: int, overlap: int) -> int:
    """The side of the tiles along an axis of ``length`` pixels: the whole axis when it fits
    one ``tile``; else the smallest side (in :data:`TILE_ALIGN` steps, at most ``tile``) that
    covers it with as few tiles as ``tile`` itself would need, each overlapping the next by at
    least ``overlap``. Spreading the tiles evenly so computes fewer pixels than full tiles
    with the last one moved back (a 4,096-px side: 5 tiles of 960 instead of 1,024)."""
    if length <= tile:
        return length
    n = -(-(length - overlap) // (tile - overlap))
    need = -(-(length + (n - 1) * overlap) // n)
    return min(tile, -(-need // TILE_ALIGN) * TILE_ALIGN)


def _starts(length: int, side: int, overlap: int) -> list[int]:
    """Starts of the tiles of ``side`` along an axis, spread evenly from 0 to the end."""
    if length <= side:
        return [0]
    n = -(-(length - overlap) // (side - overlap))
    return [i * (length - side) // (n - 1) for i in range(n)]


def _cores(starts: Sequence[int], tile: int, length: int) -> list[tuple[float, float]]:
    cuts = [(starts[i + 1] + starts[i] + tile) / 2 for i in range(len(starts) - 1)]
    edges = [0.0, *cuts, float(length)]
    return list(zip(edges[:-1], edges[1:]))


def plan_tiles(shape: Sequence[int], tile: int = DEFAULT_TILE,
               overlap: int = DEFAULT_OVERLAP) -> list[Tile]:
    """The tiles of an image of ``shape`` (H, W, ...), row by row.

    ``tile`` is the largest side. All tiles of an image have one shape (:func:`tile_side` of
    each axis; the image's own side where it fits one tile), so a compiled model traces it
    once, and they are spread evenly over the image, each overlapping the next by at least
    ``overlap`` pixels.
    """
    if tile < 1 or overlap < 0:
        raise ValueError(f"tile must be >= 1 and overlap >= 0, got tile {tile}, overlap {overlap}")
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    height, width = int(shape[0]), int(shape[1])
    th, tw = tile_side(height, tile, overlap), tile_side(width, tile, overlap)
    ys, xs = _starts(height, th, overlap), _starts(width, tw, overlap)
    y_cores, x_cores = _cores(ys, th, height), _cores(xs, tw, width)
    tiles = []
    for y, (cy0, cy1) in zip(ys, y_cores):
        for x, (cx0, cx1) in zip(xs, x_cores):
            tiles.append(Tile(len(tiles), (y, x, min(y + th, height), min(x + tw, width)),
                              (cy0, cx0, cy1, cx1)))
    return tiles


def centre_tile(tiles: Sequence[Tile], shape: Sequence[int]) -> Tile:
    """The tile of ``tiles`` whose box centre is nearest the centre of an image of ``shape``."""
    cy, cx = int(shape[0]) / 2, int(shape[1]) / 2
    return min(tiles, key=lambda t: ((t.box[0] + t.box[2]) / 2 - cy) ** 2
               + ((t.box[1] + t.box[3]) / 2 - cx) ** 2)


def auto_plan(shape: Sequence[int], tile: int,
              detect_pilot: Callable[[Tile], tuple[Any, Sequence[Instance]]]
              ) -> tuple[list[Tile], int, tuple[int, Any] | None]:
    """The tiles for ``overlap=None``: ``(tiles, overlap, known)``.

    The image is planned with :data:`MIN_OVERLAP` and the tile nearest its centre detected
    first, ``detect_pilot(tile) -> (result, instances it owns)``; the overlap is then
    :func:`overlap_for` those instances. Where that is :data:`MIN_OVERLAP` (or half a small
    tile) the plan stands and ``known`` is ``(the pilot's index, its result)``, to be used
    instead of detecting that tile again; else the image is planned again with the bigger
    overlap, ``known`` is None and the pilot's call is spent. The pilot is a tile of the plan,
    so where the nuclei are small it costs no extra network call and no new tile shape (which
    a compiled model would trace again). An image of one tile has no pilot."""
    least = min(MIN_OVERLAP, max(1, int(tile) // 2))
    tiles = plan_tiles(shape, tile, least)
    if len(tiles) == 1:
        return tiles, least, None
    pilot = centre_tile(tiles, shape)
    result, instances = detect_pilot(pilot)
    overlap = overlap_for(instances, tile)
    if overlap == least:
        return tiles, overlap, (pilot.index, result)
    return plan_tiles(shape, tile, overlap), overlap, None


def overlap_for(instances: Sequence[Instance], tile: int) -> int:
    """The tile overlap for an image whose pilot tile (:func:`auto_plan`) held ``instances``:
    :data:`OVERLAP_MARGIN` times the largest bounding-box side among them, rounded up to 16 px,
    at least :data:`MIN_OVERLAP` and at most half the ``tile``; :data:`DEFAULT_OVERLAP` (at most
    half the tile) when the pilot found nothing to go by.

    A nucleus no bigger than the overlap lies wholly inside the tile that owns it (module
    docstring), so the overlap follows the nuclei the image holds instead of the largest any
    image may hold: smaller overlaps compute fewer pixels twice."""
    most = max(1, int(tile) // 2)
    if not instances:
        return min(DEFAULT_OVERLAP, most)
    largest = max(max(i.box[2] - i.box[0], i.box[3] - i.box[1]) for i in instances)
    need = -(-int(np.ceil(OVERLAP_MARGIN * largest)) // 16) * 16
    return int(min(max(MIN_OVERLAP, need), most))


def instances_of(masks: np.ndarray, scores: Sequence[float],
                 offset: tuple[int, int] = (0, 0)) -> list[Instance]:
    """A [h, w, N] mask stack as instances (empty masks skipped), shifted by ``offset``."""
    masks = np.asarray(masks, bool)
    scores = np.asarray(scores, np.float64).reshape(-1)
    if masks.ndim != 3 or masks.shape[2] != len(scores):
        raise ValueError(f"expected masks [H, W, N] and N scores, got {masks.shape} and "
                         f"{len(scores)}")
    out = []
    rows_any, cols_any = masks.any(axis=1), masks.any(axis=0)     # [h, N], [w, N]
    for k in range(masks.shape[2]):
        rows, cols = np.flatnonzero(rows_any[:, k]), np.flatnonzero(cols_any[:, k])
        if not rows.size:
            continue
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        out.append(Instance((int(y0 + offset[0]), int(x0 + offset[1]),
                             int(y1 + offset[0]), int(x1 + offset[1])),
                            masks[y0:y1, x0:x1, k].copy(), float(scores[k])))
    return out


def owned(instance: Instance, tile: Tile) -> bool:
    """Whether the instance's bounding-box centre lies in the tile's core."""
    y0, x0, y1, x1 = instance.box
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return tile.core[0] <= cy < tile.core[2] and tile.core[1] <= cx < tile.core[3]


def detect_tile(image, tile: Tile, detect: Detect) -> list[Instance]:
    """The nuclei ``tile`` owns, in image coordinates. ``image`` is anything sliceable as
    [H, W, ...] (a NumPy array, a memory map, a lazily read array); ``detect`` is either an
    object with a ``detect_instances(tile_image, offset) -> [Instance]`` method (a
    :class:`nucleus.inference.detectors.Detector`, on prepared images) or a call
    ``detect(tile_image) -> (masks [h, w, N] without overlaps, scores [N])`` on a prepared image."""
    y0, x0, y1, x1 = tile.box
    crop = np.ascontiguousarray(np.asarray(image[y0:y1, x0:x1]))
    return [inst for inst in tile_instances(detect, crop, (y0, x0)) if owned(inst, tile)]


def tile_instances(detect, crop: np.ndarray, offset: tuple[int, int]) -> list[Instance]:
    """Every nucleus ``detect`` (see :func:`detect_tile`) finds in ``crop``, shifted by
    ``offset`` into image coordinates."""
    by_instances = getattr(detect, "detect_instances", None)
    if by_instances is not None:
        return by_instances(crop, offset)
    masks, scores = detect(crop)
    return instances_of(masks, scores, offset)


class Pasted(NamedTuple):
    """A nucleus :meth:`BandStitcher.add_tile` kept: its temporary id (its final label is
    :meth:`BandStitcher.labels` of it), its position among the instances given, and the pixels
    of its box it got."""
    id: int
    index: int
    mask: np.ndarray


RELABEL_PIXELS = 1 << 20
"""Pixels renumbered at a time when rows are finished, so the temporary copy stays small
beside the label image (4 MB)."""


class BandStitcher:
    """The pasting rule, for instances that arrive tile row by tile row, holding one band of
    rows of labels in memory.

    Instances are pasted in the order given: a pixel goes to the first instance that claims it;
    an instance left with less than half of its pixels (or none) is dropped as a duplicate.
    Labels are numbered in raster order of each kept nucleus's first pixel. Tiles must come in
    :func:`plan_tiles` order: a tile row's nuclei lie inside its tiles, which start at or below
    the row's first pixel row, so every row above it is final once that tile row begins; those
    rows are numbered and go to ``sink(y0, rows)`` (uint32 labels, a view of the band that the
    next tile row reuses: the sink copies what it keeps, except after :meth:`finish`, which
    leaves the last rows as they are). :func:`stitch` is this over a single band.
    """

    def __init__(self, shape: Sequence[int], sink: Callable[[int, np.ndarray], None]):
        self.height, self.width = int(shape[0]), int(shape[1])
        self.sink = sink
        self.y0 = 0                                            # first row of the band
        self.band = np.zeros((0, self.width), np.uint32)      # rows y0.. (its first `rows`)
        self.rows = 0
        self.keys: list[int] = []        # per kept nucleus (temporary id - 1): first pixel
        self.scores: list[float] = []    # per kept nucleus (temporary id - 1)
        self.rank = np.zeros(1, np.uint32)   # temporary id -> final label (0 -> 0)
        self.ranked = 0                      # nuclei numbered so far
        self.pending: list[int] = []         # temporary ids not numbered yet

    def _advance(self, y0: int, y1: int) -> None:
        """Start a tile row covering rows y0..y1: rows above y0 are final. The band's buffer
        is reused from tile row to tile row (the rows kept move to its top), so the stitcher
        holds one tile row's height of labels, not two while a grown copy is made."""
        if y0 > self.y0:
            self._flush(y0)
        need = y1 - self.y0
        if need > len(self.band):
            grown = np.empty((need, self.width), np.uint32)
            grown[:self.rows] = self.band[:self.rows]
            self.band = grown
        if need > self.rows:
            self.band[self.rows:need] = 0
            self.rows = need

    def _flush(self, limit: int) -> None:
        """Number the nuclei that start above row ``limit``, send the rows above it."""
        limit_key = limit * self.width
        ready = [k for k in self.pending if self.keys[k - 1] < limit_key]
        if ready:
            ready.sort(key=lambda k: self.keys[k - 1])
            self.rank[np.asarray(ready)] = np.arange(self.ranked + 1,
                                                     self.ranked + 1 + len(ready))
            self.ranked += len(ready)
            taken = set(ready)
            self.pending = [k for k in self.pending if k not in taken]
        n = min(limit, self.height, self.y0 + self.rows) - self.y0
        if n > 0:
            rows = self.band[:n]
            step = max(1, RELABEL_PIXELS // max(1, self.width))
            for a in range(0, n, step):      # in place: temporary ids -> final labels
                rows[a:a + step] = self.rank[rows[a:a + step]]
            self.sink(self.y0, rows)
            left = self.rows - n
            if left:                         # the rows still open move to the top
                self.band[:left] = self.band[n:self.rows]
            self.rows = left
            self.y0 += n

    def add_tile(self, tile: Tile, instances: Iterable[Instance]) -> list[Pasted]:
        """Paste one tile's instances (tiles in :func:`plan_tiles` order); what was kept."""
        self._advance(tile.box[0], tile.box[2])
        kept = []
        for index, inst in enumerate(instances):
            y0, x0, y1, x1 = inst.box
            region = self.band[y0 - self.y0:y1 - self.y0, x0:x1]
            free = inst.mask & (region == 0)
            n_free = int(np.count_nonzero(free))
            if n_free == 0 or 2 * n_free < int(np.count_nonzero(inst.mask)):
                continue
            self.scores.append(inst.score)
            tid = len(self.scores)
            region[free] = tid
            row = int(np.argmax(free.any(axis=1)))
            col = int(np.argmax(free[row]))
            self.keys.append((y0 + row) * self.width + x0 + col)
            self.pending.append(tid)
            kept.append(Pasted(tid, index, free))
        if len(self.rank) <= len(self.keys):
            self.rank = np.concatenate([self.rank, np.zeros(len(self.keys) + 1 - len(self.rank)
                                                            + 1024, np.uint32)])
        return kept

    def finish(self) -> int:
        """Send the last rows; the number of nuclei."""
        self._flush(self.height + 1)
        return self.ranked

    def labels(self, ids: np.ndarray) -> np.ndarray:
        """The final labels of temporary ids (after :meth:`finish`)."""
        return self.rank[ids]

    def label_scores(self) -> np.ndarray:
        """The score of each label 1..N, float32 (after :meth:`finish`)."""
        scores = np.empty(self.ranked, np.float32)
        scores[self.rank[1:self.ranked + 1].astype(np.int64) - 1] = self.scores
        return scores


def stitch(shape: Sequence[int], instances: Iterable[Instance]) -> tuple[np.ndarray, np.ndarray]:
    """Paste instances, in the order given, into one label image: :class:`BandStitcher`'s rule
    over one band of the whole image; returns ``(labels, scores)``.

    ``labels`` is uint16 [H, W] (uint32 past 65535 nuclei), 0 the background, 1..N the nuclei
    in raster order of their first pixel; ``scores[k - 1]`` is the score of label k.
    """
    height, width = int(shape[0]), int(shape[1])
    finished: list[np.ndarray] = []
    stitcher = BandStitcher((height, width), lambda y0, rows: finished.append(rows))
    whole = (0, 0, height, width)
    stitcher.add_tile(Tile(0, whole, tuple(map(float, whole))), instances)
    count = stitcher.finish()
    (labels,) = finished                         # one band: the rows come out in one piece
    if count < 2**16:
        labels = labels.astype(np.uint16)
    return labels, stitcher.label_scores()


def labels_from_masks(masks: np.ndarray,
                      scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """A whole image's mask stack [H, W, N] as :func:`stitch` numbers it (no tiling)."""
    return stitch(np.shape(masks)[:2], instances_of(masks, scores))


def tile_for(detect) -> int:
    """The default tile side of a detector: :data:`DEFAULT_TILE` when its masks are
    crop-sized, else :data:`FULL_MASK_TILE`."""
    return DEFAULT_TILE if getattr(detect, "crop_sized", False) else FULL_MASK_TILE


def plan_for(image, detect: Detect, tile: int | None = None,
             overlap: int | None = DEFAULT_OVERLAP
             ) -> tuple[list[Tile], int, tuple[int, list[Instance]] | None]:
    """``(tiles, overlap, known)`` for detecting ``image`` (prepared, [H, W, ...]) with
    ``detect`` tile by tile: ``tile`` None is :func:`tile_for` the detector; ``overlap`` None
    detects the centre tile first (:func:`auto_plan`; ``known`` is then its nuclei, or None)."""
    tile = tile or tile_for(detect)
    if overlap is not None:
        return plan_tiles(np.shape(image), tile, overlap), overlap, None

    def pilot(t: Tile) -> tuple[list[Instance], list[Instance]]:
        found = detect_tile(image, t, detect)
        return found, found
    return auto_plan(np.shape(image), tile, pilot)


def with_known(tiles: Sequence[Tile], known: tuple[int, Any] | None,
               detect_rest: Callable[[list[Tile]], Iterable[Any]]) -> Iterator[Any]:
    """Each tile's result in tile order: ``known``'s result (its tile's index, the result)
    for that tile, and for the others what ``detect_rest(the other tiles)`` yields, in order;
    a generator it returns is closed at the end, so work it started ahead stops too."""
    rest = [t for t in tiles if not known or t.index != known[0]]
    results = iter(detect_rest(rest))
    try:
        for t in tiles:
            yield known[1] if known and known[0] == t.index else next(results)
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()


def tile_results(image, tiles: Sequence[Tile], detect: Detect,
                 known: tuple[int, list[Instance]] | None = None) -> Iterator[list[Instance]]:
    """The nuclei each of ``tiles`` owns, in order (:func:`detect_tile`); the tile of
    ``known``'s index gets ``known``'s nuclei instead of a second detection."""
    return with_known(tiles, known, lambda rest: (detect_tile(image, t, detect) for t in rest))


def predict_tiled(image, detect: Detect, tile: int | None = None,
                  overlap: int | None = DEFAULT_OVERLAP,
                  progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Label image and scores of ``image`` ([H, W, ...], prepared for the detector), detected
    tile by tile when it is bigger than ``tile`` (in one piece otherwise); ``detect`` as
    :func:`detect_tile` takes it; ``tile`` None: :func:`tile_for` the detector; ``overlap``
    None: from the nuclei of the tile at the image's centre (:func:`auto_plan`)."""
    tiles, overlap, known = plan_for(image, detect, tile, overlap)
    found: list[Instance] = []
    for owned_here in tqdm(tile_results(image, tiles, detect, known), total=len(tiles),
                           desc=f"tiles (overlap {overlap})", unit="tile", leave=False,
                           disable=not progress or len(tiles) == 1):
        found.extend(owned_here)
    return stitch(np.shape(image), found)
