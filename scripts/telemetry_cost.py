"""What ferroloop's telemetry costs: callgrind instruction counts of the
loop-internals benchmark (benchmarks/loop_internals.py) per operation, for a
build without the telemetry code and for the current build, with stats only
and with slow-callback reports on. benchmarks/README.md (*Telemetry cost*)
has the figures and how the baseline build is made.

    python scripts/telemetry_cost.py --baseline /tmp/venv-base/bin/python \\
        --python .venv/bin/python [--div 10] [--jobs 2]

Method: each workload runs in the benchmark's own child mode (a warm-up of
n/10, then n operations) at two sizes, n and 2n; the difference is the cost
of 1.1 n operations, so interpreter start-up, imports and loop creation
cancel out. Only the loop's thread is counted, less the poller's path
(`Poller::wait`): the loop skips `epoll_wait` while less than 250 us passed
since the last one, so under callgrind (~50x slower) it polls far more often
per operation than it does natively, and by how much depends on each run's
speed; that was the one noisy term (up to 0.9% between two runs of the same
build). The slow-callback watchdog thread is counted separately (`+wd`).
The reports' figures are an upper bound: under callgrind a 100 ms threshold
acts like ~2 ms natively (the watchdog wakes more often per operation, and a
long step may really be reported and logged).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "benchmarks" / "loop_internals.py"
WORKLOADS = {
    "call_soon": 200_000,
    "call_later": 100_000,
    "tasks_gather": 100_000,
    "sleep0_pingpong": 100_000,
    "future_pingpong": 50_000,
    "sock_echo": 50_000,
}
REPORTS = {"FERROLOOP_SLOW_CALLBACK_MS": "100"}


def count(out_dir: Path, tag: str, python: str, env: dict, workload: str, n: int):
    """(loop thread less the poller, all other threads) instructions."""
    prefix = out_dir / tag
    cmd = ["valgrind", "--tool=callgrind", "--separate-threads=yes"]
    cmd += [f"--callgrind-out-file={prefix}.%p", python, str(BENCH)]
    cmd += ["--child", "ferroloop", "--jobs", f"{workload}={n}", "--timeout", "3000"]
    run_env = {**os.environ, "PYTHONHASHSEED": "0", **env}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=run_env, check=False)
    if proc.returncode:
        raise RuntimeError(f"{tag}: {proc.stderr[-2000:]}")
    main = others = 0
    for path in out_dir.glob(f"{tag}.*-*"):
        text = path.read_text()
        total = int(re.search(r"^summary: (\d+)", text, re.MULTILINE).group(1))
        if path.name.endswith("-01"):
            main = total - _poller(path)
        else:
            others += total
    return main, others


def _poller(path: Path) -> int:
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    hits = [
        int(m.group(1).replace(",", ""))
        for line in out.splitlines()
        if "_ferroloop::poller::Poller::wait" in line and (m := re.match(r"\s*([\d,]+)", line))
    ]
    return max(hits, default=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, help="python with ferroloop minus telemetry")
    parser.add_argument("--python", default=sys.executable, help="python with the current build")
    parser.add_argument("--div", type=int, default=10, help="n = full size / DIV (default 10)")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    configs = {
        "baseline": (args.baseline, {}),
        "stats": (args.python, {}),
        "stats+reports": (args.python, REPORTS),
    }
    sizes = {w: (full // args.div) - (full // args.div) % 2 for w, full in WORKLOADS.items()}
    jobs = [(c, w, k * sizes[w]) for w in WORKLOADS for c in configs for k in (1, 2)]
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        out = Path(tmp)

        def one(job):
            c, w, n = job
            python, env = configs[c]
            return count(out, f"{c}-{w}-{n}", python, env, w, n)

        results = dict(zip(jobs, pool.map(one, jobs), strict=True))
    print(f"{'workload':16} {'baseline':>9} {'stats':>16} {'stats+reports':>16} {'+wd':>6}")
    for w, n in sizes.items():
        per_op = {}
        for c in configs:
            (m2, o2), (m1, o1) = results[(c, w, 2 * n)], results[(c, w, n)]
            per_op[c] = ((m2 - m1) / (1.1 * n), (o2 - o1) / (1.1 * n))
        base = per_op["baseline"][0]
        cells = [f"{per_op[c][0]:8.0f} ({per_op[c][0] / base - 1:+.2%})" for c in configs]
        print(f"{w:16} {base:9.0f} {cells[1]:>16} {cells[2]:>16} {per_op['stats+reports'][1]:6.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
