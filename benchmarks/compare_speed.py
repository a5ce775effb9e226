"""Old code against new, in one run: ``benchmarks/speed.py`` of an earlier commit (TensorFlow)
and of this checkout (TensorFlow and JAX), float32 and mixed bfloat16, ResNet-50.

Why: the claim "the TensorFlow backend is no slower than before" needs both versions measured
on the same machine in the same conditions. Each measurement is its own process (so peak RSS is
its own, and one backend's leftovers cannot slow another); the runs are interleaved, and the
order is reversed in every other round (ABBA), so drift in the machine's speed hits old and new
alike. Each run times the training step with all layers and with the heads trainable and
``detect`` (``--no-stages``: the stage breakdown is a separate ``speed.py`` run), writes its
JSON and log under OUT, and the end prints one markdown table (also in OUT/summary.md, with
every figure in OUT/summary.json).

Usage::

    python benchmarks/compare_speed.py OUT [--before /tmp/before] [--commit 3604c84]
        [--rounds 2] [--repeats 3] [--warmup 1] [--size 512] [--runs RUN ...] [--dry-run]

The earlier commit is checked out as a git worktree at ``--before`` (created when missing). The
old script imports its own ``mrcnn`` and ``nucleus`` (checked after every run). Run it on an
otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMMIT = "3604c84"
DEFAULT_BEFORE = "/tmp/before"

# What each run reports, as the speed.py JSON names it (the old script lacks the *_first keys).
COLUMNS = (("step_all", "train step all (s)", 3), ("step_heads", "heads (s)", 3),
           ("detect", "detect (s)", 3), ("peak_rss_mb", "peak RSS (MB)", 0),
           ("step_all_first", "train step all, first call (s)", 1),
           ("detect_first", "detect, first call (s)", 1))


@dataclass(frozen=True)
class Run:
    code: str        # "old" or "new"
    backend: str     # "tensorflow" or "jax"
    precision: str   # "float32" or "bfloat16"

    @property
    def name(self) -> str:
        return f"{self.code}-{'tf' if self.backend == 'tensorflow' else self.backend}-" \
               f"{self.precision}"


RUNS = (Run("old", "tensorflow", "float32"), Run("new", "tensorflow", "float32"),
        Run("old", "tensorflow", "bfloat16"), Run("new", "tensorflow", "bfloat16"),
        Run("new", "jax", "float32"), Run("new", "jax", "bfloat16"))
RUN_NAMES = tuple(r.name for r in RUNS)


def schedule(runs: list[Run], rounds: int) -> list[tuple[int, Run]]:
    """(round, run) in the order to measure: the runs as listed (old and new of one precision
    next to each other), reversed every other round."""
    order = []
    for r in range(rounds):
        order += [(r, run) for run in (runs if r % 2 == 0 else runs[::-1])]
    return order


def ensure_worktree(path: Path, commit: str) -> str:
    """The full hash of ``commit`` checked out at ``path`` (a git worktree of this repository,
    added when ``path`` does not exist)."""
    want = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", commit + "^{commit}"],
                          capture_output=True, text=True, check=True).stdout.strip()
    if not path.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), want],
                       check=True, capture_output=True, text=True)
    have = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    if have != want:
        raise SystemExit(f"{path} has {have[:10]} checked out, not {commit} ({want[:10]}): "
                         "remove it (git worktree remove) or pass another --before")
    return want


def code_root(run: Run, before: Path) -> Path:
    return before if run.code == "old" else ROOT


# Runs the script as ``python benchmarks/speed.py`` would, then says where mrcnn came from.
_LAUNCH = ("import runpy, sys; script = sys.argv[1]; sys.argv = sys.argv[1:]; "
           "runpy.run_path(script, run_name='__main__'); import mrcnn; "
           "print('MRCNN_FROM', mrcnn.__file__)")


def command(run: Run, before: Path, json_path: Path, opts: argparse.Namespace) -> list[str]:
    root = code_root(run, before)
    cmd = [sys.executable, "-c", _LAUNCH, str(root / "benchmarks" / "speed.py"),
           "--backbones", "resnet50", "--layers", "all", "heads", "--no-stages",
           "--repeats", str(opts.repeats), "--warmup", str(opts.warmup),
           "--size", str(opts.size), "--json", str(json_path)]
    if run.precision == "bfloat16":
        cmd.append("--mixed-precision")
    return cmd


def environment(run: Run, before: Path) -> dict:
    root = code_root(run, before)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND")}
    env.update(KERAS_BACKEND=run.backend, PYTHONPATH=str(root), TF_CPP_MIN_LOG_LEVEL="2")
    return env


def measure(run: Run, round_: int, before: Path, out: Path,
            opts: argparse.Namespace) -> dict:
    """One speed.py process; its figures (or why there are none) and its wall time."""
    stem = f"{run.name}-round{round_ + 1}"
    json_path, log_path = out / f"{stem}.json", out / f"{stem}.log"
    cmd = command(run, before, json_path, opts)
    root = code_root(run, before)
    record = {"run": run.name, "code": run.code, "backend": run.backend,
              "precision": run.precision, "round": round_ + 1, "json": json_path.name,
              "log": log_path.name, "load_average_before": list(os.getloadavg())}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        log.write(" ".join(cmd) + "\n\n")
        log.flush()
        proc = subprocess.run(cmd, cwd=root, env=environment(run, before), stdout=log,
                              stderr=subprocess.STDOUT, text=True)
    record["wall_s"] = time.perf_counter() - start
    lines = log_path.read_text().splitlines()
    source = [line.split(" ", 1)[1] for line in lines if line.startswith("MRCNN_FROM ")]
    if proc.returncode != 0 or not json_path.exists():
        record["error"] = f"exit status {proc.returncode}; last lines: " + " | ".join(lines[-3:])
        return record
    if not source or not Path(source[-1]).resolve().is_relative_to(root.resolve()):
        record["error"] = f"imported mrcnn from {source[-1] if source else '?'}, not {root}"
        return record
    results = json.loads(json_path.read_text())
    figures = results["backbones"]["resnet50"]
    record["figures"] = {key: figures.get(key) for key, _, _ in COLUMNS}
    record["versions"] = {k: results["machine"].get(k)
                          for k in ("tensorflow", "keras", "jax", "backend")}
    return record


def _cell(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    mid = f"{statistics.median(values):.{digits}f}"
    if len(values) > 1:
        mid += f" ({min(values):.{digits}f}-{max(values):.{digits}f})"
    return mid


def summary_table(records: list[dict], commit: str, runs: list[Run]) -> str:
    """One markdown row per code/backend/precision: the median over rounds (with the range)."""
    header = ["code / backend / precision"] + [title for _, title, _ in COLUMNS] + ["rounds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        mine = [r for r in records if r["run"] == run.name]
        good = [r for r in mine if "figures" in r]
        label = f"{'old (' + commit[:7] + ')' if run.code == 'old' else 'new'} / " \
                f"{run.backend} / {run.precision}"
        cells = [label]
        for key, _, digits in COLUMNS:
            cells.append(_cell([r["figures"][key] for r in good
                                if r["figures"].get(key) is not None], digits))
        failed = len(mine) - len(good)
        cells.append(f"{len(good)}" + (f" ({failed} failed, see logs)" if failed else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios(records: list[dict]) -> list[str]:
    """New TensorFlow over old TensorFlow, per precision and measurement (medians)."""
    def median(run: str, key: str) -> float | None:
        values = [r["figures"][key] for r in records if r["run"] == run and "figures" in r
                  and r["figures"].get(key) is not None]
        return statistics.median(values) if values else None

    lines = []
    for precision in ("float32", "bfloat16"):
        parts = []
        for key, title, _ in COLUMNS[:3]:
            old, new = median(f"old-tf-{precision}", key), median(f"new-tf-{precision}", key)
            if old and new:
                parts.append(f"{title.replace(' (s)', '')} {new / old:.2f}")
        if parts:
            lines.append(f"New / old on TensorFlow, {precision}: " + ", ".join(parts)
                         + " (below 1: the new code is faster).")
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder for the JSON, logs and summary")
    parser.add_argument("--before", type=Path, default=Path(DEFAULT_BEFORE),
                        help="worktree of the old commit (created when missing)")
    parser.add_argument("--commit", default=DEFAULT_COMMIT, help="the old commit")
    parser.add_argument("--rounds", type=int, default=2,
                        help="measurements of each run, order reversed every other round")
    parser.add_argument("--repeats", type=int, default=3, help="speed.py --repeats")
    parser.add_argument("--warmup", type=int, default=1, help="speed.py --warmup")
    parser.add_argument("--size", type=int, default=512, help="speed.py --size")
    parser.add_argument("--runs", nargs="+", choices=RUN_NAMES, default=list(RUN_NAMES),
                        help="which runs (default: all)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the commands in order and stop")
    opts = parser.parse_args(argv)
    if opts.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {opts.rounds}")
    return opts


def main(argv: list[str] | None = None) -> list[dict]:
    opts = parse_args(argv)
    runs = [r for r in RUNS if r.name in opts.runs]
    order = schedule(runs, opts.rounds)
    before = opts.before.resolve()
    if opts.dry_run:
        for round_, run in order:
            stem = opts.out / f"{run.name}-round{round_ + 1}.json"
            print(f"KERAS_BACKEND={run.backend} PYTHONPATH={code_root(run, before)} python "
                  + " ".join(command(run, before, stem, opts)[3:]))
        return []
    commit = ensure_worktree(before, opts.commit) if any(r.code == "old" for r in runs) \
        else opts.commit
    opts.out.mkdir(parents=True, exist_ok=True)
    new_head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()
    records = []
    started = time.perf_counter()
    for i, (round_, run) in enumerate(order, 1):
        print(f"[{i}/{len(order)}] round {round_ + 1}: {run.name} ...", flush=True)
        record = measure(run, round_, before, opts.out, opts)
        records.append(record)
        status = record.get("error") or ", ".join(
            f"{k} {v:.2f}" for k, v in record["figures"].items() if v is not None)
        print(f"    {record['wall_s']:.0f} s: {status}", flush=True)
        summary = {"old_commit": commit, "new_head": new_head, "settings": vars(opts) | {
            "out": str(opts.out), "before": str(before)}, "records": records,
            "total_s": time.perf_counter() - started}
        (opts.out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    table = summary_table(records, commit, runs)
    text = "\n".join([
        f"# Speed, old ({commit[:7]}) and new ({new_head[:7]}) code, ResNet-50 "
        f"{opts.size}x{opts.size}, batch 1",
        "",
        f"Median over {opts.rounds} round(s) (range in brackets); each figure is speed.py's "
        f"median of {opts.repeats} timed call(s) after {opts.warmup} warm-up call(s), in its own "
        f"process. Total {time.perf_counter() - started:.0f} s.",
        "", table, "", *ratios(records)])
    (opts.out / "summary.md").write_text(text + "\n")
    print()
    print(text)
    return records


if __name__ == "__main__":
    main()
