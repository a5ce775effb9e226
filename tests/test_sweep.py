"""nucleus.training.sweep: the grid of settings, resuming, the table and figure, and one real tiny
sweep.

Most tests train with a stand-in that writes what train_nucleus writes (checkpoints named by
epoch in a timestamped run folder, val_map.csv), so resuming can be checked without a network;
one test runs ``nucleus sweep`` for real on the bundled sample with a tiny network.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
from PIL import Image

from nucleus.cli import main
from nucleus.config import parse_value
from nucleus.errors import InputError
from nucleus.scoring.evaluation import VAL_MAP_COLUMNS
from nucleus.training import sweep
from nucleus.training.sweep import Setting, grid, parse_axes, run_sweep, split_values, write_table

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- settings
def test_values_split_at_top_level_commas_only():
    assert split_values("128,256, 512") == ["128", "256", "512"]
    assert split_values("None,(0.6, 1.7),[1,2]") == ["None", "(0.6, 1.7)", "[1,2]"]
    assert split_values("'a,b',c") == ["'a,b'", "c"]


def test_parse_axes_reads_values_like_train_set():
    axes = parse_axes(["rpn_train_anchors_per_image=128,256,512", "AUGMENT=True,False",
                       "SCALE=None,(0.6, 1.7)", "BACKBONE=resnet50"], parse_value)
    assert axes == [("RPN_TRAIN_ANCHORS_PER_IMAGE", [128, 256, 512]),
                    ("AUGMENT", [True, False]), ("SCALE", [None, (0.6, 1.7)]),
                    ("BACKBONE", ["resnet50"])]


@pytest.mark.parametrize("items, message", [
    ([], "at least one --set"),
    (["RPN_NMS_THRESHOLD"], "expected NAME=V1,V2"),
    (["=1,2"], "expected NAME=V1,V2"),
    (["RPN_NMS_THRESHOLD=0.6,,0.7"], "empty value"),
    (["RPN_NMS_THRESHOLD=0.7,0.7"], "given twice"),
    (["RPN_NMS_THRESHOLD=0.6", "rpn_nms_threshold=0.7"], "RPN_NMS_THRESHOLD is given twice"),
    (["AUGMENT=yes,no"], "AUGMENT takes True or False"),
    (["SCALE=(1, 2, 3)"], r"SCALE takes None or \(LOW, HIGH\)"),
    (["LR_DROP=0"], "LR_DROP takes None or an epoch"),
    (["EXCLUDE_KIND=None,tissue"], "EXCLUDE_KIND takes None or an image kind"),
])
def test_bad_axes_are_clear_errors(items, message):
    with pytest.raises(InputError, match=message):
        parse_axes(items, parse_value)


def test_exclude_kind_axis_is_leave_a_kind_out(tmp_path):
    trainer = FakeTrainer()
    axes = parse_axes(["EXCLUDE_KIND=None,colour"], parse_value)
    result = run_sweep(axes, str(tmp_path), "lko", train=trainer, epochs=1, **TRAIN)
    assert [o.setting.slug for o in result.outcomes] == ["exclude_kind=None",
                                                         "exclude_kind=colour"]
    # train_nucleus takes a list of kinds to drop, or None for all of them.
    assert [c["exclude"] for c in trainer.calls] == [None, ["colour"]]


def test_grid_is_every_combination_with_stable_folder_names():
    settings = grid([("RPN_NMS_THRESHOLD", [0.6, 0.7]), ("TRAIN_ROIS_PER_IMAGE", [200, 350]),
                     ("AUGMENT", [False])])
    assert [s.label for s in settings] == [
        "RPN_NMS_THRESHOLD=0.6 TRAIN_ROIS_PER_IMAGE=200 AUGMENT=False",
        "RPN_NMS_THRESHOLD=0.6 TRAIN_ROIS_PER_IMAGE=350 AUGMENT=False",
        "RPN_NMS_THRESHOLD=0.7 TRAIN_ROIS_PER_IMAGE=200 AUGMENT=False",
        "RPN_NMS_THRESHOLD=0.7 TRAIN_ROIS_PER_IMAGE=350 AUGMENT=False"]
    assert settings[1].slug == "rpn_nms_threshold=0.6,train_rois_per_image=350,augment=False"
    assert settings[1].overrides() == {"RPN_NMS_THRESHOLD": 0.6, "TRAIN_ROIS_PER_IMAGE": 350}
    assert settings[1].options() == {"augment": False}
    assert Setting((("SCALE", (0.6, 1.7)),)).slug == "scale=0.6_1.7"
    assert Setting((("LEARNING_RATE", 1e-05),)).slug == "learning_rate=1e-05"
    assert Setting((("LEARNING_RATE", -0.5),)).slug != Setting((("LEARNING_RATE", 0.5),)).slug
    with pytest.raises(InputError, match="share the folder"):
        grid([("BACKBONE", ["res net", "res_net"])])


# ----------------------------------------------------------------------------- running
class FakeTrainer:
    """Writes what train_nucleus writes, one epoch at a time: a checkpoint per epoch in a
    ``<name><timestamp>`` run folder (continued when resuming) and a val_map.csv row."""

    def __init__(self, fail_at: int | None = None):
        self.calls: list[dict] = []
        self.fail_at = fail_at
        self.runs = 0

    def __call__(self, logs, resume, options, overrides, **kwargs):
        from mrcnn.runs import mask_rcnn_layout

        epochs = options.epochs
        self.calls.append({"logs": logs, "resume": resume, "overrides": dict(overrides),
                           **options.keywords(), **kwargs})
        found = mask_rcnn_layout("nucleus_cpu").find_last(logs) if resume else None
        if found:
            run_dir, start = os.path.dirname(found[0]), found[1]
        else:
            self.runs += 1
            run_dir, start = os.path.join(logs, f"nucleus_cpu2026010{self.runs}T1200"), 0
        os.makedirs(run_dir, exist_ok=True)
        anchors = overrides.get("RPN_TRAIN_ANCHORS_PER_IMAGE", 256)
        for epoch in range(start + 1, epochs + 1):
            if epoch == self.fail_at:
                raise KeyboardInterrupt
            Path(run_dir, f"mask_rcnn_nucleus_cpu_{epoch:04d}.h5").write_bytes(b"weights")
            new = not os.path.exists(os.path.join(run_dir, "val_map.csv"))
            with open(os.path.join(run_dir, "val_map.csv"), "a", newline="") as f:
                w = csv.writer(f)
                if new:
                    w.writerow(VAL_MAP_COLUMNS)
                value = epoch * anchors / 10000
                w.writerow([epoch, f"{value:.4f}", f"{epoch / 10:.3f}", "0.5", "0.2",
                            f"{value + 0.1:.4f}", "", f"{value - 0.1:.4f}"])


AXES = [("RPN_TRAIN_ANCHORS_PER_IMAGE", [128, 512]), ("AUGMENT", [True, False])]
TRAIN = dict(dataset_dir=None, subset="train", weights="none", profile="cpu",
             overrides={"TRAIN_ROIS_PER_IMAGE": 64}, eval_every=1, augment=True)


def _rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_sweep_trains_each_combination_then_skips_finished_ones(tmp_path, capsys):
    trainer = FakeTrainer()
    result = run_sweep(AXES, str(tmp_path), "anchors", train=trainer, epochs=2, **TRAIN)
    assert [o.status for o in result.outcomes] == ["trained"] * 4
    assert [o.epoch for o in result.outcomes] == [2] * 4
    first = trainer.calls[0]
    assert first["logs"] == str(tmp_path / "anchors" / "rpn_train_anchors_per_image=128,"
                                                      "augment=True")
    assert first["resume"] is True and first["epochs"] == 2
    assert first["overrides"] == {"TRAIN_ROIS_PER_IMAGE": 64, "RPN_TRAIN_ANCHORS_PER_IMAGE": 128}
    assert [c["augment"] for c in trainer.calls] == [True, False, True, False]
    rows = _rows(result.table)
    assert len(rows) == 8 and rows[0]["setting"] == "RPN_TRAIN_ANCHORS_PER_IMAGE=128 AUGMENT=True"
    assert (rows[-1]["RPN_TRAIN_ANCHORS_PER_IMAGE"], rows[-1]["AUGMENT"], rows[-1]["epoch"],
            rows[-1]["map"], rows[-1]["map_colour"]) == ("512", "False", "2", "0.1024", "0.0024")
    assert Path(result.figure).read_bytes()[:8] == PNG_MAGIC
    lines = sweep.summary(result)
    assert lines[2].split("|")[1:6] == [" RPN_TRAIN_ANCHORS_PER_IMAGE=128 AUGMENT=True ",
                                        " trained ", " 2 ", " 0.0256 ", " 0.0256 (2) "]
    # The same command again trains nothing and writes the same table.
    again = run_sweep(AXES, str(tmp_path), "anchors", train=FakeTrainer(), epochs=2, **TRAIN)
    assert [o.status for o in again.outcomes] == ["done"] * 4
    assert _rows(again.table) == rows
    assert "done (epoch 2), skipped" in capsys.readouterr().out


def test_a_single_value_is_fixed_for_every_combination(tmp_path):
    trainer = FakeTrainer()
    axes = [("RPN_NMS_THRESHOLD", [0.6]), *AXES[:1], ("LR_DROP", [3])]
    result = run_sweep(axes, str(tmp_path), None, train=trainer, epochs=1, **TRAIN)
    assert result.folder == str(tmp_path / "sweep_rpn_train_anchors_per_image")
    assert [o.setting.slug for o in result.outcomes] == [
        "rpn_train_anchors_per_image=128", "rpn_train_anchors_per_image=512"]
    assert all(c["lr_drop"] == 3 and c["overrides"]["RPN_NMS_THRESHOLD"] == 0.6
               for c in trainer.calls)
    assert list(_rows(result.table)[0])[:3] == ["setting", "RPN_TRAIN_ANCHORS_PER_IMAGE",
                                                "epoch"]


def test_an_interrupted_sweep_continues_where_it_stopped(tmp_path):
    interrupted = FakeTrainer(fail_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(AXES, str(tmp_path), "anchors", train=interrupted, epochs=3, **TRAIN)
    assert len(interrupted.calls) == 1      # stopped inside the first combination, at epoch 2
    trainer = FakeTrainer()
    result = run_sweep(AXES, str(tmp_path), "anchors", train=trainer, epochs=3, **TRAIN)
    assert [o.status for o in result.outcomes] == ["resumed", "trained", "trained", "trained"]
    first = result.outcomes[0]
    assert os.path.basename(first.run_dir) == "nucleus_cpu20260101T1200"  # the same run folder
    assert [r["epoch"] for r in _rows(os.path.join(first.run_dir, "val_map.csv"))] == \
        ["1", "2", "3"]
    # A larger --epochs extends every finished combination.
    longer = run_sweep(AXES, str(tmp_path), "anchors", train=FakeTrainer(), epochs=4, **TRAIN)
    assert [o.status for o in longer.outcomes] == ["resumed"] * 4
    assert [o.epoch for o in longer.outcomes] == [4] * 4


def test_resuming_with_other_settings_is_refused(tmp_path):
    run_sweep(AXES[:1], str(tmp_path), "anchors", train=FakeTrainer(), epochs=1, **TRAIN)
    record = json.loads((tmp_path / "anchors" / "rpn_train_anchors_per_image=128" /
                         "setting.json").read_text())
    assert record["setting"] == {"RPN_TRAIN_ANCHORS_PER_IMAGE": 128}
    assert record["train"]["overrides"]["TRAIN_ROIS_PER_IMAGE"] == 64
    other = {**TRAIN, "overrides": {"TRAIN_ROIS_PER_IMAGE": 128}}
    trainer = FakeTrainer()
    with pytest.raises(InputError, match="trained with other settings.*overrides.*--name"):
        run_sweep(AXES[:1], str(tmp_path), "anchors", train=trainer, epochs=1, **other)
    assert trainer.calls == []
    # Validation frequency and length may change.
    run_sweep(AXES[:1], str(tmp_path), "anchors", train=trainer, epochs=2,
              **{**TRAIN, "eval_every": 5})


@pytest.mark.parametrize("axes, kwargs, message", [
    ([("NO_SUCH_VALUE", [1, 2])], {}, "unknown configuration value NO_SUCH_VALUE"),
    ([("TRAIN_ROIS_PER_IMAGE", [100, 200])], {}, "both swept"),
    (AXES, {"weights": "last"}, "sweep --weights last"),
    (AXES, {"name": "a/b"}, "sweep name"),
])
def test_bad_sweeps_fail_before_training(tmp_path, axes, kwargs, message):
    trainer = FakeTrainer()
    args = {**TRAIN, **kwargs}
    name = args.pop("name", "s")
    with pytest.raises(InputError, match=message):
        run_sweep(axes, str(tmp_path), name, train=trainer, epochs=1, **args)
    assert trainer.calls == []


# ----------------------------------------------------------------------------- table, figure
def _val_map(folder: Path, rows: list[str], header: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "val_map.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    return folder


def test_table_and_figure_from_old_and_new_val_map_files(tmp_path):
    old = _val_map(tmp_path / "a", ["5,0.2000,1.0,0.4,0.1", "15,0.3000,2.0,0.5,0.2"],
                   "epoch,map,hours,ap50,ap75")
    new = _val_map(tmp_path / "b", ["5,0.2500,1.0,0.4,0.1,0.3000,,0.1000"],
                   ",".join(VAL_MAP_COLUMNS))
    outcomes = [sweep.Outcome(Setting((("RPN_NMS_THRESHOLD", 0.6), ("AUGMENT", True))),
                              str(tmp_path), "done", 15, str(old)),
                sweep.Outcome(Setting((("RPN_NMS_THRESHOLD", 0.7), ("AUGMENT", True))),
                              str(tmp_path), "done", 5, str(new)),
                sweep.Outcome(Setting((("RPN_NMS_THRESHOLD", 0.8), ("AUGMENT", True))),
                              str(tmp_path), "trained", 0, None)]   # nothing recorded yet
    table = write_table(str(tmp_path / "sweep.csv"), outcomes, ["RPN_NMS_THRESHOLD", "AUGMENT"])
    rows = _rows(table)
    assert list(rows[0]) == ["setting", "RPN_NMS_THRESHOLD", "AUGMENT", "epoch", "map", "ap50",
                             "ap75", "hours", "map_fluorescence", "map_brightfield",
                             "map_colour"]
    assert [(r["RPN_NMS_THRESHOLD"], r["epoch"], r["map"], r["map_fluorescence"]) for r in rows] \
        == [("0.6", "5", "0.2000", ""), ("0.6", "15", "0.3000", ""), ("0.7", "5", "0.2500",
                                                                         "0.3000")]
    from nucleus.scoring.plots import save_sweep_curves

    with_kinds = save_sweep_curves(tmp_path / "sweep.png", table, title="sweep nms")
    import numpy as np

    with Image.open(with_kinds) as im:
        wide = np.asarray(im).shape
    # Panels: all images, fluorescence, colour (bright-field has no value anywhere).
    old_only = write_table(str(tmp_path / "old.csv"), outcomes[:1], ["RPN_NMS_THRESHOLD"])
    with Image.open(save_sweep_curves(tmp_path / "old.png", old_only)) as im:
        narrow = np.asarray(im).shape
    assert wide[1] > 2.5 * narrow[1]


def test_unreadable_val_map_is_named(tmp_path):
    bad = _val_map(tmp_path / "bad", ["1,2"], "epoch,loss")
    outcome = sweep.Outcome(Setting((("A", 1),)), str(tmp_path), "done", 1, str(bad))
    with pytest.raises(InputError, match=r"bad[/\\]val_map.csv: .*lacks the column 'map'"):
        write_table(str(tmp_path / "t.csv"), [outcome], ["A"])


# ----------------------------------------------------------------------------- command line
# The network of tests/test_cli.py, on 64x64 crops of two training images, one step.
TINY = ["--profile", "cpu", "--image-size", "64", "--set", "TOP_DOWN_PYRAMID_SIZE=32",
        "--set", "RPN_CONV_SIZE=32", "--set", "FPN_CLASSIF_FC_LAYERS_SIZE=64",
        "--set", "MASK_HEAD_CONV_SIZE=32", "--set", "MIXED_PRECISION=None",
        "--set", "VALIDATION_STEPS=0", "--set", "POST_NMS_ROIS_INFERENCE=100",
        "--set", "DETECTION_MAX_INSTANCES=50", "--steps-per-epoch", "1", "--limit", "2",
        "--eval-every", "1", "--eval-first", "1", "--eval-limit", "1"]


def test_sweep_command_trains_then_resumes_without_training(tmp_path, capsys):
    argv = ["sweep", *TINY, "--set", "TRAIN_ROIS_PER_IMAGE=16,32", "--epochs", "1",
            "--logs", str(tmp_path), "--name", "tiny"]
    # The second combination finished before (a run from before the per-kind columns): it is
    # skipped, so one combination really trains and the table holds both.
    earlier = tmp_path / "tiny" / "train_rois_per_image=32" / "nucleus_cpu20260101T1200"
    earlier.mkdir(parents=True)
    (earlier / "mask_rcnn_nucleus_cpu_0001.h5").write_bytes(b"never loaded")
    (earlier / "val_map.csv").write_text("epoch,map,hours,ap50,ap75\n1,0.1234,0.010,0.2,0.1\n")
    assert main(argv) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "tiny" / "train_rois_per_image=16"
    runs = [p for p in folder.iterdir() if p.is_dir()]
    assert len(runs) == 1 and (runs[0] / "mask_rcnn_nucleus_cpu_0001.h5").is_file()
    assert (runs[0] / "training_curves.png").read_bytes()[:8] == PNG_MAGIC
    record = json.loads((folder / "setting.json").read_text())
    assert record["setting"] == {"TRAIN_ROIS_PER_IMAGE": 16}
    assert record["train"]["overrides"]["TOP_DOWN_PYRAMID_SIZE"] == 32   # a fixed --set
    assert record["train"]["overrides"]["TRAIN_ROIS_PER_IMAGE"] == 16     # the axis
    rows = _rows(tmp_path / "tiny" / "sweep.csv")
    assert [(r["TRAIN_ROIS_PER_IMAGE"], r["epoch"]) for r in rows] == [("16", "1"), ("32", "1")]
    assert 0.0 <= float(rows[0]["map"]) <= 1.0 and rows[0]["map_colour"] != ""
    assert rows[1]["map"] == "0.1234" and rows[1]["map_colour"] == ""
    assert (tmp_path / "tiny" / "sweep.png").read_bytes()[:8] == PNG_MAGIC
    assert "| TRAIN_ROIS_PER_IMAGE=16 | trained | 1 |" in out
    assert "| TRAIN_ROIS_PER_IMAGE=32 | done | 1 | 0.1234 | 0.1234 (1) |" in out
    # Again: nothing to train, so no model is built and the table is rewritten as it was.
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("skipped") == 2 and "| TRAIN_ROIS_PER_IMAGE=16 | done | 1 |" in out
    assert _rows(tmp_path / "tiny" / "sweep.csv") == rows


def test_sweep_command_errors(tmp_path, capsys):
    code = main(["sweep", "--profile", "cpu", "--epochs", "1", "--logs", str(tmp_path)])
    assert code == 2 and "at least one --set" in capsys.readouterr().err
    code = main(["sweep", "--profile", "cpu", "--set", "RPN_NMS_THRESHOLD=0.7",
                 "--logs", str(tmp_path)])
    assert code == 2 and "nothing to sweep" in capsys.readouterr().err
    code = main(["sweep", "--model", "fcn", "--set", "A=1,2", "--logs", str(tmp_path)])
    assert code == 2 and "only --model mrcnn" in capsys.readouterr().err
    code = main(["sweep", "--profile", "cpu", "--rpn-anchors", "128", "--set",
                 "RPN_TRAIN_ANCHORS_PER_IMAGE=64,128", "--logs", str(tmp_path)])
    assert code == 2 and "both swept" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
