"""ImageJ ROI sets and QuPath GeoJSON (nucleus/formats/viewer_formats.py) read back as the label
image.

Each written polygon is read back with the format's own reader (roifile; json), filled at pixel
centres as Fiji and QuPath fill it, and compared with its nucleus in ``<name>_labels.tif``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import roifile
import skimage.measure
import tifffile
from skimage.draw import polygon2mask

from nucleus import cli
from nucleus.formats import lazy_io
from nucleus.formats.viewer_formats import (GEOJSON_SUFFIX, ROIS_SUFFIX, geojson, outline,
                                            write_geojson, write_rois)
from nucleus.inference.parallel import DetectorSpec
from nucleus.sample_data import make_threshold_detector, sample_mosaic
from nucleus.segment import LABELS_SUFFIX, TABLE_NAME, measure, segment_files


def fill(vertices_xy: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The pixels whose centres lie inside a polygon in viewer coordinates (x, y; pixel
    corners at integers), as Fiji and QuPath fill a ROI."""
    return polygon2mask(shape, np.asarray(vertices_xy, float)[:, ::-1] - 0.5)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def assert_rois_match(path: Path, labels: np.ndarray, table: pd.DataFrame) -> None:
    rois = roifile.roiread(path)
    rois = rois if isinstance(rois, list) else [rois]
    assert [r.name for r in rois] == [str(v) for v in table["label"]]
    for roi in rois:
        assert roi.roitype == roifile.ROI_TYPE.POLYGON
        label = int(roi.name)
        overlap = iou(fill(roi.coordinates(), labels.shape), labels == label)
        assert overlap >= 0.9, f"ROI {label}: IoU {overlap:.3f}"


def assert_geojson_matches(path: Path, labels: np.ndarray, table: pd.DataFrame) -> None:
    collection = json.loads(Path(path).read_text(encoding="utf-8"))
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert [f["properties"]["name"] for f in features] == [str(v) for v in table["label"]]
    rows = table.set_index("label")
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "detection"
        label = props["label"]
        assert props["measurements"]["area"] == pytest.approx(rows.loc[label, "area"])
        assert props["measurements"]["score"] == pytest.approx(rows.loc[label, "score"])
        ring = np.asarray(feature["geometry"]["coordinates"][0])
        assert feature["geometry"]["type"] == "Polygon" and (ring[0] == ring[-1]).all()
        overlap = iou(fill(ring[:-1], labels.shape), labels == label)
        assert overlap >= 0.9, f"detection {label}: IoU {overlap:.3f}"


# ----------------------------------------------------------------------------- outlines
def test_the_outline_fills_back_to_exactly_the_mask():
    """Random 8-connected shapes (pixels touching at corners too) without holes, touching the
    border too: a pixel-centre fill of the outline is the mask itself, pixel for pixel."""
    from scipy.ndimage import binary_fill_holes

    rng = np.random.default_rng(0)
    for _ in range(200):
        pieces = skimage.measure.label(rng.random((9, 13)) < 0.5, connectivity=2)
        if not pieces.max():
            continue
        largest = np.bincount(pieces.ravel())[1:].argmax() + 1
        mask = binary_fill_holes(pieces == largest)     # holes: 4-connected background
        np.testing.assert_array_equal(fill(outline(mask), mask.shape), mask)


def test_a_single_pixel_is_a_unit_diamond_around_its_centre():
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    vertices = outline(mask)
    assert sorted(map(tuple, vertices.tolist())) == [(2.0, 1.5), (2.5, 1.0), (2.5, 2.0),
                                                     (3.0, 1.5)]


def test_pixels_touching_at_a_corner_are_one_piece():
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = mask[3, 1] = True
    np.testing.assert_array_equal(fill(outline(mask), mask.shape), mask)


def test_a_nucleus_in_two_pieces_is_outlined_by_the_larger():
    mask = np.zeros((10, 10), bool)
    mask[1:6, 1:6] = True          # 25 pixels
    mask[8:9, 7:9] = True          # 2 pixels
    filled = fill(outline(mask), mask.shape)
    np.testing.assert_array_equal(filled, mask & (np.arange(10)[:, None] < 7))


def test_an_empty_mask_has_no_outline():
    with pytest.raises(ValueError, match="empty"):
        outline(np.zeros((4, 4), bool))


# ----------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def nuclei():
    """Labels of a sample mosaic (ragged real nuclei, some cut by the image edge) and their
    table, as ``nucleus segment`` makes them."""
    image = sample_mosaic(512)[..., 0]
    labels = skimage.measure.label(image > 128).astype(np.uint16)
    table = measure(labels, np.linspace(0.5, 1, int(labels.max())), image, "mosaic")
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    assert len(table) > 5 and border.any()
    return labels, table


def test_rois_read_back_as_the_labels(nuclei, tmp_path):
    labels, table = nuclei
    path = tmp_path / f"mosaic{ROIS_SUFFIX}"
    assert write_rois(path, labels, table) == len(table)
    assert_rois_match(path, labels, table)
    # every nucleus without holes and in one piece comes back exactly
    rois = {int(r.name): r for r in roifile.roiread(path)}
    for region in skimage.measure.regionprops(labels):
        if region.euler_number == 1 and skimage.measure.label(region.image).max() == 1:
            np.testing.assert_array_equal(fill(rois[region.label].coordinates(), labels.shape),
                                          labels == region.label)


def test_geojson_reads_back_as_the_labels(nuclei, tmp_path):
    labels, table = nuclei
    path = tmp_path / f"mosaic{GEOJSON_SUFFIX}"
    assert write_geojson(path, labels, table) == len(table)
    assert_geojson_matches(path, labels, table)


def test_geojson_writes_nan_as_null_not_invalid_json():
    labels = np.zeros((6, 6), np.uint16)
    labels[1:4, 1:4] = 1
    table = measure(labels, [math.nan], np.ones((6, 6)))
    collection = json.loads(json.dumps(geojson(labels, table), allow_nan=False))
    assert collection["features"][0]["properties"]["measurements"]["score"] is None


def test_a_table_row_without_its_nucleus_is_an_error():
    labels = np.zeros((6, 6), np.uint16)
    labels[1:4, 1:4] = 1
    table = measure(labels, [0.9], np.ones((6, 6)))
    table.loc[0, "label"] = 7
    with pytest.raises(ValueError, match="label 7"):
        geojson(labels, table)


# ----------------------------------------------------------------------------- segment
def make_solid_detector():
    """The threshold detector with each mask's holes filled: solid masks, as Mask R-CNN's are
    (an outline has no holes, so a ring-shaped nucleus could not match its label)."""
    from scipy.ndimage import binary_fill_holes

    from nucleus.inference.detectors import Detector
    from nucleus.sample_data import threshold_detector

    detect = threshold_detector()

    def solid(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks, scores = detect(image)
        for k in range(masks.shape[-1]):
            masks[..., k] = binary_fill_holes(masks[..., k])
        return masks, scores

    return Detector(solid, normalization=None, name="solid threshold")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Two small images and one that the segment run reads and writes window by window."""
    folder = tmp_path_factory.mktemp("plate")
    mosaic = sample_mosaic(1200)[..., 0]
    files = []
    for k in range(2):
        files.append(folder / f"well_{k}.tif")
        tifffile.imwrite(files[-1], mosaic[200 * k:200 * k + 250, 300 * k:300 * k + 320])
    files.append(folder / "section.tif")
    tifffile.imwrite(files[-1], mosaic[:1100, :1200], tile=(256, 256), compression="zlib")
    return files


def assert_outputs_match(out: Path, files: list[Path]) -> None:
    table = pd.read_csv(out / TABLE_NAME)
    for path in files:
        labels = tifffile.imread(out / f"{path.stem}{LABELS_SUFFIX}")
        rows = table[table["image"] == path.stem]
        assert len(rows) == labels.max() > 0
        assert_rois_match(out / f"{path.stem}{ROIS_SUFFIX}", labels, rows)
        assert_geojson_matches(out / f"{path.stem}{GEOJSON_SUFFIX}", labels, rows)


def test_segment_files_writes_both_for_small_and_large_images(images, tmp_path, monkeypatch):
    monkeypatch.setattr(lazy_io, "LAZY_PIXELS", 1_000_000)    # section.tif is 'large'
    summary = segment_files(images, tmp_path, make_solid_detector(), tile=512, overlap=128,
                            progress=False, rois=True, geojson=True)
    assert summary.images == 3 and not summary.failed
    assert not (tmp_path / "section_overlay.png").exists()    # the large path was taken
    assert_outputs_match(tmp_path, images)


def test_without_the_flags_no_outline_files(images, tmp_path):
    segment_files(images[:1], tmp_path, make_threshold_detector(), progress=False)
    assert not list(tmp_path.glob(f"*{ROIS_SUFFIX}")) + list(tmp_path.glob(f"*{GEOJSON_SUFFIX}"))


def test_the_command_line_flags_on_dask_workers_as_in_one_process(images, tmp_path,
                                                                  monkeypatch):
    """``--rois --geojson`` with ``--scheduler`` (the Dask path) and without it (serial) write
    the same files."""
    from distributed import LocalCluster

    monkeypatch.setattr(lazy_io, "LAZY_PIXELS", 1_000_000)
    monkeypatch.setattr(cli, "make_detector", lambda args: make_solid_detector())
    monkeypatch.setattr(cli, "_detector_spec",
                        lambda args: DetectorSpec("test_viewer_formats:make_solid_detector"))
    paths = [str(p) for p in images]
    assert cli.main(["segment", *paths, "--out", str(tmp_path / "serial"), "--rois",
                     "--geojson"]) == 0
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as cluster:
        assert cli.main(["segment", *paths, "--out", str(tmp_path / "dask"), "--rois",
                         "--geojson", "--scheduler", cluster.scheduler_address]) == 0
    for out in ("serial", "dask"):
        assert_outputs_match(tmp_path / out, images)
    for path in images:
        for suffix in (ROIS_SUFFIX, GEOJSON_SUFFIX):
            name = f"{path.stem}{suffix}"
            if suffix == GEOJSON_SUFFIX:
                assert (json.loads((tmp_path / "serial" / name).read_text())
                        == json.loads((tmp_path / "dask" / name).read_text()))
            else:
                serial = roifile.roiread(tmp_path / "serial" / name)
                dask = roifile.roiread(tmp_path / "dask" / name)
                assert [r.name for r in serial] == [r.name for r in dask]
                for a, b in zip(serial, dask):
                    np.testing.assert_array_equal(a.coordinates(), b.coordinates())
