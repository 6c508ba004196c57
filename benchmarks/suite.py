"""The benchmark suite: every workload on every installed loop, interleaved, one command.

    python benchmarks/suite.py --quick        # a subset, 2 rounds of short runs: ~1 minute
    python benchmarks/suite.py                # every workload, 3 rounds: ~15-20 minutes
    python benchmarks/suite.py --loops uvloop,ferroloop --workloads echo/protocol,http
    python benchmarks/suite.py --list         # the workloads (table lines) and exit
    python benchmarks/suite.py --workloads echo,tls --echo-modes protocol --echo-sizes 1k,100k \
        --echo-concurrency 16,64 --unix --cpu   # echo shapes of your choice, CPU tables
    python benchmarks/suite.py --loops ferroloop --baseline DIR   # before/after, see below

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

--baseline DIR also runs the ferroloop that `pip install --target DIR ferroloop-*.whl`
put in DIR, as the loop ferroloop-base: its children get DIR first on PYTHONPATH
(loops.py); the table adds the ratio ferroloop/ferroloop-base.

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
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "echo"), str(HERE / "http")]

import cpustat  # (benchmarks/echo)
import httpload  # (benchmarks/http)
import loop_internals  # (benchmarks)
import loops as registry  # (benchmarks)
import report  # (benchmarks)
from loops import BASE, CEILING
from measure import SERVERS, Settings, build_rust, taskset_possible
from measure import Workload as EchoWorkload
from measure import measure as echo_measure
from report import format_headline, format_table, si, size_label, summarize
from servers import MODES as ECHO_MODES

LOOPS = tuple(registry.LOOPS)  # asyncio, uvloop, rloop, rsloop, zuvloop, ferroloop
GOAL_LINE = report.GOAL_LINE  # echo/protocol 1KiB c16, whose share of the ceiling is a goal
KIB = 1024
RESULTS = HERE / "results"  # default place of the JSON and the plot (git-ignored)

# Full and quick plans: (modes, sizes, concurrencies) of the echo and TLS lines.
ECHO_FULL = (tuple(ECHO_MODES), (1 * KIB, 10 * KIB, 100 * KIB), (1, 4, 16))
ECHO_QUICK = (tuple(ECHO_MODES), (1 * KIB,), (16,))
TLS_FULL = (("protocol",), (1 * KIB, 100 * KIB), (4, 16))
TLS_QUICK = (("protocol",), (1 * KIB,), (16,))
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
    quick: bool,
    with_tls: bool,
    echo_concurrency=None,
    http_concurrency=None,
    echo_modes=None,
    echo_sizes=None,
) -> list[Line]:
    """Every line of a full or quick run; the lists, when given, replace the
    defaults: modes, sizes (bytes) and concurrencies of the echo and TLS lines
    (TLS leaves out `sock`, which has none), concurrencies of the HTTP lines."""
    lines = [
        Line("internals", name, workload.size // (10 if quick else 1))
        for name, workload in loop_internals.WORKLOADS.items()
    ]

    def echo(section, default):
        modes = echo_modes or default[0]
        if section == "tls":
            modes = [mode for mode in modes if mode != "sock"]
        for size in echo_sizes or default[1]:
            for concurrency in echo_concurrency or default[2]:
                for mode in modes:
                    spec = EchoWorkload(mode, size, concurrency)
                    name = f"{mode} {size_label(size)} c{concurrency}"
                    lines.append(Line(section, name, spec))

    echo("echo", ECHO_QUICK if quick else ECHO_FULL)
    if with_tls:
        echo("tls", TLS_QUICK if quick else TLS_FULL)
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
            taken = report.taken(outcome)
            if "error" in outcome or taken <= report.DISTURBED or attempt == self.retries:
                break
            progress(f"  {label} on {name}: others took {taken:.2f} cores, measuring again")
        kept = min(attempts, key=report.taken)
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
            f"round {r + 1}/{self.rounds}  {label:<30} {loop_name:<14} {shown}"
        )


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- main


def install_optional(wanted: list[str]) -> None:
    """pip-install the optional loops that are wanted and missing, from wheels only
    (rsloop's source build needs a nightly Rust; zuvloop has wheels for 3.14+ only).
    One that cannot be installed is skipped later, with locate's note."""
    for name in wanted:
        if name not in registry.OPTIONAL or "error" not in registry.locate(name):
            continue
        progress(f"{name}: installing from a wheel (pip install --only-binary :all: {name})")
        command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        proc = subprocess.run(
            [*command, "--only-binary", ":all:", name], check=False, capture_output=True, text=True
        )
        if proc.returncode:
            why = (proc.stderr.strip().splitlines() or ["pip failed"])[-1]
            progress(f"note: {name} has no wheel for this Python and platform ({why})")


def locate_loops(wanted: list[str]) -> dict[str, dict]:
    """{loop: {file, version}} of the loops a child can import (the others are
    skipped with a note); exits when the baseline does not import from its
    directory."""
    found = {}
    for name in wanted:
        where = registry.locate(name)
        if name == BASE:
            problem = registry.base_problem(where)
            if problem:
                sys.exit(f"--baseline: {problem}")
            progress(f"{BASE}: ferroloop {where['version']} from {where['file']}")
        if "error" in where:
            progress(f"note: {name} is not installed, skipped ({where['error']})")
        else:
            found[name] = where
    return found


def baseline_check(results: list[dict], env: dict) -> str:
    """Where the baseline's children imported ferroloop from (each result's
    loop_file, as the child said), for the header."""
    files = {x["loop_file"] for x in results if x["loop"] == BASE and "loop_file" in x}
    runs = sum(x["loop"] == BASE for x in results)
    text = f"{BASE}: ferroloop {env['versions'].get(BASE)} from {env['baseline']}"
    outside = sorted(f for f in files if not Path(f).resolve().is_relative_to(env["baseline"]))
    if outside:
        return f"{text}; WARNING: some of its runs imported ferroloop from {', '.join(outside)}"
    return f"{text}; its {runs} runs imported {', '.join(sorted(files)) or '?'}"


def environment(located: dict[str, dict], args, settings: Settings) -> dict:
    try:
        commit = subprocess.run(
            ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {
        "python": sys.version,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "versions": {name: where["version"] for name, where in located.items()},
        "loop_files": {name: where["file"] for name, where in located.items()},
        "baseline": str(Path(args.baseline).resolve()) if args.baseline else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "taskset": settings.taskset,
        "transport": "unix" if args.unix else "tcp",
        "duration": settings.duration,
        "warmup": settings.warmup,
        "rounds": args.rounds,
        "retries": args.retries,
        "quick": args.quick,
        "http_client": args.http_client,
    }


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


def _numbers(parser, flag: str, text: str, cast=int) -> list[int]:
    """A comma-separated list of positive numbers, without repeats."""
    try:
        values = [cast(item.strip()) for item in text.split(",") if item.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        parser.error(f"{flag}: positive integers, comma-separated")
    return list(dict.fromkeys(values))


def _size(text: str) -> int:
    """Bytes: 1024, 1k or 1KiB."""
    lowered = text.lower()
    for suffix in ("kib", "k"):
        if lowered.endswith(suffix):
            return int(lowered[: -len(suffix)]) * KIB
    return int(lowered)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="a subset, 2 rounds, short runs")
    add("--rounds", type=int, help="rounds (default 3, or 2 with --quick)")
    add("--loops", default=",".join(LOOPS), help="comma-separated loops")
    add(
        "--no-install",
        action="store_true",
        help=f"do not try to install the optional loops ({', '.join(registry.OPTIONAL)}) from wheels",
    )
    add("--workloads", help="comma-separated sections/lines (see --list)")
    add("--list", action="store_true", help="print the plan's lines and exit")
    add(
        "--baseline",
        metavar="DIR",
        help=f"also run an older ferroloop, installed with `pip install --target DIR "
        f"ferroloop-*.whl`, as the loop {BASE} (ratio ferroloop/{BASE})",
    )
    add(
        "--json", metavar="PATH", default=str(RESULTS / "suite.json"), help="raw results ('': none)"
    )
    add("--plot", metavar="PATH", default=str(RESULTS / "suite.png"), help="PNG chart ('': none)")
    add("--echo-modes", help=f"modes of echo/tls lines ({','.join(ECHO_MODES)}; tls: protocol)")
    add("--echo-sizes", help="message sizes of echo/tls lines: 1k,10k,100k (quick 1k); bytes or k")
    add("--echo-concurrency", help="connections of echo/tls lines, e.g. 16,64 (1,4,16; quick 16)")
    add("--http-concurrency", help="connections of http lines (1,16,64; quick 16)")
    add("--unix", action="store_true", help="echo/tls over Unix sockets instead of TCP")
    add("--duration", type=float, help="seconds per echo/HTTP run (1; 0.4)")
    add("--warmup", type=float, help="seconds before measuring (0.3; 0.15)")
    add("--no-taskset", action="store_true", help="do not pin server (CPU 0) and client (CPU 1)")
    add("--http-client", choices=httpload.CLIENTS, default="rust", help="HTTP load generator")
    add("--timeout", type=float, default=120, help="per internals workload")
    add(
        "--retries",
        type=int,
        help="measure an echo/TLS/HTTP run again, up to this many times, while other "
        f"processes or steal took over {report.DISTURBED} cores (2; quick 0)",
    )
    add("--cpu", action="store_true", help="also print the CPU tables (server us/request, ...)")
    args = parser.parse_args(argv)
    if args.baseline is not None:
        if not Path(args.baseline, "ferroloop").is_dir():
            parser.error(f"--baseline: no ferroloop/ in {args.baseline} (pip install --target)")
        registry.set_baseline(args.baseline)
    known = registry.names()
    args.loops = list(dict.fromkeys(name.strip() for name in args.loops.split(",") if name.strip()))
    unknown = [name for name in args.loops if name not in known]
    if unknown or not args.loops:
        parser.error(f"--loops: unknown {unknown or 'empty list'}; choose from {', '.join(known)}")
    if args.baseline is not None and BASE not in args.loops:
        args.loops.append(BASE)
    for name in ("echo_concurrency", "http_concurrency"):
        if getattr(args, name) is not None:
            flag = "--" + name.replace("_", "-")
            setattr(args, name, _numbers(parser, flag, getattr(args, name)))
    if args.echo_sizes is not None:
        args.echo_sizes = _numbers(parser, "--echo-sizes", args.echo_sizes, _size)
    if args.echo_modes is not None:
        chosen = {mode.strip() for mode in args.echo_modes.split(",") if mode.strip()}
        unknown = sorted(chosen - set(ECHO_MODES))
        if unknown or not chosen:
            parser.error(f"--echo-modes: unknown {unknown}; choose from {', '.join(ECHO_MODES)}")
        args.echo_modes = [mode for mode in ECHO_MODES if mode in chosen]
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
    plan = make_plan(
        args.quick,
        missing_tls is None,
        args.echo_concurrency,
        args.http_concurrency,
        args.echo_modes,
        args.echo_sizes,
    )
    plan = select(plan, args.workloads)
    if args.list:
        print("\n".join(line.label for line in plan))
        return 0
    if missing_tls:
        progress(f"note: tls section skipped: {missing_tls}")
    if not args.no_install:
        install_optional(args.loops)
    located = locate_loops(args.loops)
    loops = list(located)
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
    with tempfile.TemporaryDirectory(prefix="ferroloop-suite-") as unix_dir:
        # Echo and TLS over TCP on 127.0.0.1, or Unix sockets in unix_dir (httpload
        # ignores unix_dir: HTTP is over TCP).
        settings = Settings(args.duration, args.warmup, unix_dir if args.unix else None, taskset)
        tls_settings = dataclasses.replace(settings, tls=True) if not missing_tls else None
        env = environment(located, args, settings)
        env["machine_before"] = machine_state()
        note = report.state_note("before the run", env["machine_before"])
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
            f"{len(plan)} workloads x {len(loops)} loops, {args.rounds} round(s): "
            f"{runner.total} runs"
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
    env["tls_ciphers"] = sorted({x["tls_cipher"] for x in runner.results if "tls_cipher" in x})
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
        f"echo/tls over {'Unix sockets' if args.unix else 'TCP'}, "
        f"http client {args.http_client}; wall {wall:.0f}s"
        + ("; INTERRUPTED" if interrupted else "")
    )
    if env["tls_ciphers"]:
        print(f"TLS 1.3, cipher suite {', '.join(env['tls_ciphers'])} (every loop)")
    if args.baseline:
        print(baseline_check(runner.results, env))
    print("\n" + format_table(summary, loops))
    print("\n" + report.LEGEND + "\n")
    print(format_headline(summary, loops))
    if args.cpu:
        for text in (
            report.format_cpu_per_request(summary, loops),
            report.format_cpu(summary, taskset),
        ):
            if text:
                print("\n" + text)
    text = report.failures(summary)
    if text:
        print("\n" + text)
    warning = report.disturbance(runner.results)
    if runner.discarded:
        print(
            f"\n{len(runner.discarded)} disturbed run(s) measured again (--retries {args.retries}); "
            "the least disturbed attempt of each counts"
        )
    notes = [
        report.state_note(f"{when} the run", env[f"machine_{when}"]) for when in ("before", "after")
    ]
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
        outputs.append(report.plot(summary, loops, args.plot, title))
    print("\n" + "; ".join(outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
