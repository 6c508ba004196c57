"""The benchmark suite: every workload on every installed loop, interleaved, one command.

    python benchmarks/suite.py --quick        # a subset, 2 rounds of short runs: ~1 minute
    python benchmarks/suite.py                # every workload, 3 rounds: ~15-20 minutes
    python benchmarks/suite.py --loops uvloop,ferroloop --workloads echo/protocol,http
    python benchmarks/suite.py --list         # the workloads (table lines) and exit
    python benchmarks/suite.py --workloads echo/protocol --echo-concurrency 16,64

Sections (each line of the table is one workload; --workloads takes sections, line
names, or their prefixes, comma-separated):
  internals  loop_internals.py's WORKLOADS (call_soon, timers, gather, ping-pongs,
             sock_echo, ...): ops/s, one subprocess per (round, loop), as that script
  echo       echo/servers.py in modes sock/streams/protocol/bufferedprotocol, 1/10/100 KiB,
             1/4/16 connections, loaded by the Rust echo-client; the pure-Rust echo-server
             measured the same way is the ceiling: req/s
  tls        the same TLS 1.3 echo (protocol mode, 1 and 100 KiB, 4 and 16 connections),
             when echo/measure.py supports it (Settings.tls)
  http       HTTP/1.1 keep-alive: http/server.py (httptools Protocol server, aiohttp web
             server) loaded by the Rust http-client (or wrk with --http-client wrk): req/s,
             and p99 latency; the Rust http-server is the ceiling

Method: rounds interleave the loops. Every round runs every line on every loop, in a
loop order rotated from round to round, so the machine's drift is shared by all loops.
Each echo/HTTP measurement is a fresh server process (pinned to CPU 0 with taskset when
possible, the client on CPU 1); each internals (round, loop) a fresh subprocess. Cells
are the median over rounds with min-max; ratios are ratios of medians (> 1: ferroloop
faster). Progress goes to stderr; the table to stdout; the raw results, the summary and
the environment to --json, the chart of ratios to --plot (by default
benchmarks/results/suite.json and suite.png; an empty PATH skips the file).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "echo"), str(HERE / "http")]

import cpustat  # (benchmarks/echo)
import httpload  # (benchmarks/http)
import loop_internals  # (benchmarks)
import report as echo_report  # (benchmarks/echo)
from measure import CEILING, SERVERS, Settings, build_rust, taskset_possible
from measure import Workload as EchoWorkload
from measure import measure as echo_measure
from servers import MODES as ECHO_MODES

LOOPS = tuple(loop_internals.LOOPS)  # asyncio, uvloop, rloop, ferroloop
REFERENCE, BASELINE, STOCK = "ferroloop", "uvloop", "asyncio"
SECTIONS = ("internals", "echo", "tls", "http")
KIB = 1024
RESULTS = HERE / "results"  # default place of the JSON and the plot (git-ignored)
GOAL_GEOMEAN, GOAL_CEILING = 1.3, 0.85  # issue #7
GOAL_LINE = "echo/protocol 1KiB c16"  # the line whose share of the ceiling is a goal

# Full and quick plans.
ECHO_SIZES, ECHO_CONCURRENCY = (1 * KIB, 10 * KIB, 100 * KIB), (1, 4, 16)
QUICK_ECHO = [(mode, 1 * KIB, 16) for mode in ECHO_MODES]
TLS_FULL = [("protocol", size, c) for size in (1 * KIB, 100 * KIB) for c in (4, 16)]
TLS_QUICK = [("protocol", 1 * KIB, 16)]
HTTP_CONCURRENCY, HTTP_QUICK_CONCURRENCY = (1, 16, 64), (16,)


@dataclass(frozen=True)
class Line:
    """One line of the table: a workload, measured on every loop."""

    section: str
    name: str
    spec: object  # internals: ops per run; echo/tls: EchoWorkload; http: httpload.Workload

    @property
    def label(self) -> str:
        return f"{self.section}/{self.name}"

    @property
    def shape(self) -> str | None:
        """The ceiling this line is compared with: the pure-Rust server, same size
        and concurrency (echo, tls) or same concurrency (http)."""
        if self.section in ("echo", "tls"):
            return f"{size_label(self.spec.size)} c{self.spec.concurrency}"
        if self.section == "http":
            return f"c{self.spec.concurrency}"
        return None

    @property
    def ceiling_label(self) -> str | None:
        return f"{self.section}/ceiling {self.shape}" if self.shape else None


def size_label(size: int) -> str:
    return echo_report.size_label(size)


def tls_missing() -> str | None:
    """Why the tls section cannot run here, or None when it can."""
    if "tls" not in {field.name for field in dataclasses.fields(Settings)}:
        return "echo/measure.py has no TLS support (Settings.tls) yet"
    if "--tls" not in SERVERS.read_text():
        return "echo/servers.py has no --tls option yet"
    if shutil.which("openssl") is None:
        return "the openssl command is missing (it makes the certificates)"
    return None


def make_plan(
    quick: bool, with_tls: bool, echo_concurrency=None, http_concurrency=None
) -> list[Line]:
    """Every line of a full or quick run; the concurrency lists, when given,
    replace the echo (and TLS) or HTTP defaults."""
    lines = [
        Line("internals", name, workload.size // (10 if quick else 1))
        for name, workload in loop_internals.WORKLOADS.items()
    ]

    def echo(section, shapes):
        for mode, size, concurrency in shapes:
            spec = EchoWorkload(mode, size, concurrency)
            lines.append(Line(section, f"{mode} {size_label(size)} c{concurrency}", spec))

    def with_concurrency(shapes):
        if not echo_concurrency:
            return shapes
        sizes = dict.fromkeys(size for _, size, _ in shapes)
        modes = dict.fromkeys(mode for mode, _, _ in shapes)
        kept = {(mode, size) for mode, size, _ in shapes}
        return [
            (mode, size, c)
            for size in sizes
            for c in echo_concurrency
            for mode in modes
            if (mode, size) in kept
        ]

    full_echo = [
        (mode, size, c) for size in ECHO_SIZES for c in ECHO_CONCURRENCY for mode in ECHO_MODES
    ]
    echo("echo", with_concurrency(QUICK_ECHO if quick else full_echo))
    if with_tls:
        echo("tls", with_concurrency(TLS_QUICK if quick else TLS_FULL))
    default = HTTP_QUICK_CONCURRENCY if quick else HTTP_CONCURRENCY
    for concurrency in http_concurrency or default:
        for mode in httpload.MODES:
            workload = httpload.Workload(mode, concurrency)
            lines.append(Line("http", f"{mode} c{concurrency}", workload))
    return lines


def select(plan: list[Line], wanted: list[str] | None) -> list[Line]:
    """The lines matching any of `wanted`: a section, a label, or a label's prefix
    ending at a '/' or a space ('echo/protocol', 'echo/protocol 1KiB')."""
    if not wanted:
        return plan

    def matches(line: Line, item: str) -> bool:
        label = line.label
        return label == item or line.section == item or label.startswith((item + "/", item + " "))

    unknown = [item for item in wanted if not any(matches(line, item) for line in plan)]
    if unknown:
        sys.exit(f"--workloads: nothing matches {unknown}; see --list")
    return [line for line in plan if any(matches(line, item) for item in wanted)]


# ----------------------------------------------------------------------------- running


class Runner:
    """Runs the plan round by round and keeps every raw result."""

    def __init__(self, loops, plan, rounds, settings, tls_settings, http_client, timeout, retries):
        self.loops, self.plan, self.rounds = loops, plan, rounds
        self.settings, self.tls_settings = settings, tls_settings
        self.http_client, self.timeout = http_client, timeout
        self.retries = retries
        self.results: list[dict] = []
        # Disturbed attempts that a later, less disturbed one replaced.
        self.discarded: list[dict] = []
        self.done = 0
        ceilings = {line.ceiling_label for line in plan if line.shape}
        self.total = rounds * (len(plan) * len(loops) + len(ceilings))
        self.started = time.perf_counter()

    def run(self) -> None:
        for r in range(self.rounds):
            order = self.loops[r % len(self.loops) :] + self.loops[: r % len(self.loops)]
            self._internals(r, order)
            ceilings = set()
            for line in self.plan:
                if line.section == "internals":
                    continue
                if line.ceiling_label not in ceilings:  # the ceiling first, once per shape
                    ceilings.add(line.ceiling_label)
                    self._measure(r, line, CEILING, 0)
                for position, loop_name in enumerate(order, 1):
                    self._measure(r, line, loop_name, position)

    def _internals(self, r: int, order: list[str]) -> None:
        jobs = [(line.name, line.spec) for line in self.plan if line.section == "internals"]
        if not jobs:
            return
        for position, loop_name in enumerate(order):
            progress(f"round {r + 1}/{self.rounds}  internals on {loop_name} ...")
            outcomes = loop_internals.measure(loop_name, jobs, self.timeout)
            for name, n in jobs:
                outcome = {"workload": name, "n": n, **outcomes[name]}
                self._record(r, f"internals/{name}", loop_name, position, outcome, "ops_per_s")

    def _measure(self, r: int, line: Line, name: str, position: int) -> None:
        """One echo, TLS or HTTP run of `name` (a loop or the ceiling).

        A run during which other processes or the hypervisor took more than
        `DISTURBED` cores is repeated, up to `retries` times, whichever loop it
        was; the least disturbed attempt counts and the others go to
        `discarded`."""
        label = line.ceiling_label if name == CEILING else line.label
        attempts = []
        for attempt in range(self.retries + 1):
            if line.section == "http":
                outcome = httpload.measure(name, line.spec, self.settings, self.http_client)
            else:
                settings = self.tls_settings if line.section == "tls" else self.settings
                outcome = echo_measure(name, line.spec, settings)
            attempts.append(outcome)
            taken = echo_report.taken(outcome)
            if "error" in outcome or taken <= echo_report.DISTURBED or attempt == self.retries:
                break
            progress(f"  {label} on {name}: others took {taken:.2f} cores, measuring again")
        kept = min(attempts, key=echo_report.taken)
        self.discarded += [
            {"round": r, "line": label, "loop": name, **outcome}
            for outcome in attempts
            if outcome is not kept
        ]
        self._record(r, label, name, position, kept, "rps")

    def _record(self, r, label, loop_name, position, outcome, rate_key) -> None:
        record = {"round": r, "line": label, "loop": loop_name, "position": position, **outcome}
        if rate_key in outcome:
            record["rate"] = outcome[rate_key]
        self.results.append(record)
        self.done += 1
        if "error" in outcome:
            shown = f"FAILED: {outcome['error']}"
        else:
            shown = f"{si(record['rate']):>6}/s"
            if "p99_us" in outcome:
                shown += f"  p99 {outcome['p99_us'] / 1000:.2f}ms"
            if "server_cpu" in outcome:
                shown += f"  server {outcome['server_cpu']:.2f}"
            if "client_load" in outcome:
                shown += f"  client {outcome['client_load']:.2f}"
        elapsed = time.perf_counter() - self.started
        left = elapsed / self.done * (self.total - self.done)
        progress(
            f"[{self.done:>4}/{self.total} {elapsed:4.0f}s, ~{left:.0f}s left] "
            f"round {r + 1}/{self.rounds}  {label:<30} {loop_name:<10} {shown}"
        )


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def si(value: float) -> str:
    return echo_report.si(value)


# --------------------------------------------------------------------------- summary


def internals_cell(runs: list[dict]) -> dict:
    """loop_internals' median/min/max cell of one (workload, loop)."""
    if not runs:
        return {"ok": 0, "failed": 0, "errors": []}
    workload, loop_name = runs[0]["workload"], runs[0]["loop"]
    return loop_internals.summarize(runs, [loop_name], [workload])[workload][loop_name]


def summarize(results: list[dict], loops: list[str], plan: list[Line]) -> dict:
    def runs(label, loop_name):
        return [x for x in results if x["line"] == label and x["loop"] == loop_name]

    lines = []
    for line in plan:
        cell = internals_cell if line.section == "internals" else echo_report.cell
        entry = {
            "line": line.label,
            "section": line.section,
            "unit": "ops/s" if line.section == "internals" else "req/s",
            "loops": {name: cell(runs(line.label, name)) for name in loops},
        }
        if line.shape:
            entry["ceiling"] = echo_report.cell(runs(line.ceiling_label, CEILING))
        if line.section == "http":
            entry["p99_us"] = {
                name: statistics.median(values)
                for name in loops
                if (values := [x["p99_us"] for x in runs(line.label, name) if "p99_us" in x])
            }
        if line.section != "internals":
            # The server's CPU time per request: steadier than the rate when the
            # machine is shared (a server waiting for a CPU uses none).
            cells = [(name, line.label) for name in loops]
            if line.shape:
                cells.append((CEILING, line.ceiling_label))
            entry["server_us_per_request"] = {
                name: statistics.median(values)
                for name, label in cells
                if (
                    values := [
                        x["server_cpu"] / x["rps"] * 1e6
                        for x in runs(label, name)
                        if x.get("server_cpu") and x.get("rps")
                    ]
                )
            }
        for other in (BASELINE, STOCK):
            entry[f"{REFERENCE}/{other}"] = ratio(entry["loops"], REFERENCE, other)
        ceiling = entry.get("ceiling", {})
        reference = entry["loops"].get(REFERENCE, {})
        if ceiling.get("ok") and reference.get("ok"):
            entry[f"{REFERENCE}/ceiling"] = reference["median"] / ceiling["median"]
        lines.append(entry)
    return {"lines": lines, **headline(lines)}


def ratio(cells: dict, reference: str, other: str) -> float | None:
    a, b = cells.get(reference, {}), cells.get(other, {})
    return a["median"] / b["median"] if a.get("ok") and b.get("ok") else None


def geomean(values) -> float:
    return math.exp(statistics.fmean(math.log(value) for value in values))


def headline(lines: list[dict]) -> dict:
    """The figures issue #7's goals are about."""
    key = f"{REFERENCE}/{BASELINE}"
    ratios = [(entry["line"], entry[key]) for entry in lines if entry[key] is not None]
    out = {
        "lines_compared": len(ratios),
        "by_section": {
            section: sum(label.startswith(section + "/") for label, _ in ratios)
            for section in SECTIONS
        },
        "below_1": [[label, value] for label, value in ratios if value < 1.0],
    }
    if ratios:
        out["geomean"] = geomean(value for _, value in ratios)
    # Issue #4's figure: echo lines where uvloop is below 90% of the ceiling.
    open_lines = [
        entry[key]
        for entry in lines
        if entry["section"] == "echo"
        and entry[key] is not None
        and entry.get("ceiling", {}).get("ok")
        and entry["loops"][BASELINE]["median"] < 0.9 * entry["ceiling"]["median"]
    ]
    if open_lines:
        out["echo_geomean_below_ceiling"] = [geomean(open_lines), len(open_lines)]
    cpu = [
        entry["server_us_per_request"][BASELINE] / entry["server_us_per_request"][REFERENCE]
        for entry in lines
        if {BASELINE, REFERENCE} <= entry.get("server_us_per_request", {}).keys()
    ]
    if cpu:
        out["server_cpu_per_request"] = [geomean(cpu), len(cpu)]
    goal = next((entry for entry in lines if entry["line"] == GOAL_LINE), None)
    if goal and goal.get("ceiling", {}).get("ok"):
        out["goal_line"] = {
            "line": GOAL_LINE,
            "ceiling": goal["ceiling"],
            "share": {
                name: cell["median"] / goal["ceiling"]["median"]
                for name, cell in goal["loops"].items()
                if cell.get("ok")
            },
            "cpu": {
                name: {k: cell[k] for k in cell if k.endswith(("_median", "_max"))}
                for name, cell in [*goal["loops"].items(), (CEILING, goal["ceiling"])]
            },
            "server_us_per_request": goal.get("server_us_per_request", {}),
        }
    return out


# ----------------------------------------------------------------------------- report


def cell_text(cell: dict) -> str:
    if not cell.get("ok"):
        return "FAILED" if cell.get("failed") else "-"
    text = f"{si(cell['median'])} ({si(cell['min'])}-{si(cell['max'])})"
    if cell.get("client_load_max", 0) > echo_report.SATURATED:
        text += "*"
    if cell.get("disturbed"):
        text += "~"
    return text + ("!" if cell.get("failed") else "")


def columns(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def format_table(summary: dict, loops: list[str]) -> str:
    ratios = [other for other in (BASELINE, STOCK) if other in loops and REFERENCE in loops]
    with_ceiling = any("ceiling" in entry for entry in summary["lines"])
    header = ["workload", *loops, *["ceiling"] * with_ceiling]
    header += [f"{REFERENCE}/{o}" for o in ratios]
    header += [f"{REFERENCE}/ceiling"] * (with_ceiling and REFERENCE in loops)
    latency = [name for name in (BASELINE, REFERENCE) if name in loops]
    with_p99 = any("p99_us" in entry for entry in summary["lines"])
    if with_p99:
        header.append("p99 ms (" + " / ".join(latency) + ")")
    rows = [header]
    for entry in summary["lines"]:
        row = [entry["line"], *(cell_text(entry["loops"][name]) for name in loops)]
        if with_ceiling:
            row.append(cell_text(entry["ceiling"]) if "ceiling" in entry else "")
        for other in ratios:
            value = entry[f"{REFERENCE}/{other}"]
            row.append(f"{value:.2f}x" if value is not None else "n/a")
        if with_ceiling and REFERENCE in loops:
            share = entry.get(f"{REFERENCE}/ceiling")
            row.append(f"{share:.0%}" if share is not None else "")
        if with_p99:
            p99 = entry.get("p99_us", {})
            shown = [f"{p99[name] / 1000:.2f}" if name in p99 else "-" for name in latency]
            row.append(" / ".join(shown) if "p99_us" in entry else "")
        rows.append(row)
    return columns(rows)


def format_headline(summary: dict, loops: list[str]) -> str:
    out = []
    if REFERENCE not in loops or BASELINE not in loops:
        return f"(no {REFERENCE}/{BASELINE} summary: both loops are needed)"
    n, sections = summary["lines_compared"], summary["by_section"]
    parts = ", ".join(f"{s} {k}" for s, k in sections.items() if k)
    if "geomean" in summary:
        met = "met" if summary["geomean"] >= GOAL_GEOMEAN else "not met"
        out.append(
            f"{REFERENCE}/{BASELINE} geometric mean over {n} lines ({parts}): "
            f"{summary['geomean']:.3f}x  (goal >= {GOAL_GEOMEAN}x: {met})"
        )
    if "echo_geomean_below_ceiling" in summary:
        value, count = summary["echo_geomean_below_ceiling"]
        out.append(
            f"{REFERENCE}/{BASELINE} geometric mean over the {count} echo lines where "
            f"{BASELINE} is below 90% of the ceiling: {value:.3f}x"
        )
    if "server_cpu_per_request" in summary:
        value, count = summary["server_cpu_per_request"]
        out.append(
            f"server CPU per request, {BASELINE}/{REFERENCE}, geometric mean over {count} "
            f"echo/tls/http lines: {value:.3f}x (> 1: {REFERENCE}'s server uses less)"
        )
    below = summary["below_1"]
    out.append(
        f"lines below 1.0x: {len(below)} of {n}"
        + (": " + ", ".join(f"{label} {value:.3f}x" for label, value in below) if below else "")
    )
    goal = summary.get("goal_line")
    if goal:
        share = goal["share"]
        others = ", ".join(
            f"{name} {value:.0%}" for name, value in share.items() if name != REFERENCE
        )
        text = f"{GOAL_LINE}: {REFERENCE} at "
        text += f"{share[REFERENCE]:.0%}" if REFERENCE in share else "n/a"
        ceiling_rate = si(goal["ceiling"]["median"])
        text += f" of the ceiling (the ceiling: {ceiling_rate} req/s; goal >= {GOAL_CEILING:.0%}"
        if REFERENCE in share:
            text += ": " + ("met" if share[REFERENCE] >= GOAL_CEILING else "not met")
        out.append(text + f"); {others}")
        out.append(bottleneck(goal))
        per_request = efficiency(goal)
        if per_request:  # (none without the ceiling's CPU figures)
            out.append(per_request)
    return "\n".join(out)


def bottleneck(goal: dict) -> str:
    """Who was busy on the goal line: the server's process, the client's side."""
    lines = []
    for name in (REFERENCE, BASELINE, CEILING):
        cpu = goal["cpu"].get(name)
        if not cpu or "server_cpu_median" not in cpu:
            continue
        server, client = cpu["server_cpu_median"], cpu.get("client_load_max", 0)
        other = cpu.get("other_cpu_median", 0) + cpu.get("steal_median", 0)
        saturated = echo_report.SATURATED
        if other > echo_report.DISTURBED:
            verdict = f"disturbed: other processes and steal took {other:.2f} cores, rerun"
        elif server >= saturated and client < saturated:
            verdict = "server-bound"
        elif client >= saturated and server < saturated:
            verdict = "client-bound: a lower bound for the server"
        elif client >= saturated:
            verdict = "both saturated (co-limited)"
        else:
            verdict = "neither saturated (waiting on each other, or disturbed)"
        lines.append(
            f"  {name}: server process {server:.2f} cores, client side max {client:.2f}: {verdict}"
        )
    return "  CPU on that line (median over rounds; 1.00 = a core):\n" + "\n".join(lines)


def efficiency(goal: dict) -> str:
    """The goal line by server CPU per request: the ceiling's over each loop's is
    the loop's share of the ceiling's capacity per core, a figure that does not
    depend on whether the client kept the ceiling busy."""
    per_request = goal.get("server_us_per_request", {})
    ceiling = per_request.get(CEILING)
    if not ceiling:
        return ""
    shares = ", ".join(
        f"{name} {us:.1f} us ({ceiling / us:.0%})"
        for name, us in per_request.items()
        if name != CEILING
    )
    return (
        f"  server CPU per request (share of the ceiling's requests per core-second): "
        f"ceiling {ceiling:.1f} us; {shares}"
    )


def failures(summary: dict) -> str:
    notes = []
    for entry in summary["lines"]:
        cells = [*entry["loops"].items()]
        if "ceiling" in entry:
            cells.append((CEILING, entry["ceiling"]))
        for name, cell in cells:
            notes += [f"  {name} on {entry['line']}: {error}" for error in cell.get("errors", [])]
    return "failures:\n" + "\n".join(dict.fromkeys(notes)) if notes else ""


LEGEND = (
    "Cells: median over rounds (min-max); internals in operations/s, echo, tls and http in\n"
    "requests/s. ceiling: the pure-Rust one-thread server (echo-server; http-server for\n"
    "http lines), same size and concurrency. * = the client's side was over 90% busy in\n"
    "some round (client-bound: a lower bound for the server); ~ = other processes or steal\n"
    "took over 0.15 cores in some round; ! = some rounds failed. Ratios: ratio of medians,\n"
    "> 1 means ferroloop is faster. p99: median over rounds of each run's 99th percentile\n"
    "latency (every loop's in the JSON)."
)


# ------------------------------------------------------------------------------- plot


def plot(summary: dict, loops: list[str], path: str, title: str) -> str:
    """A PNG of every loop's median relative to the baseline loop, per line."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    base = BASELINE if BASELINE in loops else loops[0]
    shown = [name for name in loops if name != base] + ["ceiling"]
    entries = [e for e in summary["lines"] if e["loops"].get(base, {}).get("ok")]
    if not entries:
        return "plot skipped: no line has a result for the baseline loop"
    colors = {"asyncio": "#9e9e9e", "uvloop": "#1f77b4", "rloop": "#ff7f0e"}
    colors.update({"ferroloop": "#d62728", "ceiling": "#2ca02c"})
    height = 0.8 / len(shown)
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.16 * len(entries) * len(shown)))
    values = []
    for k, name in enumerate(shown):
        ys, xs = [], []
        for i, entry in enumerate(entries):
            cell = entry.get("ceiling", {}) if name == "ceiling" else entry["loops"].get(name, {})
            if cell.get("ok"):
                ys.append(i + (k - (len(shown) - 1) / 2) * height)
                xs.append(cell["median"] / entry["loops"][base]["median"])
        if not xs:
            continue
        # Bars grow from 1.0 (the baseline) to the ratio, right when faster.
        ax.barh(ys, [x - 1 for x in xs], left=1, height=height, label=name, color=colors.get(name))
        values += xs
        if name == REFERENCE:
            for y, x in zip(ys, xs):
                ax.annotate(
                    f"{x:.2f}x",
                    (x, y),
                    xytext=(3 if x >= 1 else -3, 0),
                    textcoords="offset points",
                    ha="left" if x >= 1 else "right",
                    va="center",
                    fontsize=7,
                )
    ax.axvline(1.0, color="black", linewidth=1, label=f"{base} (1x)")
    ax.set_xscale("log")
    ax.set_xlim(min(values + [1]) / 1.3, max(values + [1]) * 1.3)
    label = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x")
    ax.xaxis.set_major_formatter(label)
    ax.xaxis.set_minor_formatter(label)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_yticks(range(len(entries)), [e["line"] for e in entries], fontsize=8)
    ax.set_ylim(len(entries) - 0.5, -0.5)  # first line on top, no margins
    ax.set_xlabel(f"median throughput relative to {base} (log scale; > 1: faster than {base})")
    ax.set_title(title, fontsize=9)
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"plot written to {path}"


# ------------------------------------------------------------------------------- main


def environment(loops: list[str], args, settings: Settings) -> dict:
    env = loop_internals.environment(loops)
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    env.update(
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        commit=commit,
        cpus=os.cpu_count(),
        load_average=os.getloadavg(),
        taskset=settings.taskset,
        duration=settings.duration,
        warmup=settings.warmup,
        rounds=args.rounds,
        retries=args.retries,
        quick=args.quick,
        http_client=args.http_client,
    )
    return env


def machine_state(seconds: float = 0.5) -> dict:
    """Cores busy (softirq included) and stolen by the hypervisor over `seconds`
    while the suite itself idles: what else is using the machine."""
    before = cpustat.snapshot(os.getpid()).cpus
    time.sleep(seconds)
    after = cpustat.snapshot(os.getpid()).cpus
    deltas = [[x1 - x0 for x0, x1 in zip(c0, c1)] for c0, c1 in zip(before, after)]
    if not deltas or not all(d[1] for d in deltas):
        return {}
    per_core = statistics.fmean(d[1] for d in deltas)
    busy = sum(d[0] for d in deltas) / per_core
    steal = sum(d[3] for d in deltas) / per_core
    return {"busy_cores": round(busy, 2), "steal_cores": round(steal, 2)}


def state_note(when: str, state: dict) -> str | None:
    taken = state.get("busy_cores", 0) + state.get("steal_cores", 0)
    if taken <= echo_report.DISTURBED:
        return None
    return (
        f"note: {when}, other processes kept {state['busy_cores']:.2f} cores busy and the "
        f"hypervisor stole {state['steal_cores']:.2f}: expect noisy figures"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset, 2 rounds, short runs")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, or 2 with --quick)")
    parser.add_argument("--loops", default=",".join(LOOPS), help="comma-separated loops")
    parser.add_argument("--workloads", help="comma-separated sections/lines (see --list)")
    parser.add_argument("--list", action="store_true", help="print the plan's lines and exit")
    parser.add_argument(
        "--json", metavar="PATH", default=str(RESULTS / "suite.json"), help="raw results ('': none)"
    )
    parser.add_argument(
        "--plot", metavar="PATH", default=str(RESULTS / "suite.png"), help="PNG chart ('': none)"
    )
    parser.add_argument(
        "--echo-concurrency", help="connections of echo/tls lines, e.g. 16,64 (1,4,16; quick 16)"
    )
    parser.add_argument("--http-concurrency", help="connections of http lines (1,16,64; quick 16)")
    parser.add_argument("--duration", type=float, help="seconds per echo/HTTP run (1; 0.4)")
    parser.add_argument("--warmup", type=float, help="seconds before measuring (0.3; 0.15)")
    parser.add_argument(
        "--no-taskset", action="store_true", help="do not pin server (CPU 0) and client (CPU 1)"
    )
    parser.add_argument(
        "--http-client", choices=httpload.CLIENTS, default="rust", help="HTTP load generator"
    )
    parser.add_argument("--timeout", type=float, default=120, help="per internals workload")
    parser.add_argument(
        "--retries",
        type=int,
        help="measure an echo/TLS/HTTP run again, up to this many times, while other "
        f"processes or steal took over {echo_report.DISTURBED} cores (2; quick 0)",
    )
    args = parser.parse_args(argv)
    args.loops = [name.strip() for name in args.loops.split(",") if name.strip()]
    unknown = [name for name in args.loops if name not in LOOPS]
    if unknown or not args.loops:
        parser.error(f"--loops: unknown {unknown or 'empty list'}; choose from {', '.join(LOOPS)}")
    for name in ("echo_concurrency", "http_concurrency"):
        text = getattr(args, name)
        if text is not None:
            try:
                values = [int(item) for item in text.split(",") if item.strip()]
            except ValueError:
                values = []
            if not values or min(values) < 1:
                parser.error(f"--{name.replace('_', '-')}: positive integers, comma-separated")
            setattr(args, name, list(dict.fromkeys(values)))
    if args.workloads is not None:
        args.workloads = [item.strip() for item in args.workloads.split(",") if item.strip()]
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.retries is None:
        args.retries = 0 if args.quick else 2
    if args.duration is None:
        args.duration = 0.4 if args.quick else 1.0
    if args.warmup is None:
        args.warmup = 0.15 if args.quick else 0.3
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0 or args.retries < 0:
        parser.error("need --rounds >= 1, --duration > 0, --warmup >= 0, --retries >= 0")
    if args.http_client == "wrk" and not httpload.wrk_available():
        parser.error("--http-client wrk: wrk is not installed (Debian: apt-get install wrk)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    missing_tls = tls_missing()
    plan = make_plan(args.quick, missing_tls is None, args.echo_concurrency, args.http_concurrency)
    plan = select(plan, args.workloads)
    if args.list:
        print("\n".join(line.label for line in plan))
        return 0
    if missing_tls:
        progress(f"note: tls section skipped: {missing_tls}")
    loops = loop_internals.available_loops(args.loops)
    if not loops:
        progress("no selected loop is installed")
        return 1
    if any(line.section != "internals" for line in plan):
        try:
            build_rust()
        except (SystemExit, subprocess.CalledProcessError) as error:
            why = error.code if isinstance(error, SystemExit) else f"cargo failed: {error}"
            progress(f"note: echo, tls and http sections skipped: {why}")
            plan = [line for line in plan if line.section == "internals"]
            if not plan:
                return 1
    taskset = not args.no_taskset and taskset_possible()
    if not taskset and not args.no_taskset:
        progress("note: no taskset or fewer than 2 CPUs: server and client are not pinned")
    settings = Settings(args.duration, args.warmup, None, taskset)  # TCP on 127.0.0.1
    tls_settings = dataclasses.replace(settings, tls=True) if not missing_tls else None
    env = environment(loops, args, settings)
    env["machine_before"] = machine_state()
    note = state_note("before the run", env["machine_before"])
    if note:
        progress(note)
    runner = Runner(
        loops,
        plan,
        args.rounds,
        settings,
        tls_settings,
        args.http_client,
        args.timeout,
        args.retries,
    )
    progress(
        f"{len(plan)} workloads x {len(loops)} loops, {args.rounds} round(s): {runner.total} runs"
    )
    interrupted = False
    try:
        runner.run()
    except KeyboardInterrupt:
        interrupted = True
        progress("interrupted: reporting what was measured")
    wall = time.perf_counter() - runner.started
    env["machine_after"] = machine_state()
    env["wall_seconds"] = round(wall)
    summary = summarize(runner.results, loops, plan)
    title = (
        f"ferroloop suite, {env['date'][:10]}: {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs; "
        f"{args.rounds} round(s){' (quick)' if args.quick else ''}"
    )
    versions = ", ".join(f"{name} {version}" for name, version in env["versions"].items())
    print(f"\n{title}; {versions}")
    pinned = "server on CPU 0, client on CPU 1" if taskset else "not pinned"
    print(
        f"echo/http runs of {args.duration:g}s after {args.warmup:g}s warm-up, {pinned}, "
        f"http client {args.http_client}; wall {wall:.0f}s"
        + ("; INTERRUPTED" if interrupted else "")
        + "\n"
    )
    print(format_table(summary, loops))
    print("\n" + LEGEND + "\n")
    print(format_headline(summary, loops))
    text = failures(summary)
    if text:
        print("\n" + text)
    warning = echo_report.disturbance(runner.results)
    if runner.discarded:
        print(
            f"\n{len(runner.discarded)} disturbed run(s) measured again (--retries {args.retries}); "
            "the least disturbed attempt of each counts"
        )
    notes = [state_note(f"{when} the run", env[f"machine_{when}"]) for when in ("before", "after")]
    for text in [warning, *notes]:
        if text:
            print("\n" + text)
    outputs = []
    for path in (args.json, args.plot):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(
                {
                    "environment": env,
                    "plan": [line.label for line in plan],
                    "results": runner.results,
                    "discarded": runner.discarded,
                    "summary": summary,
                },
                out,
                indent=1,
            )
        outputs.append(f"results written to {args.json}")
    if args.plot:
        outputs.append(plot(summary, loops, args.plot, title))
    print("\n" + "; ".join(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
