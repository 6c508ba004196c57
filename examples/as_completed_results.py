"""asyncio.as_completed: handle results in the order they finish."""

from __future__ import annotations

import asyncio

from _runner import print_loop, run


async def fetch(name: str, delay: float) -> str:
    await asyncio.sleep(delay)
    return name


async def main() -> None:
    print_loop()

    # Started in the order a, b, c, d; they finish in the order of their
    # delays, and as_completed yields them as they finish.
    delays = {"a": 0.04, "b": 0.01, "c": 0.03, "d": 0.02}
    for next_done in asyncio.as_completed([fetch(n, d) for n, d in delays.items()]):
        print("finished:", await next_done)

    # With a timeout, the awaitables still pending when it expires raise
    # TimeoutError (they keep running; asyncio.run cancels them at the end).
    coros = [fetch("quick", 0.01), fetch("quicker", 0.0), fetch("too slow", 10)]
    try:
        for next_done in asyncio.as_completed(coros, timeout=0.5):
            print("finished before the timeout:", await next_done)
    except asyncio.TimeoutError:
        print("as_completed: timed out")


if __name__ == "__main__":
    run(main)
