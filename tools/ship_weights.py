"""Turn a training checkpoint into a file to ship: float16 where the values fit, the training
configuration and the cumulative epoch stored with it.

    python tools/ship_weights.py CHECKPOINT OUT [--epoch N]

The checkpoint's own stored configuration rebuilds the network (so a run with ``--set
OBJECT_DIAMETER=18`` ships a file that detects at that size by default); ``--epoch`` records the
epoch counted over all the runs behind the file (a run started from a shipped file counts its
epochs from 0). The result is checked by loading it back into a fresh inference model.
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


def main(argv=None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a .h5 checkpoint written by nucleus train")
    p.add_argument("out", help="the file to write (e.g. weights/mask_rcnn_nucleus.h5)")
    p.add_argument("--epoch", type=int, default=None,
                   help="cumulative epoch to record (default: the checkpoint's own)")
    args = p.parse_args(argv)
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
        model.load_weights(args.checkpoint, by_name=True)
        model.epoch = args.epoch if args.epoch is not None else int(attrs.get("epoch", 0))
        model.save_weights(args.out, dtype="float16")
        check = modellib.MaskRCNN("inference", config_from_weights(args.out), logs)
        check.load_weights(args.out, by_name=True)
        image = np.zeros((64, 64, 3), np.uint8)
        check.detect([image])
    size = os.path.getsize(args.out) / 2**20
    print(f"{args.out}: {size:.1f} MB, epoch {model.epoch}, "
          f"OBJECT_DIAMETER {config.OBJECT_DIAMETER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
