"""Which training images a run sees, and how often: by image kind (:mod:`nucleus.kinds`).

Rare kinds (bright-field, stained tissue) are a small share of the DSB training set, so a model
sees them seldom; :func:`oversample` repeats them, and :func:`combined` adds the images of other
labelled sets (a user's own annotations, a public set of a missing kind). :func:`exclude_kinds`
drops a kind altogether, which gives a leave-a-kind-out experiment: train without it, score on
it, and see how a change fares on images the model has never seen (README, "How the CPU profile
was chosen").
"""
from __future__ import annotations

import copy
from typing import Mapping, Sequence

from nucleus.errors import InputError
from nucleus.kinds import KINDS, dataset_kinds


def _check_kinds(names: Sequence[str]) -> None:
    unknown = sorted(set(names) - set(KINDS))
    if unknown:
        raise InputError(f"unknown image kind {', '.join(unknown)}: choose from "
                         f"{', '.join(KINDS)}")


def _rebuilt(dataset, infos: list[dict]):
    out = copy.copy(dataset)   # a NucleusDataset's copy has its own, empty label cache
    out.image_info = infos
    out.prepare()
    return out


def combined(dataset, *others):
    """A copy of ``dataset`` that also holds every image of ``others`` (after its own).

    For training on more than one labelled set at once (``train --extra-train``): the entries
    keep their own paths and labels, so each image loads from where it lies.
    """
    infos = list(dataset.image_info)
    for other in others:
        infos.extend(other.image_info)
    return _rebuilt(dataset, infos)


def oversample(dataset, factors: Mapping[str, int], kinds: Mapping[int, str] | None = None):
    """A copy of ``dataset`` where each image of kind ``k`` appears ``factors[k]`` times.

    Kinds not named keep one copy. ``kinds`` (image id -> kind) saves reading the images when
    the caller has them. Repeats are separate entries, so a shuffled epoch draws them as often
    as the factor says.
    """
    _check_kinds(list(factors))
    for kind, n in factors.items():
        if int(n) != n or n < 1:
            raise InputError(f"oversampling factor of {kind} must be a whole number >= 1, "
                             f"got {n}")
    kinds = dataset_kinds(dataset) if kinds is None else kinds
    infos = []
    for image_id, info in enumerate(dataset.image_info):
        infos.extend([info] * int(factors.get(kinds[image_id], 1)))
    return _rebuilt(dataset, infos)


def exclude_kinds(dataset, excluded: Sequence[str], kinds: Mapping[int, str] | None = None):
    """A copy of ``dataset`` without its images of the ``excluded`` kinds."""
    _check_kinds(excluded)
    kinds = dataset_kinds(dataset) if kinds is None else kinds
    infos = [info for image_id, info in enumerate(dataset.image_info)
             if kinds[image_id] not in set(excluded)]
    if not infos:
        raise InputError(f"no training image is left after excluding {', '.join(excluded)}")
    return _rebuilt(dataset, infos)


def kind_counts(dataset, kinds: Mapping[int, str] | None = None) -> dict[str, int]:
    """How many images of each kind ``dataset`` holds (every kind listed, zeros included)."""
    kinds = dataset_kinds(dataset) if kinds is None else kinds
    counts = {k: 0 for k in KINDS}
    for image_id in dataset.image_ids:
        counts[kinds[int(image_id)]] += 1
    return counts
