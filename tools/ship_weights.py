"""Turn a training checkpoint into a file to ship: float16 where the values fit, the training
configuration and the cumulative epoch stored with it.

    python tools/ship_weights.py CHECKPOINT OUT [--epoch N] [--average MORE ...]

The checkpoint's own stored configuration rebuilds the network (so a run with ``--set
OBJECT_DIAMETER=18`` ships a file that detects at that size by default); ``--epoch`` records the
epoch counted over all the runs behind the file (a run started from a shipped file counts its
epochs from 0). ``--average`` names more checkpoints of the same run: the file then holds the
mean of all their weights (the last epochs at the low learning rate, as stochastic weight
averaging does, which tends to land in a flatter region that generalises better than any one
epoch). The result is checked by loading it back into a fresh inference model.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mrcnn.weights_file import read_attrs  # noqa: E402
from nucleus.config import PROFILES  # noqa: E402
from nucleus.inference.nucleus_model import config_from_weights, profile_of  # noqa: E402


def average_into(model, loaded: list[str], others: list[str]) -> None:
    """Replace ``model``'s weights (already loaded from one checkpoint, the layers ``loaded``)
    with their mean over that checkpoint and ``others``, loaded one at a time (memory: the
    float64 sum, the first checkpoint's weights and the model's). A checkpoint that lacks any
    of those layers is refused."""
    net = model.keras_model
    first = net.get_weights()
    total = [np.asarray(w, np.float64) for w in first]
    for path in others:
        missing = set(loaded) - set(model.load_weights(path, by_name=True))
        if missing:
            raise SystemExit(f"{path}: not the same network as the first checkpoint "
                             f"(lacks {len(missing)} layers, e.g. {sorted(missing)[0]})")
        for t, w in zip(total, net.get_weights()):
            t += w
    net.set_weights([(t / (1 + len(others))).astype(f.dtype) for t, f in zip(total, first)])


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a .h5 checkpoint written by nucleus train")
    p.add_argument("out", help="the file to write (e.g. weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--epoch", type=int, default=None,
                   help="cumulative epoch to record (default: the checkpoint's own)")
    p.add_argument("--average", nargs="+", default=[], metavar="CHECKPOINT",
                   help="more checkpoints of the same network: ship the mean of all weights")
    args = p.parse_args(argv)
    for path in [args.checkpoint, *args.average]:
        if not os.path.isfile(path):
            raise SystemExit(f"{path}: no such checkpoint")
    # here: TensorFlow (~4 s) once the arguments are read, after TF_CPP_MIN_LOG_LEVEL is set
    from mrcnn import model as modellib

    attrs = read_attrs(args.checkpoint)
    if "mrcnn_config" not in attrs:
        raise SystemExit(f"{args.checkpoint}: no stored configuration; not a nucleus checkpoint")
    stored = json.loads(attrs["mrcnn_config"])
    base = PROFILES[profile_of(stored)][0]
    stored["RPN_ANCHOR_SCALES"] = tuple(stored.get("RPN_ANCHOR_SCALES", base.RPN_ANCHOR_SCALES))
    config = base.from_dict(stored)      # the run's configuration, exactly as it trained
    with tempfile.TemporaryDirectory() as logs:
        model = modellib.MaskRCNN("training", config, logs)
        loaded = model.load_weights(args.checkpoint, by_name=True)
        if args.average:
            average_into(model, loaded, args.average)
        model.epoch = args.epoch if args.epoch is not None else int(attrs.get("epoch", 0))
        model.save_weights(args.out, dtype="float16")
        check = modellib.MaskRCNN("inference", config_from_weights(args.out), logs)
        check.load_weights(args.out, by_name=True)
        image = np.zeros((64, 64, 3), np.uint8)
        check.detect([image])
    size = os.path.getsize(args.out) / 2**20
    averaged = f", mean of {1 + len(args.average)} checkpoints" if args.average else ""
    print(f"{args.out}: {size:.1f} MB, epoch {model.epoch}, "
          f"OBJECT_DIAMETER {config.OBJECT_DIAMETER}{averaged}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
