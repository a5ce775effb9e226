"""``nucleus export-labels``: a dataset written as images/ plus one label image per image reads
back through NucleusDataset as the same images and masks, under the same subset names; runs are
all or nothing and never merge into an earlier export."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nucleus.formats.export as export_module
from nucleus.cli import build_parser, cmd_export_labels
from nucleus.dataset import NucleusDataset
from nucleus.errors import InputError
from nucleus.formats.export import export_labels, sequential_labels
from nucleus.split import load_split

pytestmark = pytest.mark.backends      # no model, no TensorFlow: holds under every backend

H, W = 20, 24
TRAIN_IDS, VAL_IDS = load_split()


# ----------------------------------------------------------------------------- helpers
def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rect(y: int, x: int, h: int = 4, w: int = 5) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 255
    return m


def _image(seed: int) -> np.ndarray:
    """An RGBA uint8 image whose alpha is not constant, so a re-encode would show."""
    return np.random.default_rng(seed).integers(0, 256, (H, W, 4), dtype=np.uint8)


def _kaggle_image(stage: Path, image_id: str, masks: dict[str, np.ndarray],
                  seed: int = 0) -> Path:
    folder = stage / image_id
    _png(folder / "images" / f"{image_id}.png", _image(seed))
    for name, mask in masks.items():
        _png(folder / "masks" / name, mask)
    return folder


def _load(root: Path | str | None, subset: str) -> NucleusDataset:
    ds = NucleusDataset()
    ds.load_nucleus(None if root is None else str(root), subset)
    ds.prepare()
    return ds


def _by_name(ds: NucleusDataset) -> dict[str, int]:
    return {ds.image_info[i]["id"]: i for i in ds.image_ids}


def _nuclei(labels: np.ndarray) -> list[frozenset]:
    """Each nucleus as its set of flat pixel indices, in label order."""
    flat = labels.ravel()
    return [frozenset(np.flatnonzero(flat == v).tolist()) for v in np.unique(flat) if v]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (hidden ones too) by relative path, with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def _assert_same(source: NucleusDataset, exported: NucleusDataset) -> None:
    src, out = _by_name(source), _by_name(exported)
    assert sorted(src) == sorted(out)
    for name, i in src.items():
        j = out[name]
        assert Path(source.image_info[i]["path"]).read_bytes() == \
            Path(exported.image_info[j]["path"]).read_bytes()
        np.testing.assert_array_equal(source.load_image(i), exported.load_image(j))
        assert _nuclei(source.load_labels(i)) == _nuclei(exported.load_labels(j))
        masks_a, _ = source.load_mask(i)
        masks_b, _ = exported.load_mask(j)
        np.testing.assert_array_equal(masks_a, masks_b)


# ----------------------------------------------------------------------------- round trips
def test_the_sample_round_trips_with_its_train_val_split(tmp_path):
    summary = export_labels(None, ["train", "val", "stage1_train"], tmp_path / "out",
                            progress=False)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["stage1_train", "train", "val"]
    for subset in ("train", "val", "stage1_train"):
        source, exported = _load(None, subset), _load(out, subset)
        _assert_same(source, exported)
        names = sorted(_by_name(source))
        assert sorted(p.name for p in (out / subset / "images").iterdir()) == \
            [f"{n}.png" for n in names]
        assert sorted(p.name for p in (out / subset / "masks").iterdir()) == \
            [f"{n}.png" for n in names]
    train, val = (set(_by_name(_load(out, s))) for s in ("train", "val"))
    assert train <= set(TRAIN_IDS) and val <= set(VAL_IDS) and train and val
    assert train | val == set(_by_name(_load(out, "stage1_train")))
    # The summary counts what is on disk.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert summary.files == len(files) == 2 * summary.images
    assert summary.bytes == sum(p.stat().st_size for p in files)
    sources = [_load(None, s) for s in ("train", "val", "stage1_train")]
    assert summary.nuclei == sum(int(ds.load_labels(i).max()) for ds in sources
                                 for i in ds.image_ids)


def test_label_png_is_uint16_numbered_in_mask_file_order_first_mask_wins(tmp_path):
    stage = tmp_path / "data" / "stage1_train"
    # c.png is created first but numbered last: file-name order, not creation order.
    # ab.png lies inside a.png: every pixel is taken, it is dropped and b.png becomes 2.
    masks = {"c.png": _rect(12, 14), "a.png": _rect(1, 1), "b.png": _rect(3, 3),
             "ab.png": _rect(1, 1, 2, 2)}
    _kaggle_image(stage, "img", masks)
    summary = export_labels(tmp_path / "data", ["stage1_train"], tmp_path / "out",
                            progress=False)
    with Image.open(tmp_path / "out" / "stage1_train" / "masks" / "img.png") as im:
        assert im.mode == "I;16"
        labels = np.asarray(im)
    assert labels.dtype == np.uint16
    a, b, c = (_rect(1, 1) > 0), (_rect(3, 3) > 0), (_rect(12, 14) > 0)
    expected = np.zeros((H, W), np.uint16)
    expected[c] = 3
    expected[b] = 2
    expected[a] = 1                            # a's pixels that b also claims stay a's
    np.testing.assert_array_equal(labels, expected)
    assert summary.nuclei == 3 and summary.subsets[0].dropped == 1
    assert "1 masks wholly covered by others, dropped" in summary.lines()[0]
    exported = _load(tmp_path / "out", "stage1_train")
    assert _nuclei(exported.load_labels(0)) == _nuclei(expected)


def test_sequential_labels_close_gaps_and_switch_to_uint32_past_65535():
    labels, n = sequential_labels(np.array([[0, 7, 7], [3, 0, 9]], np.uint16))
    np.testing.assert_array_equal(labels, [[0, 2, 2], [1, 0, 3]])
    assert n == 3 and labels.dtype == np.uint16
    big, n = sequential_labels(np.arange(70_000, dtype=np.int32).reshape(280, 250) * 2)
    assert n == 69_999 and big.dtype == np.uint32 and big.max() == 69_999


def test_more_than_65535_nuclei_go_to_a_uint32_tiff_that_reads_back(tmp_path):
    import tifffile

    source = tmp_path / "mine"
    labels = np.arange(1, 300 * 240 + 1, dtype=np.uint32).reshape(300, 240)   # 72000 nuclei
    _png(source / "images" / "big.png", np.full((300, 240), 90, np.uint8))
    (source / "masks").mkdir()
    tifffile.imwrite(source / "masks" / "big.tif", labels)
    summary = export_labels(source, ["all"], tmp_path / "out", progress=False)
    written = tmp_path / "out" / "all" / "masks" / "big.tif"
    assert [p.name for p in written.parent.iterdir()] == ["big.tif"]
    assert tifffile.imread(written).dtype == np.uint32
    assert summary.nuclei == labels.size
    np.testing.assert_array_equal(_load(tmp_path / "out", "all").load_labels(0), labels)


def test_an_images_and_masks_folder_keeps_its_split_and_its_image_format(tmp_path):
    import tifffile

    source = tmp_path / "mine"
    rng = np.random.default_rng(3)
    (source / "images").mkdir(parents=True)
    for k in range(10):
        tifffile.imwrite(source / "images" / f"s{k}.tif",
                         rng.integers(0, 4000, (H, W), dtype=np.uint16))
        labels = np.zeros((H, W), np.uint16)
        labels[2:6, 2:6], labels[10:14, 8:12] = 5, 9
        _png(source / "masks" / f"s{k}.png", labels)
    export_labels(source, ["train", "val"], tmp_path / "out", progress=False)
    for subset in ("train", "val"):
        exported = _load(tmp_path / "out", subset)
        _assert_same(_load(source, subset), exported)
        assert all(info["path"].endswith(".tif") for info in exported.image_info)
    assert len(_load(tmp_path / "out", "val").image_ids) == 1


def test_an_unlabelled_subset_gets_images_only(tmp_path):
    export_labels(None, ["stage1_test"], tmp_path / "out", progress=False)
    folder = tmp_path / "out" / "stage1_test"
    assert sorted(p.name for p in folder.iterdir()) == ["images"]
    exported = _load(tmp_path / "out", "stage1_test")
    _assert_same(_load(None, "stage1_test"), exported)
    assert exported.load_mask(0)[0].shape[-1] == 0


# ----------------------------------------------------------------------------- re-runs, errors
def test_a_second_run_refuses_and_overwrite_replaces_the_whole_folder(tmp_path):
    out = tmp_path / "out"
    export_labels(None, ["val"], out, limit=2, progress=False)
    before = _tree(out)
    with pytest.raises(InputError, match=f"{out / 'val'}: already exists.*--overwrite"):
        export_labels(None, ["val"], out, progress=False)
    assert _tree(out) == before
    stale = out / "val" / "images" / "stale.png"
    stale.write_bytes(b"left over")
    summary = export_labels(None, ["val"], out, overwrite=True, progress=False)
    assert not stale.exists()
    assert summary.images == len(_load(None, "val").image_ids) > 2
    _assert_same(_load(None, "val"), _load(out, "val"))
    assert sorted(p.name for p in out.iterdir()) == ["val"]       # no staging left behind
    assert oct(os.stat(out / "val").st_mode & 0o777) == oct(0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _dataset_with_bad_mask(root: Path) -> Path:
    stage = root / "stage1_train"
    _kaggle_image(stage, "aaa", {"m1.png": _rect(1, 1)}, seed=1)
    bad = _kaggle_image(stage, "bbb", {"m1.png": _rect(1, 1), "m2.png": _rect(8, 8)}, seed=2)
    (bad / "masks" / "m2.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    _kaggle_image(stage, "ccc", {"m1.png": _rect(5, 5)}, seed=3)
    return bad / "masks" / "m2.png"


def test_an_unreadable_mask_names_the_file_and_leaves_the_earlier_export(tmp_path):
    data, out = tmp_path / "data", tmp_path / "out"
    good = tmp_path / "good"
    _kaggle_image(good / "stage1_train", "zzz", {"m1.png": _rect(1, 1)})
    export_labels(good, ["stage1_train"], out, progress=False)
    before = _tree(out)
    bad_mask = _dataset_with_bad_mask(data)
    with pytest.raises(InputError, match=f"^{bad_mask}: cannot read image"):
        export_labels(data, ["stage1_train"], out, overwrite=True, progress=False)
    assert _tree(out) == before               # the old export is intact, no staging left


def test_a_failed_run_writes_no_subset_at_all(tmp_path):
    data = tmp_path / "data"
    _kaggle_image(data / "stage1_train", "aaa", {"m1.png": _rect(1, 1)})
    image = _kaggle_image(data / "stage1_test", "ttt", {}) / "images" / "ttt.png"
    image.write_bytes(image.read_bytes()[:40])                 # truncated after its header
    # stage1_train is written completely before stage1_test fails: neither is moved in.
    with pytest.raises(InputError, match=f"^{image}: cannot read image"):
        export_labels(data, ["stage1_train", "stage1_test"], tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []
    real = export_module.write_label_image

    def interrupt_third(stem, labels):
        calls.append(stem)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(stem, labels)

    monkeypatch.setattr(export_module, "write_label_image", interrupt_third)
    with pytest.raises(KeyboardInterrupt):
        export_labels(None, ["train"], tmp_path / "out", progress=False)
    assert list((tmp_path / "out").iterdir()) == []


def test_refuses_to_replace_the_folder_it_reads(tmp_path):
    data = tmp_path / "data"
    _kaggle_image(data / "stage1_train", "aaa", {"m1.png": _rect(1, 1)})
    before = _tree(data)
    with pytest.raises(InputError, match="holds the images being exported"):
        export_labels(data, ["stage1_train"], data, overwrite=True, progress=False)
    assert _tree(data) == before


def test_unknown_subset_or_bad_limit_fails_before_writing(tmp_path):
    with pytest.raises(InputError, match="unknown subset 'bogus'"):
        export_labels(None, ["train", "bogus"], tmp_path / "out", progress=False)
    with pytest.raises(InputError, match="--limit 0"):
        export_labels(None, ["train"], tmp_path / "out", limit=0, progress=False)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- command line
def _args(*argv):
    return build_parser().parse_args(["export-labels", *map(str, argv)])


def test_command_prints_images_nuclei_and_bytes(tmp_path, capsys):
    out = tmp_path / "out"
    assert cmd_export_labels(_args("--out", out, "--limit", "3")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["train", "val", "total"]
    written = [p for p in out.rglob("*") if p.is_file()]
    nuclei = sum(int(_load(out, s).load_labels(i).max()) for s in ("train", "val")
                 for i in range(3))
    assert lines[-1].startswith(f"total: 6 images, {nuclei} nuclei, 12 files, "
                                f"{sum(p.stat().st_size for p in written)} bytes")
    assert len(written) == 12


@pytest.mark.parametrize("subset, message", [("train,,val", "names separated by commas"),
                                             ("val,val", "named twice")])
def test_command_rejects_bad_subset_lists(tmp_path, subset, message):
    with pytest.raises(InputError, match=message):
        cmd_export_labels(_args("--out", tmp_path / "out", "--subset", subset))
    assert not (tmp_path / "out").exists()


def test_command_defaults_to_the_sample_and_the_fixed_split():
    args = _args("--out", "x")
    assert args.dataset is None and args.subset == "train,val" and not args.overwrite
