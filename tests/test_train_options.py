"""nucleus.training.train_options: every training option is a flag of both ``train`` and ``sweep``,
and reaches train_nucleus (and the sweep's trainer) from the command line."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import types

import pytest

from nucleus.cli import build_parser, main
from nucleus.training import train_options
from nucleus.training.train_options import NAMES, SWEEPABLE, TrainOptions

# Every option given a value other than its default: (flags, the option's value).
NOT_DEFAULT = {
    "epochs": (["--epochs", "7"], 7),
    "steps_per_epoch": (["--steps-per-epoch", "3"], 3),
    "layers": (["--layers", "heads"], "heads"),
    "augment": (["--no-augment"], False),
    "rotate90": (["--rotate90"], True),
    "lr_drop": (["--lr-drop", "4"], 4),
    "appearance": (["--appearance"], True),
    "scale": (["--scale-jitter", "0.6,1.7"], (0.6, 1.7)),
    "aspect": (["--aspect-jitter", "1.4"], 1.4),
    "dim": (["--dim-nuclei", "0.3"], 0.3),
    "defocus": (["--defocus-nuclei", "2"], 2.0),
    "dim_toward": (["--dim-toward", "surround"], "surround"),
    "tissue": (["--grey-as-tissue", "0.3"], 0.3),
    "oversample_kinds": (["--oversample", "colour=3", "--oversample", "brightfield=2"],
                         {"colour": 3, "brightfield": 2}),
    "extra_train": (["--extra-train", "more", "--extra-train", "mine"], ["more", "mine"]),
    "exclude": (["--exclude-kind", "colour"], ["colour"]),
    "eval_every": (["--eval-every", "2"], 2),
    "eval_first": (["--eval-first", "1"], 1),
    "eval_limit": (["--eval-limit", "6"], 6),
    "val_subset": (["--val-subset", "train"], "train"),
}


def _argv() -> list[str]:
    return [token for flags, _ in NOT_DEFAULT.values() for token in flags]


def _subparser(command: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions
               if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def test_this_test_names_every_option():
    assert sorted(NOT_DEFAULT) == sorted(NAMES)
    defaults = TrainOptions()
    for name, (_, value) in NOT_DEFAULT.items():
        assert getattr(defaults, name) != value, name


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_every_option_is_a_flag_of_train_and_sweep(command):
    actions = {s: a for a in _subparser(command)._actions for s in a.option_strings}
    for f in dataclasses.fields(TrainOptions):
        flag = f.metadata["flag"]
        assert flag.name in actions, f"{command}: no {flag.name} for {f.name}"
        assert actions[flag.name].help == flag.help


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_flags_without_values_give_the_defaults_of_train_nucleus(command):
    args = build_parser().parse_args([command])
    options = TrainOptions.from_args(args)
    # The command line's "none given" for the sampling options is an empty list or mapping.
    assert dataclasses.replace(options, exclude=None, oversample_kinds=None,
                               extra_train=None) == TrainOptions()
    assert options.exclude == [] and options.oversample_kinds == {}
    assert options.extra_train == []


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_every_flag_sets_its_option(command):
    options = TrainOptions.from_args(build_parser().parse_args([command, *_argv()]))
    assert {n: getattr(options, n) for n in NAMES} == {n: v for n, (_, v) in
                                                       NOT_DEFAULT.items()}


def test_every_option_reaches_train_nucleus(monkeypatch, tmp_path):
    from nucleus.training import train as training

    seen = {}

    def train_nucleus(**kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(log_dir=str(tmp_path))

    monkeypatch.setattr(training, "train_nucleus", train_nucleus)
    assert main(["train", "--profile", "cpu", "--logs", str(tmp_path), *_argv()]) == 0
    options = seen.pop("options")
    assert {n: getattr(options, n) for n in NAMES} == {n: v for n, (_, v) in
                                                       NOT_DEFAULT.items()}
    assert seen["overrides"] == {"STEPS_PER_EPOCH": 3}
    assert set(seen) == {"logs", "dataset_dir", "subset", "weights", "profile", "overrides",
                         "limit"}


def test_every_option_reaches_each_combination_of_a_sweep(monkeypatch, tmp_path):
    from nucleus.training import sweep

    calls = []
    monkeypatch.setattr(sweep, "_train_and_release", lambda **kwargs: calls.append(kwargs))
    argv = ["sweep", "--profile", "cpu", "--logs", str(tmp_path), "--set",
            "AUGMENT=True,False", *_argv()]
    assert main(argv) == 0
    want = {n: v for n, (_, v) in NOT_DEFAULT.items()}
    got = [{n: getattr(c["options"], n) for n in NAMES} for c in calls]
    assert got == [{**want, "augment": True}, {**want, "augment": False}]
    assert all(c["overrides"] == {"STEPS_PER_EPOCH": 3} for c in calls)


def test_train_nucleus_reads_every_option():
    """A field added to TrainOptions must be used: train_nucleus reads each one."""
    from nucleus.training.train import train_nucleus

    source = inspect.getsource(train_nucleus)
    for name in TrainOptions().keywords():
        assert f"options.{name}" in source, name
    assert "options.overrides()" in source


def test_keywords_are_the_options_that_are_not_configuration_values():
    options = TrainOptions(steps_per_epoch=12, rotate90=True)
    assert "steps_per_epoch" not in options.keywords()
    assert options.keywords()["rotate90"] is True
    assert options.overrides() == {"STEPS_PER_EPOCH": 12}
    assert TrainOptions().overrides() == {}


def test_of_replaces_fields_and_refuses_unknown_names():
    base = TrainOptions(epochs=3, rotate90=True)
    assert TrainOptions.of(base, rotate90=False) == TrainOptions(epochs=3)
    assert TrainOptions.of(None, epochs=3) == TrainOptions(epochs=3)
    assert TrainOptions.of() == TrainOptions()
    with pytest.raises(TypeError, match="unknown training option 'rotate'"):
        TrainOptions.of(base, rotate=True)
    with pytest.raises(TypeError, match="must be a TrainOptions"):
        TrainOptions.of(5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        base.epochs = 4


def test_sweepable_names_are_options_and_named_in_the_sweep_help():
    from nucleus.training.sweep import TRAIN_OPTIONS

    assert sorted(SWEEPABLE) == ["APPEARANCE", "AUGMENT", "EXCLUDE_KIND", "LR_DROP",
                                 "ROTATE90", "SCALE"]
    assert {n: o for n, (o, _, _) in TRAIN_OPTIONS.items()} == \
        {n: o for n, (o, _) in SWEEPABLE.items()}
    set_help = next(a.help for a in _subparser("sweep")._actions if a.dest == "set")
    for name, (option, _) in SWEEPABLE.items():
        assert option in NAMES
        assert name in set_help, name


@pytest.mark.parametrize("text, value", [("0.6,1.7", (0.6, 1.7)), ("1,2", (1.0, 2.0))])
def test_scale_jitter_reads_two_numbers(text, value):
    assert train_options.float_pair(text) == value
    with pytest.raises(argparse.ArgumentTypeError, match="LOW,HIGH"):
        train_options.float_pair("0.6")


def test_oversample_reads_kind_equals_count():
    from nucleus.errors import InputError

    assert train_options.kind_factors(["colour=3", " brightfield =2"]) == {
        "colour": 3, "brightfield": 2}
    with pytest.raises(InputError, match="--oversample colour=x: expected KIND=N"):
        train_options.kind_factors(["colour=x"])


def test_dim_toward_names_what_it_takes(capsys):
    parser = _subparser("train")
    assert parser.parse_args(["--dim-toward", "surround"]).dim_toward == "surround"
    with pytest.raises(SystemExit):
        parser.parse_args(["--dim-toward", "glass"])
    assert "expected one of darkest, surround, got 'glass'" in capsys.readouterr().err


def test_grey_as_tissue_takes_a_share(capsys):
    parser = _subparser("train")
    assert parser.parse_args(["--grey-as-tissue", "0.25"]).grey_as_tissue == 0.25
    for bad in ("1.5", "-0.1", "many"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--grey-as-tissue", bad])
        assert f"expected a share in [0, 1], got '{bad}'" in capsys.readouterr().err
