"""segment_outputs (nucleus/formats/segment_outputs.py): the one writer of ``nucleus segment``'s
folder: each file once and atomically, the table in input order whatever order images finish
in, failures reported and listed, the table written at an interruption too."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from nucleus.formats.nuclei_table import COLUMNS, measure
from nucleus.formats.segment_outputs import (LABELS_SUFFIX, OVERLAY_SUFFIX, TABLE_NAME,
                                             OutputFolder, overlay, overlay_png, write_labels)
from nucleus.formats.viewer_formats import GEOJSON_SUFFIX, ROIS_SUFFIX


def labelled(seed: int, n: int) -> tuple[np.ndarray, pd.DataFrame]:
    """A label image of ``n`` squares and its table."""
    labels = np.zeros((40, 50), np.uint16)
    for k in range(n):
        labels[3 + 9 * (k // 5):9 + 9 * (k // 5), 2 + 9 * (k % 5):8 + 9 * (k % 5)] = k + 1
    intensity = np.random.default_rng(seed).random(labels.shape) * 100
    return labels, measure(labels, np.linspace(0.5, 0.9, n), intensity, f"img{seed}")


def test_label_images_past_65535_nuclei_are_uint32(tmp_path):
    labels = np.arange(1, 300 * 300 + 1, dtype=np.uint32).reshape(300, 300)
    write_labels(tmp_path / "many.tif", labels)
    back = tifffile.imread(tmp_path / "many.tif")
    assert back.dtype == np.uint32
    np.testing.assert_array_equal(back, labels)
    with pytest.raises(ValueError, match="uint16 or uint32"):
        write_labels(tmp_path / "bad.tif", labels.astype(np.int64))
    assert [p.name for p in tmp_path.iterdir()] == ["many.tif"]


def test_the_overlay_png_is_the_overlay():
    labels, _ = labelled(0, 7)
    image = np.random.default_rng(1).integers(0, 255, labels.shape + (3,), dtype=np.uint8)
    png = overlay_png(image, labels)
    assert png.startswith(b"\x89PNG")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))),
                                  overlay(image, labels))


def test_tables_in_input_order_whatever_order_images_finish(tmp_path):
    written, errors = [], []
    results = [labelled(seed, n) for seed, n in enumerate((3, 0, 5, 2))]
    with OutputFolder(tmp_path / "out", on_error=errors.append, written=written) as folder:
        for index in (2, 0, 3):                                  # as Dask may finish them
            labels, table = results[index]
            folder.add_image(index, f"img{index}", labels, table, b"png bytes")
        folder.fail("/data/img1.tif", "cannot read image (truncated)")
        folder.fail("/data/img4.tif", "/data/img4.tif: file not found")   # named already
        assert not (tmp_path / "out" / TABLE_NAME).exists()      # written when closed
    out = tmp_path / "out"
    table = pd.read_csv(out / TABLE_NAME)
    assert list(table.columns) == list(COLUMNS)
    assert list(table["image"]) == ["img0"] * 3 + ["img2"] * 5 + ["img3"] * 2
    assert errors == ["/data/img1.tif: cannot read image (truncated)",
                      "/data/img4.tif: file not found"]
    summary = folder.summary
    assert (summary.images, summary.nuclei) == (3, 10)
    assert summary.failed == ["/data/img1.tif", "/data/img4.tif"]
    np.testing.assert_array_equal(tifffile.imread(out / f"img3{LABELS_SUFFIX}"), results[3][0])
    assert (out / f"img2{OVERLAY_SUFFIX}").read_bytes() == b"png bytes"
    assert len(written) == len(set(written)) == 3 * 2 + 1        # each file once
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)


def test_a_large_image_adds_its_outlines_and_table(tmp_path):
    labels, table = labelled(4, 6)
    with OutputFolder(tmp_path, rois=True, geojson=True) as folder:
        tifffile.imwrite(folder.labels_path("big"), labels, tile=(16, 16))   # as LabelStore
        folder.add_large(0, "big", table)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"big{LABELS_SUFFIX}", f"big{ROIS_SUFFIX}", f"big{GEOJSON_SUFFIX}", TABLE_NAME])
    assert sorted(p.name for p in folder.written) == sorted(p.name for p in tmp_path.iterdir())
    assert len(pd.read_csv(tmp_path / TABLE_NAME)) == 6 == folder.summary.nuclei


def test_no_nuclei_anywhere_gives_the_header_and_no_image_no_table(tmp_path):
    with OutputFolder(tmp_path / "a") as folder:
        folder.add_image(0, "empty", *labelled(0, 0), b"")
    assert (tmp_path / "a" / TABLE_NAME).read_text().strip() == ",".join(COLUMNS)
    with OutputFolder(tmp_path / "b", on_error=lambda m: None) as folder:
        folder.fail("x.png", "cannot read")
    assert list((tmp_path / "b").iterdir()) == []


def test_an_interruption_writes_the_table_of_the_images_done(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(tmp_path) as folder:
            folder.add_image(0, "a", *labelled(0, 4), b"")
            raise KeyboardInterrupt
    assert list(pd.read_csv(tmp_path / TABLE_NAME)["image"]) == ["img0"] * 4
    assert not list(tmp_path.glob(".*"))                      # no temporary file left
