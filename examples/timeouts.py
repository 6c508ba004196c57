"""Timeouts: asyncio.wait_for, and asyncio.timeout / timeout_at (3.11+)."""

from __future__ import annotations

import asyncio
import sys

from _runner import print_loop, run


async def slow(label: str) -> str:
    try:
        await asyncio.sleep(10)
        return "never"
    except asyncio.CancelledError:
        # On timeout the awaited coroutine is cancelled, then the timeout
        # error is raised in the caller.
        print(f"{label}: slow() was cancelled")
        raise


async def fast() -> str:
    await asyncio.sleep(0.01)
    return "fast result"


async def main() -> None:
    print_loop()

    print("wait_for in time:", await asyncio.wait_for(fast(), timeout=5))
    try:
        await asyncio.wait_for(slow("wait_for"), timeout=0.05)
    except asyncio.TimeoutError:  # the builtin TimeoutError on 3.11+
        print("wait_for: timed out")

    if sys.version_info < (3, 11):
        print("asyncio.timeout and asyncio.timeout_at need Python 3.11: skipped")
        return

    # asyncio.timeout: a context manager; the deadline covers the whole block.
    try:
        async with asyncio.timeout(0.05) as cm:
            await fast()
            await slow("timeout")
    except TimeoutError:
        print("asyncio.timeout: timed out, expired() =", cm.expired())

    # The deadline can be set or moved later: timeout(None), then reschedule.
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(None) as cm:
            cm.reschedule(loop.time() + 0.05)
            await slow("rescheduled timeout")
    except TimeoutError:
        print("rescheduled timeout: timed out")

    # timeout_at takes an absolute deadline on the loop's clock.
    try:
        async with asyncio.timeout_at(loop.time() + 0.05):
            await slow("timeout_at")
    except TimeoutError:
        print("timeout_at: timed out")

    # A block that finishes in time is left alone.
    async with asyncio.timeout(5) as cm:
        result = await fast()
    print("in time:", result, "expired() =", cm.expired())


if __name__ == "__main__":
    run(main)
