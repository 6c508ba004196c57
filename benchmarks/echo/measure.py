"""One echo measurement: start a server, drive it with echo-client, stop it.

serve_and_drive and run_client are the same steps for any server and client (the
HTTP benchmark uses them).

Also builds the Rust tools (echo-client, echo-server: the ceiling, http-client).
"""

from __future__ import annotations

import json
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cpustat

HERE = Path(__file__).resolve().parent
MANIFEST = HERE / "rust" / "Cargo.toml"
BIN_DIR = HERE / "rust" / "target" / "release"
SERVERS = HERE / "servers.py"
CEILING = "ceiling"  # the pure-Rust echo-server, measured like a loop
READY_TIMEOUT = 30.0


@dataclass(frozen=True)
class Workload:
    mode: str  # servers.py --mode; the ceiling ignores it
    size: int
    concurrency: int


@dataclass(frozen=True)
class Settings:
    duration: float
    warmup: float
    unix_dir: str | None  # Unix sockets in this directory, else TCP on 127.0.0.1
    taskset: bool  # server on CPU 0, client on CPU 1


def build_rust() -> None:
    """`cargo build --release` of the Rust tools (a no-op when up to date)."""
    binaries = [BIN_DIR / name for name in ("echo-client", "echo-server", "http-client")]
    if shutil.which("cargo") is None:
        if all(path.exists() for path in binaries):
            return
        sys.exit("cargo not found, and the Rust echo tools are not built")
    print("building the Rust echo tools (cargo build --release)", file=sys.stderr, flush=True)
    command = ["cargo", "build", "--release", "--quiet", "--manifest-path", str(MANIFEST)]
    subprocess.run(command, check=True)


def _server_command(loop_name: str, mode: str) -> list[str]:
    if loop_name == CEILING:
        return [str(BIN_DIR / "echo-server")]
    return [sys.executable, str(SERVERS), "--mode", mode, "--loop", loop_name]


def _where(settings: Settings) -> list[str]:
    if settings.unix_dir:
        return ["--unix", os.path.join(settings.unix_dir, "echo.sock")]
    return ["--addr", "127.0.0.1:0"]


def pin(settings: Settings, cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if settings.taskset else []


def _wait_ready(server: subprocess.Popen) -> str:
    """The address from the server's `READY <address>` line."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        readable, _, _ = select.select([server.stdout], [], [], 0.1)
        if readable:
            line = server.stdout.readline()
            if line.startswith("READY "):
                return line.split(maxsplit=1)[1].strip()
            if not line:
                raise RuntimeError(f"server exited ({server.wait()}) before READY")
    raise RuntimeError(f"server not READY within {READY_TIMEOUT:g}s")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _tail(stream) -> str:
    stream.seek(0)
    return stream.read()[-2000:]


def measure(loop_name: str, workload: Workload, settings: Settings) -> dict:
    """Run one server under the client: the client's JSON, CPU figures (see
    cpustat), or `error`."""
    command = pin(settings, 0) + _server_command(loop_name, workload.mode) + _where(settings)
    return serve_and_drive(
        command, lambda server, address: _drive(server, address, workload, settings)
    )


def serve_and_drive(command: list[str], drive) -> dict:
    """Start the server `command`, wait for its READY line, return `drive(server,
    address)` (or `error` and the server's stderr), stop the server."""
    with tempfile.TemporaryFile("w+") as server_err:
        server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=server_err, text=True)
        try:
            address = _wait_ready(server)
            return drive(server, address)
        except (RuntimeError, ValueError) as error:
            stderr = _tail(server_err)
            last = stderr.strip().splitlines()[-1:] or [""]
            message = f"{error}: {last[0]}" if last[0] else str(error)
            return {"error": message, "stderr": stderr}
        finally:
            _stop(server)


def _drive(server: subprocess.Popen, address: str, workload: Workload, settings: Settings):
    flag = "--unix" if settings.unix_dir else "--addr"
    command = pin(settings, 1) + [
        str(BIN_DIR / "echo-client"),
        *(flag, address),
        *("--size", str(workload.size)),
        *("--concurrency", str(workload.concurrency)),
        *("--duration", str(settings.duration)),
        *("--warmup", str(settings.warmup)),
    ]
    return run_client(server, command, settings)


def run_client(server: subprocess.Popen, command: list[str], settings: Settings, parse=json.loads):
    """Run the load generator `command` against `server`; its result (`parse` of
    its stdout: a dict with `requests`, and `client_cpu` unless the child's CPU
    time should be taken from its rusage) with the CPU figures of the window."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(settings.warmup)  # sample CPU times over the measured window
    before, started = cpustat.snapshot(server.pid), time.perf_counter()
    try:
        out, err = client.communicate(timeout=settings.duration + 60)
    except subprocess.TimeoutExpired:
        client.kill()
        client.communicate()
        raise RuntimeError("client timed out") from None
    after, wall = cpustat.snapshot(server.pid), time.perf_counter() - started
    if server.poll() is not None:
        raise RuntimeError(f"server died (exit status {server.returncode})")
    if client.returncode:
        raise RuntimeError(f"client failed: {err.strip() or client.returncode}")
    result = parse(out)
    if not result["requests"]:
        raise RuntimeError("no round trip completed")
    if "client_cpu" not in result:  # its whole run, warm-up included
        used = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds = used.ru_utime + used.ru_stime - children.ru_utime - children.ru_stime
        result["client_cpu"] = round(seconds / (settings.warmup + settings.duration), 3)
    result.update(cpustat.figures(before, after, wall, result["client_cpu"], settings.taskset))
    return result
