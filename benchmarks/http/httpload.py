"""One HTTP/1.1 keep-alive measurement: start server.py, load it, stop it.

The load generator is the Rust `http-client` (benchmarks/echo/rust, built by
measure.build_rust) by default, or `wrk` when asked for and installed. Both keep
N connections open without pipelining. The server and client steps, the CPU
accounting and the pinning are echo/measure.py's (serve_and_drive, run_client).
"""

from __future__ import annotations

import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "echo")]
import loops  # (benchmarks/loops.py)
from measure import BIN_DIR, CEILING, Settings, pin, run_client, serve_and_drive

SERVER = HERE / "server.py"
MODES = ("httptools", "aiohttp")
CLIENTS = ("rust", "wrk")


@dataclass(frozen=True)
class Workload:
    mode: str  # server.py --mode
    concurrency: int


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def measure(loop_name: str, workload: Workload, settings: Settings, client: str = "rust"):
    """The client's result (requests, rps, p50_us/p90_us/p99_us, client_cpu) with the
    CPU figures (echo/cpustat.py), or `error`. `loop_name` CEILING measures the
    Rust http-server, which sends the same response bytes as server.py."""
    env = None
    if loop_name == CEILING:  # the pure-Rust responder; it has no modes
        server = pin(settings, 0) + [str(BIN_DIR / "http-server"), "--addr", "127.0.0.1:0"]
    else:
        server = pin(settings, 0) + [sys.executable, str(SERVER), "--mode", workload.mode]
        server += ["--loop", loops.module(loop_name), "--addr", "127.0.0.1:0"]
        env = loops.child_env(loop_name)

    def drive(process, address):
        if client == "wrk":
            command = pin(settings, 1) + wrk_command(address, workload, settings)
            return run_client(process, command, settings, parse=parse_wrk)
        command = pin(settings, 1) + [
            str(BIN_DIR / "http-client"),
            *("--addr", address),
            *("--concurrency", str(workload.concurrency)),
            *("--duration", str(settings.duration)),
            *("--warmup", str(settings.warmup)),
        ]
        return run_client(process, command, settings)

    return serve_and_drive(server, drive, env)


def wrk_command(address: str, workload: Workload, settings: Settings) -> list[str]:
    """wrk has no warm-up and whole seconds only: it runs warm-up + duration,
    rounded up to a second, and its figures cover all of it."""
    seconds = max(1, round(settings.warmup + settings.duration + 0.49))
    return ["wrk", "-t1", f"-c{workload.concurrency}", f"-d{seconds}s", "--latency"] + [
        f"http://{address}/"
    ]


_UNITS = {"us": 1, "ms": 1e3, "s": 1e6}


def parse_wrk(output: str) -> dict:
    """wrk's text report as http-client's JSON fields; errors raise ValueError."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not done or not rate:
        raise ValueError(f"cannot read wrk's output: {output[-300:]!r}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    if bad:
        raise ValueError(f"wrk: {bad.group(1)} non-2xx/3xx responses")
    if errors:
        raise ValueError(f"wrk socket errors: {errors.group(1)}")
    seconds = float(done.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}[done.group(3)]
    result = {"requests": int(done.group(1)), "seconds": seconds, "rps": float(rate.group(1))}
    for percent, value, unit in re.findall(
        r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", output, re.MULTILINE
    ):
        result[f"p{percent}_us"] = round(float(value) * _UNITS[unit])
    return result
