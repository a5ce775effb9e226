"""The options of a Mask R-CNN training run, described once: :class:`TrainOptions`.

Each field is one option: its default (what :func:`nucleus.training.train.train_nucleus` uses when
it is not given), its command-line flag with the flag's help (``train`` and ``sweep`` both get their
flags from :func:`add_flags`), and, where ``sweep --set NAME=V1,V2`` can vary it, its sweep name and
the values it takes. Adding an option is adding a field here, then using it in
:func:`~nucleus.training.train.train_nucleus`; the flags, :meth:`TrainOptions.from_args` and the
sweep's names (:data:`SWEEPABLE`) follow.

Most fields are keywords of ``train_nucleus``. A field with ``config`` set is a configuration
value instead (``--steps-per-epoch`` is ``STEPS_PER_EPOCH``): :meth:`TrainOptions.overrides`
gives it, below the run's explicit configuration values.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from nucleus.errors import InputError
from nucleus.kinds import KINDS

_UNSET = object()


def float_pair(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` -> (low, high) (the type of ``--scale-jitter``)."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (two numbers), got {text!r}")
    return low, high


def kind_factors(items: Sequence[str]) -> dict[str, int]:
    """``--oversample KIND=N`` values -> {kind: N}."""
    out = {}
    for item in items:
        kind, _, n = item.partition("=")
        try:
            out[kind.strip()] = int(n)
        except ValueError:
            raise InputError(f"--oversample {item}: expected KIND=N with N a whole "
                             "number") from None
    return out


@dataclass(frozen=True)
class Flag:
    """How an option is spelled on the command line (the arguments of ``add_argument``)."""
    name: str                                   # "--rotate90"
    help: str
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    action: str | None = None                   # "store_true", "append"
    default: Any = _UNSET                       # what argparse stores without it (_UNSET: the
    #                                             option's own default)
    to_option: Callable[[Any], Any] | None = None   # parsed flag -> option value (None: as is)

    @property
    def dest(self) -> str:
        """The attribute argparse stores it in: ``--scale-jitter`` -> ``scale_jitter``."""
        return self.name[2:].replace("-", "_")


@dataclass(frozen=True)
class Sweepable:
    """How ``sweep --set NAME=V1,V2,...`` varies an option."""
    name: str                                   # "AUGMENT"
    check: Callable[[Any], bool]                # whether a value (a Python literal) is one
    takes: str                                  # what the values must be, for errors
    to_option: Callable[[Any], Any] | None = None   # swept value -> option value (None: as is)


def _option(default: Any, flag: Flag, sweep: Sweepable | None = None,
            config: str | None = None) -> Any:
    return field(default=default, metadata={"flag": flag, "sweep": sweep, "config": config})


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def _is_pair(v: Any) -> bool:
    return v is None or (isinstance(v, tuple) and len(v) == 2 and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in v))


def _is_epoch(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1)


def _is_kind(v: Any) -> bool:
    return v is None or v in KINDS


def _kind_list(v: Any) -> list[str] | None:
    return None if v is None else [v]


def _not(v: Any) -> bool:
    return not v


DIM_TOWARD = ("darkest", "surround")
"""What ``--dim-nuclei`` dims nuclei toward (:func:`nucleus.training.augment.dim_instances`)."""


def _dim_toward(value: str) -> str:
    """``--dim-toward``'s value, checked."""
    if value not in DIM_TOWARD:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DIM_TOWARD)}, got {value!r}")
    return value


def _share(value: str) -> float:
    """A share of the training crops, checked to lie in [0, 1]."""
    try:
        share = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {value!r}") from None
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"expected a share in [0, 1], got {value!r}")
    return share


@dataclass(frozen=True)
class TrainOptions:
    """The schedule, augmentation, sampling and validation of a training run.

    ``epochs`` ends the schedule (:func:`nucleus.training.train.default_schedule`), ``layers``
    forces one stage; ``lr_drop``: from this epoch on the learning rate is a tenth of
    ``LEARNING_RATE`` (the last stage is split there). ``augment`` switches the flips and brightness
    changes; ``rotate90`` adds quarter turns to the flips; ``appearance`` and ``scale`` add
    :mod:`nucleus.training.augment`'s appearance and rescaling steps; ``dim`` is the share of crops
    in which some nuclei are dimmed (:class:`nucleus.training.augment.WithDimming`), ``defocus`` the
    largest sigma of the blur the dimmed nuclei are given, ``dim_toward`` what they fade into;
    ``tissue`` the share of grey fluorescence crops redrawn as stained tissue.
    ``extra_train`` are folders of labelled images trained on besides ``subset``;
    ``oversample_kinds`` (kind -> times) repeats the training images of rare kinds and
    ``exclude`` drops kinds from training (:mod:`nucleus.training.sampling`). Validation mAP runs
    on ``val_subset`` every ``eval_every`` epochs from ``eval_first`` on, on at most
    ``eval_limit`` images.
    """
    epochs: int | None = _option(None, Flag(
        "--epochs", "last epoch of the schedule (default 150: heads to 100, then 4+)", int))
    steps_per_epoch: int | None = _option(None, Flag("--steps-per-epoch", "default 100", int),
                                          config="STEPS_PER_EPOCH")
    layers: str | None = _option(None, Flag(
        "--layers", "heads | 3+ | 4+ | 5+ | all | REGEX: one stage with these layers"))
    augment: bool = _option(True, Flag(
        "--no-augment", "no flips or brightness changes", action="store_true", default=False,
        to_option=_not), Sweepable("AUGMENT", _is_bool, "True or False"))
    rotate90: bool = _option(False, Flag(
        "--rotate90", "Mask R-CNN: quarter turns besides the flips (all 8 orientations)",
        action="store_true"), Sweepable("ROTATE90", _is_bool, "True or False"))
    lr_drop: int | None = _option(None, Flag(
        "--lr-drop", "Mask R-CNN: a tenth of the learning rate from this epoch on", int,
        "EPOCH"), Sweepable("LR_DROP", _is_epoch, "None or an epoch >= 1"))
    appearance: bool = _option(False, Flag(
        "--appearance", "Mask R-CNN: stain, hue, greyscale, channel, inversion, gamma, "
                        "contrast, blur and noise jitter (for unseen microscopes and stains)",
        action="store_true"), Sweepable("APPEARANCE", _is_bool, "True or False"))
    scale: tuple[float, float] | None = _option(None, Flag(
        "--scale-jitter", "Mask R-CNN: rescale half the training crops by a factor in this "
                          "range, e.g. 0.6,1.7 (for unseen magnifications)", float_pair,
        "LOW,HIGH"), Sweepable("SCALE", _is_pair, "None or (LOW, HIGH)"))
    aspect: float | None = _option(None, Flag(
        "--aspect-jitter", "Mask R-CNN: stretch half the training crops along one axis by a "
                           "factor in 1/RATIO-RATIO, e.g. 1.4 (nuclei wider or narrower)",
        float, "RATIO"))
    dim: float = _option(0.0, Flag(
        "--dim-nuclei", "Mask R-CNN: in this share of the training crops, dim three nuclei "
                        "in ten to 0.15-0.7 of their brightness (for faint, out-of-focus "
                        "nuclei; default 0)", float, "SHARE"))
    defocus: float = _option(0.0, Flag(
        "--defocus-nuclei", "Mask R-CNN: blur the nuclei --dim-nuclei dims by a Gaussian of "
                            "sigma 0.5-SIGMA px, as out-of-focus nuclei look (default 0: none)",
        float, "SIGMA"))
    dim_toward: str = _option("darkest", Flag(
        "--dim-toward", "Mask R-CNN: what --dim-nuclei dims nuclei toward: darkest (the "
                        "image's darkest pixels, default) or surround (the pixels around each "
                        "nucleus, as a weakly stained nucleus in tissue looks)",
        _dim_toward, "{darkest,surround}"))
    tissue: float = _option(0.0, Flag(
        "--grey-as-tissue", "Mask R-CNN: redraw this share of the grey fluorescence training "
                            "crops as H&E-stained tissue, nuclei as haematoxylin (for stains "
                            "and tissues the training set lacks; default 0)", _share, "SHARE"))
    oversample_kinds: Mapping[str, int] | None = _option(None, Flag(
        "--oversample", "Mask R-CNN: show training images of KIND (fluorescence, brightfield, "
                        "colour) N times an epoch", metavar="KIND=N", action="append",
        default=[], to_option=kind_factors))
    extra_train: Sequence[str] | None = _option(None, Flag(
        "--extra-train", "Mask R-CNN: also train on the labelled images of DIR (images/ beside "
                         "masks/ or labels/, or Kaggle's stage1_train/<id>/ layout); repeat "
                         "for more; --oversample counts them by kind too",
        metavar="DIR", action="append", default=[]))
    exclude: Sequence[str] | None = _option(None, Flag(
        "--exclude-kind", "Mask R-CNN: train without images of KIND (leave-a-kind-out)",
        metavar="KIND", action="append", default=[]),
        Sweepable("EXCLUDE_KIND", _is_kind, "None or an image kind (" + ", ".join(KINDS) + ")",
                  _kind_list))
    eval_every: int = _option(10, Flag("--eval-every", "validation mAP every N epochs", int))
    eval_first: int = _option(5, Flag("--eval-first", "first epoch with validation mAP", int))
    eval_limit: int | None = _option(None, Flag(
        "--eval-limit", "validation images used for mAP", int))
    val_subset: str = _option("val", Flag("--val-subset", "subset for validation (default: val)"))

    @classmethod
    def of(cls, options: TrainOptions | None = None, /, **values: Any) -> TrainOptions:
        """``options`` (default: all defaults) with the fields in ``values`` replaced."""
        if options is not None and not isinstance(options, TrainOptions):
            raise TypeError(f"options must be a TrainOptions, got {options!r}")
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise TypeError(f"unknown training option {unknown[0]!r} (options: "
                            f"{', '.join(NAMES)})")
        return dataclasses.replace(options if options is not None else cls(), **values)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> TrainOptions:
        """The options of parsed ``train`` / ``sweep`` flags (:func:`add_flags`)."""
        values = {}
        for f in dataclasses.fields(cls):
            flag = f.metadata["flag"]
            value = getattr(args, flag.dest)
            values[f.name] = flag.to_option(value) if flag.to_option else value
        return cls(**values)

    def keywords(self) -> dict[str, Any]:
        """The fields that are :func:`nucleus.training.train.train_nucleus` keywords, by name (all
        but the configuration values)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if not f.metadata["config"]}

    def overrides(self) -> dict[str, Any]:
        """The configuration values the options set (those given: not None, 0 or empty)."""
        return {f.metadata["config"]: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["config"] and getattr(self, f.name)}


NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TrainOptions))
"""Every option's name, in the order of the flags."""

SWEEPABLE: dict[str, tuple[str, Sweepable]] = {
    f.metadata["sweep"].name: (f.name, f.metadata["sweep"])
    for f in dataclasses.fields(TrainOptions) if f.metadata["sweep"] is not None}
"""``sweep --set`` names of options -> (option name, how it is swept)."""


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per option, in the order of the fields (``train`` and ``sweep`` share them)."""
    for f in dataclasses.fields(TrainOptions):
        flag: Flag = f.metadata["flag"]
        kwargs: dict[str, Any] = {"help": flag.help,
                                  "default": f.default if flag.default is _UNSET else flag.default}
        for name in ("type", "metavar", "action"):
            if getattr(flag, name) is not None:
                kwargs[name] = getattr(flag, name)
        parser.add_argument(flag.name, **kwargs)


def config_overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration values among the option flags of parsed arguments (none for a command
    without them)."""
    values = {}
    for f in dataclasses.fields(TrainOptions):
        value = getattr(args, f.metadata["flag"].dest, None)
        if f.metadata["config"] and value:
            values[f.metadata["config"]] = value
    return values
