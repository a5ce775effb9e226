"""Run folders: one folder per training run under a logs folder, named by a prefix and the time
the run started, holding a checkpoint per epoch, the training history and the validation mAP.

:class:`RunLayout` is how one kind of model names them; :func:`mask_rcnn_layout` gives
matterport's (``<name><YYYYmmddTHHMM>/mask_rcnn_<name>_<epoch:04d>.h5``). :class:`RunFolder` is
one run: its checkpoints and the files beside them (:data:`HISTORY_FILE`, :data:`VAL_MAP_FILE`).
"""
from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass

HISTORY_FILE = "history.csv"
"""Losses per epoch, as Keras's ``CSVLogger`` writes them (epochs counted from 0)."""
VAL_MAP_FILE = "val_map.csv"
"""Validation mAP per epoch (columns ``epoch``, ``map`` ...; epochs counted from 1, as the
checkpoints count them)."""
CURVES_FILE = "training_curves.png"

_STAMP_FIELDS = {"%Y": r"\d{4}", "%m": r"\d{2}", "%d": r"\d{2}", "%H": r"\d{2}",
                 "%M": r"\d{2}", "%S": r"\d{2}"}
_EPOCH = "{epoch:04d}"


@dataclass(frozen=True)
class RunLayout:
    """How one kind of model names its runs: a run folder is ``prefix`` followed by the time
    the run started (``stamp``, a strftime format of the fields %Y %m %d %H %M %S), and the
    checkpoint of an epoch in it is ``checkpoint`` (a format holding ``{epoch:04d}``)."""
    prefix: str
    checkpoint: str
    stamp: str = "%Y%m%dT%H%M"

    def __post_init__(self) -> None:
        if self.checkpoint.count(_EPOCH) != 1:
            raise ValueError(f"checkpoint name {self.checkpoint!r} must hold {_EPOCH} once")

    def _run_pattern(self) -> re.Pattern:
        stamp = re.escape(self.stamp)
        for field, pattern in _STAMP_FIELDS.items():
            stamp = stamp.replace(re.escape(field), pattern)
        return re.compile(re.escape(self.prefix) + stamp)

    def _checkpoint_pattern(self) -> re.Pattern:
        before, after = self.checkpoint.split(_EPOCH)
        return re.compile(re.escape(before) + r"(\d{4,})" + re.escape(after))

    def is_run(self, name: str) -> bool:
        """Whether ``name`` (a folder's name) is a run folder of this layout."""
        return self._run_pattern().fullmatch(name) is not None

    def epoch_of(self, checkpoint: str | os.PathLike) -> int | None:
        """The epoch in a checkpoint's file name, or None when the name is not a checkpoint's."""
        match = self._checkpoint_pattern().fullmatch(os.path.basename(os.fspath(checkpoint)))
        return int(match.group(1)) if match else None

    def folder(self, logs: str | os.PathLike, started: datetime.datetime | None = None,
               unique: bool = False) -> RunFolder:
        """The run folder under ``logs`` of a run started at ``started`` (default: now); with
        ``unique``, a second later while that folder exists. Nothing is created."""
        started = started or datetime.datetime.now()

        def at(when: datetime.datetime) -> RunFolder:
            return RunFolder(os.path.join(os.fspath(logs), f"{self.prefix}{when:{self.stamp}}"),
                             self)

        run = at(started)
        while unique and os.path.exists(run.path):
            started += datetime.timedelta(seconds=1)
            run = at(started)
        return run

    def runs(self, logs: str | os.PathLike) -> list[RunFolder]:
        """The run folders under ``logs``, oldest first (none when ``logs`` is not a folder)."""
        logs = os.fspath(logs)
        if not os.path.isdir(logs):
            return []
        return [RunFolder(os.path.join(logs, name), self) for name in sorted(os.listdir(logs))
                if self.is_run(name) and os.path.isdir(os.path.join(logs, name))]

    def last_run(self, logs: str | os.PathLike) -> RunFolder | None:
        """The newest run under ``logs`` that holds a checkpoint, or None."""
        return next((run for run in reversed(self.runs(logs)) if run.checkpoints()), None)

    def find_last(self, logs: str | os.PathLike) -> tuple[str, int] | None:
        """(path, epoch) of the last checkpoint of the newest run under ``logs`` that has one,
        or None (read from the names: no file is opened)."""
        run = self.last_run(logs)
        return run.last_checkpoint() if run is not None else None

    def run_of(self, checkpoint: str | os.PathLike) -> RunFolder | None:
        """The run folder a checkpoint lies in, or None for a file elsewhere (a shipped file)."""
        folder = os.path.dirname(os.fspath(checkpoint))
        if self.epoch_of(checkpoint) is None or not self.is_run(os.path.basename(folder)):
            return None
        return RunFolder(folder, self)


def mask_rcnn_layout(name: str | None) -> RunLayout:
    """matterport's run folders for a configuration ``NAME``: ``<name><YYYYmmddTHHMM>/`` with
    ``mask_rcnn_<name>_<epoch:04d>.h5`` checkpoints, the name in lower case."""
    name = (name or "model").lower()
    return RunLayout(name, f"mask_rcnn_{name}_{_EPOCH}.h5")


@dataclass(frozen=True)
class RunFolder:
    """One training run's folder: its checkpoints (named as ``layout`` says), ``history.csv``
    and ``val_map.csv``. Without a layout only the files beside the checkpoints are known."""
    path: str
    layout: RunLayout | None = None

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def history(self) -> str:
        """Path of the losses per epoch (:data:`HISTORY_FILE`)."""
        return os.path.join(self.path, HISTORY_FILE)

    @property
    def val_map(self) -> str:
        """Path of the validation mAP per epoch (:data:`VAL_MAP_FILE`)."""
        return os.path.join(self.path, VAL_MAP_FILE)

    @property
    def curves(self) -> str:
        """Path of the figure of both (:data:`CURVES_FILE`)."""
        return os.path.join(self.path, CURVES_FILE)

    def _layout(self) -> RunLayout:
        if self.layout is None:
            raise ValueError(f"{self.path}: a run folder without a layout has no checkpoint names")
        return self.layout

    def checkpoint(self, epoch: int) -> str:
        """Path of the checkpoint of ``epoch`` (1 is the first epoch trained)."""
        return os.path.join(self.path, self._layout().checkpoint.format(epoch=epoch))

    def checkpoints(self) -> list[tuple[int, str]]:
        """(epoch, path) of every checkpoint in the folder, by epoch (temporary files of an
        interrupted write are not checkpoints)."""
        layout = self._layout()
        if not os.path.isdir(self.path):
            return []
        found = ((layout.epoch_of(name), name) for name in os.listdir(self.path))
        return sorted((epoch, os.path.join(self.path, name)) for epoch, name in found
                      if epoch is not None)

    def last_checkpoint(self) -> tuple[str, int] | None:
        """(path, epoch) of the last checkpoint, or None when the run saved none yet."""
        checkpoints = self.checkpoints()
        if not checkpoints:
            return None
        epoch, path = checkpoints[-1]
        return path, epoch
