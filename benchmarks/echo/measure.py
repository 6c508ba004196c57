"""One echo measurement: start a server, drive it with echo-client, stop it.

serve_and_drive and run_client are the same steps for any server and client (the
HTTP benchmark uses them).

Also builds the Rust tools (echo-client, echo-server: the ceiling, http-client and
http-server for the HTTP workloads).
"""

from __future__ import annotations

import functools
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/ (loops.py)
import cpustat
import loops

MANIFEST = HERE / "rust" / "Cargo.toml"
# Where cargo puts them: CARGO_TARGET_DIR when set (scripts/bench sets one for the
# Debian root, whose binaries need a newer glibc than this machine's).
BIN_DIR = Path(os.environ.get("CARGO_TARGET_DIR") or HERE / "rust" / "target").resolve() / "release"
SERVERS = HERE / "servers.py"
CEILING = loops.CEILING  # the pure-Rust echo-server, measured like a loop
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
    tls: bool = False  # TLS 1.3 between client and server (certificates: tls_files())


def build_rust() -> None:
    """`cargo build --release` of the Rust tools (a no-op when up to date)."""
    binaries = [
        BIN_DIR / name for name in ("echo-client", "echo-server", "http-client", "http-server")
    ]
    if shutil.which("cargo") is None:
        if all(path.exists() for path in binaries):
            return
        sys.exit("cargo not found, and the Rust echo tools are not built")
    print("building the Rust echo tools (cargo build --release)", file=sys.stderr, flush=True)
    command = ["cargo", "build", "--release", "--quiet", "--manifest-path", str(MANIFEST)]
    subprocess.run(command, check=True)


@dataclass(frozen=True)
class TlsFiles:
    ca: str  # the CA certificate the client verifies against
    cert: str  # the server's certificate (localhost, 127.0.0.1), signed by the CA
    key: str


_KEEP: list[tempfile.TemporaryDirectory] = []


@functools.cache
def tls_files() -> TlsFiles:
    """A CA and a server certificate (EC P-256), made once per process with the
    openssl command into a temporary directory removed at exit."""
    if shutil.which("openssl") is None:
        sys.exit("--tls needs the openssl command (Debian: apt-get install openssl)")
    directory = tempfile.TemporaryDirectory(prefix="echo-tls-")
    _KEEP.append(directory)  # lives with the process, removed at exit
    d = Path(directory.name)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"),
            "-days", "2", "-subj", "/CN=echo benchmark CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    openssl("req", *ec, "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"),
            "-subj", "/CN=localhost")  # fmt: skip
    extensions = d / "server.ext"
    extensions.write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
    )
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.pem"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(extensions), "-out", str(d / "server.pem"))  # fmt: skip
    return TlsFiles(str(d / "ca.pem"), str(d / "server.pem"), str(d / "server.key"))


def _server_command(loop_name: str, mode: str, settings: Settings) -> list[str]:
    tls = []
    if settings.tls:
        files = tls_files()
        tls = ["--tls-cert", files.cert, "--tls-key", files.key]
    if loop_name == CEILING:
        return [str(BIN_DIR / "echo-server"), *tls]
    return [sys.executable, str(SERVERS), "--mode", mode, "--loop", loops.module(loop_name), *tls]


def _where(settings: Settings) -> list[str]:
    if settings.unix_dir:
        return ["--unix", os.path.join(settings.unix_dir, "echo.sock")]
    return ["--addr", "127.0.0.1:0"]


def taskset_possible() -> bool:
    """Can servers be pinned to CPU 0 and clients to CPU 1 (`taskset`)?"""
    return shutil.which("taskset") is not None and {0, 1} <= os.sched_getaffinity(0)


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
    command = pin(settings, 0) + _server_command(loop_name, workload.mode, settings)
    command += _where(settings)
    return serve_and_drive(
        command,
        lambda server, address: _drive(server, address, workload, settings),
        loops.child_env(loop_name) if loop_name != CEILING else None,
    )


def serve_and_drive(command: list[str], drive, env: dict | None = None) -> dict:
    """Start the server `command` (in the environment `env`, None: ours), wait for
    its READY line, return `drive(server, address)` (or `error` and the server's
    stderr), stop the server."""
    with tempfile.TemporaryFile("w+") as server_err:
        server = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=server_err, text=True, env=env
        )
        try:
            address = _wait_ready(server)
            result = drive(server, address)
            server_err.seek(0)
            for line in server_err.read(65536).splitlines():
                if line.startswith(loops.LOOP_FILE):
                    result["loop_file"] = line.removeprefix(loops.LOOP_FILE)
            return result
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
        *(("--tls-ca", tls_files().ca) if settings.tls else ()),
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
