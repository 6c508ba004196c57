"""Aggregate echo throughput: N threads x 1 loop against N processes x 1 loop.

Each worker runs its own ferroloop loop holding a TCP echo server and a
client that keeps one 1 KiB message in flight for DURATION seconds; the
figure is the sum of round trips per second over all workers. With the GIL,
threads share one core's worth of Python; on a free-threaded CPython with
PYTHON_GIL=0 they should scale like processes. Run it with both:

    python benchmarks/threads_vs_processes.py
    PYTHON_GIL=0 python3.13t benchmarks/threads_vs_processes.py

Workers are started together and timed from a shared start signal; every
echoed message is checked.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import threading
import time

import ferroloop

MESSAGE = bytes(range(256)) * 4  # 1 KiB


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class Client(asyncio.Protocol):
    """Sends MESSAGE, waits for it whole, checks it, sends it again."""

    def __init__(self, deadline: float, done: asyncio.Future) -> None:
        self.deadline = deadline
        self.done = done
        self.buf = bytearray()
        self.count = 0

    def connection_made(self, transport):
        self.transport = transport
        transport.write(MESSAGE)

    def data_received(self, data):
        self.buf += data
        if len(self.buf) < len(MESSAGE):
            return
        if self.buf != MESSAGE:
            self.done.set_exception(AssertionError("echo mismatch"))
            return
        self.buf.clear()
        self.count += 1
        if time.monotonic() < self.deadline:
            self.transport.write(MESSAGE)
        elif not self.done.done():
            self.done.set_result(self.count)


async def worker_main(duration: float) -> int:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    done = loop.create_future()
    transport, _ = await loop.create_connection(
        lambda: Client(time.monotonic() + duration, done), "127.0.0.1", port
    )
    try:
        return await done
    finally:
        transport.close()
        server.close()
        await server.wait_closed()


def run_worker(duration: float, start, results, index: int) -> None:
    start.wait()
    results[index] = ferroloop.run(worker_main(duration))


def measure(mode: str, n: int, duration: float) -> float:
    if mode == "threads":
        start, results = threading.Event(), [0] * n
        workers = [
            threading.Thread(target=run_worker, args=(duration, start, results, i))
            for i in range(n)
        ]
    else:
        ctx = multiprocessing.get_context("fork")
        start, results = ctx.Event(), ctx.Array("q", n)
        workers = [
            ctx.Process(target=run_worker, args=(duration, start, results, i)) for i in range(n)
        ]
    for w in workers:
        w.start()
    time.sleep(0.2)  # let every worker reach the start line
    t0 = time.perf_counter()
    start.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - t0
    return sum(results) / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4", help="comma-separated N values")
    ap.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    print(
        f"CPython {sys.version.split()[0]}, GIL {'on' if gil else 'off'}, "
        f"{os.cpu_count()} CPUs; best of {args.rounds} rounds of {args.duration:g} s"
    )
    print(f"{'N':>3} {'threads (rt/s)':>16} {'processes (rt/s)':>18} {'threads/processes':>18}")
    for n in (int(x) for x in args.workers.split(",")):
        best = {}
        for mode in ("threads", "processes"):
            best[mode] = max(measure(mode, n, args.duration) for _ in range(args.rounds))
        ratio = best["threads"] / best["processes"]
        print(f"{n:>3} {best['threads']:>16,.0f} {best['processes']:>18,.0f} {ratio:>18.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
