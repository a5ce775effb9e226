"""Bad input on the command line: one ``error: <file>: <problem>`` line, exit 2, nothing lost.

Broken Kaggle folders are built in tmp_path from a few bundled sample images. Most commands fail
before a model is built, so they are cheap; the weights-that-do-not-fit and the submission that
fails midway need a network, and use the smallest one (its weights file is made once per module).
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nucleus.cli import main
from nucleus.dataset import SAMPLE_DIR

SAMPLE = Path(SAMPLE_DIR)
# Two small labelled images of the fixed train split (256x256, 7 and 14 masks) ...
TRAIN_IDS = ("08ae2741df2f5ac815c0f272a8c532b5167ee853be9b939b9b8b7fa93560868a",
             "371a67232f7c871ec11332292c83cd9bb16063b91d58e86f0b76ef8817bc9465")
# ... and the smallest test image (256x256 RGB).
TEST_ID = "4be73d68f433869188fe5e7f09c7f681ed51003da6aa5d19ce368726d8e271ee"

# The smallest network: narrow pyramid, RPN and heads on ResNet-50, float32.
TINY = {"BACKBONE": "resnet50", "TOP_DOWN_PYRAMID_SIZE": 32, "RPN_CONV_SIZE": 32,
        "FPN_CLASSIF_FC_LAYERS_SIZE": 64, "MASK_HEAD_CONV_SIZE": 32, "MIXED_PRECISION": None,
        "POST_NMS_ROIS_INFERENCE": 100, "DETECTION_MAX_INSTANCES": 50}
FAST = ["--set", "MIXED_PRECISION=None", "--set", "POST_NMS_ROIS_INFERENCE=100",
        "--set", "DETECTION_MAX_INSTANCES=50"]


# ----------------------------------------------------------------------------- helpers
def run(capsys, *argv) -> tuple[int, str]:
    """Run the command line in-process; returns (exit code, stderr)."""
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_one_line_error(code: int, err: str, *words: str) -> str:
    """Exit 2, no traceback, and the last thing on stderr is one ``error:`` line with ``words``."""
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").split("\n") if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1, err
    assert lines[-1] == errors[0] and errors[0].startswith("error: "), err
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every file (with its content) and folder under ``folder``: nothing lost, changed or added."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


def copy_image(src_subset: str, image_id: str, dst: Path, new_id: str | None = None) -> Path:
    """Copy one sample image folder (optionally under another id); returns the new folder."""
    new_id = new_id or image_id
    target = dst / new_id
    shutil.copytree(SAMPLE / src_subset / image_id, target)
    if new_id != image_id:
        os.rename(target / "images" / f"{image_id}.png", target / "images" / f"{new_id}.png")
    return target


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 3])


@pytest.fixture
def dataset(tmp_path) -> Path:
    """tmp/ds/stage1_train with two labelled train-split images; a logs folder with an old run."""
    root = tmp_path / "ds"
    for image_id in TRAIN_IDS:
        copy_image("stage1_train", image_id, root / "stage1_train")
    old_run = tmp_path / "logs" / "nucleus_cpu20200101T0000"
    old_run.mkdir(parents=True)
    (old_run / "mask_rcnn_nucleus_cpu_0001.h5").write_bytes(b"an earlier checkpoint")
    return root


def image_of(root: Path, image_id: str) -> Path:
    return root / "stage1_train" / image_id / "images" / f"{image_id}.png"


def first_mask(root: Path, image_id: str) -> Path:
    return sorted((root / "stage1_train" / image_id / "masks").glob("*.png"))[0]


def train(capsys, tmp_path: Path, root: Path, *extra) -> tuple[int, str]:
    """``train`` on the folder; fails (or must fail) before building a model."""
    return run(capsys, "train", "--dataset", root, "--profile", "cpu", "--epochs", "1",
               "--steps-per-epoch", "1", "--val-subset", "", "--logs", tmp_path / "logs", *extra)


# ----------------------------------------------------------------------------- data folders
@pytest.mark.parametrize("command", [["train", "--profile", "cpu"], ["evaluate"],
                                     ["submit", "--out", "sub.csv"], ["detect", "--out", "det"]])
def test_missing_dataset_folder(capsys, tmp_path, monkeypatch, command):
    monkeypatch.chdir(tmp_path)
    missing = tmp_path / "no_such_folder"
    code, err = run(capsys, *command, "--dataset", missing, "--logs", tmp_path / "logs")
    assert_one_line_error(code, err, str(missing), "does not exist")
    assert not any(tmp_path.iterdir())  # no logs, CSV or overlay folder left behind


def test_empty_dataset_folder(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run(capsys, "train", "--dataset", empty, "--profile", "cpu",
                    "--logs", tmp_path / "logs")
    assert_one_line_error(code, err, str(empty), "empty")
    code, err = run(capsys, "evaluate", "--dataset", empty, "--weights", "w.h5")
    assert_one_line_error(code, err, str(empty), "empty")
    assert not (tmp_path / "logs").exists()


def test_subset_folder_without_image_folders(capsys, tmp_path):
    (tmp_path / "ds" / "stage1_test").mkdir(parents=True)
    code, err = run(capsys, "submit", "--dataset", tmp_path / "ds", "--weights", "w.h5",
                    "--out", tmp_path / "sub.csv")
    assert_one_line_error(code, err, str(tmp_path / "ds" / "stage1_test"), "no image folders")
    assert not (tmp_path / "sub.csv").exists()


def test_truncated_image(capsys, tmp_path, dataset):
    before = snapshot(tmp_path / "logs")
    # The last image in file order: it would only be read after several training batches.
    broken = image_of(dataset, TRAIN_IDS[-1])
    truncate(broken)
    code, err = train(capsys, tmp_path, dataset)
    assert_one_line_error(code, err, str(broken), "truncated")
    assert snapshot(tmp_path / "logs") == before  # failed before any run folder was made


def test_unreadable_image(capsys, tmp_path, dataset):
    broken = image_of(dataset, TRAIN_IDS[0])
    broken.write_bytes(b"this is not a PNG file")
    code, err = train(capsys, tmp_path, dataset)
    assert_one_line_error(code, err, str(broken), "cannot read image")


def test_mask_of_the_wrong_size(capsys, tmp_path, dataset):
    before = snapshot(tmp_path / "logs")
    mask = first_mask(dataset, TRAIN_IDS[-1])
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(mask)
    code, err = train(capsys, tmp_path, dataset)
    assert_one_line_error(code, err, str(mask), "10x12", "256x256")
    assert snapshot(tmp_path / "logs") == before


def test_empty_mask_file(capsys, tmp_path, dataset):
    mask = first_mask(dataset, TRAIN_IDS[-1])
    mask.write_bytes(b"")
    code, err = train(capsys, tmp_path, dataset)
    assert_one_line_error(code, err, str(mask), "empty file (0 bytes)")


def test_image_folder_without_its_image(capsys, tmp_path, dataset):
    image = image_of(dataset, TRAIN_IDS[0])
    image.unlink()
    code, err = train(capsys, tmp_path, dataset)
    assert_one_line_error(code, err, str(image), "image file missing")
    code, err = run(capsys, "evaluate", "--dataset", dataset, "--subset", "stage1_train",
                    "--weights", "w.h5")
    assert_one_line_error(code, err, str(image), "image file missing")


def test_labelled_image_without_masks(capsys, tmp_path, dataset):
    masks = dataset / "stage1_train" / TRAIN_IDS[0] / "masks"
    shutil.rmtree(masks)
    code, err = train(capsys, tmp_path, dataset)
    assert_one_line_error(code, err, str(masks), "no mask PNG")


def test_unknown_configuration_value(capsys, tmp_path, dataset):
    code, err = train(capsys, tmp_path, dataset, "--set", "NO_SUCH_SETTING=3")
    assert_one_line_error(code, err, "NO_SUCH_SETTING")
    code, err = train(capsys, tmp_path, dataset, "--set", "BACKBONE")
    assert_one_line_error(code, err, "--set BACKBONE", "NAME=VALUE")


# ----------------------------------------------------------------------------- weights files
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    """Weights of the smallest network (untrained), with its configuration stored inside."""
    from mrcnn import model as modellib
    from nucleus.config import make_config

    folder = tmp_path_factory.mktemp("tiny")
    model = modellib.MaskRCNN("inference", make_config("cpu", True, TINY), str(folder))
    path = folder / "tiny.h5"
    model.save_weights(str(path))
    return path


@pytest.fixture
def test_images(tmp_path) -> Path:
    """tmp/ds/stage1_test with a good image "a_good" and a truncated one "b_truncated"."""
    root = tmp_path / "ds"
    copy_image("stage1_test", TEST_ID, root / "stage1_test", "a_good")
    bad = copy_image("stage1_test", TEST_ID, root / "stage1_test", "b_truncated")
    truncate(bad / "images" / "b_truncated.png")
    return root


def test_weights_file_that_does_not_exist(capsys, tmp_path, dataset):
    missing = tmp_path / "missing.h5"
    for command in (["evaluate", "--subset", "stage1_train", "--plots", tmp_path / "plots"],
                    ["detect", "--subset", "stage1_train", "--out", tmp_path / "det"],
                    ["submit", "--subset", "stage1_train", "--out", tmp_path / "sub.csv"]):
        code, err = run(capsys, *command, "--dataset", dataset, "--weights", missing)
        assert_one_line_error(code, err, str(missing), "not found")
    before = snapshot(tmp_path / "logs")
    code, err = train(capsys, tmp_path, dataset, "--weights", missing)
    assert_one_line_error(code, err, str(missing), "not found")
    assert snapshot(tmp_path / "logs") == before
    assert not {"plots", "det", "sub.csv"} & {p.name for p in tmp_path.iterdir()}


def test_weights_file_of_garbage(capsys, tmp_path, dataset):
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00\x01 definitely not HDF5 " * 100)
    code, err = run(capsys, "detect", "--dataset", dataset, "--subset", "stage1_train",
                    "--weights", garbage, "--out", tmp_path / "det")
    assert_one_line_error(code, err, str(garbage), "not a readable HDF5")
    assert not (tmp_path / "det").exists()
    code, err = train(capsys, tmp_path, dataset, "--weights", garbage)
    assert_one_line_error(code, err, str(garbage), "not a readable HDF5")


def test_weights_file_that_does_not_fit(capsys, tmp_path, dataset, tiny_weights):
    """Saved with a 32-channel pyramid, loaded into a 64-channel one: named layer and shapes."""
    code, err = run(capsys, "evaluate", "--dataset", dataset, "--subset", "stage1_train",
                    "--weights", tiny_weights, "--set", "TOP_DOWN_PYRAMID_SIZE=64", *FAST,
                    "--logs", tmp_path / "logs")
    line = assert_one_line_error(code, err, str(tiny_weights), "fpn_", "shape")
    assert "32" in line and "64" in line


def test_failed_submission_keeps_the_existing_csv(capsys, tmp_path, test_images, tiny_weights):
    out = tmp_path / "existing.csv"
    out.write_text("ImageId,EncodedPixels\nsomething,1 2\n")
    before = snapshot(tmp_path)
    code, err = run(capsys, "submit", "--dataset", test_images, "--weights", tiny_weights,
                    "--out", out, *FAST, "--logs", tmp_path / "logs")
    bad = test_images / "stage1_test" / "b_truncated" / "images" / "b_truncated.png"
    assert_one_line_error(code, err, str(bad), "truncated")
    assert "1/2" in err  # the good image was detected first: the failure came midway
    assert snapshot(tmp_path) == before  # the old CSV is intact and no temporary file is left
