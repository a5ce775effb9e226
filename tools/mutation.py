"""Mutation testing of the modules that decide scores and files, with a kill rate per module.

mutmut 3 (``pip install -e ".[mutation]"``) plants one small bug at a time (a ``>`` for a ``>=``,
a ``+ 1`` dropped, an argument left out) in the modules listed under ``[mutmut]`` in setup.cfg
and runs the tests that reach the changed function; a mutant that no test notices "survives".
Results stay in ``mutants/`` (git-ignored), so a second run only tries what is new.

    python tools/mutation.py                    # run every untried mutant, then the table
    python tools/mutation.py --fresh            # forget earlier results first (after test changes)
    python tools/mutation.py "nucleus.inference.tta*"   # only some mutants (mutmut patterns)
    python tools/mutation.py --retry            # try again the mutants not killed last time
    python tools/mutation.py --report           # the table of what is in mutants/, no run
    python tools/mutation.py --report --show    # ... and the diff of every survivor

Run it from the repository root. It is CPU work for minutes (README, "Mutation testing").
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

# mutmut's exit codes per mutant (mutmut/stats.py), folded into the columns of the table.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests",
          34: "skipped", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout",
          255: "timeout", None: "not run"}
COLUMNS = ("killed", "timeout", "survived", "no tests", "not run", "other")


def status(exit_code: int | None) -> str:
    """The table column of one mutant's exit code."""
    return STATUS.get(exit_code, "other")


def module_of(mutant: str) -> str:
    """``nucleus.formats.rle.x_parse_rle__mutmut_3`` -> ``nucleus.formats.rle`` (methods carry
    no dot)."""
    return mutant.rsplit(".", 1)[0]


def read_results(mutants_dir: Path) -> dict[str, int | None]:
    """{mutant name: exit code} from every ``*.meta`` file mutmut left in ``mutants_dir``."""
    results: dict[str, int | None] = {}
    for meta in sorted(mutants_dir.rglob("*.py.meta")):
        with open(meta, encoding="utf-8") as f:
            results.update(json.load(f)["exit_code_by_key"])
    return results


def kill_rate(counts: Counter) -> float:
    """Share of the mutants tried that a test noticed (a timeout counts as noticed)."""
    tried = sum(counts.values()) - counts["not run"]
    return (counts["killed"] + counts["timeout"]) / tried if tried else float("nan")


def summarize(results: dict[str, int | None]) -> dict[str, Counter]:
    """Counts per column for each module, and for all of them under ``"total"``."""
    table: dict[str, Counter] = {}
    for mutant, code in results.items():
        table.setdefault(module_of(mutant), Counter())[status(code)] += 1
    table = dict(sorted(table.items()))
    table["total"] = sum(table.values(), Counter())
    return table


def markdown_table(table: dict[str, Counter]) -> str:
    """The table as README prints it."""
    lines = ["| module | mutants | " + " | ".join(COLUMNS) + " | kill rate |",
             "|---|" + "---:|" * (len(COLUMNS) + 2)]
    for module, counts in table.items():
        cells = [str(counts[c]) for c in COLUMNS]
        lines.append(f"| {module} | {sum(counts.values())} | " + " | ".join(cells)
                     + f" | {100 * kill_rate(counts):.1f}% |")
    return "\n".join(lines)


def survivors(results: dict[str, int | None]) -> list[str]:
    """Mutants no test noticed (survived, or reached by no test), in name order."""
    return sorted(m for m, code in results.items() if status(code) in ("survived", "no tests"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("patterns", nargs="*", help="mutmut mutant name patterns (default: all)")
    parser.add_argument("--report", action="store_true", help="only print the table")
    parser.add_argument("--show", action="store_true", help="print the diff of each survivor")
    parser.add_argument("--fresh", action="store_true", help="delete mutants/ before running")
    parser.add_argument("--retry", action="store_true",
                        help="run again only the mutants the last run did not kill")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                        help="mutants tried at once (default: one per CPU)")
    args = parser.parse_args(argv)
    if not Path("setup.cfg").is_file() or not Path("nucleus").is_dir():
        parser.error("run this from the repository root (where setup.cfg is)")
    mutmut = shutil.which("mutmut")
    if mutmut is None:
        parser.error('mutmut is not installed: pip install -e ".[mutation]"')
    if args.retry:
        args.patterns = args.patterns + survivors(read_results(Path("mutants")))
        if not args.patterns:
            parser.error("--retry: no survivors in mutants/ to try again")
    if not args.report:
        if args.fresh:
            shutil.rmtree("mutants", ignore_errors=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
        command = [mutmut, "run", "--max-children", str(args.max_children), *args.patterns]
        if shutil.which("nice"):
            command = ["nice", "-n", "15", *command]  # a background job: let others go first
        done = subprocess.run(command, env=env)
        if done.returncode:
            return done.returncode
    results = read_results(Path("mutants"))
    if not results:
        print("no results in mutants/: run without --report first", file=sys.stderr)
        return 1
    print(markdown_table(summarize(results)))
    left = survivors(results)
    print(f"\n{len(left)} mutant(s) not killed" + (":" if left else ""), flush=True)
    for mutant in left:
        if args.show:
            subprocess.run([mutmut, "show", mutant])
        else:
            print("  " + mutant)
    return 0


if __name__ == "__main__":
    sys.exit(main())
