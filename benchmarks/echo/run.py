"""Echo benchmark in the style of uvloop's vmbench: asyncio, uvloop, rloop, ferroloop.

    python benchmarks/echo/run.py --quick             # 1 round, short runs, ~2 min
    python benchmarks/echo/run.py                     # 3 rounds of 2 s runs
    python benchmarks/echo/run.py --concurrency 1,4,16 --taskset --json echo.json
    python benchmarks/echo/run.py --tls --concurrency 1,4,16 --taskset   # TLS 1.3 echo

Each measurement starts one echo server (servers.py: one loop, one mode) in a fresh
process on this interpreter, drives it with the Rust echo-client (N connections, each
a closed loop of send SIZE bytes / read them back) and stops it. The pure-Rust,
one-thread echo-server is measured the same way as the ceiling. Rounds interleave:
within a round all loops run one workload back to back, in an order rotated from
round to round, so drift of the machine is shared. Cells are medians over rounds.

With --tls, client and servers speak TLS 1.3 (one cipher suite, the client's only
offer), over certificates made for the run (measure.tls_files); the modes default
to streams and protocol, the sizes to 1 KiB and 100 KiB.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import itertools
import json
import platform
import statistics
import sys
import tempfile
import time

from measure import CEILING, Settings, Workload, build_rust, measure, taskset_possible
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
TLS_MODES = ("streams", "protocol")  # the default modes with --tls (sock has no TLS)
TLS_SIZES = (1024, 100 * 1024)


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
        "transport": ("unix" if settings.unix_dir else "tcp") + ("+tls" if settings.tls else ""),
        "taskset": settings.taskset,
        "duration": settings.duration,
        "warmup": settings.warmup,
    }


def cpu_per_request(results: list[dict], loops: list[str], plan: list[Workload]) -> list[dict]:
    """The server's CPU time (user + system) per round trip, median over rounds:
    steadier than the rate on a shared machine, where a server waits for a CPU."""
    rows = []
    for w in plan:
        cells = {}
        for name in [CEILING, *loops]:
            values = [
                x["server_cpu"] / x["rps"] * 1e6
                for x in results
                if x["loop"] == name
                and x["size"] == w.size
                and x["concurrency"] == w.concurrency
                and x["mode"] in (w.mode, "-")
                and x.get("server_cpu") is not None
                and x.get("rps")
            ]
            if values:
                cells[name] = statistics.median(values)
        rows.append({"mode": w.mode, "size": w.size, "concurrency": w.concurrency, **cells})
    return rows


def format_cpu_per_request(rows: list[dict], loops: list[str]) -> str:
    names = [CEILING, *loops]
    ratio = "uvloop" in loops and "ferroloop" in loops
    header = ["mode", "size", "conc", *names] + (["uvloop/ferroloop"] if ratio else [])
    lines = [header]
    for row in rows:
        line = [row["mode"], size_label(row["size"]), str(row["concurrency"])]
        line += [f"{row[n]:.1f}" if n in row else "-" for n in names]
        if ratio:
            both = "uvloop" in row and "ferroloop" in row
            line.append(f"{row['uvloop'] / row['ferroloop']:.2f}x" if both else "-")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths)) for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    return (
        "\nserver CPU per round trip (us, user + system, median over rounds; "
        "uvloop/ferroloop > 1: ferroloop uses less)\n" + "\n".join(t.rstrip() for t in text)
    )


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
    parser.add_argument("--modes", help="comma-separated modes (default: all; with --tls: "
                        + ",".join(TLS_MODES) + ")")  # fmt: skip
    parser.add_argument("--sizes", help="message bytes (default "
                        f"{','.join(map(str, SIZES))}; with --tls {','.join(map(str, TLS_SIZES))})")  # fmt: skip
    parser.add_argument("--concurrency", default="1,4", help="connections (add 16: 1,4,16)")
    parser.add_argument("--unix", action="store_true", help="Unix sockets instead of TCP")
    parser.add_argument("--taskset", action="store_true", help="server on CPU 0, client on 1")
    parser.add_argument("--tls", action="store_true", help="TLS 1.3 between client and server")
    parser.add_argument("--json", metavar="PATH", help="write raw results and summary here")
    args = parser.parse_args(argv)
    if args.modes is None:
        args.modes = ",".join(TLS_MODES if args.tls else MODES)
    if args.sizes is None:
        args.sizes = ",".join(map(str, TLS_SIZES if args.tls else SIZES))
    args.loops = _list(parser, "--loops", args.loops, LOOPS)
    args.modes = _list(parser, "--modes", args.modes, MODES)
    if args.tls and "sock" in args.modes:
        parser.error("--tls: the sock mode has no TLS")
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
    if args.taskset and not taskset_possible():
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
        settings = Settings(
            args.duration, args.warmup, tmp if args.unix else None, args.taskset, args.tls
        )
        env = environment(loops, settings)
        started = time.perf_counter()
        results = run_rounds(loops, plan, args.rounds, settings)
        wall = time.perf_counter() - started
    ciphers = sorted({x["tls_cipher"] for x in results if "tls_cipher" in x})
    if args.tls:
        env["tls_ciphers"] = ciphers
    summary = summarize(results, loops, plan)
    summary["server_us_per_request"] = cpu_per_request(results, loops, plan)
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
    if "tls_ciphers" in env:
        print(f"TLS 1.3, cipher suite {', '.join(env['tls_ciphers']) or '?'} (every loop)\n")
    print(format_table(summary, loops))
    print("\n" + legend(env["taskset"]))
    print(format_cpu_per_request(summary["server_us_per_request"], loops))
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
