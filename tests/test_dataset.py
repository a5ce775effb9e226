"""Tests for nucleus.dataset on synthetic Kaggle folders and on the bundled sample."""
from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nucleus.dataset as dataset_module
from nucleus.dataset import SAMPLE_DIR, NucleusDataset, load_subset
from nucleus.errors import InputError
from nucleus.split import load_split

H, W = 24, 32
TRAIN_IDS, VAL_IDS = load_split()


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rect(y: int, x: int, h: int = 5, w: int = 6) -> np.ndarray:
    m = np.zeros((H, W), np.uint8)
    m[y:y + h, x:x + w] = 255
    return m


def _grey_rgba() -> np.ndarray:
    grey = np.arange(H * W, dtype=np.uint8).reshape(H, W)
    return np.dstack([grey, grey, grey, np.full((H, W), 255, np.uint8)])


def _add_image(stage: Path, image_id: str, image: np.ndarray | None = None,
               masks: dict[str, np.ndarray] | None = None) -> Path:
    folder = stage / image_id
    _png(folder / "images" / f"{image_id}.png", _grey_rgba() if image is None else image)
    for name, m in (masks or {}).items():
        _png(folder / "masks" / name, m)
    return folder


def _load(root: Path, subset: str, **kw) -> NucleusDataset:
    ds = NucleusDataset(**{k: kw.pop(k) for k in list(kw) if k == "label_cache_size"})
    ds.load_nucleus(str(root), subset, **kw)
    ds.prepare()
    return ds


def _single(tmp_path: Path, image: np.ndarray | None = None,
            masks: dict[str, np.ndarray] | None = None, image_id: str = "img0") -> NucleusDataset:
    _add_image(tmp_path / "stage1_train", image_id, image,
               {"m1.png": _rect(2, 2)} if masks is None else masks)
    return _load(tmp_path, "stage1_train")


# ----------------------------------------------------------------------------- images
def test_rgba_grey_image(tmp_path):
    ds = _single(tmp_path)
    image = ds.load_image(0)
    assert image.dtype == np.uint8 and image.shape == (H, W, 3)
    np.testing.assert_array_equal(image, _grey_rgba()[..., :3])


def test_colour_single_channel_and_16bit_images(tmp_path):
    stage = tmp_path / "stage1_test"
    rng = np.random.default_rng(0)
    colour = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    single = rng.integers(0, 256, (H, W), dtype=np.uint8)
    deep = (np.arange(H * W).reshape(H, W) * 40).astype(np.uint16)
    for name, array in (("colour", colour), ("single", single), ("deep", deep)):
        _add_image(stage, name, array)
    ds = _load(tmp_path, "stage1_test")
    by_id = {info["id"]: i for i, info in enumerate(ds.image_info)}
    np.testing.assert_array_equal(ds.load_image(by_id["colour"]), colour)
    np.testing.assert_array_equal(ds.load_image(by_id["single"]), np.dstack([single] * 3))
    deep_rgb = ds.load_image(by_id["deep"])
    assert deep_rgb.dtype == np.uint8 and deep_rgb.shape == (H, W, 3)
    assert deep_rgb.max() == 255 and deep_rgb[0, 0, 0] == 0
    assert np.all(np.diff(deep_rgb[..., 0].ravel().astype(int)) >= 0)  # order kept


def test_test_images_have_no_masks(tmp_path):
    _add_image(tmp_path / "stage1_test", "t1")
    ds = _load(tmp_path, "stage1_test")
    masks, class_ids = ds.load_mask(0)
    assert masks.shape == (H, W, 0) and masks.dtype == bool
    assert class_ids.shape == (0,) and class_ids.dtype == np.int32


def test_info_and_reference(tmp_path):
    ds = _single(tmp_path, image_id="abc")
    info = ds.image_info[0]
    expected = str(tmp_path / "stage1_train" / "abc" / "images" / "abc.png")
    assert info["id"] == "abc" and info["path"] == expected and info["source"] == "nucleus"
    assert ds.image_reference(0) == expected
    assert ds.class_names == ["BG", "nucleus"] and ds.num_classes == 2


# ----------------------------------------------------------------------------- masks
def test_masks_in_file_name_order(tmp_path):
    masks = {"b.png": _rect(10, 20), "a.png": _rect(1, 1), "c.png": _rect(15, 3, 3, 3)}
    ds = _single(tmp_path, masks=masks)
    stack, class_ids = ds.load_mask(0)
    assert stack.dtype == bool and stack.shape == (H, W, 3)
    assert class_ids.dtype == np.int32 and list(class_ids) == [1, 1, 1]
    for k, name in enumerate(["a.png", "b.png", "c.png"]):
        np.testing.assert_array_equal(stack[..., k], masks[name] > 0)
    labels = ds.load_labels(0)
    assert labels.shape == (H, W) and labels.dtype == np.uint16
    assert labels[1, 1] == 1 and labels[10, 20] == 2 and labels[15, 3] == 3 and labels[0, 0] == 0


def test_rgb_mask_files_are_read(tmp_path):
    rgb = np.dstack([_rect(3, 3)] * 3)
    ds = _single(tmp_path, masks={"m.png": rgb})
    np.testing.assert_array_equal(ds.load_mask(0)[0][..., 0], _rect(3, 3) > 0)


def test_overlaps_go_to_the_first_mask_and_are_reported(tmp_path, caplog):
    masks = {"1.png": _rect(0, 0, 6, 6), "2.png": _rect(3, 3, 6, 6),  # 3x3 = 9 shared pixels
             "3.png": _rect(1, 1, 2, 2)}  # inside 1.png: dropped
    ds = _single(tmp_path, masks=masks, image_id="overlapping")
    with caplog.at_level(logging.WARNING, logger="nucleus.dataset"):
        stack, class_ids = ds.load_mask(0)
    assert stack.shape == (H, W, 2) and len(class_ids) == 2
    np.testing.assert_array_equal(stack[..., 0], masks["1.png"] > 0)
    assert stack[4, 4, 0] and not stack[4, 4, 1]
    assert stack[..., 1].sum() == 36 - 9
    assert stack.sum(axis=-1).max() == 1
    text = caplog.text
    assert "overlapping" in text and "13 pixels" in text and "1 masks entirely covered" in text


def test_no_warning_without_overlap(tmp_path, caplog):
    ds = _single(tmp_path, masks={"1.png": _rect(0, 0), "2.png": _rect(10, 10)})
    with caplog.at_level(logging.WARNING, logger="nucleus.dataset"):
        ds.load_mask(0)
    assert caplog.text == ""


def test_labels_are_cached(tmp_path, monkeypatch):
    stage = tmp_path / "stage1_train"
    for name in ("i1", "i2"):
        _add_image(stage, name, masks={"a.png": _rect(2, 2), "b.png": _rect(12, 12)})
    reads = []
    real = dataset_module.read_png
    monkeypatch.setattr(dataset_module, "read_png", lambda p: reads.append(p) or real(p))

    ds = _load(tmp_path, "stage1_train")
    first = ds.load_mask(0)[0]
    assert len(reads) == 2
    for _ in range(3):
        np.testing.assert_array_equal(ds.load_mask(0)[0], first)
    assert len(reads) == 2  # no PNG read again
    assert not ds.load_labels(0).flags.writeable

    small = _load(tmp_path, "stage1_train", label_cache_size=1)
    reads.clear()
    small.load_mask(0), small.load_mask(1), small.load_mask(1), small.load_mask(0)
    assert len(reads) == 6  # image 0 was evicted by image 1, then read again

    off = _load(tmp_path, "stage1_train", label_cache_size=0)
    reads.clear()
    off.load_mask(0), off.load_mask(0)
    assert len(reads) == 4


def test_pickled_dataset_has_an_empty_cache(tmp_path):
    ds = _single(tmp_path)
    ds.load_mask(0)
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy._labels) == 0
    np.testing.assert_array_equal(copy.load_mask(0)[0], ds.load_mask(0)[0])


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("problem", ["wrong size", "empty file", "truncated", "all zero",
                                     "not a png"])
def test_bad_mask_files(tmp_path, problem):
    folder = _add_image(tmp_path / "stage1_train", "bad", masks={"a.png": _rect(2, 2)})
    bad = folder / "masks" / "b.png"
    if problem == "wrong size":
        _png(bad, np.full((H + 1, W), 255, np.uint8))
    elif problem == "empty file":
        bad.write_bytes(b"")
    elif problem == "truncated":
        data = (folder / "masks" / "a.png").read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    elif problem == "all zero":
        _png(bad, np.zeros((H, W), np.uint8))
    else:
        bad.write_bytes(b"this is text")
    ds = _load(tmp_path, "stage1_train")
    expected = {"wrong size": "25x32 (HxW) but its image is 24x32", "empty file": "0 bytes",
                "truncated": "cannot read", "all zero": "mask is empty",
                "not a png": "cannot read"}[problem]
    with pytest.raises(InputError, match=re.escape(expected)) as err:
        ds.load_mask(0)
    assert str(bad) in str(err.value)


@pytest.mark.parametrize("problem", ["empty file", "truncated"])
def test_bad_image_file(tmp_path, problem):
    folder = _add_image(tmp_path / "stage1_train", "bad", masks={"a.png": _rect(2, 2)})
    path = folder / "images" / "bad.png"
    data = path.read_bytes()
    path.write_bytes(b"" if problem == "empty file" else data[: len(data) // 2])
    ds = _load(tmp_path, "stage1_train")
    expected = "0 bytes" if problem == "empty file" else "cannot read"
    with pytest.raises(InputError, match=expected) as err:
        ds.load_image(0)
    assert str(path) in str(err.value)


def test_bad_folders(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match="does not exist") as err:
        NucleusDataset().load_nucleus(str(missing), "stage1_train")
    assert str(missing) in str(err.value)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="is empty"):
        NucleusDataset().load_nucleus(str(empty), "stage1_train")

    root = tmp_path / "data"
    _add_image(root / "stage1_train", "x", masks={"a.png": _rect(1, 1)})
    with pytest.raises(InputError, match="subset folder missing") as err:
        NucleusDataset().load_nucleus(str(root), "stage1_test")
    assert str(root / "stage1_test") in str(err.value)

    (root / "stage1_test").mkdir()
    with pytest.raises(InputError, match="no image folders"):
        NucleusDataset().load_nucleus(str(root), "stage1_test")

    (root / "stage1_train" / "noimage" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match="image file missing") as err:
        NucleusDataset().load_nucleus(str(root), "stage1_train")
    assert str(root / "stage1_train" / "noimage" / "images" / "noimage.png") in str(err.value)


def test_labelled_image_without_masks(tmp_path):
    _add_image(tmp_path / "stage1_train", "nomasks")
    with pytest.raises(InputError, match="no mask PNG") as err:
        NucleusDataset().load_nucleus(str(tmp_path), "stage1_train")
    assert "nomasks" in str(err.value)


def test_bad_arguments(tmp_path):
    _add_image(tmp_path / "stage1_train", "x", masks={"a.png": _rect(1, 1)})
    with pytest.raises(InputError, match="unknown subset"):
        NucleusDataset().load_nucleus(str(tmp_path), "training")
    with pytest.raises(InputError, match="fold_part"):
        NucleusDataset().load_nucleus(str(tmp_path), "stage1_train", fold=0, fold_part="test")
    with pytest.raises(InputError, match="fold must be"):
        NucleusDataset().load_nucleus(str(tmp_path), "stage1_train", fold=3, n_folds=3)
    with pytest.raises(InputError, match="cannot make 2 folds of 1"):
        NucleusDataset().load_nucleus(str(tmp_path), "stage1_train", fold=0, n_folds=2)
    with pytest.raises(ValueError, match="label_cache_size"):
        NucleusDataset(label_cache_size=-1)


# ----------------------------------------------------------------------------- subsets
def _split_folder(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    stage = tmp_path / "stage1_train"
    train, val = TRAIN_IDS[:5], VAL_IDS[:3]
    for image_id in train + val + ["custom"]:
        _add_image(stage, image_id, masks={"a.png": _rect(1, 1)})
    return tmp_path, train + ["custom"], val


def test_train_and_val_use_the_present_ids_of_the_fixed_split(tmp_path):
    root, train, val = _split_folder(tmp_path)
    assert [i["id"] for i in _load(root, "train").image_info] == sorted(train)
    assert [i["id"] for i in _load(root, "val").image_info] == sorted(val)
    assert len(_load(root, "stage1_train").image_info) == len(train) + len(val)


def test_val_without_any_val_id(tmp_path):
    _add_image(tmp_path / "stage1_train", TRAIN_IDS[0], masks={"a.png": _rect(1, 1)})
    with pytest.raises(InputError, match="'val' part of the fixed split"):
        NucleusDataset().load_nucleus(str(tmp_path), "val")


def test_folds(tmp_path):
    root, train, _ = _split_folder(tmp_path)
    parts = []
    for fold in range(3):
        fold_train = [i["id"] for i in _load(root, "train", fold=fold, n_folds=3).image_info]
        fold_val = [i["id"] for i in
                    _load(root, "train", fold=fold, n_folds=3, fold_part="val").image_info]
        assert sorted(fold_train + fold_val) == sorted(train)
        assert not set(fold_train) & set(fold_val)
        parts.append(fold_val)
    assert sorted(sum(parts, [])) == sorted(train)
    again = [i["id"] for i in _load(root, "train", fold=1, n_folds=3, fold_part="val").image_info]
    assert again == parts[1]


# ----------------------------------------------------------------------------- sample
def test_sample_dir_is_absolute_and_default():
    assert os.path.isabs(SAMPLE_DIR) and os.path.isdir(os.path.join(SAMPLE_DIR, "stage1_train"))
    ds = NucleusDataset()
    ds.load_nucleus(None, "stage1_test")
    assert all(info["path"].startswith(SAMPLE_DIR) for info in ds.image_info)


def test_bundled_sample():
    counts = {"train": 16, "val": 6, "stage1_test": 3}
    sizes, colour = set(), 0
    for subset, n in counts.items():
        ds = NucleusDataset()
        ds.load_nucleus(None, subset)
        ds.prepare()
        assert ds.num_images == n
        ids = {info["id"] for info in ds.image_info}
        if subset == "train":
            assert ids <= set(TRAIN_IDS)
        if subset == "val":
            assert ids <= set(VAL_IDS)
        for image_id in ds.image_ids:
            image = ds.load_image(image_id)
            masks, class_ids = ds.load_mask(image_id)
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
            assert masks.shape[:2] == image.shape[:2] and masks.dtype == bool
            assert (masks.shape[2] > 0) == (subset != "stage1_test")
            assert masks.sum(axis=-1).max(initial=0) <= 1
            assert np.all(masks.any(axis=(0, 1)))
            assert class_ids.tolist() == [1] * masks.shape[2]
            sizes.add(image.shape[:2])
            if subset != "stage1_test":
                colour += not (np.array_equal(image[..., 0], image[..., 1])
                               and np.array_equal(image[..., 1], image[..., 2]))
    assert {(256, 256), (256, 320), (360, 360), (520, 696)} <= sizes
    assert colour >= 2


# ----------------------------------------------------------------------------- images/ + masks/
def _flat(root: Path, names=("a", "b", "c"), label_dir: str = "masks",
          image_suffix: str = ".tif") -> dict[str, np.ndarray]:
    """images/<name><suffix> and <label_dir>/<name>.tif label images (values not sequential)."""
    import tifffile

    labels_by_name = {}
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / label_dir).mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        labels = np.zeros((H, W), np.uint16)
        labels[2:8, 3:9] = 500 + k
        labels[12:20, 10:25] = 7
        image = (labels > 0).astype(np.uint16) * (1000 + 100 * k) + 50
        if image_suffix == ".tif":
            tifffile.imwrite(root / "images" / f"{name}.tif", image)
        else:
            _png(root / "images" / f"{name}{image_suffix}", (image // 8).astype(np.uint8))
        tifffile.imwrite(root / label_dir / f"{name}.tif", labels)
        labels_by_name[name] = labels
    return labels_by_name


@pytest.mark.parametrize("label_dir, suffix", [("masks", ".tif"), ("labels", ".png")])
def test_images_beside_label_images(tmp_path, label_dir, suffix):
    truth = _flat(tmp_path, label_dir=label_dir, image_suffix=suffix)
    ds = _load(tmp_path, "all")
    assert [info["id"] for info in ds.image_info] == ["a", "b", "c"]
    for image_id in ds.image_ids:
        name = ds.image_info[image_id]["id"]
        image = ds.load_image(image_id)
        assert image.dtype == np.uint8 and image.shape == (H, W, 3)
        assert image[3, 4, 0] > image[0, 0, 0]            # deep images stretched, not black
        masks, class_ids = ds.load_mask(image_id)
        assert class_ids.tolist() == [1, 1]
        # Labels renumbered 1..N in value order: 7 first, then 500 + k.
        np.testing.assert_array_equal(masks[..., 0], truth[name] == 7)
        np.testing.assert_array_equal(masks[..., 1], truth[name] == 500 + "abc".index(name))
        assert ds.load_labels(image_id).max() == 2


def test_train_and_val_of_a_label_image_folder_are_a_fixed_split(tmp_path):
    from nucleus.split import SPLIT_SEED, make_split

    names = [f"img{k:02d}" for k in range(12)]
    _flat(tmp_path, names)
    train = [i["id"] for i in _load(tmp_path, "train").image_info]
    val = [i["id"] for i in _load(tmp_path, "val").image_info]
    assert (train, val) == make_split(names, 1, SPLIT_SEED)
    assert len(val) == 1 and set(train) | set(val) == set(names)
    fold_train = [i["id"] for i in _load(tmp_path, "train", fold=0, n_folds=3).image_info]
    fold_val = [i["id"] for i in _load(tmp_path, "train", fold=0, n_folds=3,
                                       fold_part="val").image_info]
    assert sorted(fold_train + fold_val) == train and len(fold_val) in (3, 4)
    with pytest.raises(InputError, match=r"unknown subset 'stage1_train' .*all, train, val"):
        _load(tmp_path, "stage1_train")


def test_subset_folders_in_the_stardist_layout(tmp_path):
    truth = _flat(tmp_path / "train", ("a", "b"))
    (tmp_path / "test" / "images").mkdir(parents=True)
    _png(tmp_path / "test" / "images" / "t.png", np.zeros((H, W), np.uint8))
    ds = _load(tmp_path, "train")
    assert [i["id"] for i in ds.image_info] == ["a", "b"]
    np.testing.assert_array_equal(ds.load_labels(0) > 0, truth["a"] > 0)
    test = _load(tmp_path, "test")                         # no masks/: unlabelled
    assert test.load_mask(0)[0].shape == (H, W, 0)
    with pytest.raises(InputError, match=r"no subset 'val' \(this dataset's subsets: test, "
                                         r"train\)"):
        _load(tmp_path, "val")


def test_label_images_feed_the_training_pipeline(tmp_path):
    from mrcnn.data import load_image_gt
    from nucleus.config import make_config

    _flat(tmp_path, ("a",))
    ds = _load(tmp_path, "all")
    config = make_config("cpu", overrides={"IMAGE_MIN_DIM": 64, "IMAGE_MAX_DIM": 64,
                                           "IMAGE_RESIZE_MODE": "square"})
    image, _, class_ids, boxes, masks = load_image_gt(ds, config, 0, use_mini_mask=False)
    assert image.shape == (64, 64, 3) and class_ids.tolist() == [1, 1]
    assert masks.shape == (64, 64, 2) and masks.any(axis=(0, 1)).all()


def test_bad_label_image_folders(tmp_path):
    import tifffile

    def fresh(name):
        root = tmp_path / name
        _flat(root, ("a", "b"))
        return root

    root = fresh("missing")
    (root / "masks" / "b.tif").unlink()
    with pytest.raises(InputError, match=r"images/b\.tif: no label image for it in .*masks"):
        _load(root, "all")
    root = fresh("both")
    (root / "labels").mkdir()
    with pytest.raises(InputError, match="both masks/ and labels/"):
        _load(root, "all")
    root = fresh("twice")
    _png(root / "images" / "a.png", np.zeros((H, W), np.uint8))
    with pytest.raises(InputError, match=r"images/a\.(png|tif): a\.(tif|png) has the same name"):
        _load(root, "all")
    root = fresh("empty")
    for p in (root / "images").iterdir():
        p.unlink()
    with pytest.raises(InputError, match="images: no image files in it"):
        _load(root, "all")
    root = fresh("single")
    (root / "images" / "b.tif").unlink()
    with pytest.raises(InputError, match="one image cannot be split"):
        _load(root, "val")
    bad_labels = {
        "size": (np.zeros((H + 1, W), np.uint16), r"label image is 25x32 \(HxW\) but its image "
                                                   r"is 24x32"),
        "binary": (_rect(2, 2) | _rect(12, 20), r"a binary mask \(one value, 2 separate"),
        "colour": (np.dstack([np.eye(H, W, dtype=np.uint8)] * 2 + [np.zeros((H, W), np.uint8)]),
                   "has colours"),
        "negative": (-np.eye(H, W, dtype=np.int16), "negative label values"),
        "fraction": (np.eye(H, W, dtype=np.float32) / 2, "whole numbers"),
    }
    for name, (labels, message) in bad_labels.items():
        root = fresh(name)
        tifffile.imwrite(root / "masks" / "a.tif", labels,
                         photometric="rgb" if labels.ndim == 3 else None)
        ds = _load(root, "all")
        with pytest.raises(InputError, match=rf"masks/a\.tif: .*{message}"):
            ds.load_mask(0)


def test_a_solution_labels_the_images_it_holds(tmp_path):
    """``load_subset(..., solution=CSV)``: only the images of the Kaggle solution, with its
    masks; what the solution names but the subset lacks is an error naming the file."""
    import csv as csv_module

    from nucleus.formats.rle import rle_encode

    plain = load_subset(None, "stage1_train")
    ids = [plain.image_info[i]["id"] for i in plain.image_ids]
    chosen = ids[1:3]
    solution = tmp_path / "solution.csv"
    expected = {}
    with open(solution, "w", newline="") as f:
        writer = csv_module.writer(f)
        writer.writerow(["ImageId", "EncodedPixels", "Height", "Width", "Usage"])
        for image_id in chosen:
            i = ids.index(image_id)
            masks, _ = plain.load_mask(i)
            kept = masks[..., ::2]                      # a different labelling than the files
            expected[image_id] = kept.shape[-1]
            h, w = masks.shape[:2]
            writer.writerows([image_id, rle_encode(kept[..., k]), h, w, "Public"]
                             for k in range(kept.shape[-1]))
    labelled = load_subset(None, "stage1_train", solution=solution)
    got = [labelled.image_info[i]["id"] for i in labelled.image_ids]
    assert got == chosen
    for i in labelled.image_ids:
        masks, class_ids = labelled.load_mask(i)
        assert masks.shape[-1] == expected[labelled.image_info[i]["id"]] == len(class_ids)

    stranger = tmp_path / "stranger.csv"
    stranger.write_text("ImageId,EncodedPixels,Height,Width\nnot-an-image,1 3,10,10\n")
    with pytest.raises(InputError, match="stranger.csv.*not in this subset"):
        load_subset(None, "stage1_train", solution=stranger)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(f"ImageId,EncodedPixels,Height,Width\n{chosen[0]},1 3,10,10\n")
    with pytest.raises(InputError, match="wrong.csv.*size"):
        load_subset(None, "stage1_train", solution=wrong)


def test_a_labelled_folder_of_either_layout_is_read_whole(tmp_path):
    from nucleus.dataset import load_labelled_folder

    _flat(tmp_path / "mine", ("a", "b", "c"))
    mine = load_labelled_folder(tmp_path / "mine")
    assert [i["id"] for i in mine.image_info] == ["a", "b", "c"]        # all, not a split
    assert mine.load_mask(0)[1].tolist() == [1, 1]
    kaggle = load_labelled_folder(SAMPLE_DIR)                           # stage1_train/<id>/
    assert len(kaggle.image_ids) == len(load_subset(None, "stage1_train").image_ids)
    (tmp_path / "unlabelled" / "images").mkdir(parents=True)
    with pytest.raises(InputError, match=r"unlabelled: has images/ but no masks/"):
        load_labelled_folder(tmp_path / "unlabelled")
    (tmp_path / "other").mkdir()
    with pytest.raises(InputError, match=r"other: expected labelled images in images/"):
        load_labelled_folder(tmp_path / "other")
