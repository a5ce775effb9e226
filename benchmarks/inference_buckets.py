"""What shape buckets cost at inference under a compiling backend (JAX): compilations, their
seconds, and the steady seconds per image, for each ``--steps`` value (never asserts; README
"Other backends" quotes it).

Under JAX every new input shape compiles the detection stage again, so ``detect`` pads each
molded image to a multiple of ``Config.INFERENCE_SHAPE_STEP`` (:func:`mrcnn.execution.image_bucket`)
and the mask head's rows to a power of two. A larger step means fewer shapes and so fewer
compilations, but more padding to convolve, and detections near the padded edge change (the
accuracy side is measured with ``nucleus evaluate --set INFERENCE_SHAPE_STEP=N``).

For each step a fresh model (shipped weights) detects every image of the subset once. JAX
reports each XLA compilation and its seconds (``jax.monitoring``); those of at least half a
second are counted as compilations (the rest are the small kernels of eager array glue), and
their seconds summed. Steady seconds per image: the median over the images that compiled
nothing.

    KERAS_BACKEND=jax python benchmarks/inference_buckets.py --dataset ~/.cache/dsb2018 \\
        --subset val --steps 64 256
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import keras  # noqa: E402
from tqdm import tqdm  # noqa: E402

from mrcnn import execution  # noqa: E402
from mrcnn.model import MaskRCNN  # noqa: E402
from nucleus.dataset import NucleusDataset  # noqa: E402
from nucleus.inference.nucleus_model import SHIPPED_WEIGHTS, config_from_weights  # noqa: E402


def measure(step: int, dataset: NucleusDataset, weights: str, limit: int | None) -> dict:
    """Detect every image once with a fresh model whose bucket step is ``step``."""
    config = config_from_weights(weights, inference=True,
                                 overrides={"INFERENCE_SHAPE_STEP": step})
    model = MaskRCNN("inference", config, model_dir="/tmp")
    model.load_weights(weights, by_name=True)
    compiles: list[float] = []
    listening = keras.backend.backend() == "jax"
    if listening:
        import jax   # here: JAX backend only (an optional extra)

        def listener(event: str, duration: float, **kwargs) -> None:
            if event == "/jax/core/compile/backend_compile_duration":
                compiles.append(duration)

        jax.monitoring.register_event_duration_secs_listener(listener)
    seen_shapes = set()
    rows = []
    ids = list(dataset.image_ids)[:limit]
    try:
        for image_id in tqdm(ids, desc=f"step {step}", unit="image"):
            image = dataset.load_image(image_id)
            molded, _, _ = model.mold_inputs([image])
            shape = execution.image_bucket(*molded[0].shape[:2], step=step)
            seen_shapes.add(shape)
            before = len(compiles)
            start = time.perf_counter()
            model.detect([image])
            seconds = time.perf_counter() - start
            big = [d for d in compiles[before:] if d >= 0.5]
            rows.append({"molded": list(molded[0].shape[:2]), "bucket": list(shape),
                         "padding": 1 - molded[0].shape[0] * molded[0].shape[1]
                         / (shape[0] * shape[1]),
                         "compilations": len(big), "compile_seconds": sum(big),
                         "seconds": seconds})
    finally:
        if listening:
            jax.monitoring.unregister_event_duration_listener(listener)
    steady = [r["seconds"] for r in rows if not r["compilations"]]
    median = statistics.median(steady) if steady else 0.0
    return {"step": step, "images": len(rows), "molded_shapes": len({tuple(r["molded"])
                                                                     for r in rows}),
            "buckets": len(seen_shapes),
            "compilations": sum(r["compilations"] for r in rows),
            "compile_seconds": sum(r["compile_seconds"] for r in rows),
            "steady_seconds_per_image": median,
            "mean_padding": statistics.fmean(r["padding"] for r in rows),
            "total_seconds": sum(r["seconds"] for r in rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default=None, help="dataset folder (default: the sample)")
    parser.add_argument("--subset", default="val")
    parser.add_argument("--weights", default=SHIPPED_WEIGHTS)
    parser.add_argument("--steps", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--json", default=None, help="also write the figures here")
    opts = parser.parse_args(argv)
    dataset = NucleusDataset()
    dataset.load_nucleus(opts.dataset, opts.subset)
    dataset.prepare()
    results = [measure(step, dataset, opts.weights, opts.limit) for step in opts.steps]
    print(f"\nbackend {keras.backend.backend()}, {opts.subset}: {results[0]['images']} images, "
          f"{results[0]['molded_shapes']} molded shapes")
    print("| step | buckets | compilations | compile s | steady s/image | mean padding |"
          " total s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['step']} | {r['buckets']} | {r['compilations']} | "
              f"{r['compile_seconds']:.1f} | {r['steady_seconds_per_image']:.2f} | "
              f"{100 * r['mean_padding']:.0f}% | {r['total_seconds']:.1f} |")
    if opts.json:
        Path(opts.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
