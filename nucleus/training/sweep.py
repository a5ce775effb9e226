"""The study's experiments as one command: train one run per combination of settings, then
compare their validation mAP curves (``nucleus sweep``).

The study's figures 6, 8 and 9 compare validation mAP against epochs with and without
augmentation, with 128, 256 and 512 RPN anchors per image, and across RPN NMS thresholds with
200 and 350 ROIs. A sweep names each setting with ``--set NAME=V1,V2,...`` (an axis; every
combination of the axes' values is one run; ``--set NAME=VALUE`` with one value fixes it for all,
as in ``train``) and trains each combination with :func:`nucleus.training.train.train_nucleus` in
its own folder::

    LOGS/SWEEP/<slug>/            e.g. logs/anchors/rpn_train_anchors_per_image=128/
        setting.json              what the combination trains with (checked on resume)
        <NAME><timestamp>/        the run folder: checkpoints, history.csv, val_map.csv
    LOGS/SWEEP/sweep.csv          setting, each axis, epoch, map, ap50, ap75, hours, map_<kind>
    LOGS/SWEEP/sweep.png          validation mAP against epoch, one curve per combination

NAME is a configuration value (``mrcnn/config.py``, ``nucleus/config.py``) or one of the
training options in :data:`TRAIN_OPTIONS` (``AUGMENT=True,False`` is figure 6). Running the same
command again resumes: finished combinations are skipped, unfinished ones continue from their
last checkpoint, and a larger ``--epochs`` extends them all.
"""
from __future__ import annotations

import csv
import gc
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import keras

from mrcnn.runs import RunFolder, mask_rcnn_layout
from nucleus.config import make_config, parse_value
from nucleus.errors import InputError
from nucleus.formats.io_utils import atomic_write
from nucleus.kinds import KINDS
from nucleus.scoring.plots import save_run_curves, save_sweep_curves
from nucleus.training.train import default_schedule, train_nucleus
from nucleus.training.train_options import NAMES, SWEEPABLE, TrainOptions

TRAIN_OPTIONS: dict[str, tuple[str, Callable[[Any], bool], str]] = {
    name: (option, sweepable.check, sweepable.takes)
    for name, (option, sweepable) in SWEEPABLE.items()}
"""Sweepable names that are training options rather than configuration values:
NAME -> (the :class:`nucleus.training.train_options.TrainOptions` field, check, what the value must
be), as that class declares them. They mirror train's --no-augment, --rotate90, --appearance,
--scale-jitter, --lr-drop and --exclude-kind (``EXCLUDE_KIND=None,colour`` is leave-a-kind-out: the
same training with and without one kind, scored per kind on the validation images)."""


SETTING_FILE = "setting.json"
TABLE_FILE = "sweep.csv"
FIGURE_FILE = "sweep.png"
MEASURES = ("map", "ap50", "ap75", "hours", *(f"map_{kind}" for kind in KINDS))
"""Columns of a run's val_map.csv that the sweep table carries (absent ones stay empty)."""


# ----------------------------------------------------------------------------- settings
def split_values(text: str) -> list[str]:
    """``"128,256,(8, 16)"`` -> ``["128", "256", "(8, 16)"]``: commas inside brackets or quotes
    belong to the value."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_axes(items: Sequence[str],
               parse: Callable[[str], Any] = parse_value) -> list[tuple[str, list]]:
    """``--set NAME=V1,V2,...`` items -> [(NAME, [values])], in the order given.

    Values are read like train's ``--set`` (Python literals, else strings). Names are
    upper-cased. An item with one value fixes it for every combination (:func:`run_sweep`);
    one with several is an axis of the sweep.
    """
    axes: list[tuple[str, list]] = []
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().upper()
        if not sep or not name:
            raise InputError(f"--set {item}: expected NAME=V1,V2,...")
        texts = split_values(text)
        if any(t == "" for t in texts):
            raise InputError(f"--set {item}: empty value (expected NAME=V1,V2,...)")
        values = [parse(t) for t in texts]
        if len({_key(v) for v in values}) != len(values):
            raise InputError(f"--set {item}: a value is given twice")
        if name in {n for n, _ in axes}:
            raise InputError(f"--set {name} is given twice: give all its values in one "
                             f"--set {name}=V1,V2,...")
        option = TRAIN_OPTIONS.get(name)
        if option is not None:
            for v in values:
                if not option[1](v):
                    raise InputError(f"--set {item}: {name} takes {option[2]}, got {v!r}")
        axes.append((name, values))
    if not axes:
        raise InputError("sweep: give at least one --set NAME=V1,V2,... to sweep over")
    return axes


def _key(value: Any) -> str:
    return json.dumps(value, default=repr, sort_keys=True)


def _value_text(value: Any) -> str:
    """A value as it goes into a folder name: ``(0.6, 1.7)`` -> ``0.6_1.7``."""
    return re.sub(r"[^\w.+-]+", "_", str(value)).strip("_") or "empty"


@dataclass(frozen=True)
class Setting:
    """One combination of a sweep: (NAME, value) per axis, in the order of the axes."""
    values: tuple[tuple[str, Any], ...]

    @property
    def slug(self) -> str:
        """Its folder name, the same every run: ``rpn_nms_threshold=0.6,train_rois_per_image=200``
        (letters, digits, ``. _ + - = ,`` only)."""
        return ",".join(f"{name.lower()}={_value_text(v)}" for name, v in self.values)

    @property
    def label(self) -> str:
        """``RPN_NMS_THRESHOLD=0.6 TRAIN_ROIS_PER_IMAGE=200``, for tables and legends."""
        return " ".join(f"{name}={v}" for name, v in self.values)

    def overrides(self) -> dict[str, Any]:
        """The configuration values this combination sets."""
        return {n: v for n, v in self.values if n not in TRAIN_OPTIONS}

    def options(self) -> dict[str, Any]:
        """The training options this combination sets (AUGMENT -> augment ...)."""
        out = {}
        for n, v in self.values:
            if n in SWEEPABLE:
                option, sweepable = SWEEPABLE[n]
                out[option] = sweepable.to_option(v) if sweepable.to_option else v
        return out


def grid(axes: Sequence[tuple[str, Sequence]]) -> list[Setting]:
    """Every combination of the axes' values, the last axis varying fastest."""
    names = [n for n, _ in axes]
    settings = [Setting(tuple(zip(names, combo)))
                for combo in itertools.product(*(values for _, values in axes))]
    slugs = [s.slug for s in settings]
    for slug in slugs:
        if slugs.count(slug) > 1:
            same = [s.label for s in settings if s.slug == slug]
            raise InputError(f"sweep: settings {' and '.join(same)} would share the folder "
                             f"{slug}; give values that differ in letters or digits")
    return settings


# ----------------------------------------------------------------------------- running
@dataclass
class Outcome:
    """What happened to one combination in this invocation."""
    setting: Setting
    folder: str
    status: str          # "trained", "resumed" or "done" (skipped: already at the last epoch)
    epoch: int           # last checkpoint's epoch after this invocation
    run_dir: str | None  # run folder holding its checkpoints and val_map.csv


@dataclass
class SweepResult:
    folder: str
    outcomes: list[Outcome] = field(default_factory=list)
    table: str = ""
    figure: str | None = None


def default_name(axes: Sequence[tuple[str, Sequence]]) -> str:
    """``sweep_rpn_nms_threshold_train_rois_per_image`` for a sweep without ``--name``."""
    return "sweep_" + "_".join(n.lower() for n, _ in axes)


def run_sweep(axes: Sequence[tuple[str, Sequence]], logs: str, name: str | None = None,
              train: Callable | None = None, options: TrainOptions | None = None,
              **train_kwargs) -> SweepResult:
    """Train every combination of ``axes`` (resuming), then write the table and the figure.

    ``axes`` as :func:`parse_axes` gives them: those with several values are swept, those
    with one are fixed for all combinations (as train's ``--set NAME=VALUE``).
    Every combination trains with ``train`` (default :func:`nucleus.training.train.train_nucleus`,
    its models freed after each combination), called with ``logs``, ``resume=True``, its
    :class:`~nucleus.training.train_options.TrainOptions` as ``options`` and ``train_kwargs``:
    dataset_dir, subset, weights, profile, overrides, limit. ``options`` holds the training
    options of all combinations (epochs, augment ...; they may also come as keywords, which
    replace those in ``options``); a combination's own values win over them
    (``--set AUGMENT=True,False`` over ``--no-augment``), while a configuration value both
    swept and in ``overrides`` is an error. ``weights`` is where each combination starts
    (``last`` makes no sense here: each one resumes its own run).
    """
    train = train or _train_and_release
    options = TrainOptions.of(options, **{k: train_kwargs.pop(k) for k in list(train_kwargs)
                                          if k in NAMES})
    fixed = Setting(tuple((n, values[0]) for n, values in axes if len(values) == 1))
    axes = [(n, list(values)) for n, values in axes if len(values) > 1]
    if not axes:
        raise InputError("sweep: nothing to sweep; give at least one --set NAME=V1,V2,... "
                         "with two or more values")
    name = name or default_name(axes)
    if not re.fullmatch(r"[\w.+=,-]+", name):
        raise InputError(f"sweep name {name!r}: use letters, digits and . _ - + = , only")
    weights = train_kwargs.get("weights", "none")
    if weights == "last":
        raise InputError("sweep --weights last: each combination resumes its own run already; "
                         "give where new combinations start (none, coco, imagenet or a path)")
    profile = train_kwargs.get("profile", "study")
    options = TrainOptions.of(options, **fixed.options())
    base = {**options.overrides(), **(train_kwargs.get("overrides") or {}),
            **fixed.overrides()}
    settings = grid(axes)
    clash = sorted({n for s in settings for n in s.overrides()} & set(base))
    if clash:
        raise InputError(f"sweep: {', '.join(clash)} is both swept (--set) and fixed by "
                         "another flag; keep one")
    last_epoch = default_schedule(weights, options.epochs, options.layers)[-1].until_epoch
    # Fail on a bad name or value before any combination trains for hours.
    configs = [make_config(profile, overrides={**base, **s.overrides()}) for s in settings]
    root = os.path.join(logs, name)
    result = SweepResult(root)
    for index, (setting, config) in enumerate(zip(settings, configs), 1):
        folder = os.path.join(root, setting.slug)
        own = TrainOptions.of(options, **setting.options())
        kwargs = {**train_kwargs, "overrides": {**base, **setting.overrides()}}
        _check_setting(folder, name, setting, {**kwargs, **own.keywords()})
        layout = mask_rcnn_layout(config.NAME)
        found = layout.find_last(folder)
        head = f"sweep {name}: {index}/{len(settings)} {setting.label}"
        if found is not None and found[1] >= last_epoch:
            print(f"{head}: done (epoch {found[1]}), skipped", flush=True)
            status = "done"
        else:
            print(f"{head}: " + (f"resuming at epoch {found[1]}" if found else "training")
                  + f" to epoch {last_epoch}", flush=True)
            train(logs=folder, resume=True, options=own, **kwargs)
            status = "resumed" if found else "trained"
        run = layout.last_run(folder)
        if status != "done" and run is not None:
            save_run_curves(run.path)
        result.outcomes.append(Outcome(setting, folder, status,
                                       run.last_checkpoint()[1] if run else 0,
                                       run.path if run else None))
    result.table = write_table(os.path.join(root, TABLE_FILE), result.outcomes,
                               [n for n, _ in axes])
    result.figure = _draw(os.path.join(root, FIGURE_FILE), result.table, name)
    return result


def _check_setting(folder: str, name: str, setting: Setting, kwargs: dict) -> None:
    """Record what a combination trains with; refuse to resume it with something else.

    The epoch count is left out (a larger --epochs extends the runs), and so are the
    validation schedule flags; anything else that changes the training would mix two
    experiments in one run folder.
    """
    ignored = {"epochs", "eval_every", "eval_first"}
    record = json.loads(json.dumps(
        {"sweep": name, "setting": dict(setting.values),
         "train": {k: v for k, v in sorted(kwargs.items()) if k not in ignored}},
        default=repr))
    path = os.path.join(folder, SETTING_FILE)
    if os.path.exists(path):
        try:
            with open(path) as f:
                stored = json.load(f)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: unreadable sweep setting file ({e})") from None
        if stored != record:
            changed = sorted(k for k in set(stored.get("train", {})) | set(record["train"])
                             if stored.get("train", {}).get(k) != record["train"].get(k))
            raise InputError(f"{path}: this combination was trained with other settings "
                             f"({', '.join(changed) or 'setting'} differ); use another "
                             "--name, or remove the folder to start it again")
        return
    os.makedirs(folder, exist_ok=True)
    with atomic_write(path, "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")


def _train_and_release(**kwargs) -> None:
    """:func:`nucleus.training.train.train_nucleus`, then free its models before the next
    combination builds its own (Keras keeps every model of a process alive otherwise)."""
    try:
        train_nucleus(**kwargs)
    finally:
        keras.utils.clear_session()
        gc.collect()


# ----------------------------------------------------------------------------- results
def write_table(path: str, outcomes: Sequence[Outcome], axis_names: Sequence[str]) -> str:
    """``sweep.csv``: one row per combination and validated epoch (atomically). Returns path.

    Columns: setting (its label), one column per axis, epoch, then :data:`MEASURES` as the
    run's val_map.csv has them (empty where it lacks one: older files, absent kinds).
    """
    columns = ["setting", *axis_names, "epoch", *MEASURES]
    rows = []
    for outcome in outcomes:
        values = dict(outcome.setting.values)
        for record in read_val_map(outcome.run_dir):
            rows.append({"setting": outcome.setting.label,
                         **{n: values[n] for n in axis_names},
                         "epoch": record["epoch"],
                         **{m: record.get(m, "") for m in MEASURES}})
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, restval="")
        w.writeheader()
        w.writerows(rows)
    return path


def read_val_map(run_dir: str | None) -> list[dict]:
    """The rows of a run folder's val_map.csv (none if it has no such file yet)."""
    if run_dir is None:
        return []
    path = RunFolder(run_dir).val_map
    if not os.path.exists(path):
        return []
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch") not in (None, "")]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: unreadable validation mAP file ({e})") from None
    if rows and "map" not in rows[0]:
        raise InputError(f"{path}: validation mAP file lacks the column 'map'")
    return rows


def _draw(path: str, table: str, name: str) -> str | None:
    with open(table, newline="") as f:
        if not any(True for _ in csv.DictReader(f)):
            return None  # no combination has a validation mAP yet (no validation images?)
    return save_sweep_curves(path, table, title=f"sweep {name}")


def summary(result: SweepResult) -> list[str]:
    """Markdown lines: per combination, its last epoch, last and best validation mAP."""
    lines = ["| setting | status | epoch | last val mAP | best val mAP (epoch) |",
             "|---|---|---|---|---|"]
    for o in result.outcomes:
        rows = [r for r in read_val_map(o.run_dir) if r.get("map")]
        if rows:
            best = max(rows, key=lambda r: float(r["map"]))
            last, top = f"{float(rows[-1]['map']):.4f}", \
                f"{float(best['map']):.4f} ({best['epoch']})"
        else:
            last = top = "-"
        lines.append(f"| {o.setting.label} | {o.status} | {o.epoch} | {last} | {top} |")
    return lines
