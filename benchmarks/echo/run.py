"""Echo benchmark in the style of uvloop's vmbench: asyncio, uvloop, rloop, ferroloop.

    python benchmarks/echo/run.py --quick             # 1 round, short runs, ~2 min
    python benchmarks/echo/run.py                     # 3 rounds of 2 s runs
    python benchmarks/echo/run.py --concurrency 1,4,16 --taskset --json echo.json

Each measurement starts one echo server (servers.py: one loop, one mode) in a fresh
process on this interpreter, drives it with the Rust echo-client (N connections, each
a closed loop of send SIZE bytes / read them back) and stops it. The pure-Rust,
one-thread echo-server is measured the same way as the ceiling. Rounds interleave:
within a round all loops run one workload back to back, in an order rotated from
round to round, so drift of the machine is shared. Cells are medians over rounds.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time

from measure import CEILING, Settings, Workload, build_rust, measure
from report import (
    cpu_legend,
    disturbance,
    format_cpu,
    format_table,
    legend,
    si,
    size_label,
    summarize,
)
from servers import LOOPS, MODES

SIZES = (1024, 10 * 1024, 100 * 1024)


def available_loops(wanted: list[str]) -> list[str]:
    present = []
    for name in wanted:
        if importlib.util.find_spec(LOOPS[name]) is None:
            print(f"note: {name} is not importable, skipped", file=sys.stderr)
        else:
            present.append(name)
    return present


def workloads(modes, sizes, concurrencies) -> list[Workload]:
    return [Workload(m, s, c) for s, c, m in itertools.product(sizes, concurrencies, modes)]


def run_rounds(loops: list[str], plan: list[Workload], rounds: int, settings: Settings):
    """Every round: the ceiling, then every loop on each workload, loops rotated."""
    results = []
    for r in range(rounds):
        order = loops[r % len(loops) :] + loops[: r % len(loops)]
        for workload in plan:
            first_of_shape = workload.mode == plan[0].mode
            names = ([CEILING] if first_of_shape else []) + order
            for position, name in enumerate(names):
                outcome = measure(name, workload, settings)
                _progress(r, rounds, workload, name, outcome)
                mode = "-" if name == CEILING else workload.mode
                results.append(
                    {
                        "round": r,
                        "mode": mode,
                        "size": workload.size,
                        "concurrency": workload.concurrency,
                        "loop": name,
                        "position": position,
                        **outcome,
                    }
                )
    return results


def _progress(r: int, rounds: int, workload: Workload, name: str, outcome: dict) -> None:
    if "error" in outcome:
        shown = f"FAILED: {outcome['error']}"
    else:
        shown = f"{si(outcome['rps']):>6} req/s  client {outcome['client_cpu']:.2f}"
        if "server_cpu" in outcome:
            shown += f"  server {outcome['server_cpu']:.2f}"
        if outcome.get("cpu_busy"):
            shown += "  CPUs busy " + " ".join(f"{x:.2f}" for x in outcome["cpu_busy"])
    mode = "-" if name == CEILING else workload.mode
    print(
        f"[round {r + 1}/{rounds}] {mode:<16} {size_label(workload.size):>6} "
        f"c{workload.concurrency:<3} {name:<10} {shown}",
        file=sys.stderr,
        flush=True,
    )


def environment(loops: list[str], settings: Settings) -> dict:
    versions = {
        name: platform.python_version() if name == "asyncio" else importlib.metadata.version(name)
        for name in loops
    }
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "versions": versions,
        "transport": "unix" if settings.unix_dir else "tcp",
        "taskset": settings.taskset,
        "duration": settings.duration,
        "warmup": settings.warmup,
    }


def _list(parser, flag: str, text: str, known=None, cast=str) -> list:
    try:
        chosen = [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        parser.error(f"{flag}: cannot parse {text!r}")
    unknown = [item for item in chosen if known is not None and item not in known]
    if unknown or not chosen:
        parser.error(f"{flag}: unknown {unknown or 'empty list'}")
    return list(dict.fromkeys(chosen))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1 round of 0.5 s runs")
    parser.add_argument("--duration", type=float, help="measured seconds per run (default 2)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (default 0.5)")
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated modes")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="message bytes")
    parser.add_argument("--concurrency", default="1,4", help="connections (add 16: 1,4,16)")
    parser.add_argument("--unix", action="store_true", help="Unix sockets instead of TCP")
    parser.add_argument("--taskset", action="store_true", help="server on CPU 0, client on 1")
    parser.add_argument("--json", metavar="PATH", help="write raw results and summary here")
    args = parser.parse_args(argv)
    args.loops = _list(parser, "--loops", args.loops, LOOPS)
    args.modes = _list(parser, "--modes", args.modes, MODES)
    args.sizes = _list(parser, "--sizes", args.sizes, cast=int)
    args.concurrency = _list(parser, "--concurrency", args.concurrency, cast=int)
    if args.rounds is None:
        args.rounds = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 0.5 if args.quick else 2.0
    if args.warmup is None:
        args.warmup = 0.2 if args.quick else 0.5
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        parser.error("need --rounds >= 1, --duration > 0, --warmup >= 0")
    if args.taskset and (shutil.which("taskset") is None or not {0, 1} <= os.sched_getaffinity(0)):
        parser.error("--taskset needs the taskset command and CPUs 0 and 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    loops = available_loops(args.loops)
    if not loops:
        print("no selected loop is importable", file=sys.stderr)
        return 1
    build_rust()
    plan = workloads(args.modes, args.sizes, args.concurrency)
    with tempfile.TemporaryDirectory(prefix="echo-bench-") as tmp:
        settings = Settings(args.duration, args.warmup, tmp if args.unix else None, args.taskset)
        env = environment(loops, settings)
        started = time.perf_counter()
        results = run_rounds(loops, plan, args.rounds, settings)
        wall = time.perf_counter() - started
    summary = summarize(results, loops, plan)
    report(env, summary, loops, args.rounds, wall)
    warning = disturbance(results)
    if warning:
        print("\n" + warning)
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"environment": env, "results": results, "summary": summary}, out, indent=1)
    return 0


def report(env: dict, summary: dict, loops: list[str], rounds: int, wall: float) -> None:
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    pinned = ", taskset" if env["taskset"] else ""
    print(f"\n{platform.python_implementation()} {platform.python_version()}; {versions}")
    print(
        f"{env['transport']}{pinned}; {rounds} round(s) of {env['duration']:g}s runs after "
        f"{env['warmup']:g}s warm-up; wall {wall:.0f}s\n"
    )
    print(format_table(summary, loops))
    print("\n" + legend(env["taskset"]))
    print("\n" + cpu_legend(env["taskset"]))
    print(format_cpu(summary, env["taskset"]))
    failures = [
        f"  {name} on {row['mode']} {size_label(row['size'])} c{row['concurrency']}: {error}"
        for row in summary["rows"]
        for name, cell in row["loops"].items()
        for error in cell["errors"]
    ] + [
        f"  {CEILING} on {size_label(cell['size'])} c{cell['concurrency']}: {error}"
        for cell in summary["ceiling"]
        for error in cell["errors"]
    ]
    if failures:
        print("\nfailures:\n" + "\n".join(failures))


if __name__ == "__main__":
    sys.exit(main())
