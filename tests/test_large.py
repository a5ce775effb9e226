"""large (nucleus/inference/large.py): an image segmented window by window, stitched in bands, gives
the label image and table of the in-memory run; labels go to a tiled TIFF; nothing is left
behind."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tifffile

from nucleus import segment
from nucleus.formats import lazy_io
from nucleus.inference.detectors import Detector
from nucleus.inference.large import (Found, LabelStore, is_large, segment_large_here,
                                     stitch_found)
from nucleus.inference.tiling import BandStitcher, Instance, owned, plan_tiles, stitch
from nucleus.sample_data import make_threshold_detector, sample_mosaic, threshold_detector
from nucleus.segment import COLUMNS, TABLE_NAME, collect_files, measure, segment_files


@pytest.fixture(scope="module")
def section(tmp_path_factory):
    """A 16-bit 1500 x 1700 tiled TIFF of nuclei (3 x 4 tiles of 512)."""
    image = (sample_mosaic(1800)[:1500, :1700, 0].astype(np.uint16) * 200 + 300)
    path = tmp_path_factory.mktemp("large") / "section.tif"
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib")
    return path, image


@pytest.mark.parametrize("normalization", [None, "stretch"])
def test_window_by_window_equals_in_memory(section, tmp_path, normalization):
    path, image = section
    detector = Detector(threshold_detector(), normalization=normalization)
    labels, table = segment(image, detector, tile=512, overlap=128, name="section")
    got_table = segment_large_here(path, "section", tmp_path / "labels.tif", detector,
                                   tile=512, overlap=128)
    with tifffile.TiffFile(tmp_path / "labels.tif") as tif:
        assert tif.pages[0].is_tiled and tif.is_bigtiff
        got = tif.asarray()
    assert got.dtype == np.uint16 and labels.max() > 500
    np.testing.assert_array_equal(got, labels)
    assert list(got_table.columns) == list(COLUMNS)
    assert (got_table["image"] == "section").all()
    np.testing.assert_array_equal(got_table["label"], table["label"])
    for column in COLUMNS[2:]:
        np.testing.assert_allclose(got_table[column].to_numpy(float),
                                   table[column].to_numpy(float), rtol=1e-9, err_msg=column)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.tif"]


def test_automatic_overlap_window_by_window_equals_in_memory(section, tmp_path):
    """``overlap=None`` picks the same overlap from the same pilot window in both paths (the
    sample's nuclei are small: 64 px), and the labels are the whole image's."""
    path, image = section
    detector = Detector(threshold_detector(), normalization="stretch")
    labels, table = segment(image, detector, tile=512, name="section")
    got_table = segment_large_here(path, "section", tmp_path / "labels.tif", detector, tile=512,
                                   overlap=None)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), labels)
    np.testing.assert_array_equal(got_table["area"], table["area"])
    fixed, _ = segment(image, detector, tile=512, overlap=64, name="section")
    np.testing.assert_array_equal(fixed, labels)


def random_found(shape, tiles, rng, intensity):
    """Per tile, owned blobs of many sizes that overlap each other (even across tiles), with
    the intensities of ``intensity`` under their boxes."""
    per_tile = []
    for tile in tiles:
        y0, x0, y1, x1 = tile.box
        found = []
        for _ in range(40):
            h, w = rng.integers(1, 60, 2)
            by, bx = rng.integers(y0, max(y0 + 1, y1 - h)), rng.integers(x0, max(x0 + 1, x1 - w))
            h, w = min(h, y1 - by), min(w, x1 - bx)
            mask = rng.random((h, w)) < 0.7
            mask[0, :] |= True
            mask[:, 0] |= True
            inst = Instance((int(by), int(bx), int(by + h), int(bx + w)), mask,
                            float(rng.random()))
            if owned(inst, tile):
                found.append(Found(inst, intensity[by:by + h, bx:bx + w]))
        per_tile.append(found)
    return per_tile


@pytest.mark.parametrize("shape,tile,overlap", [((700, 900), 256, 64), ((300, 1000), 128, 100),
                                                ((200, 200), 512, 128)])
def test_stitched_in_bands_and_measured_by_tile_is_stitch_and_measure(shape, tile, overlap):
    rng = np.random.default_rng(sum(shape) + tile)
    tiles = plan_tiles(shape, tile, overlap)
    intensity = rng.random(shape)
    per_tile = random_found(shape, tiles, rng, intensity)
    want, scores = stitch(shape, [f.instance for found in per_tile for f in found])
    got = np.full(shape, 999999, np.uint32)
    rows_written = []

    def sink(y0, rows):
        rows_written.append((y0, len(rows)))
        got[y0:y0 + len(rows)] = rows

    count, table = stitch_found(shape, zip(tiles, per_tile), sink, "img")
    assert count == want.max()
    np.testing.assert_array_equal(got, want)
    assert sum(n for _, n in rows_written) == shape[0]            # every row once, in order
    assert [y for y, _ in rows_written] == sorted({y for y, _ in rows_written})
    assert len(rows_written) > 1 or len(tiles) == 1               # bands, not the whole image
    whole = measure(want, scores, intensity, "img")          # the in-memory run's table
    assert list(table.columns) == list(COLUMNS) and len(table) == count
    for column in ("image", "label", "score", "area", "bbox_y0", "bbox_x0", "bbox_y1",
                   "bbox_x1"):
        np.testing.assert_array_equal(table[column], whole[column], err_msg=column)
    for column in ("centroid_y", "centroid_x", "perimeter", "eccentricity", "mean_intensity"):
        np.testing.assert_allclose(table[column], whole[column], rtol=1e-9, err_msg=column)


def test_the_band_holds_one_tile_row_and_is_reused():
    """Memory that grows with the image's width is one tile row of labels: the band's buffer
    is never taller than a tile, and the rows handed to the sink (copied there) are still the
    whole image's labels although the buffer is reused."""
    shape, tile, overlap = (1000, 600), 256, 64
    rng = np.random.default_rng(7)
    tiles = plan_tiles(shape, tile, overlap)
    per_tile = random_found(shape, tiles, rng, rng.random(shape))
    want, _ = stitch(shape, [f.instance for found in per_tile for f in found])
    got = np.zeros(shape, np.uint32)
    buffers = set()

    def sink(y0, rows):
        got[y0:y0 + len(rows)] = rows

    stitcher = BandStitcher(shape, sink)
    for t, found in zip(tiles, per_tile):
        stitcher.add_tile(t, [f.instance for f in found])
        assert stitcher.band.shape[0] <= t.box[2] - t.box[0]
        buffers.add(id(stitcher.band))
    stitcher.finish()
    np.testing.assert_array_equal(got, want)
    assert len(buffers) == 1                                  # one buffer for every tile row


def test_label_files_past_65535_nuclei_are_uint32(tmp_path):
    store = LabelStore(tmp_path / "many.tif", (600, 700))
    rows = np.arange(600 * 700, dtype=np.uint32).reshape(600, 700)
    store.write_rows(0, rows[:250])
    store.write_rows(250, rows[250:])
    store.close(int(rows.max()))
    back = tifffile.imread(tmp_path / "many.tif")
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, rows)
    assert [p.name for p in tmp_path.iterdir()] == ["many.tif"]


@pytest.mark.parametrize("heights", [[250, 350], [100] * 6, [512, 88], [37, 600 - 37],
                                     [600]])
def test_label_store_writes_whole_rows_of_chunks_once(tmp_path, monkeypatch, heights):
    """Rows of any heights reach the store as whole rows of chunks (the last part at the
    end), each written once, so zarr never reads a chunk back to merge; the TIFF holds the
    rows as given."""
    store = LabelStore(tmp_path / "rows.tif", (600, 700))
    writes = []
    array_type = type(store.array)
    original = array_type.__setitem__

    def record(self, key, value):
        writes.append((key[0] if isinstance(key, tuple) else key))
        return original(self, key, value)

    monkeypatch.setattr(array_type, "__setitem__", record)
    rows = np.random.default_rng(2).integers(0, 5000, (600, 700)).astype(np.uint32)
    y = 0
    for h in heights:
        store.write_rows(y, rows[y:y + h])
        y += h
    store.close(int(rows.max()))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "rows.tif"), rows)
    starts = [s.start for s in writes]
    assert starts == sorted(starts) and len(set(starts)) == len(starts)
    assert all(s.start % 512 == 0 for s in writes)
    assert all((s.stop - s.start) % 512 == 0 for s in writes[:-1])
    assert writes[-1].stop == 600


def test_label_store_refuses_rows_out_of_order(tmp_path):
    store = LabelStore(tmp_path / "rows.tif", (600, 700))
    store.write_rows(0, np.zeros((100, 700), np.uint32))
    with pytest.raises(ValueError, match="expected row 100, got 150"):
        store.write_rows(150, np.zeros((10, 700), np.uint32))
    store.discard()


def test_a_failing_run_leaves_nothing(section, tmp_path):
    path, _ = section
    calls = []
    base = threshold_detector()

    def fails_late(image):
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("detector broke")
        return base(image)

    with pytest.raises(RuntimeError, match="detector broke"):
        segment_large_here(path, "s", tmp_path / "s_labels.tif", Detector(fails_late),
                           tile=512, overlap=128)
    assert list(tmp_path.iterdir()) == []


def test_segment_files_takes_large_tiffs_window_by_window(section, tmp_path, monkeypatch):
    path, image = section
    assert not is_large(path)                       # 2.5 megapixels: read whole by default
    monkeypatch.setattr(lazy_io, "LAZY_PIXELS", 1_000_000)
    assert is_large(path) and not is_large(path, large_pixels=3_000_000)
    summary = segment_files([path], tmp_path, make_threshold_detector(), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [TABLE_NAME, "section_labels.tif"]
    labels, table = segment(image, make_threshold_detector(), name="section")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "section_labels.tif"), labels)
    assert summary.nuclei == len(table) == len(pd.read_csv(tmp_path / TABLE_NAME))


def test_a_zarr_store_is_one_image_read_window_by_window(tmp_path):
    import zarr

    image = sample_mosaic(600)[:300, :400]
    store = zarr.open_array(str(tmp_path / "slide.zarr"), mode="w", shape=image.shape,
                            chunks=(128, 128, 3), dtype=image.dtype)
    store[:] = image
    files, failed = collect_files([tmp_path / "slide.zarr"], tmp_path / "out", print)
    assert files == [tmp_path / "slide.zarr"] and failed == [] and is_large(files[0])
    segment_files(files, tmp_path / "out", make_threshold_detector(), tile=256, overlap=64,
                  progress=False)
    labels, _ = segment(image, make_threshold_detector(), tile=256, overlap=64)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "slide_labels.tif"), labels)


def test_shipped_model_window_by_window_equals_in_memory(tmp_path):
    """The shipped Mask R-CNN (crop-sized masks: tiles detected two threads at a time, one
    network call at a time) gives the in-memory run's labels and table."""
    from nucleus.inference.nucleus_model import make_detector

    image = sample_mosaic(1024)[:900, :1000]
    path = tmp_path / "mosaic.tif"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb")
    detector = make_detector(tiled=True)          # as segment builds it: native resolution
    assert detector.crop_sized
    labels, table = segment(image, detector, tile=512, overlap=128, name="mosaic")
    got_table = segment_large_here(path, "mosaic", tmp_path / "labels.tif", detector,
                                   tile=512, overlap=128)
    assert len(plan_tiles(image.shape, 512, 128)) == 9 and labels.max() > 100
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), labels)
    np.testing.assert_array_equal(got_table["label"], table["label"])
    for column in COLUMNS[2:]:
        np.testing.assert_allclose(got_table[column].to_numpy(float),
                                   table[column].to_numpy(float), rtol=1e-9, err_msg=column)
