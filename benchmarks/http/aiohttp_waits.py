"""How often aiohttp's request loop has to wait for the next request, per loop.

    python benchmarks/http/aiohttp_waits.py
    python benchmarks/http/aiohttp_waits.py --loops uvloop,ferroloop --concurrency 4,16

A diagnostic, not a benchmark: it counts, in the aiohttp server of the HTTP
workload (`server.py --mode aiohttp`), the `data_received` calls that found
`RequestHandler.start()` waiting for a request. Each such wait costs a task
wake-up. Under libuv's order (uvloop) the next request is often read before
`start()` loops back for it; under asyncio's order (asyncio, ferroloop) it is
not (see benchmarks/README.md, "aiohttp"). The load is the Rust `http-client`
on CPU 1, the server on CPU 0 when both exist.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "echo"))
import server  # http/server.py
import servers  # echo/servers.py
from measure import BIN_DIR, build_rust, taskset_possible  # echo/measure.py


def count_waits(loop_name: str, connections: int, seconds: float) -> dict:
    """One server on `loop_name` in this process, loaded for `seconds`."""
    from aiohttp import web_protocol

    counts = {"waiting": 0, "requests": 0}
    data_received = web_protocol.RequestHandler.data_received

    def counting(self, data):
        counts["requests"] += 1
        counts["waiting"] += self._waiter is not None
        return data_received(self, data)

    web_protocol.RequestHandler.data_received = counting
    loop = importlib.import_module(server.LOOPS[loop_name]).new_event_loop()
    try:
        listener = servers.listen(None, None)
        address = servers.address(listener)
        loop.run_until_complete(server.MODES["aiohttp"](loop, listener))
        client = [str(BIN_DIR / "http-client"), "--addr", address]
        client += ["--concurrency", str(connections), "--duration", str(seconds)]
        if taskset_possible():
            client = ["taskset", "-c", "1", *client]

        async def load():
            process = await asyncio.create_subprocess_exec(*client, stdout=asyncio.subprocess.PIPE)
            out, _ = await process.communicate()
            return json.loads(out)

        result = loop.run_until_complete(load())
        while server._KEEP:
            loop.run_until_complete(server._KEEP.pop().cleanup())
    finally:
        web_protocol.RequestHandler.data_received = data_received
        loop.close()
    return {"rps": result["rps"], **counts}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loops", default="asyncio,uvloop,ferroloop")
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    build_rust()
    if taskset_possible():
        os.sched_setaffinity(0, {0})
    print(f"{'loop':<10} {'conns':>5} {'req/s':>8}  start() waiting")
    for connections in [int(c) for c in args.concurrency.split(",")]:
        for loop_name in args.loops.split(","):
            try:
                importlib.import_module(server.LOOPS[loop_name])
            except ImportError:
                continue
            c = count_waits(loop_name, connections, args.duration)
            share = c["waiting"] / c["requests"] if c["requests"] else float("nan")
            print(f"{loop_name:<10} {connections:>5} {c['rps']:>8.0f}  {share:.0%}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
