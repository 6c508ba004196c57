"""Instructions per operation of the loop-internals workloads, on every loop (callgrind).

    python benchmarks/instructions.py                      # the default workloads, every loop
    python benchmarks/instructions.py --loops zuvloop,ferroloop --workloads call_soon
    python benchmarks/instructions.py --annotate ferroloop:future_pingpong   # where they go
    python benchmarks/instructions.py --loops ferroloop --baseline DIR   # before/after

Timings on a shared 2-core VM move by 10-30% from run to run; instruction counts do
not. For each (loop, workload) this runs loop_internals.py's workload twice under
`valgrind --tool=callgrind`, with N and 2N operations, each after the same warm-up,
and reports (instructions(2N) - instructions(N)) / N: the cost of one more
operation, start-up and imports subtracted. Counts include CPython's own work
(the coroutine frames, the C Task and Future), which is the same for every loop,
so differences between loops are the loops' own. They do not count cache misses
or system-call time: sock_echo and the subprocess workloads are left out by
default for that reason.

--annotate LOOP:WORKLOAD keeps the 2N run's callgrind file and prints
callgrind_annotate's inclusive top functions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loop_internals  # (benchmarks)
import loops  # (benchmarks)

DEFAULT_WORKLOADS = ("call_soon", "future_pingpong", "sleep0_pingpong", "tasks_gather", "queue")
DEFAULT_OPS = 20_000
COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def child(module_name: str, workload_name: str, n: int) -> None:
    """Run one workload once after a warm-up (the part both runs share)."""
    factory = importlib.import_module(module_name).new_event_loop
    workload = loop_internals.WORKLOADS[workload_name]
    loop_internals._run_once(factory, workload, 2_000)
    loop_internals._run_once(factory, workload, n)


def count(loop_name: str, workload: str, n: int, out_file: str = "/dev/null") -> int:
    """Instructions of one child process (every thread) under callgrind."""
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    command += [sys.executable, __file__, "--child", loops.module(loop_name), workload, str(n)]
    # A fixed hash seed: the same dict and set layouts in both runs.
    env = dict(loops.child_env(loop_name) or os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(command, check=False, capture_output=True, text=True, env=env)
    found = COLLECTED.findall(proc.stderr)
    if proc.returncode or not found:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"{loop_name} {workload}: exit {proc.returncode}: {' | '.join(tail)}")
    return sum(int(x) for x in found)


def per_op(loop_name: str, workload: str, n: int) -> float:
    return (count(loop_name, workload, 2 * n) - count(loop_name, workload, n)) / n


def annotate(loop_name: str, workload: str, n: int, keep: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = keep or os.path.join(tmp, "callgrind.out")
        total = count(loop_name, workload, 2 * n, out)
        print(f"{loop_name} {workload} ({2 * n} ops + warm-up): {total:,} instructions")
        for inclusive in ("yes", "no"):
            subprocess.run(
                ["callgrind_annotate", f"--inclusive={inclusive}", "--threshold=90", out],
                check=False,
            )


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--child"]:
        child(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default=",".join(loops.LOOPS), help="comma-separated loops")
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--ops", type=int, default=DEFAULT_OPS, help="N (the runs do N and 2N)")
    parser.add_argument("--annotate", metavar="LOOP:WORKLOAD")
    parser.add_argument("--keep", metavar="FILE", help="--annotate: keep the callgrind file here")
    parser.add_argument("--json", help="write the counts here")
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help=f"also count the ferroloop installed in DIR (pip install --target), as {loops.BASE}",
    )
    args = parser.parse_args(argv)
    if args.baseline:
        loops.set_baseline(args.baseline)
        if loops.BASE not in args.loops.split(","):
            args.loops += f",{loops.BASE}"
    if args.annotate:
        loop_name, workload = args.annotate.split(":")
        annotate(loop_name, workload, args.ops, args.keep)
        return 0
    workloads = args.workloads.split(",")
    names = []
    for name in args.loops.split(","):
        where = loops.locate(name)
        if "error" in where:
            print(f"note: {name} is not installed, skipped ({where['error']})", file=sys.stderr)
        else:
            names.append(name)
    counts: dict[str, dict[str, float | str]] = {w: {} for w in workloads}
    for workload in workloads:
        for name in names:
            try:
                counts[workload][name] = per_op(name, workload, args.ops)
            except RuntimeError as error:
                counts[workload][name] = f"failed: {error}"
            print(f"{workload:16} {name:10} {counts[workload][name]}", file=sys.stderr)
    print(f"instructions per operation, CPython {platform.python_version()}, N={args.ops}")
    header = ["workload", *names]
    rows = [header]
    for workload in workloads:
        cells = counts[workload]
        rows.append(
            [workload, *(f"{v:,.0f}" if isinstance(v, float) else "failed" for v in cells.values())]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for i, row in enumerate(rows):
        print(
            "  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
        )
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if args.json:
        Path(args.json).write_text(json.dumps(counts, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
