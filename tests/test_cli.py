"""The command line end to end on the bundled sample: train, submit, evaluate, detect, curves.

Everything runs in-process through ``nucleus.cli.main`` (one TensorFlow start-up) with a tiny
network trained for two steps; one checkpoint is shared by the module. Only ``--help`` runs in
subprocesses, to check the two ways of starting the program as a script.
"""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from nucleus.cli import main
from nucleus.dataset import SAMPLE_DIR, NucleusDataset
from nucleus.formats.rle import rle_encode
from nucleus.formats.submission import validate_submission, write_submission

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# A network small enough to train two steps in well under a minute on two cores, in float32
# so that the run does not depend on the CPU having bfloat16 instructions.
TINY = ["--set", "TOP_DOWN_PYRAMID_SIZE=32", "--set", "RPN_CONV_SIZE=32",
        "--set", "FPN_CLASSIF_FC_LAYERS_SIZE=64", "--set", "MASK_HEAD_CONV_SIZE=32",
        "--set", "MIXED_PRECISION=None"]
FAST_INFERENCE = ["--set", "MIXED_PRECISION=None", "--set", "POST_NMS_ROIS_INFERENCE=200",
                  "--set", "DETECTION_MAX_INSTANCES=100"]


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A working folder the module's commands run in (relative --logs, --out ...)."""
    folder = tmp_path_factory.mktemp("cli")
    previous = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(previous)


@pytest.fixture(scope="module")
def trained(workdir) -> dict:
    """``train`` for one epoch of two steps, with validation loss and mAP after the epoch."""
    code = main(["train", "--profile", "cpu", "--epochs", "1", "--steps-per-epoch", "2",
                 "--image-size", "128", *TINY, "--set", "VALIDATION_STEPS=1",
                 "--eval-every", "1", "--eval-first", "1", "--eval-limit", "2",
                 "--logs", "logs"])
    assert code == 0
    runs = sorted((workdir / "logs").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("nucleus_cpu")
    checkpoint = runs[0] / "mask_rcnn_nucleus_cpu_0001.h5"
    return {"run": runs[0], "weights": checkpoint}


# ----------------------------------------------------------------------------- train
def test_train_writes_checkpoint_history_and_validation_map(trained):
    run_dir, weights = trained["run"], trained["weights"]
    assert weights.is_file()
    with h5py.File(weights, "r") as f:
        assert int(f.attrs["epoch"]) == 1
        assert '"NAME": "nucleus_cpu"' in f.attrs["mrcnn_config"]
        assert '"TOP_DOWN_PYRAMID_SIZE": 32' in f.attrs["mrcnn_config"]
    with open(run_dir / "history.csv", newline="") as f:
        history = list(csv.DictReader(f))
    assert len(history) == 1
    assert np.isfinite(float(history[0]["loss"])) and "val_loss" in history[0]
    with open(run_dir / "val_map.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["epoch", "map", "hours", "ap50", "ap75", "map_fluorescence",
                       "map_brightfield", "map_colour"]
    assert len(rows) == 2 and rows[1][0] == "1"
    assert 0.0 <= float(rows[1][1]) <= 1.0
    assert is_png(run_dir / "val_map.png")
    assert is_png(run_dir / "training_curves.png")
    assert not list(run_dir.glob("*.tmp*"))  # checkpoints were written atomically


# ----------------------------------------------------------------------------- submit
def test_submit_writes_a_valid_submission(capsys, trained, workdir):
    code, out, _ = run(capsys, "submit", "--weights", trained["weights"], "--out", "sub.csv",
                       *FAST_INFERENCE)
    assert code == 0
    assert "sub.csv" in out.strip().splitlines()[-1]
    test_dir = Path(SAMPLE_DIR) / "stage1_test"
    shapes = {}
    for folder in test_dir.iterdir():
        with Image.open(folder / "images" / f"{folder.name}.png") as im:
            shapes[folder.name] = (im.height, im.width)
    assert len(shapes) == 3
    assert validate_submission(workdir / "sub.csv", shapes) == []
    with open(workdir / "sub.csv", newline="") as f:
        ids = {row["ImageId"] for row in csv.DictReader(f)}
    assert ids == set(shapes)


# ----------------------------------------------------------------------------- evaluate
def test_evaluate_prints_map_last_and_writes_plots(capsys, trained, workdir):
    code, out, _ = run(capsys, "evaluate", "--weights", trained["weights"], "--subset", "val",
                       "--limit", "2", "--plots", "evalplots", *FAST_INFERENCE)
    assert code == 0
    lines = out.strip().splitlines()
    match = re.fullmatch(r"mAP: (\d\.\d{4})", lines[-1])
    assert match, lines[-1]
    assert 0.0 <= float(match.group(1)) <= 1.0
    assert lines[0] == "IoU threshold  precision" and len(lines) == 15
    # The first two val images of the sample are stained tissue: one kind, the same mAP.
    assert lines[-3].split() == ["image", "kind", "images", "mAP"]
    assert lines[-2].split() == ["colour", "2", match.group(1)]
    plots = sorted((workdir / "evalplots").iterdir())
    assert len(plots) == 2 and all(is_png(p) for p in plots)


def test_evaluate_with_tta_votes_over_four_flips(capsys, trained, monkeypatch):
    from nucleus.inference import tta

    calls = []
    real = tta.detect_with_flips

    def counting(detect, image, *args, **kwargs):
        flips_seen = []

        def spy(flipped):
            flips_seen.append(flipped.copy())
            return detect(flipped)

        result = real(spy, image, *args, **kwargs)
        calls.append(flips_seen)
        return result

    monkeypatch.setattr(tta, "detect_with_flips", counting)
    code, out, _ = run(capsys, "evaluate", "--weights", trained["weights"], "--subset", "val",
                       "--limit", "2", "--tta", "--scale", "1", *FAST_INFERENCE)
    assert code == 0
    assert re.fullmatch(r"mAP: (\d\.\d{4})", out.strip().splitlines()[-1])
    assert len(calls) == 2 and all(len(seen) == 4 for seen in calls)
    first = calls[0]
    np.testing.assert_array_equal(first[1], first[0][:, ::-1])   # the left-right flip


def _ground_truth_rows(dataset: NucleusDataset) -> list[list]:
    rows = []
    for image_id in dataset.image_ids:
        masks, _ = dataset.load_mask(image_id)
        name = dataset.image_info[image_id]["id"]
        height, width = masks.shape[:2]
        rows.extend([name, rle_encode(masks[..., k]), height, width, "Public"]
                    for k in range(masks.shape[-1]))
    return rows


def test_evaluate_a_submission_against_a_solution(capsys, tmp_path):
    dataset = NucleusDataset()
    dataset.load_nucleus(None, "val")
    dataset.image_info = dataset.image_info[:3]
    dataset.prepare()
    solution = tmp_path / "solution.csv"
    with open(solution, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ImageId", "EncodedPixels", "Height", "Width", "Usage"])
        writer.writerows(_ground_truth_rows(dataset))
    perfect = tmp_path / "perfect.csv"
    write_submission(perfect, [(dataset.image_info[i]["id"], dataset.load_mask(i)[0])
                               for i in dataset.image_ids])
    code, out, _ = run(capsys, "evaluate", "--submission", perfect, "--solution", solution)
    assert code == 0
    assert out.strip().splitlines()[-1] == "mAP: 1.0000"
    assert "images: 3" in out

    # One image missing from the submission scores 0: the mean drops to 2/3.
    partial = tmp_path / "partial.csv"
    write_submission(partial, [(dataset.image_info[i]["id"], dataset.load_mask(i)[0])
                               for i in dataset.image_ids[1:]])
    code, out, _ = run(capsys, "evaluate", "--submission", partial, "--solution", solution)
    assert code == 0
    assert out.strip().splitlines()[-1] == "mAP: 0.6667"

    # An image the solution does not label (a solution of half a set) is counted, not scored.
    extra = tmp_path / "extra.csv"
    mask = np.zeros((8, 8, 1), bool)
    mask[2:5, 2:5] = True
    write_submission(extra, [(dataset.image_info[i]["id"], dataset.load_mask(i)[0])
                             for i in dataset.image_ids] + [("not-in-the-solution", mask)])
    code, out, _ = run(capsys, "evaluate", "--submission", extra, "--solution", solution)
    assert code == 0 and out.strip().splitlines()[-1] == "mAP: 1.0000"
    assert "not scored: 1 images" in out and "images: 3" in out


def test_evaluate_submission_needs_a_solution(capsys, tmp_path):
    code, _, err = run(capsys, "evaluate", "--submission", tmp_path / "s.csv")
    assert code == 2 and err.startswith("error: ") and "--solution" in err


# ----------------------------------------------------------------------------- detect, curves
def test_detect_writes_overlay_pngs(capsys, trained, workdir):
    code, out, _ = run(capsys, "detect", "--weights", trained["weights"], "--subset", "val",
                       "--limit", "1", "--out", "det", *FAST_INFERENCE)
    assert code == 0
    pngs = list((workdir / "det").iterdir())
    assert len(pngs) == 1 and is_png(pngs[0])
    with Image.open(pngs[0]) as im:
        assert min(im.size) >= 256  # at least the image's own size
    assert "1 overlays written" in out


def test_curves_from_the_run_folder(capsys, trained, workdir):
    code, out, _ = run(capsys, "curves", trained["run"], "--out", "curves.png")
    assert code == 0
    assert is_png(workdir / "curves.png")
    code, _, err = run(capsys, "curves", workdir)  # no history.csv there
    assert code == 2 and "history.csv" in err


# ----------------------------------------------------------------------------- help
FLAGS = {
    "train": ["--dataset", "--subset", "--weights", "--logs", "--epochs", "--steps-per-epoch",
              "--layers", "--model", "--profile", "--set", "--image-size", "--backbone",
              "--rpn-anchors", "--rois"],
    "sweep": ["--set", "--name", "--epochs", "--steps-per-epoch", "--logs", "--profile",
              "--no-augment", "--eval-every", "--val-subset"],
    "submit": ["--out", "--dataset", "--subset", "--weights", "--model"],
    "evaluate": ["--submission", "--solution", "--plots", "--dataset", "--subset", "--weights",
                 "--model"],
    "detect": ["--out", "--dataset", "--subset", "--weights", "--model"],
    "crossval": ["--folds", "--dataset", "--model"],
    "curves": ["--out"],
    "pick-radius": ["--radii"],
    "compare": ["--fcn-weights", "--out"],
    "segment": ["--out", "--channel", "--tile", "--overlap", "--model", "--weights", "--tta"],
    "export-labels": ["--dataset", "--subset", "--out", "--overwrite", "--limit"],
}


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_help_lists_the_flags(capsys, command):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in FLAGS[command]:
        assert re.search(rf"(^|[\s,\[]){re.escape(flag)}\b", out), f"{command}: {flag}"


@pytest.mark.parametrize("argv, cwd", [
    (["nucleus.py", "--help"], REPO / "nucleus"),   # matterport's habit, from the folder
    (["-m", "nucleus", "--help"], REPO),
])
def test_started_as_a_script(argv, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYTHONPATH", None)
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    for command in ("train", "detect", "evaluate", "submit", "crossval", "curves"):
        assert command in done.stdout


# ----------------------------------------------------------------------------- segment
def _grey_sample() -> np.ndarray:
    """A dim 360x360 fluorescence image of the bundled sample, grey uint8."""
    path = next(Path(SAMPLE_DIR).glob("stage1_train/b6c9b58d*/images/*.png"))
    return np.asarray(Image.open(path).convert("L"))


def test_segment_files_of_every_kind_with_a_truncated_one(capsys, tmp_path):
    import tifffile

    grey = _grey_sample()
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.dstack([grey, grey, grey, np.full_like(grey, 255)])).save(
        images / "rgba.png")
    tifffile.imwrite(images / "two.tif", np.stack([np.full_like(grey, 7, np.uint16),
                                                   grey.astype(np.uint16) * 257]),
                     imagej=True, metadata={"axes": "CYX"})
    tifffile.imwrite(images / "cut.tif", grey)
    (images / "cut.tif").write_bytes((images / "cut.tif").read_bytes()[:1000])
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "segment", images, "--out", out, "--channel", "1")
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert errors == [errors[0]] and errors[0].startswith(f"error: {images / 'cut.tif'}: ")
    assert "2 images" in stdout and "1 of 3 inputs failed" in err
    table = list(csv.DictReader(open(out / "nuclei.csv", newline="")))
    counts = {}
    for name in ("rgba", "two"):
        labels = tifffile.imread(out / f"{name}_labels.tif")
        assert labels.dtype == np.uint16 and labels.shape == grey.shape
        counts[name] = int(labels.max())
        assert counts[name] == sum(row["image"] == name for row in table) >= 10
        assert is_png(out / f"{name}_overlay.png")
    # The 16-bit copy of the image segments like the 8-bit one.
    assert abs(counts["rgba"] - counts["two"]) <= 2
    assert not (out / "cut_labels.tif").exists()


def test_segment_refuses_bad_tiles_and_missing_files_before_loading_a_model(capsys, tmp_path):
    code, _, err = run(capsys, "segment", tmp_path, "--out", tmp_path, "--tile", "64",
                       "--overlap", "64")
    assert code == 2 and "overlap must be" in err
    with pytest.raises(SystemExit) as info:
        main(["segment", str(tmp_path), "--out", str(tmp_path), "--overlap", "wide"])
    assert info.value.code == 2
    assert "expected a number of pixels or auto, got 'wide'" in capsys.readouterr().err
    code, _, err = run(capsys, "segment", tmp_path / "none.tif", "--out", tmp_path / "o")
    assert code == 2 and err.startswith(f"error: {tmp_path / 'none.tif'}: file not found")


# ----------------------------------------------------------------------------- label images
def _label_folder(root: Path, count: int) -> Path:
    """images/<id>.png and masks/<id>.tif (a label image each) from the sample's val images."""
    import tifffile

    dataset = NucleusDataset()
    dataset.load_nucleus(None, "val")
    dataset.prepare()
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for image_id in dataset.image_ids[:count]:
        name = dataset.image_info[image_id]["id"]
        Image.fromarray(dataset.load_image(image_id)).save(root / "images" / f"{name}.png")
        tifffile.imwrite(root / "masks" / f"{name}.tif", dataset.load_labels(image_id))
    return root


def test_evaluate_a_folder_of_images_and_label_images(capsys, trained, tmp_path):
    folder = _label_folder(tmp_path / "mine", 2)
    code, out, _ = run(capsys, "evaluate", "--weights", trained["weights"], "--dataset", folder,
                       "--subset", "all", *FAST_INFERENCE)
    assert code == 0
    assert "images: 2" in out and re.fullmatch(r"mAP: \d\.\d{4}", out.strip().splitlines()[-1])


def test_train_reads_a_label_image_folder_and_names_a_missing_label(capsys, tmp_path):
    folder = _label_folder(tmp_path / "mine", 3)
    first = sorted((folder / "masks").iterdir())[0]
    first.unlink()
    code, _, err = run(capsys, "train", "--dataset", folder, "--subset", "all", "--profile",
                       "cpu", "--epochs", "1", "--logs", tmp_path / "logs")
    assert code == 2
    assert err.startswith(f"error: {folder / 'images' / first.stem}.png: no label image")
